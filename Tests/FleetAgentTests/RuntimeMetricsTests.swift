import FleetCore
import Foundation
import Testing
@testable import FleetAgent
#if canImport(Glibc)
    import Glibc
#endif

@Suite("Runtime metrics: the collector and the agent's local endpoint")
struct RuntimeMetricsTests {
    @Test func percentilesAndErrorRateComeFromTheWindowsLatencies() throws {
        let c = RuntimeCollector()
        try c.record(InferenceReport(model: "m", latenciesMs: (1...60).map(Double.init), errors: 3))
        try c.record(InferenceReport(model: "m", latenciesMs: (61...100).map(Double.init), errors: 2))
        let m = try #require(c.drain()["m"])
        #expect(m.latencyP50Ms == 50)
        #expect(m.latencyP95Ms == 95)
        #expect(m.requests == 100)
        #expect(m.errorRate == 0.05)
        #expect(c.drain().isEmpty, "a drained window starts again empty")
    }

    @Test func summariesAreWeightedByTheirRequests() throws {
        let c = RuntimeCollector()
        try c.record(InferenceReport(model: "m", latencyP50Ms: 10, latencyP95Ms: 20, requests: 300, crashes: 1))
        try c.record(InferenceReport(model: "m", latencyP50Ms: 20, latencyP95Ms: 40, requests: 100))
        let m = try #require(c.drain()["m"])
        #expect(m.latencyP50Ms == 12.5)
        #expect(m.latencyP95Ms == 25)
        #expect(m.crashes == 1)
        #expect(m.errorRate == 0)
    }

    @Test func theReservoirBoundsMemoryAndStaysFair() throws {
        let c = RuntimeCollector()
        // 50,000 latencies, uniform over 0..<1000: the sampled median must stay near 500.
        for chunk in 0..<5 {
            try c.record(InferenceReport(model: "m", latenciesMs: (0..<10_000).map { Double(($0 * 7919 + chunk * 31) % 1000) }))
        }
        let m = try #require(c.drain()["m"])
        #expect(m.requests == 50_000)
        let p50 = try #require(m.latencyP50Ms)
        #expect(abs(p50 - 500) < 40, "p50 \(p50)")
        #expect(RuntimeCollector.reservoirSize == 4096)
    }

    @Test(arguments: [
        InferenceReport(model: "../m", latenciesMs: [1]),
        InferenceReport(model: "m", latenciesMs: [-1]),
        InferenceReport(model: "m", requests: 1, errors: 2),
        InferenceReport(model: "m", latencyP50Ms: 10, latencyP95Ms: 5),
        InferenceReport(model: "m"),
        InferenceReport(model: "m", latenciesMs: Array(repeating: 1, count: InferenceReport.maxLatencies + 1)),
        InferenceReport(model: "m", requests: -3)
    ])
    func badReportsAreRefusedAndLeaveNothing(_ r: InferenceReport) throws {
        let c = RuntimeCollector()
        #expect(r.problem() != nil)
        #expect(throws: RuntimeCollector.RecordError.self) { try c.record(r) }
        #expect(c.drain().isEmpty)
    }

    @Test func atMostSixtyFourModelsPerWindow() throws {
        let c = RuntimeCollector()
        for i in 0..<RuntimeCollector.maxModels { try c.record(InferenceReport(model: "m\(i)", latenciesMs: [1])) }
        #expect(throws: RuntimeCollector.RecordError.tooManyModels) { try c.record(InferenceReport(model: "one-more", latenciesMs: [1])) }
        try c.record(InferenceReport(model: "m0", latenciesMs: [2]))  // a known model still counts
        #expect(c.drain().count == RuntimeCollector.maxModels)
    }

    @Test func listenAddressesAreLoopbackOnly() {
        #expect(MetricsListenAddress.parse("127.0.0.1:7311") == .tcp(host: "127.0.0.1", port: 7311))
        #expect(MetricsListenAddress.parse("localhost:0") == .tcp(host: "127.0.0.1", port: 0))
        #expect(MetricsListenAddress.parse("[::1]:7311") == .tcp(host: "::1", port: 7311))
        #expect(MetricsListenAddress.parse("unix:/run/edgefleet/metrics.sock") == .unix(path: "/run/edgefleet/metrics.sock"))
        for bad in [
            "0.0.0.0:7311", "10.0.0.5:7311", "example.com:80", "127.0.0.1", "127.0.0.1:99999", "unix:relative.sock", "[::]:7311",
            "127.0.0.999:1"
        ] {
            #expect(MetricsListenAddress.parse(bad) == nil, "\(bad)")
        }
    }

    // MARK: the endpoint over real sockets

