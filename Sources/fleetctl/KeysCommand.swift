import ArgumentParser
import FleetCore
import Foundation

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Create and inspect the fleet's signing keys.", subcommands: [Init.self, RotateRoot.self])

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create root, release, director and timestamp keys and a signed root.json.",
            discussion: """
                Writes DIR/offline/{root,release}.key (keep these off the controller), \
                DIR/online/{director,timestamp}.key and DIR/online/root.json (give this folder to the controller), \
                and DIR/root.json (give it to every agent to pin). Private keys are written with mode 0600.
                """)

        @Option(help: "Directory to create the keys in; must not contain keys already.")
        var dir: String

        @Option(help: "Days until root metadata expires.")
        var expiresDays: Int = 365

        func validate() throws {
            guard expiresDays >= 1 else { throw ValidationError("--expires-days must be at least 1") }
        }

        func run() throws {
            let fm = FileManager.default
            for sub in ["offline", "online"] {
                try fm.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
            for path in ["offline/root.key", "offline/release.key", "online/director.key", "online/timestamp.key", "root.json"]
            where fm.fileExists(atPath: "\(dir)/\(path)") {
                throw CLIError("\(dir)/\(path) exists already; refusing to overwrite keys")
            }
            var keys: [Role: SigningKey] = [:]
            for role in Role.allCases { keys[role] = SigningKey(role: role) }
            let expires = Int64(Date().timeIntervalSince1970) + Int64(expiresDays) * 86_400
            let root = RootMetadata(version: 1, expiresAt: expires, roleKeys: keys)
            let envelope = try Envelope.sign(root, type: PayloadType.root, keys: [keys[.root]!])
            try writePrivate("\(dir)/offline/root.key", keys[.root]!.fileContents())
            try writePrivate("\(dir)/offline/release.key", keys[.release]!.fileContents())
            try writePrivate("\(dir)/online/director.key", keys[.director]!.fileContents())
            try writePrivate("\(dir)/online/timestamp.key", keys[.timestamp]!.fileContents())
            let rootJSON = try FleetJSON.encode(envelope, pretty: true)
            try rootJSON.write(to: URL(fileURLWithPath: "\(dir)/root.json"), options: .atomic)
            try rootJSON.write(to: URL(fileURLWithPath: "\(dir)/online/root.json"), options: .atomic)
            print(
                """
                created keys in \(dir)
                  offline (keep away from the controller): offline/root.key offline/release.key
                  online  (for fleet-controller --keys):   online/director.key online/timestamp.key online/root.json
                  root.json (pin on every agent with --root), expires \(timeText(expires))
                """)
            for role in Role.allCases {
                print("  \(role.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(keys[role]!.keyID.prefix(16))…")
            }
        }
    }
}

/// Creates a file readable by its owner only, failing if it exists.
func writePrivate(_ path: String, _ data: Data) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw CLIError("cannot create \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let ok = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count }
    guard ok, fsync(fd) == 0 else { throw CLIError("cannot write \(path): \(String(cString: strerror(errno)))") }
}

/// Loads a private key, refusing files that others can read.
func loadPrivateKey(_ path: String, role: Role) throws -> SigningKey {
    guard let attrs = try? FileManager.default.attributesOfItem(atPath: path), let data = FileManager.default.contents(atPath: path) else {
        throw CLIError("cannot read key file \(path)")
    }
    if let mode = attrs[.posixPermissions] as? NSNumber, mode.intValue & 0o077 != 0 {
        throw CLIError("\(path) is readable by others (mode \(String(mode.intValue, radix: 8))); chmod 600 it")
    }
    let key: SigningKey
    do { key = try SigningKey.parse(data) } catch { throw CLIError("\(path): \(error)") }
    guard key.role == role else { throw CLIError("\(path) is a \(key.role.rawValue) key, not a \(role.rawValue) key") }
    return key
}
