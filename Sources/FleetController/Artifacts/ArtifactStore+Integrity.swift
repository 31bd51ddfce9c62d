import FleetCore
import Foundation

/// What a stored artifact's bytes hash to now, against the name they were stored under.
enum ArtifactIntegrity: Equatable, Sendable {
    case intact
    case corrupt(actualSha256: String, size: Int64)
    /// Not in the store (never stored, or moved to quarantine meanwhile).
    case missing
}

/// Re-hashing what is stored, and moving a corrupt file aside: `artifacts/quarantine/<sha>.<time>`,
/// on the same filesystem so that the move is one rename(2) and a reader never sees half of it.
extension ArtifactStore {
    var quarantineRoot: String { root + "/quarantine" }

    /// Hashes the stored file again. Reading it is the cost: a full pass over its bytes.
    func verify(_ sha256: String) throws(ArtifactError) -> ArtifactIntegrity {
        guard let path = path(sha256) else { return .missing }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return .missing }
            throw ArtifactError(.io, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var hasher = StreamingSHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ArtifactError(.io, "read failed on \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        let size = hasher.count
        let actual = hasher.finalizeHex()
        return actual == sha256 ? .intact : .corrupt(actualSha256: actual, size: size)
    }

    /// Moves the stored file into the quarantine folder and returns where it went; nil when it
    /// was no longer in the store (another check moved it first).
    func moveToQuarantine(_ sha256: String, at time: Int64) throws(ArtifactError) -> String? {
        guard let path = path(sha256) else { return nil }
        do {
            try FileManager.default.createDirectory(atPath: quarantineRoot, withIntermediateDirectories: true)
        } catch {
            throw ArtifactError(.io, "cannot create \(quarantineRoot): \(error)")
        }
        let destination = "\(quarantineRoot)/\(sha256).\(time)"
        guard rename(path, destination) == 0 else {
            if errno == ENOENT { return nil }
            throw ArtifactError(.io, "cannot move \(path) to quarantine: \(String(cString: strerror(errno)))")
        }
        for dir in [quarantineRoot, (path as NSString).deletingLastPathComponent] {
            let dfd = open(dir, O_RDONLY | O_DIRECTORY)
            if dfd >= 0 { fsync(dfd); close(dfd) }
        }
        return destination
    }

    /// The digests of every artifact in the store, in a stable order.
    func storedDigests() -> [String] {
        let base = root + "/sha256"
        var out: [String] = []
        for prefix in ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).sorted() {
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: base + "/" + prefix)) ?? []).sorted()
            where Digest.isSHA256Hex(name) && name.hasPrefix(prefix) {
                out.append(name)
            }
        }
        return out
    }
}
