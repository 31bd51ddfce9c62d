import FleetCore
import Testing

@Suite("Staged rollouts: cohorts, gates, cell state machine")
struct RolloutTests {
    static let canary = RolloutPolicy(
        name: "canary",
        phases: [
            .init(percent: 1, minDevices: 1, bakeSeconds: 600), .init(percent: 10, minDevices: 2, bakeSeconds: 600),
            .init(percent: 50, bakeSeconds: 600), .init(percent: 100)
        ],
        gates: .init(
            maxInstallFailureRate: 0.1, maxHealthFailureRate: 0.1, maxTimedOutRate: 0.2, maxLatencyP95Ratio: 1.5,
            maxErrorRateIncrease: 0.02, maxCrashes: 0, minSample: 1),
        onFailure: .pause)

    @Test func policyValidation() {
        #expect(Self.canary.validate() == nil)
        var p = Self.canary
        p.phases = [.init(percent: 10), .init(percent: 5), .init(percent: 100)]
        #expect(p.validate() != nil)
        p.phases = [.init(percent: 50)]
        #expect(p.validate() != nil)
        p.phases = []
        #expect(p.validate() != nil)
    }

    @Test func cohortsAreStableAndNested() {
        let devices = (0..<1000).map { "dev-\($0)" }
        let one = Cohort.members(of: devices, rollout: "r1", phase: .init(percent: 1))
        let ten = Cohort.members(of: devices, rollout: "r1", phase: .init(percent: 10))
        let again = Cohort.members(of: devices.reversed(), rollout: "r1", phase: .init(percent: 10))
        #expect(ten == again)  // planning again gives the same answer
        #expect(one.isSubset(of: ten))  // a device never leaves the cohort as phases grow
        #expect((50...150).contains(ten.count))  // about 10% of 1000
        let other = Cohort.members(of: devices, rollout: "r2", phase: .init(percent: 10))
        #expect(other != ten)  // another rollout draws another cohort
        #expect(Cohort.members(of: devices, rollout: "r1", phase: .init(percent: 100)).count == 1000)
        let p = Cohort.position(rollout: "r", device: "d")
        #expect(p >= 0 && p < 1 && p == Cohort.position(rollout: "r", device: "d"))
    }

    @Test func minimumDevicesPerPhase() {
        let small = ["a", "b", "c", "d", "e"]
        #expect(Cohort.members(of: small, rollout: "r", phase: .init(percent: 1, minDevices: 2)).count >= 2)
        #expect(Cohort.members(of: small, rollout: "r", phase: .init(percent: 1, minDevices: 9)).count == 5)
        #expect(Cohort.members(of: [], rollout: "r", phase: .init(percent: 50, minDevices: 3)).isEmpty)
    }

    @Test func gatesWaitForTheMinimumSample() {
        var g = Self.canary.gates
        g.minSample = 5
        let r = GateEvaluator.evaluate(CellObservation(targeted: 10, committed: 2, installFailed: 2), gates: g)
        let install = r.first { $0.metric == "install-failure-rate" }
        #expect(install?.passed == nil)
        #expect(install?.observed == 0.5)
    }

    @Test func failingGateRecordsMetricThresholdAndObservedValue() {
        let o = CellObservation(targeted: 10, committed: 8, installFailed: 0, healthFailed: 2)
        let r = GateEvaluator.evaluate(o, gates: Self.canary.gates)
        let health = try! #require(r.first { $0.metric == "health-failure-rate" })
        #expect(health == GateResult(metric: "health-failure-rate", threshold: 0.1, observed: 0.2, passed: false))
    }

