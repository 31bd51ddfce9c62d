import CZstd
import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Applies a delta package to a base file, as a device does: streaming, with memory bounded by the
/// header's `decodeBufferBytes` plus a few MiB, never the whole model. It refuses a base whose size
/// or sha256 is not the header's before it writes anything, writes the result under a temporary
/// name beside `output`, and renames it onto `output` only when the result has the target's size
/// and sha256. On any error nothing is left behind.
public enum DeltaDecoder {
    /// Reads and checks a package's header (magic, version, checksum, method, and that the file
    /// is as long as the header says).
    public static func readHeader(_ patch: String) throws(DeltaError) -> DeltaHeader {
        try DeltaHeader.parse(from: patch)
    }

    /// The target a caller was promised by someone other than the package (a device: the release's
    /// signed sha256 and size).
    public struct ExpectedTarget: Equatable, Sendable {
        public var sha256: String
        public var size: Int64
        public init(sha256: String, size: Int64) { self.sha256 = sha256; self.size = size }
    }

    /// Decodes `patch` against `base` into `output`. `sync` fsyncs the result (and its directory)
    /// before returning; turn it off only where the caller makes the file durable itself.
    ///
    /// With `expecting`, a package whose header promises another target is refused
    /// (`.targetMismatch`) before the base is read or anything written; the decoded bytes are then
    /// hashed once, on the way out, against that same target, so a caller that passes it needs no
    /// check of its own: `output` exists only if it is exactly the expected target.
    @discardableResult
    public static func apply(
        base: String, patch: String, output: String, expecting: ExpectedTarget? = nil, sync: Bool = true
    ) throws(DeltaError) -> DeltaHeader {
        let header = try DeltaHeader.parse(from: patch)
        if let expecting, expecting.sha256 != header.targetSha256 || expecting.size != header.targetSize {
            throw DeltaError(
                .targetMismatch,
                "the package makes \(header.targetSha256) (\(header.targetSize) bytes), expected \(expecting.sha256) (\(expecting.size) bytes)",
                path: patch)
        }
        let package = try InputFile(patch)
        defer { package.close() }
        let baseFile = try InputFile(base)
        defer { baseFile.close() }
        guard baseFile.size == header.baseSize else {
            throw DeltaError(.baseMismatch, "base is \(baseFile.size) bytes, the package was made against \(header.baseSize)", path: base)
        }
        let baseHash = try baseFile.sha256()
        guard baseHash == header.baseSha256 else {
            throw DeltaError(.baseMismatch, "base sha256 \(baseHash), the package was made against \(header.baseSha256)", path: base)
        }

        var plan: TensorPlan?
        if header.method == .tensor {
            plan = try readPlan(package, header)
        }

        let out = try OutputFile(output, limit: header.targetSize)
        do throws(DeltaError) {
            switch header.method {
            case .full:
                let reader = try FrameReader(
                    file: package, offset: header.sectionOffset(0), length: header.sectionLengths[0],
                    windowLogMax: Int(header.decodeBufferBytes).windowLogCovering, what: "full frame")
                try copy(reader, length: header.targetSize, to: out)
                try reader.finish()
            case .zstdPatch:
                try applyZstdPatch(base: base, header: header, package: package, out: out)
            case .tensor:
                var decoder = TensorDecoder(header: header, plan: plan!, package: package, base: baseFile, out: out)
                try decoder.run()
            }
            guard out.written == header.targetSize else {
                throw DeltaError(.targetMismatch, "decoded \(out.written) bytes, the target has \(header.targetSize)", path: output)
            }
            let hash = out.sha256
            guard hash == header.targetSha256 else {
                throw DeltaError(.targetMismatch, "decoded sha256 \(hash), the package promises \(header.targetSha256)", path: output)
            }
            try out.commit(sync: sync)
        } catch {
            out.abort()
            throw error
        }
        return header
    }

    static func readPlan(_ package: InputFile, _ header: DeltaHeader) throws(DeltaError) -> TensorPlan {
        let offset = header.sectionOffset(0)
        let length = header.sectionLengths[0]
        let head = try package.read(at: offset, count: Int(min(length, 18)))
        let size = head.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        guard size < UInt64.max - 1 else { throw DeltaError(.corrupt, "plan section does not start with a zstd frame of known size") }
        guard size <= UInt64(TensorPlan.maxPlanBytes) else { throw DeltaError(.unsupported, "plan of \(size) bytes is over the limit") }
        let reader = try FrameReader(
            file: package, offset: offset, length: length,
            windowLogMax: Int(size).windowLogCovering, what: "plan")
        var bytes = [UInt8](repeating: 0, count: Int(size))
        try bytes.withMutableBytes { (b: UnsafeMutableRawBufferPointer) throws(DeltaError) in try reader.read(into: b) }
        try reader.finish()
        let plan = try TensorPlan.parse(bytes)
        try plan.validate(header: header, dataLength: header.sectionLengths[1])
        return plan
    }

    private static func applyZstdPatch(base: String, header: DeltaHeader, package: InputFile, out: OutputFile) throws(DeltaError) {
        let windowLog = Int(header.baseSize + header.targetSize).windowLogCovering
        guard windowLog <= 31 else { throw DeltaError(.unsupported, "zstd-patch over \(header.baseSize + header.targetSize) bytes") }
        guard header.decodeBufferBytes >= header.baseSize else {
            throw DeltaError(
                .corrupt, "zstd-patch header declares \(header.decodeBufferBytes) buffer bytes for a \(header.baseSize)-byte base")
        }
        let map = try MappedFile(base)
        guard Int64(map.size) == header.baseSize else { throw DeltaError(.baseMismatch, "base changed size while decoding", path: base) }
        let reader = try FrameReader(
            file: package, offset: header.sectionOffset(0), length: header.sectionLengths[0],
            prefix: map.bytes, windowLogMax: windowLog, what: "zstd-patch frame")
        try copy(reader, length: header.targetSize, to: out)
        try reader.finish()
    }

    /// Streams `length` bytes of a frame to the output, 1 MiB at a time.
    static func copy(_ reader: FrameReader, length: Int64, to out: OutputFile) throws(DeltaError) {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buf.deallocate() }
        var done: Int64 = 0
        while done < length {
            let n = Int(min(Int64(buf.count), length - done))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
            try reader.read(into: chunk)
            try out.write(UnsafeRawBufferPointer(chunk))
            done += Int64(n)
        }
    }
}
