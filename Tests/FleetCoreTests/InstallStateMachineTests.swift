import Testing
@testable import FleetCore

@Suite struct InstallStateMachineTests {
    static let job = InstallJob(
        model: "detector", release: "detector@1.2.0", variant: "detector-int8",
        sha256: Fixture.int8.sha256, size: Fixture.int8.size, fileName: "detector-int8.onnx",
        url: "https://cdn.example/a/x", counter: 7, previousSha256: Fixture.fp16.sha256)
    private var job: InstallJob { Self.job }

    private func report(_ kind: EventKind, _ detail: String? = nil) -> InstallAction {
        .report(InstallReport(kind: kind, job: job, detail: detail))
    }

    private func state(_ phase: InstallPhase, failure: String? = nil) -> InstallState {
        InstallState(phase: phase, job: job, failure: failure)
    }

    // MARK: Happy path

    @Test func happyPathRunsEveryStepInOrder() throws {
        let steps: [(InstallEvent, InstallPhase, [InstallAction])] = [
            (.start(job), .downloading, [report("started"), .download(job)]),
            (.downloaded, .verifying, [report("downloaded"), .verify(job)]),
            (.verified, .staged, [report("verified"), .stage(job)]),
            (.staged, .activating, [.activate(job)]),
            (.activated, .checkingHealth, [report("activated"), .checkHealth(job)]),
            (.healthy, .committed, [.commit(job), report("committed")])
        ]
        var current = InstallState.idle
        for (event, phase, actions) in steps {
            let (next, got) = try InstallStateMachine.transition(current, event)
            #expect(next == InstallState(phase: phase, job: job), "after \(event)")
            #expect(got == actions, "after \(event)")
            current = next
        }
        #expect(current.phase == .committed)
        #expect(current.failure == nil)
    }

    @Test func downloadIsTheArtifactOrTheDelta() {
        #expect(job.downloadSha256 == job.sha256 && job.downloadSize == job.size && job.downloadURL == job.url)
        #expect(!job.isDelta)
        var d = job
        d.package = PackageRef(
            kind: PackageRef.delta, sha256: Digest.sha256Hex(Array("d".utf8)), size: 5,
            url: "https://cdn.example/d", baseSha256: job.previousSha256)
        #expect(d.isDelta)
        #expect(d.downloadSha256 == d.package?.sha256 && d.downloadSize == 5 && d.downloadURL == "https://cdn.example/d")
        #expect(d.sha256 == job.sha256)  // what the slot must end up holding does not change
        d.package?.kind = PackageRef.full
        #expect(!d.isDelta)
    }

    @Test func reportCarriesTheJobIdentity() {
        let r = InstallReport(kind: "failed", job: job, detail: "disk full")
        #expect(r.model == job.model && r.sha256 == job.sha256 && r.release == job.release && r.detail == "disk full")
    }

    // MARK: Health failure and rollback

    @Test func unhealthyAfterActivationRollsBack() throws {
        let (rolling, actions) = try InstallStateMachine.transition(state(.checkingHealth), .unhealthy("probe timed out"))
        #expect(rolling == state(.rollingBack, failure: "probe timed out"))
        #expect(actions == [.rollback(job)])
        let (done, after) = try InstallStateMachine.transition(rolling, .rolledBack)
        #expect(done == state(.rolledBack, failure: "probe timed out"))
        #expect(after == [.discard(job), report("rolled-back", "probe timed out")])
    }

    @Test func activationFailureRollsBack() throws {
        let (rolling, actions) = try InstallStateMachine.transition(state(.activating), .unhealthy("rename failed"))
        #expect(rolling == state(.rollingBack, failure: "rename failed"))
        #expect(actions == [.rollback(job)])
    }

    // MARK: Failure before the live model is touched

    @Test(arguments: [InstallPhase.downloading, .verifying, .staged])
    func failureBeforeActivationDiscardsAndReports(_ phase: InstallPhase) throws {
        let (next, actions) = try InstallStateMachine.transition(state(phase), .failed("hash mismatch"))
        #expect(next == state(.failed, failure: "hash mismatch"))
        #expect(actions == [.discard(job), report("failed", "hash mismatch")])
        #expect(!actions.contains(.rollback(job)))
    }

    // MARK: Restart after a terminal phase

