import FleetCore
import FleetIO
#if canImport(Glibc)
    import Glibc
#endif

/// How the target is coded in a package's body; see docs/DELTA.md.
public enum DeltaMethod: String, CaseIterable, Sendable, Codable {
    /// Per tensor against the base (safetensors, ONNX): unchanged tensors referenced, changed ones as
    /// shuffled XOR or difference, the rest of the file coded with the base's as a zstd prefix.
    case tensor
    /// One zstd frame with the whole base as its prefix (any file).
    case zstdPatch = "zstd-patch"
    /// The target alone, zstd-compressed.
    case full

    /// The byte that names the method in the header.
    var wireCode: UInt8 {
        switch self {
        case .full: 1
        case .zstdPatch: 2
        case .tensor: 3
        }
    }

    init?(wireCode: UInt8) {
        switch wireCode {
        case 1: self = .full
        case 2: self = .zstdPatch
        case 3: self = .tensor
        default: return nil
        }
    }

    /// How many body sections a package of this method has.
    var sectionCount: Int { self == .tensor ? 2 : 1 }
}

/// The fixed front of a delta package: everything a decoder checks before it writes a byte.
/// Layout (little-endian) in docs/DELTA.md.
public struct DeltaHeader: Equatable, Sendable, Codable {
    public static let magic: [UInt8] = Array("EFDELTA".utf8) + [0]
    public static let formatVersion: UInt16 = 1
    /// Bytes before the section lengths.
    static let fixedLength = 112
    static let checksumLength = 32
    static let maxSections = 8

    public var formatVersion: UInt16
    public var method: DeltaMethod
    public var baseSize: Int64
    public var targetSize: Int64
    /// Lowercase hex.
    public var baseSha256: String
    public var targetSha256: String
    /// Upper bound, declared by the encoder and enforced by the decoder, of the working buffers the
    /// decoder allocates (prefix and window buffers), not counting a constant of a few MiB.
    public var decodeBufferBytes: Int64
    /// Lengths of the body sections, in order.
    public var sectionLengths: [Int64]

    public init(
        method: DeltaMethod, baseSize: Int64, targetSize: Int64, baseSha256: String, targetSha256: String,
        decodeBufferBytes: Int64, sectionLengths: [Int64]
    ) {
        self.formatVersion = Self.formatVersion
        self.method = method
        self.baseSize = baseSize
        self.targetSize = targetSize
        self.baseSha256 = baseSha256
        self.targetSha256 = targetSha256
        self.decodeBufferBytes = decodeBufferBytes
        self.sectionLengths = sectionLengths
    }

    /// Bytes the header takes at the start of the package.
    public var headerLength: Int { Self.fixedLength + 8 * sectionLengths.count + Self.checksumLength }

    /// The package length this header announces.
    public var packageLength: Int64 { Int64(headerLength) + sectionLengths.reduce(0, +) }

    /// Offset of section `i` from the start of the package.
    public func sectionOffset(_ i: Int) -> Int64 { Int64(headerLength) + sectionLengths[..<i].reduce(0, +) }

    /// Reads and checks the header of the package at `path`, including that the file is exactly as
    /// long as the header says.
    public static func parse(from path: String) throws(DeltaError) -> DeltaHeader {
        let file = try InputFile(path)
        defer { file.close() }
        let prefix = try file.read(at: 0, count: min(Int(file.size), fixedLength + 8 * maxSections + checksumLength))
        let header = try parse(prefix)
        if file.size < header.packageLength {
            throw DeltaError(.truncated, "package is \(file.size) bytes, its header announces \(header.packageLength)", path: path)
        }
        if file.size > header.packageLength {
            throw DeltaError(.corrupt, "package is \(file.size) bytes, its header announces \(header.packageLength)", path: path)
        }
        return header
    }

