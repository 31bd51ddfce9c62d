import ArgumentParser
import FleetClient
import FleetCore
import Foundation

struct ReleaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "release", abstract: "Sign and publish release catalogs.",
                                                    subcommands: [Create.self, List.self, Show.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a release catalog of a model's variants with the offline release key and publish it.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name.") var model: String
        @Option(help: "Release version, e.g. 1.2.0.") var version: String
        @Option(help: "Keys directory from `fleetctl keys init` (uses offline/release.key).") var keys: String?
        @Option(help: "Release key file (instead of --keys).") var releaseKey: String?
        @Option(help: "Comma-separated variant names (default: all variants of the model).") var variants: String?
        @Option(help: "Days until the catalog expires.") var expiresDays: Int = 90

        func validate() throws {
            guard Name.isValid(model) else { throw ValidationError("'\(model)' is not a valid model name") }
            guard Name.isValid(version) else { throw ValidationError("'\(version)' is not a valid version") }
            guard keys != nil || releaseKey != nil else { throw ValidationError("give --keys DIR or --release-key FILE") }
            guard expiresDays >= 1 else { throw ValidationError("--expires-days must be at least 1") }
        }

        func run() throws {
            let key = try loadPrivateKey(releaseKey ?? "\(keys!)/offline/release.key", role: .release)
            let api = global.client()
            let info = try calling { try api.get("/v1/models/\(model)", as: ModelInfo.self) }
            var list = try calling { try api.get("/v1/models/\(model)/variants", as: [VariantInfo].self) }.map(\.variant)
            if let wanted = variants?.split(separator: ",").map(String.init) {
                let missing = wanted.filter { w in !list.contains { $0.name == w } }
                guard missing.isEmpty else { throw CLIError("model \(model) has no variant \(missing.joined(separator: ", "))") }
                list = list.filter { wanted.contains($0.name) }
            }
            guard !list.isEmpty else { throw CLIError("model \(model) has no variants to release") }
            let classes = try calling { try api.get("/v1/config/hardware-classes", as: [HardwareClass].self) }
            let catalog = ReleaseCatalog(model: model, version: version, serial: info.nextSerial,
                                         expiresAt: Int64(Date().timeIntervalSince1970) + Int64(expiresDays) * 86_400,
                                         variants: list, hardwareClasses: classes)
            let envelope = try Envelope.sign(catalog, type: PayloadType.catalog, keys: [key])
            let release = try calling { try api.post("/v1/releases", NewRelease(catalog: envelope), as: ReleaseInfo.self) }
            try global.emit(release) {
                "release \(release.id) (serial \(release.serial)) signed with \(key.keyID.prefix(16))…: \(release.variants.count) variants\n"
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List releases.")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            let list = try calling { try global.client().get("/v1/releases", as: [ReleaseInfo].self) }
            try global.emit(list) {
                Table.render(["RELEASE", "SERIAL", "VARIANTS", "CREATED"],
                             list.map { [$0.id, "\($0.serial)", $0.variants.map(\.name).joined(separator: ","), timeText($0.createdAt)] })
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one release and its variants.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Release id, MODEL@VERSION.") var release: String
        struct Shown: Encodable { var release: ReleaseInfo; var packages: ReleasePackages }

        func run() throws {
            let api = global.client()
            let r = try calling { try api.get("/v1/releases/\(release)", as: ReleaseInfo.self) }
            let p = try calling { try api.get("/v1/releases/\(release)/packages", as: ReleasePackages.self) }
            try global.emit(Shown(release: r, packages: p)) {
                var out = "release \(r.id) serial \(r.serial) catalog \(r.catalogSha256.prefix(16))…\n"
                out += Table.render(["VARIANT", "DTYPE", "SIZE", "REQUIRES", "SHA256"], r.variants.map {
                    [$0.name, $0.dtype, ByteCount.format($0.size), requirementsText($0.requires), String($0.sha256.prefix(16))]
                })
                let rows = p.variants.flatMap { v in
                    v.deltas.map { d in
                        [v.variant, String(d.baseSha256.prefix(12)), d.status, d.method ?? "-",
                         d.size.map(ByteCount.format) ?? "-", d.size.map { String(format: "%.1f%%", Double($0) * 100 / Double(max(v.size, 1))) } ?? "-"]
                    }
                }
                out += "\npackages:\n"
                out += rows.isEmpty ? "  no delta packages (every device downloads the full artifact)\n"
                    : Table.render(["TARGET", "BASE", "STATUS", "METHOD", "SIZE", "OF FULL"], rows)
                let saved = p.bytesFull > 0 ? 100 - Double(p.bytesSent) * 100 / Double(p.bytesFull) : 0
                out += "\nrollout: \(p.devices) devices assigned, \(p.devicesViaDelta) via delta; sends \(ByteCount.format(p.bytesSent)) "
                out += "instead of \(ByteCount.format(p.bytesFull)) as full downloads (\(String(format: "%.1f", saved))% saved)\n"
                return out
            }
        }
    }
}

func requirementsText(_ r: Requirements) -> String {
    var parts: [String] = []
    if let a = r.arch { parts.append("arch=" + a.joined(separator: "|")) }
    if let c = r.cpuFlags { parts.append("cpu=" + c.joined(separator: ",")) }
    if let m = r.minMemoryBytes { parts.append("memory>=" + ByteCount.format(m)) }
    if let x = r.accelerators { parts.append("accelerator=" + x.joined(separator: "|")) }
    return parts.isEmpty ? "-" : parts.joined(separator: " ")
}

struct RolloutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rollout", abstract: "Start, watch and steer rollouts.",
                                                    subcommands: [Start.self, List.self, Status.self, Promote.self, Pause.self, Resume.self, Abort.self])

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Roll a release out: in staged phases per cell gated on telemetry (--policy), or to every device at once (--all).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Release id, MODEL@VERSION.") var release: String
        @Option(help: "Rollout policy from the controller's fleet/policies (e.g. canary).") var policy: String?
        @Flag(help: "Send the release to every device at once, without phases or gates.") var all = false

        func validate() throws {
            guard all != (policy != nil) else { throw ValidationError("choose one: --policy NAME (staged) or --all") }
        }

        func run() throws {
            let body = NewRollout(release: release, strategy: all ? "all" : "staged", policy: policy)
            let r = try calling { try global.client().post("/v1/rollouts", body, as: RolloutInfo.self) }
            try global.emit(r) { "rollout \(r.id) of \(r.release) started (\(r.strategy == "all" ? "all devices at once" : "policy \(r.strategy)"))\n" }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List rollouts with their progress.")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            let list = try calling { try global.client().get("/v1/rollouts", as: [RolloutInfo].self) }
            try global.emit(list) {
                Table.render(["ID", "RELEASE", "STRATEGY", "STATE", "TARGETED", "COMMITTED", "FAILED", "HELD"],
                             list.map { ["\($0.id)", $0.release, $0.strategy, $0.state, "\($0.targeted)", "\($0.committed)", "\($0.failed)", "\($0.held)"] })
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
                if !watch || s.rollout.state != "active" { break }
                usleep(UInt32(interval * 1_000_000))
            } while true
        }

        func render(_ s: RolloutStatus) -> String {
            var out = "rollout \(s.rollout.id): \(s.rollout.release) \(s.rollout.state)"
            out += s.previousRelease.map { " (control: \($0))" } ?? ""
            out += s.policy.map { ", policy \($0.name)" } ?? ", all devices at once"
            out += "\n"
            out += Table.render(["CELL", "STATUS", "PHASE", "SHARE", "PROGRESS", "GATES"], s.cells.map { c in
                let o = c.observation
                let done = o?.finished ?? 0, total = o?.targeted ?? 0
                let share = s.policy.map { p in c.phase <= p.phases.count ? String(format: "%g%%", p.phases[c.phase - 1].percent) : "-" } ?? "100%"
                return [c.cell, c.status, "\(c.phase)/\(c.phases)", share,
                        bar(done, total) + " \(done)/\(total)", c.gates.map(gateText).joined(separator: " ")]
            })
            for c in s.cells { if let g = c.failedGate { out += "  \(c.cell) stopped by \(gateText(g))\n" } }
            if let last = s.actions.last { out += "last action: \(timeText(last.at)) \(last.actor) \(last.action) \(last.cell ?? "") \(last.detail ?? "")\n" }
            return out
        }

        func bar(_ done: Int, _ total: Int) -> String {
            let width = 12
            let filled = total > 0 ? width * done / total : 0
            return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
        }

        func gateText(_ g: GateResult) -> String {
            let mark = g.passed.map { $0 ? "ok" : "FAIL" } ?? "wait"
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

    struct Steer: ParsableArguments {
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Rollout id.") var id: Int64
        @Option(help: "Only this cell, CLASS/TIER.") var cell: String?

        func send(_ verb: String) throws {
            let s = try calling { try global.client().post("/v1/rollouts/\(id)/\(verb)", RolloutActionRequest(cell: cell), as: RolloutStatus.self) }
            try global.emit(s) { "rollout \(s.rollout.id): \(verb) done; state \(s.rollout.state); cells: " +
                s.cells.map { "\($0.cell)=\($0.status)" }.joined(separator: " ") + "\n" }
        }
    }
}

struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "devices", abstract: "Inspect, enroll, approve and revoke devices.",
                                                    subcommands: [List.self, Explain.self, EnrollToken.self, Approve.self, Revoke.self,
                                                                  Identities.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List devices with class, tier and installed variant.")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            let list = try calling { try global.client().get("/v1/devices", as: [DeviceInfo].self) }
            try global.emit(list) {
                Table.render(["DEVICE", "CLASS", "TIER", "STATUS", "ASSIGNED", "INSTALLED", "HELD", "LAST-SEEN"], list.map { d in
                    [d.id, d.hardwareClass ?? "-", d.tier ?? "-", d.status,
                     d.assigned.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",").nonEmpty,
                     d.installed.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value.prefix(12))" }.joined(separator: ",").nonEmpty,
                     d.held.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",").nonEmpty,
                     timeText(d.lastSeen)]
                })
            }
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Explain which variant a device gets, and why every other one is not chosen.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Device id.") var device: String
        func run() throws {
            let list = try calling { try global.client().get("/v1/devices/\(device)/explain", as: [Explanation].self) }
            try global.emit(list) {
                if list.isEmpty { return "device \(device): no active rollout\n" }
                return list.map { e in
                    "device \(e.deviceId), model \(e.model), release \(e.release): class \(e.selection.hardwareClass ?? "none"), tier \(e.selection.tier ?? "none") -> \(e.selection.chosen ?? (e.selection.overBudget ? "held: over-budget" : "nothing fits"))\n" +
                        Table.render(["", "VARIANT", "DTYPE", "SIZE", "REASON"], e.selection.verdicts.map {
                            [$0.chosen ? "*" : ($0.eligible ? "+" : "-"), $0.variant, $0.dtype, ByteCount.format($0.size), $0.reason]
                        })
                }.joined(separator: "\n")
            }
        }
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Summarise the fleet.")
    @OptionGroup var global: GlobalOptions
    func run() throws {
        let s = try calling { try global.client().get("/v1/status", as: FleetStatus.self) }
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
