import FleetCore
import Foundation

/// Change revisions: every row the gate tick reads (a device's cell and labels, a device's latest
/// install outcome per release and latest runtime metrics per model) carries the revision of the
/// write that last changed it, so that a replica's in-memory copy (`ChangeFeed`) reads only the
/// rows changed since its last read.
///
/// The revision must order writes by commit, or a reader could pass over a write that committed
/// after a later one it already saw:
/// - SQLite: one writer at a time, so a counter bumped inside the writing transaction is in commit
///   order; a reader that saw counter `c` next reads `rev >= c + 1`.
/// - PostgreSQL: the writing transaction's id (`pg_current_xact_id()`). Transactions commit out of
///   id order, so a reader first takes its snapshot's xmin (every transaction still running has an
///   id at or above it) and next reads `rev >= xmin`: rows committed just before are read twice,
///   which merging makes harmless, and none is missed.
enum ChangeRevisions {
    /// The install event kinds whose latest one per (release, device) is the gates' outcome.
    static let installKindsSQL = SQLVocabulary.list(EventKind.installOutcomes)

    /// Where the next read of changes starts, taken before the read it follows.
    static func horizon(_ db: any SQLQuerying) async throws -> Int64 {
        switch db.dialect {
        case .sqlite:
            return (try await db.scalar("SELECT value FROM change_counter WHERE id = 1").int ?? 0) + 1
        case .postgres:
            return try await db.scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin").int ?? 0
        }
    }

    /// An SQL expression for the revision a write in `tx` stamps on the rows it changes (SQLite:
    /// the counter, bumped here once for the transaction's statement).
    static func stamp(_ tx: any SQLQuerying) async throws -> String {
        switch tx.dialect {
        case .sqlite:
            guard let v = try await tx.scalar("UPDATE change_counter SET value = value + 1 WHERE id = 1 RETURNING value").int else {
                throw StorageError(.corrupt, "change_counter has no row")
            }
            return String(v)
        case .postgres:
            return "pg_current_xact_id()::text::bigint"
        }
    }

    // MARK: migration 6

