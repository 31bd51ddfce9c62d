import FleetCore
import Foundation

/// Rollout history for the dashboard's charts, and per-device telemetry counters.
extension SQLiteStore {
    /// Points kept per cell; older ones are dropped as new ones arrive.
    static let historyPointsPerCell = 2000

    func migrateTelemetry() throws {
        try db.transaction {
            try db.execute("""
                CREATE TABLE IF NOT EXISTS rollout_history (
                    rollout_id INTEGER NOT NULL, cell TEXT NOT NULL, at INTEGER NOT NULL, body TEXT NOT NULL)
                """)
            try db.execute("CREATE INDEX IF NOT EXISTS rollout_history_cell ON rollout_history (rollout_id, cell, at)")
            try db.execute("""
                CREATE TABLE IF NOT EXISTS device_telemetry (
                    device_id TEXT PRIMARY KEY, events_dropped INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL)
                """)
            try migrateRolloutDevices()
            try db.execute("CREATE INDEX IF NOT EXISTS events_model_received ON events (model, kind, received_at)")
        }
    }

    func appendHistory(rollout: Int64, cell: CellKey, _ point: CellHistoryPoint) async throws {
        try db.transaction {
            try db.execute("INSERT INTO rollout_history (rollout_id, cell, at, body) VALUES (?,?,?,?)",
                           [rollout, cell.description, point.at, try json(point)])
            try db.execute("""
                DELETE FROM rollout_history WHERE rollout_id = ? AND cell = ? AND rowid NOT IN
                  (SELECT rowid FROM rollout_history WHERE rollout_id = ? AND cell = ? ORDER BY at DESC, rowid DESC LIMIT ?)
                """, [rollout, cell.description, rollout, cell.description, Int64(Self.historyPointsPerCell)])
        }
    }

    func history(rollout: Int64) async throws -> [String: [CellHistoryPoint]] {
        var out: [String: [CellHistoryPoint]] = [:]
        for r in try db.query("SELECT cell, body FROM rollout_history WHERE rollout_id = ? ORDER BY at, rowid", [rollout]) {
            out[r[0].text ?? "", default: []].append(try parse(CellHistoryPoint.self, r[1]))
        }
        return out
    }

    func recordDropped(deviceId: String, total: UInt64, at: Int64) async throws {
        // The device's own counter only grows; a smaller value (a reinstalled agent) replaces it.
        try db.execute("""
            INSERT INTO device_telemetry (device_id, events_dropped, updated_at) VALUES (?,?,?)
            ON CONFLICT(device_id) DO UPDATE SET events_dropped = excluded.events_dropped, updated_at = excluded.updated_at
            """, [deviceId, Int64(clamping: total), at])
    }

    func eventsDropped() async throws -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for r in try db.query("SELECT device_id, events_dropped FROM device_telemetry WHERE events_dropped > 0") {
            out[r[0].text ?? ""] = UInt64(max(r[1].int ?? 0, 0))
        }
        return out
    }
}

/// Which devices a staged rollout sent its release to, and what each ran before: the target of
/// that device's rollback.
extension SQLiteStore {
    func migrateRolloutDevices() throws {
        try db.execute("""
            CREATE TABLE IF NOT EXISTS rollout_devices (
                rollout_id INTEGER NOT NULL, device_id TEXT NOT NULL, prior_release TEXT, prior_sha256 TEXT,
                assigned_at INTEGER NOT NULL, PRIMARY KEY (rollout_id, device_id))
            """)
    }

    func recordRolloutDevice(rollout: Int64, deviceId: String, priorRelease: String?, priorSha256: String?, at: Int64) async throws {
        try db.execute("""
            INSERT OR IGNORE INTO rollout_devices (rollout_id, device_id, prior_release, prior_sha256, assigned_at) VALUES (?,?,?,?,?)
            """, [rollout, deviceId, priorRelease, priorSha256, at])
    }

    func rolloutDevice(rollout: Int64, deviceId: String) async throws -> RolloutDeviceRecord? {
        try db.query("SELECT prior_release, prior_sha256, assigned_at FROM rollout_devices WHERE rollout_id = ? AND device_id = ?",
                     [rollout, deviceId]).first.map { RolloutDeviceRecord(priorRelease: $0[0].text, priorSha256: $0[1].text, assignedAt: $0[2].int ?? 0) }
    }

    func committedRelease(deviceId: String, model: String, sha256: String) async throws -> String? {
        try db.query("""
            SELECT release FROM events WHERE device_id = ? AND model = ? AND kind = 'committed' AND sha256 = ? AND release IS NOT NULL
            ORDER BY seq DESC LIMIT 1
            """, [deviceId, model, sha256]).first?[0].text
    }
}

