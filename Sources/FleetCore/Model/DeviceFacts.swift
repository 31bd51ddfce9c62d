/// What the agent's probe found on a device (or what a facts file says, for tests and simulation).
public struct DeviceFacts: Codable, Equatable, Sendable {
    public var deviceId: String?
    public var arch: String  // uname machine: x86_64, aarch64, armv7l
    public var cpuFlags: [String]
    public var memoryBytes: Int64
    public var diskFreeBytes: Int64
    public var accelerators: [String]  // device nodes: /dev/accel0, /dev/apex_0, …
    public var kernel: String?
    public var hostname: String?
    public var downlinkMbps: Double?  // measured by the agent on its downloads
    public var metered: Bool?
    /// Labels the device gives itself (agent configuration); nil when it has none.
    public var labels: [String: String]?
    /// The device's configured IANA time zone (from /etc/timezone or /etc/localtime), if known.
    public var timezone: String?
    /// What the running agent can do (`ReleaseKind.selfUpdateCapability`); nil from older agents.
    /// Set by the controller from the check-in that sent the facts, not probed.
    public var capabilities: [String]?
    /// SHA-256 of the agent binary that runs (its /proc/self/exe); set like `capabilities`.
    public var agentSha256: String?

    public var supportsSelfUpdate: Bool { capabilities?.contains(ReleaseKind.selfUpdateCapability) ?? false }

    /// The facts as the device probed them, without what the controller keeps beside them: what a
    /// frugal check-in's `factsDigest` names.
    public var probed: DeviceFacts {
        var f = self
        f.capabilities = nil
        f.agentSha256 = nil
        return f
    }

    public init(
        deviceId: String? = nil, arch: String, cpuFlags: [String], memoryBytes: Int64, diskFreeBytes: Int64,
        accelerators: [String] = [], kernel: String? = nil, hostname: String? = nil,
        downlinkMbps: Double? = nil, metered: Bool? = nil
    ) {
        self.deviceId = deviceId; self.arch = arch; self.cpuFlags = cpuFlags; self.memoryBytes = memoryBytes
        self.diskFreeBytes = diskFreeBytes; self.accelerators = accelerators; self.kernel = kernel
        self.hostname = hostname; self.downlinkMbps = downlinkMbps; self.metered = metered
    }
}

public enum ByteCount {
    public static func format(_ bytes: Int64) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var value = Double(bytes)
        var unit = 0
        // Round before choosing the unit, so that 999,950 bytes reads 1.0 MB, not 1000.0 KB.
        while unit < units.count - 1, abs(unit == 0 ? value : (value * 10).rounded() / 10) >= 1000 { value /= 1000; unit += 1 }
        if unit == 0 { return "\(bytes) B" }
        let rounded = (value * 10).rounded() / 10
        return "\(rounded) \(units[unit])"
    }

    /// Parses "512", "64K", "1.5G", "200MB" (decimal units; KiB/MiB/GiB binary).
    public static func parse(_ text: String) -> Int64? {
        let t = text.trimmed.uppercased()
        let table: [(String, Double)] = [
            ("KIB", 1024), ("MIB", 1_048_576), ("GIB", 1_073_741_824), ("TIB", 1_099_511_627_776),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12),
            ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("B", 1)
        ]
        for (suffix, factor) in table where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count).trimmed), v >= 0, v * factor < 9.2e18 else { return nil }
            return Int64(v * factor)
        }
        guard let v = Int64(t), v >= 0 else { return nil }
        return v
    }
}
