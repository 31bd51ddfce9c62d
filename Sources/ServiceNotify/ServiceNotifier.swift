// The sd_notify protocol spoken directly: one datagram per message to $NOTIFY_SOCKET, so that
// neither daemon links libsystemd (and the static agent stays free of Foundation).
#if canImport(Glibc)
    import Glibc
#endif

/// Tells the service manager (systemd `Type=notify`) that the daemon is ready, alive or stopping.
/// Without `$NOTIFY_SOCKET` (not started by systemd) every message is dropped.
public struct ServiceNotifier: Sendable {
    /// The socket messages go to: a path, or an abstract socket written with a leading '@'.
    public let socketPath: String?
    /// How often the manager expects WATCHDOG=1 ($WATCHDOG_USEC); nil: no watchdog for this process.
    public let watchdogInterval: Duration?

    public init(socketPath: String?, watchdogInterval: Duration?) {
        self.socketPath = socketPath.flatMap { $0.isEmpty ? nil : $0 }
        self.watchdogInterval = watchdogInterval
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` as sd_notify(3) does.
    public init(environment: [String: String], pid: Int32 = getpid()) {
        var interval: Duration? = nil
        if let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
            environment["WATCHDOG_PID"].flatMap(Int32.init).map({ $0 == pid }) ?? true
        {
            interval = .microseconds(Int64(clamping: usec))
        }
        self.init(socketPath: environment["NOTIFY_SOCKET"], watchdogInterval: interval)
    }

    /// This process's notifier. The variables are read once and removed from the environment, so
    /// that the commands the daemon runs (health checks, benchmarks) do not speak for it.
    public static let process: ServiceNotifier = {
        var env: [String: String] = [:]
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            if let v = getenv(name) { env[name] = String(cString: v) }
            unsetenv(name)
        }
        return ServiceNotifier(environment: env)
    }()

    public var isActive: Bool { socketPath != nil }

    /// Half of the watchdog interval, as sd_watchdog_enabled(3) advises.
    public var pingInterval: Duration? { watchdogInterval.map { $0 / 2 } }

    public func ready(status: String? = nil) { send("READY=1" + (status.map { "\nSTATUS=" + $0 } ?? "")) }
    public func watchdog() { if watchdogInterval != nil { send("WATCHDOG=1") } }
    public func stopping() { send("STOPPING=1") }
    public func status(_ text: String) { send("STATUS=" + text) }

    /// Sends one message; false when there is no socket or the datagram could not be sent (the
    /// manager going away must never stop the daemon).
    @discardableResult
    public func send(_ message: String) -> Bool {
        guard let socketPath else { return false }
        var path = Array(socketPath.utf8)
        let abstract = path.first == UInt8(ascii: "@")
        if abstract { path[0] = 0 }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        // A path needs its terminating NUL; an abstract name is exactly its bytes.
        guard path.count + (abstract ? 0 : 1) <= capacity, path.count > 1 || !abstract else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)! + path.count + (abstract ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(message.utf8)
        let sent = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
        return sent == bytes.count
    }
}
