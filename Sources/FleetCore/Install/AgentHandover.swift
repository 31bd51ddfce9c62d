/// A new agent binary on trial: written (atomically, fsynced) before the running agent hands
/// over to it, removed once it committed. While it exists, `current` still names the committed
/// binary, so whatever happens the previous one is what a restart falls back to.
public struct AgentTrial: Codable, Equatable, Sendable {
    /// The journal's key for the agent install (`ReleaseKind.agentModel`).
    public var model: String
    public var release: String
    public var counter: UInt64
    /// The binary that ran when the trial began: a committed slot's sha256, or the packaged binary's.
    public var previous: String?
    /// The slot on trial.
    public var new: String
    /// By this time (the device's wall clock, Unix seconds) the new agent must have checked in.
    public var deadline: Int64
    /// Hand-overs to `new` so far: one only, a restart after it means the new agent did not make it.
    public var attempts: Int
    /// Set when the trial is given up: why. The rollback then runs in the agent that starts next.
    public var abandoned: InstallFault?

    public init(
        model: String, release: String, counter: UInt64, previous: String?, new: String, deadline: Int64,
        attempts: Int = 0, abandoned: InstallFault? = nil
    ) {
        self.model = model; self.release = release; self.counter = counter; self.previous = previous; self.new = new
        self.deadline = deadline; self.attempts = attempts; self.abandoned = abandoned
    }

    /// On trial: handed over to, not given up.
    public var isLive: Bool { abandoned == nil }
}

/// What an agent process does first, before it loads anything: run as it is, or exec another
/// binary (the committed slot, or the slot on trial). Pure: the caller reads the trial record,
/// the committed slot and the hand-over marker the previous process left in the environment, and
/// performs the plan, writing the trial record before it execs.
///
/// Never a loop: a process that was itself handed over to never hands over again at start, and
/// a trial is handed over to once; a restart after that (the new agent exited, crashed, was
/// killed or hung past its deadline) gives the trial up and falls back to the committed binary.
public enum AgentHandover {
    public enum TrialChange: Equatable, Sendable {
        case keep
        case write(AgentTrial)
        case remove
    }

    public enum Next: Equatable, Sendable {
        /// Go on in this process (with no trial to prove, or after a trial was given up).
        case run
        /// Go on in this process: it is the new agent on trial, and commits after its first check-in.
        case runOnTrial(AgentTrial)
        /// Exec the committed slot.
        case execCommitted(String)
        /// Exec the slot on trial; it must check in by `deadline`.
        case execTrial(String, deadline: Int64)
    }

    public struct Plan: Equatable, Sendable {
        public var trial: TrialChange
        public var next: Next
        public init(_ trial: TrialChange, _ next: Next) { self.trial = trial; self.next = next }
    }

    /// - Parameters:
    ///   - trial: the trial record on disk, if any.
    ///   - committed: the sha256 of the committed slot, if one exists and holds its binary.
    ///   - handedOver: the sha256 the process that exec'd this one named; nil for a fresh start.
    public static func plan(trial: AgentTrial?, committed: String?, handedOver: String?, now: Int64) -> Plan {
        if let me = handedOver {
            if let t = trial, t.isLive, t.new == me { return Plan(.keep, .runOnTrial(t)) }
            return Plan(.keep, .run)
        }
        guard var t = trial, t.isLive else {
            return Plan(.keep, committed.map { .execCommitted($0) } ?? .run)
        }
        // The commit had switched `current` when it was cut short: the new agent is the committed one.
        if committed == t.new { return Plan(.remove, .execCommitted(t.new)) }
        if t.attempts == 0, now < t.deadline {
            t.attempts = 1
            return Plan(.write(t), .execTrial(t.new, deadline: t.deadline))
        }
        t.abandoned = now >= t.deadline ? .agentDeadline : .agentExited
        return Plan(.write(t), committed.map { .execCommitted($0) } ?? .run)
    }
}
