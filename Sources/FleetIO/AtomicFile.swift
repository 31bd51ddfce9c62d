#if canImport(Glibc)
    import Glibc
#endif

/// The one way EdgeFleet replaces a file: write a temporary file in the target's directory, fsync it,
/// rename(2) it over the target, fsync the directory. Readers see the old contents or the new, never
/// a mix; an error, `abort()` or dropping the value without `commit` removes the temporary file, so a
/// failed write never leaves a half-written target.
public final class AtomicFile {
    /// Where the temporary file goes: always in the target's directory, so that rename(2) is atomic.
    public enum Temporary: Sendable {
        /// `.<name>.<tag>-<pid>-<n>.partial`, created exclusively (several writers may share a directory).
        case unique(tag: String)
        /// `<path><suffix>`, truncated if it exists: one writer per target, and a crash's leftover is
        /// overwritten by the next write instead of piling up.
        case fixed(suffix: String)
    }

    public let path: String
    public let tempPath: String
    private var fd: Int32
    private let buffer: UnsafeMutableRawBufferPointer
    private var buffered = 0
    /// write(2) by default; tests inject a failing one (a full disk cannot be made on demand).
    private let writer: (Int32, UnsafeRawPointer, Int) -> Int
    /// `syncDirectory` by default; tests inject a failing one.
    private let directorySyncer: (String) throws(FileIOError) -> Void

    public convenience init(
        replacing path: String, temporary: Temporary = .unique(tag: ""), permissions: mode_t = 0o644,
        bufferSize: Int = 1 << 20
    ) throws(FileIOError) {
        try self.init(
            replacing: path, temporary: temporary, permissions: permissions, bufferSize: bufferSize,
            writer: { fd, p, n in Glibc.write(fd, p, n) })
    }

    init(
        replacing path: String, temporary: Temporary, permissions: mode_t, bufferSize: Int,
        writer: @escaping (Int32, UnsafeRawPointer, Int) -> Int,
        directorySyncer: @escaping (String) throws(FileIOError) -> Void = { (dir) throws(FileIOError) in try AtomicFile.syncDirectory(dir) }
    ) throws(FileIOError) {
        self.path = path
        self.writer = writer
        self.directorySyncer = directorySyncer
        switch temporary {
        case .fixed(let suffix):
            let candidate = path + suffix
            let fd = open(candidate, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, permissions)
            guard fd >= 0 else { throw .errno(.create, candidate) }
            self.fd = fd
            self.tempPath = candidate
        case .unique(let tag):
            let dir = Self.directory(of: path)
            let name = path.split(separator: "/").last.map(String.init) ?? path
            let middle = tag.isEmpty ? "" : "\(tag)-"
            var chosen: (String, Int32)?
            for attempt in 0..<100 {
                let candidate = "\(dir)/.\(name).\(middle)\(getpid())-\(attempt).partial"
                let fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, permissions)
                if fd >= 0 { chosen = (candidate, fd); break }
                if Glibc.errno != EEXIST { throw .errno(.create, candidate) }
            }
            guard let chosen else { throw FileIOError(.create, path: path, systemError: EEXIST) }
            (self.tempPath, self.fd) = chosen
        }
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bufferSize, 1), alignment: 64)
    }

    deinit {
        abort()
        buffer.deallocate()
    }

    /// The directory holding `path` ("." for a bare name).
    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Appends `bytes` (buffered; a failure may surface at a later write, `sync` or `commit`).
    public func write(_ bytes: UnsafeRawBufferPointer) throws(FileIOError) {
        var offset = 0
        while offset < bytes.count {
            let n = min(buffer.count - buffered, bytes.count - offset)
            (buffer.baseAddress! + buffered).copyMemory(from: bytes.baseAddress! + offset, byteCount: n)
            buffered += n
            offset += n
            if buffered == buffer.count { try flush() }
        }
    }

    public func write(_ bytes: [UInt8]) throws(FileIOError) {
        let r: Result<Void, FileIOError> = bytes.withUnsafeBytes { b in Result { () throws(FileIOError) in try write(b) } }
        try r.get()
    }

    private func flush() throws(FileIOError) {
        var done = 0
        while done < buffered {
            let n = writer(fd, buffer.baseAddress! + done, buffered - done)
            if n < 0 { if Glibc.errno == EINTR { continue }; throw .errno(.write, tempPath) }
            done += n
        }
        buffered = 0
    }

    /// Everything written is in the temporary file and on disk (for readers of `tempPath` before the commit).
    public func sync() throws(FileIOError) {
        try flush()
        guard fsync(fd) == 0 else { throw .errno(.fsync, tempPath) }
    }

    /// What a failure to fsync the directory after the rename means to the caller.
    public enum DirectorySync: Sendable {
        /// It is an error (`isAfterRename`): the new contents are in place but the directory entry
        /// may not survive a power cut, and the caller must know.
        case required
        /// It is ignored: the contents are in place and the caller's work is not undone by a
        /// directory that cannot be fsynced (the delta decoder's and the variant builder's outputs).
        case bestEffort
    }

    /// Flushes, fsyncs (if `sync`), renames onto `path` and fsyncs the directory (if `sync`). A failure
    /// before the rename removes the temporary file and leaves `path` as it was; a failure after it
    /// (`isAfterRename`) means the new contents are in place but the directory entry may not be durable,
    /// and is thrown only when `directory` is `.required`.
    public func commit(sync: Bool = true, directory: DirectorySync = .required) throws(FileIOError) {
        guard fd >= 0 else { throw FileIOError(.write, path: tempPath, systemError: EBADF) }
        do throws(FileIOError) {
            try flush()
            if sync, fsync(fd) != 0 { throw FileIOError.errno(.fsync, tempPath) }
        } catch {
            abort()
            throw error
        }
        let closed = close(fd)
        fd = -1
        guard closed == 0 else { let e = FileIOError.errno(.close, tempPath); unlink(tempPath); throw e }
        guard rename(tempPath, path) == 0 else { let e = FileIOError.errno(.rename, path); unlink(tempPath); throw e }
        guard sync else { return }
        do throws(FileIOError) {
            try directorySyncer(Self.directory(of: path))
        } catch  where directory == .bestEffort {
            return
        }
    }

    /// Drops what was written; `path` is left as it was.
    public func abort() {
        if fd >= 0 { close(fd); fd = -1; unlink(tempPath) }
    }

    /// Replaces `path` with `bytes` in one go.
    public static func write(
        _ bytes: [UInt8], to path: String, temporary: Temporary = .unique(tag: ""),
        permissions: mode_t = 0o644
    ) throws(FileIOError) {
        let file = try AtomicFile(replacing: path, temporary: temporary, permissions: permissions, bufferSize: max(bytes.count, 1))
        try file.write(bytes)
        try file.commit()
    }

    /// fsyncs a directory, so that a rename or a new entry in it survives a power cut.
    public static func syncDirectory(_ path: String) throws(FileIOError) {
        let dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw .errno(.openDirectory, path) }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw .errno(.syncDirectory, path) }
    }
}
