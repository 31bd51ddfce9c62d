import FleetCore
import FleetDelta

/// Builds delta packages with the FleetDelta encoder: every method that applies, the smallest kept.
struct FleetDeltaBuilder: DeltaBuilding {
    var level = 19

    func build(base: String, target: String, output: String) throws -> String {
        let report = try DeltaEncoder.encode(base: base, target: target, output: output, level: level)
        return report.method.rawValue
    }
}
