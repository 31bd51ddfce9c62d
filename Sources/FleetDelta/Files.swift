import FleetCore
import FleetIO
#if canImport(Glibc)
    import Glibc
#endif

/// A file read with pread(2) at explicit offsets, so that the decoder never holds more of it than it asks for.
final class InputFile {
    let path: String
    let fd: Int32
    let size: Int64

    init(_ path: String) throws(DeltaError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .errno(path, "open") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { let e = DeltaError.errno(path, "fstat"); Glibc.close(fd); throw e }
        guard (st.st_mode & S_IFMT) == S_IFREG else { Glibc.close(fd); throw DeltaError(.io, "not a regular file", path: path) }
        self.fd = fd
        self.size = Int64(st.st_size)
    }

    func close() { Glibc.close(fd) }

    /// Fills `buffer` from `offset`; a short file is `.truncated`.
    func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(DeltaError) {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + Int64(done)))
            if n < 0 { if Glibc.errno == EINTR { continue }; throw .errno(path, "read") }
            if n == 0 {
                throw DeltaError(.truncated, "ends at \(offset + Int64(done)), wanted \(buffer.count - done) more bytes", path: path)
            }
            done += n
        }
    }

    func read(at offset: Int64, count: Int) throws(DeltaError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withMutableBytes { (b: UnsafeMutableRawBufferPointer) throws(DeltaError) in try read(at: offset, into: b) }
        return out
    }

    /// SHA-256 of the whole file, streamed in 1 MiB reads.
    func sha256() throws(DeltaError) -> String {
        var hasher = StreamingSHA256()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buf.deallocate() }
        var offset: Int64 = 0
        while offset < size {
            let n = Int(min(Int64(buf.count), size - offset))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
            try read(at: offset, into: chunk)
            hasher.update(UnsafeRawBufferPointer(chunk))
            offset += Int64(n)
        }
        return hasher.finalizeHex()
    }
}

/// The decoder's output: written sequentially to a temporary name beside `path` (FleetIO's
/// `AtomicFile`), hashed on the way, and renamed onto `path` only by `commit` after the caller checked
/// size and hash. Anything else (`abort`, or an error) removes the temporary file.
final class OutputFile {
    let path: String
    var tempPath: String { file.tempPath }
    private let file: AtomicFile
    private var hasher = StreamingSHA256()
    private(set) var written: Int64 = 0
    /// Writing stops with `.targetMismatch` past this many bytes (the header's target size).
    let limit: Int64

    init(_ path: String, limit: Int64) throws(DeltaError) {
        self.path = path
        self.limit = limit
        do throws(FileIOError) {
            file = try AtomicFile(replacing: path, temporary: .unique(tag: "delta"))
        } catch {
            throw DeltaError(error)
        }
    }

    static func dirname(_ path: String) -> String { AtomicFile.directory(of: path) }

    func write(_ bytes: UnsafeRawBufferPointer) throws(DeltaError) {
        guard Int64(bytes.count) <= limit - written else {
            throw DeltaError(.targetMismatch, "decoding produces more than the target's \(limit) bytes", path: path)
        }
        hasher.update(bytes)
        written += Int64(bytes.count)
        do throws(FileIOError) { try file.write(bytes) } catch { throw DeltaError(error) }
    }

    var sha256: String { hasher.finalizeHex() }

    /// Flushes, optionally fsyncs, and renames the temporary file onto `path`.
    func commit(sync: Bool) throws(DeltaError) {
        // The target in place, a directory that cannot be fsynced is not a failed decode.
        do throws(FileIOError) { try file.commit(sync: sync, directory: .bestEffort) } catch { throw DeltaError(error) }
    }

    func abort() { file.abort() }
}

extension DeltaError {
    /// A FleetIO failure as the delta codec's `.io` fault, errno kept (ENOSPC: the disk is full).
    init(_ error: FileIOError) {
        self.init(.io, error.message, path: error.path, systemError: error.systemError)
    }
}

/// A read-only memory map of a whole file, for the encoder (which sees both files whole) and for the
/// zstd-patch decoder, whose prefix must be addressable: pages come from the page cache, shared and
/// reclaimable, not copied into the process's own memory.
final class MappedFile {
    let path: String
    let size: Int
    private let base: UnsafeMutableRawPointer?

    init(_ path: String) throws(DeltaError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .errno(path, "open") }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .errno(path, "fstat") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw DeltaError(.io, "not a regular file", path: path) }
        size = Int(st.st_size)
        if size == 0 { base = nil; return }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw .errno(path, "mmap") }
        base = p
    }

    deinit { if let base { munmap(base, size) } }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    func slice(_ offset: Int, _ count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }

    /// Tells the kernel the map will be read front to back (read-ahead), or that it is done with it.
    func adviseSequential() { if let base { madvise(base, size, MADV_SEQUENTIAL) } }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` keeping the typed error (the standard one rethrows `any Error`).
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(DeltaError) -> R) throws(DeltaError) -> R {
        let result: Result<R, DeltaError> = withUnsafeBytes { b in Result { () throws(DeltaError) -> R in try body(b) } }
        return try result.get()
    }

    mutating func withMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws(DeltaError) -> R) throws(DeltaError) -> R {
        let result: Result<R, DeltaError> = withUnsafeMutableBytes { b in Result { () throws(DeltaError) -> R in try body(b) } }
        return try result.get()
    }
}
