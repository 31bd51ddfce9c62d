/// A hardware class: which devices belong to it and which number formats they run well
/// (best first). Defined in fleet/hardware-classes.yaml and signed into each release catalog.
public struct HardwareClass: Codable, Equatable, Sendable {
    public struct Match: Codable, Equatable, Sendable {
        public var arch: [String]?
        public var cpuFlags: [String]?  // all of these
        public var minMemoryBytes: Int64?
        public var maxMemoryBytes: Int64?
        public var accelerators: [String]?  // any of these device-node prefixes

        public init(
            arch: [String]? = nil, cpuFlags: [String]? = nil, minMemoryBytes: Int64? = nil,
            maxMemoryBytes: Int64? = nil, accelerators: [String]? = nil
        ) {
            self.arch = arch; self.cpuFlags = cpuFlags; self.minMemoryBytes = minMemoryBytes
            self.maxMemoryBytes = maxMemoryBytes; self.accelerators = accelerators
        }

        public func matches(_ f: DeviceFacts) -> Bool {
            if let arch, !arch.contains(f.arch) { return false }
            if let cpuFlags, !cpuFlags.allSatisfy(f.cpuFlags.contains) { return false }
            if let minMemoryBytes, f.memoryBytes < minMemoryBytes { return false }
            if let maxMemoryBytes, f.memoryBytes > maxMemoryBytes { return false }
            if let accelerators, !accelerators.contains(where: { a in f.accelerators.contains { $0.hasPrefix(a) } }) { return false }
            return true
        }
    }

    public var name: String
    public var description: String?
    public var match: Match
    public var formats: [String]
    public var maxModelBytes: Int64?
    /// What selection by measurement minimises on this class: `latency` (nil) or `energy`.
    public var optimize: String?

    public init(
        name: String, description: String? = nil, match: Match, formats: [String], maxModelBytes: Int64? = nil,
        optimize: String? = nil
    ) {
        self.name = name; self.description = description; self.match = match; self.formats = formats
        self.maxModelBytes = maxModelBytes; self.optimize = optimize
    }
}

/// A bandwidth tier, from measured throughput and the metered flag, with an optional byte budget
/// per update.
public struct BandwidthTier: Codable, Equatable, Sendable {
    public var name: String
    public var description: String?
    public var metered: Bool?  // nil: either
    public var minMbps: Double?
    public var budgetBytes: Int64?
    /// How devices of this tier retry a failed assignment; nil: the controller's default.
    public var retry: RetryPolicy?

    public init(
        name: String, description: String? = nil, metered: Bool? = nil, minMbps: Double? = nil, budgetBytes: Int64? = nil,
        retry: RetryPolicy? = nil
    ) {
        self.name = name; self.description = description; self.metered = metered; self.minMbps = minMbps
        self.budgetBytes = budgetBytes; self.retry = retry
    }
}

public enum HardwareClassifier {
    /// The first class, in the order the operator listed them, whose match the facts satisfy.
    public static func classify(_ facts: DeviceFacts, classes: [HardwareClass]) -> HardwareClass? {
        classes.first { $0.match.matches(facts) }
    }
}

public enum TierClassifier {
    /// The first tier whose metered flag and minimum throughput fit. A device that has not
    /// measured its link yet counts as the slowest unmetered one until it has.
    public static func classify(_ facts: DeviceFacts, tiers: [BandwidthTier]) -> BandwidthTier? {
        let metered = facts.metered ?? false
        let mbps = facts.downlinkMbps ?? 0
        return tiers.first { tier in
            if let m = tier.metered, m != metered { return false }
            if let min = tier.minMbps, mbps < min { return false }
            return true
        }
    }
}
