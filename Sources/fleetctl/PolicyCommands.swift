import ArgumentParser
import FleetClient
import FleetCore
import Foundation

struct PoliciesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policies", abstract: "Show the controller's rollout policies (fleet/policies, re-read on SIGHUP).",
        subcommands: [List.self, Show.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List policies: phases, gates, what a failing or unjudged gate does.")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            let list = try calling { try global.client().get("/v1/policies", as: [RolloutPolicy].self) }
            try global.emit(list) {
                Table.render(
                    ["NAME", "PHASES", "ON-FAILURE", "UNJUDGED", "HOLD-BACK", "DEVICE-TIMEOUT"],
                    list.map { p in
                        [
                            p.name, p.phases.map { String(format: "%g%%", $0.percent) }.joined(separator: " > "), p.onFailure.rawValue,
                            (p.gates.unjudged ?? .block).rawValue, String(format: "%g%%", p.holdBackPercent ?? 0),
                            "\(p.deviceTimeoutSeconds)s"
                        ]
                    })
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one policy in full.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Policy name.") var name: String
        func validate() throws { guard Name.isValid(name) else { throw ValidationError("'\(name)' is not a valid policy name") } }
        func run() throws {
            let p = try calling { try global.client().get("/v1/policies/\(name)", as: RolloutPolicy.self) }
            try global.emit(p) { Self.render(p) }
        }

        static func render(_ p: RolloutPolicy) -> String {
            var out = "policy \(p.name): on failure \(p.onFailure.rawValue), unjudged gates \((p.gates.unjudged ?? .block).rawValue), "
            out += "device timeout \(p.deviceTimeoutSeconds)s, hold-back \(String(format: "%g%%", p.holdBackPercent ?? 0))\n"
            out += Table.render(
                ["PHASE", "SHARE", "MIN-DEVICES", "BAKE"],
                p.phases.enumerated().map { i, ph in
                    ["\(i + 1)", String(format: "%g%%", ph.percent), "\(ph.minDevices)", "\(ph.bakeSeconds)s"]
                })
            let g = p.gates
            let gates: [(String, String?)] = [
                ("min sample", "\(g.minSample)"),
                ("max install failure rate", g.maxInstallFailureRate.map { "\($0)" }),
                ("max health failure rate", g.maxHealthFailureRate.map { "\($0)" }),
                ("max timed-out rate", g.maxTimedOutRate.map { "\($0)" }),
                ("max latency p50 ratio", g.maxLatencyP50Ratio.map { "\($0)" }),
                ("max latency p95 ratio", g.maxLatencyP95Ratio.map { "\($0)" }),
                ("max error rate increase", g.maxErrorRateIncrease.map { "\($0)" }),
                ("max crashes", g.maxCrashes.map { "\($0)" })
            ]
            out += "gates:\n" + gates.compactMap { n, v in v.map { "  \(n): \($0)\n" } }.joined()
            return out
        }
    }
}
