/// Runtime metrics of a group of devices over a window.
public struct RuntimeSample: Codable, Equatable, Sendable {
    public var devices: Int
    public var latencyP50Ms: Double?
    public var latencyP95Ms: Double?
    public var errorRate: Double?
    public var crashes: Int

    public init(devices: Int, latencyP50Ms: Double? = nil, latencyP95Ms: Double? = nil, errorRate: Double? = nil, crashes: Int = 0) {
        self.devices = devices; self.latencyP50Ms = latencyP50Ms; self.latencyP95Ms = latencyP95Ms
        self.errorRate = errorRate; self.crashes = crashes
    }
}

/// What a cell's devices in the current phase have done so far.
public struct CellObservation: Codable, Equatable, Sendable {
    public var targeted: Int
    public var committed: Int
    public var installFailed: Int
    public var healthFailed: Int  // rolled back after a failed health check
    public var timedOut: Int
    /// The new release on the cohort, and what it is compared with (`reference`): the control
    /// cohort (devices of the same cell still running what the treated devices ran before), or,
    /// when the cell has none, the treated devices' own figures from before they were updated.
    public var treatment: RuntimeSample?
    public var control: RuntimeSample?
    public var reference: Reference?

    public enum Reference: String, Codable, Sendable {
        /// Devices of the same cell outside the cohort, on the release the cohort ran before.
        case controlCohort = "control-cohort"
        /// The cohort's own last figures on the release it ran before.
        case baseline
    }

    public init(
        targeted: Int, committed: Int = 0, installFailed: Int = 0, healthFailed: Int = 0, timedOut: Int = 0,
        treatment: RuntimeSample? = nil, control: RuntimeSample? = nil, reference: Reference? = nil
    ) {
        self.targeted = targeted; self.committed = committed; self.installFailed = installFailed
        self.healthFailed = healthFailed; self.timedOut = timedOut; self.treatment = treatment; self.control = control
        self.reference = reference
    }

    public var finished: Int { committed + installFailed + healthFailed + timedOut }
}

/// What happened in a cell after it stopped, kept apart from the observation that stopped it.
public struct CellAfterStop: Codable, Equatable, Sendable {
    /// Devices of the cell the rollout had sent its release to.
    public var reached: Int
    /// Of those, the ones no longer running the new release.
    public var restored: Int
    public init(reached: Int, restored: Int) { self.reached = reached; self.restored = restored }
}

/// One gate's verdict: the metric, its threshold and what was observed. `passed` is nil while the
/// sample is too small to judge.
public struct GateResult: Codable, Equatable, Sendable {
    public var metric: String
    public var threshold: Double
    public var observed: Double?
    public var passed: Bool?
    public init(metric: String, threshold: Double, observed: Double?, passed: Bool?) {
        self.metric = metric; self.threshold = threshold; self.observed = observed; self.passed = passed
    }
}

public enum GateEvaluator {
    public static func evaluate(_ o: CellObservation, gates g: RolloutPolicy.Gates) -> [GateResult] {
        var out: [GateResult] = []
        // Enough once minSample devices finished, or every device of a smaller cohort did.
        let enough = o.finished >= g.minSample || (o.targeted > 0 && o.finished >= o.targeted)
        func rate(_ metric: String, _ limit: Double?, _ count: Int) {
            guard let limit else { return }
            let observed = o.finished > 0 ? Double(count) / Double(o.finished) : nil
            out.append(
                GateResult(
                    metric: metric, threshold: limit, observed: observed,
                    passed: enough ? (observed ?? 0) <= limit : nil))
        }
        rate("install-failure-rate", g.maxInstallFailureRate, o.installFailed)
        rate("health-failure-rate", g.maxHealthFailureRate, o.healthFailed)
        rate("timed-out-rate", g.maxTimedOutRate, o.timedOut)

        let t = o.treatment, c = o.control
        let runtimeEnough = (t?.devices ?? 0) >= g.minSample && (c?.devices ?? 0) >= 1
        func ratio(_ metric: String, _ limit: Double?, _ new: Double?, _ old: Double?) {
            guard let limit else { return }
            var observed: Double? = nil
            if let new, let old, old > 0 { observed = new / old }
            out.append(
                GateResult(
                    metric: metric, threshold: limit, observed: observed,
                    passed: runtimeEnough && observed != nil ? observed! <= limit : nil))
        }
        ratio("latency-p50-ratio", g.maxLatencyP50Ratio, t?.latencyP50Ms, c?.latencyP50Ms)
        ratio("latency-p95-ratio", g.maxLatencyP95Ratio, t?.latencyP95Ms, c?.latencyP95Ms)
        if let limit = g.maxErrorRateIncrease {
            var observed: Double? = nil
            if let new = t?.errorRate, let old = c?.errorRate { observed = new - old }
            out.append(
                GateResult(
                    metric: "error-rate-increase", threshold: limit, observed: observed,
                    passed: runtimeEnough && observed != nil ? observed! <= limit : nil))
        }
        if let limit = g.maxCrashes {
            let crashes = Double(t?.crashes ?? 0)
            // Crashes past the limit fail at once: no sample is needed to see them.
            out.append(
                GateResult(
                    metric: "crashes", threshold: Double(limit), observed: crashes,
                    passed: crashes > Double(limit) ? false : (enough ? true : nil)))
        }
        return out
    }
}
