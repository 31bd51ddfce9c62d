import FleetClient
import FleetCore
import FleetDelta
import Logging
#if canImport(Glibc)
    import Glibc
#endif

/// Drives the install state machine for one job: journals every new state before it performs
/// the state's action, and turns each action's outcome into the next event.
final class Installer {
    let slots: ModelSlots
    let state: AgentState
    let http: HTTPClient
    let health: HealthCheck
    /// The operator's benchmark, run on each staged model before it goes live.
    var benchmark = Benchmark(command: nil, timeoutSeconds: 120, energyCounters: [])
    let controllerURL: String
    let rateLimit: Int64?
    let logger: Logger
    let shouldStop: @Sendable () -> Bool
    /// The journal and the outbox, changed only through their owner.
    let records: AgentRecords
    var journal: Journal { records.journal }
    var outbox: Outbox { records.outbox }
    /// Measured on the last download big enough to say something about the link.
    var link: LinkStats?
    /// Applies a delta package: (base file, patch file, output file, the release's signed target).
    /// It must leave `output` only when it is exactly that target (`DeltaDecoder.apply(expecting:)`
    /// checks it once, while writing), so staging does not read the result again.
    var applyDelta: ((String, String, String, (sha256: String, size: Int64)) throws -> Void)?
    /// How failed attempts are retried: the device's tier policy from its last check-in.
    var retryPolicy = RetryPolicy.default
    /// Bytes downloaded by the current job's attempt, for the retry byte cap.
    private var attemptBytes: Int64 = 0
    /// The agent's own binaries (agent releases), and how it hands over to a new one.
    let agentLauncher: AgentLauncher
    var agentBinaries: AgentBinaries { agentLauncher.binaries }
    /// Seconds a new agent binary has, from the hand-over, to check in and commit.
    var agentDeadlineSeconds: Int64 = 300
    /// The trial this process is on: it is the new agent and commits after its first check-in.
    var agentOnTrial: AgentTrial?
    /// Test hook for crash tests: `journal:PHASE` or `action:NAME` makes the agent SIGKILL itself
    /// there. Debug builds only: a release agent (the packaged one) has no such switch.
    #if DEBUG
        let crashPoint = ProcessEnvironment.get("EDGEFLEET_CRASH_POINT")
    #else
        let crashPoint: String? = nil
    #endif

    init(
        slots: ModelSlots, state: AgentState, http: HTTPClient, health: HealthCheck, controllerURL: String, rateLimit: Int64?,
        logger: Logger, shouldStop: @escaping @Sendable () -> Bool, records: AgentRecords
    ) {
        self.slots = slots; self.state = state; self.http = http; self.health = health; self.controllerURL = controllerURL
        self.rateLimit = rateLimit; self.logger = logger; self.shouldStop = shouldStop; self.records = records
        agentLauncher = AgentLauncher(stateDirectory: state.root, logger: logger)
    }

    enum Outcome: Equatable { case finished(InstallPhase), paused(String) }

    /// Starts a new job for a model.
    func start(_ job: InstallJob) throws -> Outcome {
        attemptBytes = 0
        let (next, actions) = try InstallStateMachine.transition(records.install(job.model), .start(job))
        try record(job.model, next)
        return try drive(model: job.model, actions: actions)
    }

    /// Continues a job a crash or a cut connection interrupted.
    func resume(model: String) throws -> Outcome {
        let s = records.install(model)
        let actions = InstallStateMachine.recoveryActions(s)
        if actions.isEmpty { return .finished(s.phase) }
        if !s.phase.isTerminal { logger.info("resuming install", metadata: ["model": "\(model)", "phase": "\(s.phase.rawValue)"]) }
        return try drive(model: model, actions: actions)
    }