    @Test func latencyIsJudgedAgainstTheControlCohort() {
        let slow = CellObservation(
            targeted: 4, committed: 4,
            treatment: RuntimeSample(devices: 4, latencyP50Ms: 20, latencyP95Ms: 40, errorRate: 0.01),
            control: RuntimeSample(devices: 30, latencyP50Ms: 10, latencyP95Ms: 20, errorRate: 0.01))
        let r = GateEvaluator.evaluate(slow, gates: Self.canary.gates)
        #expect(
            r.first { $0.metric == "latency-p95-ratio" }
                == GateResult(metric: "latency-p95-ratio", threshold: 1.5, observed: 2, passed: false))
        #expect(r.first { $0.metric == "error-rate-increase" }?.passed == true)
        var fine = slow
        fine.treatment?.latencyP95Ms = 22
        #expect(GateEvaluator.evaluate(fine, gates: Self.canary.gates).allSatisfy { $0.passed != false })
        var noControl = slow
        noControl.control = nil
        #expect(GateEvaluator.evaluate(noControl, gates: Self.canary.gates).first { $0.metric == "latency-p95-ratio" }?.passed == nil)
    }

    @Test func crashesFailWithoutASample() {
        var g = Self.canary.gates
        g.minSample = 100
        let r = GateEvaluator.evaluate(
            CellObservation(targeted: 3, committed: 1, treatment: RuntimeSample(devices: 1, crashes: 1)), gates: g)
        #expect(r.first { $0.metric == "crashes" }?.passed == false)
    }

    /// The observation with runtime figures on both sides, so that every gate can judge.
    static func judged(_ o: CellObservation) -> CellObservation {
        var o = o
        o.treatment = RuntimeSample(devices: max(o.committed, 1), latencyP50Ms: 10, latencyP95Ms: 20, errorRate: 0)
        o.control = RuntimeSample(devices: 5, latencyP50Ms: 10, latencyP95Ms: 20, errorRate: 0)
        o.reference = .controlCohort
        return o
    }

    @Test func healthyCellWalksEveryPhaseWithBakeTimes() {
        let p = Self.canary
        var s = CellState(phaseStartedAt: 0)
        var actions: [CellAction] = []
        func tick(_ now: Int64, _ o: CellObservation) {
            let (n, a) = CellStateMachine.step(s, .tick(now: now, observation: Self.judged(o)), policy: p); s = n; actions += a
        }
        tick(10, CellObservation(targeted: 1))  // installing
        #expect(s.status == .running && actions.isEmpty)
        tick(20, CellObservation(targeted: 1, committed: 1))  // finished: bake
        #expect(s.status == .baking && s.bakeStartedAt == 20)
        tick(300, CellObservation(targeted: 1, committed: 1))  // still baking (manual clock)
        #expect(s.phase == 0)
        tick(620, CellObservation(targeted: 1, committed: 1))
        #expect(s.phase == 1 && s.status == .running && s.phaseStartedAt == 620)
        tick(700, CellObservation(targeted: 3, committed: 3))
        tick(1300, CellObservation(targeted: 3, committed: 3))
        #expect(s.phase == 2)
        tick(1400, CellObservation(targeted: 10, committed: 10))
        tick(2000, CellObservation(targeted: 10, committed: 10))
        #expect(s.phase == 3)
        tick(2100, CellObservation(targeted: 20, committed: 20))  // last phase has no bake
        #expect(s.status == .completed)
        #expect(
            actions == [
                .startedBake, .enteredPhase(1), .startedBake, .enteredPhase(2), .startedBake, .enteredPhase(3), .startedBake, .completed
            ])
    }

    @Test func failingGatePausesOrRollsBackPerPolicy() {
        let bad = CellObservation(targeted: 1, committed: 0, healthFailed: 1)
        let (paused, a1) = CellStateMachine.step(CellState(phaseStartedAt: 0), .tick(now: 5, observation: bad), policy: Self.canary)
        #expect(paused.status == .paused)
        #expect(paused.failedGate?.metric == "health-failure-rate")
        #expect(a1 == [.paused(paused.failedGate)])
        // A paused cell does not move on its own.
        let (still, a2) = CellStateMachine.step(
            paused, .tick(now: 99_999, observation: CellObservation(targeted: 1, committed: 1)), policy: Self.canary)
        #expect(still == paused && a2.isEmpty)

        var rb = Self.canary
        rb.onFailure = .rollback
        let (rolled, _) = CellStateMachine.step(CellState(phaseStartedAt: 0), .tick(now: 5, observation: bad), policy: rb)
        #expect(rolled.status == .rolledBack)
        #expect(!rolled.sendsNewRelease)
    }

    @Test func operatorActions() {
        let p = Self.canary
        let s = CellState(phaseStartedAt: 0)
        let (promoted, a) = CellStateMachine.step(s, .promote(now: 50), policy: p)
        #expect(promoted.phase == 1 && a == [.enteredPhase(1)])
        let (paused, _) = CellStateMachine.step(promoted, .pause, policy: p)
        #expect(paused.status == .paused)
        let (resumed, r) = CellStateMachine.step(paused, .resume(now: 70), policy: p)
        #expect(resumed.status == .running && resumed.phaseStartedAt == 70 && r == [.resumed])
        let (aborted, ab) = CellStateMachine.step(resumed, .abort, policy: p)
        #expect(aborted.status == .aborted && ab == [.aborted] && !aborted.sendsNewRelease)
        #expect(CellStateMachine.step(aborted, .resume(now: 80), policy: p).0 == aborted)
    }

    // MARK: Gates that cannot judge

    /// The regression an unjudged gate would let through: no control cohort and no baseline, so
    /// the latency gate cannot judge. With the default policy the cell waits at the end of its bake.
    @Test func unjudgedLatencyGateBlocksPromotionByDefault() {
        let p = Self.canary
        #expect(p.gates.unjudged == nil && p.gates.blocksUnjudged)
        var noReference = CellObservation(targeted: 1, committed: 1)
        noReference.treatment = RuntimeSample(devices: 1, latencyP50Ms: 30, latencyP95Ms: 60, errorRate: 0)
        let (baking, a1) = CellStateMachine.step(CellState(phaseStartedAt: 0), .tick(now: 10, observation: noReference), policy: p)
        #expect(baking.status == .baking && a1 == [.startedBake])
        let (held, a2) = CellStateMachine.step(baking, .tick(now: 700, observation: noReference), policy: p)
        #expect(held.phase == 0 && held.status == .baking)
        #expect(held.blockedBy == ["latency-p95-ratio", "error-rate-increase"])
        #expect(a2 == [.blocked(["latency-p95-ratio", "error-rate-increase"])])
        // Recorded once: the next tick with the same gates adds no action.
        let (still, a3) = CellStateMachine.step(held, .tick(now: 800, observation: noReference), policy: p)
        #expect(still == held && a3.isEmpty)
        // Once a reference exists the gate judges, and this release is 3x slower: the cell pauses.
        var judged = noReference
        judged.control = RuntimeSample(devices: 1, latencyP50Ms: 10, latencyP95Ms: 20, errorRate: 0)
        judged.reference = .baseline
        let (paused, a4) = CellStateMachine.step(still, .tick(now: 900, observation: judged), policy: p)
        #expect(paused.status == .paused && paused.failedGate?.metric == "latency-p95-ratio" && paused.failedGate?.observed == 3)
        #expect(a4 == [.paused(paused.failedGate)])
    }

    @Test func unjudgedPassLetsTheCellGoOnAndTheOperatorCanPromote() {
        var p = Self.canary
        p.gates.unjudged = .pass
        let o = CellObservation(targeted: 1, committed: 1)
        let (baking, _) = CellStateMachine.step(CellState(phaseStartedAt: 0), .tick(now: 10, observation: o), policy: p)
        let (next, a) = CellStateMachine.step(baking, .tick(now: 700, observation: o), policy: p)
        #expect(next.phase == 1 && next.blockedBy == nil && a == [.enteredPhase(1)])

        // Blocked under the default, the operator's promote still moves the cell and clears the block.
        let (held, _) = CellStateMachine.step(baking, .tick(now: 700, observation: o), policy: Self.canary)
        #expect(held.blockedBy != nil)
        let (promoted, pa) = CellStateMachine.step(held, .promote(now: 710), policy: Self.canary)
        #expect(promoted.phase == 1 && promoted.blockedBy == nil && pa == [.enteredPhase(1)])
    }

    /// A cell of one device with a minimum sample of five still judges once that device finished.
    @Test func rateGatesJudgeAWholeSmallCohort() {
        var g = Self.canary.gates
        g.minSample = 5
        let r = GateEvaluator.evaluate(CellObservation(targeted: 1, healthFailed: 1), gates: g)
        #expect(r.first { $0.metric == "health-failure-rate" }?.passed == false)
    }

    @Test func policyBakeScaleAndHoldBackBounds() {
        let fast = Self.canary.scalingBakes(by: 0.01)
        #expect(fast.phases.map(\.bakeSeconds) == [6, 6, 6, 0])
        #expect(Self.canary.scalingBakes(by: 0).phases.allSatisfy { $0.bakeSeconds == 0 })
        var p = Self.canary
        p.holdBackPercent = 10
        #expect(p.validate() == nil && p.holdBackShare == 0.1)
        p.holdBackPercent = 80
        #expect(p.validate() != nil)
        p.holdBackPercent = .nan
        #expect(p.validate() != nil)
    }
}
