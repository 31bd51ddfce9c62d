import Logging
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// What the process did between two looks: CPU time and bytes read and written (files and
/// sockets), from /proc/self/stat and /proc/self/io.
public struct ProcessActivity: Equatable, Sendable {
    /// User and system CPU time, in clock ticks.
    public var cpuTicks: UInt64
    /// rchar + wchar: bytes passed to read and write calls.
    public var ioBytes: UInt64

    public init(cpuTicks: UInt64, ioBytes: UInt64) {
        self.cpuTicks = cpuTicks
        self.ioBytes = ioBytes
    }

    /// This process now; nil when /proc cannot be read.
    public static func now() -> ProcessActivity? {
        guard let stat = ResidentPages.readAll("/proc/self/stat"), let io = ResidentPages.readAll("/proc/self/io") else { return nil }
        return parse(stat: String(decoding: stat, as: UTF8.self), io: String(decoding: io, as: UTF8.self))
    }

    static func parse(stat: String, io: String) -> ProcessActivity? {
        // Fields after the command name (which may hold spaces and parentheses): state is field 3,
        // utime and stime are fields 14 and 15.
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let utime = UInt64(fields[11]), let stime = UInt64(fields[12]) else { return nil }
        var bytes: UInt64 = 0
        var seen = 0
        for line in io.split(separator: "\n") where line.hasPrefix("rchar:") || line.hasPrefix("wchar:") {
            guard let v = UInt64(line.split(separator: " ").last ?? "") else { return nil }
            bytes &+= v
            seen += 1
        }
        guard seen == 2 else { return nil }
        return ProcessActivity(cpuTicks: utime + stime, ioBytes: bytes)
    }
}

/// When to give back the clean pages start-up or an install touched: once after start-up and once
/// after each busy stretch (CPU or I/O over the thresholds between two looks), at the first quiet
/// look after it. An idle agent, whose check-ins stay under the thresholds, is never trimmed again,
/// so its steady check-ins pay no page faults for it; the pages a check-in uses come back once
/// after each trim.
public struct IdlePagePolicy: Equatable, Sendable {
    /// CPU ticks between two looks above which the process was busy.
    public var busyCPUTicks: UInt64
    /// Bytes read and written between two looks above which the process was busy (an install
    /// writes the whole model; a check-in moves kilobytes).
    public var busyIOBytes: UInt64
    /// Something was busy since the last trim (true at start: start-up walks much of the binary).
    public private(set) var pending = true
    private var last: ProcessActivity?

    public init(busyCPUTicks: UInt64, busyIOBytes: UInt64) {
        self.busyCPUTicks = busyCPUTicks
        self.busyIOBytes = busyIOBytes
    }

    /// Takes one look; true when the pages should be given back now.
    public mutating func observe(_ now: ProcessActivity) -> Bool {
        defer { last = now }
        guard let last else { return false }
        let busy = now.cpuTicks &- last.cpuTicks > busyCPUTicks || now.ioBytes &- last.ioBytes > busyIOBytes
        if busy {
            pending = true
            return false
        }
        guard pending else { return false }
        pending = false
        return true
    }
}

/// Runs beside the agent loop: every `interval` it looks at the process's activity and, when
/// `IdlePagePolicy` says so, gives back the clean file-backed pages (`ResidentPages.release`) and
/// the free malloc memory (`malloc_trim`).
public struct IdlePageRelease: Service {
    let interval: Duration
    let logger: Logger

    public init(interval: Duration = .seconds(1), logger: Logger) {
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        let ticksPerSecond = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
        let seconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
        // Busy: over a tenth of a core, or over a mebibyte moved, between two looks.
        let policy = IdlePagePolicy(busyCPUTicks: UInt64(Double(ticksPerSecond) * seconds / 10), busyIOBytes: 1 << 20)
        try? await cancelWhenGracefulShutdown { [interval, logger] in
            var policy = policy
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                guard let now = ProcessActivity.now() else { continue }
                guard policy.observe(now) else { continue }
                let released = ResidentPages.release()
                _ = ResidentPages.trimMalloc()
                logger.debug(
                    "idle: clean file pages released",
                    metadata: ["bytes": "\(released.bytes)", "mappings": "\(released.mappings)"])
            }
        }
    }
}
