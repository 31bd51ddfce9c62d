import FleetCore
import Foundation
import Logging

/// The first operator credential. When access is enforced and no admin token is active, the
/// controller creates one and writes it to DATA/admin.token (mode 0600, the data directory's
/// owner only); the secret is never logged. `fleet-controller token create` makes more offline.
public enum AdminBootstrap {
    public static let fileName = "admin.token"

    static func ensureAdmin(store: SQLStore, dataDirectory: String, now: Int64, logger: Logger) async throws {
        guard try await store.activeTokenCount(role: .admin, now: now) == 0 else { return }
        let created = try await store.createAPIToken(
            name: "bootstrap-admin", role: .admin, createdBy: "fleet-controller", expiresAt: nil, now: now)
        let path = dataDirectory + "/" + fileName
        try writeSecret(path, created.token + "\n")
        logger.notice(
            "created the first admin token; use it with fleetctl --token-file, then make named tokens and revoke it",
            metadata: ["file": "\(path)", "token_id": "\(created.info.id)"])
    }

    /// `fleet-controller token create`: a token made directly in the data directory's database,
    /// for a controller that is stopped or whose admin token is lost.
    public static func createToken(
        dataDirectory: String, databaseURL: String? = nil, name: String, role: OperatorRole,
        expiresInSeconds: Int64?
    ) async throws -> CreatedAPIToken {
        guard Name.isValid(name), name.utf8.count <= 64 else {
            throw ConfigError(file: dataDirectory, message: "'\(name)' is not a valid token name")
        }
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        var options = ControllerOptions(dataDirectory: dataDirectory, host: "", port: 0, keysDirectory: "", configDirectory: "")
        options.databaseURL = databaseURL
        let store = try await Controller.openStore(options: options, logger: Logger(label: "token"))
        defer { Task { await store.db.close() } }
        let now = Int64(Date().timeIntervalSince1970)
        return try await store.createAPIToken(
            name: name, role: role, createdBy: "fleet-controller token create", expiresAt: expiresInSeconds.map { now + $0 }, now: now)
    }

    /// Replaces `path` atomically with a file only its owner can read.
    static func writeSecret(_ path: String, _ text: String) throws {
        let tmp = path + ".tmp"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ConfigError(file: path, message: "cannot create: \(String(cString: strerror(errno)))") }
        let ok = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count } && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw ConfigError(file: path, message: "cannot write: \(String(cString: strerror(errno)))")
        }
    }
}
