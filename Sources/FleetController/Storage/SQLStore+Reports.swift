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
