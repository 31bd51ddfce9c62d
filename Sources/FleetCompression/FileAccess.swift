import FleetCore
import FleetIO
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
                throw CompressionError(
                    .truncated, "file ends at \(offset + Int64(done)), \(buffer.count - done) more bytes expected",
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

/// The variant being written: a temporary file beside `path` (FleetIO's `AtomicFile`), renamed onto
/// it by `commit` after an fsync. Dropped without a commit (an error anywhere), the temporary file is
/// removed, so a failed build never leaves a file behind.
final class AtomicOutputFile {
    let path: String
    var tempPath: String { file.tempPath }
    private let file: AtomicFile
    private(set) var written: Int64 = 0
    private var hasher = StreamingSHA256()

    init(_ path: String) throws(CompressionError) {
        self.path = path
        do throws(FileIOError) { file = try AtomicFile(replacing: path) } catch { throw CompressionError(error) }
    }

    static func dirname(_ path: String) -> String { AtomicFile.directory(of: path) }

    func write(_ bytes: UnsafeRawBufferPointer) throws(CompressionError) {
        guard bytes.count > 0 else { return }
        hasher.update(bytes)
        written += Int64(bytes.count)
        do throws(FileIOError) { try file.write(bytes) } catch { throw CompressionError(error) }
    }

    func write(_ bytes: [UInt8]) throws(CompressionError) {
        let r: Result<Void, CompressionError> = bytes.withUnsafeBytes { b in Result { () throws(CompressionError) in try write(b) } }
        try r.get()
    }

    var sha256: String { hasher.finalizeHex() }

    /// Everything written is in the temporary file and on disk (for the report and the evaluator,
    /// which read it before it is renamed into place).
    func sync() throws(CompressionError) {
        do throws(FileIOError) { try file.sync() } catch { throw CompressionError(error) }
    }

    /// Flushes, fsyncs, renames onto `path` and fsyncs the folder.
    func commit() throws(CompressionError) {
        // The variant in place, a folder that cannot be fsynced does not fail the build.
        do throws(FileIOError) { try file.commit(sync: true, directory: .bestEffort) } catch { throw CompressionError(error) }
    }

    func abort() { file.abort() }
}

extension CompressionError {
    /// A FleetIO failure as the builder's `.io` fault.
    init(_ error: FileIOError) {
        self.init(.io, error.message, path: error.path)
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
