import ArgumentParser
import FleetController
import Foundation

/// `fleet-controller bench-gates`: the gate evaluation of a staged rollout over a synthetic fleet.
struct BenchGates: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-gates",
        abstract: "Time the rollout driver's gate evaluation over N devices' telemetry in a scratch SQLite store (or an empty PostgreSQL database).")

    @Option(help: "Devices in the synthetic fleet (each with an install outcome or runtime metrics).") var devices: Int = 100_000
    @Option(help: "Timed ticks.") var runs: Int = 5
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
        print("devices \(r.devices), cells \(r.cells), events \(r.events), cohort \(r.cohortDevices), store filled in \(String(format: "%.1f", r.populateSeconds)) s")
        print("tick (SQLite reads + evaluation + cell writes): median \(String(format: "%.3f", median(r.tickSeconds))) s over \(r.tickSeconds.count) runs")
        print("evaluation alone (cohorts, observations, gates): median \(String(format: "%.3f", median(r.evaluateSeconds))) s")
        print("selector '\(r.selector)' over \(r.devices) devices: \(r.selectorMatched) picked; rows read in \(String(format: "%.3f", median(r.selectorReadSeconds))) s, "
              + "matched in \(String(format: "%.3f", median(r.selectorMatchSeconds))) s (medians)")
    }
}
