import FleetCore
import FleetIO
#if canImport(Glibc)
    import Glibc
#endif

/// Why a local file operation failed; `path` says where.
public struct AgentIOError: Error, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable { case io, noSpace, notFound, unsafePath }
    public let code: Code
    public let path: String
    public let message: String
    public init(_ code: Code, _ path: String, _ message: String) { self.code = code; self.path = path; self.message = message }
    public var description: String { "\(code.rawValue): \(path): \(message)" }

    static func errno(_ path: String, _ what: String) -> AgentIOError {
        let e = Glibc.errno
        let code: Code = e == ENOSPC || e == EDQUOT ? .noSpace : (e == ENOENT ? .notFound : .io)
        return AgentIOError(code, path, "\(what): \(String(cString: strerror(e)))")
    }

    /// A FleetIO failure in the agent's terms: a full disk is `.noSpace`, a missing directory `.notFound`.
    init(_ error: FileIOError) {
        let code: Code = error.isNoSpace ? .noSpace : (error.systemError == ENOENT ? .notFound : .io)
        self.init(code, error.path, error.message)
    }
}

/// POSIX file operations with the durability the install needs: write to a temporary name,
/// fsync, rename(2) over the target, fsync the directory.
enum FS {
    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func isDirectoryNoFollow(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func isSymlink(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
    }

    static func fileSize(_ path: String) -> Int64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int64(st.st_size)
    }

    /// Creates `path` and its parents; refuses a symlink anywhere it creates or finds.
    static func makeDirectories(_ path: String) throws(AgentIOError) {
        if isDirectoryNoFollow(path) { return }
        if isSymlink(path) { throw AgentIOError(.unsafePath, path, "is a symlink, not a directory") }
        let parent = dirname(path)
        if parent != path && !parent.isEmpty { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0 && Glibc.errno != EEXIST { throw .errno(path, "mkdir") }
        guard isDirectoryNoFollow(path) else { throw AgentIOError(.unsafePath, path, "is not a directory") }
    }

    static func dirname(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func fsyncDirectory(_ path: String) throws(AgentIOError) {
        do throws(FileIOError) { try AtomicFile.syncDirectory(path) } catch { throw AgentIOError(error) }
    }

    static func read(_ path: String, limit: Int) throws(AgentIOError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .errno(path, "open") }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if Glibc.errno == EINTR { continue }; throw .errno(path, "read") }
            if n == 0 { break }
            out += buf[0..<n]
            if out.count > limit { throw AgentIOError(.io, path, "larger than \(limit) bytes") }
        }
        return out
    }

    /// Replaces `path` atomically: readers see the old or the new contents, never a mix (FleetIO's
    /// `AtomicFile`; the fixed `.tmp` name means a crash's leftover is overwritten, not accumulated).
    static func writeAtomically(_ path: String, _ bytes: [UInt8]) throws(AgentIOError) {
        do throws(FileIOError) {
            try AtomicFile.write(bytes, to: path, temporary: .fixed(suffix: ".tmp"), permissions: 0o600)
        } catch {
            throw AgentIOError(error)
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(AgentIOError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 { if Glibc.errno == EINTR { continue }; throw .errno(path, "write") }
            done += n
        }
    }

    /// SHA-256 and length of a file, streamed in 1 MiB reads.
    static func sha256(_ path: String) throws(AgentIOError) -> (String, Int64) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .errno(path, "open") }
        defer { close(fd) }
        var hasher = StreamingSHA256()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = Glibc.read(fd, buf.baseAddress, buf.count)
            if n < 0 { if Glibc.errno == EINTR { continue }; throw .errno(path, "read") }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
        return (hasher.finalizeHex(), hasher.count)
    }

    /// Copies a file (used when the download and the models folder are on different filesystems).
    static func copy(_ from: String, _ to: String) throws(AgentIOError) {
        let src = open(from, O_RDONLY | O_CLOEXEC)
        guard src >= 0 else { throw .errno(from, "open") }
        defer { close(src) }
        let dst = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard dst >= 0 else { throw .errno(to, "open") }
        defer { close(dst) }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = Glibc.read(src, buf.baseAddress, buf.count)
            if n < 0 { if Glibc.errno == EINTR { continue }; throw .errno(from, "read") }
            if n == 0 { break }
            var done = 0
            while done < n {
                let w = write(dst, buf.baseAddress! + done, n - done)
                if w < 0 { if Glibc.errno == EINTR { continue }; throw .errno(to, "write") }
                done += w
            }
        }
        guard fsync(dst) == 0 else { throw .errno(to, "fsync") }
    }

    /// A hard link when both are on one filesystem (no copy, no extra space), else a copy; fsynced.
    static func linkOrCopy(_ from: String, _ to: String) throws(AgentIOError) {
        if link(from, to) == 0 {
            let fd = open(to, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { fsync(fd); close(fd) }
        } else {
            try copy(from, to)
        }
    }

    /// Removes a file or a directory tree; missing is fine. Never follows symlinks.
    static func removeTree(_ path: String) {
        if isDirectoryNoFollow(path) {
            for name in listDirectory(path) { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    static func listDirectory(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out.sorted()
    }

    static func readLink(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buf, buf.count - 1)
        guard n > 0 else { return nil }
        buf[n] = 0
        return String(cString: buf)
    }

    /// Bytes available to an unprivileged writer on the filesystem holding `path`.
    static func freeBytes(_ path: String) -> Int64? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return Int64(s.f_bavail) * Int64(s.f_frsize)
    }
}
