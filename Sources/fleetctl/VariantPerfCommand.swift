import ArgumentParser
import FleetClient
import FleetCore
import Foundation

extension VariantCommand {
    struct Perf: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The fleet's performance table of a model: each variant's measured latency, memory and energy per hardware class.",
            discussion:
                "Figures come from the agents' benchmarks on staged models (--benchmark-command) and the inference services' runtime metrics; each row is the median over the devices of the class."
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name.") var model: String

        func validate() throws { guard Name.isValid(model) else { throw ValidationError("'\(model)' is not a valid model name") } }

        func run() throws {
            let rows = try calling { try global.client().get("/v1/models/\(model)/perf", as: [VariantMeasurement].self) }
            try global.emit(rows) {
                if rows.isEmpty {
                    return "model \(model): nothing measured yet (agents report with --benchmark-command, or runtime metrics)\n"
                }
                func ms(_ v: Double?) -> String { v.map { String(format: "%.2f ms", $0) } ?? "-" }
                return Table.render(
                    ["CLASS", "VARIANT", "DEVICES", "P50", "P95", "PEAK-MEMORY", "ENERGY/INFERENCE"],
                    rows.sorted { ($0.hardwareClass, $0.latencyP50Ms ?? .infinity) < ($1.hardwareClass, $1.latencyP50Ms ?? .infinity) }.map
                    { r in
                        [
                            r.hardwareClass, r.variant ?? String(r.sha256.prefix(12)), "\(r.devices)", ms(r.latencyP50Ms),
                            ms(r.latencyP95Ms),
                            r.peakMemoryBytes.map(ByteCount.format) ?? "-",
                            r.joulesPerInference.map { String(format: "%.3f J (%d devices)", $0, r.energyDevices) } ?? "unavailable"
                        ]
                    })
            }
        }
    }
}

extension VariantCommand {
    struct Trial: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure variants on a few devices of a class through the normal signed path, then return them to their model.",
            discussion:
                "Each chosen device is sent each listed variant of the release in force in turn; its benchmark (--benchmark-command) or runtime metrics measure it; then selection takes over again, now with the figures. `variant perf` shows them."
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name.") var model: String
        @Option(name: .customLong("class"), help: "Hardware class whose devices run the trial.") var hardwareClass: String
        @Option(help: "Variants to measure, comma-separated.") var variants: String
        @Option(help: "How many devices of the class.") var devices: Int = 3
        @Option(help: "Wait up to this many seconds for the trial to finish, then print the figures.") var wait: Double = 0

        func validate() throws {
            guard Name.isValid(model) else { throw ValidationError("'\(model)' is not a valid model name") }
            guard Name.isValid(hardwareClass) else { throw ValidationError("--class '\(hardwareClass)' is not a valid class name") }
            guard !parsedVariants.isEmpty, parsedVariants.allSatisfy(Name.isValid) else {
                throw ValidationError("--variants takes variant names, comma-separated")
            }
            guard (1...1000).contains(devices) else { throw ValidationError("--devices must be 1 to 1000") }
            guard wait >= 0, wait.isFinite else { throw ValidationError("--wait must be a number of seconds") }
        }

        var parsedVariants: [String] { variants.split(separator: ",").map { String($0).trimmed }.filter { !$0.isEmpty } }

        func run() throws {
            let api = global.client()
            var t = try calling {
                try api.post(
                    "/v1/models/\(model)/trials", NewTrial(hardwareClass: hardwareClass, variants: parsedVariants, devices: devices),
                    as: TrialInfo.self)
            }
            let deadline = Date().addingTimeInterval(wait)
            while wait > 0, t.state == .running, Date() < deadline {
                usleep(1_000_000)
                t = try calling { try api.get("/v1/models/\(model)/trials", as: [TrialInfo].self) }.first { $0.id == t.id } ?? t
            }
            try global.emit(t) {
                var out =
                    "trial \(t.id) of \(t.release) on \(t.hardwareClass): \(t.state.rawValue); devices: \(t.devices.joined(separator: ", "))\n"
                for d in t.devices {
                    out +=
                        "  \(d): measured \((t.measured[d] ?? []).joined(separator: ", ").nonEmpty) of \(t.variants.joined(separator: ", "))\n"
                }
                if t.state == .done { out += "figures: fleetctl variant perf \(t.model)\n" }
                return out
            }
        }
    }
}
