/// The install of one model on a device as a pure transition table:
/// idle → downloading → verifying → staged → activating → checkingHealth → committed | rollingBack → rolledBack,
/// and failed for anything that goes wrong before the live model is touched.
///
/// The agent journals the new state before it performs the state's action, and every action is
/// idempotent, so after a crash it performs the journaled state's action again (`recoveryActions`).
public enum InstallPhase: String, Codable, Sendable, CaseIterable {
    case idle, downloading, verifying, staged, activating, checkingHealth, rollingBack, committed, rolledBack, failed

    /// Phases in which `current` may already point at the new slot.
    public var touchesLiveModel: Bool { self == .activating || self == .checkingHealth || self == .rollingBack }
    public var isTerminal: Bool { self == .idle || self == .committed || self == .rolledBack || self == .failed }
}

public struct InstallJob: Codable, Equatable, Sendable {
    public var model: String
    public var release: String
    public var variant: String
    public var sha256: String
    public var size: Int64
    public var fileName: String
    public var url: String
    public var counter: UInt64
    /// The slot that was current when the job started; nil on a first install.
    public var previousSha256: String?
    /// What is downloaded when it is not the artifact itself: a delta against `package.baseSha256`.
    public var package: PackageRef?
    /// The assignment's maintenance windows: staged at any time, activated only inside one; nil: any time.
    public var activation: [ActivationWindow]?
    /// `.agent`: the agent's own binary (its slots, a hand-over instead of a health command); nil: a model.
    public var kind: ReleaseKind?

    public init(
        model: String, release: String, variant: String, sha256: String, size: Int64, fileName: String,
        url: String, counter: UInt64, previousSha256: String?, package: PackageRef? = nil, activation: [ActivationWindow]? = nil,
        kind: ReleaseKind? = nil
    ) {
        self.model = model; self.release = release; self.variant = variant; self.sha256 = sha256
        self.size = size; self.fileName = fileName; self.url = url; self.counter = counter
        self.previousSha256 = previousSha256; self.package = package; self.activation = activation; self.kind = kind
    }

    public var isAgent: Bool { kind == .agent }

    /// The bytes fetched: the delta package, or the artifact.
    public var downloadSha256: String { package?.sha256 ?? sha256 }
    public var downloadSize: Int64 { package?.size ?? size }
    public var downloadURL: String { package?.url ?? url }
    public var isDelta: Bool { package?.kind == PackageRef.delta }
}

public struct InstallState: Codable, Equatable, Sendable {
    public var phase: InstallPhase
    public var job: InstallJob?
    public var failure: String?
    /// The fault class of `failure`, when the step that failed named one.
    public var fault: InstallFault?
    /// Times the agent restarted in this phase without finishing it (a crash, a kill, a power cut).
    public var restarts: Int?
    /// A failed attempt that will be tried again at this time (the device's clock).
    public var retryAt: Int64?
    /// Staged, and waiting for the assignment's maintenance window to open: restarts meanwhile are
    /// not a crash loop (the live model is untouched, staging again is idempotent).
    public var awaitingWindow: Bool?

    public init(
        phase: InstallPhase = .idle, job: InstallJob? = nil, failure: String? = nil, fault: InstallFault? = nil,
        restarts: Int? = nil, retryAt: Int64? = nil, awaitingWindow: Bool? = nil
    ) {
        self.phase = phase; self.job = job; self.failure = failure; self.fault = fault; self.restarts = restarts; self.retryAt = retryAt
        self.awaitingWindow = awaitingWindow
    }

    public static let idle = InstallState()
}

public enum InstallEvent: Equatable, Sendable {
    case start(InstallJob)
    case downloaded
    case verified
    case staged
    case activated
    case healthy
    case unhealthy(String, fault: InstallFault? = nil)
    /// A step before activation failed: the live model was never touched. With `retryAt` the agent
    /// will try the same assignment again then; without, it gives the assignment up.
    case failed(String, fault: InstallFault? = nil, retryAt: Int64? = nil)
    case rolledBack  // the rollback action completed
    /// The agent started again and found this state in its journal. After `limit` restarts in one
    /// phase the install is ended (a crash loop): rolled back once the live model may be touched,
    /// failed before that.
    case restarted(limit: Int)
}

public enum InstallAction: Equatable, Sendable {
    case download(InstallJob)
    case verify(InstallJob)
    case stage(InstallJob)
    case activate(InstallJob)
    case checkHealth(InstallJob)
    case commit(InstallJob)
    case rollback(InstallJob)
    case discard(InstallJob)
    case report(InstallReport)
}

public struct InstallReport: Codable, Equatable, Sendable {
    public var kind: EventKind
    public var model: String
    public var sha256: String
    public var release: String
    public var detail: String?
    public var fault: InstallFault?
    public var retryAt: Int64?

