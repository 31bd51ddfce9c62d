/// Unsigned LEB128, the varint of protobuf and of EdgeFleet's delta plans: 7 bits a byte, low bits
/// first, the high bit set on every byte but the last. The one reader and writer of it in EdgeFleet.
public enum LEB128 {
    /// Why a varint could not be read.
    public enum Fault: Error, Equatable, Sendable {
        /// The bytes ended before a byte without the continuation bit.
        case truncated
        /// More bytes than a value of the allowed width takes, or bits above that width.
        case overlong
    }

    /// Reads one varint from `nextByte`, for callers whose bytes arrive in pieces (a stream of runs,
    /// a reader that throws its own truncation error). `maxBits` is the widest value accepted: 64 for
    /// protobuf (at most 10 bytes, the tenth 0 or 1), 63 for sizes and offsets that must fit an Int64
    /// (at most 9 bytes). Nil: overlong, reported on the byte after the last one a value may take, so
    /// that bytes ending there are the reader's truncation, as they are.
    @inlinable @inline(__always)
    public static func read<E: Error>(maxBits: Int = 64, _ nextByte: () throws(E) -> UInt8) throws(E) -> UInt64? {
        assert(maxBits == 63 || maxBits == 64, "63 or 64 bits")
        var value: UInt64 = 0
        var shift = 0
        while true {
            let byte = try nextByte()
            guard shift < maxBits else { return nil }
            let payload = byte & 0x7F
            // Only the tenth byte of a 64-bit varint has room for less than 7 bits: bit 63 alone.
            if shift == 63, payload > 1 { return nil }
            value |= UInt64(payload) << UInt64(shift)
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
    }

    /// The varint starting at `b[start]`, read no further than `end`: its value and the offset after it.
    @inlinable
    public static func read(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, maxBits: Int = 64) throws(Fault) -> (
        value: UInt64, next: Int
    ) {
        var p = start
        let v = try read(maxBits: maxBits) { () throws(Fault) -> UInt8 in
            guard p < end else { throw .truncated }
            defer { p += 1 }
            return b[p]
        }
        guard let v else { throw .overlong }
        return (v, p)
    }

    /// Bytes `v` takes.
    @inlinable
    public static func size(_ v: UInt64) -> Int {
        var n = 1, x = v
        while x >= 0x80 { x >>= 7; n += 1 }
        return n
    }

    @inlinable
    public static func append(_ v: UInt64, to out: inout [UInt8]) {
        var x = v
        while x >= 0x80 { out.append(UInt8(x & 0x7F) | 0x80); x >>= 7 }
        out.append(UInt8(x))
    }
}