    /// After the agent started again: the journal counts the restart in an unfinished phase before
    /// acting, so that a phase the agent keeps dying in ends after `limit` restarts (a crash loop)
    /// instead of being retried forever; the clean-up of a finished job runs again.
    func recoverAfterStart(model: String, limit: Int) throws -> Outcome {
        let s = records.install(model)
        guard !s.phase.isTerminal else { return try resume(model: model) }
        let (next, actions) = try InstallStateMachine.transition(s, .restarted(limit: limit))
        if next.fault == .crashLoop {
            logger.error(
                "crash loop", metadata: ["model": "\(model)", "phase": "\(s.phase.rawValue)", "restarts": "\(next.restarts ?? limit)"])
        } else if next.phase != .downloading {
            logger.warning(
                "restarted during an install",
                metadata: [
                    "model": "\(model)", "phase": "\(s.phase.rawValue)",
                    "restarts": "\(next.restarts ?? 0)", "limit": "\(limit)"
                ])
        }
        // Journaled without the crash hook: the hook fires on the step's own first journal entry.
        try records.recordInstall(model: model, next)
        return try drive(model: model, actions: actions)
    }

    private func record(_ model: String, _ s: InstallState) throws {
        try records.recordInstall(model: model, s)
        crash(at: "journal:\(s.phase.rawValue)")
    }

    /// Turns a failed step into a retry at a later time or a final failure, by the tier's policy.
    private func decideRetry(_ job: InstallJob, why: String, fault: InstallFault) -> InstallEvent {
        let now = Clock.wall()
        if job.isDelta, records.deltaFailed[job.model] == job.sha256 {
            // This delta assignment is done with; the next check-in asks for the whole artifact:
            // another assignment (a higher counter), with retries of its own.
            var r = RetryRecord(
                counter: job.counter, sha256: job.sha256, attempts: 1, bytesSpent: attemptBytes, lastFault: fault, gaveUp: true)
            if let old = records.retry(job.model), old.counter == job.counter { r.attempts = old.attempts + 1 }
            records.noteAttempt(model: job.model, r)
            return .failed(why + "; asking for the full artifact", fault: fault, retryAt: now)
        }
        let (r, decision) = RetryLedger.afterFailure(
            records.retry(job.model), counter: job.counter, sha256: job.sha256, fault: fault,
            bytes: attemptBytes, policy: retryPolicy, now: now, jitter: Double.random(in: 0.5...1))
        records.noteAttempt(model: job.model, r)
        let p = retryPolicy.clamped()
        switch decision {
        case .retryAt(let t):
            logger.warning(
                "install attempt failed; retrying later",
                metadata: [
                    "model": "\(job.model)", "fault": "\(fault.rawValue)", "attempt": "\(r.attempts)", "of": "\(p.maxAttempts)",
                    "retry_in_s": "\(t - now)", "bytes_spent": "\(r.bytesSpent)"
                ])
            return .failed("\(why) (attempt \(r.attempts) of \(p.maxAttempts))", fault: fault, retryAt: t)
        case .giveUp(let final):
            if final == .retriesExhausted {
                logger.error(
                    "install given up",
                    metadata: [
                        "model": "\(job.model)", "fault": "\(fault.rawValue)", "attempts": "\(r.attempts)",
                        "bytes_spent": "\(r.bytesSpent)"
                    ])
                return .failed(
                    "\(why); given up after \(r.attempts) attempts and \(ByteCount.format(r.bytesSpent))", fault: .retriesExhausted)
            }
            return .failed(why, fault: fault)
        }
    }

    func crash(at point: String) {
        if crashPoint == point {
            logger.warning("injected crash", metadata: ["point": "\(point)"])
            kill(getpid(), SIGKILL)
        }
    }

    /// Journals the state `event` leads to and performs its actions.
    func apply(model: String, _ event: InstallEvent) throws -> Outcome {
        let (next, actions) = try InstallStateMachine.transition(records.install(model), event)
        try record(model, next)
        return try drive(model: model, actions: actions)
    }

    private func drive(model: String, actions initial: [InstallAction]) throws -> Outcome {
        var queue = initial
        while !queue.isEmpty {
            let action = queue.removeFirst()
            let result = try perform(action)
            crash(at: "action:\(Self.name(action))")
            switch result {
            case .none: continue
            case .pause(let why): return .paused(why)
            case .event(var event):
                if case .failed(let why, let fault, nil) = event, let job = records.install(model).job {
                    event = decideRetry(job, why: why, fault: fault ?? .writeFailed)
                }
                let (next, more) = try InstallStateMachine.transition(records.install(model), event)
                try record(model, next)
                queue = more + queue
            }
        }
        return .finished(records.install(model).phase)
    }

