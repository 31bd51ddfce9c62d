import FleetCore
#if canImport(Glibc)
import Glibc
#endif

/// A file read with pread(2) at explicit offsets: tensors are read one at a time, so the builder
/// never holds more of a model than the tensor it is working on. Once `mapped()` has been called,
/// readers that can work in place (the int8 encoder, the hash, zstd) use that one map instead, so
/// the input's pages are counted once however many threads read them.
final class ReadableFile: @unchecked Sendable {
    let path: String
    let size: Int64
    private let fd: Int32
    /// Set by `mapped()`, on the builder's thread before any other thread reads the file.
    private(set) var map: MappedBytes?

    init(_ path: String) throws(CompressionError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .errno(path, "open") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { let e = CompressionError.errno(path, "fstat"); close(fd); throw e }
        guard (st.st_mode & S_IFMT) == S_IFREG else { close(fd); throw CompressionError(.io, "not a regular file", path: path) }
        self.fd = fd
        self.size = Int64(st.st_size)
    }

    deinit { close(fd) }

    /// The file mapped read-only (made once, then shared).
    func mapped() throws(CompressionError) -> MappedBytes {
        if let map { return map }
        let m = try MappedBytes(self)
        map = m
        return m
    }

    /// Fills `buffer` from `offset`; a file that ends first is `.truncated`.
    func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(CompressionError) {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + Int64(done)))
            if n < 0 { if errno == EINTR { continue }; throw .errno(path, "read") }
            if n == 0 {
                throw CompressionError(.truncated, "file ends at \(offset + Int64(done)), \(buffer.count - done) more bytes expected",
                                       path: path, offset: offset + Int64(done))
            }
            done += n
        }
    }

    func read(at offset: Int64, count: Int) throws(CompressionError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let r: Result<Void, CompressionError> = out.withUnsafeMutableBytes { b in
            Result { () throws(CompressionError) in try read(at: offset, into: b) }
        }
        try r.get()
        return out
    }

    /// Copies `count` bytes from `offset` into `out`, 1 MiB at a time.
    func copy(at offset: Int64, count: Int64, to out: AtomicOutputFile) throws(CompressionError) {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buf.deallocate() }
        var done: Int64 = 0
        while done < count {
            let n = Int(min(Int64(buf.count), count - done))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
            try read(at: offset + done, into: chunk)
            try out.write(UnsafeRawBufferPointer(chunk))
            done += Int64(n)
        }
    }
}

/// The variant being written: a temporary file beside `path`, renamed onto it by `commit` after an
/// fsync. Dropped without a commit (an error anywhere), the temporary file is removed, so a failed
/// build never leaves a file behind.
final class AtomicOutputFile {
    let path: String
    let tempPath: String
    private var fd: Int32
    private let buffer: UnsafeMutableRawBufferPointer
    private var buffered = 0
    private(set) var written: Int64 = 0
    private var hasher = StreamingSHA256()

    init(_ path: String) throws(CompressionError) {
        self.path = path
        let dir = AtomicOutputFile.dirname(path)
        let name = path.split(separator: "/").last.map(String.init) ?? path
        var chosen: String?
        var fd: Int32 = -1
        for attempt in 0..<100 {
            let candidate = "\(dir)/.\(name).\(getpid())-\(attempt).partial"
            fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd >= 0 { chosen = candidate; break }
            if errno != EEXIST { throw .errno(candidate, "create") }
        }
        guard let chosen else { throw CompressionError(.io, "cannot create a temporary file beside it", path: path) }
        self.fd = fd
        self.tempPath = chosen
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
    }

    deinit {
        abort()
        buffer.deallocate()
    }

    static func dirname(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(CompressionError) {
        guard bytes.count > 0 else { return }
        hasher.update(bytes)
        written += Int64(bytes.count)
        var offset = 0
        while offset < bytes.count {
            let n = min(buffer.count - buffered, bytes.count - offset)
            (buffer.baseAddress! + buffered).copyMemory(from: bytes.baseAddress! + offset, byteCount: n)
            buffered += n
            offset += n
            if buffered == buffer.count { try flush() }
        }
    }

    func write(_ bytes: [UInt8]) throws(CompressionError) {
        let r: Result<Void, CompressionError> = bytes.withUnsafeBytes { b in Result { () throws(CompressionError) in try write(b) } }
        try r.get()
    }

    private func flush() throws(CompressionError) {
        var done = 0
        while done < buffered {
            let n = Glibc.write(fd, buffer.baseAddress! + done, buffered - done)
            if n < 0 { if errno == EINTR { continue }; throw .errno(tempPath, "write") }
            done += n
        }
        buffered = 0
    }

    var sha256: String { hasher.finalizeHex() }

    /// Everything written is in the temporary file and on disk (for the report and the evaluator,
    /// which read it before it is renamed into place).
    func sync() throws(CompressionError) {
        try flush()
        guard fsync(fd) == 0 else { throw .errno(tempPath, "fsync") }
    }

    /// Flushes, fsyncs, renames onto `path` and fsyncs the folder.
    func commit() throws(CompressionError) {
        try flush()
        guard fsync(fd) == 0 else { throw .errno(tempPath, "fsync") }
        guard close(fd) == 0 else { fd = -1; unlink(tempPath); throw .errno(tempPath, "close") }
        fd = -1
        guard rename(tempPath, path) == 0 else { let e = CompressionError.errno(path, "rename"); unlink(tempPath); throw e }
        let dfd = open(AtomicOutputFile.dirname(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    func abort() {
        if fd >= 0 { close(fd); fd = -1; unlink(tempPath) }
    }
}

/// A read-only map of a file: for walking its structure (protobuf keys and lengths), and for the
/// readers that work in place (see `ReadableFile.mapped()`). Read-only after init, so threads share it.
final class MappedBytes: @unchecked Sendable {
    let size: Int
    private let base: UnsafeMutableRawPointer?

    init(_ file: ReadableFile) throws(CompressionError) {
        size = Int(file.size)
        if size == 0 { base = nil; return }
        let fd = open(file.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .errno(file.path, "open") }
        defer { close(fd) }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw .errno(file.path, "mmap") }
        base = p
    }

    deinit { if let base { munmap(base, size) } }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }
}
