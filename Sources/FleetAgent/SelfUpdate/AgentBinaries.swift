import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// The agent's own binaries, under STATE/agent (writable under the unit's ProtectSystem=strict,
/// unlike /usr): `fleet-agent/<sha256>/<file>` slots built like model slots, `fleet-agent/current`
/// pointing at the committed one (replaced with rename(2)), and `trial.json` while a new binary is
/// on trial. The packaged binary (/usr/bin/fleet-agent) is the fallback when nothing is committed.
struct AgentBinaries {
    /// Set by an agent in the environment of the binary it execs: the sha256 it handed over to.
    static let handoverVariable = "EDGEFLEET_AGENT_HANDOVER"
    static let trialFile = "trial.json"
    let root: String
    var slots: ModelSlots { ModelSlots(root: root) }
    var model: String { ReleaseKind.agentModel }

    init(stateDirectory: String) { root = stateDirectory + "/agent" }

    /// The committed slot's sha256, when it holds its binary.
    func committed() -> String? {
        guard let sha = slots.current(model), binary(sha) != nil else { return nil }
        return sha
    }

    /// The executable in a slot.
    func binary(_ sha256: String) -> String? {
        let dir = slots.slotPath(model, sha256)
        let files = FS.listDirectory(dir)
        guard files.count == 1, Name.isValid(files[0]), access(dir + "/" + files[0], X_OK) == 0 else { return nil }
        return dir + "/" + files[0]
    }

    func trial() throws -> AgentTrial? {
        let path = root + "/" + Self.trialFile
        guard FS.exists(path) else { return nil }
        return try FleetJSON.decode(AgentTrial.self, from: Data(try FS.read(path, limit: 1 << 16)), limit: 1 << 16)
    }

    /// Written whole or not at all, and on disk before anything it announces happens.
    func save(_ trial: AgentTrial) throws {
        try FS.makeDirectories(root)
        try FS.writeAtomically(root + "/" + Self.trialFile, [UInt8](try FleetJSON.encode(trial)))
    }

    func removeTrial() throws(AgentIOError) {
        let path = root + "/" + Self.trialFile
        if unlink(path) != 0 && errno != ENOENT { throw .errno(path, "unlink") }
        try FS.fsyncDirectory(root)
    }

    /// Builds the slot from the verified download. The slot's file is hashed again and made
    /// executable only when it is the signed sha256 and size, before the slot is renamed into place:
    /// nothing unverified or half-written is ever executable under a slot name.
    func stage(sha256: String, size: Int64, fileName: String, from download: String) throws(AgentIOError) {
        try FS.makeDirectories(root)
        if let path = binary(sha256), (try? FS.sha256(path)).map({ $0 == (sha256, size) }) == true { return }
        slots.removeSlot(model: model, sha256: sha256)
        try slots.stage(model: model, sha256: sha256, fileName: fileName, size: size) { path throws(AgentIOError) in
            try FS.copy(download, path)
            let (sha, length) = try FS.sha256(path)
            guard sha == sha256, length == size else {
                throw AgentIOError(
                    .io, path, "agent binary is \(sha.prefix(12)) (\(length) bytes), the release says \(sha256.prefix(12)) (\(size) bytes)")
            }
            guard chmod(path, 0o755) == 0 else { throw .errno(path, "chmod") }
        }
    }

    func commit(_ sha256: String) throws(AgentIOError) { try slots.point(model: model, at: sha256) }

    /// Removes a slot unless it is the committed one.
    func remove(_ sha256: String) { slots.removeSlot(model: model, sha256: sha256) }

    func prune(keep: Set<String>) { slots.prune(model: model, keep: keep) }
}
