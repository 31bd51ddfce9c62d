import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import FleetController

/// Edge cases of rollouts and device input found in review: each once crashed, stalled or
/// changed state where it should not have.
@Suite("Rollouts: hostile figures, read-only explain, late cells, rate-limit paths", .serialized)
struct RolloutHardeningTests {
    let staged = StagedRolloutTests()

    @Test func explainingADeviceOpensNoCellAndQueuesNothing() async throws {
        let f = try staged.fixture(); defer { f.cleanup() }
        let clock = TestClock(f.now)
        let (app, _) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = StagedRolloutTests.fleet()
            try await staged.setUpV1AndV2(client, f, &devices, clock: clock)
            let rid = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get)).last!.id
            #expect(try await client.execute(uri: "/v1/devices/\(devices[0].id)/explain", method: .get).status == .ok)
            let after = try decode(RolloutStatus.self, try await client.execute(uri: "/v1/rollouts/\(rid)", method: .get))
            #expect(after.cells.isEmpty, "explain opened \(after.cells.map(\.cell))")
            #expect(!after.actions.contains { $0.action == "cell-opened" })
            try await staged.checkIn(client, &devices[0], clock: clock)
            #expect(try decode(RolloutStatus.self, try await client.execute(uri: "/v1/rollouts/\(rid)", method: .get)).cells.count == 1)
        }
    }

    @Test func absurdCrashCountsFromDevicesStopTheCellInsteadOfTheController() async throws {
        let f = try staged.fixture(); defer { f.cleanup() }
        let clock = TestClock(f.now)
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = StagedRolloutTests.fleet()
            try await staged.setUpV1AndV2(client, f, &devices, clock: clock)
            let rid = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get)).last!.id
            let cell = devices.filter { $0.cls == "x86-avx2" && $0.tier == "fibre" }.map(\.id)
            for i in devices.indices where cell.contains(devices[i].id) {
                let a = try await staged.checkIn(client, &devices[i], clock: clock)
                devices[i].seq += 1
                let detail = #"{"crashes":9223372036854775807,"latencyP50Ms":1e308,"errorRate":-5}"#
                try await client.json(
                    .post, "/v1/devices/\(devices[i].id)/events",
                    EventBatch(events: [
                        StatusEvent(
                            seq: devices[i].seq, time: clock.now, kind: "metrics", model: "m",
                            release: a?.release ?? "m@1", detail: detail)
                    ]))
            }
            try await driver.tick(now: clock.now)  // used to trap on the sum of crashes
            let s = try decode(RolloutStatus.self, try await client.execute(uri: "/v1/rollouts/\(rid)", method: .get))
            let c = try #require(s.cells.first { $0.cell == "x86-avx2/fibre" })
            #expect(c.status == .paused)
            #expect(c.failedGate?.metric == "crashes")
        }
    }

    @Test func aCellFirstSeenAfterTheRolloutCompletedIsComplete() async throws {
        let f = try staged.fixture(); defer { f.cleanup() }
        let (_, driver) = try await f.parts()
        let policy = RolloutPolicy(
            name: "p", phases: [.init(percent: 10, minDevices: 1, bakeSeconds: 600), .init(percent: 100)],
            gates: .init(minSample: 1))
        let rollout = RolloutRecord(
            id: 42, releaseId: "m@2", model: "m", strategy: "p", state: .completed, createdAt: f.now,
            policy: policy, previousReleaseId: "m@1")
        let device = DeviceRecord(
            id: "late-1", facts: ControllerFixture.boardFacts, hardwareClass: "brand-new-class", tier: "fibre",
            installed: [:], phase: nil, status: .idle, statusDetail: nil, held: [:], firstSeen: f.now, lastSeen: f.now,
            agentVersion: nil)
        let cell = try await driver.cell(for: device, rollout: rollout, policy: policy, now: f.now)
        #expect(cell.state.status == .completed)
        #expect(cell.cutoff > 1)
    }
}

@Suite("Access: the check-in limit holds however the path is spelled")
struct CheckInLimitPathTests {
    @Test func aTrailingSlashIsTheSameRouteAndTheSameLimit() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app(checkInBurst: 1).test(.router) { client async throws in
            _ = try await client.enroll("dev-a", token: try await client.enrollmentToken(try a.adminToken), fingerprint: fpA)
            #expect(try await client.checkIn("dev-a", fingerprint: fpA).status == .ok)
            for path in ["/v1/devices/dev-a/checkin/", "/v1/devices/dev-a/checkin//", "/v1/devices/dev-a//checkin"] {
                let r = try await client.json(
                    .post, path, CheckInRequest(facts: ControllerFixture.vnniFacts, installed: [:], agentVersion: "t"),
                    headers: peer(fpA))
                #expect(r.status == .tooManyRequests, "\(path) answered \(r.status)")
            }
        }
    }
}

@Suite("AsyncLock")
struct AsyncLockTests {
    final class Probe: @unchecked Sendable {
        var inside = 0, most = 0, done = 0
    }

    @Test func oneHolderAtATimeAcrossSuspensionPoints() async {
        let lock = AsyncLock()
        let probe = Probe()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<200 {
                group.addTask {
                    await lock.withLock {
                        probe.inside += 1
                        probe.most = max(probe.most, probe.inside)
                        await Task.yield()  // a suspension point inside the critical section
                        probe.done += 1
                        probe.inside -= 1
                    }
                }
            }
        }
        #expect(probe.most == 1)
        #expect(probe.done == 200)
    }
}
