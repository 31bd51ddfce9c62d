import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The simulator's plain-HTTP connections for check-ins and event posts: HTTP/1.1 keep-alive, one
/// request at a time on each (as an agent's own connection), requests beyond them waiting their
/// turn in order (for as long as it takes: `--max-in-flight` bounds how many wait; a request's
/// time-out counts from when it is sent). It does a small part of a general-purpose client's work
/// per request, so that more of a shared machine is left to what is measured. Downloads, and
/// https, go through AsyncHTTPClient.
final class DeviceConnections: Sendable {
    struct Response {
        var status: UInt
        var body: ByteBuffer
        /// The start line and headers as received, in bytes.
        var headerBytes: Int
        var keepAlive: Bool
    }

    /// How a request failed on this side.
    enum Failure: Error, Equatable {
        /// No whole answer within the request's time.
        case timeout
        /// The server closed the connection before the answer was whole.
        case closed
    }

    private let host: String
    private let port: Int
    private let hostHeader: String
    private let maxConnections: Int
    private let group: any EventLoopGroup

    private struct State {
        var idle: [Connection] = []
        var open = 0
        /// Requests waiting for a connection: handed an idle one, or nil to open one of their own.
        var waiting = CircularBuffer<CheckedContinuation<Connection?, Never>>()
    }
    private let state = Mutex(State())

    /// `hostHeader`: the Host header sent, as the simulator counts it in its request bytes.
    init(
        host: String, port: Int, hostHeader: String, connections: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.host = host; self.port = port; self.hostHeader = hostHeader; self.maxConnections = connections; self.group = group
    }

    /// The bytes of a response's start line and headers, with the empty line that ends them.
    static func headBytes(_ status: HTTPResponseStatus, _ headers: HTTPHeaders) -> Int {
        "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n".utf8.count
            + headers.reduce(2) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
    }

    /// POSTs `body` as JSON to `path`; the whole answer, or `Failure.timeout` after `timeout`.
    func post(_ path: String, body: ByteBuffer, timeout: TimeAmount) async throws -> Response {
        let connection = try await acquire()
        do {
            let response = try await connection.send(post: path, host: hostHeader, body: body, timeout: timeout)
            release(response.keepAlive ? connection : connection.closing())
            return response
        } catch {
            release(connection.closing())
            throw error
        }
    }

    /// Closes the idle connections (requests under way finish on theirs, which then close).
    func shutdown() {
        let idle = state.withLock { s in
            defer { s.idle = [] }
            s.open -= s.idle.count
            return s.idle
        }
        for c in idle { c.channel.close(promise: nil) }
    }

    private func acquire() async throws -> Connection {
        let handed: Connection? = await withCheckedContinuation { continuation in
            let now: Connection?? = state.withLock { s in
                // One the server closed while it was idle (keep-alive time out) is passed over.
                while let c = s.idle.popLast() {
                    if c.channel.isActive { return .some(c) }
                    s.open -= 1
                }
                if s.open < maxConnections {
                    s.open += 1
                    return .some(nil)
                }
                s.waiting.append(continuation)
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
        if let handed { return handed }
        do {
            return try await connect()
        } catch {
            release(nil)
            throw error
        }
    }

    /// A connection back after its request; nil (or one that closed): its place is free, and a
    /// waiting request opens a new one in it.
    private func release(_ connection: Connection?) {
        let usable = connection.flatMap { $0.channel.isActive ? $0 : nil }
        let (waiter, handed): (CheckedContinuation<Connection?, Never>?, Connection?) = state.withLock { s in
            if let w = s.waiting.popFirst() { return (w, usable) }
            if let usable { s.idle.append(usable) } else { s.open -= 1 }
            return (nil, nil)
        }
        waiter?.resume(returning: handed)
    }

    private func connect() async throws -> Connection {
        let collector = ResponseCollector()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: host, port: port).get()
        return Connection(channel: channel, collector: collector)
    }
}

/// One keep-alive connection and the handler that gathers its answers.
private final class Connection: Sendable {
    let channel: any Channel
    let collector: ResponseCollector

    init(channel: any Channel, collector: ResponseCollector) { self.channel = channel; self.collector = collector }

    /// This connection closed, for a caller that will not use it again.
    func closing() -> Connection? {
        channel.close(promise: nil)
        return nil
    }

    func send(post path: String, host: String, body: ByteBuffer, timeout: TimeAmount) async throws -> DeviceConnections.Response {
        let promise = channel.eventLoop.makePromise(of: DeviceConnections.Response.self)
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        let channel = self.channel, collector = self.collector, request = head
        channel.eventLoop.execute {
            guard collector.expect(promise) else { return }
            let timer = channel.eventLoop.scheduleTask(in: timeout) {
                collector.fail(DeviceConnections.Failure.timeout)
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            channel.write(HTTPClientRequestPart.head(request), promise: nil)
            channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        return try await promise.futureResult.get()
    }
}

/// Gathers one answer at a time into the promise of the request under way. Touched only on its
/// channel's event loop.
private final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private var pending: EventLoopPromise<DeviceConnections.Response>?
    private var response = DeviceConnections.Response(status: 0, body: ByteBuffer(), headerBytes: 0, keepAlive: true)
    private var active = true

    /// Takes the promise of the next request; false (and the promise failed) on a closed connection.
    func expect(_ promise: EventLoopPromise<DeviceConnections.Response>) -> Bool {
        guard active else {
            promise.fail(DeviceConnections.Failure.closed)
            return false
        }
        pending = promise
        return true
    }

    func fail(_ error: any Error) {
        let p = pending
        pending = nil
        p?.fail(error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            response = DeviceConnections.Response(
                status: head.status.code, body: ByteBuffer(), headerBytes: DeviceConnections.headBytes(head.status, head.headers),
                keepAlive: head.isKeepAlive)
        case .body(var part):
            response.body.writeBuffer(&part)
        case .end:
            let p = pending
            pending = nil
            p?.succeed(response)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        fail(DeviceConnections.Failure.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }
}
