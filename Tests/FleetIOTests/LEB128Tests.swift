import Testing
import FleetIO

private func read(_ bytes: [UInt8], maxBits: Int = 64) throws(LEB128.Fault) -> (value: UInt64, next: Int) {
    let r: Result<(value: UInt64, next: Int), LEB128.Fault> = bytes.withUnsafeBytes { b in
        Result { () throws(LEB128.Fault) in try LEB128.read(b, 0, b.count, maxBits: maxBits) }
    }
    return try r.get()
}

@Suite("LEB128 varints")
struct LEB128Tests {
    @Test(arguments: [UInt64(0), 1, 127, 128, 300, 16_383, 16_384, UInt64(Int64.max), UInt64.max])
    func roundTrips(_ v: UInt64) throws {
        var out: [UInt8] = []
        LEB128.append(v, to: &out)
        #expect(out.count == LEB128.size(v))
        let (value, next) = try read(out + [0xAA])  // bytes after it are not read
        #expect(value == v)
        #expect(next == out.count)
    }

    @Test func aVarintCutShortIsTruncated() {
        #expect(throws: LEB128.Fault.truncated) { try read([]) }
        #expect(throws: LEB128.Fault.truncated) { try read([0x80, 0x80]) }
    }

    @Test func moreThanTenBytesIsOverlong() {
        #expect(throws: LEB128.Fault.overlong) { try read([UInt8](repeating: 0x80, count: 10) + [0]) }
    }

    @Test func bitsAbove64AreOverlongNotDropped() throws {
        // Ten bytes whose last carries bits 64 and up: a 64-bit reader would silently wrap.
        #expect(throws: LEB128.Fault.overlong) { try read([UInt8](repeating: 0xFF, count: 9) + [0x02]) }
        #expect(try read([UInt8](repeating: 0xFF, count: 9) + [0x01]).value == UInt64.max)
    }

    @Test func sixtyThreeBitReaderRefusesATenthByte() throws {
        let nine = [UInt8](repeating: 0xFF, count: 8) + [0x7F]
        #expect(try read(nine, maxBits: 63).value == UInt64(Int64.max))
        #expect(throws: LEB128.Fault.overlong) { try read([UInt8](repeating: 0xFF, count: 9) + [0x01], maxBits: 63) }
        // Nine bytes all continuing, then the end: truncated, as the stream is (not yet overlong).
        #expect(throws: LEB128.Fault.truncated) { try read([UInt8](repeating: 0x80, count: 9), maxBits: 63) }
    }

    @Test func overlongZeroPaddingWithinTheWidthIsAccepted() throws {
        // Non-minimal encodings (0x80 0x00 for 0) are valid protobuf; only the width is limited.
        #expect(try read([0x80, 0x00]).value == 0)
    }

    @Test func streamingReaderStopsAtTheLastByteAndPassesTheSourcesError() throws {
        struct Cut: Error {}
        var bytes: [UInt8] = [0xAC, 0x02, 0xFF]
        #expect(try LEB128.read(maxBits: 63) { () throws(Cut) -> UInt8 in bytes.removeFirst() } == 300)
        #expect(bytes == [0xFF])
        #expect(throws: Cut.self) {
            _ = try LEB128.read(maxBits: 63) { () throws(Cut) -> UInt8 in
                guard !bytes.isEmpty else { throw Cut() }
                return bytes.removeFirst()
            }
        }
    }
}
