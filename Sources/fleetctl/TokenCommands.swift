import ArgumentParser
import FleetClient
import FleetCore
import Foundation

/// Operator API tokens: `fleetctl tokens create|list|revoke` (admin).
struct TokensCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens", abstract: "Operator API tokens with roles (viewer, operator, admin).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token and print it; the controller keeps only its hash, so this is the only time it is shown.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Who or what uses the token; recorded in the audit log with every change it makes.") var name: String
        @Option(help: "viewer (read), operator (also change models, releases, rollouts), admin (also tokens, devices, keys).")
        var role: String = "viewer"
        @Option(help: "Days until it expires (default: never).") var expiresDays: Int?
        @Option(help: "Write the token to this file (mode 0600) instead of printing it.") var out: String?

        func validate() throws {
            guard OperatorRole(rawValue: role) != nil else { throw ValidationError("--role must be viewer, operator or admin") }
            guard Name.isValid(name), name.utf8.count <= 64 else {
                throw ValidationError("--name must be a plain name of at most 64 bytes")
            }
            if let expiresDays { guard expiresDays >= 1 else { throw ValidationError("--expires-days must be at least 1") } }
        }

        func run() throws {
            let body = NewAPIToken(
                name: name, role: OperatorRole(rawValue: role)!, expiresInSeconds: expiresDays.map { Int64($0) * 86_400 })
            let created = try calling { try global.client().post("/v1/tokens", body, as: CreatedAPIToken.self) }
            if let out {
                try writePrivate(out, Data((created.token + "\n").utf8))
                print("token \(created.info.id) (\(created.info.name), \(created.info.role.rawValue)) written to \(out)")
            } else {
                print(created.token)
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tokens (never their secrets).")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            let list = try calling { try global.client().get("/v1/tokens", as: [APITokenInfo].self) }
            try global.emit(list) {
                Table.render(
                    ["ID", "NAME", "ROLE", "CREATED", "BY", "EXPIRES", "REVOKED", "LAST-USED"],
                    list.map {
                        [
                            $0.id, $0.name, $0.role.rawValue, timeText($0.createdAt), $0.createdBy, $0.expiresAt.map(timeText) ?? "never",
                            $0.revokedAt.map(timeText) ?? "-", $0.lastUsedAt.map(timeText) ?? "-"
                        ]
                    })
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by its id; it stops working at once.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Token id (from `fleetctl tokens list`).") var id: String
        func run() throws {
            let t = try calling { try global.client().post("/v1/tokens/\(id)/revoke", [String: String](), as: APITokenInfo.self) }
            print("revoked token \(t.id) (\(t.name))")
        }
    }
}

/// `fleetctl audit`: who changed what, and when (admin).
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "Show the audit log, newest first.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Records to show (1 to 1000).") var limit: Int = 50
    @Option(help: "Only this actor, e.g. token:ci or device:edge-01.") var actor: String?

    func validate() throws { guard (1...1000).contains(limit) else { throw ValidationError("--limit is 1 to 1000") } }

    func run() throws {
        var path = "/v1/audit?limit=\(limit)"
        if let actor {
            path +=
                "&actor=\(actor.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+"))) ?? actor)"
        }
        let list = try calling { try global.client().get(path, as: [AuditRecord].self) }
        try global.emit(list) {
            Table.render(
                ["TIME", "ACTOR", "ROLE", "CALL", "STATUS", "OUTCOME", "DETAIL"],
                list.map {
                    [timeText($0.at), $0.actor, $0.role ?? "-", "\($0.method) \($0.path)", String($0.status), $0.outcome, $0.detail ?? ""]
                })
        }
    }
}

