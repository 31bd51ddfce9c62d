import Dispatch
import FleetCore
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

/// Where the local metrics endpoint listens: a loopback TCP port or a Unix socket. It has no
/// authentication, so anything but loopback is refused.
public enum MetricsListenAddress: Equatable, Sendable, CustomStringConvertible {
    case tcp(host: String, port: UInt16)
    case unix(path: String)

    /// `127.0.0.1:7311`, `[::1]:7311`, `localhost:7311` or `unix:/run/edgefleet/metrics.sock`.
    public static func parse(_ s: String) -> MetricsListenAddress? {
        if s.hasPrefix("unix:") {
            let path = String(s.dropFirst(5))
            guard path.hasPrefix("/"), path.utf8.count < 100 else { return nil }
            return .unix(path: path)
        }
        guard let colon = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: colon)...]) else { return nil }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "localhost" { host = "127.0.0.1" }
        guard host == "::1" || host.hasPrefix("127.") else { return nil }
        var probe = in_addr()
        if host != "::1" { guard inet_pton(AF_INET, host, &probe) == 1 else { return nil } }
        return .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let h, let p): h.contains(":") ? "[\(h)]:\(p)" : "\(h):\(p)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

public struct MetricsEndpointError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The agent's local endpoint for the inference service on the same device:
///
///     curl -s -X POST http://127.0.0.1:7311/v1/metrics -d '{"model":"minilm","latenciesMs":[12.4,15.0],"errors":0}'
///
/// `POST /v1/metrics` takes one `InferenceReport` (or an array of them); `GET /v1/status` says
/// what the device runs. One request per connection, small bodies, and a whole request must
/// arrive within `requestDeadline` seconds: a slow or stuck client is cut off then.
public final class MetricsEndpoint: Sendable {
    public static let maxBody = 256 << 10
    static let maxHeader = 8 << 10
    static let maxReportsPerRequest = 100
    /// Seconds a connection has to deliver its whole request.
    static let requestDeadline = 3.0

    let collector: RuntimeCollector
    let knowsModel: @Sendable (String) -> Bool
    let status: @Sendable () -> [UInt8]
    private let fd: Int32
    public let address: MetricsListenAddress
    private let stopped = Atomic<Bool>(false)
    /// The connection being served (-1: none), so that `stop()` can cut it.
    private let serving = Atomic<Int32>(-1)
    private let finished = DispatchSemaphore(value: 0)