    @Test(arguments: [InstallPhase.idle, .committed, .rolledBack, .failed])
    func newJobStartsFromEveryTerminalPhase(_ phase: InstallPhase) throws {
        var other = job
        other.sha256 = Fixture.fp32.sha256
        other.counter = 8
        let from = phase == .idle ? InstallState.idle : state(phase, failure: phase == .committed ? nil : "earlier")
        let (next, actions) = try InstallStateMachine.transition(from, .start(other))
        #expect(next == InstallState(phase: .downloading, job: other))
        #expect(next.failure == nil)
        #expect(actions == [.report(InstallReport(kind: "started", job: other)), .download(other)])
    }

    // MARK: Invalid transitions

    static let invalid: [(InstallPhase, InstallEvent)] = [
        (.idle, .downloaded), (.idle, .verified), (.idle, .staged), (.idle, .activated), (.idle, .healthy),
        (.idle, .unhealthy("x")), (.idle, .failed("x")), (.idle, .rolledBack),
        (.downloading, .start(job)), (.downloading, .verified), (.downloading, .activated), (.downloading, .healthy),
        (.downloading, .unhealthy("x")), (.downloading, .rolledBack),
        (.verifying, .start(job)), (.verifying, .downloaded), (.verifying, .staged), (.verifying, .unhealthy("x")),
        (.staged, .start(job)), (.staged, .verified), (.staged, .activated), (.staged, .unhealthy("x")), (.staged, .rolledBack),
        (.activating, .start(job)), (.activating, .staged), (.activating, .healthy), (.activating, .failed("x")),
        (.activating, .rolledBack),
        (.checkingHealth, .start(job)), (.checkingHealth, .activated), (.checkingHealth, .failed("x")),
        (.checkingHealth, .rolledBack),
        (.rollingBack, .start(job)), (.rollingBack, .healthy), (.rollingBack, .unhealthy("x")), (.rollingBack, .failed("x")),
        (.committed, .healthy), (.committed, .unhealthy("x")), (.committed, .rolledBack), (.committed, .failed("x")),
        (.rolledBack, .rolledBack), (.rolledBack, .healthy),
        (.failed, .failed("x")), (.failed, .downloaded), (.failed, .rolledBack)
    ]

    @Test(arguments: invalid)
    func invalidTransitionThrows(_ phase: InstallPhase, _ event: InstallEvent) {
        let from = phase == .idle ? InstallState.idle : state(phase)
        let error = #expect(throws: InvalidTransition.self) { try InstallStateMachine.transition(from, event) }
        #expect(error == InvalidTransition(phase: phase, event: event))
    }

    /// A journal that lost its job (corrupt or hand-edited) cannot drive any step.
    @Test(arguments: [
        (InstallPhase.downloading, InstallEvent.downloaded), (.verifying, .verified), (.staged, .staged),
        (.activating, .activated), (.checkingHealth, .healthy), (.checkingHealth, .unhealthy("x")),
        (.rollingBack, .rolledBack), (.downloading, .failed("x"))
    ])
    func stepWithoutAJobThrows(_ phase: InstallPhase, _ event: InstallEvent) {
        #expect(throws: InvalidTransition.self) { try InstallStateMachine.transition(InstallState(phase: phase), event) }
    }

    // MARK: Recovery

    static let recovery: [(InstallPhase, [InstallAction])] = [
        (.idle, []),
        (.downloading, [.download(job)]),
        (.verifying, [.verify(job)]),
        (.staged, [.stage(job)]),
        (.activating, [.activate(job)]),
        (.checkingHealth, [.checkHealth(job)]),
        (.rollingBack, [.rollback(job)]),
        (.committed, [.commit(job)]),  // the clean-up a crash may have cut short
        (.rolledBack, [.discard(job)]),
        (.failed, [.discard(job)])
    ]

    @Test func recoveryTableCoversEveryPhase() {
        #expect(Set(Self.recovery.map(\.0)) == Set(InstallPhase.allCases))
    }

    @Test(arguments: recovery)
    func recoveryRepeatsThePhasesAction(_ phase: InstallPhase, _ expected: [InstallAction]) {
        #expect(InstallStateMachine.recoveryActions(state(phase)) == expected)
        #expect(InstallStateMachine.recoveryActions(InstallState(phase: phase)) == [])
    }

