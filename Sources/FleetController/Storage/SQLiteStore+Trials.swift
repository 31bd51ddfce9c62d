import FleetCore
import Foundation

/// Variant trials: a few devices of a class are sent each listed variant in turn through the
/// normal signed path, measured, and then returned to what selection gives them.
extension SQLiteStore {
    func migrateTrials() throws {
        try db.execute("""
            CREATE TABLE IF NOT EXISTS trials (
                id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, release TEXT NOT NULL, hardware_class TEXT NOT NULL,
                variants TEXT NOT NULL, devices TEXT NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL)
            """)
    }

    private func trialRow(_ r: [SQLValue]) throws -> TrialRecord {
        TrialRecord(id: r[0].int ?? 0, model: r[1].text ?? "", release: r[2].text ?? "", hardwareClass: r[3].text ?? "",
                    variants: try parse([String].self, r[4]), devices: try parse([String].self, r[5]), state: r[6].text ?? "",
                    createdAt: r[7].int ?? 0, createdBy: r[8].text ?? "")
    }

    private static let trialColumns = "id, model, release, hardware_class, variants, devices, state, created_at, created_by"

    func createTrial(_ t: TrialRecord) async throws -> TrialRecord {
        try db.transaction {
            try db.execute("""
                INSERT INTO trials (model, release, hardware_class, variants, devices, state, created_at, created_by) VALUES (?,?,?,?,?,?,?,?)
                """, [t.model, t.release, t.hardwareClass, try json(t.variants), try json(t.devices), t.state, t.createdAt, t.createdBy])
            let id = try db.query("SELECT last_insert_rowid()").first?[0].int ?? 0
            var out = t
            out.id = id
            return out
        }
    }

    func trials(model: String) async throws -> [TrialRecord] {
        try db.query("SELECT \(Self.trialColumns) FROM trials WHERE model = ? ORDER BY id", [model]).map(trialRow)
    }

    func setTrialState(_ id: Int64, _ state: String) async throws {
        try db.execute("UPDATE trials SET state = ? WHERE id = ?", [state, id])
    }
}

extension SQLiteStore {
    func measuredArtifacts(model: String, deviceId: String) async throws -> Set<String> {
        Set(try db.query("""
            SELECT DISTINCT sha256 FROM events WHERE device_id = ? AND model = ? AND kind IN ('benchmark', 'metrics') AND sha256 IS NOT NULL
            """, [deviceId, model]).compactMap { $0[0].text })
    }
}