    enum StepResult { case none, event(InstallEvent), pause(String) }

    static func name(_ a: InstallAction) -> String {
        switch a {
        case .download: "download"
        case .verify: "verify"
        case .stage: "stage"
        case .activate: "activate"
        case .checkHealth: "checkHealth"
        case .commit: "commit"
        case .rollback: "rollback"
        case .discard: "discard"
        case .report: "report"
        }
    }

    private func perform(_ action: InstallAction) throws -> StepResult {
        switch action {
        case .report(let r):
            try records.report(
                r.kind, time: Clock.wall(), model: r.model, sha256: r.sha256, release: r.release, detail: r.detail, fault: r.fault,
                retryAt: r.retryAt)
            if r.kind == .committed {
                // Runtime metrics name the release of what runs; entries of removed slots go.
                let models = Set(slots.installed().keys).union([r.model])
                try records.recordCommitted(model: r.model, sha256: r.sha256, release: r.release) { sha in
                    models.contains { FS.isDirectoryNoFollow(slots.slotPath($0, sha)) }
                }
            }
            logger.info(
                "install \(r.kind)", metadata: ["model": "\(r.model)", "sha256": "\(r.sha256.prefix(12))", "detail": "\(r.detail ?? "")"])
            return .none
        case .download(let job): return download(job)
        case .verify(let job): return verify(job)
        case .stage(let job):
            do {
                if job.isAgent {
                    try agentBinaries.stage(
                        sha256: job.sha256, size: job.size, fileName: job.fileName, from: state.downloadPath(job.sha256))
                    if let wait = try awaitWindow(job) { return wait }
                    return .event(.staged)
                }
                if let package = job.package, job.isDelta {
                    try stageDelta(job, package)
                } else {
                    try slots.stage(model: job.model, sha256: job.sha256, fileName: job.fileName, size: job.size) {
                        path throws(AgentIOError) in
                        try FS.linkOrCopy(state.downloadPath(job.sha256), path)
                    }
                }
                if let wait = try awaitWindow(job) { return wait }
                try measure(job)
                return .event(.staged)
            } catch let e as DeltaApplyError {
                records.noteDeltaFailed(model: job.model, target: job.sha256)
                return .event(.failed("delta could not be applied: \(e.message)", fault: .deltaFailed))
            } catch let e as AgentIOError where e.code == .noSpace {
                return .event(.failed("staging failed: \(e)", fault: .noSpace))
            } catch {
                return .event(.failed("staging failed: \(error)", fault: .stagingFailed))
            }
        case .activate(let job) where job.isAgent:
            return handOver(job)
        case .checkHealth(let job) where job.isAgent:
            // The new agent's health is its first successful check-in (`agentCheckedIn`).
            return .pause("waiting for the new agent's first check-in")
        case .commit(let job) where job.isAgent:
            alarm(0)
            try agentBinaries.commit(job.sha256)
            try agentBinaries.removeTrial()
            agentOnTrial = nil
            agentBinaries.prune(keep: Set([job.sha256] + (job.previousSha256.map { [$0] } ?? [])))
            unlink(state.downloadPath(job.sha256))
            return .none
        case .rollback(let job) where job.isAgent:
            // `current` still names the previous binary: giving the trial up is the whole rollback.
            try agentBinaries.removeTrial()
            return .event(.rolledBack)
        case .discard(let job) where job.isAgent:
            unlink(state.downloadPath(job.sha256))
            if agentOnTrial?.new != job.sha256 { agentBinaries.remove(job.sha256) }
            return .none
        case .activate(let job):
            do {
                try slots.point(model: job.model, at: job.sha256)
                return .event(.activated)
            } catch {
                return .event(.unhealthy("activation failed: \(error)", fault: .activationFailed))
            }
        case .checkHealth(let job):
            let path = "\(slots.root)/\(job.model)/current/\(job.fileName)"
            switch health.run(model: job.model, sha256: job.sha256, modelPath: path, slot: slots.slotPath(job.model, job.sha256)) {
            case .healthy: return .event(.healthy)
            case .unhealthy(let why): return .event(.unhealthy(why, fault: .healthCheck))
            }
        case .commit(let job):
            slots.prune(model: job.model, keep: Set([job.sha256] + (job.previousSha256.map { [$0] } ?? [])))
            unlink(state.downloadPath(job.downloadSha256))
            records.clearDeltaFailed(model: job.model)
            return .none
        case .rollback(let job):
            try slots.point(model: job.model, at: job.previousSha256)
            return .event(.rolledBack)
        case .discard(let job):
            unlink(state.downloadPath(job.downloadSha256))
            slots.removeSlot(model: job.model, sha256: job.sha256)
            return .none
        }
    }

