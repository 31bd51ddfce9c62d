import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization
import Testing
@testable import FleetController

final class TestClock: Sendable {
    private let value: Mutex<Int64>
    init(_ start: Int64) { value = Mutex(start) }
    var now: Int64 { value.withLock { $0 } }
    func advance(_ s: Int64) { value.withLock { $0 += s } }
}

/// A simulated fleet of 60 devices (3 hardware classes × 2 tiers) checking in through the router.
@Suite("Staged rollouts over a simulated fleet", .serialized)
struct StagedRolloutTests {
    static let classes: [(String, DeviceFacts)] = [
        (
            "x86-avx512-vnni",
            DeviceFacts(arch: "x86_64", cpuFlags: ["avx2", "fma", "avx512f", "avx512_vnni"], memoryBytes: 16 << 30, diskFreeBytes: 64 << 30)
        ),
        ("x86-avx2", DeviceFacts(arch: "x86_64", cpuFlags: ["avx2", "fma"], memoryBytes: 8 << 30, diskFreeBytes: 64 << 30)),
        ("arm64-dotprod", DeviceFacts(arch: "aarch64", cpuFlags: ["asimd", "asimddp"], memoryBytes: 4 << 30, diskFreeBytes: 64 << 30))
    ]
    static let tiers: [(String, Double)] = [("fibre", 300), ("cellular", 20)]

    struct Device {
        let id: String; let cls: String; let tier: String; let facts: DeviceFacts; var installed: [String: String] = [:];
        var seq: UInt64 = 0
    }

    static func fleet() -> [Device] {
        var out: [Device] = []
        for (cls, facts) in classes {
            for (tier, mbps) in tiers {
                for i in 0..<10 {
                    var f = facts
                    f.downlinkMbps = mbps
                    f.metered = false
                    out.append(Device(id: "\(cls)-\(tier)-\(i)", cls: cls, tier: tier, facts: f))
                }
            }
        }
        return out
    }

    static let policy = """
        name: test-canary
        phases:
          - { percent: 10, min_devices: 1, bake: 600 }
          - { percent: 50, min_devices: 1, bake: 600 }
          - { percent: 100 }
        gates:
          min_sample: 1
          max_install_failure_rate: 0.2
          max_health_failure_rate: 0.2
          max_latency_p95_ratio: 1.5
          max_crashes: 0
        on_failure: pause
        device_timeout: 1h
        """

    func fixture() throws -> ControllerFixture {
        let f = try ControllerFixture(
            tiers: """
                tiers:
                  - { name: fibre, metered: false, min_mbps: 50 }
                  - { name: cellular, metered: false }
                """)
        try Self.policy.write(toFile: f.configDir + "/policies/test.yaml", atomically: true, encoding: .utf8)
        return f
    }

    /// One check-in; when `install` says so the device "installs" what it was assigned and reports `outcome`.
    @discardableResult
    func checkIn(
        _ client: some TestClientProtocol, _ d: inout Device, clock: TestClock,
        outcome: (Assignment) -> String = { _ in "committed" }
    ) async throws -> Assignment? {
        let r = try await client.json(
            .post, "/v1/devices/\(d.id)/checkin", CheckInRequest(facts: d.facts, installed: d.installed, agentVersion: "sim"))
        let response = try decode(CheckInResponse.self, r)
        guard let env = response.updates.first?.assignment, let body = env.payloadBytes else { return nil }
        let a = try JSONDecoder().decode(Assignment.self, from: Data(body))
        guard d.installed[a.model] != a.sha256 else { return a }
        let kind = outcome(a)
        d.seq += 1
        try await client.json(
            .post, "/v1/devices/\(d.id)/events",
            EventBatch(events: [StatusEvent(seq: d.seq, time: clock.now, kind: kind, model: a.model, sha256: a.sha256, release: a.release)])
        )
        if kind == "committed" { d.installed[a.model] = a.sha256 }
        return a
    }

    func metrics(_ client: some TestClientProtocol, _ d: inout Device, release: String, p95: Double, clock: TestClock) async throws {
        d.seq += 1
        let m = String(
            decoding: try FleetJSON.encode(
                RuntimeMetrics(latencyP50Ms: p95 / 2, latencyP95Ms: p95, errorRate: 0, requests: 100, crashes: 0)), as: UTF8.self)
        try await client.json(
            .post, "/v1/devices/\(d.id)/events",
            EventBatch(events: [StatusEvent(seq: d.seq, time: clock.now, kind: "metrics", model: "m", release: release, detail: m)]))
    }

