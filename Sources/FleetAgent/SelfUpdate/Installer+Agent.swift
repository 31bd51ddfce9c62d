import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Agent releases through the install state machine: download, verify and stage as a model;
/// `activate` hands over to the new binary (the trial record first), `checkHealth` is the new
/// agent's first successful check-in, `commit` points `current` at it, `rollback` gives the trial up.
extension Installer {
    /// The activate step of an agent job: the trial record, then exec. Returns only on failure.
    func handOver(_ job: InstallJob) -> StepResult {
        guard agentBinaries.binary(job.sha256) != nil else {
            return .event(.unhealthy("the new agent's slot is missing", fault: .activationFailed))
        }
        let trial = AgentTrial(
            model: job.model, release: job.release, counter: job.counter, previous: job.previousSha256,
            new: job.sha256, deadline: Clock.wall() + agentDeadlineSeconds)
        do { try agentBinaries.save(trial) } catch {
            return .event(.unhealthy("trial record not written: \(error)", fault: .activationFailed))
        }
        crash(at: "handover:trial")
        agentLauncher.perform(AgentHandover.plan(trial: trial, committed: agentBinaries.committed(), handedOver: nil, now: Clock.wall()))
        return .event(.unhealthy("the new agent could not be started", fault: .activationFailed))
    }

    /// After a start, an agent job that reached the hand-over: this process is the new agent on
    /// trial (it waits for its check-in), the commit got as far as `current` (it is finished), or
    /// the trial was given up (rolled back, reported with the fault). Other jobs recover as models.
    func recoverAgentAfterStart(model: String, limit: Int) throws -> Outcome {
        let s = journal.installs[model] ?? .idle
        guard let job = s.job, job.isAgent, s.phase == .activating || s.phase == .checkingHealth else {
            return try recoverAfterStart(model: model, limit: limit)
        }
        let trial = try? agentBinaries.trial()
        if trial == nil, agentBinaries.committed() == job.sha256 {
            if s.phase == .activating { _ = try apply(model: model, .activated) }
            return try apply(model: model, .healthy)
        }
        if let t = trial, t.new == job.sha256, t.isLive, agentOnTrial?.new == job.sha256 {
            logger.info("new agent running; committing after its first check-in", metadata: ["sha256": "\(job.sha256.prefix(12))"])
            if s.phase == .activating { return try apply(model: model, .activated) }
            return try resume(model: model)
        }
        if let t = trial, t.new == job.sha256, let fault = t.abandoned {
            let why =
                fault == .agentDeadline
                ? "the new agent did not check in before its deadline" : "the new agent exited before its first check-in"
            return try apply(model: model, .unhealthy(why, fault: fault))
        }
        if s.phase == .activating, trial == nil {
            // Cut before the trial record: the hand-over is done again (a restart, counted).
            return try recoverAfterStart(model: model, limit: limit)
        }
        return try apply(model: model, .unhealthy("the new agent is not the one running", fault: .agentExited))
    }

    /// The new agent checked in: it commits. `current` moves first (the commit point: from then on a
    /// restart runs the new agent), then the journal says committed and the trial record goes.
    func agentCheckedIn() throws {
        guard let trial = agentOnTrial, let s = journal.installs[trial.model], s.phase == .checkingHealth,
            let job = s.job, job.isAgent, job.sha256 == trial.new
        else { return }
        alarm(0)
        crash(at: "handover:checked-in")
        try agentBinaries.commit(job.sha256)
        crash(at: "handover:current")
        _ = try apply(model: trial.model, .healthy)
    }
}
