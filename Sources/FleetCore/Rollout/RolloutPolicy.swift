import Crypto
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

        public init(
            maxInstallFailureRate: Double? = nil, maxHealthFailureRate: Double? = nil, maxTimedOutRate: Double? = nil,
            maxLatencyP50Ratio: Double? = nil, maxLatencyP95Ratio: Double? = nil, maxErrorRateIncrease: Double? = nil,
            maxCrashes: Int? = nil, minSample: Int = 1, unjudged: UnjudgedAction? = nil
        ) {
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
    /// Waves run in order, each over the devices its selector picks (the first wave that matches
    /// a device is its wave; a device no wave picks is left out of the rollout). A wave starts when
    /// every cell of the one before completed; each may have phases, gates and a maintenance
    /// window of its own (the policy's otherwise). nil: one wave of every device.
    public var waves: [Wave]?
    /// Activation only inside this window (for every wave that sets none of its own); nil: any time.
    public var window: MaintenanceWindow?

    public struct Wave: Codable, Equatable, Sendable {
        public var name: String
        public var selector: LabelSelector
        public var phases: [Phase]?
        public var gates: Gates?
        public var onFailure: FailureAction?
        public var window: MaintenanceWindow?

        public init(
            name: String, selector: LabelSelector, phases: [Phase]? = nil, gates: Gates? = nil, onFailure: FailureAction? = nil,
            window: MaintenanceWindow? = nil
        ) {
            self.name = name; self.selector = selector; self.phases = phases; self.gates = gates; self.onFailure = onFailure
            self.window = window
        }
    }

    public init(
        name: String, phases: [Phase], gates: Gates, onFailure: FailureAction = .pause, deviceTimeoutSeconds: Int64 = 3600,
        holdBackPercent: Double? = nil, waves: [Wave]? = nil, window: MaintenanceWindow? = nil
    ) {
        self.name = name; self.phases = phases; self.gates = gates; self.onFailure = onFailure
        self.deviceTimeoutSeconds = deviceTimeoutSeconds; self.holdBackPercent = holdBackPercent
        self.waves = waves; self.window = window
    }

    /// The index of the wave that takes a device with these (selectable) labels; nil: none does.
    /// Without waves every device is in wave 0.
    public func wave(for labels: [String: String]) -> Int? {
        guard let waves, !waves.isEmpty else { return 0 }
        return waves.firstIndex { $0.selector.matches(labels) }
    }

    /// The number of waves (1 without waves).
    public var waveCount: Int { max(waves?.count ?? 0, 1) }

    /// The wave's name in cell keys; nil without waves.
    public func waveName(_ index: Int) -> String? {
        guard let waves, waves.indices.contains(index) else { return nil }
        return waves[index].name
    }

    public func waveIndex(named name: String?) -> Int {
        guard let name, let waves else { return 0 }
        return waves.firstIndex { $0.name == name } ?? 0
    }

    /// The policy one wave runs: its own phases, gates and failure action where it sets them.
    public func forWave(_ index: Int) -> RolloutPolicy {
        guard let waves, waves.indices.contains(index) else { return self }
        let w = waves[index]
        var p = self
        p.phases = w.phases ?? phases
        p.gates = w.gates ?? gates
        p.onFailure = w.onFailure ?? onFailure
        p.window = w.window ?? window
        return p
    }

    /// The policy of the wave a cell belongs to.
    public func forCell(_ key: CellKey) -> RolloutPolicy { forWave(waveIndex(named: key.wave)) }

    /// The same policy with every bake time multiplied by `factor` (labs, demos), rounded, never negative.
    public func scalingBakes(by factor: Double) -> RolloutPolicy {
        var p = self
        let f = factor.isFinite ? max(factor, 0) : 1
        func scaled(_ ps: [Phase]) -> [Phase] {
            ps.map {
                var q = $0; q.bakeSeconds = Int64((Double($0.bakeSeconds) * f).rounded()); return q
            }
        }
        p.phases = scaled(phases)
        p.waves = waves?.map {
            var w = $0; w.phases = w.phases.map(scaled); return w
        }
        return p
    }

    /// The cohort share a phase reaches while the hold-back is kept.
    public var holdBackShare: Double { min(max((holdBackPercent ?? 0) / 100, 0), 0.5) }

    /// Phases must grow and end at 100%.
    public func validate() -> String? {
        if let problem = Self.validate(phases: phases, gates: gates) { return problem }
        guard deviceTimeoutSeconds > 0 else { return "deviceTimeoutSeconds must be positive" }
        if let h = holdBackPercent { guard h.isFinite, h >= 0, h <= 50 else { return "hold_back must be between 0 and 50 percent" } }
        if let problem = window?.validate() { return "window: \(problem)" }
        if let waves {
            guard !waves.isEmpty else { return "waves, when given, list at least one wave" }
            var names = Set<String>()
            for w in waves {
                guard Self.isWaveName(w.name) else { return "wave name '\(w.name)' must be 1-63 letters, digits, '-', '_' or '.'" }
                guard names.insert(w.name).inserted else { return "duplicate wave name '\(w.name)'" }
                if let problem = Self.validate(phases: w.phases ?? phases, gates: w.gates ?? gates) { return "wave \(w.name): \(problem)" }
                if let problem = w.window?.validate() { return "wave \(w.name): window: \(problem)" }
            }
        }
        return nil
    }

    private static func validate(phases: [Phase], gates: Gates) -> String? {
        guard !phases.isEmpty else { return "a policy needs at least one phase" }
        var last = 0.0
        for p in phases {
            guard p.percent > last, p.percent <= 100 else { return "phase percentages must increase and stay within 100" }
            guard p.minDevices >= 0, p.bakeSeconds >= 0 else { return "minDevices and bakeSeconds cannot be negative" }
            last = p.percent
        }
        guard last == 100 else { return "the last phase must cover 100% of the devices" }
        guard gates.minSample >= 1 else { return "minSample must be at least 1" }
        return nil
    }

    /// Wave names appear in cell keys (`WAVE:CLASS/TIER`): no ':' or '/'.
    public static func isWaveName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 63
            && s.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
            }
    }
}

