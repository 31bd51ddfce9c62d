import ArgumentParser
import FleetClient
import FleetCore
import Foundation

struct RolloutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout", abstract: "Start, watch and steer rollouts.",
        subcommands: [Start.self, List.self, Status.self, Promote.self, Pause.self, Resume.self, Abort.self, Retry.self])

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Roll a release out: in staged phases per cell gated on telemetry (--policy), or to every device at once (--all).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Release id, MODEL@VERSION.") var release: String
        @Option(
            help:
                "Rollout policy: a name from the controller's fleet/policies (e.g. canary), or a policy file (YAML) to use for this rollout."
        )
        var policy: String?
        @Option(help: "Multiply every bake time of the policy by this (labs: 0.01; 0 skips the bakes).") var bakeScale: Double?
        @Flag(help: "Send the release to every device at once, without phases or gates.") var all = false
        @Option(
            help:
                "Only the devices this label selector picks, e.g. 'region in (eu-west,eu-north),site!=lab' (keys class, tier, arch are built in)."
        )
        var selector: String?
        @Flag(help: "Take over the devices an active staged rollout of the same model covers (otherwise an overlap is refused).")
        var supersede = false
        @Option(
            help:
                "Activate only inside this maintenance window, in each device's own time zone unless one is named: 'mon-fri 02:00+3h', 'daily 01:30+90m Europe/Berlin'."
        )
        var window: String?

        /// A value naming a file (a path, or a .yaml name that exists) is a policy document.
        var policyFile: String? {
            guard let policy, policy.contains("/") || policy.hasSuffix(".yaml") || policy.hasSuffix(".yml") else { return nil }
            return policy
        }

        func validate() throws {
            guard all != (policy != nil) else { throw ValidationError("choose one: --policy NAME|FILE (staged) or --all") }
            if let bakeScale {
                guard bakeScale.isFinite, bakeScale >= 0, bakeScale <= 100 else {
                    throw ValidationError("--bake-scale must be between 0 and 100")
                }
            }
            if bakeScale != nil, all { throw ValidationError("--bake-scale applies to a staged rollout (--policy)") }
            if let f = policyFile, !FileManager.default.isReadableFile(atPath: f) { throw ValidationError("--policy \(f): no such file") }
            if let selector {
                switch Result(catching: { () throws(SelectorError) in try LabelSelector(parsing: selector) }) {
                case .success: break
                case .failure(let e): throw ValidationError("--selector: \(e)")
                }
            }
            if let window {
                do {
                    let w = try MaintenanceWindow(parsing: window)
                    if let problem = w.validate() { throw ValidationError("--window: \(problem)") }
                } catch let e as ValidationError { throw e } catch { throw ValidationError("--window: \(error)") }
            }
        }

        func run() throws {
            let document = try policyFile.map { f in
                guard let text = try? String(contentsOfFile: f, encoding: .utf8) else {
                    throw CLIError("--policy \(f) cannot be read as text")
                }
                return text
            }
            let body = NewRollout(
                release: release, strategy: all ? "all" : "staged", policy: document == nil ? policy : nil,
                policyDocument: document, bakeScale: bakeScale, selector: selector, supersede: supersede ? true : nil,
                window: window)
            let r = try calling { try global.client().post("/v1/rollouts", body, as: RolloutInfo.self) }
            try global.emit(r) {
                var line =
                    "rollout \(r.id) of \(r.release) started (\(r.strategy == "all" ? "all devices at once" : "policy \(r.strategy)")"
                if let s = r.selector, !s.isEmpty { line += ", devices \(s)" }
                if let w = r.window { line += ", activating in \(w)" }
                return line + ")\n"
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List rollouts with their progress.")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            let list = try calling { try global.client().get("/v1/rollouts", as: [RolloutInfo].self) }
            try global.emit(list) {
                Table.render(
                    ["ID", "RELEASE", "STRATEGY", "STATE", "SELECTOR", "TARGETED", "COMMITTED", "FAILED", "HELD"],
                    list.map {
                        [
                            "\($0.id)", $0.release, $0.strategy, $0.state.rawValue, ($0.selector ?? "").nonEmpty, "\($0.targeted)",
                            "\($0.committed)",
                            "\($0.failed)", "\($0.held)"
                        ]
                    })
            }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a rollout per cell: phase, progress, gates; --watch redraws it.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Rollout id.") var id: Int64
        @Flag(help: "Redraw every --interval seconds until the rollout stops changing state (Ctrl-C to leave).") var watch = false
        @Option(help: "Seconds between redraws with --watch.") var interval: Double = 2

        func run() throws {
            let api = global.client()
            repeat {
                let s = try calling { try api.get("/v1/rollouts/\(id)", as: RolloutStatus.self) }
                if watch && !global.json { print("\u{1B}[2J\u{1B}[H", terminator: "") }
                try global.emit(s) { render(s) }
                if !watch || s.rollout.state != .active { break }
                usleep(UInt32(interval * 1_000_000))
            } while true
        }

        func render(_ s: RolloutStatus) -> String {
            var out = "rollout \(s.rollout.id): \(s.rollout.release) \(s.rollout.state.rawValue)"
            out += s.previousRelease.map { " (control: \($0))" } ?? ""
            out += s.policy.map { ", policy \($0.name)" } ?? ", all devices at once"
            if let sel = s.rollout.selector, !sel.isEmpty { out += ", devices \(sel)" }
            if let w = s.rollout.window { out += ", window \(w)" }
            out += "\n"
            if let waves = s.waves {
                out += Table.render(
                    ["WAVE", "SELECTOR", "STATUS", "DEVICES", "CELLS"],
                    waves.map {
                        [$0.name, $0.selector.nonEmpty, $0.status.rawValue, "\($0.devices)", "\($0.cells)"]
                    })
            }
            if let n = s.waitingForWindow, n > 0 { out += "\(n) device(s) staged and waiting for their maintenance window\n" }
            out += Table.render(
                ["CELL", "STATUS", "PHASE", "SHARE", "PROGRESS", "FAILED-HELD", "COMPARED-WITH", "GATES"],
                s.cells.map { c in
                    let o = c.observation
                    let done = o?.finished ?? 0, total = o?.targeted ?? 0
                    let share =
                        s.policy.map { whole in
                            let p = CellKey(parsing: c.cell).map(whole.forCell) ?? whole
                            return c.phase <= p.phases.count ? String(format: "%g%%", p.phases[c.phase - 1].percent) : "-"
                        } ?? "100%"
                    let status = c.blockedBy == nil ? c.status.rawValue : c.status.rawValue + " (blocked)"
                    let reference = o?.reference.map { "\($0.rawValue) (\(o?.control?.devices ?? 0))" } ?? "-"
                    return [
                        c.cell, status, "\(c.phase)/\(c.phases)", share, bar(done, total) + " \(done)/\(total)",
                        "\(c.failedNotRetried ?? 0)", reference,
                        c.gates.map { gateText($0, final: c.status != .running && c.status != .baking) }.joined(separator: " ")
                    ]
                })
            for c in s.cells {
                if let g = c.failedGate { out += "  \(c.cell) stopped by \(gateText(g))\n" }
                if let b = c.blockedBy {
                    out +=
                        "  \(c.cell) blocked: \(b.joined(separator: ", ")) cannot judge (no figures from the new release, or no control cohort and no baseline); `rollout promote` overrides\n"
                }
                if let a = c.afterStop { out += "  \(c.cell) after the stop: \(a.restored)/\(a.reached) devices off the new release\n" }
                if let n = c.failedNotRetried, n > 0 {
                    out +=
                        "  \(c.cell): \(n) device(s) failed and are held; `fleetctl rollout retry \(s.rollout.id) --cell \(c.cell)` sends the release again\n"
                }
            }
            if let last = s.actions.last {
                out += "last action: \(timeText(last.at)) \(last.actor) \(last.action) \(last.cell ?? "") \(last.detail ?? "")\n"
            }
            return out
        }

        func bar(_ done: Int, _ total: Int) -> String {
            let width = 12
            let filled = total > 0 ? width * done / total : 0
            return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
        }

        func gateText(_ g: GateResult, final: Bool = false) -> String {
            let mark = g.passed.map { $0 ? "ok" : "FAIL" } ?? (final ? "unjudged" : "wait")
            return "\(g.metric)=\(g.observed.map { String(format: "%.2f", $0) } ?? "-")/\(String(format: "%.2f", g.threshold)):\(mark)"
        }
    }

    struct Promote: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move cells to their next phase now, without waiting for the bake time.")
        @OptionGroup var steer: Steer
        func run() throws { try steer.send("promote") }
    }
    struct Pause: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pause cells: no device outside the current cohorts gets the release.")
        @OptionGroup var steer: Steer
        func run() throws { try steer.send("pause") }
    }
    struct Resume: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume paused cells (their gates are judged again).")
        @OptionGroup var steer: Steer
        func run() throws { try steer.send("resume") }
    }
    struct Abort: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Abort: every updated device is assigned the previous release again.")
        @OptionGroup var steer: Steer
        func run() throws { try steer.send("abort") }
    }

    struct Retry: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send the release again to devices it failed on (they are held as failed until retried or superseded).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Rollout id.") var id: Int64
        @Option(help: "Only the devices of this cell, CLASS/TIER.") var cell: String?
        @Option(help: "Only this device.") var device: String?

        func validate() throws {
            if let cell { guard cell.split(separator: "/").count == 2 else { throw ValidationError("--cell must be CLASS/TIER") } }
            if let device { guard Name.isValid(device) else { throw ValidationError("--device '\(device)' is not a valid device id") } }
        }

        func run() throws {
            let r = try calling {
                try global.client().post(
                    "/v1/rollouts/\(id)/retry", RolloutRetryRequest(cell: cell, device: device), as: RolloutRetryResult.self)
            }
            try global.emit(r) {
                r.retried.isEmpty
                    ? "rollout \(r.rollout): no failed device to retry\n"
                    : "rollout \(r.rollout): \(r.release) will be sent again to \(r.retried.count) device(s): \(r.retried.joined(separator: ", "))\n"
            }
        }
    }

    struct Steer: ParsableArguments {
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Rollout id.") var id: Int64
        @Option(help: "Only this cell, CLASS/TIER.") var cell: String?

        func send(_ verb: String) throws {
            let s = try calling {
                try global.client().post("/v1/rollouts/\(id)/\(verb)", RolloutActionRequest(cell: cell), as: RolloutStatus.self)
            }
            try global.emit(s) {
                "rollout \(s.rollout.id): \(verb) done; state \(s.rollout.state.rawValue); cells: "
                    + s.cells.map { "\($0.cell)=\($0.status.rawValue)" }.joined(separator: " ") + "\n"
            }
        }
    }
}
