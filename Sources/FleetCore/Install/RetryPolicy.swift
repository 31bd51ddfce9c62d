/// How often a device tries one assignment again after a failure that another attempt may cure:
/// exponential backoff with jitter, a cap on attempts and a cap on the bytes spent on attempts
/// that failed. The controller sends it per bandwidth tier; the agent clamps what it receives.
public struct RetryPolicy: Codable, Equatable, Sendable {
    /// Attempts in all, the first included.
    public var maxAttempts: Int
    /// Delay before the second attempt; each later one doubles it, up to `maxDelaySeconds`.
    public var baseDelaySeconds: Int64
    public var maxDelaySeconds: Int64
    /// Bytes downloaded by attempts that failed, after which the device stops; nil: no byte cap.
    public var maxRetryBytes: Int64?

    public init(maxAttempts: Int = 3, baseDelaySeconds: Int64 = 60, maxDelaySeconds: Int64 = 6 * 3600, maxRetryBytes: Int64? = nil) {
        self.maxAttempts = maxAttempts; self.baseDelaySeconds = baseDelaySeconds
        self.maxDelaySeconds = maxDelaySeconds; self.maxRetryBytes = maxRetryBytes
    }

    public static let `default` = RetryPolicy()

    /// Bounds for a policy that arrived unsigned: at most 10 attempts, delays of 1 s to 7 days.
    public func clamped() -> RetryPolicy {
        let base = min(max(baseDelaySeconds, 1), 7 * 86_400)
        return RetryPolicy(
            maxAttempts: min(max(maxAttempts, 1), 10), baseDelaySeconds: base,
            maxDelaySeconds: min(max(maxDelaySeconds, base), 7 * 86_400), maxRetryBytes: maxRetryBytes.map { max($0, 0) })
    }

    /// The delay before attempt `attempt + 1` after `attempt` failed ones, scaled by `jitter` in
    /// [0.5, 1] so that devices that failed together do not come back together.
    public func delay(afterAttempt attempt: Int, jitter: Double) -> Int64 {
        let doublings = min(max(attempt - 1, 0), 30)
        let (raw, overflow) = baseDelaySeconds.multipliedReportingOverflow(by: Int64(1) << doublings)
        let capped = overflow ? maxDelaySeconds : min(raw, maxDelaySeconds)
        let j = jitter.isFinite ? min(max(jitter, 0.5), 1) : 1
        return max(1, Int64((Double(capped) * j).rounded()))
    }
}

/// One assignment's failed attempts on a device, kept in the agent's journal.
public struct RetryRecord: Codable, Equatable, Sendable {
    public var counter: UInt64
    public var sha256: String
    public var attempts: Int
    public var bytesSpent: Int64
    /// When the next attempt may start; nil once the device gave up.
    public var nextAttemptAt: Int64?
    public var lastFault: InstallFault?
    public var gaveUp: Bool

    public init(
        counter: UInt64, sha256: String, attempts: Int = 0, bytesSpent: Int64 = 0, nextAttemptAt: Int64? = nil,
        lastFault: InstallFault? = nil, gaveUp: Bool = false
    ) {
        self.counter = counter; self.sha256 = sha256; self.attempts = attempts; self.bytesSpent = bytesSpent
        self.nextAttemptAt = nextAttemptAt; self.lastFault = lastFault; self.gaveUp = gaveUp
    }

    /// Whether the assignment `counter` may be attempted at `now`.
    public func allows(counter: UInt64, now: Int64) -> Bool {
        guard counter == self.counter else { return true }
        if gaveUp { return false }
        return (nextAttemptAt ?? .min) <= now
    }
}

public enum RetryDecision: Equatable, Sendable {
    case retryAt(Int64)
    /// No more attempts: the fault is not one a retry cures, or a cap was reached.
    case giveUp(InstallFault)
}

public enum RetryLedger {
    /// Counts one failed attempt of assignment (`counter`, `sha256`) that cost `bytes`, and decides
    /// whether and when to try again. A record of another assignment starts over.
    public static func afterFailure(
        _ record: RetryRecord?, counter: UInt64, sha256: String, fault: InstallFault, bytes: Int64,
        policy: RetryPolicy, now: Int64, jitter: Double
    ) -> (RetryRecord, RetryDecision) {
        var r = record.flatMap { $0.counter == counter ? $0 : nil } ?? RetryRecord(counter: counter, sha256: sha256)
        r.attempts += 1
        let (sum, overflow) = r.bytesSpent.addingReportingOverflow(max(bytes, 0))
        r.bytesSpent = overflow ? .max : sum
        r.lastFault = fault
        let p = policy.clamped()
        let decision: RetryDecision
        if !fault.isRetryable {
            decision = .giveUp(fault)
        } else if r.attempts >= p.maxAttempts || (p.maxRetryBytes.map { r.bytesSpent >= $0 } ?? false) {
            decision = .giveUp(.retriesExhausted)
        } else {
            decision = .retryAt(now + p.delay(afterAttempt: r.attempts, jitter: jitter))
        }
        switch decision {
        case .retryAt(let t): r.nextAttemptAt = t; r.gaveUp = false
        case .giveUp: r.nextAttemptAt = nil; r.gaveUp = true
        }
        return (r, decision)
    }
}
