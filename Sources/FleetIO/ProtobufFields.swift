/// The protobuf wire format without a schema: field keys, varints and lengths over bytes in memory
/// (a mapped file), never copying a value. The one walker behind the delta codec's ONNX tensor finder
/// and the variant builder's ONNX reader; each maps `ProtobufWireError` to its own error type.
public struct ProtobufField: Equatable, Sendable {
    public let number: UInt64
    /// 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
    public let wire: UInt64
    /// Where the key starts, and where the value starts and ends (for a varint, the varint itself;
    /// for a length-delimited field, the bytes after the length).
    public let keyStart: Int
    public let valueStart: Int
    public let valueEnd: Int

    @inlinable
    public init(number: UInt64, wire: UInt64, keyStart: Int, valueStart: Int, valueEnd: Int) {
        self.number = number
        self.wire = wire
        self.keyStart = keyStart
        self.valueStart = valueStart
        self.valueEnd = valueEnd
    }
}

/// What was wrong with the bytes, and where (the field's key, or the varint that failed).
public struct ProtobufWireError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Fault: Equatable, Sendable {
        /// A varint, length or fixed value runs past the end of the range walked.
        case pastEnd
        /// A varint longer than 10 bytes or wider than 64 bits.
        case overlongVarint
        case fieldNumberZero
        /// Wire types 3, 4 (groups), 6 and 7.
        case unknownWireType(UInt64)
    }

    public let fault: Fault
    public let offset: Int
    /// The field it happened in, once its key was read.
    public let field: UInt64?

    public init(_ fault: Fault, offset: Int, field: UInt64? = nil) {
        self.fault = fault
        self.offset = offset
        self.field = field
    }

    /// What was wrong, without the offset (for error types that carry the offset themselves).
    public var summary: String {
        let inField = field.map { " in field \($0)" } ?? ""
        switch fault {
        case .pastEnd: return "value runs past the end\(inField)"
        case .overlongVarint: return "varint longer than 10 bytes\(inField)"
        case .fieldNumberZero: return "field number 0"
        case .unknownWireType(let w): return "wire type \(w)\(inField)"
        }
    }

    public var description: String { "\(summary) at \(offset)" }
}

/// Reads the fields of `b[start..<end]` in order: `while let f = try reader.next() { … }`.
public struct ProtobufFieldReader {
    @usableFromInline let bytes: UnsafeRawBufferPointer
    @usableFromInline let end: Int
    @usableFromInline var position: Int

    @inlinable public init(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) {
        self.bytes = bytes
        self.position = start
        self.end = end
    }

    /// The next field, or nil at the end of the range.
    @inlinable
    public mutating func next() throws(ProtobufWireError) -> ProtobufField? {
        let p = position
        guard p < end else { return nil }
        let (key, afterKey) = try Self.varint(bytes, p, end, field: nil)
        let number = key >> 3, wire = key & 7
        guard number > 0 else { throw ProtobufWireError(.fieldNumberZero, offset: p) }
        var valueStart = afterKey
        let valueEnd: Int
        switch wire {
        case 0: valueEnd = try Self.varint(bytes, afterKey, end, field: number).1
        case 1: valueEnd = afterKey + 8
        case 2:
            let (len, s) = try Self.varint(bytes, afterKey, end, field: number)
            guard len <= UInt64(end - s) else { throw ProtobufWireError(.pastEnd, offset: p, field: number) }
            valueStart = s
            valueEnd = s + Int(len)
        case 5: valueEnd = afterKey + 4
        default: throw ProtobufWireError(.unknownWireType(wire), offset: p, field: number)
        }
        guard valueEnd <= end else { throw ProtobufWireError(.pastEnd, offset: p, field: number) }
        position = valueEnd
        return ProtobufField(number: number, wire: wire, keyStart: p, valueStart: valueStart, valueEnd: valueEnd)
    }

    /// A varint at `start` (a key, a length, a varint value or an element of a packed field).
    @inlinable
    public static func varint(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, field: UInt64? = nil) throws(ProtobufWireError) -> (
        UInt64, Int
    ) {
        do throws(LEB128.Fault) {
            return try LEB128.read(b, start, end)
        } catch {
            throw ProtobufWireError(error == .truncated ? .pastEnd : .overlongVarint, offset: start, field: field)
        }
    }
}
