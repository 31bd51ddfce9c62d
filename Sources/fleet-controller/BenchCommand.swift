import ArgumentParser
import FleetController
import Foundation

/// `fleet-controller bench-gates`: the gate evaluation of a staged rollout over a synthetic fleet.
struct BenchGates: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-gates",
        abstract:
            "Time the rollout driver's gate evaluation over N devices' telemetry in a scratch SQLite store (or an empty PostgreSQL database)."
    )

    @Option(help: "Devices in the synthetic fleet (each with an install outcome or runtime metrics).") var devices: Int = 100_000
    @Option(help: "Timed ticks after the first (which reads the store whole and is reported apart).") var runs: Int = 5
    @Option(help: "Scratch directory for the store (created; must not exist yet).") var work: String
    @Flag(help: "Print the report as JSON.") var json = false
    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        guard devices > 0, devices <= 10_000_000 else { throw ValidationError("--devices must be between 1 and 10,000,000") }
        guard runs > 0, runs <= 100 else { throw ValidationError("--runs must be between 1 and 100") }
        try database.validate()
        guard !FileManager.default.fileExists(atPath: work) else { throw ValidationError("--work \(work) exists already") }
    }

    func run() async throws {
        let r = try await RolloutBenchmark.run(devices: devices, directory: work, runs: runs, databaseURL: database.database)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(r), as: UTF8.self))
            return
        }
        func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s[s.count / 2] }
        print(
            "devices \(r.devices), cells \(r.cells), events \(r.events), cohort \(r.cohortDevices), store filled in \(String(format: "%.1f", r.populateSeconds)) s"
        )
        func f(_ x: Double) -> String { String(format: "%.3f", x) }
        let steady = Array(r.tickStages.dropFirst())
        func stage(_ name: String, _ key: KeyPath<GateTickStages, Double>) {
            print(
                "  \(name.padding(toLength: 16, withPad: " ", startingAt: 0)) first \(f(r.tickStages[0][keyPath: key])) s, steady median \(f(median(steady.map { $0[keyPath: key] }))) s"
            )
        }
        print(
            "tick (store reads + evaluation + cell writes): steady median \(f(median(r.tickSeconds))) s over \(r.tickSeconds.count) ticks "
                + "(min \(f(r.tickSeconds.min()!)), max \(f(r.tickSeconds.max()!))); first tick \(f(r.firstTickSeconds)) s")
        stage("device cells", \.deviceCells)
        stage("members", \.members)
        stage("outcomes", \.outcomes)
        stage("runtime metrics", \.runtimeMetrics)
        stage("other reads", \.otherReads)
        stage("evaluation", \.evaluation)
        stage("cell writes", \.cellWrites)
        print("evaluation alone (cohorts, observations, gates): median \(String(format: "%.3f", median(r.evaluateSeconds))) s")
        print(
            "selector '\(r.selector)' over \(r.devices) devices: \(r.selectorMatched) picked; rows read in \(String(format: "%.3f", median(r.selectorReadSeconds))) s, "
                + "matched in \(String(format: "%.3f", median(r.selectorMatchSeconds))) s (medians)")
    }
}
