import FleetCore
import Testing

@Suite("Staged rollouts: cohorts, gates, cell state machine")
struct RolloutTests {
    static let canary = RolloutPolicy(
        name: "canary",
        phases: [.init(percent: 1, minDevices: 1, bakeSeconds: 600), .init(percent: 10, minDevices: 2, bakeSeconds: 600),
                 .init(percent: 50, bakeSeconds: 600), .init(percent: 100)],
        gates: .init(maxInstallFailureRate: 0.1, maxHealthFailureRate: 0.1, maxTimedOutRate: 0.2, maxLatencyP95Ratio: 1.5,
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
        #expect(ten == again)                      // planning again gives the same answer
        #expect(one.isSubset(of: ten))             // a device never leaves the cohort as phases grow
        #expect((50...150).contains(ten.count))    // about 10% of 1000
        let other = Cohort.members(of: devices, rollout: "r2", phase: .init(percent: 10))
        #expect(other != ten)                      // another rollout draws another cohort
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
        let slow = CellObservation(targeted: 4, committed: 4,
                                   treatment: RuntimeSample(devices: 4, latencyP50Ms: 20, latencyP95Ms: 40, errorRate: 0.01),
                                   control: RuntimeSample(devices: 30, latencyP50Ms: 10, latencyP95Ms: 20, errorRate: 0.01))
        let r = GateEvaluator.evaluate(slow, gates: Self.canary.gates)
        #expect(r.first { $0.metric == "latency-p95-ratio" } == GateResult(metric: "latency-p95-ratio", threshold: 1.5, observed: 2, passed: false))
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
        let r = GateEvaluator.evaluate(CellObservation(targeted: 3, committed: 1, treatment: RuntimeSample(devices: 1, crashes: 1)), gates: g)
        #expect(r.first { $0.metric == "crashes" }?.passed == false)
    }

    @Test func healthyCellWalksEveryPhaseWithBakeTimes() {
        let p = Self.canary
        var s = CellState(phaseStartedAt: 0)
        var actions: [CellAction] = []
        func tick(_ now: Int64, _ o: CellObservation) { let (n, a) = CellStateMachine.step(s, .tick(now: now, observation: o), policy: p); s = n; actions += a }
        tick(10, CellObservation(targeted: 1))                          // installing
        #expect(s.status == .running && actions.isEmpty)
        tick(20, CellObservation(targeted: 1, committed: 1))           // finished: bake
        #expect(s.status == .baking && s.bakeStartedAt == 20)
        tick(300, CellObservation(targeted: 1, committed: 1))          // still baking (manual clock)
        #expect(s.phase == 0)
        tick(620, CellObservation(targeted: 1, committed: 1))
        #expect(s.phase == 1 && s.status == .running && s.phaseStartedAt == 620)
        tick(700, CellObservation(targeted: 3, committed: 3))
        tick(1300, CellObservation(targeted: 3, committed: 3))
        #expect(s.phase == 2)
        tick(1400, CellObservation(targeted: 10, committed: 10))
        tick(2000, CellObservation(targeted: 10, committed: 10))
        #expect(s.phase == 3)
        tick(2100, CellObservation(targeted: 20, committed: 20))       // last phase has no bake
        #expect(s.status == .completed)
        #expect(actions == [.startedBake, .enteredPhase(1), .startedBake, .enteredPhase(2), .startedBake, .enteredPhase(3), .startedBake, .completed])
    }

    @Test func failingGatePausesOrRollsBackPerPolicy() {
        let bad = CellObservation(targeted: 1, committed: 0, healthFailed: 1)
        let (paused, a1) = CellStateMachine.step(CellState(phaseStartedAt: 0), .tick(now: 5, observation: bad), policy: Self.canary)
        #expect(paused.status == .paused)
        #expect(paused.failedGate?.metric == "health-failure-rate")
        #expect(a1 == [.paused(paused.failedGate)])
        // A paused cell does not move on its own.
        let (still, a2) = CellStateMachine.step(paused, .tick(now: 99_999, observation: CellObservation(targeted: 1, committed: 1)), policy: Self.canary)
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
}
