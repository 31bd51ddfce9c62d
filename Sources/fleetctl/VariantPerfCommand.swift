import ArgumentParser
import FleetClient
import FleetCore
import Foundation

extension VariantCommand {
    struct Perf: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The fleet's performance table of a model: each variant's measured latency, memory and energy per hardware class.",
            discussion: "Figures come from the agents' benchmarks on staged models (--benchmark-command) and the inference services' runtime metrics; each row is the median over the devices of the class.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name.") var model: String

        func validate() throws { guard Name.isValid(model) else { throw ValidationError("'\(model)' is not a valid model name") } }

        func run() throws {
            let rows = try calling { try global.client().get("/v1/models/\(model)/perf", as: [VariantMeasurement].self) }
            try global.emit(rows) {
                if rows.isEmpty { return "model \(model): nothing measured yet (agents report with --benchmark-command, or runtime metrics)\n" }
                func ms(_ v: Double?) -> String { v.map { String(format: "%.2f ms", $0) } ?? "-" }
                return Table.render(["CLASS", "VARIANT", "DEVICES", "P50", "P95", "PEAK-MEMORY", "ENERGY/INFERENCE"],
                                    rows.sorted { ($0.hardwareClass, $0.latencyP50Ms ?? .infinity) < ($1.hardwareClass, $1.latencyP50Ms ?? .infinity) }.map { r in
                    [r.hardwareClass, r.variant ?? String(r.sha256.prefix(12)), "\(r.devices)", ms(r.latencyP50Ms), ms(r.latencyP95Ms),
                     r.peakMemoryBytes.map(ByteCount.format) ?? "-",
                     r.joulesPerInference.map { String(format: "%.3f J (%d devices)", $0, r.energyDevices) } ?? "unavailable"]
                })
            }
        }
    }
}
