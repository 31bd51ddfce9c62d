import ArgumentParser
import FleetCore
import Foundation

@main
struct FleetSimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet-sim",
        abstract: "Play N simulated devices against a controller's device API, open loop, and report rate, latency and errors.",
        discussion: """
            Check-ins are sent on a fixed schedule (RATE per second) whatever the answers do, and latency is \
            measured from each check-in's scheduled time, so a slow or stalled controller shows in the \
            quantiles instead of slowing the generator down. Device i is <prefix><i padded to 7 digits> with \
            the facts of SimulatedDevice.facts(index: i) (spread over the hardware classes and tiers of fleet/). \
            A device given an assignment reports started, downloaded, verified, activated and committed (one \
            event batch, as fleet-agent does) and runs the new sha256 from its next check-in. The controller \
            must accept devices by id (access mode open) and allow each device RATE×60÷DEVICES check-ins a \
            minute (fleet-controller serve --checkins-per-minute).

            --find-max runs steps of --step-duration seconds from --rate up, ×--step-factor each, until p99 \
            passes --p99-target-ms, errors pass --max-error-rate or the achieved rate falls under 95% of the \
            offered; it reports the highest offered rate that held.
            """)

    @Option(help: "Controller base URL (or nginx in front of replicas).")
    var url: String = "http://127.0.0.1:8080"

    @Option(help: "Simulated devices: indices 0 to N-1.")
    var devices: Int = 1000

    @Option(help: "Device ids are <prefix><index padded to 7 digits>, as `fleet-controller seed-devices --id-prefix` writes them.")
    var idPrefix: String = "sim-"

    @Option(help: "Seconds between a device's check-ins; the default rate is devices ÷ poll seconds.")
    var pollSeconds: Double = 900

    @Option(help: "Check-ins per second offered (default: devices ÷ --poll-seconds); the first step of --find-max.")
    var rate: Double?

    @Option(help: "Seconds of load (each step of --find-max: --step-duration).")
    var duration: Double = 60

    @Option(help: "Seconds at the offered rate before the measured run (devices register, caches fill); not reported.")
    var warmup: Double = 0

    @Option(help: "HTTP/1.1 connections to the controller at most.")
    var connections: Int = 32

    @Option(help: "Seconds before a request counts as a timeout.")
    var timeout: Double = 10

    @Option(help: "Requests outstanding at most; a check-in due beyond that is not sent and counts as an `overload` error.")
    var maxInFlight: Int = 20_000

    @Flag(help: "Download each assigned artifact (and throw the bytes away) before reporting the install.")
    var download = false

    @Option(
        help:
            "File with what the devices run, their event sequence numbers and where in the schedule the last run stopped: read at start when it exists, written at the end, so that several runs play one fleet."
    )
    var state: String?

    @Option(help: "Seed of the shuffle that gives each device its phase.")
    var seed: UInt64 = 1

    @Flag(help: "Step the rate up until p99 or errors pass their limits; report the highest rate that held.")
    var findMax = false

    @Option(help: "--find-max: the p99 latency a rate must keep, milliseconds.")
    var p99TargetMs: Double = 250

    @Option(help: "--find-max: the share of check-ins that may fail (0: none).")
    var maxErrorRate: Double = 0

    @Option(help: "--find-max: seconds per step.")
    var stepDuration: Double = 20

    @Option(help: "--find-max: each step offers this many times the last one.")
    var stepFactor: Double = 1.5

    @Option(help: "--find-max: the highest rate tried.")
    var maxRate: Double = 100_000

    @Flag(help: "Print one JSON summary on standard output (progress goes to standard error).")
    var json = false

    func validate() throws {
        guard let u = URL(string: url), u.scheme == "http" || u.scheme == "https", u.host != nil else {
            throw ValidationError("--url must be an http(s) URL, got '\(url)'")
        }
        guard devices >= 1 else { throw ValidationError("--devices must be at least 1") }
        guard idPrefix.isEmpty || Name.isValid(idPrefix + "0") else {
            throw ValidationError("--id-prefix '\(idPrefix)' would not make valid device ids")
        }
        guard pollSeconds > 0 else { throw ValidationError("--poll-seconds must be positive") }
        if let rate { guard rate > 0 else { throw ValidationError("--rate must be positive") } }
        guard duration > 0, stepDuration > 0, warmup >= 0 else {
            throw ValidationError("--duration and --step-duration must be positive, --warmup not negative")
        }
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        guard maxInFlight >= 1 else { throw ValidationError("--max-in-flight must be at least 1") }
        guard stepFactor > 1 else { throw ValidationError("--step-factor must be more than 1") }
        guard p99TargetMs > 0, (0...1).contains(maxErrorRate) else {
            throw ValidationError("--p99-target-ms must be positive, --max-error-rate from 0 to 1")
        }
    }

    var offered: Double { rate ?? Double(devices) / pollSeconds }

    func run() async throws {
        let sim = Simulator(
            .init(
                url: url.hasSuffix("/") ? String(url.dropLast()) : url, devices: devices, idPrefix: idPrefix,
                connections: connections, timeoutSeconds: timeout, maxInFlight: maxInFlight,
                download: download, seed: seed))
        do {
            try await play(sim)
        } catch {
            await sim.shutdown()
            throw error
        }
        await sim.shutdown()
        if let state { try sim.save(state: state) }
    }

    private func play(_ sim: Simulator) async throws {
        if let state { try sim.load(state: state) }
        if warmup > 0 {
            progress("warm-up: \(fmt(offered)) check-ins/s for \(fmt(warmup)) s")
            let w = await sim.run(rate: offered, duration: warmup)
            progress("warm-up: achieved \(fmt(w.achievedRate))/s, p99 \(w.latencyMs.p99) ms, \(w.errorCount) errors")
        }
        if findMax {
            let result = await stepUp(sim)
            if json {
                print(String(decoding: try FleetJSON.encode(result, pretty: true), as: UTF8.self))
            } else {
                let best = result.maxSustainableRate.map { "\(fmt($0)) check-ins/s" } ?? "none (the first step already failed)"
                print("find-max: highest sustainable rate \(best); stopped because \(result.stoppedBecause)")
                print("          (p99 ≤ \(fmt(p99TargetMs)) ms, errors ≤ \(maxErrorRate * 100)%, achieved ≥ 95% of offered)")
            }
        } else {
            progress("\(devices) devices, \(fmt(offered)) check-ins/s for \(fmt(duration)) s against \(url)")
            let summary = await sim.run(rate: offered, duration: duration)
            if json { print(String(decoding: try FleetJSON.encode(summary, pretty: true), as: UTF8.self)) } else { print(summary.text) }
        }
    }

    private func stepUp(_ sim: Simulator) async -> FindMaxSummary {
        var result = FindMaxSummary(
            p99TargetMs: p99TargetMs, maxErrorRate: maxErrorRate, steps: [], maxSustainableRate: nil,
            stoppedBecause: "the highest rate (--max-rate) held")
        var r = min(offered, maxRate)
        while true {
            let s = await sim.run(rate: r, duration: stepDuration)
            result.steps.append(s)
            let errorRate = Double(s.errorCount) / Double(max(s.scheduled, 1))
            let verdict: String? =
                if s.latencyMs.p99 > p99TargetMs {
                    "p99 \(s.latencyMs.p99) ms > \(fmt(p99TargetMs)) ms at \(fmt(r))/s"
                } else if errorRate > maxErrorRate {
                    "\(s.errorCount) errors (\(fmt(errorRate * 100))%) at \(fmt(r))/s"
                } else if s.achievedRate < 0.95 * r { "achieved \(fmt(s.achievedRate))/s < 95% of \(fmt(r))/s" } else { nil }
            progress(
                "step \(result.steps.count): offered \(fmt(r))/s, achieved \(fmt(s.achievedRate))/s, p50 \(s.latencyMs.p50) ms, p99 \(s.latencyMs.p99) ms, \(s.errorCount) errors: "
                    + (verdict == nil ? "held" : "failed"))
            if !json { print(s.text.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n")) }
            if let verdict { result.stoppedBecause = verdict; break }
            result.maxSustainableRate = r
            if r >= maxRate { break }
            r = min(r * stepFactor, maxRate)
        }
        return result
    }

    private func progress(_ line: String) {
        FileHandle.standardError.write(Data(("fleet-sim: " + line + "\n").utf8))
    }
}