    struct Endpoint {
        let collector = RuntimeCollector()
        let endpoint: MetricsEndpoint
        let port: UInt16
        init() throws {
            endpoint = try MetricsEndpoint(
                listen: .tcp(host: "127.0.0.1", port: 0), collector: collector,
                knowsModel: { $0 == "minilm" }, status: { Array(#"{"deviceId":"d1"}"#.utf8) })
            guard case .tcp(_, let p) = endpoint.address else { throw AgentError("not tcp") }
            #expect(p != 0)
            port = p
        }
    }

    /// Sends raw bytes and returns the status code and body of the answer.
    static func exchange(port: UInt16? = nil, unix: String? = nil, _ request: String) throws -> (Int, String) {
        let fd: Int32
        if let unix {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { buf in for (i, b) in unix.utf8.enumerated() { buf[i] = b } }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard rc == 0 else { close(fd); throw AgentError("connect \(unix): \(errno)") }
        } else {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port!.bigEndian
            inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard rc == 0 else { close(fd); throw AgentError("connect: \(errno)") }
        }
        defer { close(fd) }
        let bytes = Array(request.utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        let text = String(decoding: out, as: UTF8.self)
        let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        return (status, body)
    }

    static func post(_ body: String, path: String = "/v1/metrics") -> String {
        "POST \(path) HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    @Test func reportsAreAcceptedWholeOrNotAtAll() throws {
        let e = try Endpoint()
        defer { e.endpoint.stop() }
        let ok = try Self.exchange(port: e.port, Self.post(#"{"model":"minilm","latenciesMs":[10,20,30],"errors":1}"#))
        #expect(ok.0 == 202)
        #expect(ok.1 == #"{"accepted":1}"#)
        // The second report of this array is bad, so neither is taken.
        let mixed = try Self.exchange(
            port: e.port, Self.post(#"[{"model":"minilm","latenciesMs":[99]},{"model":"minilm","requests":1,"errors":5}]"#))
        #expect(mixed.0 == 400)
        #expect(mixed.1.contains("invalid-report"))
        let m = try #require(e.collector.drain()["minilm"])
        #expect(m.requests == 3)
        #expect(m.latencyP50Ms == 20)
    }

    @Test func badRequestsGetTypedErrors() throws {
        let e = try Endpoint()
        defer { e.endpoint.stop() }
        #expect(try Self.exchange(port: e.port, Self.post(#"{"model":"other","latenciesMs":[1]}"#)).0 == 404)
        let malformed = try Self.exchange(port: e.port, Self.post(#"{"model":"minilm","latenciesMs":[1],"latenciesMs":[2]}"#))
        #expect(malformed.0 == 400, "duplicate keys are refused")
        #expect(malformed.1.contains("malformed"))
        #expect(try Self.exchange(port: e.port, Self.post("not json")).0 == 400)
        #expect(try Self.exchange(port: e.port, "POST /v1/metrics HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n").0 == 413)
        #expect(try Self.exchange(port: e.port, "POST /v1/metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").0 == 411)
        #expect(try Self.exchange(port: e.port, "DELETE /v1/metrics HTTP/1.1\r\n\r\n").0 == 405)
        #expect(try Self.exchange(port: e.port, "GET /nowhere HTTP/1.1\r\n\r\n").0 == 404)
        #expect(try Self.exchange(port: e.port, "garbage\r\n\r\n").0 == 400)
        #expect(
            try Self.exchange(port: e.port, "GET /v1/status HTTP/1.1\r\n" + String(repeating: "X-Pad: aaaaaaaaaa\r\n", count: 800)).0 == 431
        )
        #expect(e.collector.drain().isEmpty, "nothing bad was recorded")
        // The endpoint still serves after all of that.
        let status = try Self.exchange(port: e.port, "GET /v1/status HTTP/1.1\r\n\r\n")
        #expect(status.0 == 200)
        #expect(status.1 == #"{"deviceId":"d1"}"#)
    }

    @Test func aUnixSocketServesTheSameAPIAndIsRemovedOnStop() throws {
        let dir = NSTemporaryDirectory() + "ef-sock-" + String(UInt32.random(in: 0...UInt32.max))
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/metrics.sock"
        let c = RuntimeCollector()
        let e = try MetricsEndpoint(listen: .unix(path: path), collector: c, knowsModel: { _ in true }, status: { [] })
        #expect(try Self.exchange(unix: path, Self.post(#"{"model":"m","crashes":2}"#)).0 == 202)
        e.stop()
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(c.drain()["m"]?.crashes == 2)
        // A regular file at the path is not replaced.
        FileManager.default.createFile(atPath: path, contents: Data("keep".utf8))
        #expect(throws: MetricsEndpointError.self) {
            _ = try MetricsEndpoint(listen: .unix(path: path), collector: c, knowsModel: { _ in true }, status: { [] })
        }
        #expect(FileManager.default.contents(atPath: path) == Data("keep".utf8))
    }

    @Test func aCycleWithoutAControllerKeepsTheMetricsInTheOutboxOnDisk() throws {
        let dir = NSTemporaryDirectory() + "ef-agent-" + String(UInt32.random(in: 0...UInt32.max))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = SigningKey(role: .root)
        var keys: [Role: SigningKey] = [:]
        for role in Role.allCases { keys[role] = role == .root ? key : SigningKey(role: role) }
        let root = RootMetadata(version: 1, expiresAt: Int64(Date().timeIntervalSince1970) + 86_400, roleKeys: keys)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FleetJSON.encode(try Envelope.sign(root, type: PayloadType.root, keys: [key])).write(
            to: URL(fileURLWithPath: dir + "/root.json"))
        // Port 9 on loopback: nothing listens, the check-in fails at once.
        let agent = try Agent(
            options: AgentOptions(
                controllerURL: "http://127.0.0.1:9", stateDirectory: dir + "/state",
                modelsDirectory: dir + "/models", rootFile: dir + "/root.json", deviceId: "d1"),
            logger: .init(label: "test"))
        try agent.runtime.record(InferenceReport(model: "minilm", latenciesMs: [5, 7, 9]))
        #expect(!agent.cycle().ok)
        // Read back from the file as the next start would.
        let saved = try OutboxFile.open(dir + "/state/" + OutboxFile.name).outbox
        let event = try #require(saved.pending.last)
        #expect(event.kind == "metrics")
        #expect(event.model == "minilm")
        let m = try #require(event.metrics)
        #expect(event.detail == nil)
        #expect(m.latencyP50Ms == 7)
        #expect(m.requests == 3)
    }
}

@Suite("Runtime metrics: hostile local clients")
struct RuntimeMetricsAbuseTests {
    @Test func countsSaturateInsteadOfCrashingTheAgent() throws {
        let c = RuntimeCollector()
        let huge = InferenceReport(model: "m", requests: 1 << 40, errors: 1 << 40, crashes: 1 << 40)
        for _ in 0..<20_000 { try c.record(huge) }  // 2^54 in all: past the cap, far from Int.max
        let m = try #require(c.drain()["m"])
        #expect(m.requests == RuntimeCollector.countCap)
        #expect(m.crashes == RuntimeCollector.countCap)
        #expect(m.errorRate == 1)
    }

    @Test func errorsWithoutRequestsDoNotInflateTheErrorRate() throws {
        let c = RuntimeCollector()
        try c.record(InferenceReport(model: "m", errors: 100))
        try c.record(InferenceReport(model: "m", requests: 10, errors: 1))
        let m = try #require(c.drain()["m"])
        #expect(m.errorRate == 0.1)
    }

    @Test func manySummariesKeepTheirWeightedMean() throws {
        let c = RuntimeCollector()
        for i in 0..<50_000 { try c.record(InferenceReport(model: "m", latencyP50Ms: i % 2 == 0 ? 10 : 30, requests: 1)) }
        let m = try #require(c.drain()["m"])
        #expect(m.latencyP50Ms == 20)
        #expect(m.requests == 50_000)
    }

    @Test func aClientThatDripsBytesIsCutOffAndTheNextOneIsServed() throws {
        let e = try RuntimeMetricsTests.Endpoint()
        defer { e.endpoint.stop() }
        // Headers that never end: the deadline answers 408 and closes the connection.
        let stuck = try RuntimeMetricsTests.exchange(port: e.port, "POST /v1/metrics HTTP/1.1\r\nContent-Length: 10\r\n")
        #expect(stuck.0 == 408)
        let ok = try RuntimeMetricsTests.exchange(port: e.port, RuntimeMetricsTests.post(#"{"model":"minilm","latenciesMs":[1]}"#))
        #expect(ok.0 == 202)
    }

    @Test func stopCutsAConnectionThatSendsNothing() throws {
        let c = RuntimeCollector()
        let e = try MetricsEndpoint(listen: .tcp(host: "127.0.0.1", port: 0), collector: c, knowsModel: { _ in true }, status: { [] })
        guard case .tcp(_, let port) = e.address else { throw AgentError("not tcp") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(rc == 0)
        e.stop()  // returns although the connection above never sent a byte
        #expect(throws: (any Error).self) { try RuntimeMetricsTests.exchange(port: port, "GET /v1/status HTTP/1.1\r\n\r\n") }
    }
}
