import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// A service manager's end of sd_notify for a test: a datagram socket the daemon is pointed at
/// with NOTIFY_SOCKET, and the messages it sent, waited for with a deadline.
public final class NotifySocket: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The value for NOTIFY_SOCKET: a path, or `@name` for an abstract socket.
    public let address: String
    private let fd: Int32
    private let path: String?
    /// Every message received so far, in order.
    public private(set) var messages: [String] = []

    public init(abstract: Bool, directory: String = NSTemporaryDirectory()) throws {
        let name = "edgefleet-notify-" + UUID().uuidString.prefix(12)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes: [UInt8]
        if abstract {
            bytes = [0] + Array(name.utf8)
            address = "@" + name
            path = nil
        } else {
            let p = (directory.hasSuffix("/") ? directory : directory + "/") + name
            bytes = Array(p.utf8) + [0]
            address = p
            path = p
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)! + bytes.count)
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 } }
        guard ok else { close(fd); throw Failure(description: "bind \(address): \(String(cString: strerror(errno)))") }
    }

    deinit {
        close(fd)
        if let path { unlink(path) }
    }

    /// The next datagram, or nil when none comes within `timeout` seconds.
    public func receive(timeout: Double) -> String? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(max(0, timeout) * 1000)) == 1 else { return nil }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buf, buf.count, 0)
        guard n >= 0 else { return nil }
        let message = String(decoding: buf[..<n], as: UTF8.self)
        messages.append(message)
        return message
    }

    /// Receives until a message has the line `line` (such as `READY=1`); throws at the deadline.
    @discardableResult
    public func waitFor(_ line: String, timeout: Double = 30) throws -> String {
        if let seen = messages.first(where: { $0.split(separator: "\n").contains(Substring(line)) }) { return seen }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let m = receive(timeout: deadline.timeIntervalSinceNow), m.split(separator: "\n").contains(Substring(line)) { return m }
        }
        throw Failure(description: "no \(line) on \(address) within \(timeout) s (got: \(messages))")
    }

    /// How many received messages have the line `line`.
    public func count(_ line: String) -> Int {
        messages.filter { $0.split(separator: "\n").contains(Substring(line)) }.count
    }

    /// `receive(timeout:)` for async tests: polls without blocking a thread of the cooperative pool
    /// (which the daemon under test may need to send its pings). The socket is read once more after
    /// the deadline: a test that was not scheduled until then still sees what arrived meanwhile.
    public func nextMessage(within timeout: Double) async -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let m = receive(timeout: 0) { return m }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return receive(timeout: 0)
    }

    /// `waitFor(_:timeout:)` for async tests; what arrived before the deadline counts even when the
    /// test is scheduled only after it.
    @discardableResult
    public func awaitLine(_ line: String, within timeout: Double = 30) async throws -> String {
        let has = { (m: String) in m.split(separator: "\n").contains(Substring(line)) }
        if await drain(until: { self.messages.contains(where: has) }, within: timeout), let m = messages.first(where: has) { return m }
        throw Failure(description: "no \(line) on \(address) within \(timeout) s (got: \(messages))")
    }

    /// Receives what is already there, then waits (async, up to `timeout`) until `condition` holds;
    /// what arrived while the test was not scheduled still counts.
    public func drain(until condition: () -> Bool, within timeout: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            while receive(timeout: 0) != nil {}
            if condition() { return true }
            if Date() >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
