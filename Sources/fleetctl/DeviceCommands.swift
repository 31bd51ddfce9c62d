import ArgumentParser
import FleetClient
import FleetCore
import Foundation

struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices", abstract: "Inspect, enroll, approve and revoke devices.",
        subcommands: [
            List.self, Label.self, Explain.self, Events.self, EnrollToken.self, Approve.self,
            Revoke.self, Identities.self
        ])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List devices with class, tier, labels and installed variant.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only the devices this label selector picks, e.g. 'region=eu-west,site!=lab' (keys class, tier, arch are built in).")
        var selector: String?
        func run() throws {
            let list = try calling { try global.client().get("/v1/devices" + selectorQuery(selector), as: [DeviceInfo].self) }
            try global.emit(list) {
                Table.render(
                    ["DEVICE", "CLASS", "TIER", "LABELS", "STATUS", "ASSIGNED", "INSTALLED", "HELD", "LAST-SEEN", "AGENT"],
                    list.map { d in
                        [
                            d.id, d.hardwareClass ?? "-", d.tier ?? "-",
                            (d.labels ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",").nonEmpty,
                            d.status.rawValue,
                            d.assigned.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",").nonEmpty,
                            d.installed.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value.prefix(12))" }.joined(separator: ",")
                                .nonEmpty,
                            d.held.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",").nonEmpty,
                            timeText(d.lastSeen), agentText(d)
                        ]
                    })
            }
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Explain which variant a device gets, and why every other one is not chosen.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Device id.") var device: String
        func run() throws {
            let list = try calling { try global.client().get("/v1/devices/\(device)/explain", as: [Explanation].self) }
            try global.emit(list) {
                if list.isEmpty { return "device \(device): no active rollout\n" }
                return list.map { e in
                    "device \(e.deviceId), model \(e.model), release \(e.release): class \(e.selection.hardwareClass ?? "none"), tier \(e.selection.tier ?? "none") -> \(e.selection.chosen ?? (e.selection.overBudget ? "held: over-budget" : "nothing fits"))\n"
                        + Table.render(
                            ["", "VARIANT", "DTYPE", "SIZE", "REASON"],
                            e.selection.verdicts.map {
                                [$0.chosen ? "*" : ($0.eligible ? "+" : "-"), $0.variant, $0.dtype, ByteCount.format($0.size), $0.reason]
                            })
                }.joined(separator: "\n")
            }
        }
    }
}

extension DevicesCommand {
    struct Events: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Show a device's status events (installs, failures with their fault, retries, metrics); --follow keeps printing new ones.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Device id.") var device: String
        @Flag(help: "Keep polling and print events as they arrive (Ctrl-C to leave).") var follow = false
        @Option(help: "Seconds between polls with --follow.") var interval: Double = 2
        @Option(help: "Show at most this many of the latest events first.") var limit: Int = 50

        func validate() throws {
            guard Name.isValid(device) else { throw ValidationError("'\(device)' is not a valid device id") }
            guard interval > 0, interval.isFinite else { throw ValidationError("--interval must be positive") }
            guard limit > 0 else { throw ValidationError("--limit must be positive") }
        }

        func run() throws {
            let api = global.client()
            let latest = try calling { try api.get("/v1/devices/\(device)/events", as: [StatusEvent].self) }
            var shown = Array(latest.prefix(limit).reversed())
            if global.json && !follow { return try global.emit(shown) { "" } }
            print(render(shown, header: true), terminator: "")
            guard follow else { return }
            var last = latest.first?.seq ?? 0
            while true {
                usleep(UInt32(interval * 1_000_000))
                shown = try calling { try api.get("/v1/devices/\(device)/events?after=\(last)", as: [StatusEvent].self) }
                guard let end = shown.last?.seq else { continue }
                last = end
                // Written at once, not buffered: a pipe sees each event as it arrives.
                FileHandle.standardOutput.write(Data(render(shown, header: false).utf8))
            }
        }

        func render(_ events: [StatusEvent], header: Bool) -> String {
            if global.json { return events.map { String(decoding: (try? FleetJSON.encode($0)) ?? Data(), as: UTF8.self) + "\n" }.joined() }
            let rows = events.map { e in
                [
                    timeText(e.time), "\(e.seq)", e.kind.rawValue, e.model ?? "-", e.release ?? "-", e.fault ?? "-",
                    (e.retryAt.map { "retry at \(timeText($0)); " } ?? "") + (e.detail ?? "")
                ]
            }
            let table = Table.render(["TIME", "SEQ", "KIND", "MODEL", "RELEASE", "FAULT", "DETAIL"], rows)
            return header ? table : String(table.drop { $0 != "\n" }.dropFirst())
        }
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Summarise the fleet (or the devices a selector picks).")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Only the devices this label selector picks.") var selector: String?
    func run() throws {
        let s = try calling { try global.client().get("/v1/status" + selectorQuery(selector), as: FleetStatus.self) }
        func dict(_ d: [String: Int]) -> String { d.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
        try global.emit(s) {
            """
            devices:   \(s.devices)
              by class:  \(dict(s.byClass))
              by tier:   \(dict(s.byTier))
              by status: \(dict(s.byStatus))
            models: \(s.models)  releases: \(s.releases)  active rollouts: \(s.activeRollouts)
            artifacts: \(s.artifacts) (\(ByteCount.format(s.artifactBytes)))

            """
        }
    }
}

extension String {
    var nonEmpty: String { isEmpty ? "-" : self }
}

/// `KEY=VALUE` arguments as a label set, each checked (a bad one is a usage error naming it).
func labelArguments(_ texts: [String], option: String) throws -> [String: String] {
    var out: [String: String] = [:]
    for text in texts {
        switch Result(catching: { () throws(LabelError) in try Labels.parseAssignment(text) }) {
        case .success(let kv): out[kv.key] = kv.value
        case .failure(let e): throw ValidationError("--\(option) \(text): \(e.message)")
        }
    }
    if case .failure(let e) = Result(catching: { () throws(LabelError) in try Labels.validate(out) }) {
        throw ValidationError("--\(option): \(e.message)")
    }
    return out
}

/// `?selector=…`, percent-encoded; "" without one. The controller checks the syntax and names the position.
func selectorQuery(_ selector: String?) -> String {
    guard let selector else { return "" }
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return "?selector=" + (selector.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")
}

extension DevicesCommand {
    struct Label: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set or remove a device's operator labels (they take precedence over the enrollment token's and the device's own).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Device id.") var device: String
        @Argument(help: "Labels to set, KEY=VALUE.") var labels: [String] = []
        @Option(help: "A label key to remove (repeatable).") var remove: [String] = []

        func validate() throws {
            guard !labels.isEmpty || !remove.isEmpty else { throw ValidationError("give KEY=VALUE labels to set, or --remove KEY") }
            _ = try parsed()
        }

        func parsed() throws -> [String: String] { try labelArguments(labels, option: "label") }

        func run() throws {
            let body = LabelUpdate(set: try parsed(), remove: remove)
            let d = try calling { try global.client().post("/v1/devices/\(device)/labels", body, as: DeviceInfo.self) }
            try global.emit(d) {
                (d.labels ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)  (\(d.labelSources?[$0.key] ?? "?"))" }.joined(
                    separator: "\n") + "\n"
            }
        }
    }
}

/// The agent a device runs: its version and the first hex digits of its binary's sha256.
func agentText(_ d: DeviceInfo) -> String {
    let version = d.agentVersion ?? "-"
    return d.facts.agentSha256.map { "\(version) (\($0.prefix(12)))" } ?? version
}