    func setUpV1AndV2(_ client: some TestClientProtocol, _ f: ControllerFixture, _ devices: inout [Device], clock: TestClock) async throws {
        let v = try await client.publish(
            model: "m",
            variants: [
                ("m1-int8", "int8", [1, 1]), ("m1-fp32", "fp32", [1, 2]),
                ("m2-int8", "int8", [2, 1]), ("m2-fp32", "fp32", [2, 2])
            ])
        try await f.postReleases(client, model: "m", (0..<2).map { [v[2 * $0], v[2 * $0 + 1]] })
        #expect(try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1", strategy: "all")).status == .created)
        for i in devices.indices { try await checkIn(client, &devices[i], clock: clock) }
        #expect(devices.allSatisfy { $0.installed["m"] != nil })
        let start = try await client.json(
            .post, "/v1/rollouts", NewRollout(release: "m@2", strategy: "staged", policy: "test-canary"),
            headers: [HTTPField.Name("X-Fleet-Actor")!: "alice"])
        #expect(start.status == .created)
    }

    /// Two replicas on one PostgreSQL database; A's cached cells are never refreshed (an hour,
    /// and it missed every announcement). B aborts the rollout: devices of the canary cohort that
    /// check in at A afterwards are not sent the new release from A's stale copy.
    @Test func aReplicaWithAStaleCacheNeverSendsAReleaseAnotherReplicaAborted() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let database = try SharedPostgres.database()
        let clock = TestClock(f.now)
        let (replicaA, _) = try await f.parts(clock: { clock.now }, databaseURL: database, cacheSeconds: 3600, listensForChanges: false)
        let (replicaB, _) = try await f.parts(clock: { clock.now }, databaseURL: database, cacheSeconds: 3600)
        try await replicaA.test(.router) { a in
            try await replicaB.test(.router) { b in
                var devices = Self.fleet()
                try await setUpV1AndV2(a, f, &devices, clock: clock)
                let rid = try decode([RolloutInfo].self, try await a.execute(uri: "/v1/rollouts", method: .get)).last!.id
                // One device per cell checks in at A: every cell is opened there and A caches it running.
                var seen = Set<String>(), rest: [Int] = []
                for i in devices.indices {
                    if seen.insert("\(devices[i].cls)/\(devices[i].tier)").inserted {
                        try await checkIn(a, &devices[i], clock: clock)
                    } else {
                        rest.append(i)
                    }
                }
                let status = try decode(RolloutStatus.self, try await b.execute(uri: "/v1/rollouts/\(rid)", method: .get))
                let share = Dictionary(uniqueKeysWithValues: status.cells.map { ($0.cell, $0.cohortShare) })
                let canary = rest.filter { i in
                    Cohort.position(rollout: "\(rid)", device: devices[i].id) < (share["\(devices[i].cls)/\(devices[i].tier)"] ?? 0)
                }
                #expect(!canary.isEmpty, "the remaining devices include canaries that A's copy would send the release to")
                // A check-in at A that writes no cell: A's cache now holds the rollout active and its cells running.
                let again = try #require(devices.indices.first { !rest.contains($0) })
                try await checkIn(a, &devices[again], clock: clock)
                #expect(try await b.json(.post, "/v1/rollouts/\(rid)/abort", [String: String]()).status == .ok)
                for i in canary {
                    let assigned = try await checkIn(a, &devices[i], clock: clock)
                    #expect(assigned?.release != "m@2", "\(devices[i].id) was sent the aborted release")
                    #expect(devices[i].installed["m"] != nil)
                }
            }
        }
    }

    @Test func failingClassPausesAfterTheCanaryWhileOthersReachEveryone() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let clock = TestClock(f.now)
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = Self.fleet()
            try await setUpV1AndV2(client, f, &devices, clock: clock)
            let rid = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get)).last!.id
            var everAssignedV2 = Set<String>()
            let sick = "arm64-dotprod"
            // Every round: all devices check in, then the driver evaluates the gates; time moves on.
            for _ in 0..<8 {
                for i in devices.indices {
                    let isSick = devices[i].cls == sick
                    let a = try await checkIn(client, &devices[i], clock: clock) { a in
                        a.release == "m@2" && isSick ? "rolled-back" : "committed"
                    }
                    if a?.release == "m@2" { everAssignedV2.insert(devices[i].id) }
                    // The inference service's figures: the latency gate judges every cell.
                    try await metrics(client, &devices[i], release: release(of: devices[i]), p95: 20, clock: clock)
                }
                try await driver.tick(now: clock.now)
                clock.advance(700)
            }
            let status = try decode(RolloutStatus.self, try await client.execute(uri: "/v1/rollouts/\(rid)", method: .get))
            #expect(status.cells.count == 6)
            for cell in status.cells {
                if cell.cell.hasPrefix(sick) {
                    #expect(cell.status == .paused, "\(cell.cell)")
                    #expect(cell.phase == 1)
                    #expect(cell.failedGate?.metric == "health-failure-rate")
                    #expect(cell.failedGate?.threshold == 0.2)
                    #expect(cell.failedGate?.observed == 1.0)
                } else {
                    #expect(cell.status == .completed, "\(cell.cell) is \(cell.status)")
                }
            }
            // No device of the failing class outside its canary cohort was ever assigned the new release.
            let sickDevices = devices.filter { $0.cls == sick }
            let canary = Dictionary(grouping: sickDevices, by: \.tier).mapValues { group in
                Cohort.members(of: group.map(\.id), rollout: "\(rid)", phase: .init(percent: 10, minDevices: 1))
            }
            for d in sickDevices where everAssignedV2.contains(d.id) {
                #expect(canary[d.tier]!.contains(d.id), "\(d.id) got the new release outside the canary")
            }
            #expect(sickDevices.filter { everAssignedV2.contains($0.id) }.count == 2)  // one canary per tier
            // The healthy classes all run the new release.
            for d in devices where d.cls != sick { #expect(everAssignedV2.contains(d.id), "\(d.id)") }
            #expect(status.actions.first?.actor == "alice")
            #expect(status.actions.contains { $0.action == "paused" && $0.detail?.contains("health-failure-rate") == true })
        }
    }

    @Test func twiceSlowerOnOneClassIsCaughtByTheLatencyGate() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let clock = TestClock(f.now)
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = Self.fleet()
            try await setUpV1AndV2(client, f, &devices, clock: clock)
            let rid = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get)).last!.id
            let slow = "x86-avx2"
            for i in devices.indices {
                let a = try await checkIn(client, &devices[i], clock: clock)
                let release = a?.release ?? "m@1"
                let p95: Double = release == "m@2" && devices[i].cls == slow ? 40 : 20
                try await metrics(client, &devices[i], release: release, p95: p95, clock: clock)
            }
            try await driver.tick(now: clock.now)
            let status = try decode(RolloutStatus.self, try await client.execute(uri: "/v1/rollouts/\(rid)", method: .get))
            for cell in status.cells {
                if cell.cell.hasPrefix(slow) {
                    #expect(cell.status == .paused)
                    #expect(cell.failedGate?.metric == "latency-p95-ratio")
                    #expect(cell.failedGate?.observed == 2.0)
                } else {
                    #expect(cell.status == .baking, "\(cell.cell) is \(cell.status)")
                }
            }
        }
    }

    @Test func abortSendsThePreviousReleaseToEveryUpdatedDevice() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let clock = TestClock(f.now)
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = Self.fleet()
            try await setUpV1AndV2(client, f, &devices, clock: clock)
            let rid = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get)).last!.id
            let promote = try await client.json(.post, "/v1/rollouts/\(rid)/promote", RolloutActionRequest())
            #expect(promote.status == .ok)  // cells do not exist before devices check in: nothing to promote yet
            for i in devices.indices { try await checkIn(client, &devices[i], clock: clock) }
            try await driver.tick(now: clock.now)
            let v1 = devices.filter {
                $0.installed["m"].map { Set([Digest.sha256Hex([1, 1] as [UInt8]), Digest.sha256Hex([1, 2] as [UInt8])]).contains($0) }
                    == true
            }
            let updated = devices.count - v1.count
            #expect(updated >= 6)  // at least one canary per cell
            let abort = try await client.json(.post, "/v1/rollouts/\(rid)/abort", RolloutActionRequest())
            #expect(abort.status == .ok)
            #expect(try decode(RolloutStatus.self, abort).rollout.state == .aborted)
            let v1IDs = Set(v1.map(\.id))
            for i in devices.indices {
                let a = try await checkIn(client, &devices[i], clock: clock)
                // Devices the rollout reached go back to m@1; the others are left alone.
                if v1IDs.contains(devices[i].id) {
                    #expect(a == nil, "\(devices[i].id) was not updated but was assigned \(a?.release ?? "")")
                } else {
                    #expect(a?.release == "m@1", "\(devices[i].id) was assigned \(a?.release ?? "nothing")")
                }
            }
            let v1Shas = Set([Digest.sha256Hex([1, 1] as [UInt8]), Digest.sha256Hex([1, 2] as [UInt8])])
            #expect(devices.allSatisfy { v1Shas.contains($0.installed["m"] ?? "") })
            let again = try await client.json(.post, "/v1/rollouts/\(rid)/resume", RolloutActionRequest())
            #expect(again.status == .conflict)
        }
    }
}