/// `fleetctl devices enroll-token|approve|revoke|identities` (admin; identities: viewer).
extension DevicesCommand {
    struct EnrollToken: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "enroll-token",
            abstract: "Create a one-time enrollment token for a device and print it (shown once).",
            discussion: "Give it to the agent's first run: fleet-agent run --enroll-token-file FILE …")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only this device id may use the token (default: any id not enrolled yet).") var device: String?
        @Option(help: "Hours until the token expires.") var expiresHours: Int = 24
        @Flag(help: "The device waits in `pending` until `fleetctl devices approve`.") var requireApproval = false
        @Option(help: "Write the token to this file (mode 0600) instead of printing it.") var out: String?
        @Option(help: "A label bound to the device that enrolls with the token, KEY=VALUE (repeatable); the device cannot override it.")
        var label: [String] = []

        func validate() throws {
            if let device { guard Name.isValid(device) else { throw ValidationError("--device '\(device)' is not a valid device id") } }
            guard expiresHours >= 1 else { throw ValidationError("--expires-hours must be at least 1") }
            _ = try labels()
        }

        func labels() throws -> [String: String] { try labelArguments(label, option: "label") }

        func run() throws {
            let bound = try labels()
            let body = NewEnrollmentToken(
                deviceId: device, expiresInSeconds: Int64(expiresHours) * 3600, requireApproval: requireApproval,
                labels: bound.isEmpty ? nil : bound)
            let created = try calling { try global.client().post("/v1/enrollment-tokens", body, as: CreatedEnrollmentToken.self) }
            if let out {
                try writePrivate(out, Data((created.token + "\n").utf8))
                print("enrollment token \(created.info.id) written to \(out), expires \(timeText(created.info.expiresAt))")
            } else {
                print(created.token)
            }
        }
    }

    struct Approve: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Accept a pending device: from its next check-in it gets updates.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Device id.") var device: String
        func run() throws {
            let i = try calling {
                try global.client().post("/v1/devices/\(device)/approve", [String: String](), as: DeviceIdentityInfo.self)
            }
            print("device \(i.deviceId): \(i.status.rawValue)")
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Revoke a device: it gets nothing more (no assignments, no artifacts, no events accepted) until it enrolls again with a new token."
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Device id.") var device: String
        func run() throws {
            let i = try calling {
                try global.client().post("/v1/devices/\(device)/revoke", [String: String](), as: DeviceIdentityInfo.self)
            }
            print("device \(i.deviceId): \(i.status.rawValue)")
        }
    }

    struct Identities: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List enrolled devices with their status and certificate fingerprint.")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            let list = try calling { try global.client().get("/v1/device-identities", as: [DeviceIdentityInfo].self) }
            try global.emit(list) {
                Table.render(
                    ["DEVICE", "STATUS", "FINGERPRINT", "ENROLLED", "TOKEN", "DECIDED-BY"],
                    list.map {
                        [
                            $0.deviceId, $0.status.rawValue, $0.fingerprint.map { String($0.prefix(16)) + "…" } ?? "-",
                            timeText($0.enrolledAt),
                            $0.enrollmentToken, $0.decidedBy ?? "-"
                        ]
                    })
            }
        }
    }
}

/// `fleetctl keys rotate-root`: a new root key, signed by the old root and the new one.
extension Keys {
    struct RotateRoot: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-root",
            abstract: "Replace the root key: sign root version N+1 with the old and the new root key and give it to the controller.",
            discussion: """
                Agents follow the new root at their next check-in (each version is signed by the one before). \
                DIR/offline/root.key becomes the new key; the old one is kept as DIR/offline/root.vN.key. \
                DIR/root.json and DIR/online/root.json become the new root. Needs an admin token.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "The keys directory from `fleetctl keys init`.") var dir: String
        @Option(help: "Days until the new root expires.") var expiresDays: Int = 365

        func validate() throws { guard expiresDays >= 1 else { throw ValidationError("--expires-days must be at least 1") } }

        func run() throws {
            let api = global.client()
            let oldKey = try loadPrivateKey("\(dir)/offline/root.key", role: .root)
            let currentEnvelope = try calling { try api.get("/v1/root", as: Envelope.self) }
            let current: RootMetadata
            do { current = try MetadataVerifier.verifyInitialRoot(currentEnvelope, now: Int64(Date().timeIntervalSince1970)) } catch {
                throw CLIError("the controller's root does not verify: \(error)")
            }
            guard current.roles[Role.root.rawValue]?.keyids.contains(oldKey.keyID) == true else {
                throw CLIError("\(dir)/offline/root.key is not a root key of the controller's root version \(current.version)")
            }
            let newKey = SigningKey(role: .root)
            var keys = current.keys
            for id in current.roles[Role.root.rawValue]?.keyids ?? []
            where !current.roles.contains(where: { $0.key != Role.root.rawValue && $0.value.keyids.contains(id) }) {
                keys[id] = nil
            }
            keys[newKey.keyID] = newKey.publicKey
            var roles = current.roles
            roles[Role.root.rawValue] = RootMetadata.RoleKeys(keyids: [newKey.keyID], threshold: 1)
            let next = RootMetadata(
                version: current.version + 1, expiresAt: Int64(Date().timeIntervalSince1970) + Int64(expiresDays) * 86_400,
                keys: keys, roles: roles)
            let envelope = try Envelope.sign(next, type: PayloadType.root, keys: [oldKey, newKey])

            // The new key is on disk before the controller knows the root it signs.
            let pending = "\(dir)/offline/root.next.key"
            try writePrivate(pending, newKey.fileContents())
            let info: RootInfo
            do {
                info = try calling { try api.post("/v1/root", RootRotation(root: envelope), as: RootInfo.self) }
            } catch {
                unlink(pending)
                throw error
            }
            let kept = "\(dir)/offline/root.v\(current.version).key"
            guard rename("\(dir)/offline/root.key", kept) == 0, rename(pending, "\(dir)/offline/root.key") == 0 else {
                throw CLIError("the controller serves root version \(info.version), but moving the keys failed: the new key is \(pending)")
            }
            let json = try FleetJSON.encode(envelope, pretty: true)
            try json.write(to: URL(fileURLWithPath: "\(dir)/root.json"), options: .atomic)
            try json.write(to: URL(fileURLWithPath: "\(dir)/online/root.json"), options: .atomic)
            print(
                """
                root version \(info.version) is served; agents follow it at their next check-in
                  new root key: \(dir)/offline/root.key (\(newKey.keyID.prefix(16))…), old one kept as \(kept)
                """)
        }
    }
}
