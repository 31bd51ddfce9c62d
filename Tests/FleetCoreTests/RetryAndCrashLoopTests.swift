import Testing
@testable import FleetCore

/// Failures handled once: a failed assignment is retried with backoff up to a cap, a verdict on
/// the release (a failed health check, a crash loop) is never retried.
@Suite struct RetryAndCrashLoopTests {
    static let job = InstallStateMachineTests.job
    private var job: InstallJob { Self.job }

    // MARK: Retry ledger

    @Test func backoffDoublesWithJitterUpToTheCap() {
        let p = RetryPolicy(maxAttempts: 10, baseDelaySeconds: 60, maxDelaySeconds: 600)
        #expect(p.delay(afterAttempt: 1, jitter: 1) == 60)
        #expect(p.delay(afterAttempt: 2, jitter: 1) == 120)
        #expect(p.delay(afterAttempt: 3, jitter: 1) == 240)
        #expect(p.delay(afterAttempt: 5, jitter: 1) == 600)
        #expect(p.delay(afterAttempt: 64, jitter: 1) == 600)  // no overflow
        #expect(p.delay(afterAttempt: 1, jitter: 0.5) == 30)
        #expect(p.delay(afterAttempt: 1, jitter: 0) == 30)  // jitter is clamped to [0.5, 1]
        #expect(p.delay(afterAttempt: 1, jitter: .nan) == 60)
    }

    /// The corrupted-artifact storm: every attempt fails verification. Three attempts, then the
    /// device gives the assignment up and says so.
    @Test func corruptArtifactIsFetchedAtMostMaxAttemptsTimes() {
        let p = RetryPolicy(maxAttempts: 3, baseDelaySeconds: 60, maxDelaySeconds: 3600)
        var record: RetryRecord? = nil
        var now: Int64 = 1_000
        var decisions: [RetryDecision] = []
        for _ in 0..<3 {
            #expect(record?.allows(counter: 7, now: now) ?? true)
            let (r, d) = RetryLedger.afterFailure(
                record, counter: 7, sha256: job.sha256, fault: .hashMismatch, bytes: 1_000,
                policy: p, now: now, jitter: 1)
            record = r; decisions.append(d)
            if case .retryAt(let t) = d {
                #expect(!r.allows(counter: 7, now: t - 1))  // not before its time
                now = t
            }
        }
        #expect(decisions == [.retryAt(1_060), .retryAt(1_180), .giveUp(.retriesExhausted)])
        #expect(record?.gaveUp == true && record?.attempts == 3 && record?.bytesSpent == 3_000)
        #expect(record?.allows(counter: 7, now: .max) == false)
        // A new assignment (an operator's retry, a newer release) starts over.
        #expect(record?.allows(counter: 8, now: now) == true)
        let (fresh, d) = RetryLedger.afterFailure(
            record, counter: 8, sha256: job.sha256, fault: .hashMismatch, bytes: 1, policy: p, now: now, jitter: 1)
        #expect(fresh.attempts == 1 && d == .retryAt(now + 60))
    }

    @Test func byteCapStopsRetriesOnAMeteredLink() {
        let p = RetryPolicy(maxAttempts: 10, baseDelaySeconds: 1, maxDelaySeconds: 10, maxRetryBytes: 50_000_000)
        let (r1, d1) = RetryLedger.afterFailure(
            nil, counter: 1, sha256: job.sha256, fault: .lengthMismatch, bytes: 30_000_000, policy: p, now: 0, jitter: 1)
        #expect(d1 == .retryAt(1))
        let (r2, d2) = RetryLedger.afterFailure(
            r1, counter: 1, sha256: job.sha256, fault: .lengthMismatch, bytes: 30_000_000, policy: p, now: 1, jitter: 1)
        #expect(d2 == .giveUp(.retriesExhausted) && r2.bytesSpent == 60_000_000)
    }

    @Test(arguments: [InstallFault.healthCheck, .crashLoop, .tooLarge, .activationFailed])
    func verdictsOnTheReleaseAreNeverRetried(_ fault: InstallFault) {
        let (r, d) = RetryLedger.afterFailure(
            nil, counter: 1, sha256: job.sha256, fault: fault, bytes: 0, policy: .default, now: 0, jitter: 1)
        #expect(d == .giveUp(fault) && r.gaveUp && r.attempts == 1)
    }

    @Test func unsignedPolicyIsClamped() {
        let wild = RetryPolicy(maxAttempts: 1_000_000, baseDelaySeconds: -5, maxDelaySeconds: .max, maxRetryBytes: -1).clamped()
        #expect(wild.maxAttempts == 10 && wild.baseDelaySeconds == 1 && wild.maxDelaySeconds == 7 * 86_400 && wild.maxRetryBytes == 0)
    }

