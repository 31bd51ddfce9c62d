import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import FleetController

/// Failures handled once, on the controller's side: a failed release is held on the device until
/// an operator retries it; each cell judges against its own control cohort or baseline; a stopped
/// cell's record stays as it was at the stop; a superseded rollout keeps its counts.
extension StagedRolloutTests {
    static let v1Shas = Set([Digest.sha256Hex([1, 1] as [UInt8]), Digest.sha256Hex([1, 2] as [UInt8])])
    static let v2Shas = Set([Digest.sha256Hex([2, 1] as [UInt8]), Digest.sha256Hex([2, 2] as [UInt8])])

    func release(of d: Device) -> String {
        guard let sha = d.installed["m"] else { return "m@1" }
        return Self.v2Shas.contains(sha) ? "m@2" : Self.v3Shas.contains(sha) ? "m@3" : "m@1"
    }
    static let v3Shas = Set([Digest.sha256Hex([3, 1] as [UInt8]), Digest.sha256Hex([3, 2] as [UInt8])])

    func status(_ client: some TestClientProtocol, _ rid: Int64) async throws -> RolloutStatus {
        try decode(RolloutStatus.self, try await client.execute(uri: "/v1/rollouts/\(rid)", method: .get))
    }

    /// The re-install storm: a canary whose health check fails is sent the release again at every
    /// check-in. Here it is held as failed after the first failure, counted per cell, and sent the
    /// release again only after `rollout retry`, with a higher assignment counter.
    @Test func failedCanaryIsHeldUntilTheOperatorRetries() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let clock = TestClock(f.now)
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = Self.fleet()
            try await setUpV1AndV2(client, f, &devices, clock: clock)
            let rid = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get)).last!.id
            let sick = "arm64-dotprod"
            var assignmentsOfV2: [String: [UInt64]] = [:]
            for _ in 0..<4 {
                for i in devices.indices {
                    let isSick = devices[i].cls == sick
                    let a = try await checkIn(client, &devices[i], clock: clock) { a in
                        a.release == "m@2" && isSick ? "rolled-back" : "committed"
                    }
                    if let a, a.release == "m@2", devices[i].cls == sick { assignmentsOfV2[devices[i].id, default: []].append(a.counter) }
                }
                try await driver.tick(now: clock.now)
                clock.advance(60)
            }
            // Each sick canary was sent the bad release exactly once.
            #expect(assignmentsOfV2.count == 2)
            #expect(assignmentsOfV2.values.allSatisfy { $0.count == 1 })
            let canary = try #require(assignmentsOfV2.keys.sorted().first)
            let device = try decode(DeviceInfo.self, try await client.execute(uri: "/v1/devices/\(canary)", method: .get))
            #expect(device.held["m"] == "failed")
            #expect(device.status == .rolledBack)
            let s = try await status(client, rid)
            let sickCells = s.cells.filter { $0.cell.hasPrefix(sick) }
            #expect(sickCells.count == 2 && sickCells.allSatisfy { $0.failedNotRetried == 1 && $0.status == .paused })
            #expect(s.cells.filter { !$0.cell.hasPrefix(sick) }.allSatisfy { $0.failedNotRetried == 0 })

            // Retry one device: only it is sent the release again, with a new counter.
            let idx = devices.firstIndex { $0.id == canary }!
            let before = assignmentsOfV2[canary]!.last!
            let retry = try await client.json(.post, "/v1/rollouts/\(rid)/retry", RolloutRetryRequest(device: canary))
            #expect(retry.status == .ok)
            #expect(try decode(RolloutRetryResult.self, retry).retried == [canary])
            let again = try await checkIn(client, &devices[idx], clock: clock) { _ in "committed" }
            #expect(again?.release == "m@2")
            #expect((again?.counter ?? 0) > before)
            let other = assignmentsOfV2.keys.sorted().last!
            let j = devices.firstIndex { $0.id == other }!
            #expect(try await checkIn(client, &devices[j], clock: clock) == nil)
            #expect(
                try await status(client, rid).cells.first { $0.cell == "\(devices[idx].cls)/\(devices[idx].tier)" }?.failedNotRetried == 0)
            // Typed errors for a bad retry.
            #expect(
                errorCode(try await client.json(.post, "/v1/rollouts/\(rid)/retry", RolloutRetryRequest(device: "no-such-device")))
                    == "unknown-device")
            #expect(
                errorCode(try await client.json(.post, "/v1/rollouts/\(rid)/retry", RolloutRetryRequest(cell: "nocell"))) == "invalid-cell")
            #expect(errorCode(try await client.json(.post, "/v1/rollouts/999/retry", RolloutRetryRequest())) == "unknown-rollout")
        }
    }

    /// A cell rolled back in one rollout still judges the next rollout's latency: its devices run
    /// what the treated devices ran before (m@1), which is not the previous rollout's release
    /// (m@2). A 3x slower m@3 is stopped there.
    @Test func cellRolledBackOnceStillJudgesTheNextRollout() async throws {
        let f = try fixture(); defer { f.cleanup() }
        try """
        name: rollback-canary
        phases:
          - { percent: 10, min_devices: 1, bake: 600 }
          - { percent: 100 }
        gates:
          min_sample: 1
          max_health_failure_rate: 0.2
          max_latency_p95_ratio: 1.5
        on_failure: rollback
        device_timeout: 1h
        """.write(toFile: f.configDir + "/policies/rollback.yaml", atomically: true, encoding: .utf8)
        let clock = TestClock(f.now)
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = Self.fleet().filter { $0.cls == "x86-avx2" && $0.tier == "fibre" }
            let v = try await client.publish(
                model: "m",
                variants: [
                    ("m1-int8", "int8", [1, 1]), ("m1-fp32", "fp32", [1, 2]),
                    ("m2-int8", "int8", [2, 1]), ("m2-fp32", "fp32", [2, 2]),
                    ("m3-int8", "int8", [3, 1]), ("m3-fp32", "fp32", [3, 2])
                ])
            try await f.postReleases(client, model: "m", (0..<3).map { [v[2 * $0], v[2 * $0 + 1]] })
            #expect(try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1", strategy: "all")).status == .created)
            for i in devices.indices { try await checkIn(client, &devices[i], clock: clock) }

            // Rollout of m@2: its canary fails the health check, the cell is rolled back.
            let r2 = try decode(
                RolloutInfo.self,
                try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@2", strategy: "staged", policy: "rollback-canary"))
            ).id
            for _ in 0..<3 {
                for i in devices.indices {
                    try await checkIn(client, &devices[i], clock: clock) { a in a.release == "m@2" ? "rolled-back" : "committed" }
                    try await metrics(client, &devices[i], release: release(of: devices[i]), p95: 20, clock: clock)
                }
                try await driver.tick(now: clock.now)
                clock.advance(60)
            }
            let s2 = try await status(client, r2)
            #expect(s2.cells.map(\.status) == [.rolledBack])
            let frozen = s2.cells[0]
            #expect(devices.allSatisfy { Self.v1Shas.contains($0.installed["m"] ?? "") })

            // More ticks and metrics do not change the stopped cell's record.
            for i in devices.indices { try await metrics(client, &devices[i], release: "m@1", p95: 21, clock: clock) }
            try await driver.tick(now: clock.now)
            let later = try await status(client, r2).cells[0]
            #expect(later.observation == frozen.observation && later.gates == frozen.gates && later.failedGate == frozen.failedGate)
            #expect(later.afterStop == CellAfterStop(reached: 1, restored: 1))

            // Rollout of m@3, three times slower: judged against the m@1 devices of the cell.
            let r3 = try decode(
                RolloutInfo.self,
                try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@3", strategy: "staged", policy: "rollback-canary"))
            ).id
            for _ in 0..<3 {
                for i in devices.indices {
                    try await checkIn(client, &devices[i], clock: clock)
                    let r = release(of: devices[i])
                    try await metrics(client, &devices[i], release: r, p95: r == "m@3" ? 60 : 20, clock: clock)
                }
                try await driver.tick(now: clock.now)
                clock.advance(60)
            }
            let s3 = try await status(client, r3)
            #expect(s3.cells.count == 1)
            let cell = s3.cells[0]
            #expect(cell.status == .rolledBack)
            #expect(cell.failedGate?.metric == "latency-p95-ratio")
            #expect(cell.failedGate?.observed == 3)
            #expect(cell.observation?.reference == .controlCohort)
            // The superseded m@2 rollout keeps what it did: one device targeted, one failure.
            let list = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get))
            let old = try #require(list.first { $0.id == r2 })
            #expect(old.state == .superseded && old.targeted == 1 && old.failed == 1)
        }
    }

    /// With no control cohort left (every device of the cell treated), the treated devices' own
    /// figures from before the update are the reference.
    @Test func baselineFromTheTreatedDevicesOwnEarlierWindow() async throws {
        let f = try fixture(); defer { f.cleanup() }
        try """
        name: all-at-once
        phases:
          - { percent: 100, bake: 600 }
        gates:
          max_latency_p95_ratio: 1.5
        """.write(toFile: f.configDir + "/policies/all-at-once.yaml", atomically: true, encoding: .utf8)
        let clock = TestClock(f.now)
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = Self.fleet().filter { $0.cls == "x86-avx2" && $0.tier == "fibre" }.prefix(3).map { $0 }
            let v = try await client.publish(
                model: "m",
                variants: [
                    ("m1-int8", "int8", [1, 1]), ("m1-fp32", "fp32", [1, 2]),
                    ("m2-int8", "int8", [2, 1]), ("m2-fp32", "fp32", [2, 2])
                ])
            try await f.postReleases(client, model: "m", (0..<2).map { [v[2 * $0], v[2 * $0 + 1]] })
            #expect(try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1", strategy: "all")).status == .created)
            for i in devices.indices {
                try await checkIn(client, &devices[i], clock: clock)
                try await metrics(client, &devices[i], release: "m@1", p95: 20, clock: clock)
            }
            let rid = try decode(
                RolloutInfo.self,
                try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@2", strategy: "staged", policy: "all-at-once"))
            ).id
            for i in devices.indices {
                try await checkIn(client, &devices[i], clock: clock)
                try await metrics(client, &devices[i], release: "m@2", p95: 25, clock: clock)
            }
            try await driver.tick(now: clock.now)
            let cell = try #require(try await status(client, rid).cells.first)
            #expect(cell.observation?.reference == .baseline)
            #expect(cell.observation?.control?.devices == 3)
            #expect(cell.gates.first { $0.metric == "latency-p95-ratio" }?.passed == true)
            #expect(cell.status == .baking)
        }
    }

    /// A staged rollout whose cell cannot judge its latency gate (no metrics at all) waits at the
    /// end of its bake, visibly, until the operator promotes it.
    @Test func cellThatCannotJudgeIsBlockedVisibly() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let clock = TestClock(f.now)
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = Self.fleet().filter { $0.cls == "x86-avx2" && $0.tier == "fibre" }
            try await setUpV1AndV2(client, f, &devices, clock: clock)
            let rid = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get)).last!.id
            for _ in 0..<3 {
                for i in devices.indices { try await checkIn(client, &devices[i], clock: clock) }
                try await driver.tick(now: clock.now)
                clock.advance(700)
            }
            var cell = try #require(try await status(client, rid).cells.first)
            #expect(cell.phase == 1 && cell.status == .baking)
            #expect(cell.blockedBy == ["latency-p95-ratio"])
            let actions = try await status(client, rid).actions
            #expect(actions.filter { $0.action == "blocked" }.count == 1)
            // The dashboard and /metrics show the block as the API does.
            let page = String(buffer: try await client.execute(uri: "/", method: .get).body)
            #expect(page.contains("data-blocked=\"latency-p95-ratio\""))
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(
                metrics.split(separator: "\n").contains {
                    $0.hasPrefix("edgefleet_cell_blocked{") && $0.contains("rollout=\"\(rid)\"")
                        && $0.split(separator: " ").last.flatMap { Double($0) } == 1
                })
            #expect(try await client.json(.post, "/v1/rollouts/\(rid)/promote", RolloutActionRequest()).status == .ok)
            cell = try #require(try await status(client, rid).cells.first)
            #expect(cell.phase == 2 && cell.blockedBy == nil)
        }
    }

    /// The policy's hold-back share stays on the old release through the last phase, as the
    /// control cohort, until the cell completes.
    @Test func holdBackShareIsKeptUntilTheCellCompletes() {
        let positions = (0..<10).map { Double($0) / 10 + 0.05 }
        let last = RolloutPolicy.Phase(percent: 100)
        #expect(RolloutDriver.cutoff(phase: last, sortedPositions: positions, holdBack: 0.2) == 0.8)
        #expect(positions.filter { $0 < 0.8 }.count == 8)
        #expect(RolloutDriver.cutoff(phase: last, sortedPositions: positions) == RolloutDriver.everyone)
        #expect(RolloutDriver.cutoff(phase: .init(percent: 10, minDevices: 1), sortedPositions: positions, holdBack: 0.2) < 0.8)
    }

    @Test func policiesAreListedShownAndUploadedPerRollout() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let clock = TestClock(f.now)
        let (app, _) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = Self.fleet().prefix(2).map { $0 }
            let list = try decode([RolloutPolicy].self, try await client.execute(uri: "/v1/policies", method: .get))
            #expect(list.map(\.name).contains("test-canary"))
            let one = try decode(RolloutPolicy.self, try await client.execute(uri: "/v1/policies/test-canary", method: .get))
            #expect(one.phases.count == 3)
            #expect(errorCode(try await client.execute(uri: "/v1/policies/nope", method: .get)) == "unknown-policy")
            try await setUpV1AndV2(client, f, &devices, clock: clock)
            let v3 = ReleaseCatalog(
                model: "m", version: "3", serial: 3, expiresAt: f.now + 86_400,
                variants: try decode(ReleaseInfo.self, try await client.execute(uri: "/v1/releases/m@2", method: .get)).variants,
                hardwareClasses: try decode(
                    [HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get)))
            #expect(
                try await client.json(
                    .post, "/v1/releases", NewRelease(catalog: try Envelope.sign(v3, type: PayloadType.catalog, keys: [f.keys[.release]!]))
                ).status == .created)
            let doc = """
                name: lab
                phases:
                  - { percent: 50, bake: 1h }
                  - { percent: 100 }
                gates: { unjudged: pass }
                hold_back: 10
                """
            let started = try await client.json(
                .post, "/v1/rollouts", NewRollout(release: "m@3", strategy: "staged", policyDocument: doc, bakeScale: 0.01, supersede: true)
            )
            #expect(started.status == .created)
            let rid = try decode(RolloutInfo.self, started).id
            let p = try #require(try await status(client, rid).policy)
            #expect(p.name == "lab" && p.phases[0].bakeSeconds == 36 && p.gates.unjudged == .pass && p.holdBackPercent == 10)
            let bad = try await client.json(
                .post, "/v1/rollouts", NewRollout(release: "m@3", strategy: "staged", policyDocument: "name: x\nphases: []"))
            #expect(bad.status == .badRequest && errorCode(bad) == "invalid-policy")
            let badScale = try await client.json(
                .post, "/v1/rollouts", NewRollout(release: "m@3", strategy: "staged", policy: "test-canary", bakeScale: -1))
            #expect(errorCode(badScale) == "invalid-bake-scale")
        }
    }
}