    public init(kind: EventKind, job: InstallJob, detail: String? = nil, fault: InstallFault? = nil, retryAt: Int64? = nil) {
        self.kind = kind; self.model = job.model; self.sha256 = job.sha256; self.release = job.release; self.detail = detail
        self.fault = fault; self.retryAt = retryAt
    }
}

public struct InvalidTransition: Error, Equatable, CustomStringConvertible {
    public let phase: InstallPhase
    public let event: InstallEvent
    public var description: String { "event \(event) is not valid in phase \(phase.rawValue)" }
}

public enum InstallStateMachine {
    public static func transition(_ state: InstallState, _ event: InstallEvent) throws(InvalidTransition) -> (InstallState, [InstallAction])
    {
        let bad = InvalidTransition(phase: state.phase, event: event)
        switch (state.phase, event) {
        case (let p, .start(let job)) where p.isTerminal:
            return (
                InstallState(phase: .downloading, job: job),
                [.report(InstallReport(kind: .started, job: job)), .download(job)]
            )
        case (.downloading, .downloaded):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .verifying, job: job), [.report(InstallReport(kind: .downloaded, job: job)), .verify(job)])
        case (.verifying, .verified):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .staged, job: job), [.report(InstallReport(kind: .verified, job: job)), .stage(job)])
        case (.staged, .staged):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .activating, job: job), [.activate(job)])
        case (.activating, .activated):
            guard let job = state.job else { throw bad }
            return (
                InstallState(phase: .checkingHealth, job: job), [.report(InstallReport(kind: .activated, job: job)), .checkHealth(job)]
            )
        case (.checkingHealth, .healthy):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .committed, job: job), [.commit(job), .report(InstallReport(kind: .committed, job: job))])
        case (.checkingHealth, .unhealthy(let why, let fault)), (.activating, .unhealthy(let why, let fault)):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .rollingBack, job: job, failure: why, fault: fault), [.rollback(job)])
        case (.rollingBack, .rolledBack):
            guard let job = state.job else { throw bad }
            return (
                InstallState(phase: .rolledBack, job: job, failure: state.failure, fault: state.fault),
                [.discard(job), .report(InstallReport(kind: .rolledBack, job: job, detail: state.failure, fault: state.fault))]
            )
        case (.downloading, .failed(let why, let fault, let retryAt)), (.verifying, .failed(let why, let fault, let retryAt)),
            (.staged, .failed(let why, let fault, let retryAt)):
            guard let job = state.job else { throw bad }
            let kind = retryAt == nil ? EventKind.failed : EventKind.retrying
            return (
                InstallState(phase: .failed, job: job, failure: why, fault: fault, retryAt: retryAt),
                [.discard(job), .report(InstallReport(kind: kind, job: job, detail: why, fault: fault, retryAt: retryAt))]
            )
        case (.downloading, .restarted):
            // An agent that stops (a `--once` run, SIGTERM) leaves a cut download to resume: not a crash.
            guard state.job != nil else { throw bad }
            return (state, recoveryActions(state))
        case (.staged, .restarted) where state.awaitingWindow == true:
            // Waiting for a maintenance window across restarts (reboots, `--once` runs): not a crash.
            guard state.job != nil else { throw bad }
            return (state, recoveryActions(state))
        case (let p, .restarted(let limit)) where !p.isTerminal:
            guard let job = state.job else { throw bad }
            let restarts = (state.restarts ?? 0) + 1
            guard restarts >= max(limit, 1) else {
                var again = state
                again.restarts = restarts
                return (again, recoveryActions(state))
            }
            let why = "crash loop: \(restarts) restarts in \(p.rawValue)"
            if p.touchesLiveModel {
                // Rolling back is itself the phase that keeps crashing: its action is retried as is,
                // since nothing safer than the previous slot exists.
                if p == .rollingBack { var again = state; again.restarts = restarts; return (again, [.rollback(job)]) }
                return (InstallState(phase: .rollingBack, job: job, failure: why, fault: .crashLoop), [.rollback(job)])
            }
            return (
                InstallState(phase: .failed, job: job, failure: why, fault: .crashLoop),
                [.discard(job), .report(InstallReport(kind: .failed, job: job, detail: why, fault: .crashLoop))]
            )
        case (let p, .restarted) where p.isTerminal:
            return (state, recoveryActions(state))
        default:
            throw bad
        }
    }

    /// What to do again after a restart in `state`. Every action is idempotent; for the terminal
    /// phases it is the clean-up a crash may have cut short.
    public static func recoveryActions(_ state: InstallState) -> [InstallAction] {
        guard let job = state.job else { return [] }
        switch state.phase {
        case .idle: return []
        case .committed: return [.commit(job)]
        case .rolledBack, .failed: return [.discard(job)]
        case .downloading: return [.download(job)]
        case .verifying: return [.verify(job)]
        case .staged: return [.stage(job)]
        case .activating: return [.activate(job)]
        // A crash during the health check gives no verdict: check again from the start.
        case .checkingHealth: return [.checkHealth(job)]
        case .rollingBack: return [.rollback(job)]
        }
    }
}
