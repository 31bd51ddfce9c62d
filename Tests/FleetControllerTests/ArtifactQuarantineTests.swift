import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import Testing
@testable import FleetClient
@testable import FleetController

/// A stored artifact whose bytes rot on the controller's disk is found, taken out of service and
/// reported; nothing is built from it; and bytes served count what was sent.
@Suite("Artifact quarantine and scrub")
struct ArtifactQuarantineTests {
    static func bytes(_ n: Int, seed: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: (($0 &+ seed) &* 2_654_435_761) >> 11) } }

    /// Flips one byte of a stored file in place, as a failing disk would.
    static func flipByte(_ path: String, at offset: Int64) throws {
        let fd = open(path, O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        var b: UInt8 = 0
        try #require(pread(fd, &b, 1, off_t(offset)) == 1)
        b ^= 0x40
        try #require(pwrite(fd, &b, 1, off_t(offset)) == 1)
    }

    static func metric(_ text: String, _ name: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.split(separator: " ").last ?? "")
        }
        return nil
    }

    static func metrics(_ client: some TestClientProtocol) async throws -> String {
        String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
    }

    @Test func scrubQuarantinesACorruptArtifactWhichIsThenRefusedAndReported() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        let good = Self.bytes(300_000, seed: 1), bad = Self.bytes(200_000, seed: 2)
        try await f.app().test(.router) { client in
            let a = try decode(
                ArtifactInfo.self, try await client.execute(uri: "/v1/artifacts", method: .put, body: ByteBuffer(bytes: good)))
            let b = try decode(
                ArtifactInfo.self, try await client.execute(uri: "/v1/artifacts", method: .put, body: ByteBuffer(bytes: bad)))
            let stored = f.dir + "/data/artifacts/sha256/\(b.sha256.prefix(2))/\(b.sha256)"
            try Self.flipByte(stored, at: 123_456)

            let scrub = try await client.execute(uri: "/v1/artifact-quarantine/scrub", method: .post)
            #expect(scrub.status == .ok)
            let report = try decode(ScrubReport.self, scrub)
            #expect(report.checked == 2)
            #expect(report.quarantined == [b.sha256])

            // Out of the store, into the quarantine folder, byte for byte.
            #expect(!FileManager.default.fileExists(atPath: stored))
            let listed = try decode(QuarantineList.self, try await client.execute(uri: "/v1/artifact-quarantine", method: .get)).artifacts
            #expect(listed.map(\.sha256) == [b.sha256])
            let record = try #require(listed.first)
            #expect(record.foundBy == .scrub)
            #expect(record.size == Int64(bad.count))
            #expect(record.actualSha256 != b.sha256)
            #expect(record.path.hasPrefix(f.dir + "/data/"))
            var moved = try [UInt8](Data(contentsOf: URL(fileURLWithPath: record.path)))
            moved[123_456] ^= 0x40
            #expect(moved == bad)

            // Never served: a typed refusal, not bytes and not "unknown".
            let get = try await client.execute(uri: "/v1/artifacts/\(b.sha256)", method: .get)
            #expect(get.status == .gone)
            #expect(errorCode(get) == "artifact-quarantined")
            #expect(try await client.execute(uri: "/v1/artifacts/\(b.sha256)", method: .head).status == .gone)
            #expect(
                try await client.execute(uri: "/v1/artifacts/\(b.sha256)", method: .get, headers: [.range: "bytes=0-9"]).status == .gone)
            // The intact one is untouched.
            #expect(try await client.execute(uri: "/v1/artifacts/\(a.sha256)", method: .get).status == .ok)

            let m = try await Self.metrics(client)
            #expect(Self.metric(m, "edgefleet_artifacts_quarantined") == 1)
            #expect(Self.metric(m, "edgefleet_artifact_scrubs_total") == 1)
            #expect(Self.metric(m, "edgefleet_artifact_scrub_bytes_total") == Double(good.count + bad.count))

            // A second pass finds nothing new.
            #expect(
                try decode(ScrubReport.self, try await client.execute(uri: "/v1/artifact-quarantine/scrub", method: .post)).quarantined
                    .isEmpty)

            // Uploading the right bytes again puts the artifact back in service.
            #expect(try await client.execute(uri: "/v1/artifacts", method: .put, body: ByteBuffer(bytes: bad)).status == .created)
            let back = try await client.execute(uri: "/v1/artifacts/\(b.sha256)", method: .get)
            #expect(back.status == .ok)
            #expect(Array(back.body.readableBytesView) == bad)
            #expect(
                try decode(QuarantineList.self, try await client.execute(uri: "/v1/artifact-quarantine", method: .get)).artifacts.isEmpty)
            #expect(Self.metric(try await Self.metrics(client), "edgefleet_artifacts_quarantined") == 0)
        }
    }

    /// The pieces of a controller's artifact side on a temporary directory.
    struct Parts {
        let dir: String
        let store: SQLStore
        let artifacts: ArtifactStore
        let metrics = ControllerMetrics()
        let quarantine: ArtifactQuarantine

        init() async throws {
            dir = NSTemporaryDirectory() + "edgefleet-quarantine-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            store = try await SQLStore.sqlite(path: dir + "/fleet.sqlite")
            artifacts = try ArtifactStore(root: dir + "/artifacts")
            quarantine = ArtifactQuarantine(
                artifacts: artifacts, store: store, metrics: metrics, logger: Logger(label: "test"), clock: { 1_800_000_000 })
        }

        func put(_ bytes: [UInt8]) throws -> String {
            let tmp = dir + "/artifacts/incoming/" + UUID().uuidString
            try Data(bytes).write(to: URL(fileURLWithPath: tmp))
            return try artifacts.adopt(file: tmp).sha256
        }

        func cleanup() { try? FileManager.default.removeItem(atPath: dir) }
    }

    final class RecordingBuilder: DeltaBuilding {
        private let calls = Mutex<[String]>([])
        var count: Int { calls.withLock { $0.count } }
        func build(base: String, target: String, output: String) throws -> String {
            calls.withLock { $0.append(base) }
            try Data("delta".utf8).write(to: URL(fileURLWithPath: output))
            return "test"
        }
    }

    @Test func noDeltaIsBuiltFromACorruptBase() async throws {
        let p = try await Parts(); defer { p.cleanup() }
        let base = try p.put(Self.bytes(100_000, seed: 3)), target = try p.put(Self.bytes(100_000, seed: 4))
        try Self.flipByte(try #require(p.artifacts.path(base)), at: 99_999)
        let builder = RecordingBuilder()
        let planner = DeltaPlanner(
            store: p.store, artifacts: p.artifacts, builder: builder, logger: Logger(label: "test"),
            clock: { 1_800_000_000 }, quarantine: p.quarantine)
        try await planner.request(base: base, target: target)
        await planner.build(base: base, target: target)  // what the service loop does with the queued pair
        let record = try #require(try await p.store.delta(base: base, target: target))
        #expect(record.status == .failed)
        #expect(record.detail?.hasPrefix(QuarantinedArtifact.deltaDetailPrefix) == true)
        #expect(record.packageSha256 == nil)
        #expect(builder.count == 0)
        #expect(try await p.store.quarantinedArtifact(base)?.foundBy == .deltaBuild)
        #expect(try await p.store.quarantinedArtifact(target) == nil)
        #expect(p.artifacts.size(base) == nil)
        // Asked again, the planner does not queue it: the base is out of the store.
        try await planner.request(base: base, target: target)
        #expect(try await p.store.buildingDeltas().isEmpty)

        // From an intact base to the same target, the delta is built.
        let other = try p.put(Self.bytes(100_000, seed: 7))
        try await planner.request(base: other, target: target)
        await planner.build(base: other, target: target)
        #expect(builder.count == 1)
        #expect(try await p.store.delta(base: other, target: target)?.status == .ready)
    }

    @Test func quarantiningWithdrawsTheDeltasItTouches() async throws {
        let p = try await Parts(); defer { p.cleanup() }
        let x = String(repeating: "a", count: 64), y = String(repeating: "b", count: 64), z = String(repeating: "c", count: 64)
        let pkgXY = String(repeating: "d", count: 64), pkgYZ = String(repeating: "e", count: 64)
        for (b, t, pkg) in [(x, y, pkgXY), (y, z, pkgYZ)] {
            #expect(try await p.store.claimDelta(base: b, target: t, at: 1))
            try await p.store.finishDelta(
                DeltaRecord(baseSha256: b, targetSha256: t, status: .ready, packageSha256: pkg, packageSize: 10, createdAt: 1))
        }
        let q = QuarantinedArtifact(sha256: x, actualSha256: z, size: 1, quarantinedAt: 2, foundBy: .scrub, path: "/q")
        try await p.store.quarantine(q)
        #expect(try await p.store.delta(base: x, target: y)?.status == .failed)  // built from it: withdrawn
        #expect(try await p.store.delta(base: y, target: z)?.status == .ready)  // unrelated
        try await p.store.quarantine(
            QuarantinedArtifact(sha256: pkgYZ, actualSha256: z, size: 1, quarantinedAt: 2, foundBy: .scrub, path: "/q2"))
        #expect(try await p.store.delta(base: y, target: z) == nil)  // its package: gone, so it is built again on demand
        // Restored: the withdrawn delta can be built again.
        #expect(try await p.store.restoreQuarantined(x))
        #expect(try await p.store.delta(base: x, target: y) == nil)
        #expect(try await p.store.quarantinedArtifacts().map(\.sha256) == [pkgYZ])
        #expect(try await p.store.restoreQuarantined(x) == false)
    }

    @Test func aBurstOfDeviceReportsHashesTheArtifactOnce() async throws {
        let p = try await Parts(); defer { p.cleanup() }
        let sha = try p.put(Self.bytes(10_000, seed: 6))
        #expect(try await p.quarantine.checkReported(sha) == .intact)
        for _ in 0..<50 { #expect(try await p.quarantine.checkReported(sha) == nil) }
        let text = String(decoding: p.metrics.registry.emitToBuffer(), as: UTF8.self)
        #expect(Self.metric(text, "edgefleet_artifact_verifications_total") == 1)
    }

    @Test func scrubIntervalFlagSyntax() {
        #expect(ScrubInterval.seconds("6h") == 21_600)
        #expect(ScrubInterval.seconds("90") == 90)
        #expect(ScrubInterval.seconds("30m") == 1800)
        #expect(ScrubInterval.seconds("off") == 0)
        #expect(ScrubInterval.seconds("-1") == nil)
        #expect(ScrubInterval.seconds("soon") == nil)
    }

    /// A client that cuts a large download early is counted for what was sent, not for the
    /// whole range it asked for.
    @Test func bytesServedCountOnlyWhatWasSentBeforeTheClientLeft() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        var data = Data(capacity: 32 << 20)
        let block = Self.bytes(1 << 20, seed: 5)
        for i in 0..<32 { data.append(contentsOf: block); data.append(UInt8(i)) }
        let info = try f.placeArtifact(data)
        try await f.app().test(.live) { client in
            let port = try #require(client.port)
            let received = try await onThread { try Self.leaveEarly(port: port, path: "/v1/artifacts/\(info.sha256)", after: 2 << 20) }
            #expect(received >= 2 << 20 && received < info.size)

            // The server stops writing once it sees the connection gone: wait until the count settles.
            var counted = -1.0, previous = -2.0
            let deadline = ContinuousClock.now + .seconds(10)
            while counted != previous, ContinuousClock.now < deadline {
                previous = counted
                try await Task.sleep(for: .milliseconds(200))
                counted = Self.metric(try await Self.metrics(client), "edgefleet_artifact_bytes_served_total") ?? -1
            }
            // At least what the client read; at most that plus what the socket buffers held when it
            // left: its receive buffer is small, the server's send buffer at most tcp_wmem's maximum.
            let sendBufferMax =
                (try? String(contentsOfFile: "/proc/sys/net/ipv4/tcp_wmem", encoding: .utf8))
                .flatMap { $0.split(whereSeparator: \.isWhitespace).last.flatMap { Double($0) } } ?? Double(4 << 20)
            #expect(counted >= Double(received))
            #expect(counted < Double(info.size))
            #expect(
                counted <= Double(received) + sendBufferMax + Double(4 << 20),
                "counted \(counted) of \(info.size), the client read \(received)")
        }
    }

    /// GETs `path` over a socket with a small receive buffer, reads `after` bytes of the body and
    /// closes: a device that goes away mid-download. Returns the body bytes it read.
    static func leaveEarly(port: Int, path: String, after: Int64) throws -> Int64 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var small: Int32 = 64 << 10
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        try #require(connected)
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        try #require(send(fd, request, request.count, 0) == request.count)
        var head: [UInt8] = [], body: Int64 = 0, inBody = false
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        let blank: [UInt8] = [13, 10, 13, 10]
        while body < after {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            if inBody { body += Int64(n); continue }
            head += buffer[0..<n]
            if let end = (0..<max(0, head.count - 3)).first(where: { head[$0..<$0 + 4].elementsEqual(blank) }) {
                inBody = true
                body = Int64(head.count - end - 4)
            }
        }
        return body
    }
}

final class CutFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
