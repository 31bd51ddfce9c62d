import FleetIO

/// Protobuf wire format, as far as the builder needs it to find tensor payloads without copying
/// them: field keys, varints and lengths over a mapped file. Offsets in errors are file offsets.
enum ProtobufWire {
    /// The walker itself is FleetIO's, shared with the delta codec's ONNX tensor finder.
    typealias Field = ProtobufField

    /// Calls `body` for each field in `b[start..<end]`, in order.
    static func forEachField(
        _ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, what: String,
        _ body: (Field) throws(CompressionError) -> Void
    ) throws(CompressionError) {
        var reader = ProtobufFieldReader(b, start, end)
        while true {
            let field: Field?
            do throws(ProtobufWireError) { field = try reader.next() } catch {
                throw CompressionError(error, what: what, walkedToEnd: end == b.count)
            }
            guard let field else { return }
            try body(field)
        }
    }

    static func varint(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, what: String) throws(CompressionError) -> (UInt64, Int) {
        do throws(ProtobufWireError) {
            return try ProtobufFieldReader.varint(b, start, end)
        } catch {
            throw CompressionError(error, what: what, walkedToEnd: end == b.count)
        }
    }

    static func varintSize(_ v: UInt64) -> Int { LEB128.size(v) }

    static func appendVarint(_ v: UInt64, to out: inout [UInt8]) { LEB128.append(v, to: &out) }

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

extension CompressionError {
    /// A wire-format fault: running past the end of the whole file is `.truncated` (a cut download),
    /// past the end of an enclosing field `.malformed`; anything else `.malformed`.
    init(_ error: ProtobufWireError, what: String, walkedToEnd: Bool) {
        let code: Code = error.fault == .pastEnd && walkedToEnd ? .truncated : .malformed
        self.init(code, "\(what): \(error.summary)", offset: Int64(error.offset))
    }
}
