import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import FleetController

/// Labels, selectors, targeted rollouts, waves and maintenance windows, driven through the router
/// with simulated devices (the real agents' side is in IntegrationTests/TargetingTests).
@Suite("Targeting: labels, selectors, waves, maintenance windows", .serialized)
struct TargetingTests {
    struct Device {
        let id: String
        var facts: DeviceFacts
        var installed: [String: String] = [:]
        var seq: UInt64 = 0
        init(_ id: String, labels: [String: String], base: DeviceFacts = ControllerFixture.vnniFacts, timezone: String? = nil) {
            self.id = id
            var f = base
            f.labels = labels.isEmpty ? nil : labels
            f.timezone = timezone
            facts = f
        }
    }

    static let armFacts = DeviceFacts(
        arch: "aarch64", cpuFlags: ["asimd", "asimddp"], memoryBytes: 4 << 30, diskFreeBytes: 64 << 30,
        downlinkMbps: 300, metered: false)

    struct Answer {
        var assignment: Assignment?
        var held: String?
    }

    static let policies = """
        name: waves
        phases:
          - { percent: 100 }
        gates:
          min_sample: 1
          max_health_failure_rate: 0.2
        on_failure: pause
        device_timeout: 1h
        waves:
          - { name: lab, selector: "site=lab" }
          - { name: europe, selector: "region in (eu-west, eu-north)" }
          - { name: rest }
        """

    static let canary = """
        name: one-phase
        phases:
          - { percent: 100 }
        gates:
          min_sample: 1
          max_health_failure_rate: 0.5
        device_timeout: 1h
        """

    func fixture() throws -> ControllerFixture {
        let f = try ControllerFixture()
        try Self.policies.write(toFile: f.configDir + "/policies/waves.yaml", atomically: true, encoding: .utf8)
        try Self.canary.write(toFile: f.configDir + "/policies/one-phase.yaml", atomically: true, encoding: .utf8)
        return f
    }

    /// Publishes releases m@1 … m@n (one int8 variant each) and returns nothing: ids are "m@K".
    func publish(_ client: some TestClientProtocol, _ f: ControllerFixture, releases n: Int, now: Int64) async throws {
        let variants = try await client.publish(model: "m", variants: (1...n).map { ("m\($0)-int8", "int8", [UInt8($0), 7]) })
        try await f.postReleases(client, model: "m", variants.map { [$0] }, days: 60, from: now)
    }

    /// One full check-in; the device installs what it is assigned and reports `outcome` (nil: it
    /// only stages, as a device waiting for its window).
    @discardableResult
    func checkIn(
        _ client: some TestClientProtocol, _ d: inout Device, now: Int64,
        outcome: (Assignment) -> String? = { _ in "committed" }
    ) async throws -> Answer {
        let r = try await client.json(
            .post, "/v1/devices/\(d.id)/checkin", CheckInRequest(facts: d.facts, installed: d.installed, agentVersion: "sim"))
        #expect(r.status == .ok)
        let response = try decode(CheckInResponse.self, r)
        var answer = Answer(held: response.held["m"])
        guard let env = response.updates.first(where: { $0.model == "m" })?.assignment, let body = env.payloadBytes else { return answer }
        let a = try JSONDecoder().decode(Assignment.self, from: Data(body))
        answer.assignment = a
        guard d.installed[a.model] != a.sha256, let kind = outcome(a) else { return answer }
        d.seq += 1
        try await client.json(
            .post, "/v1/devices/\(d.id)/events",
            EventBatch(events: [StatusEvent(seq: d.seq, time: now, kind: kind, model: a.model, sha256: a.sha256, release: a.release)]))
        if kind == "committed" { d.installed[a.model] = a.sha256 }
        return answer
    }

    func start(_ client: some TestClientProtocol, _ body: NewRollout) async throws -> TestResponse {
        try await client.json(.post, "/v1/rollouts", body)
    }

    func status(_ client: some TestClientProtocol, _ id: Int64) async throws -> RolloutStatus {
        try decode(RolloutStatus.self, try await client.execute(uri: "/v1/rollouts/\(id)", method: .get))
    }

