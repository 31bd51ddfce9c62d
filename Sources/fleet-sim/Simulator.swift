import AsyncHTTPClient
import FleetCore
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Plays N devices against the controller's device API, open loop: check-in `k` of a run is sent
/// at `start + k / rate` whether or not earlier ones were answered. Device `d` takes every slot
/// at its position in a fixed shuffle of the fleet, so each device has its own phase in the poll
/// interval (devices ÷ rate) and checks in once per interval.
final class Simulator: Sendable {
    struct Options: Sendable {
        var url: String
        var devices: Int
        var idPrefix: String
        var connections: Int
        var timeoutSeconds: Double
        var maxInFlight: Int
        var download: Bool
        var seed: UInt64
    }

    let options: Options
    private let client: HTTPClient
    /// Check-ins and event posts over plain HTTP (nil for https: they go through `client`).
    private let connections: DeviceConnections?
    private let book = DeviceBook()
    private let order: [Int32]
    private let hostHeader: String
    /// Slots already played: a later run (a find-max step, or another process with --state) goes
    /// on where the last one stopped, so devices keep their phase.
    private let nextSlot = Mutex(0)

    init(_ options: Options) {
        self.options = options
        var config = HTTPClient.Configuration()
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: options.connections)
        config.httpVersion = .http1Only
        config.decompression = .disabled
        // A request queued for a connection waits as long as any request may take (open loop: an
        // overloaded controller shows as latency, then as `timeout-queued`).
        config.timeout = .init(connect: .milliseconds(Int64(options.timeoutSeconds * 1000)))
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        var rng = SeededGenerator(seed: options.seed)
        var o = (0..<options.devices).map { Int32($0) }
        o.shuffle(using: &rng)
        order = o
        let url = URL(string: options.url)
        hostHeader = url.map { u in (u.host ?? "") + (u.port.map { ":\($0)" } ?? "") } ?? ""
        if let url, url.scheme == "http", let host = url.host {
            connections = DeviceConnections(host: host, port: url.port ?? 80, hostHeader: hostHeader, connections: options.connections)
        } else {
            connections = nil
        }
    }

    func shutdown() async {
        connections?.shutdown()
        try? await client.shutdown()
    }

    func load(state path: String) throws {
        let slot = try book.load(from: path)
        nextSlot.withLock { $0 = slot }
    }
    func save(state path: String) throws { try book.save(to: path, nextSlot: nextSlot.withLock { $0 }) }

    /// Check-ins at `rate` per second for `duration` seconds; returns once every request has been
    /// answered or has failed.
    func run(rate: Double, duration: Double) async -> RunSummary {
        let recorder = Recorder()
        let clock = ContinuousClock()
        let total = Int((rate * duration).rounded())
        let first = nextSlot.withLock { s in
            defer { s += total }; return s
        }
        let cpuBefore = processCPUSeconds()
        let start = clock.now.advanced(by: .milliseconds(20))
        func slotTime(_ i: Int) -> ContinuousClock.Instant { start.advanced(by: .nanoseconds(Int64(Double(i) * 1e9 / rate))) }
        await withDiscardingTaskGroup { group in
            var i = 0
            while i < total {
                let now = clock.now
                while i < total, slotTime(i) <= now {
                    let at = slotTime(i)
                    let device = Int(order[(first + i) % order.count])
                    if recorder.inFlight >= options.maxInFlight {
                        recorder.dropped("overload")  // not sent: more than --max-in-flight outstanding
                    } else {
                        recorder.scheduled(lagMicros: micros(now - at))
                        group.addTask { await self.checkIn(device, scheduled: at, recorder) }
                    }
                    i += 1
                }
                if i < total { try? await Task.sleep(until: slotTime(i), tolerance: .microseconds(100), clock: clock) }
            }
        }
        let s = recorder.state.withLock { $0 }
        let elapsed = max(duration, s.lastCompletion.map { seconds($0 - start) } ?? 0)
        return RunSummary(
            url: options.url, devices: options.devices, connections: options.connections, rate: rate,
            duration: duration, elapsed: elapsed, cpuSeconds: processCPUSeconds() - cpuBefore, state: s)
    }

    private func checkIn(_ index: Int, scheduled: ContinuousClock.Instant, _ recorder: Recorder) async {
        let clock = ContinuousClock()
        let id = SimulatedDevice.id(prefix: options.idPrefix, index: index)
        let device = book.read(index)
        let path = DeviceAPI.checkInPath(id)
        do {
            let facts = SimulatedDevice.storedFacts(prefix: options.idPrefix, index: index)
            var body = try DeviceAPI.checkInBody(device: device, facts: facts)
            var (status, answer, responseHTTP) = try await post(path, body)
            guard (200..<300).contains(status) else { recorder.failed("http-\(status)", at: clock.now); return }
            var (summary, todo, held) = try DeviceAPI.newAssignments(in: answer, device: device)
            if summary.resend != nil {
                // The controller does not know these facts (or what the device runs): once more, whole.
                body = try DeviceAPI.checkInBody(device: device, facts: facts, full: true)
                (status, answer, responseHTTP) = try await post(path, body)
                guard (200..<300).contains(status) else { recorder.failed("http-\(status)", at: clock.now); return }
                (summary, todo, held) = try DeviceAPI.newAssignments(in: answer, device: device)
                guard summary.resend == nil else { recorder.failed("resend-twice", at: clock.now); return }
            }
            let end = clock.now
            book.update(index) { d in
                d.held = held
                d.sentInstalled = device.installed
            }
            recorder.checkIn(
                latencyMicros: micros(end - scheduled),
                bytes: (body.count, answer.count, requestHTTP(path, body.count), responseHTTP), idle: todo.isEmpty, at: end)
            if !todo.isEmpty || !device.outbox.isEmpty { await install(index, id, todo, recorder) }
        } catch {
            recorder.failed(Self.kind(error), at: clock.now)
        }
    }

    /// What an agent does with new assignments: (optionally) downloads, installs, and reports
    /// started → … → committed in one batch, as `fleet-agent` flushes its outbox after the cycle.
    private func install(_ index: Int, _ id: String, _ todo: [AssignmentSummary], _ recorder: Recorder) async {
        book.update(index) { d in for a in todo { d.installing[a.model] = a.sha256 } }
        recorder.install(started: todo.count)
        var done: [AssignmentSummary] = []
        for a in todo {
            if options.download, let url = a.package.url {
                do {
                    recorder.download(bytes: try await fetch(url))
                } catch {
                    recorder.downloadFailed(Self.kind(error))
                    book.update(index) { $0.installing[a.model] = nil }  // tried again at the next check-in
                    continue
                }
            }
            done.append(a)
        }
        let now = Int64(Date().timeIntervalSince1970)
        let events = book.update(index) { d in
            for a in done { d.recordInstall(a, at: now) }
            return Array(d.outbox.prefix(EventBatch.maxEvents))
        }
        guard !events.isEmpty else { return }
        let clock = ContinuousClock()
        let sent = clock.now
        do {
            let (status, answer, _) = try await post(DeviceAPI.eventsPath(id), try DeviceAPI.eventsBody(events))
            let latency = micros(clock.now - sent)
            guard (200..<300).contains(status) else {
                recorder.eventPost(latencyMicros: latency, events: 0, error: "http-\(status)"); return
            }
            let ack = try DeviceAPI.ack(answer)
            book.update(index) { $0.acknowledge(through: ack.ackedThrough) }
            recorder.eventPost(latencyMicros: latency, events: events.count, error: nil)
            recorder.install(reported: events.filter { $0.kind == .committed && $0.seq <= ack.ackedThrough }.count)
        } catch {
            recorder.eventPost(latencyMicros: nil, events: 0, error: Self.kind(error))
        }
    }

    /// POSTs JSON; returns the status, the body and the size of the whole HTTP response message.
    private func post(_ path: String, _ body: Data) async throws -> (UInt, Data, Int) {
        if let connections {
            let r = try await connections.post(
                path, body: ByteBuffer(bytes: body), timeout: .milliseconds(Int64(options.timeoutSeconds * 1000)))
            return (r.status, Data(r.body.readableBytesView), r.headerBytes + r.body.readableBytes)
        }
        var request = HTTPClientRequest(url: options.url + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .milliseconds(Int64(options.timeoutSeconds * 1000)))
        let buffer = try await response.body.collect(upTo: 16 << 20)
        return (
            response.status.code, Data(buffer.readableBytesView),
            DeviceConnections.headBytes(response.status, response.headers) + buffer.readableBytes
        )
    }

    /// The request as it goes on the wire: start line, the headers this client sends, the body.
    private func requestHTTP(_ path: String, _ bodyBytes: Int) -> Int {
        "POST \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nContent-Type: application/json\r\nContent-Length: \(bodyBytes)\r\n\r\n".utf8.count
            + bodyBytes
    }

    /// Downloads an artifact and throws the bytes away; returns how many arrived.
    private func fetch(_ url: String) async throws -> Int64 {
        let full = url.hasPrefix("http://") || url.hasPrefix("https://") ? url : options.url + url
        let response = try await client.execute(HTTPClientRequest(url: full), timeout: .seconds(600))
        guard response.status.code / 100 == 2 else { throw DownloadStatus(code: response.status.code) }
        var n: Int64 = 0
        for try await chunk in response.body { n += Int64(chunk.readableBytes) }
        return n
    }

    struct DownloadStatus: Error { let code: UInt }

    /// A short, stable name for how a request failed: what the summary counts errors by.
    static func kind(_ error: any Error) -> String {
        if let e = error as? HTTPClientError {
            switch e {
            case .deadlineExceeded, .readTimeout: return "timeout"
            case .connectTimeout: return "connect-timeout"
            case .getConnectionFromPoolTimeout: return "timeout-queued"
            case .remoteConnectionClosed: return "connection-closed"
            case .cancelled: return "cancelled"
            default: return "client: \(e)"
            }
        }
        if let e = error as? DownloadStatus { return "http-\(e.code)" }
        if let e = error as? DeviceConnections.Failure { return e == .timeout ? "timeout" : "connection-closed" }
        if error is DecodingError || error is SimError { return "bad-answer" }
        if let e = error as? IOError { return "io: " + String(cString: strerror(e.errnoCode)) }
        if error is NIOConnectionError { return "connect" }
        if let e = error as? ChannelError { return "channel: \(e)" }
        return String(describing: type(of: error))
    }
}

func micros(_ d: Duration) -> UInt64 {
    let (s, atto) = d.components
    guard s >= 0 else { return 0 }
    return UInt64(s) * 1_000_000 + UInt64(atto / 1_000_000_000_000)
}

/// User and system CPU time of this process so far, every thread.
func processCPUSeconds() -> Double {
    var usage = rusage()
    guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
    func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return s(usage.ru_utime) + s(usage.ru_stime)
}

func seconds(_ d: Duration) -> Double {
    let (s, atto) = d.components
    return Double(s) + Double(atto) / 1e18
}
