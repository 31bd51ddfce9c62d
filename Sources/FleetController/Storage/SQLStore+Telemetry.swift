import FleetCore
import Foundation

/// Rollout history for the dashboard's charts, and per-device telemetry counters.
extension SQLStore {
    /// Points kept per cell; older ones are dropped as new ones arrive.
    static let historyPointsPerCell = 2000

    func appendHistory(rollout: Int64, cell: CellKey, _ point: CellHistoryPoint) async throws {
        let body = try json(point)
        try await write(fenced: true) { tx in
            try await tx.execute(
                "INSERT INTO rollout_history (rollout_id, cell, at, body) VALUES (?,?,?,?)",
                [rollout, cell.description, point.at, body])
            try await tx.execute(
                """
                DELETE FROM rollout_history WHERE rollout_id = ? AND cell = ? AND id NOT IN
                  (SELECT id FROM rollout_history WHERE rollout_id = ? AND cell = ? ORDER BY at DESC, id DESC LIMIT ?)
                """, [rollout, cell.description, rollout, cell.description, Int64(Self.historyPointsPerCell)])
        }
    }

    func history(rollout: Int64) async throws -> [String: [CellHistoryPoint]] {
        var out: [String: [CellHistoryPoint]] = [:]
        for r in try await db.query("SELECT cell, body FROM rollout_history WHERE rollout_id = ? ORDER BY at, id", [rollout]) {
            out[try r.string("cell"), default: []].append(try r.json(CellHistoryPoint.self, "body"))
        }
        return out
    }

    func recordDropped(deviceId: String, total: UInt64, at: Int64) async throws {
        // The device's own counter only grows; a smaller value (a reinstalled agent) replaces it.
        try await db.execute(
            """
            INSERT INTO device_telemetry (device_id, events_dropped, updated_at) VALUES (?,?,?)
            ON CONFLICT(device_id) DO UPDATE SET events_dropped = excluded.events_dropped, updated_at = excluded.updated_at
            """, [deviceId, Int64(clamping: total), at])
    }

    func eventsDropped() async throws -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for r in try await db.query("SELECT device_id, events_dropped FROM device_telemetry WHERE events_dropped > 0", []) {
            out[try r.string("device_id")] = UInt64(max(try r.int("events_dropped"), 0))
        }
        return out
    }
}

/// Which devices a staged rollout sent its release to, and what each ran before: the target of
/// that device's rollback.
extension SQLStore {
    func recordRolloutDevice(rollout: Int64, deviceId: String, priorRelease: String?, priorSha256: String?, at: Int64) async throws {
        let reach = RolloutReach(rollout: rollout, priorRelease: priorRelease, priorSha256: priorSha256, at: at)
        try await write { tx in ((), try await Self.recordReach(tx, reach, deviceId: deviceId)) }
    }

    private static func rolloutDeviceRow(_ r: SQLRow) throws -> RolloutDeviceRecord {
        RolloutDeviceRecord(
            priorRelease: try r.optionalString("prior_release"), priorSha256: try r.optionalString("prior_sha256"),
            assignedAt: try r.int("assigned_at"))
    }

    func rolloutDevice(rollout: Int64, deviceId: String) async throws -> RolloutDeviceRecord? {
        try await db.query(
            "SELECT prior_release, prior_sha256, assigned_at FROM rollout_devices WHERE rollout_id = ? AND device_id = ?",
            [rollout, deviceId]
        ).first.map(Self.rolloutDeviceRow)
    }

    func committedRelease(deviceId: String, model: String, sha256: String) async throws -> String? {
        try await db.query(
            """
            SELECT release FROM events WHERE device_id = ? AND model = ? AND kind = \(SQLVocabulary.literal(EventKind.committed)) AND sha256 = ? AND release IS NOT NULL
            ORDER BY seq DESC LIMIT 1
            """, [deviceId, model, sha256]
        ).first.map { try $0.string("release") }
    }

    /// Named by every check-in's timestamp: a small table of its own, cached per replica.
    func priorReleases(rollout: Int64) async throws -> Set<String> {
        try await cache.value(.priors, "\(rollout)") {
            Set(
                try await db.query("SELECT release FROM rollout_prior_releases WHERE rollout_id = ?", [rollout]).map {
                    try $0.string("release")
                })
        }
    }

    /// Light rows for cells and selectors (no facts decoded), from this process's copy of every
    /// device's cell and labels, read again only where changed (see `ChangeFeed`).
    func deviceCells() async throws -> [DeviceCellRecord] { try await deviceCellSnapshot().records }

    func deviceCellSnapshot() async throws -> DeviceCellSnapshot {
        let s = try await cache.feeds.devices.snapshot(
            db, empty: { DeviceCellTable() },
            read: { (since: Int64?) -> [DeviceCellRecord] in
                guard let since else { return try await readDeviceCells(where: nil, since: nil) }
                // Devices changed, then devices whose labels changed (a device is replaced in place).
                return try await readDeviceCells(where: "d.rev >= ? ORDER BY d.rev, d.id", since: since)
                    + readDeviceCells(where: "d.id IN (SELECT device_id FROM device_labels WHERE rev >= ?)", since: since)
            }, merge: { $0.merge($1) })
        return DeviceCellSnapshot(records: s.state.records, version: s.version)
    }

    static let deviceCellSelect = """
        SELECT d.id, d.hardware_class, d.tier, d.arch, d.timezone, d.agent_labels, l.enrolled AS enrolled_labels, l.operator AS operator_labels
        FROM devices d LEFT JOIN device_labels l ON l.device_id = d.id
        """