    // MARK: labels

    @Test func enrollmentLabelsOutrankTheDevicesOwnAndTheOperatorsOutrankBoth() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        let app = try await a.app()
        try await app.test(.router) { client in
            let admin = try a.adminToken
            let token = try await client.enrollmentToken(admin, NewEnrollmentToken(labels: ["region": "eu-west"]))
            #expect(try await client.enroll("dev-a", token: token, fingerprint: fpA).status == .created)

            func checkIn(_ labels: [String: String]) async throws -> TestResponse {
                var facts = ControllerFixture.vnniFacts
                facts.labels = labels
                return try await client.json(
                    .post, "/v1/devices/dev-a/checkin", CheckInRequest(facts: facts, installed: [:], agentVersion: "t"),
                    headers: peer(fpA))
            }
            func device() async throws -> DeviceInfo {
                try decode(DeviceInfo.self, try await client.execute(uri: "/v1/devices/dev-a", method: .get, headers: bearer(admin)))
            }
            // The device says region=us-east: the token bound eu-west, and that stands.
            #expect(try await checkIn(["region": "us-east", "site": "lab"]).status == .ok)
            var d = try await device()
            #expect(d.labels == ["region": "eu-west", "site": "lab"])
            #expect(d.labelSources == ["region": "enrollment", "site": "agent"])

            // The operator's label outranks the device's own, whatever the device says next.
            let set = try await client.json(
                .post, "/v1/devices/dev-a/labels", LabelUpdate(set: ["site": "store-7", "region": "eu-north"]),
                headers: bearer(admin))
            #expect(set.status == .ok)
            #expect(try await checkIn(["region": "us-east", "site": "lab-2"]).status == .ok)
            d = try await device()
            #expect(d.labels == ["region": "eu-north", "site": "store-7"])
            #expect(d.labelSources == ["region": "operator", "site": "operator"])

            // Removing the operator's labels uncovers the sources below them.
            #expect(
                try await client.json(.post, "/v1/devices/dev-a/labels", LabelUpdate(remove: ["site", "region"]), headers: bearer(admin))
                    .status == .ok)
            d = try await device()
            #expect(d.labels == ["region": "eu-west", "site": "lab-2"])