    // MARK: State machine: retry and final failure

    @Test func failureWithARetryTimeReportsRetrying() throws {
        let (next, actions) = try InstallStateMachine.transition(
            InstallState(phase: .verifying, job: job),
            .failed("sha256 differs", fault: .hashMismatch, retryAt: 500))
        #expect(next.phase == .failed && next.fault == .hashMismatch && next.retryAt == 500)
        #expect(
            actions == [
                .discard(job),
                .report(InstallReport(kind: "retrying", job: job, detail: "sha256 differs", fault: .hashMismatch, retryAt: 500))
            ])
    }

    @Test func healthFailureCarriesItsFaultIntoTheRollbackReport() throws {
        let (rolling, _) = try InstallStateMachine.transition(
            InstallState(phase: .checkingHealth, job: job), .unhealthy("exit 1", fault: .healthCheck))
        let (done, actions) = try InstallStateMachine.transition(rolling, .rolledBack)
        #expect(done.fault == .healthCheck)
        #expect(actions.contains(.report(InstallReport(kind: "rolled-back", job: job, detail: "exit 1", fault: .healthCheck))))
    }

    // MARK: Crash loop

    /// An agent killed during the health check over and over: the restarts are journaled, and the
    /// third ends in a rollback reported as a crash loop.
    @Test func crashLoopInTheHealthCheckRollsBackAfterTheLimit() throws {
        var s = InstallState(phase: .checkingHealth, job: job)
        var (next, actions) = try InstallStateMachine.transition(s, .restarted(limit: 3))
        #expect(next.phase == .checkingHealth && next.restarts == 1 && actions == [.checkHealth(job)])
        s = next
        (next, actions) = try InstallStateMachine.transition(s, .restarted(limit: 3))
        #expect(next.restarts == 2 && actions == [.checkHealth(job)])
        s = next
        (next, actions) = try InstallStateMachine.transition(s, .restarted(limit: 3))
        #expect(next.phase == .rollingBack && next.fault == .crashLoop && actions == [.rollback(job)])
        let (done, after) = try InstallStateMachine.transition(next, .rolledBack)
        #expect(done.phase == .rolledBack && done.fault == .crashLoop)
        #expect(after.contains(.report(InstallReport(kind: "rolled-back", job: job, detail: done.failure, fault: .crashLoop))))
    }

    @Test func crashLoopBeforeActivationFailsWithoutTouchingTheLiveModel() throws {
        let s = InstallState(phase: .verifying, job: job, restarts: 2)
        let (next, actions) = try InstallStateMachine.transition(s, .restarted(limit: 3))
        #expect(next.phase == .failed && next.fault == .crashLoop && next.retryAt == nil)
        #expect(!actions.contains(.rollback(job)) && actions.first == .discard(job))
    }

    /// A cut download resumed after a stop is not a crash: it is never counted.
    @Test func resumedDownloadsAreNotCounted() throws {
        var s = InstallState(phase: .downloading, job: job)
        for _ in 0..<10 {
            let (next, actions) = try InstallStateMachine.transition(s, .restarted(limit: 3))
            #expect(next == s && actions == [.download(job)])
            s = next
        }
    }

    /// A staged model waiting for its maintenance window survives any number of restarts (nightly
    /// reboots, `--once` runs); a staged one not waiting is counted as before.
    @Test func waitingForAWindowIsNotACrashLoop() throws {
        var s = InstallState(phase: .staged, job: job, awaitingWindow: true)
        for _ in 0..<10 {
            let (next, actions) = try InstallStateMachine.transition(s, .restarted(limit: 3))
            #expect(next == s && actions == [.stage(job)])
            s = next
        }
        let (counted, _) = try InstallStateMachine.transition(InstallState(phase: .staged, job: job, restarts: 2), .restarted(limit: 3))
        #expect(counted.phase == .failed && counted.fault == .crashLoop)
        // Once the window opens and the model goes live, the mark is gone.
        let (activating, _) = try InstallStateMachine.transition(s, .staged)
        #expect(activating.phase == .activating && activating.awaitingWindow == nil)
    }

    @Test func restartsStartOverInEachPhase() throws {
        let s = InstallState(phase: .activating, job: job, restarts: 2)
        let (next, _) = try InstallStateMachine.transition(s, .activated)
        #expect(next.phase == .checkingHealth && next.restarts == nil)
    }

    @Test(arguments: [InstallPhase.committed, .rolledBack, .failed])
    func restartAfterAFinishedJobOnlyCleansUp(_ phase: InstallPhase) throws {
        let s = InstallState(phase: phase, job: job)
        let (next, actions) = try InstallStateMachine.transition(s, .restarted(limit: 1))
        #expect(next == s && actions == InstallStateMachine.recoveryActions(s))
    }
}