extension SQLiteStore {
    func priorReleases(rollout: Int64) async throws -> Set<String> {
        Set(try db.query("SELECT DISTINCT prior_release FROM rollout_devices WHERE rollout_id = ? AND prior_release IS NOT NULL", [rollout])
            .compactMap { $0[0].text })
    }
}

extension SQLiteStore {
    func deviceCells() async throws -> [DeviceCellRecord] {
        try db.query("SELECT id, hardware_class, tier FROM devices").map { DeviceCellRecord(id: $0[0].text ?? "", hardwareClass: $0[1].text, tier: $0[2].text) }
    }
}

/// What the gates read besides the latest window: each treated device's prior release, the
/// treated devices' own figures from before, and what each device runs now.
extension SQLiteStore {
    func rolloutDevices(rollout: Int64) async throws -> [String: RolloutDeviceRecord] {
        var out: [String: RolloutDeviceRecord] = [:]
        for r in try db.query("SELECT device_id, prior_release, prior_sha256, assigned_at FROM rollout_devices WHERE rollout_id = ?", [rollout]) {
            guard let id = r[0].text else { continue }
            out[id] = RolloutDeviceRecord(priorRelease: r[1].text, priorSha256: r[2].text, assignedAt: r[3].int ?? 0)
        }
        return out
    }

    func runtimeMetrics(model: String, release: String, since: Int64) async throws -> [DeviceMetrics] {
        try db.query("""
            SELECT e.device_id, e.release, e.detail FROM events e
            JOIN (SELECT device_id, MAX(seq) AS seq FROM events WHERE model = ? AND kind = 'metrics' AND release = ? AND received_at >= ?
                  GROUP BY device_id) last
              ON e.device_id = last.device_id AND e.seq = last.seq
            """, [model, release, since]).compactMap(Self.metricsRow)
    }

    func installed(model: String) async throws -> [String: String] {
        guard Name.isValid(model) else { return [:] }
        var out: [String: String] = [:]
        for r in try db.query("SELECT id, json_extract(installed, '$.\"' || ? || '\"') FROM devices", [model]) {
            if let id = r[0].text, let sha = r[1].text { out[id] = sha }
        }
        return out
    }
}

/// What devices measured of the artifacts they ran: each device's latest benchmark and latest
/// runtime figures per artifact.
extension SQLiteStore {
    func performanceSamples(model: String) async throws -> [VariantMeasurement.Sample] {
        let rows = try db.query("""
            SELECT e.device_id, d.hardware_class, e.sha256, e.kind, e.detail FROM events e
            JOIN (SELECT device_id, sha256, kind, MAX(seq) AS seq FROM events
                  WHERE model = ? AND kind IN ('benchmark', 'metrics') AND sha256 IS NOT NULL GROUP BY device_id, sha256, kind) last
              ON e.device_id = last.device_id AND e.seq = last.seq
            JOIN devices d ON d.id = e.device_id
            WHERE d.hardware_class IS NOT NULL
            """, [model])
        var bench: [String: VariantMeasurement.Sample] = [:], runtime: [String: VariantMeasurement.Sample] = [:]
        func bounded(_ v: Double?) -> Double? { v.flatMap { $0.isFinite && $0 >= 0 && $0 < 86_400_000 ? $0 : nil } }
        for r in rows {
            guard let device = r[0].text, let cls = r[1].text, let sha = r[2].text, let kind = r[3].text, let detail = r[4].text else { continue }
            let key = device + "\u{0}" + sha
            if kind == "benchmark", let b = try? BenchmarkReport.parse(Array(detail.utf8)) {
                bench[key] = .init(device: device, hardwareClass: cls, sha256: sha, latencyP50Ms: b.latencyP50Ms, latencyP95Ms: b.latencyP95Ms,
                                   peakMemoryBytes: b.peakMemoryBytes, joulesPerInference: b.joulesPerInference)
            } else if kind == "metrics", let m = try? JSONDecoder().decode(RuntimeMetrics.self, from: Data(detail.utf8)),
                      let p50 = bounded(m.latencyP50Ms) {
                runtime[key] = .init(device: device, hardwareClass: cls, sha256: sha, latencyP50Ms: p50, latencyP95Ms: bounded(m.latencyP95Ms))
            }
        }
        // A device's own benchmark of an artifact is preferred over its runtime figures for it.
        return Array(runtime.merging(bench) { _, b in b }.values)
    }
}