            // Bad labels from any source are refused, typed, and change nothing.
            let reserved = try await checkIn(["class": "fast"])
            #expect(reserved.status == .badRequest)
            #expect(try decode(APIErrorBody.self, reserved).error.code == "invalid-labels")
            let badToken = try await client.json(
                .post, "/v1/enrollment-tokens", NewEnrollmentToken(labels: ["tier": "x"]), headers: bearer(admin))
            #expect(try decode(APIErrorBody.self, badToken).error.code == "invalid-labels")
            let badValue = try await client.json(
                .post, "/v1/devices/dev-a/labels", LabelUpdate(set: ["site": "no spaces"]), headers: bearer(admin))
            #expect(try decode(APIErrorBody.self, badValue).error.code == "invalid-labels")
            let unknown = try await client.json(.post, "/v1/devices/nobody/labels", LabelUpdate(set: ["site": "x"]), headers: bearer(admin))
            #expect(unknown.status == .notFound)
            #expect(try decode(APIErrorBody.self, unknown).error.code == "unknown-device")
            // A viewer may not label.
            let viewer = try await client.token(admin, name: "v", role: .viewer).token
            #expect(
                try await client.json(.post, "/v1/devices/dev-a/labels", LabelUpdate(set: ["site": "x"]), headers: bearer(viewer)).status
                    == .forbidden)
            d = try await device()
            #expect(d.labels == ["region": "eu-west", "site": "lab-2"])
        }
    }

    // MARK: selectors and targeted rollouts

    @Test func aTargetedRolloutReachesOnlyTheDevicesItsSelectorPicks() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let app = try await f.app()
        try await app.test(.router) { client in
            try await publish(client, f, releases: 2, now: f.now)
            var devices =
                (0..<4).map { Device("eu-\($0)", labels: ["region": "eu-west"]) }
                + (0..<4).map { Device("us-\($0)", labels: ["region": "us-east"]) }
            #expect(try await start(client, NewRollout(release: "m@1", strategy: "all")).status == .created)
            for i in devices.indices { #expect(try await checkIn(client, &devices[i], now: f.now).assignment?.release == "m@1") }

            let r = try await start(client, NewRollout(release: "m@2", strategy: "all", selector: "region = eu-west"))
            #expect(r.status == .created)
            #expect(try decode(RolloutInfo.self, r).selector == "region=eu-west")
            for _ in 0..<2 {
                for i in devices.indices {
                    let a = try await checkIn(client, &devices[i], now: f.now).assignment
                    #expect(a?.release == (devices[i].id.hasPrefix("eu") ? "m@2" : "m@1"), "\(devices[i].id)")
                }
            }
            // The first rollout is still in force for the devices the second does not pick.
            let rollouts = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get))
            #expect(rollouts.map(\.state) == [.active, .active])

            let eu = try decode([DeviceInfo].self, try await client.execute(uri: "/v1/devices?selector=region%3Deu-west", method: .get))
            #expect(eu.map(\.id).sorted() == ["eu-0", "eu-1", "eu-2", "eu-3"])
            let notEU = try decode(
                [DeviceInfo].self, try await client.execute(uri: "/v1/devices?selector=region%21%3Deu-west%2Carch%3Dx86_64", method: .get))
            #expect(notEU.count == 4)
            let status = try decode(
                FleetStatus.self, try await client.execute(uri: "/v1/status?selector=region%20in%20(us-east)", method: .get))
            #expect(status.devices == 4)
            // Counted by the database (whole fleet) and over the device cells (a selector), they
            // agree with the devices listed one by one.
            let all = try decode([DeviceInfo].self, try await client.execute(uri: "/v1/devices", method: .get))
            let whole = try decode(FleetStatus.self, try await client.execute(uri: "/v1/status", method: .get))
            #expect(whole.devices == devices.count && all.count == devices.count)
            #expect(whole.byClass == Dictionary(grouping: all) { $0.hardwareClass ?? "none" }.mapValues(\.count))
            #expect(whole.byTier == Dictionary(grouping: all) { $0.tier ?? "none" }.mapValues(\.count))
            #expect(whole.byStatus == Dictionary(grouping: all) { $0.status.rawValue }.mapValues(\.count))
            let usEast = all.filter { $0.labels?["region"] == "us-east" }
            #expect(status.byClass == Dictionary(grouping: usEast) { $0.hardwareClass ?? "none" }.mapValues(\.count))
            #expect(status.byStatus == Dictionary(grouping: usEast) { $0.status.rawValue }.mapValues(\.count))

            // A malformed selector names where it went wrong, and starts nothing.
            let bad = try await start(client, NewRollout(release: "m@2", strategy: "all", selector: "region in (eu-west"))
            #expect(bad.status == .badRequest)
            let body = try decode(APIErrorBody.self, bad)
            #expect(body.error.code == "invalid-selector")
            // The parenthesis that is never closed.
            #expect(body.error.counts?["position"] == 10)
            let listed = try await client.execute(uri: "/v1/devices?selector=%21%21x", method: .get)
            #expect(try decode(APIErrorBody.self, listed).error.code == "invalid-selector")
            #expect(try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get)).count == 2)
        }
    }

    @Test func anOverlappingStagedRolloutIsRefusedWithTheDevicesInCommonCounted() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let (app, driver) = try await f.parts()
        try await app.test(.router) { client in
            try await publish(client, f, releases: 3, now: f.now)
            var devices =
                (0..<3).map { Device("eu-\($0)", labels: ["region": "eu-west"]) }
                + (0..<2).map { Device("eu-lab-\($0)", labels: ["region": "eu-west", "site": "lab"]) }
                + (0..<3).map { Device("us-\($0)", labels: ["region": "us-east"]) }
            #expect(try await start(client, NewRollout(release: "m@1", strategy: "all")).status == .created)
            for i in devices.indices { try await checkIn(client, &devices[i], now: f.now) }

            let euStart = try await start(
                client, NewRollout(release: "m@2", strategy: "staged", policy: "one-phase", selector: "region=eu-west"))
            #expect(euStart.status == .created)
            let eu = try decode(RolloutInfo.self, euStart).id
            try await driver.tick(now: f.now)

            // site=lab shares the two lab devices with the active eu-west rollout.
            let overlap = try await start(client, NewRollout(release: "m@3", strategy: "staged", policy: "one-phase", selector: "site=lab"))
            #expect(overlap.status == .conflict)
            let body = try decode(APIErrorBody.self, overlap)
            #expect(body.error.code == "rollout-overlap")
            #expect(body.error.counts?["devicesInCommon"] == 2)
            // The whole fleet overlaps too; a disjoint selector does not.
            let everyone = try await start(client, NewRollout(release: "m@3", strategy: "staged", policy: "one-phase"))
            #expect(try decode(APIErrorBody.self, everyone).error.counts?["devicesInCommon"] == 5)
            let us = try await start(
                client, NewRollout(release: "m@3", strategy: "staged", policy: "one-phase", selector: "region=us-east"))
            #expect(us.status == .created)

            // --supersede takes the lab devices over: they follow the newer rollout from then on.
            let lab = try await start(
                client, NewRollout(release: "m@3", strategy: "staged", policy: "one-phase", selector: "site=lab", supersede: true))
            #expect(lab.status == .created)
            let labID = try decode(RolloutInfo.self, lab).id
            try await driver.tick(now: f.now)
            for i in devices.indices {
                let a = try await checkIn(client, &devices[i], now: f.now).assignment
                switch devices[i].id {
                case let id where id.hasPrefix("eu-lab"): #expect(a?.release == "m@3", "\(id)")
                case let id where id.hasPrefix("eu"): #expect(a?.release == "m@2", "\(id)")
                default: #expect(a?.release == "m@3", "\(devices[i].id)")
                }
            }
            let euStatus = try await status(client, eu)
            #expect(euStatus.actions.isEmpty == false)
            #expect(try await status(client, labID).actions.first?.detail?.contains("rollout \(eu)") == true)
            // The eu-west rollout's cells no longer count the lab devices.
            try await driver.tick(now: f.now + 60)
            #expect(try await status(client, eu).cells.map { $0.observation?.targeted ?? 0 }.reduce(0, +) == 3)
        }
    }

    // MARK: waves

    @Test func wavesRunInOrderAndAFailingGateStopsItsWaveAndTheOnesAfter() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let (app, driver) = try await f.parts()
        try await app.test(.router) { client in
            try await publish(client, f, releases: 2, now: f.now)
            var devices =
                (0..<2).map { Device("lab-\($0)", labels: ["region": "eu-west", "site": "lab"]) }
                + (0..<3).map { Device("eu-vnni-\($0)", labels: ["region": "eu-north"]) }
                + (0..<3).map { Device("eu-board-\($0)", labels: ["region": "eu-west"], base: Self.armFacts) }
                + (0..<3).map { Device("us-\($0)", labels: ["region": "us-east"]) }
            #expect(try await start(client, NewRollout(release: "m@1", strategy: "all")).status == .created)
            for i in devices.indices { try await checkIn(client, &devices[i], now: f.now) }
            let rid = try decode(RolloutInfo.self, try await start(client, NewRollout(release: "m@2", strategy: "staged", policy: "waves")))
                .id

            // Wave 1 (lab) only: Europe and the rest wait for their wave.
            var sentV2 = Set<String>()
            for i in devices.indices {
                let answer = try await checkIn(client, &devices[i], now: f.now)
                if answer.assignment?.release == "m@2" { sentV2.insert(devices[i].id) }
                if !devices[i].id.hasPrefix("lab") { #expect(answer.held == "waiting-for-wave", "\(devices[i].id)") }
            }
            #expect(sentV2 == ["lab-0", "lab-1"])
            try await driver.tick(now: f.now + 10)
            var s = try await status(client, rid)
            #expect(s.waves?.map(\.status) == [.completed, .running, .pending])
            #expect(s.waves?.map(\.devices) == [2, 6, 3])

            // Wave 2 (europe): the boards fail their health check; the gate pauses their cell, and
            // the wave's other cell with it. The rest never sees m@2.
            for _ in 0..<3 {
                for i in devices.indices {
                    // The boards fail their health check; the other European devices are still installing.
                    let board = devices[i].id.hasPrefix("eu-board"), slow = devices[i].id.hasPrefix("eu-vnni")
                    let answer = try await checkIn(client, &devices[i], now: f.now + 20) { a in
                        a.release != "m@2" ? "committed" : board ? "rolled-back" : slow ? nil : "committed"
                    }
                    if answer.assignment?.release == "m@2" { sentV2.insert(devices[i].id) }
                }
                try await driver.tick(now: f.now + 30)
            }
            s = try await status(client, rid)
            #expect(s.waves?.map(\.status) == [.completed, .stopped, .pending])
            let europe = s.cells.filter { $0.cell.hasPrefix("europe:") }
            #expect(europe.count == 2)
            #expect(europe.allSatisfy { $0.status == .paused })
            #expect(s.actions.contains { $0.action == "paused" && $0.detail?.hasPrefix("wave europe stopped") == true })
            #expect(!sentV2.contains { $0.hasPrefix("us") })
            for i in devices.indices where devices[i].id.hasPrefix("us") {
                #expect(try await checkIn(client, &devices[i], now: f.now + 40).held == "waiting-for-wave")
            }
        }
    }

    @Test func wavesCompleteOneAfterAnother() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let (app, driver) = try await f.parts()
        try await app.test(.router) { client in
            try await publish(client, f, releases: 2, now: f.now)
            var devices = [
                Device("lab-0", labels: ["site": "lab"]), Device("eu-0", labels: ["region": "eu-west"]), Device("us-0", labels: [:])
            ]
            #expect(try await start(client, NewRollout(release: "m@1", strategy: "all")).status == .created)
            for i in devices.indices { try await checkIn(client, &devices[i], now: f.now) }
            let rid = try decode(RolloutInfo.self, try await start(client, NewRollout(release: "m@2", strategy: "staged", policy: "waves")))
                .id
            var order: [String] = []
            for round in 0..<6 {
                for i in devices.indices {
                    let before = devices[i].installed["m"]
                    try await checkIn(client, &devices[i], now: f.now + Int64(round))
                    if devices[i].installed["m"] != before { order.append(devices[i].id) }
                }
                try await driver.tick(now: f.now + Int64(round))
            }
            #expect(order == ["lab-0", "eu-0", "us-0"])
            let s = try await status(client, rid)
            #expect(s.rollout.state == .completed)
            #expect(s.waves?.map(\.status) == [.completed, .completed, .completed])
            #expect(s.actions.filter { $0.action == "wave-started" }.count == 2)
        }
    }

    // MARK: maintenance windows

    /// 2026-07-01 12:00 UTC: Berlin is at UTC+2, New York at UTC-4 (both on summer time).
    static let noonJuly1: Int64 = 1_782_907_200
    static let berlin2am: Int64 = 1_782_950_400  // 2026-07-02 00:00 UTC
    static let newYork2am: Int64 = 1_782_972_000  // 2026-07-02 06:00 UTC

    @Test func activationWindowsAreSignedInEachDevicesZoneAndTimeoutsWaitForThem() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let clock = TestClock(Self.noonJuly1)
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            try await publish(client, f, releases: 2, now: clock.now)
            // One zone from a label, one from the device's configured zone.
            var devices = [
                Device("berlin", labels: ["timezone": "Europe/Berlin"]), Device("new-york", labels: [:], timezone: "America/New_York")
            ]
            #expect(try await start(client, NewRollout(release: "m@1", strategy: "all")).status == .created)
            for i in devices.indices { try await checkIn(client, &devices[i], now: clock.now) }
            let r = try await start(client, NewRollout(release: "m@2", strategy: "staged", policy: "one-phase", window: "daily 02:00+3h"))
            #expect(r.status == .created)
            let rid = try decode(RolloutInfo.self, r).id
            try await driver.tick(now: clock.now)

            // Sent now (to download and stage), signed to activate at 02:00 local only.
            var first: [String: Assignment] = [:]
            for i in devices.indices {
                let a = try await checkIn(client, &devices[i], now: clock.now) { _ in nil }.assignment
                first[devices[i].id] = a
            }
            #expect(first["berlin"]?.activation?.first == ActivationWindow(start: Self.berlin2am, end: Self.berlin2am + 3 * 3600))
            #expect(first["new-york"]?.activation?.first == ActivationWindow(start: Self.newYork2am, end: Self.newYork2am + 3 * 3600))
            #expect(first["berlin"]?.activation?.count == Targeting.occurrencesSigned)
            #expect(try await status(client, rid).waitingForWindow == 2)

            // Two hours later neither has reached its window: neither has timed out.
            clock.advance(2 * 3600)
            try await driver.tick(now: clock.now)
            #expect(try await status(client, rid).cells.first?.observation?.timedOut == 0)

            // Inside Berlin's window: the same assignment (its windows have not changed); Berlin is
            // no longer waiting, New York is.
            clock.value(Self.berlin2am + 3600)
            var again = try await checkIn(client, &devices[0], now: clock.now) { _ in nil }.assignment
            #expect(again?.counter == first["berlin"]?.counter)
            #expect(try await status(client, rid).waitingForWindow == 1)
            // Half an hour past Berlin's deadline (its window opened at 00:00 UTC, timeout 1 h): timed
            // out; New York's clock has not started.
            clock.value(Self.berlin2am + 3600 + 1800)
            try await driver.tick(now: clock.now)
            let o = try await status(client, rid).cells.first?.observation
            #expect(o?.timedOut == 1)

            // Once Berlin's first window has passed, the assignment is signed again from the next one.
            clock.value(Self.berlin2am + 3 * 3600 + 60)
            again = try await checkIn(client, &devices[0], now: clock.now) { _ in nil }.assignment
            #expect((again?.counter ?? 0) > (first["berlin"]?.counter ?? 0))
            #expect(again?.activation?.first?.start == Self.berlin2am + 86_400)
        }
    }

    @Test func theWorkedExamplePolicyLoads() throws {
        let path = ControllerFixture.repoRoot + "/fleet/examples/lab-europe-rest.yaml"
        let p = try PolicyLoader.parse(try String(contentsOfFile: path, encoding: .utf8), file: path)
        #expect(p.waves?.map(\.name) == ["lab", "europe", "rest"])
        #expect(p.forWave(0).phases.count == 1 && p.forWave(1).phases.count == 3)
        #expect(p.forWave(1).window == (try MaintenanceWindow(parsing: "daily 01:00+4h")))
        #expect(p.forWave(2).window == nil)
        #expect(p.wave(for: ["site": "lab", "region": "eu-west"]) == 0)
        #expect(p.wave(for: ["region": "eu-north"]) == 1)
        #expect(p.wave(for: ["region": "us-east", "class": "x86-avx2"]) == 2)
        // Broken waves are named.
        for doc in [
            "waves: []", "waves: [{name: a}, {name: a}]", "waves: [{name: 'a:b'}]", "waves: [{name: a, selector: 'x in ('}]",
            "waves: [{name: a, window: 'daily 02:00+3h Mars/Olympus'}]"
        ] {
            #expect(throws: ConfigError.self, "\(doc)") { try PolicyLoader.parse("name: p\nphases: [{percent: 100}]\n\(doc)\n", file: "t") }
        }
    }

    @Test func aBadWindowIsRefused() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let app = try await f.app()
        try await app.test(.router) { client in
            try await publish(client, f, releases: 1, now: f.now)
            for window in ["daily 25:00+1h", "daily 02:00+3h Mars/Olympus", "someday 02:00+1h"] {
                let r = try await start(client, NewRollout(release: "m@1", strategy: "all", window: window))
                #expect(r.status == .badRequest, "\(window)")
                #expect(try decode(APIErrorBody.self, r).error.code == "invalid-window", "\(window)")
            }
            #expect(try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get)).isEmpty)
        }
    }
}

extension TestClock {
    func value(_ t: Int64) { advance(t - now) }
}
