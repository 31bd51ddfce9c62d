import FleetCore
import Foundation

/// Quality reports of variants (from the variant builder or an evaluation), one per variant.
extension SQLStore {
    func saveVariantReport(model: String, variant: String, _ report: VariantReport) async throws {
        try await db.execute(
            """
            INSERT INTO variant_reports (model, name, report) VALUES (?,?,?)
            ON CONFLICT(model, name) DO UPDATE SET report = excluded.report
            """, [model, variant, try json(report)])
    }

    func variantReport(model: String, variant: String) async throws -> VariantReport? {
        try await db.query("SELECT report FROM variant_reports WHERE model = ? AND name = ?", [model, variant]).first
            .map { try $0.json(VariantReport.self, "report") }
    }
}

/// A rollout's progress counted from its release's assignments, not from every device's row.
extension SQLStore {
    func releaseProgress(release: String, model: String) async throws -> ReleaseProgress {
        guard Name.isValid(model) else { return ReleaseProgress(targeted: 0, committed: 0, failed: 0, notRunningWindows: []) }
        let rows = try await db.query(
            """
            SELECT a.sha256 AS sha256, a.activation AS activation, d.id AS device, d.status AS status,
                \(db.dialect.jsonGet("d.installed")) AS running
            FROM assignments a LEFT JOIN devices d ON d.id = a.device_id
            WHERE a.release_id = ?
            """, [model, release])
        var progress = ReleaseProgress(targeted: rows.count, committed: 0, failed: 0, notRunningWindows: [])
        let stopped: Set<String> = [DeviceStatus.failed.rawValue, DeviceStatus.rolledBack.rawValue]
        for r in rows {
            let known = try r.optionalString("device") != nil
            if known, try r.optionalString("running") == (try r.string("sha256")) {
                progress.committed += 1
                continue
            }
            if known, let status = try r.optionalString("status"), stopped.contains(status) { progress.failed += 1 }
            progress.notRunningWindows.append(try r.optionalJSON([ActivationWindow].self, "activation"))
        }
        return progress
    }

    func devicesHolding(model: String) async throws -> Int {
        guard Name.isValid(model) else { return 0 }
        return Int(
            try await db.scalar("SELECT COUNT(*) AS n FROM devices WHERE \(db.dialect.jsonGet("held")) IS NOT NULL", [model]).int ?? 0)
    }
}