    /// Staged outside the assignment's maintenance windows: the job waits (journaled as such), and
    /// each cycle stages again (a no-op) until a window opens. nil: go on and activate.
    private func awaitWindow(_ job: InstallJob) throws -> StepResult? {
        guard let windows = job.activation else { return nil }
        let now = Clock.wall()
        guard !MaintenanceWindow.allows(windows, at: now) else { return nil }
        var s = records.install(job.model)
        guard s.phase == .staged else { return nil }
        let next = windows.filter { $0.end > now }.map(\.start).min()
        if s.awaitingWindow != true {
            s.awaitingWindow = true
            try records.recordInstall(model: job.model, s)
            logger.info(
                "staged; waiting for the maintenance window",
                metadata: [
                    "model": "\(job.model)", "sha256": "\(job.sha256.prefix(12))",
                    "opens_in_s": "\(next.map { String($0 - now) } ?? "none signed; the next check-in renews them")"
                ])
        }
        return .pause("waiting-for-window")
    }

    /// The operator's benchmark on the staged slot, reported as an event; it measures, it does not
    /// decide (the health check does).
    private func measure(_ job: InstallJob) throws {
        let slot = slots.slotPath(job.model, job.sha256)
        guard
            let outcome = benchmark.run(
                model: job.model, sha256: job.sha256, modelPath: slot + "/" + job.fileName, slot: slot,
                scratch: state.root)
        else { return }
        switch outcome {
        case .measured(let report):
            let detail = String(decoding: try FleetJSON.encode(report), as: UTF8.self)
            try records.report(.benchmark, time: Clock.wall(), model: job.model, sha256: job.sha256, release: job.release, detail: detail)
            logger.info(
                "benchmark",
                metadata: [
                    "model": "\(job.model)", "sha256": "\(job.sha256.prefix(12))", "p50_ms": "\(report.latencyP50Ms)",
                    "joules_per_inference": "\(report.joulesPerInference.map { "\($0)" } ?? report.energyUnavailable ?? "-")"
                ])
        case .failed(let why):
            try records.report(
                .benchmarkFailed, time: Clock.wall(), model: job.model, sha256: job.sha256, release: job.release, detail: why)
            logger.warning("benchmark failed", metadata: ["model": "\(job.model)", "error": "\(why)"])
        }
    }