    /// Parses the header at the start of `bytes` (which may go on past it).
    static func parse(_ bytes: [UInt8]) throws(DeltaError) -> DeltaHeader {
        var r = ByteReader(bytes)
        guard bytes.count >= 8 else { throw DeltaError(.truncated, "package of \(bytes.count) bytes is shorter than its magic") }
        guard Array(bytes[0..<8]) == magic else { throw DeltaError(.corrupt, "not an EdgeFleet delta package (bad magic)") }
        r.offset = 8
        guard bytes.count >= fixedLength else { throw DeltaError(.truncated, "package of \(bytes.count) bytes ends inside its header") }
        let version = try r.u16()
        guard version == formatVersion else {
            throw DeltaError(.unsupported, "format version \(version); this decoder reads version \(formatVersion)")
        }
        let declaredLength = Int(try r.u16())
        let methodCode = try r.u8()
        let sections = Int(try r.u8())
        let flags = try r.u16()
        guard sections >= 1, sections <= maxSections, declaredLength == fixedLength + 8 * sections + checksumLength else {
            throw DeltaError(.corrupt, "header length \(declaredLength) does not fit \(sections) sections")
        }
        guard bytes.count >= declaredLength else { throw DeltaError(.truncated, "package of \(bytes.count) bytes ends inside its header") }
        let body = bytes[0..<(declaredLength - checksumLength)]
        var hasher = StreamingSHA256()
        hasher.update(body)
        guard Hex.encode(bytes[(declaredLength - checksumLength)..<declaredLength]) == hasher.finalizeHex() else {
            throw DeltaError(.corrupt, "header checksum does not match")
        }
        guard let method = DeltaMethod(wireCode: methodCode) else { throw DeltaError(.unsupported, "unknown method code \(methodCode)") }
        guard flags == 0 else { throw DeltaError(.unsupported, "unknown header flags 0x\(String(flags, radix: 16))") }
        guard sections == method.sectionCount else {
            throw DeltaError(.corrupt, "method \(method.rawValue) has \(method.sectionCount) sections, header says \(sections)")
        }
        let baseSize = try r.i64()
        let targetSize = try r.i64()
        let baseHash = Hex.encode(try r.bytes(32))
        let targetHash = Hex.encode(try r.bytes(32))
        let buffer = try r.i64()
        let reserved = try r.u64()
        guard reserved == 0 else { throw DeltaError(.unsupported, "reserved header field is not zero") }
        var lengths: [Int64] = []
        for _ in 0..<sections { lengths.append(try r.i64()) }
        var total: Int64 = Int64(declaredLength)
        for l in lengths {
            let (sum, overflow) = total.addingReportingOverflow(l)
            guard !overflow else { throw DeltaError(.corrupt, "section lengths overflow") }
            total = sum
        }
        var h = DeltaHeader(
            method: method, baseSize: baseSize, targetSize: targetSize, baseSha256: baseHash,
            targetSha256: targetHash, decodeBufferBytes: buffer, sectionLengths: lengths)
        h.formatVersion = version
        return h
    }

    /// The header's bytes, checksum included.
    func serialized() -> [UInt8] {
        var w = ByteWriter()
        w.bytes(Self.magic)
        w.u16(formatVersion)
        w.u16(UInt16(headerLength))
        w.u8(method.wireCode)
        w.u8(UInt8(sectionLengths.count))
        w.u16(0)
        w.u64(UInt64(baseSize))
        w.u64(UInt64(targetSize))
        w.bytes(Hex.decode(baseSha256) ?? [UInt8](repeating: 0, count: 32))
        w.bytes(Hex.decode(targetSha256) ?? [UInt8](repeating: 0, count: 32))
        w.u64(UInt64(decodeBufferBytes))
        w.u64(0)
        for l in sectionLengths { w.u64(UInt64(l)) }
        var hasher = StreamingSHA256()
        hasher.update(w.data)
        w.bytes(Hex.decode(hasher.finalizeHex())!)
        return w.data
    }
}

/// Little-endian reads from a byte array; running off the end is `.truncated`.
struct ByteReader {
    let bytes: [UInt8]
    var offset = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { offset >= bytes.count }

    mutating func u8() throws(DeltaError) -> UInt8 {
        guard offset < bytes.count else { throw DeltaError(.truncated, "unexpected end at offset \(offset)") }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u16() throws(DeltaError) -> UInt16 { UInt16(try u8()) | UInt16(try u8()) << 8 }

    mutating func u64() throws(DeltaError) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(try u8()) << (8 * UInt64(i)) }
        return v
    }

    /// A u64 that must fit a non-negative Int64 (sizes and offsets).
    mutating func i64() throws(DeltaError) -> Int64 {
        let v = try u64()
        guard v <= UInt64(Int64.max) else { throw DeltaError(.corrupt, "size field \(v) out of range at offset \(offset - 8)") }
        return Int64(v)
    }

    mutating func bytes(_ n: Int) throws(DeltaError) -> [UInt8] {
        guard n >= 0, bytes.count - offset >= n else { throw DeltaError(.truncated, "unexpected end at offset \(offset)") }
        defer { offset += n }
        return Array(bytes[offset..<(offset + n)])
    }

    /// LEB128, at most 63 bits (sizes and offsets), so the value always fits an Int64.
    mutating func varint() throws(DeltaError) -> Int64 {
        guard let v = try LEB128.read(maxBits: 63, { () throws(DeltaError) in try u8() }) else {
            throw DeltaError(.corrupt, "varint too long at offset \(offset)")
        }
        return Int64(v)
    }
}

struct ByteWriter {
    var data: [UInt8] = []
    mutating func u8(_ v: UInt8) { data.append(v) }
    mutating func u16(_ v: UInt16) { data.append(UInt8(v & 0xFF)); data.append(UInt8(v >> 8)) }
    mutating func u64(_ v: UInt64) { for i in 0..<8 { data.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    mutating func bytes(_ b: [UInt8]) { data += b }
    mutating func varint(_ v: Int64) { LEB128.append(UInt64(v), to: &data) }
}