    /// Every device read from the tables, past the copy: what the copy must always agree with.
    func deviceCellsReadingAll() async throws -> [DeviceCellRecord] { try await readDeviceCells(where: nil, since: nil) }

    /// Label sets repeat across a fleet (a few regions, sites, customers), so each distinct
    /// stored text is decoded once per call.
    private func readDeviceCells(where condition: String?, since: Int64?) async throws -> [DeviceCellRecord] {
        var decoded: [String: [String: String]] = [:]
        func labels(_ r: SQLRow, _ column: String) throws -> [String: String] {
            guard let text = try r.optionalString(column), text != "{}" else { return [:] }
            if let known = decoded[text] { return known }
            let value = try Self.labels(r, column)
            decoded[text] = value
            return value
        }
        var merged: [String: [String: String]] = [:]
        return try await db.query(Self.deviceCellSelect + (condition.map { " WHERE " + $0 } ?? ""), since.map { [$0] } ?? []).map { r in
            let agent = try r.optionalString("agent_labels") ?? "", enrolled = try r.optionalString("enrolled_labels") ?? "",
                op = try r.optionalString("operator_labels") ?? ""
            let key = agent + "\u{0}" + enrolled + "\u{0}" + op
            let effective: [String: String]
            if let known = merged[key] {
                effective = known
            } else {
                effective = Labels.effective(
                    agent: try labels(r, "agent_labels"), enrollment: try labels(r, "enrolled_labels"),
                    operator: try labels(r, "operator_labels"))
                merged[key] = effective
            }
            return DeviceCellRecord(
                id: try r.string("id"), hardwareClass: try r.optionalString("hardware_class"), tier: try r.optionalString("tier"),
                arch: try r.optionalString("arch"), timezone: try r.optionalString("timezone"), labels: effective)
        }
    }
}

/// What the gates read besides the latest window: each treated device's prior release, the
/// treated devices' own figures from before, and what each device runs now.
extension SQLStore {
    func rolloutDevices(rollout: Int64) async throws -> [String: RolloutDeviceRecord] {
        var out: [String: RolloutDeviceRecord] = [:]
        for r in try await db.query(
            "SELECT device_id, prior_release, prior_sha256, assigned_at FROM rollout_devices WHERE rollout_id = ?", [rollout])
        {
            out[try r.string("device_id")] = try Self.rolloutDeviceRow(r)
        }
        return out
    }

    func runtimeMetrics(model: String, release: String, since: Int64) async throws -> [DeviceMetrics] {
        try await db.query(
            """
            SELECT e.device_id, e.release, \(RuntimeMetricsColumns.list("e")) FROM events e
            JOIN (SELECT device_id, MAX(seq) AS seq FROM events
                  WHERE model = ? AND kind = \(SQLVocabulary.literal(EventKind.metrics)) AND release = ? AND received_at >= ?
                  GROUP BY device_id) latest
              ON e.device_id = latest.device_id AND e.seq = latest.seq
            """, [model, release, since]
        ).compactMap(Self.metricsRow)
    }

    func installed(model: String) async throws -> [String: String] {
        guard Name.isValid(model) else { return [:] }
        var out: [String: String] = [:]
        for r in try await db.query("SELECT id, \(db.dialect.jsonGet("installed")) AS sha FROM devices", [model]) {
            if let sha = try r.optionalString("sha") { out[try r.string("id")] = sha }
        }
        return out
    }
}

/// What devices measured of the artifacts they ran: each device's latest benchmark and latest
/// runtime figures per artifact.
extension SQLStore {
    func performanceSamples(model: String) async throws -> [VariantMeasurement.Sample] {
        let rows = try await db.query(
            """
            SELECT e.device_id, d.hardware_class, e.sha256, e.kind, e.detail, \(RuntimeMetricsColumns.list("e")) FROM events e
            JOIN (SELECT device_id, sha256, kind, MAX(seq) AS seq FROM events
                  WHERE model = ? AND kind IN \(SQLVocabulary.list([EventKind.benchmark, .metrics])) AND sha256 IS NOT NULL
                  GROUP BY device_id, sha256, kind) latest
              ON e.device_id = latest.device_id AND e.seq = latest.seq
            JOIN devices d ON d.id = e.device_id
            WHERE d.hardware_class IS NOT NULL
            """, [model])
        var bench: [String: VariantMeasurement.Sample] = [:], runtime: [String: VariantMeasurement.Sample] = [:]
        func bounded(_ v: Double?) -> Double? { v.flatMap { $0.isFinite && $0 >= 0 && $0 < 86_400_000 ? $0 : nil } }
        for r in rows {
            let device = try r.string("device_id"), cls = try r.string("hardware_class"), sha = try r.string("sha256"),
                kind = EventKind(rawValue: try r.string("kind"))
            let key = device + "\u{0}" + sha
            if kind == .benchmark, let detail = try r.optionalString("detail"), let b = try? BenchmarkReport.parse(Array(detail.utf8)) {
                bench[key] = .init(
                    device: device, hardwareClass: cls, sha256: sha, latencyP50Ms: b.latencyP50Ms, latencyP95Ms: b.latencyP95Ms,
                    peakMemoryBytes: b.peakMemoryBytes, joulesPerInference: b.joulesPerInference)
            } else if kind == .metrics, let m = try RuntimeMetricsColumns.figures(r), let p50 = bounded(m.latencyP50Ms) {
                runtime[key] = .init(
                    device: device, hardwareClass: cls, sha256: sha, latencyP50Ms: p50, latencyP95Ms: bounded(m.latencyP95Ms))
            }
        }
        // A device's own benchmark of an artifact is preferred over its runtime figures for it.
        return Array(runtime.merging(bench) { _, b in b }.values)
    }
}
