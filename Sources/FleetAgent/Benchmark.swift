import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Runs the operator's benchmark on a staged model before it goes live. The command prints JSON
/// on stdout (`latencyP50Ms`, optional `latencyP95Ms`, `iterations`, `peakMemoryBytes`,
/// `joulesPerInference`); when the device has energy counters (RAPL under /sys/class/powercap, or
/// the files given) and the report says how many inferences ran, the agent adds joules per
/// inference from the counters read around the run.
struct Benchmark {
    let command: String?
    let timeoutSeconds: Double
    /// Cumulative energy counters in microjoules (each `energy_uj`), summed.
    let energyCounters: [String]

    enum Outcome: Equatable { case measured(BenchmarkReport), failed(String) }

    /// The package-level RAPL domains (`intel-rapl:N`, not their sub-domains), when readable.
    static func discoverEnergyCounters(root: String = "/sys/class/powercap") -> [String] {
        FS.listDirectory(root).filter { $0.hasPrefix("intel-rapl:") && $0.split(separator: ":").count == 2 }.sorted()
            .map { "\(root)/\($0)/energy_uj" }.filter { readCounter($0) != nil }
    }

    static func readCounter(_ path: String) -> UInt64? {
        guard let bytes = try? FS.read(path, limit: 64) else { return nil }
        return UInt64(String(decoding: bytes, as: UTF8.self).trimmed)
    }

    func run(model: String, sha256: String, modelPath: String, slot: String, scratch: String) -> Outcome? {
        guard let command else { return nil }
        let out = scratch + "/benchmark.out"
        defer { unlink(out) }
        let before = energyCounters.map(Self.readCounter)
        let result = ModelCommand(command: command, timeoutSeconds: timeoutSeconds)
            .run(model: model, sha256: sha256, modelPath: modelPath, slot: slot, stdoutFile: out)
        let after = energyCounters.map(Self.readCounter)
        switch result {
        case .exited(0): break
        case .exited(let code): return .failed("benchmark command exited with \(code)")
        case .signalled(let sig): return .failed("benchmark command killed by signal \(sig)")
        case .timedOut: return .failed("benchmark command timed out after \(timeoutSeconds) s")
        case .cannotStart(let why): return .failed("cannot start benchmark command: \(why)")
        }
        let bytes: [UInt8]
        do { bytes = try FS.read(out, limit: 64 * 1024) } catch { return .failed("benchmark output unreadable or over 64 KiB: \(error)") }
        var report: BenchmarkReport
        do { report = try BenchmarkReport.parse(bytes) } catch { return .failed("benchmark output: \(error.rawValue)") }
        if report.joulesPerInference != nil {
            report.energySource = "command"
        } else if energyCounters.isEmpty {
            report.energyUnavailable = "no energy counters on this device"
        } else if let n = report.iterations, n > 0, before.allSatisfy({ $0 != nil }), after.allSatisfy({ $0 != nil }) {
            // A counter that wrapped during the run is not used.
            let deltas = zip(before, after).map { b, a in a! >= b! ? a! - b! : nil }
            if deltas.allSatisfy({ $0 != nil }) {
                report.joulesPerInference = Double(deltas.reduce(0) { $0 + $1! }) / 1e6 / Double(n)
                report.energySource = "counter"
            } else {
                report.energyUnavailable = "an energy counter wrapped during the run"
            }
        } else {
            report.energyUnavailable =
                report.iterations == nil ? "the benchmark did not report its iterations" : "energy counters unreadable"
        }
        return .measured(report)
    }
}
