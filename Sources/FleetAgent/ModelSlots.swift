import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// The models folder: `NAME/<sha256>/FILE` slots and a `NAME/current` symlink that is only ever
/// replaced with rename(2), so a reader always finds a complete model.
struct ModelSlots {
    let root: String

    func modelDirectory(_ model: String) throws(AgentIOError) -> String {
        guard Name.isValid(model) else { throw AgentIOError(.unsafePath, root, "model name '\(model)' is not a plain name") }
        let dir = root + "/" + model
        try FS.makeDirectories(dir)
        return dir
    }

    func slotPath(_ model: String, _ sha256: String) -> String { "\(root)/\(model)/\(sha256)" }

    /// The sha256 `current` points at, if it points at a slot.
    func current(_ model: String) -> String? {
        guard let target = FS.readLink("\(root)/\(model)/current"), Digest.isSHA256Hex(target),
            FS.isDirectoryNoFollow(slotPath(model, target))
        else { return nil }
        return target
    }

    /// Every model with a current slot: what the device runs now.
    func installed() -> [String: String] {
        var out: [String: String] = [:]
        for model in FS.listDirectory(root) where Name.isValid(model) {
            if let sha = current(model) { out[model] = sha }
        }
        return out
    }

    /// Builds the slot from a verified file: copied into a staging folder, fsynced, then renamed
    /// into place. Idempotent: a complete slot is left alone.
    func stage(model: String, sha256: String, fileName: String, size: Int64, from source: String) throws(AgentIOError) {
        try stage(model: model, sha256: sha256, fileName: fileName, size: size) { path throws(AgentIOError) in
            try FS.linkOrCopy(source, path)
        }
    }

    /// Builds the slot with `produce`, which writes the model file at the path it is given inside
    /// a staging folder; the folder is renamed into place only when it returns.
    func stage(
        model: String, sha256: String, fileName: String, size: Int64,
        produce: (String) throws(AgentIOError) -> Void
    ) throws(AgentIOError) {
        guard Name.isValid(fileName) else { throw AgentIOError(.unsafePath, fileName, "file name is not a plain name") }
        let dir = try modelDirectory(model)
        let slot = slotPath(model, sha256)
        if FS.isSymlink(slot) { throw AgentIOError(.unsafePath, slot, "a symlink stands where a slot belongs") }
        if FS.isDirectoryNoFollow(slot), FS.fileSize(slot + "/" + fileName) == size { return }
        FS.removeTree(slot)
        let staging = "\(dir)/.staging-\(sha256)"
        FS.removeTree(staging)
        guard mkdir(staging, 0o755) == 0 else { throw .errno(staging, "mkdir") }
        let target = staging + "/" + fileName
        do {
            try produce(target)
        } catch {
            FS.removeTree(staging)
            throw error
        }
        try FS.fsyncDirectory(staging)
        guard rename(staging, slot) == 0 else { throw .errno(slot, "rename") }
        try FS.fsyncDirectory(dir)
    }

    /// Points `current` at `sha256` (or removes it when nil) with one rename(2).
    func point(model: String, at sha256: String?) throws(AgentIOError) {
        let dir = try modelDirectory(model)
        let link = dir + "/current"
        guard let sha256 else {
            if unlink(link) != 0 && errno != ENOENT { throw .errno(link, "unlink") }
            try FS.fsyncDirectory(dir)
            return
        }
        guard FS.isDirectoryNoFollow(slotPath(model, sha256)) else {
            throw AgentIOError(.notFound, slotPath(model, sha256), "slot to activate is missing")
        }
        if FS.readLink(link) == sha256 { return }
        let tmp = dir + "/.current.tmp"
        unlink(tmp)
        guard symlink(sha256, tmp) == 0 else { throw .errno(tmp, "symlink") }
        guard rename(tmp, link) == 0 else { throw .errno(link, "rename") }
        try FS.fsyncDirectory(dir)
    }

    /// Deletes every slot and leftover except those named in `keep`.
    func prune(model: String, keep: Set<String>) {
        let dir = "\(root)/\(model)"
        for name in FS.listDirectory(dir) where name != "current" && !keep.contains(name) {
            FS.removeTree(dir + "/" + name)
        }
    }

    func removeSlot(model: String, sha256: String) {
        guard current(model) != sha256 else { return }
        FS.removeTree(slotPath(model, sha256))
        FS.removeTree("\(root)/\(model)/.staging-\(sha256)")
    }
}
