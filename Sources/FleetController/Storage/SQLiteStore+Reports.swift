import FleetCore
import Foundation

/// Quality reports of variants (from the variant builder or an evaluation), one per variant.
extension SQLiteStore {
    func migrateReports() throws {
        try db.execute("""
            CREATE TABLE IF NOT EXISTS variant_reports (
                model TEXT NOT NULL, name TEXT NOT NULL, report TEXT NOT NULL, PRIMARY KEY (model, name))
            """)
    }

    func saveVariantReport(model: String, variant: String, _ report: VariantReport) async throws {
        try db.execute("INSERT OR REPLACE INTO variant_reports (model, name, report) VALUES (?,?,?)", [model, variant, try json(report)])
    }

    func variantReport(model: String, variant: String) async throws -> VariantReport? {
        guard let row = try db.query("SELECT report FROM variant_reports WHERE model = ? AND name = ?", [model, variant]).first else { return nil }
        return try parse(VariantReport.self, row[0])
    }
}
