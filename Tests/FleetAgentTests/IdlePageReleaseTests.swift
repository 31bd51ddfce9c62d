import Foundation
import Testing
@testable import FleetAgent

/// Giving back clean file pages while idle: which pages go (only the file's own, of read-only
/// private mappings), that what stays mapped still reads the same, and when it happens.
@Suite("Idle page release")
struct IdlePageReleaseTests {
    static let page = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// The page map entry of an address of this process.
    static func entry(_ p: UnsafeRawPointer) throws -> UInt64 {
        let fd = open("/proc/self/pagemap", O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        var e: UInt64 = 0
        let n = pread(fd, &e, 8, off_t(UInt(bitPattern: p) / UInt(page) * 8))
        try #require(n == 8)
        return e
    }
    static func present(_ p: UnsafeRawPointer) throws -> Bool { try entry(p) >> 63 & 1 == 1 }

    /// A file of `pages` pages, page i filled with the byte i + 1, mapped private.
    static func mapFile(pages: Int, writable: Bool) throws -> (UnsafeMutableRawPointer, String) {
        let path = try tempDir() + "/mapped"
        var bytes: [UInt8] = []
        for i in 0..<pages { bytes += [UInt8](repeating: UInt8(i + 1), count: page) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        let p = mmap(nil, pages * page, PROT_READ | (writable ? PROT_WRITE : 0), MAP_PRIVATE, fd, 0)
        try #require(p != MAP_FAILED)
        return (p!, path)
    }

    @Test func readOnlyFilePagesAreDroppedAndReadTheSameAfterwards() throws {
        let (p, path) = try Self.mapFile(pages: 8, writable: false)
        defer {
            munmap(p, 8 * Self.page)
            try? FileManager.default.removeItem(atPath: FS.dirname(path))
        }
        var sum = 0
        for i in 0..<8 { sum += Int(p.load(fromByteOffset: i * Self.page, as: UInt8.self)) }
        #expect(sum == 36)
        #expect(try (0..<8).allSatisfy { try Self.present(p + $0 * Self.page) })
        let released = ResidentPages.release()
        #expect(released.bytes >= 8 * Self.page && released.mappings > 0)
        #expect(try (0..<8).allSatisfy { try !Self.present(p + $0 * Self.page) })
        // Used again, each page comes back from the file.
        #expect((0..<8).allSatisfy { p.load(fromByteOffset: $0 * Self.page + 17, as: UInt8.self) == UInt8($0 + 1) })
    }

    /// A read-only mapping that was written before it was made read-only (as the loader does
    /// with relocated data): the written page is this process's own and is kept.
    @Test func aWrittenPageOfAReadOnlyMappingIsKept() throws {
        let (p, path) = try Self.mapFile(pages: 4, writable: true)
        defer {
            munmap(p, 4 * Self.page)
            try? FileManager.default.removeItem(atPath: FS.dirname(path))
        }
        p.storeBytes(of: 0xAB, toByteOffset: Self.page + 5, as: UInt8.self)
        #expect(p.load(fromByteOffset: 2 * Self.page, as: UInt8.self) == 3)
        #expect(mprotect(p, 4 * Self.page, PROT_READ) == 0)
        _ = ResidentPages.release()
        #expect(p.load(fromByteOffset: Self.page + 5, as: UInt8.self) == 0xAB)
        #expect(try Self.present(p + Self.page))
        #expect(try !Self.present(p + 2 * Self.page))
    }

    @Test func onlyPrivateReadOnlyFileMappingsAreCandidates() {
        let maps = """
            55d0c0000000-55d0c1000000 r-xp 00000000 fd:01 123 /usr/bin/fleet-agent
            55d0c1000000-55d0c1200000 r--p 01000000 fd:01 123 /usr/bin/fleet-agent
            55d0c1200000-55d0c1300000 rw-p 01200000 fd:01 123 /usr/bin/fleet-agent
            7f0000000000-7f0000100000 r--s 00000000 fd:01 456 /var/lib/edgefleet/models/m/current/model.onnx
            7f0000100000-7f0000200000 rw-p 00000000 00:00 0
            7f0000200000-7f0000300000 r--p 00000000 fd:01 789 /usr/lib/x86_64-linux-gnu/libc.so.6
            7f0000300000-7f0000301000 r--p 00000000 fd:01 790 /opt/a file with spaces.so
            7f0000400000-7f0000401000 r-xp 00000000 fd:01 791 /tmp/old-agent (deleted)
            7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
            """
        #expect(
            ResidentPages.candidates(maps: maps).map(\.path) == [
                "/usr/bin/fleet-agent", "/usr/bin/fleet-agent", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/opt/a file with spaces.so"
            ])
        #expect(
            ResidentPages.candidates(maps: maps).first
                == .init(start: 0x55d0_c000_0000, end: 0x55d0_c100_0000, path: "/usr/bin/fleet-agent"))
    }

    @Test func trimsOnceAfterStartAndOnceAfterEachBusyStretch() {
        var policy = IdlePagePolicy(busyCPUTicks: 20, busyIOBytes: 1 << 20)
        var cpu: UInt64 = 0, io: UInt64 = 0
        func look(cpu dc: UInt64 = 1, io di: UInt64 = 4096) -> Bool {
            cpu += dc; io += di
            return policy.observe(ProcessActivity(cpuTicks: cpu, ioBytes: io))
        }
        #expect(!look())  // the first look only sets the baseline
        #expect(look())  // start-up is over: trim once
        #expect(!(0..<50).contains { _ in look() })  // idle check-ins: never again
        #expect(!look(io: 24 << 20))  // an install writes a model
        #expect(!look(cpu: 90))  // and hashes it
        #expect(look())  // quiet again: trim once
        #expect(!look() && !look())
        #expect(!look(cpu: 21) && look())
    }

    @Test func activityFromProc() throws {
        let stat =
            "4242 (fleet (a) b) S 1 4242 4242 0 -1 4194560 900 0 3 0 150 25 0 0 20 0 4 0 1000 300000000 6000 "
            + "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
        let io = "rchar: 1000\nwchar: 24\nsyscr: 3\nsyscw: 2\nread_bytes: 0\nwrite_bytes: 0\ncancelled_write_bytes: 0\n"
        #expect(ProcessActivity.parse(stat: stat, io: io) == ProcessActivity(cpuTicks: 175, ioBytes: 1024))
        #expect(ProcessActivity.parse(stat: stat, io: "rchar: 1\n") == nil)
        let now = try #require(ProcessActivity.now())
        #expect(now.ioBytes > 0)
    }
}
