import ArgumentParser
import FleetClient
import FleetCore
import Foundation

struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent", abstract: "Publish agent builds as signed agent releases, and see which agent each device runs.",
        discussion: """
            An agent release goes out like a model release: `fleetctl rollout start \(ReleaseKind.agentModel)@VERSION` \
            with the usual phases, gates, waves and maintenance windows. Only agents that advertise the \
            self-update capability are assigned one; each installs the binary beside the running one, hands \
            over to it, and restores the previous one when the new agent does not check in before its deadline.
            """,
        subcommands: [Publish.self, List.self])

    struct Publish: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Upload agent binaries (one per architecture) and sign them, with the offline release key, as agent release \(ReleaseKind.agentModel)@VERSION."
        )
        @OptionGroup var global: GlobalOptions
        @Option(help: "Agent version, e.g. 0.2.0: the release is \(ReleaseKind.agentModel)@VERSION.") var version: String
        @Option(help: "An agent binary for one architecture, ARCH=PATH (uname -m: x86_64, aarch64; repeatable).") var binary: [String] = []
        @Option(help: "Keys directory from `fleetctl keys init` (uses offline/release.key).") var keys: String?
        @Option(help: "Release key file (instead of --keys).") var releaseKey: String?
        @Option(help: "Days until the catalog expires.") var expiresDays: Int = 90

        func parsedBinaries() throws -> [(arch: String, path: String)] {
            try binary.map { item in
                guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                    throw ValidationError("--binary '\(item)' is not ARCH=PATH")
                }
                let arch = String(item[..<eq]), path = String(item[item.index(after: eq)...])
                guard Name.isValid(arch) else { throw ValidationError("--binary: '\(arch)' is not an architecture name") }
                return (arch, path)
            }
        }

        func validate() throws {
            guard Name.isValid(version) else { throw ValidationError("'\(version)' is not a valid version") }
            guard keys != nil || releaseKey != nil else { throw ValidationError("give --keys DIR or --release-key FILE") }
            guard expiresDays >= 1 else { throw ValidationError("--expires-days must be at least 1") }
            let list = try parsedBinaries()
            guard !list.isEmpty else { throw ValidationError("give at least one --binary ARCH=PATH") }
            guard Set(list.map(\.arch)).count == list.count else { throw ValidationError("one --binary per architecture") }
        }

        func run() throws {
            let key = try loadPrivateKey(releaseKey ?? "\(keys!)/offline/release.key", role: .release)
            let api = global.client()
            let model = ReleaseKind.agentModel
            let models = try calling { try api.get("/v1/models", as: [ModelInfo].self) }
            if !models.contains(where: { $0.name == model }) {
                _ = try calling { try api.post("/v1/models", NewModel(name: model), as: ModelInfo.self) }
            }
            var variants: [CatalogVariant] = []
            for (arch, path) in try parsedBinaries() {
                guard FileManager.default.isExecutableFile(atPath: path) else { throw CLIError("\(path) is not an executable file") }
                let sha = try localSHA256(path)
                let uploaded = try calling { () throws -> ArtifactInfo in
                    let r = try api.http.upload(
                        file: path, to: api.base + "/v1/artifacts", headers: api.actor.merging(["X-Content-SHA256": sha]) { $1 },
                        progress: { _, _ in })
                    try HTTPClient.check(r, url: api.base + "/v1/artifacts")
                    return try FleetJSON.decode(ArtifactInfo.self, from: r.body, limit: 4096)
                }
                guard uploaded.sha256 == sha else { throw CLIError("controller stored \(uploaded.sha256), expected \(sha)") }
                let variant = CatalogVariant(
                    name: "agent-\(arch)-\(version)", sha256: sha, size: uploaded.size, fileName: "fleet-agent",
                    format: ReleaseKind.agentFormat, dtype: "native",
                    requires: Requirements(arch: [arch], capabilities: [ReleaseKind.selfUpdateCapability]),
                    attributes: ["agent-version": version])
                _ = try calling {
                    try api.post(
                        "/v1/models/\(model)/variants", NewVariant(variant: variant, quality: nil, report: nil), as: VariantInfo.self)
                }
                variants.append(variant)
            }
            let info = try calling { try api.get("/v1/models/\(model)", as: ModelInfo.self) }
            let classes = try calling { try api.get("/v1/config/hardware-classes", as: [HardwareClass].self) }
            let catalog = ReleaseCatalog(
                model: model, version: version, serial: info.nextSerial,
                expiresAt: Int64(Date().timeIntervalSince1970) + Int64(expiresDays) * 86_400,
                variants: variants, hardwareClasses: classes, kind: .agent)
            let envelope = try Envelope.sign(catalog, type: PayloadType.catalog, keys: [key])
            let release = try calling { try api.post("/v1/releases", NewRelease(catalog: envelope), as: ReleaseInfo.self) }
            try global.emit(release) {
                "agent release \(release.id) (serial \(release.serial)) signed with \(key.keyID.prefix(16))…: "
                    + variants.map { "\($0.requires.arch?.joined() ?? "?") \($0.sha256.prefix(12))" }.joined(separator: ", ")
                    + "\nroll it out with: fleetctl rollout start \(release.id) …\n"
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List devices with the agent each runs and whether it updates itself.")
        @OptionGroup var global: GlobalOptions
        struct Row: Encodable {
            var device: String; var agentVersion: String?; var agentSha256: String?; var selfUpdate: Bool; var installed: String?
        }

        func run() throws {
            let list = try calling { try global.client().get("/v1/devices", as: [DeviceInfo].self) }
            let rows = list.map { d in
                Row(
                    device: d.id, agentVersion: d.agentVersion, agentSha256: d.facts.agentSha256, selfUpdate: d.facts.supportsSelfUpdate,
                    installed: d.installed[ReleaseKind.agentModel])
            }
            try global.emit(rows) {
                Table.render(
                    ["DEVICE", "AGENT", "SHA256", "SELF-UPDATE"],
                    rows.map {
                        [
                            $0.device, $0.agentVersion ?? "-", $0.agentSha256.map { String($0.prefix(16)) } ?? "-",
                            $0.selfUpdate ? "yes" : "no"
                        ]
                    })
            }
        }
    }
}
