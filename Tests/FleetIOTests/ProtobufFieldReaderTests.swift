import Testing
import FleetIO

private func fields(_ bytes: [UInt8], _ start: Int = 0, _ end: Int? = nil) throws(ProtobufWireError) -> [ProtobufField] {
    let r: Result<[ProtobufField], ProtobufWireError> = bytes.withUnsafeBytes { b in
        Result { () throws(ProtobufWireError) in
            var reader = ProtobufFieldReader(b, start, end ?? b.count)
            var out: [ProtobufField] = []
            while let f = try reader.next() { out.append(f) }
            return out
        }
    }
    return try r.get()
}

@Suite("Protobuf wire walker")
struct ProtobufFieldReaderTests {
    @Test func walksEachWireType() throws {
        // field 1 varint 150; field 2 "hi"; field 3 fixed64; field 4 fixed32
        let bytes: [UInt8] = [0x08, 0x96, 0x01, 0x12, 0x02, 0x68, 0x69, 0x19] + [UInt8](repeating: 1, count: 8) + [0x25, 1, 2, 3, 4]
        let f = try fields(bytes)
        #expect(f.map(\.number) == [1, 2, 3, 4])
        #expect(f.map(\.wire) == [0, 2, 1, 5])
        #expect((f[0].valueStart, f[0].valueEnd) == (1, 3))
        #expect((f[1].keyStart, f[1].valueStart, f[1].valueEnd) == (3, 5, 7))
        #expect(f[3].valueEnd == bytes.count)
    }

    @Test func aLengthPastTheEndIsRefused() {
        #expect(throws: ProtobufWireError(.pastEnd, offset: 0, field: 2)) { try fields([0x12, 0x05, 0x68]) }
        // Inside an enclosing field: its end, not the buffer's, bounds the value.
        #expect(throws: ProtobufWireError(.pastEnd, offset: 0, field: 2)) { try fields([0x12, 0x02, 0x68, 0x69], 0, 3) }
    }

    @Test func malformedKeysAreRefused() {
        #expect(throws: ProtobufWireError(.fieldNumberZero, offset: 0)) { try fields([0x00, 0x01]) }
        #expect(throws: ProtobufWireError(.unknownWireType(3), offset: 0, field: 1)) { try fields([0x0B]) }
        #expect(throws: ProtobufWireError(.pastEnd, offset: 0)) { try fields([0x80]) }
        #expect(throws: ProtobufWireError(.overlongVarint, offset: 1, field: 1)) {
            try fields([0x08] + [UInt8](repeating: 0xFF, count: 10) + [0x01])
        }
        #expect(throws: ProtobufWireError(.pastEnd, offset: 0, field: 1)) { try fields([0x09, 1, 2, 3]) }
    }
}
