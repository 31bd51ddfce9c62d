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

    public init(model: String, release: String, variant: String, sha256: String, size: Int64, fileName: String,
                url: String, counter: UInt64, previousSha256: String?, package: PackageRef? = nil) {
        self.model = model; self.release = release; self.variant = variant; self.sha256 = sha256
        self.size = size; self.fileName = fileName; self.url = url; self.counter = counter
        self.previousSha256 = previousSha256; self.package = package
    }

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

    public init(phase: InstallPhase = .idle, job: InstallJob? = nil, failure: String? = nil) {
        self.phase = phase; self.job = job; self.failure = failure
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
    case unhealthy(String)
    case failed(String)      // a step before activation failed: the live model was never touched
    case rolledBack          // the rollback action completed
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
    public var kind: String          // started, downloaded, verified, activated, committed, rolled-back, failed
    public var model: String
    public var sha256: String
    public var release: String
    public var detail: String?

    public init(kind: String, job: InstallJob, detail: String? = nil) {
        self.kind = kind; self.model = job.model; self.sha256 = job.sha256; self.release = job.release; self.detail = detail
    }
}

public struct InvalidTransition: Error, Equatable, CustomStringConvertible {
    public let phase: InstallPhase
    public let event: InstallEvent
    public var description: String { "event \(event) is not valid in phase \(phase.rawValue)" }
}

public enum InstallStateMachine {
    public static func transition(_ state: InstallState, _ event: InstallEvent) throws(InvalidTransition) -> (InstallState, [InstallAction]) {
        let bad = InvalidTransition(phase: state.phase, event: event)
        switch (state.phase, event) {
        case (let p, .start(let job)) where p.isTerminal:
            return (InstallState(phase: .downloading, job: job),
                    [.report(InstallReport(kind: "started", job: job)), .download(job)])
        case (.downloading, .downloaded):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .verifying, job: job), [.report(InstallReport(kind: "downloaded", job: job)), .verify(job)])
        case (.verifying, .verified):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .staged, job: job), [.report(InstallReport(kind: "verified", job: job)), .stage(job)])
        case (.staged, .staged):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .activating, job: job), [.activate(job)])
        case (.activating, .activated):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .checkingHealth, job: job), [.report(InstallReport(kind: "activated", job: job)), .checkHealth(job)])
        case (.checkingHealth, .healthy):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .committed, job: job), [.commit(job), .report(InstallReport(kind: "committed", job: job))])
        case (.checkingHealth, .unhealthy(let why)), (.activating, .unhealthy(let why)):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .rollingBack, job: job, failure: why), [.rollback(job)])
        case (.rollingBack, .rolledBack):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .rolledBack, job: job, failure: state.failure),
                    [.discard(job), .report(InstallReport(kind: "rolled-back", job: job, detail: state.failure))])
        case (.downloading, .failed(let why)), (.verifying, .failed(let why)), (.staged, .failed(let why)):
            guard let job = state.job else { throw bad }
            return (InstallState(phase: .failed, job: job, failure: why),
                    [.discard(job), .report(InstallReport(kind: "failed", job: job, detail: why))])
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