    /// Was a gap; fixed: the agent journals the new state before it performs the transition's
    /// actions, so a crash between journaling committed / rolledBack / failed and performing
    /// commit / discard must not lose them: recovery in a terminal phase repeats its clean-up.
    @Test(arguments: [(InstallPhase.committed, InstallAction.commit(job)), (.rolledBack, .discard(job)), (.failed, .discard(job))])
    func recoveryReplaysTheCleanupOfTerminalPhases(_ phase: InstallPhase, _ action: InstallAction) {
        #expect(InstallStateMachine.recoveryActions(state(phase)).contains(action))
    }

    @Test func phaseProperties() {
        #expect(InstallPhase.allCases.filter(\.touchesLiveModel) == [.activating, .checkingHealth, .rollingBack])
        #expect(InstallPhase.allCases.filter(\.isTerminal) == [.idle, .committed, .rolledBack, .failed])
    }

    @Test func installStateSurvivesAJSONRoundTrip() throws {
        let s = state(.rollingBack, failure: "probe timed out")
        #expect(try FleetJSON.decode(InstallState.self, from: try FleetJSON.encode(s), limit: 1 << 16) == s)
    }

    // MARK: Property: random event sequences

    /// Walks seeded random event sequences from idle and checks invariants at every step.
    @Test(arguments: [1, 2, 3, 42, 0xC0FFEE] as [UInt64])
    func randomWalksKeepTheInvariants(_ seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        let jobs = (0..<3).map { i -> InstallJob in
            var j = Self.job
            j.counter = UInt64(10 + i)
            j.sha256 = Digest.sha256Hex(Array("job\(i)".utf8))
            return j
        }
        let liveActions: (InstallAction) -> Bool = {
            switch $0 {
            case .activate, .checkHealth, .rollback, .commit: return true
            default: return false
            }
        }
        var visited = Set<InstallPhase>()
        for _ in 0..<200 {
            var current = InstallState.idle
            for _ in 0..<60 {
                let event: InstallEvent
                switch rng.next() % 9 {
                case 0: event = .start(jobs[Int(rng.next() % 3)])
                case 1: event = .downloaded
                case 2: event = .verified
                case 3: event = .staged
                case 4: event = .activated
                case 5: event = .healthy
                case 6: event = .unhealthy("u\(rng.next() % 5)")
                case 7: event = .failed("f\(rng.next() % 5)")
                default: event = .rolledBack
                }
                let before = current
                let next: InstallState
                let actions: [InstallAction]
                do {
                    (next, actions) = try InstallStateMachine.transition(current, event)
                } catch {
                    #expect(error == InvalidTransition(phase: before.phase, event: event))
                    continue
                }
                visited.insert(next.phase)

                // A job is present in every phase but idle, and only `start` replaces it.
                #expect(next.phase == .idle || next.job != nil)
                if case .start(let j) = event { #expect(next.job == j) } else { #expect(next.job == before.job) }

                // The live model is only touched in activating / checkingHealth / rollingBack:
                // actions that touch it are emitted only from or into those phases.
                if actions.contains(where: liveActions) {
                    #expect(before.phase.touchesLiveModel || next.phase.touchesLiveModel)
                }
                if next.phase.touchesLiveModel || before.phase.touchesLiveModel {
                    #expect(!actions.contains(where: { if case .download = $0 { return true } else { return false } }))
                }
                // Once the live model has been touched, the only ways out are commit or rollback.
                if before.phase.touchesLiveModel {
                    #expect(next.phase.touchesLiveModel || next.phase == .committed || next.phase == .rolledBack)
                }
                // `failed` is only reached without touching the live model.
                if next.phase == .failed { #expect(!before.phase.touchesLiveModel) }
                // A rollback happens only after activation began.
                if actions.contains(.rollback(next.job ?? Self.job)) { #expect(before.phase.touchesLiveModel) }

                // Crash safety: in a non-terminal phase, recovery repeats exactly the work of the transition.
                if !next.phase.isTerminal {
                    let work = actions.filter { if case .report = $0 { return false } else { return true } }
                    #expect(InstallStateMachine.recoveryActions(next) == work)
                }
                // Every report names the job.
                for case .report(let r) in actions {
                    #expect(r.sha256 == next.job?.sha256 && r.model == next.job?.model)
                }
                // A failure message is kept exactly while failing or rolling back.
                #expect((next.failure != nil) == [.rollingBack, .rolledBack, .failed].contains(next.phase))
                current = next
            }
        }
        // The walk is meaningful: it reached every phase.
        #expect(visited == Set(InstallPhase.allCases).subtracting([.idle]))
    }
}
