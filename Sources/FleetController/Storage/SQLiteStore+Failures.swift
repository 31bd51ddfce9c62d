import FleetCore
import Foundation

/// Assignments that failed on a device for good (a `failed` or `rolled-back` event): the director
/// does not send that release to that device again until an operator retries it.
extension SQLiteStore {
    func migrateFailures() throws {
        try db.transaction {
            try db.execute("""
                CREATE TABLE IF NOT EXISTS device_failures (
                    device_id TEXT NOT NULL, model TEXT NOT NULL, release TEXT NOT NULL, sha256 TEXT, kind TEXT NOT NULL,
                    fault TEXT, detail TEXT, at INTEGER NOT NULL, retried_at INTEGER, retried_by TEXT,
                    PRIMARY KEY (device_id, model, release))
                """)
            try db.execute("CREATE INDEX IF NOT EXISTS device_failures_release ON device_failures (release, retried_at)")
            try migrateDeliveries()
            // Databases made before events carried a fault code and a retry time.
            let columns = Set(try db.query("PRAGMA table_info(events)").compactMap { $0[1].text })
            if !columns.contains("fault") { try db.execute("ALTER TABLE events ADD COLUMN fault TEXT") }
            if !columns.contains("retry_at") { try db.execute("ALTER TABLE events ADD COLUMN retry_at INTEGER") }
        }
    }

    /// Inside `appendEvents`' transaction: a final failure of a release on a device.
    func recordFailureLocked(deviceId: String, _ e: StatusEvent, receivedAt: Int64) throws {
        guard e.kind == EventKind.failed.rawValue || e.kind == EventKind.rolledBack.rawValue,
              let model = e.model, let release = e.release, Name.isValid(model) else { return }
        try db.execute("""
            INSERT INTO device_failures (device_id, model, release, sha256, kind, fault, detail, at) VALUES (?,?,?,?,?,?,?,?)
            ON CONFLICT(device_id, model, release) DO UPDATE SET sha256 = excluded.sha256, kind = excluded.kind, fault = excluded.fault,
              detail = excluded.detail, at = excluded.at, retried_at = NULL, retried_by = NULL
            """, [deviceId, model, release, e.sha256, e.kind, e.fault, e.detail.map { String($0.prefix(1000)) }, receivedAt])
    }

    private static let failureColumns = "device_id, model, release, sha256, kind, fault, detail, at"

    private func failureRow(_ r: [SQLValue]) -> DeviceFailure {
        DeviceFailure(deviceId: r[0].text ?? "", model: r[1].text ?? "", release: r[2].text ?? "", sha256: r[3].text,
                      kind: r[4].text ?? "", fault: r[5].text, detail: r[6].text, at: r[7].int ?? 0)
    }

    func failures(deviceId: String) async throws -> [DeviceFailure] {
        try db.query("SELECT \(Self.failureColumns) FROM device_failures WHERE device_id = ? AND retried_at IS NULL", [deviceId]).map(failureRow)
    }

    func failures(release: String) async throws -> [DeviceFailure] {
        try db.query("SELECT \(Self.failureColumns) FROM device_failures WHERE release = ? AND retried_at IS NULL ORDER BY device_id",
                     [release]).map(failureRow)
    }

    func clearFailures(release: String, devices: [String]?, by actor: String, at: Int64) async throws -> [DeviceFailure] {
        try db.transaction {
            var cleared = try db.query("SELECT \(Self.failureColumns) FROM device_failures WHERE release = ? AND retried_at IS NULL",
                                       [release]).map(failureRow)
            if let devices { let wanted = Set(devices); cleared = cleared.filter { wanted.contains($0.deviceId) } }
            for f in cleared {
                try db.execute("UPDATE device_failures SET retried_at = ?, retried_by = ? WHERE device_id = ? AND model = ? AND release = ?",
                               [at, actor, f.deviceId, f.model, f.release])
                // The next check-in signs a new assignment (a higher counter): the device's own
                // record of the failed one does not stop it.
                try db.execute("UPDATE assignments SET expires_at = 0 WHERE device_id = ? AND model = ? AND release_id = ?",
                               [f.deviceId, f.model, f.release])
            }
            return cleared
        }
    }
}

/// Every assignment ever signed, kept after newer ones replace it, so that a release's history
/// (who was sent it, how, who installed it) survives the rollouts that come after.
extension SQLiteStore {
    func migrateDeliveries() throws {
        try db.execute("""
            CREATE TABLE IF NOT EXISTS deliveries (
                device_id TEXT NOT NULL, model TEXT NOT NULL, release_id TEXT NOT NULL, counter INTEGER NOT NULL,
                sha256 TEXT NOT NULL, package_sha256 TEXT NOT NULL, PRIMARY KEY (device_id, model, counter))
            """)
        try db.execute("CREATE INDEX IF NOT EXISTS deliveries_release ON deliveries (release_id, device_id)")
    }

    func recordDeliveryLocked(_ a: AssignmentRecord) throws {
        try db.execute("INSERT OR IGNORE INTO deliveries (device_id, model, release_id, counter, sha256, package_sha256) VALUES (?,?,?,?,?,?)",
                       [a.deviceId, a.model, a.releaseId, a.counter, a.sha256, a.packageSha256])
    }

    func releaseHistory(release: String) async throws -> ReleaseHistory {
        let targeted = try db.query("SELECT COUNT(DISTINCT device_id) FROM deliveries WHERE release_id = ?", [release]).first?[0].int ?? 0
        // A device received the release when it committed it; how is the package of its latest
        // assignment of that release up to then.
        let rows = try db.query("""
            SELECT c.device_id,
                   (SELECT d.package_sha256 != d.sha256 FROM deliveries d WHERE d.device_id = c.device_id AND d.release_id = ?
                    ORDER BY d.counter DESC LIMIT 1)
            FROM (SELECT DISTINCT device_id FROM events WHERE release = ? AND kind = 'committed') c
            """, [release, release])
        let viaDelta = rows.filter { ($0[1].int ?? 0) != 0 }.count
        let failed = try db.query("SELECT COUNT(*) FROM device_failures WHERE release = ? AND retried_at IS NULL", [release]).first?[0].int ?? 0
        return ReleaseHistory(targeted: Int(targeted), received: rows.count, receivedViaDelta: viaDelta, failed: Int(failed))
    }
}