    static func migrate(_ tx: any SQLQuerying) async throws {
        let d = tx.dialect
        try await tx.execute(d.ddl("ALTER TABLE devices ADD COLUMN rev INTEGER NOT NULL DEFAULT 0"))
        try await tx.execute(d.ddl("ALTER TABLE device_labels ADD COLUMN rev INTEGER NOT NULL DEFAULT 0"))
        try await tx.execute(
            d.ddl(
                """
                CREATE TABLE IF NOT EXISTS latest_install_outcomes (
                    release TEXT NOT NULL, device_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
                    rev INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (release, device_id))
                """))
        try await tx.execute(
            d.ddl(
                """
                CREATE TABLE IF NOT EXISTS latest_runtime_metrics (
                    model TEXT NOT NULL, device_id TEXT NOT NULL, seq INTEGER NOT NULL, release TEXT, detail TEXT,
                    received_at INTEGER NOT NULL, rev INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, device_id))
                """))
        for i in [
            "CREATE INDEX IF NOT EXISTS devices_rev ON devices (rev)",
            "CREATE INDEX IF NOT EXISTS device_labels_rev ON device_labels (rev)",
            "CREATE INDEX IF NOT EXISTS latest_install_outcomes_rev ON latest_install_outcomes (release, rev)",
            "CREATE INDEX IF NOT EXISTS latest_runtime_metrics_rev ON latest_runtime_metrics (model, rev)"
        ] {
            try await tx.execute(i)
        }
        // Cell and label columns: every writer (check-ins, enrollment, operator labels, bulk seeding)
        // stamps through triggers, so that none can forget to.
        let deviceColumns = ["hardware_class", "tier", "arch", "timezone", "agent_labels"]
        let labelColumns = ["enrolled", "operator"]
        switch d {
        case .sqlite:
            try await tx.execute(
                "CREATE TABLE IF NOT EXISTS change_counter (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)")
            try await tx.execute("INSERT INTO change_counter (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
            for (table, key, columns) in [("devices", "id", deviceColumns), ("device_labels", "device_id", labelColumns)] {
                let body = """
                    BEGIN
                      UPDATE change_counter SET value = value + 1 WHERE id = 1;
                      UPDATE \(table) SET rev = (SELECT value FROM change_counter WHERE id = 1) WHERE \(key) = NEW.\(key);
                    END
                    """
                try await tx.execute("CREATE TRIGGER IF NOT EXISTS \(table)_rev_insert AFTER INSERT ON \(table) FOR EACH ROW \(body)")
                try await tx.execute(
                    """
                    CREATE TRIGGER IF NOT EXISTS \(table)_rev_update AFTER UPDATE OF \(columns.joined(separator: ", ")) ON \(table) FOR EACH ROW
                    WHEN \(columns.map { "OLD.\($0) IS NOT NEW.\($0)" }.joined(separator: " OR ")) \(body)
                    """)
            }
        case .postgres:
            try await tx.execute(
                """
                CREATE OR REPLACE FUNCTION edgefleet_stamp_rev() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN NEW.rev := pg_current_xact_id()::text::bigint; RETURN NEW; END $$
                """)
            for (table, columns) in [("devices", deviceColumns), ("device_labels", labelColumns)] {
                try await tx.execute(
                    """
                    CREATE TRIGGER \(table)_rev_insert BEFORE INSERT ON \(table) FOR EACH ROW EXECUTE FUNCTION edgefleet_stamp_rev()
                    """)
                try await tx.execute(
                    """
                    CREATE TRIGGER \(table)_rev_update BEFORE UPDATE ON \(table) FOR EACH ROW
                    WHEN (\(columns.map { "OLD.\($0) IS DISTINCT FROM NEW.\($0)" }.joined(separator: " OR ")))
                    EXECUTE FUNCTION edgefleet_stamp_rev()
                    """)
            }
        }
        // The runtime metrics are carried over by migration 7, which gives them typed columns.
        try await backfillLatestOutcomes(tx)
    }

    /// The latest install outcome per (release, device) and runtime metrics per (model, device),
    /// from the raw events: set-based, idempotent (a row moves only to a higher seq). Run by the
    /// migration over events stored by earlier builds, and after bulk loads that bypass ingest.
    static func backfillLatest(_ tx: any SQLQuerying) async throws {
        try await backfillLatestOutcomes(tx)
        try await backfillLatestMetrics(tx)
    }

    static func backfillLatestOutcomes(_ tx: any SQLQuerying) async throws {
        let rev = try await stamp(tx)
        try await tx.execute(
            """
            INSERT INTO latest_install_outcomes (release, device_id, seq, kind, rev)
            SELECT e.release, e.device_id, e.seq, e.kind, \(rev) FROM events e
            JOIN (SELECT release, device_id, MAX(seq) AS seq FROM events WHERE release IS NOT NULL AND kind IN \(installKindsSQL)
                  GROUP BY release, device_id) latest
              ON e.device_id = latest.device_id AND e.seq = latest.seq
            WHERE true
            ON CONFLICT (release, device_id) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, rev = excluded.rev
              WHERE excluded.seq > latest_install_outcomes.seq
            """)
    }

    static func backfillLatestMetrics(_ tx: any SQLQuerying) async throws {
        let rev = try await stamp(tx)
        try await tx.execute(
            """
            INSERT INTO latest_runtime_metrics (model, device_id, seq, release, received_at, rev, \(RuntimeMetricsColumns.list))
            SELECT e.model, e.device_id, e.seq, e.release, e.received_at, \(rev), \(RuntimeMetricsColumns.list("e")) FROM events e
            JOIN (SELECT model, device_id, MAX(seq) AS seq FROM events WHERE model IS NOT NULL AND kind = \(SQLVocabulary.literal(EventKind.metrics))
                  GROUP BY model, device_id) latest
              ON e.device_id = latest.device_id AND e.seq = latest.seq
            WHERE true
            ON CONFLICT (model, device_id) DO UPDATE SET seq = excluded.seq, release = excluded.release,
              received_at = excluded.received_at, rev = excluded.rev, \(RuntimeMetricsColumns.excludedAssignments)
              WHERE excluded.seq > latest_runtime_metrics.seq
            """)
    }

    /// At ingest, in the events' own transaction: the stored events' latest install outcome per
    /// release and latest metrics per model, each one multi-row upsert. A duplicate or an older
    /// event (lower seq) changes nothing.
    static func ingest(_ tx: any SQLQuerying, deviceId: String, stored: [StatusEvent], receivedAt: Int64) async throws {
        var outcomes: [String: StatusEvent] = [:], metrics: [String: StatusEvent] = [:]
        for e in stored {
            if let release = e.release, e.kind.isInstallOutcome, outcomes[release].map({ e.seq > $0.seq }) ?? true {
                outcomes[release] = e
            }
            if e.kind == .metrics, let model = e.model, metrics[model].map({ e.seq > $0.seq }) ?? true {
                metrics[model] = e
            }
        }
        guard !outcomes.isEmpty || !metrics.isEmpty else { return }
        let rev = try await stamp(tx)
        if !outcomes.isEmpty {
            var params: [any SQLValueConvertible] = []
            for (release, e) in outcomes.sorted(by: { $0.key < $1.key }) {
                params += [release, deviceId, e.seq, e.kind.rawValue] as [any SQLValueConvertible]
            }
            try await tx.execute(
                """
                INSERT INTO latest_install_outcomes (release, device_id, seq, kind, rev)
                VALUES \(Array(repeating: "(?,?,?,?,\(rev))", count: outcomes.count).joined(separator: ","))
                ON CONFLICT (release, device_id) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, rev = excluded.rev
                  WHERE excluded.seq > latest_install_outcomes.seq
                """, params)
        }
        if !metrics.isEmpty {
            var params: [any SQLValueConvertible] = []
            for (model, e) in metrics.sorted(by: { $0.key < $1.key }) {
                params += [model, deviceId, e.seq, e.release, receivedAt] as [any SQLValueConvertible]
                params += RuntimeMetricsColumns.values(e.runtimeMetrics)
            }
            try await tx.execute(
                """
                INSERT INTO latest_runtime_metrics (model, device_id, seq, release, received_at, \(RuntimeMetricsColumns.list), rev)
                VALUES \(Array(repeating: "(?,?,?,?,?,?,?,?,?,?,?,\(rev))", count: metrics.count).joined(separator: ","))
                ON CONFLICT (model, device_id) DO UPDATE SET seq = excluded.seq, release = excluded.release,
                  received_at = excluded.received_at, rev = excluded.rev, \(RuntimeMetricsColumns.excludedAssignments)
                  WHERE excluded.seq > latest_runtime_metrics.seq
                """, params)
        }
    }
}
