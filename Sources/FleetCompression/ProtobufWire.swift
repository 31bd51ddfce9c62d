/// Protobuf wire format, as far as the builder needs it to find tensor payloads without copying
/// them: field keys, varints and lengths over a mapped file. Offsets in errors are file offsets.
enum ProtobufWire {
    struct Field {
        let number: UInt64
        let wire: UInt64
        /// Where the key starts, and where the value starts and ends (for a varint, the varint itself).
        let keyStart: Int
        let valueStart: Int
        let valueEnd: Int
    }

    /// Calls `body` for each field in `b[start..<end]`, in order.
    static func forEachField(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, what: String,
                             _ body: (Field) throws(CompressionError) -> Void) throws(CompressionError) {
        var p = start
        while p < end {
            let (key, afterKey) = try varint(b, p, end, what: what)
            let number = key >> 3, wire = key & 7
            guard number > 0 else { throw CompressionError(.malformed, "\(what): field number 0", offset: Int64(p)) }
            let valueEnd: Int
            var valueStart = afterKey
            switch wire {
            case 0: valueEnd = try varint(b, afterKey, end, what: what).1
            case 1: valueEnd = afterKey + 8
            case 2:
                let (len, s) = try varint(b, afterKey, end, what: what)
                guard len <= UInt64(end - s) else {
                    throw CompressionError(end == b.count ? .truncated : .malformed,
                                           "\(what): field \(number) claims \(len) bytes, \(end - s) remain", offset: Int64(p))
                }
                valueStart = s
                valueEnd = s + Int(len)
            case 5: valueEnd = afterKey + 4
            default: throw CompressionError(.malformed, "\(what): wire type \(wire) of field \(number)", offset: Int64(p))
            }
            guard valueEnd <= end else {
                throw CompressionError(end == b.count ? .truncated : .malformed, "\(what): field \(number) runs past its end", offset: Int64(p))
            }
            try body(Field(number: number, wire: wire, keyStart: p, valueStart: valueStart, valueEnd: valueEnd))
            p = valueEnd
        }
    }

    static func varint(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, what: String) throws(CompressionError) -> (UInt64, Int) {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        var p = start
        while p < end {
            let byte = b[p]
            p += 1
            guard shift < 64 else { throw CompressionError(.malformed, "\(what): varint longer than 10 bytes", offset: Int64(start)) }
            v |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return (v, p) }
            shift += 7
        }
        throw CompressionError(end == b.count ? .truncated : .malformed, "\(what): varint runs past the end", offset: Int64(start))
    }

    static func varintSize(_ v: UInt64) -> Int {
        var n = 1, x = v
        while x >= 0x80 { x >>= 7; n += 1 }
        return n
    }

    static func appendVarint(_ v: UInt64, to out: inout [UInt8]) {
        var x = v
        while x >= 0x80 { out.append(UInt8(x & 0x7F) | 0x80); x >>= 7 }
        out.append(UInt8(x))
    }

    /// The key and length prefix of a length-delimited field.
    static func lengthPrefix(field: UInt64, length: Int64) -> [UInt8] {
        var out: [UInt8] = []
        appendVarint(field << 3 | 2, to: &out)
        appendVarint(UInt64(length), to: &out)
        return out
    }

    /// Bytes a length-delimited field of `length` takes, key and prefix included.
    static func fieldSize(field: UInt64, length: Int64) -> Int64 {
        Int64(varintSize(field << 3 | 2) + varintSize(UInt64(length))) + length
    }
}
