/// How a staged rollout proceeds: phases of a growing share of each cell's devices, the gates a
/// phase must pass, and what a failing gate does. Loaded from fleet/policies/*.yaml.
public struct RolloutPolicy: Codable, Equatable, Sendable {
    public struct Phase: Codable, Equatable, Sendable {
        /// Share of the cell's devices in the cohort once this phase runs, 0 < percent ≤ 100.
        public var percent: Double
        /// At least this many devices of the cell (or all of them, if fewer).
        public var minDevices: Int
        /// Time the phase must stay healthy after its devices finished before the next one starts.
        public var bakeSeconds: Int64

        public init(percent: Double, minDevices: Int = 1, bakeSeconds: Int64 = 0) {
            self.percent = percent; self.minDevices = minDevices; self.bakeSeconds = bakeSeconds
        }
    }

    public struct Gates: Codable, Equatable, Sendable {
        public var maxInstallFailureRate: Double?
        public var maxHealthFailureRate: Double?
        public var maxTimedOutRate: Double?
        /// New-release latency divided by the control cohort's (devices still on the old release).
        public var maxLatencyP50Ratio: Double?
        public var maxLatencyP95Ratio: Double?
        /// New error rate minus the control's, absolute.
        public var maxErrorRateIncrease: Double?
        public var maxCrashes: Int?
        /// Devices that must have finished (or reported metrics) before a gate judges.
        public var minSample: Int
        /// What a gate that cannot judge does when its phase would end: block the cell (the
        /// default: an unjudged regression is never promoted) or let it pass.
        public var unjudged: UnjudgedAction?

        public init(maxInstallFailureRate: Double? = nil, maxHealthFailureRate: Double? = nil, maxTimedOutRate: Double? = nil,
                    maxLatencyP50Ratio: Double? = nil, maxLatencyP95Ratio: Double? = nil, maxErrorRateIncrease: Double? = nil,
                    maxCrashes: Int? = nil, minSample: Int = 1, unjudged: UnjudgedAction? = nil) {
            self.maxInstallFailureRate = maxInstallFailureRate; self.maxHealthFailureRate = maxHealthFailureRate
            self.maxTimedOutRate = maxTimedOutRate; self.maxLatencyP50Ratio = maxLatencyP50Ratio
            self.maxLatencyP95Ratio = maxLatencyP95Ratio; self.maxErrorRateIncrease = maxErrorRateIncrease
            self.maxCrashes = maxCrashes; self.minSample = minSample; self.unjudged = unjudged
        }

        public var blocksUnjudged: Bool { (unjudged ?? .block) == .block }
    }

    public enum UnjudgedAction: String, Codable, Sendable { case block, pass }

    public enum FailureAction: String, Codable, Sendable { case pause, rollback }

    public var name: String
    public var phases: [Phase]
    public var gates: Gates
    public var onFailure: FailureAction
    /// A device that has not finished this long after its assignment counts as failed (timed-out).
    public var deviceTimeoutSeconds: Int64
    /// Share of each cell (percent, the highest cohort positions) kept on the old release as the
    /// control cohort until the cell's gates have judged its last phase; nil or 0: none.
    public var holdBackPercent: Double?

    public init(name: String, phases: [Phase], gates: Gates, onFailure: FailureAction = .pause, deviceTimeoutSeconds: Int64 = 3600,
                holdBackPercent: Double? = nil) {
        self.name = name; self.phases = phases; self.gates = gates; self.onFailure = onFailure
        self.deviceTimeoutSeconds = deviceTimeoutSeconds; self.holdBackPercent = holdBackPercent
    }

    /// The same policy with every bake time multiplied by `factor` (labs, demos), rounded, never negative.
    public func scalingBakes(by factor: Double) -> RolloutPolicy {
        var p = self
        let f = factor.isFinite ? max(factor, 0) : 1
        p.phases = phases.map { var q = $0; q.bakeSeconds = Int64((Double($0.bakeSeconds) * f).rounded()); return q }
        return p
    }

    /// The cohort share a phase reaches while the hold-back is kept.
    public var holdBackShare: Double { min(max((holdBackPercent ?? 0) / 100, 0), 0.5) }

    /// Phases must grow and end at 100%.
    public func validate() -> String? {
        guard !phases.isEmpty else { return "a policy needs at least one phase" }
        var last = 0.0
        for p in phases {
            guard p.percent > last, p.percent <= 100 else { return "phase percentages must increase and stay within 100" }
            guard p.minDevices >= 0, p.bakeSeconds >= 0 else { return "minDevices and bakeSeconds cannot be negative" }
            last = p.percent
        }
        guard last == 100 else { return "the last phase must cover 100% of the devices" }
        guard gates.minSample >= 1 else { return "minSample must be at least 1" }
        guard deviceTimeoutSeconds > 0 else { return "deviceTimeoutSeconds must be positive" }
        if let h = holdBackPercent { guard h.isFinite, h >= 0, h <= 50 else { return "hold_back must be between 0 and 50 percent" } }
        return nil
    }
}

/// A cell: the devices of one hardware class on one bandwidth tier. Phases advance per cell.
public struct CellKey: Codable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var hardwareClass: String
    public var tier: String
    public init(hardwareClass: String, tier: String) { self.hardwareClass = hardwareClass; self.tier = tier }
    public var description: String { "\(hardwareClass)/\(tier)" }
    public static func < (a: CellKey, b: CellKey) -> Bool { (a.hardwareClass, a.tier) < (b.hardwareClass, b.tier) }
}

/// Cohorts: a device's place in a rollout is a stable hash of (rollout, device), so it never
/// changes cohort and planning again gives the same answer.
public enum Cohort {
    /// A number in [0, 1) from the first 8 bytes of sha256("rollout\0device").
    public static func position(rollout: String, device: String) -> Double {
        let digest = Hex.decode(Digest.sha256Hex(Array("\(rollout)\u{0}\(device)".utf8)))!
        var v: UInt64 = 0
        for b in digest.prefix(8) { v = v << 8 | UInt64(b) }
        return Double(v >> 11) / Double(1 << 53)
    }

    /// The devices of a cell in the cohort of `phase`: those whose position is below the phase's
    /// share, and at least `minDevices` of them (the lowest positions first).
    public static func members(of devices: [String], rollout: String, phase: RolloutPolicy.Phase) -> Set<String> {
        let ranked = devices.map { ($0, position(rollout: rollout, device: $0)) }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
        var out = Set<String>()
        for (i, (device, pos)) in ranked.enumerated() where pos < phase.percent / 100 || i < phase.minDevices {
            out.insert(device)
        }
        return out
    }
}