    private func download(_ job: InstallJob) -> StepResult {
        let path = state.downloadPath(job.downloadSha256)
        let have = FS.fileSize(path) ?? 0
        let need = max(0, job.downloadSize - have)
        let margin: Int64 = 4 << 20
        let same = sameFilesystem(state.downloads, slots.root)
        // A full artifact becomes the slot by a hard link on the same filesystem; a delta needs room
        // for the package and the whole new model beside the base.
        let slotNeed: Int64 = FS.isDirectoryNoFollow(slots.slotPath(job.model, job.sha256)) ? 0 : (job.isDelta || !same ? job.size : 0)
        if let free = FS.freeBytes(state.downloads), free < need + (same ? slotNeed : 0) + margin {
            return .event(
                .failed(
                    "no space: need \(ByteCount.format(need + (same ? slotNeed : 0) + margin)), \(ByteCount.format(free)) free",
                    fault: .noSpace))
        }
        if !same, let free = FS.freeBytes(slots.root), free < slotNeed + margin {
            return .event(
                .failed(
                    "no space for the model slot: need \(ByteCount.format(slotNeed + margin)), \(ByteCount.format(free)) free",
                    fault: .noSpace))
        }
        let url = job.downloadURL.hasPrefix("/") ? controllerURL + job.downloadURL : job.downloadURL
        var delay = 1.0
        for attempt in 1...4 {
            if shouldStop() { return .pause("stopping") }
            do {
                let r = try http.download(
                    url, to: path, maxBytes: job.downloadSize, rateLimitBytesPerSecond: rateLimit, shouldCancel: shouldStop)
                attemptBytes += r.bytesReceived
                if r.bytesReceived >= 256 * 1024, r.seconds > 0 {
                    link = LinkStats(mbps: Double(r.bytesReceived) * 8 / r.seconds / 1e6, bytes: r.bytesReceived)
                }
                if r.fileSize == job.downloadSize { return .event(.downloaded) }
                logger.warning(
                    "download ended early", metadata: ["have": "\(r.fileSize)", "want": "\(job.downloadSize)", "attempt": "\(attempt)"])
            } catch let e {
                switch e.code {
                case .tooLarge: unlink(path); return .event(.failed("artifact longer than signed: \(e.message)", fault: .tooLarge))
                case .io:
                    // Most often a full disk: the partial file goes now, so that the space is back
                    // before anything else (the journal among them) needs to be written.
                    let full = FS.freeBytes(state.downloads).map { $0 < 1 << 20 } ?? false
                    unlink(path)
                    return .event(.failed("download write failed: \(e.message)", fault: full ? .noSpace : .writeFailed))
                case .cancelled: return .pause("stopping")
                default:
                    if !e.isTransient { return .event(.failed("download refused: \(e.message)", fault: .downloadRefused)) }
                    logger.warning(
                        "download interrupted", metadata: ["error": "\(e)", "attempt": "\(attempt)", "have": "\(FS.fileSize(path) ?? 0)"])
                }
            }
            if attempt < 4 { usleep(UInt32(delay * 1_000_000)); delay *= 2 }
        }
        return .pause("download incomplete; resuming on the next cycle")
    }

    private func verify(_ job: InstallJob) -> StepResult {
        let path = state.downloadPath(job.downloadSha256)
        do {
            let (sha, length) = try FS.sha256(path)
            guard length == job.downloadSize, sha == job.downloadSha256 else {
                unlink(path)
                // A bad delta package: the next check-in asks for the whole artifact instead.
                if job.isDelta { records.noteDeltaFailed(model: job.model, target: job.sha256) }
                return .event(
                    length != job.downloadSize
                        ? .failed("length \(length) differs from the signed \(job.downloadSize)", fault: .lengthMismatch)
                        : .failed("sha256 \(sha) differs from the signed \(job.downloadSha256)", fault: .hashMismatch))
            }
            return .event(.verified)
        } catch {
            return .event(.failed("cannot verify: \(error)", fault: .writeFailed))
        }
    }

    /// Applies a delta from the base slot into the new slot; the result must hash to the
    /// release-signed sha256 before the slot exists.
    private func stageDelta(_ job: InstallJob, _ package: PackageRef) throws {
        guard let base = package.baseSha256, slots.current(job.model) == base || FS.isDirectoryNoFollow(slots.slotPath(job.model, base)),
            let baseFile = FS.listDirectory(slots.slotPath(job.model, base)).first
        else {
            throw DeltaApplyError(message: "base \(package.baseSha256?.prefix(12) ?? "none") is not installed")
        }
        guard let applyDelta else { throw DeltaApplyError(message: "this agent has no delta decoder") }
        let basePath = slots.slotPath(job.model, base) + "/" + baseFile
        let patch = state.downloadPath(job.downloadSha256)
        var deltaFailure: String?
        do {
            try slots.stage(model: job.model, sha256: job.sha256, fileName: job.fileName, size: job.size) { path throws(AgentIOError) in
                do {
                    try applyDelta(basePath, patch, path, (job.sha256, job.size))
                } catch let e as AgentIOError where e.code == .noSpace {
                    throw e
                } catch let e as DeltaError where e.systemError == ENOSPC {
                    // The package is fine; the disk is full. Tried again later, the same delta.
                    throw AgentIOError(.noSpace, path, "delta: \(e)")
                } catch {
                    deltaFailure = "\(error)"
                    throw AgentIOError(.io, path, "delta: \(error)")
                }
            }
        } catch {
            if let deltaFailure { throw DeltaApplyError(message: deltaFailure) }
            throw error
        }
    }

    private func sameFilesystem(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev
    }
}

struct DeltaApplyError: Error { let message: String }
