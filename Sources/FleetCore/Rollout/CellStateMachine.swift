/// One cell of a staged rollout as a value-type state machine:
/// running (phase k installing) → baking (all of phase k finished, gates green, bake timer) →
/// running (phase k+1) … → completed; a failing gate → paused or rolledBack, per the policy.
public struct CellState: Codable, Equatable, Sendable {
    public enum Status: String, Codable, Sendable, CaseIterable { case running, baking, paused, rolledBack, completed, aborted }
    public var phase: Int
    public var status: Status
    public var phaseStartedAt: Int64
    public var bakeStartedAt: Int64?
    /// The gate that stopped the cell, with its threshold and observed value.
    public var failedGate: GateResult?
    public var gates: [GateResult]
    /// Gates that could not judge when the phase was due to end, holding the cell (policy
    /// `unjudged: block`); nil when nothing blocks.
    public var blockedBy: [String]?

    public init(
        phase: Int = 0, status: Status = .running, phaseStartedAt: Int64, bakeStartedAt: Int64? = nil,
        failedGate: GateResult? = nil, gates: [GateResult] = [], blockedBy: [String]? = nil
    ) {
        self.phase = phase; self.status = status; self.phaseStartedAt = phaseStartedAt; self.bakeStartedAt = bakeStartedAt
        self.failedGate = failedGate; self.gates = gates; self.blockedBy = blockedBy
    }

    /// Whether devices of the current phase's cohort are sent the new release.
    public var sendsNewRelease: Bool { status == .running || status == .baking || status == .completed || status == .paused }
}

public enum CellEvent: Equatable, Sendable {
    case tick(now: Int64, observation: CellObservation)
    case promote(now: Int64)  // operator: next phase now, without waiting
    case pause
    case resume(now: Int64)
    case abort
}

public enum CellAction: Equatable, Sendable {
    case enteredPhase(Int)
    case startedBake
    case completed
    case paused(GateResult?)
    case rolledBack(GateResult?)
    case resumed
    case aborted
    /// The phase is due to end but these gates cannot judge: the cell waits (policy `unjudged: block`).
    case blocked([String])
}

public enum CellStateMachine {
    public static func step(_ s: CellState, _ event: CellEvent, policy: RolloutPolicy) -> (CellState, [CellAction]) {
        var next = s
        switch event {
        case .pause:
            guard s.status == .running || s.status == .baking else { return (s, []) }
            next.status = .paused
            return (next, [.paused(nil)])
        case .resume(let now):
            guard s.status == .paused else { return (s, []) }
            next.status = .running
            next.failedGate = nil
            next.bakeStartedAt = nil
            next.phaseStartedAt = now
            return (next, [.resumed])
        case .abort:
            guard s.status != .aborted && s.status != .rolledBack else { return (s, []) }
            next.status = .aborted
            return (next, [.aborted])
        case .promote(let now):
            guard s.status == .running || s.status == .baking || s.status == .paused else { return (s, []) }
            return advance(s, now: now, policy: policy)
        case .tick(let now, let o):
            guard s.status == .running || s.status == .baking else { return (s, []) }
            let results = GateEvaluator.evaluate(o, gates: policy.gates)
            next.gates = results
            if let failed = results.first(where: { $0.passed == false }) {
                next.failedGate = failed
                next.bakeStartedAt = nil
                switch policy.onFailure {
                case .pause: next.status = .paused; return (next, [.paused(failed)])
                case .rollback: next.status = .rolledBack; return (next, [.rolledBack(failed)])
                }
            }
            if s.status == .running {
                guard o.targeted > 0 ? o.finished >= o.targeted : true else { return (next, []) }
                next.status = .baking
                next.bakeStartedAt = now
                if policy.phases[s.phase].bakeSeconds <= 0 {
                    return advanceIfJudged(next, results, now: now, policy: policy, extra: [.startedBake])
                }
                return (next, [.startedBake])
            }
            guard let bake = s.bakeStartedAt, now - bake >= policy.phases[s.phase].bakeSeconds else { return (next, []) }
            return advanceIfJudged(next, results, now: now, policy: policy)
        }
    }

    /// The end of a phase's bake: the next phase, unless a gate has not judged and the policy
    /// blocks on that. The block is recorded once, when it starts or its gates change.
    private static func advanceIfJudged(
        _ s: CellState, _ results: [GateResult], now: Int64, policy: RolloutPolicy,
        extra: [CellAction] = []
    ) -> (CellState, [CellAction]) {
        let unjudged = results.filter { $0.passed == nil }.map(\.metric)
        guard policy.gates.blocksUnjudged, !unjudged.isEmpty else {
            return advance(s, now: now, policy: policy, extra: extra)
        }
        var next = s
        let changed = s.blockedBy != unjudged
        next.blockedBy = unjudged
        return (next, extra + (changed ? [.blocked(unjudged)] : []))
    }

    private static func advance(_ s: CellState, now: Int64, policy: RolloutPolicy, extra: [CellAction] = []) -> (CellState, [CellAction]) {
        var next = s
        next.bakeStartedAt = nil
        next.failedGate = nil
        next.blockedBy = nil
        if s.phase + 1 >= policy.phases.count {
            next.status = .completed
            return (next, extra + [.completed])
        }
        next.phase = s.phase + 1
        next.status = .running
        next.phaseStartedAt = now
        return (next, extra + [.enteredPhase(next.phase)])
    }
}
