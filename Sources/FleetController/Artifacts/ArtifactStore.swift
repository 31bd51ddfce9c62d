import FleetCore
import Foundation
import NIOCore

struct ArtifactError: Error, CustomStringConvertible {
    enum Code: String { case tooLarge, digestMismatch, io }
    let code: Code
    let message: String
    init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    var description: String { "\(code.rawValue): \(message)" }
}

/// Immutable, content-addressed artifact files: `artifacts/sha256/ab/abcd…`. An upload is written
/// to a temporary file, hashed while it streams, fsynced, then renamed into place, so a reader
/// never sees a partial artifact and a cut upload leaves nothing behind.
struct ArtifactStore: Sendable {
    let root: String

    init(root: String) throws {
        self.root = root
        try FileManager.default.createDirectory(atPath: root + "/sha256", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/incoming", withIntermediateDirectories: true)
        // Leftovers of uploads cut by a crash.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root + "/incoming")) ?? [] {
            try? FileManager.default.removeItem(atPath: root + "/incoming/" + name)
        }
    }

    func path(_ sha256: String) -> String? {
        guard Digest.isSHA256Hex(sha256) else { return nil }
        return "\(root)/sha256/\(sha256.prefix(2))/\(sha256)"
    }

    func size(_ sha256: String) -> Int64? {
        guard let p = path(sha256), let attrs = try? FileManager.default.attributesOfItem(atPath: p),
            let size = attrs[.size] as? NSNumber
        else { return nil }
        return size.int64Value
    }

    func ingest<S: AsyncSequence>(_ body: S, maxBytes: Int64, expectedSha256: String?) async throws -> ArtifactInfo
    where S.Element == ByteBuffer {
        let tmp = "\(root)/incoming/\(UUID().uuidString)"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ArtifactError(.io, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        var keep = false
        defer {
            close(fd)
            if !keep { unlink(tmp) }
        }
        var hasher = StreamingSHA256()
        for try await buffer in body {
            guard hasher.count + Int64(buffer.readableBytes) <= maxBytes else {
                throw ArtifactError(.tooLarge, "artifact exceeds the limit of \(maxBytes) bytes")
            }
            try buffer.withUnsafeReadableBytes { raw in
                hasher.update(raw)
                var done = 0
                while done < raw.count {
                    let n = write(fd, raw.baseAddress! + done, raw.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw ArtifactError(.io, "write failed: \(String(cString: strerror(errno)))")
                    }
                    done += n
                }
            }
        }
        let sha = hasher.finalizeHex()
        if let expectedSha256, expectedSha256 != sha {
            throw ArtifactError(.digestMismatch, "uploaded bytes hash to \(sha), the client said \(expectedSha256)")
        }
        guard fsync(fd) == 0 else { throw ArtifactError(.io, "fsync failed: \(String(cString: strerror(errno)))") }
        let final = path(sha)!
        let dir = (final as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // Replaces a stored copy too: the bytes just hashed are right, the stored ones may have
        // rotted since (uploading again is how an operator repairs an artifact).
        guard rename(tmp, final) == 0 else { throw ArtifactError(.io, "rename failed: \(String(cString: strerror(errno)))") }
        keep = true
        let dfd = open(dir, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
        return ArtifactInfo(sha256: sha, size: hasher.count)
    }

    /// Moves a finished file (made by the controller itself, e.g. a delta) into the store.
    func adopt(file: String) throws -> ArtifactInfo {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ArtifactError(.io, "cannot open \(file)") }
        var hasher = StreamingSHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; close(fd); throw ArtifactError(.io, "read failed on \(file)") }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        fsync(fd)
        close(fd)
        let sha = hasher.finalizeHex()
        let final = path(sha)!
        let dir = (final as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // Replaces a stored copy too (see `ingest`): these bytes were just hashed.
        guard rename(file, final) == 0 else { throw ArtifactError(.io, "rename failed: \(String(cString: strerror(errno)))") }
        let dfd = open(dir, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
        return ArtifactInfo(sha256: sha, size: hasher.count)
    }

    func stats() -> (count: Int, bytes: Int64) {
        var count = 0
        var bytes: Int64 = 0
        let base = root + "/sha256"
        for prefix in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: base + "/" + prefix)) ?? [] {
                count += 1
                bytes += size(name) ?? 0
            }
        }
        return (count, bytes)
    }
}
