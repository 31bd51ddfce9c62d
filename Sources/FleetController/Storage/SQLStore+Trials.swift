import FleetCore
import Foundation

/// Variant trials: a few devices of a class are sent each listed variant in turn through the
/// normal signed path, measured, and then returned to what selection gives them.
extension SQLStore {
    private static func trialRow(_ r: SQLRow) throws -> TrialRecord {
        TrialRecord(
            id: try r.int("id"), model: try r.string("model"), release: try r.string("release"),
            hardwareClass: try r.string("hardware_class"), variants: try r.json([String].self, "variants"),
            devices: try r.json([String].self, "devices"), state: try r.vocabulary(TrialState.self, "state"),
            createdAt: try r.int("created_at"),
            createdBy: try r.string("created_by"))
    }

    private static let trialColumns = "id, model, release, hardware_class, variants, devices, state, created_at, created_by"

    func createTrial(_ t: TrialRecord) async throws -> TrialRecord {
        let variants = try json(t.variants), devices = try json(t.devices)
        let rows = try await write(announcing: [.trials]) { tx in
            try await tx.query(
                """
                INSERT INTO trials (model, release, hardware_class, variants, devices, state, created_at, created_by) VALUES (?,?,?,?,?,?,?,?)
                RETURNING \(Self.trialColumns)
                """, [t.model, t.release, t.hardwareClass, variants, devices, t.state.rawValue, t.createdAt, t.createdBy])
        }
        guard let row = rows.first else { throw StorageError(.database, "insert returned no row") }
        return try Self.trialRow(row)
    }

    /// Read at every check-in of a device of the model: kept in the replica's cache.
    func trials(model: String) async throws -> [TrialRecord] {
        try await cache.value(.trials, model) {
            try await db.query("SELECT \(Self.trialColumns) FROM trials WHERE model = ? ORDER BY id", [model]).map(Self.trialRow)
        }
    }

    func setTrialState(_ id: Int64, _ state: String) async throws {
        try await write(announcing: [.trials]) { tx in try await tx.execute("UPDATE trials SET state = ? WHERE id = ?", [state, id]) }
    }

    func measuredArtifacts(model: String, deviceId: String) async throws -> Set<String> {
        Set(
            try await db.query(
                """
                SELECT DISTINCT sha256 FROM events WHERE device_id = ? AND model = ? AND kind IN \(SQLVocabulary.list([EventKind.benchmark, .metrics])) AND sha256 IS NOT NULL
                """, [deviceId, model]
            ).map { try $0.string("sha256") })
    }
}