/// A cell: the devices of one hardware class on one bandwidth tier (in one wave, when the policy
/// has waves). Phases advance per cell.
public struct CellKey: Codable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var hardwareClass: String
    public var tier: String
    /// The wave's name; nil for a policy without waves.
    public var wave: String?
    public init(hardwareClass: String, tier: String, wave: String? = nil) {
        self.hardwareClass = hardwareClass; self.tier = tier; self.wave = wave
    }
    /// `CLASS/TIER`, or `WAVE:CLASS/TIER`.
    public var description: String { (wave.map { "\($0):" } ?? "") + "\(hardwareClass)/\(tier)" }
    /// The inverse of `description`; nil for text that is neither form.
    public init?(parsing text: String) {
        var rest = Substring(text)
        var wave: String? = nil
        if let colon = rest.firstIndex(of: ":") {
            wave = String(rest[..<colon])
            rest = rest[rest.index(after: colon)...]
            guard RolloutPolicy.isWaveName(wave!) else { return nil }
        }
        let parts = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        self.init(hardwareClass: parts[0], tier: parts[1], wave: wave)
    }
    /// Sorted by class and tier; the wave order is the policy's, not this one.
    public static func < (a: CellKey, b: CellKey) -> Bool {
        (a.wave ?? "", a.hardwareClass, a.tier) < (b.wave ?? "", b.hardwareClass, b.tier)
    }
}

/// Cohorts: a device's place in a rollout is a stable hash of (rollout, device), so it never
/// changes cohort and planning again gives the same answer.
public enum Cohort {
    /// A number in [0, 1) from the first 8 bytes of sha256("rollout\0device").
    public static func position(rollout: String, device: String) -> Double {
        // The digest's bytes as they come (no hex round trip: a tick hashes every device of a fleet).
        var v: UInt64 = 0
        for b in SHA256.hash(data: Array("\(rollout)\u{0}\(device)".utf8)).prefix(8) { v = v << 8 | UInt64(b) }
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
