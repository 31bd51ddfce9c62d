import FleetCore
import Foundation

/// Assignments that failed on a device for good (a `failed` or `rolled-back` event): the director
/// does not send that release to that device again until an operator retries it.
extension SQLStore {
    /// Inside `appendEvents`' transaction: a final failure of a release on a device.
    static func recordFailure(_ tx: any SQLQuerying, deviceId: String, _ e: StatusEvent, receivedAt: Int64) async throws {
        guard e.kind == .failed || e.kind == .rolledBack,
            let model = e.model, let release = e.release, Name.isValid(model)
        else { return }
        try await tx.execute(
            """
            INSERT INTO device_failures (device_id, model, release, sha256, kind, fault, detail, at) VALUES (?,?,?,?,?,?,?,?)
            ON CONFLICT(device_id, model, release) DO UPDATE SET sha256 = excluded.sha256, kind = excluded.kind, fault = excluded.fault,
              detail = excluded.detail, at = excluded.at, retried_at = NULL, retried_by = NULL
            """, [deviceId, model, release, e.sha256, e.kind.rawValue, e.fault, e.detail.map { String($0.prefix(1000)) }, receivedAt])
    }

    private static let failureColumns = "device_id, model, release, sha256, kind, fault, detail, at"

    private static func failureRow(_ r: SQLRow) throws -> DeviceFailure {
        DeviceFailure(
            deviceId: try r.string("device_id"), model: try r.string("model"), release: try r.string("release"),
            sha256: try r.optionalString("sha256"), kind: try r.string("kind"), fault: try r.optionalString("fault"),
            detail: try r.optionalString("detail"), at: try r.int("at"))
    }

    func failures(deviceId: String) async throws -> [DeviceFailure] {
        try await db.query("SELECT \(Self.failureColumns) FROM device_failures WHERE device_id = ? AND retried_at IS NULL", [deviceId])
            .map(Self.failureRow)
    }

    func failures(release: String) async throws -> [DeviceFailure] {
        try await db.query(
            "SELECT \(Self.failureColumns) FROM device_failures WHERE release = ? AND retried_at IS NULL ORDER BY device_id",
            [release]
        ).map(Self.failureRow)
    }

    func clearFailures(release: String, devices: [String]?, by actor: String, at: Int64) async throws -> [DeviceFailure] {
        try await write { tx in
            var cleared = try await tx.query(
                "SELECT \(Self.failureColumns) FROM device_failures WHERE release = ? AND retried_at IS NULL",
                [release]
            ).map(Self.failureRow)
            if let devices { let wanted = Set(devices); cleared = cleared.filter { wanted.contains($0.deviceId) } }
            for f in cleared {
                try await tx.execute(
                    "UPDATE device_failures SET retried_at = ?, retried_by = ? WHERE device_id = ? AND model = ? AND release = ?",
                    [at, actor, f.deviceId, f.model, f.release])
                // The next check-in signs a new assignment (a higher counter): the device's own
                // record of the failed one does not stop it.
                try await tx.execute(
                    "UPDATE assignments SET expires_at = 0 WHERE device_id = ? AND model = ? AND release_id = ?",
                    [f.deviceId, f.model, f.release])
            }
            return cleared
        }
    }
}

/// Every assignment ever signed, kept after newer ones replace it, so that a release's history
/// (who was sent it, how, who installed it) survives the rollouts that come after.
extension SQLStore {
    static func recordDelivery(_ tx: any SQLQuerying, _ a: AssignmentRecord) async throws {
        try await tx.execute(
            """
            INSERT INTO deliveries (device_id, model, release_id, counter, sha256, package_sha256) VALUES (?,?,?,?,?,?)
            ON CONFLICT(device_id, model, counter) DO NOTHING
            """, [a.deviceId, a.model, a.releaseId, a.counter, a.sha256, a.packageSha256])
    }

    func releaseHistory(release: String) async throws -> ReleaseHistory {
        let targeted = try await db.scalar("SELECT COUNT(DISTINCT device_id) AS n FROM deliveries WHERE release_id = ?", [release]).int ?? 0
        // A device received the release when it committed it; how is the package of its latest
        // assignment of that release up to then.
        let rows = try await db.query(
            """
            SELECT c.device_id,
                   (SELECT CASE WHEN d.package_sha256 != d.sha256 THEN 1 ELSE 0 END FROM deliveries d
                    WHERE d.device_id = c.device_id AND d.release_id = ? ORDER BY d.counter DESC LIMIT 1) AS via_delta
            FROM (SELECT DISTINCT device_id FROM events WHERE release = ? AND kind = \(SQLVocabulary.literal(EventKind.committed))) c
            """, [release, release])
        let viaDelta = try rows.filter { (try $0.optionalInt("via_delta") ?? 0) != 0 }.count
        let failed =
            try await db.scalar("SELECT COUNT(*) AS n FROM device_failures WHERE release = ? AND retried_at IS NULL", [release]).int ?? 0
        return ReleaseHistory(targeted: Int(targeted), received: rows.count, receivedViaDelta: viaDelta, failed: Int(failed))
    }
}
