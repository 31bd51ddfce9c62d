import FleetCore

/// Builds delta packages with the FleetDelta encoder.
struct FleetDeltaBuilder: DeltaBuilding {
    func build(base: String, target: String, output: String) throws -> String {
        throw StorageError(.notFound, "delta encoder not linked")
    }
}
