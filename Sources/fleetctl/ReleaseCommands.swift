import ArgumentParser
import FleetClient
import FleetCore
import Foundation

struct ReleaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release", abstract: "Sign and publish release catalogs.",
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
            let catalog = ReleaseCatalog(
                model: model, version: version, serial: info.nextSerial,
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
                Table.render(
                    ["RELEASE", "SERIAL", "VARIANTS", "CREATED"],
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
                out += Table.render(
                    ["VARIANT", "DTYPE", "SIZE", "REQUIRES", "SHA256"],
                    r.variants.map {
                        [$0.name, $0.dtype, ByteCount.format($0.size), requirementsText($0.requires), String($0.sha256.prefix(16))]
                    })
                let rows = p.variants.flatMap { v in
                    v.deltas.map { d in
                        [
                            v.variant, String(d.baseSha256.prefix(12)), d.status.rawValue, d.method ?? "-",
                            d.size.map(ByteCount.format) ?? "-",
                            d.size.map { String(format: "%.1f%%", Double($0) * 100 / Double(max(v.size, 1))) } ?? "-"
                        ]
                    }
                }
                out += "\npackages:\n"
                out +=
                    rows.isEmpty
                    ? "  no delta packages (every device downloads the full artifact)\n"
                    : Table.render(["TARGET", "BASE", "STATUS", "METHOD", "SIZE", "OF FULL"], rows)
                let saved = p.bytesFull > 0 ? 100 - Double(p.bytesSent) * 100 / Double(p.bytesFull) : 0
                if let received = p.received {
                    out +=
                        "\ninstalled on \(received) device(s) so far, \(p.receivedViaDelta ?? 0) by delta, \(received - (p.receivedViaDelta ?? 0)) by full download"
                }
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
