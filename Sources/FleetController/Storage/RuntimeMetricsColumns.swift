import FleetCore

/// The runtime figures of a `metrics` event as typed columns, in `events` and in
/// `latest_runtime_metrics` (migration 7): the gate tick reads numbers, not JSON to decode per device.
/// `has_metrics` is 1 when the event carried figures that decode, NULL otherwise (a device whose
/// latest figures do not decode is left out of the gates, as when they were decoded at read).
enum RuntimeMetricsColumns {
    static let names = ["has_metrics", "latency_p50_ms", "latency_p95_ms", "error_rate", "requests", "crashes"]
    static let list = names.joined(separator: ", ")
    /// `e.has_metrics, e.latency_p50_ms, …`
    static func list(_ table: String) -> String { names.map { "\(table).\($0)" }.joined(separator: ", ") }
    /// `has_metrics = excluded.has_metrics, …`
    static let excludedAssignments = names.map { "\($0) = excluded.\($0)" }.joined(separator: ", ")

    static func values(_ m: RuntimeMetrics?) -> [any SQLValueConvertible] {
        guard let m else { return [nil as Int64?, nil as Double?, nil as Double?, nil as Double?, nil as Int?, nil as Int?] }
        return [1 as Int64, m.latencyP50Ms, m.latencyP95Ms, m.errorRate, m.requests, m.crashes]
    }

    /// The figures of a row that selected `names`; nil when it has none.
    static func figures(_ r: SQLRow) throws -> RuntimeMetrics? {
        guard try r.optionalInt("has_metrics") == 1 else { return nil }
        return RuntimeMetrics(
            latencyP50Ms: try r.optionalDouble("latency_p50_ms"), latencyP95Ms: try r.optionalDouble("latency_p95_ms"),
            errorRate: try r.optionalDouble("error_rate"), requests: try r.optionalInt("requests").map(Int.init),
            crashes: try r.optionalInt("crashes").map(Int.init))
    }

    // MARK: migration 7

    /// Adds the columns to both tables and carries over the figures older builds stored as JSON
    /// in `detail`, with the decoder's rules: a JSON object whose known fields are null or numbers
    /// (integers for `requests` and `crashes`); anything else has no figures, as before.
    static func migrate(_ tx: any SQLQuerying) async throws {
        let d = tx.dialect
        let columns = [
            "has_metrics INTEGER", "latency_p50_ms REAL", "latency_p95_ms REAL", "error_rate REAL", "requests INTEGER",
            "crashes INTEGER"
        ]
        for table in ["events", "latest_runtime_metrics"] {
            for c in columns { try await tx.execute(d.ddl("ALTER TABLE \(table) ADD COLUMN \(c)")) }
        }
        switch d {
        case .sqlite:
            func number(_ key: String, integer: Bool) -> String {
                "COALESCE(json_type(detail, '$.\(key)'), 'null') IN ('null', 'integer'\(integer ? "" : ", 'real'"))"
            }
            try await tx.execute(
                """
                UPDATE events SET has_metrics = 1,
                  latency_p50_ms = json_extract(detail, '$.latencyP50Ms'), latency_p95_ms = json_extract(detail, '$.latencyP95Ms'),
                  error_rate = json_extract(detail, '$.errorRate'), requests = json_extract(detail, '$.requests'),
                  crashes = json_extract(detail, '$.crashes')
                WHERE kind = \(SQLVocabulary.literal(EventKind.metrics)) AND detail IS NOT NULL AND json_valid(detail) AND json_type(detail) = 'object'
                  AND \(number("latencyP50Ms", integer: false)) AND \(number("latencyP95Ms", integer: false))
                  AND \(number("errorRate", integer: false)) AND \(number("requests", integer: true)) AND \(number("crashes", integer: true))
                """)
        case .postgres:
            // Text that is not JSON makes a cast fail the whole statement: read it as NULL instead.
            try await tx.execute(
                """
                CREATE OR REPLACE FUNCTION edgefleet_jsonb_or_null(t text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
                BEGIN RETURN t::jsonb; EXCEPTION WHEN others THEN RETURN NULL; END $$
                """)
            // Conditions in CASE, so that no cast runs on a value that is not a number in range
            // (PostgreSQL does not evaluate AND in order).
            func number(_ key: String, integer: Bool) -> String {
                let fits = integer ? "p.j ->> '\(key)' ~ '^-?[0-9]{1,18}$'" : "abs((p.j ->> '\(key)')::numeric) < 1e300"
                return """
                    CASE COALESCE(jsonb_typeof(p.j -> '\(key)'), 'null') WHEN 'null' THEN true WHEN 'number' THEN \(fits) ELSE false END
                    """
            }
            try await tx.execute(
                """
                UPDATE events SET has_metrics = 1,
                  latency_p50_ms = (p.j ->> 'latencyP50Ms')::double precision, latency_p95_ms = (p.j ->> 'latencyP95Ms')::double precision,
                  error_rate = (p.j ->> 'errorRate')::double precision, requests = (p.j ->> 'requests')::bigint,
                  crashes = (p.j ->> 'crashes')::bigint
                FROM (SELECT device_id, seq, edgefleet_jsonb_or_null(detail) AS j FROM events
                      WHERE kind = \(SQLVocabulary.literal(EventKind.metrics)) AND detail IS NOT NULL) p
                WHERE events.device_id = p.device_id AND events.seq = p.seq AND jsonb_typeof(p.j) = 'object'
                  AND \(number("latencyP50Ms", integer: false)) AND \(number("latencyP95Ms", integer: false))
                  AND \(number("errorRate", integer: false)) AND \(number("requests", integer: true)) AND \(number("crashes", integer: true))
                """)
            try await tx.execute("DROP FUNCTION edgefleet_jsonb_or_null(text)")
        }
        // The latest rows take their event's figures; the JSON copy goes.
        try await tx.execute(
            """
            UPDATE latest_runtime_metrics SET (\(list)) = (
              SELECT \(list("e")) FROM events e WHERE e.device_id = latest_runtime_metrics.device_id AND e.seq = latest_runtime_metrics.seq)
            """)
        try await tx.execute("ALTER TABLE latest_runtime_metrics DROP COLUMN detail")
        try await ChangeRevisions.backfillLatestMetrics(tx)
    }
}