    /// Binds and starts serving on a thread of its own.
    public init(
        listen: MetricsListenAddress, collector: RuntimeCollector, knowsModel: @escaping @Sendable (String) -> Bool,
        status: @escaping @Sendable () -> [UInt8]
    ) throws {
        self.collector = collector; self.knowsModel = knowsModel; self.status = status
        var bound = listen
        let sock: Int32
        switch listen {
        case .unix(let path):
            sock = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard sock >= 0 else { throw MetricsEndpointError(message: "socket: \(String(cString: strerror(errno)))") }
            // A socket file left by an earlier run is replaced; anything else at the path is not.
            var st = stat()
            if lstat(path, &st) == 0 {
                guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                    close(sock)
                    throw MetricsEndpointError(message: "\(path) exists and is not a socket")
                }
                unlink(path)
            }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { buf in
                for (i, b) in path.utf8.enumerated() { buf[i] = b }
            }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard rc == 0 else {
                let e = String(cString: strerror(errno)); close(sock)
                throw MetricsEndpointError(message: "bind \(path): \(e)")
            }
            chmod(path, 0o660)
        case .tcp(let host, let port):
            let v6 = host.contains(":")
            sock = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard sock >= 0 else { throw MetricsEndpointError(message: "socket: \(String(cString: strerror(errno)))") }
            var one: Int32 = 1
            setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var rc: Int32
            if v6 {
                var addr = sockaddr_in6()
                addr.sin6_family = sa_family_t(AF_INET6)
                addr.sin6_port = port.bigEndian
                inet_pton(AF_INET6, host, &addr.sin6_addr)
                rc = withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(sock, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                    }
                }
            } else {
                var addr = sockaddr_in()
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_port = port.bigEndian
                inet_pton(AF_INET, host, &addr.sin_addr)
                rc = withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(sock, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            guard rc == 0 else {
                let e = String(cString: strerror(errno)); close(sock)
                throw MetricsEndpointError(message: "bind \(listen): \(e)")
            }
            if port == 0 {
                var ss = sockaddr_storage()
                var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                _ = withUnsafeMutablePointer(to: &ss) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(sock, $0, &len) }
                }
                let actual: UInt16 = withUnsafePointer(to: &ss) { p in
                    v6
                        ? p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
                        : p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
                }
                bound = .tcp(host: host, port: actual)
            }
        }
        guard Glibc.listen(sock, 16) == 0 else {
            let e = String(cString: strerror(errno)); close(sock)
            throw MetricsEndpointError(message: "listen \(listen): \(e)")
        }
        fd = sock
        address = bound
        let me = self
        DispatchQueue(label: "edgefleet.metrics-endpoint").async { me.serve() }
    }

    /// Stops accepting and waits for the serving thread to finish.
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        let client = serving.load(ordering: .acquiring)
        if client >= 0 { shutdown(client, Int32(SHUT_RDWR)) }
        finished.wait()
        close(fd)
        if case .unix(let path) = address { unlink(path) }
    }

    deinit { stop() }

    private func serve() {
        defer { finished.signal() }
        while !stopped.load(ordering: .acquiring) {
            let client = accept(fd, nil, nil)
            if client < 0 {
                let e = errno
                if stopped.load(ordering: .acquiring) { return }
                // Out of descriptors: wait a little rather than spin on the queued connection.
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM { usleep(100_000); continue }
                if e == EINTR || e == ECONNABORTED || e == EPROTO || e == EAGAIN { continue }
                return
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            serving.store(client, ordering: .releasing)
            var tv = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let (status, body) = handle(client)
            respond(client, status, body)
            serving.store(-1, ordering: .releasing)
            close(client)
        }
    }

    struct Request { var method: String; var path: String; var body: [UInt8] }

    private func handle(_ client: Int32) -> (Int, [UInt8]) {
        let request: Request
        switch read(client) {
        case .success(let r): request = r
        case .failure(let e): return e.response
        }
        let path = request.path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.path
        switch (request.method, path) {
        case ("POST", "/v1/metrics"):
            return ingest(request.body)
        case ("GET", "/v1/status"):
            return (200, status())
        case (_, "/v1/metrics"), (_, "/v1/status"):
            return Self.error(405, "method-not-allowed", "\(request.method) is not allowed on \(path)")
        default:
            return Self.error(404, "not-found", "no route \(path); use POST /v1/metrics or GET /v1/status")
        }
    }

    func ingest(_ body: [UInt8]) -> (Int, [UInt8]) {
        var reports: [InferenceReport]
        do {
            if body.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) == UInt8(ascii: "[") {
                reports = try FleetJSON.decode([InferenceReport].self, from: Data(body), limit: Self.maxBody)
            } else {
                reports = [try FleetJSON.decode(InferenceReport.self, from: Data(body), limit: Self.maxBody)]
            }
        } catch {
            return Self.error(400, "malformed", "the body is not an inference report: \(error)")
        }
        guard !reports.isEmpty, reports.count <= Self.maxReportsPerRequest else {
            return Self.error(400, "malformed", "send between 1 and \(Self.maxReportsPerRequest) reports")
        }
        // Checked as a whole first, so that a request is taken entirely or not at all.
        for r in reports {
            if let problem = r.problem() { return Self.error(400, "invalid-report", problem) }
            guard knowsModel(r.model) else { return Self.error(404, "unknown-model", "this device runs no model '\(r.model)'") }
        }
        for r in reports {
            do { try collector.record(r) } catch {
                return Self.error(429, "too-many-models", "the agent keeps figures for at most \(RuntimeCollector.maxModels) models")
            }
        }
        return (202, Array("{\"accepted\":\(reports.count)}".utf8))
    }

    struct HTTPFailure: Error {
        let response: (Int, [UInt8])
    }

    /// recv with what is left of the request's deadline; 0 or less: the peer closed, or time ran out.
    private func receive(_ client: Int32, _ chunk: inout [UInt8], _ count: Int, deadline: Double) -> Int {
        let left = deadline - Clock.monotonic()
        guard left > 0 else { return 0 }
        var p = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(left * 1000) + 1) == 1 else { return 0 }
        return recv(client, &chunk, count, Int32(MSG_DONTWAIT))
    }

    private func read(_ client: Int32) -> Result<Request, HTTPFailure> {
        let deadline = Clock.monotonic() + Self.requestDeadline
        var buf: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        var headerEnd: Int? = nil
        while headerEnd == nil {
            let n = receive(client, &chunk, chunk.count, deadline: deadline)
            if n <= 0 { return .failure(HTTPFailure(response: Self.error(408, "timeout", "the request did not arrive in time"))) }
            buf.append(contentsOf: chunk[0..<n])
            headerEnd = Self.find(buf, [13, 10, 13, 10])
            if headerEnd == nil && buf.count > Self.maxHeader {
                return .failure(HTTPFailure(response: Self.error(431, "header-too-large", "request headers over \(Self.maxHeader) bytes")))
            }
        }
        let head = String(decoding: buf[0..<headerEnd!], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let parts = lines.first?.split(separator: " ") ?? []
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else {
            return .failure(HTTPFailure(response: Self.error(400, "malformed", "not an HTTP/1.x request line")))
        }
        var length = 0
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = String(
                line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
            if name == "content-length" {
                guard let l = Int(value), l >= 0 else {
                    return .failure(HTTPFailure(response: Self.error(400, "malformed", "bad Content-Length")))
                }
                length = l
            } else if name == "transfer-encoding" {
                return .failure(HTTPFailure(response: Self.error(411, "length-required", "send a Content-Length, not chunked encoding")))
            }
        }
        guard length <= Self.maxBody else {
            return .failure(HTTPFailure(response: Self.error(413, "too-large", "bodies are limited to \(Self.maxBody) bytes")))
        }
        var body = Array(buf[(headerEnd! + 4)...])
        while body.count < length {
            let n = receive(client, &chunk, min(chunk.count, length - body.count), deadline: deadline)
            if n <= 0 { return .failure(HTTPFailure(response: Self.error(408, "timeout", "the body did not arrive in time"))) }
            body.append(contentsOf: chunk[0..<n])
        }
        return .success(Request(method: String(parts[0]), path: String(parts[1]), body: Array(body.prefix(length))))
    }

    static func find(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }

    static func error(_ status: Int, _ code: String, _ message: String) -> (Int, [UInt8]) {
        struct Body: Encodable { struct E: Encodable { var code: String; var message: String }; var error: E }
        let bytes = (try? FleetJSON.encode(Body(error: .init(code: code, message: message)))).map { [UInt8]($0) } ?? []
        return (status, bytes)
    }

    private func respond(_ client: Int32, _ status: Int, _ body: [UInt8]) {
        let reason =
            [
                200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
                411: "Length Required", 413: "Content Too Large", 429: "Too Many Requests", 431: "Request Header Fields Too Large"
            ][status] ?? "Error"
        let head =
            "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        let bytes = Array(head.utf8) + body
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }
}
