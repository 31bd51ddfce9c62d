import Glibc
import Testing
import FleetIO
@testable import FleetDelta

/// The delta codec's edge over FleetIO: its faults stay `DeltaError`s, errno kept.
@Suite struct SharedPrimitivesTests {
    @Test func aFullDiskStaysAnIOFaultWithItsErrno() {
        let e = DeltaError(FileIOError(.write, path: "/m/.x.partial", systemError: ENOSPC))
        #expect(e.code == .io)
        #expect(e.systemError == ENOSPC)
        #expect(e.path == "/m/.x.partial")
    }

    @Test func planVarintsAreLimitedTo63Bits() throws {
        var r = ByteReader([UInt8](repeating: 0xFF, count: 8) + [0x7F])
        #expect(try r.varint() == Int64.max)
        var tooLong = ByteReader([UInt8](repeating: 0xFF, count: 9) + [0x01])
        #expect(throws: DeltaError.self) { try tooLong.varint() }
        var cut = ByteReader([0x80, 0x80])
        let e = #expect(throws: DeltaError.self) { try cut.varint() }
        #expect(e?.code == .truncated)
    }

    @Test func anOverlongPlanVarintIsCorrupt() {
        var r = ByteReader([UInt8](repeating: 0x80, count: 9) + [0x00])
        let e = #expect(throws: DeltaError.self) { try r.varint() }
        #expect(e?.code == .corrupt)
    }

    @Test func outputFileLeavesTheTargetUntilCommit() throws {
        var template = Array("/tmp/fleetdelta-XXXXXX".utf8CString)
        let dir = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        defer { unlink(dir + "/out"); rmdir(dir) }
        let out = try OutputFile(dir + "/out", limit: 4)
        try [UInt8](repeating: 1, count: 4).withBytes { (b: UnsafeRawBufferPointer) throws(DeltaError) in try out.write(b) }
        #expect(access(dir + "/out", F_OK) != 0)
        let over = #expect(throws: DeltaError.self) {
            try [UInt8](repeating: 1, count: 1).withBytes { (b: UnsafeRawBufferPointer) throws(DeltaError) in try out.write(b) }
        }
        #expect(over?.code == .targetMismatch)
        try out.commit(sync: true)
        #expect(access(dir + "/out", F_OK) == 0)
        #expect(access(out.tempPath, F_OK) != 0)
    }
}
