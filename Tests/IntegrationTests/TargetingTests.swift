import FleetCore
import Foundation
import Testing
import TestSupport

/// Targeting with the real binaries: agents that carry labels, a rollout limited to a selector,
/// and maintenance windows in two time zones with the agent's clock moved by the test hook.
@Suite("Targeting with real agents", .serialized, .ownThread)
struct TargetingIntegrationTests {
    /// The demo VNNI facts with `labels` and a configured zone.
    func facts(_ fleet: TestFleet, _ name: String, labels: [String: String], timezone: String? = nil) throws -> String {
        var f = try JSONDecoder().decode(
            DeviceFacts.self, from: Data(contentsOf: URL(fileURLWithPath: TestFleet.demoFacts("edge-x86-vnni-01.json"))))
        f.deviceId = nil
        f.labels = labels
        f.timezone = timezone
        let path = fleet.dir + "/\(name).facts.json"
        try FleetJSON.encode(f).write(to: URL(fileURLWithPath: path))
        return path
    }

    func slotExists(_ a: TestFleet.Agent, sha: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: "\(a.models)/m/\(sha)", isDirectory: &isDir) && isDir.boolValue
    }

    @Test func devicesOutsideTheSelectorNeverSeeTheRelease() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let v1 = try fleet.makeFile("m-v1.safetensors", size: 200_000, seed: 1)
        let v2 = try fleet.makeFile("m-v2.safetensors", size: 200_000, seed: 2)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        var agents: [TestFleet.Agent] = []
        for (name, region) in [("eu-0", "eu-west"), ("eu-1", "eu-west"), ("us-0", "us-east"), ("us-1", "us-east")] {
            let a = fleet.agent(name, facts: try facts(fleet, name, labels: ["region": region]))
            agents.append(a)
            _ = try fleet.start("fleet-agent", fleet.agentArgs(a, extra: ["--device-id", name]), log: fleet.dir + "/\(name).log")
        }
        try fleet.waitFor("every agent on v1", timeout: 60) {
            agents.allSatisfy { fleet.current($0, model: "m").contentSha == fleet.sha(v1) }
        }

        _ = try fleet.fleetctl(["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8", "--format", "safetensors"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-v2"])
        let r = try fleet.fleetctlJSON(RolloutInfo.self, ["rollout", "start", "m@2", "--all", "--selector", "region in (eu-west)"])
        #expect(r.selector == "region=eu-west")  // canonical form
        try fleet.waitFor("the eu-west agents on v2", timeout: 60) {
            agents.prefix(2).allSatisfy { fleet.current($0, model: "m").contentSha == fleet.sha(v2) }
        }
        // Three more check-ins from everyone: the others still run v1 and never fetched v2.
        let seen = Dictionary(
            uniqueKeysWithValues: try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).map { ($0.id, $0.lastSeen) })
        try fleet.waitFor("three more check-ins", timeout: 30) {
            try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).allSatisfy { $0.lastSeen >= (seen[$0.id] ?? 0) + 3 }
        }
        for a in agents.suffix(2) {
            #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1), "\(a.name)")
            #expect(!slotExists(a, sha: fleet.sha(v2)), "\(a.name) staged v2")
            #expect(try fleet.events(a.name).allSatisfy { $0.sha256 != fleet.sha(v2) }, "\(a.name) reported on v2")
        }
        let listed = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list", "--selector", "region=us-east"])
        #expect(listed.map(\.id).sorted() == ["us-0", "us-1"])
        #expect(listed.allSatisfy { $0.labelSources?["region"] == "agent" })
        // A malformed selector is a clear error from fleetctl, before anything is sent.
        let bad = try fleet.run("fleetctl", ["--controller", fleet.url, "devices", "list", "--selector", "region in eu"])
        #expect(bad.status != 0)
    }

    /// Waves with real agents: the lab wave goes first and completes, Europe follows; a health
    /// check failing in Europe pauses its wave, and the rest of the fleet never sees the release.
    @Test func wavesRunInOrderAndAFailingWaveStopsTheRest() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let v1 = try fleet.makeFile("m-v1.safetensors", size: 100_000, seed: 21)
        let v2 = try fleet.makeFile("m-v2.safetensors", size: 100_000, seed: 22)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        let unhealthyV2 = "test \"$EDGEFLEET_MODEL_SHA256\" != \(fleet.sha(v2))"
        let members: [(String, [String: String], Bool)] = [
            ("lab-0", ["site": "lab", "region": "eu-west"], false),
            ("eu-0", ["region": "eu-west"], true), ("eu-1", ["region": "eu-west"], false),
            ("us-0", ["region": "us-east"], false), ("us-1", ["region": "us-east"], false)
        ]
        var agents: [TestFleet.Agent] = []
        for (name, labels, sick) in members {
            let a = fleet.agent(name, facts: try facts(fleet, name, labels: labels))
            agents.append(a)
            _ = try fleet.start(
                "fleet-agent", fleet.agentArgs(a, extra: ["--device-id", name] + (sick ? ["--health-command", unhealthyV2] : [])),
                log: fleet.dir + "/\(name).log")
        }
        try fleet.waitFor("every agent on v1", timeout: 60) {
            agents.allSatisfy { fleet.current($0, model: "m").contentSha == fleet.sha(v1) }
        }
        let policy = fleet.dir + "/waves.yaml"
        try """
        name: lab-europe-rest
        phases:
          - { percent: 100 }
        gates:
          min_sample: 1
          max_health_failure_rate: 0.2
          unjudged: pass
        on_failure: pause
        device_timeout: 10m
        waves:
          - { name: lab, selector: "site=lab" }
          - { name: europe, selector: "region=eu-west" }
          - { name: rest }
        """.write(toFile: policy, atomically: true, encoding: .utf8)
        _ = try fleet.fleetctl(["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8", "--format", "safetensors"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-v2"])
        let r = try fleet.fleetctlJSON(RolloutInfo.self, ["rollout", "start", "m@2", "--policy", policy])

        try fleet.waitFor("the lab done, Europe stopped by its health gate", timeout: 90) {
            let s = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(r.id)"])
            return s.waves?.map(\.status) == [.completed, .stopped, .pending]
        }
        #expect(fleet.current(agents[0], model: "m").contentSha == fleet.sha(v2))
        #expect(fleet.current(agents[1], model: "m").contentSha == fleet.sha(v1))  // rolled back on the device
        // The rest keeps checking in and never sees v2.
        let seen = Dictionary(
            uniqueKeysWithValues: try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).map { ($0.id, $0.lastSeen) })
        try fleet.waitFor("three more check-ins", timeout: 30) {
            try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).allSatisfy { $0.lastSeen >= (seen[$0.id] ?? 0) + 3 }
        }
        for a in agents.suffix(2) {
            #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1), "\(a.name)")
            #expect(try fleet.events(a.name).allSatisfy { $0.sha256 != fleet.sha(v2) }, "\(a.name)")
        }
        let held = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list", "--selector", "region=us-east"]).map { $0.held["m"] }
        #expect(held == ["waiting-for-wave", "waiting-for-wave"])
    }

    /// The window opens at the same wall-clock instant nowhere: "daily HH:MM+1h" is open now in
    /// Kolkata (+5:30) and five hours away in UTC. The Kolkata agent activates at once; the UTC one
    /// downloads and stages, and waits; moved five and a half hours ahead, it activates.
    @Test func activationWaitsForEachDevicesWindow() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let v1 = try fleet.makeFile("m-v1.safetensors", size: 200_000, seed: 11)
        let v2 = try fleet.makeFile("m-v2.safetensors", size: 200_000, seed: 12)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        let kolkata = fleet.agent("kolkata", facts: try facts(fleet, "kolkata", labels: [:], timezone: "Asia/Kolkata"))
        let utc = fleet.agent("utc", facts: try facts(fleet, "utc", labels: ["timezone": "UTC"]))
        for a in [kolkata, utc] {
            _ = try fleet.start("fleet-agent", fleet.agentArgs(a, extra: ["--device-id", a.name]), log: fleet.dir + "/\(a.name).log")
        }
        try fleet.waitFor("both on v1", timeout: 60) {
            [kolkata, utc].allSatisfy { fleet.current($0, model: "m").contentSha == fleet.sha(v1) }
        }

        // Ten minutes ago in Kolkata, to the minute.
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "Asia/Kolkata")!
        let start = calendar.dateComponents([.hour, .minute], from: Date().addingTimeInterval(-600))
        let window = String(format: "daily %02d:%02d+1h", start.hour!, start.minute!)
        _ = try fleet.fleetctl(["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8", "--format", "safetensors"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-v2"])
        let r = try fleet.fleetctlJSON(RolloutInfo.self, ["rollout", "start", "m@2", "--all", "--window", window])

        try fleet.waitFor("Kolkata on v2, UTC staged and waiting", timeout: 60) {
            fleet.current(kolkata, model: "m").contentSha == fleet.sha(v2) && slotExists(utc, sha: fleet.sha(v2))
                && fleet.journalPhase(utc, model: "m") == "staged"
        }
        // Outside its window it stays on v1, check-in after check-in.
        let before = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first { $0.id == "utc" }?.lastSeen ?? 0
        try fleet.waitFor("three more check-ins from the UTC agent", timeout: 30) {
            (try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first { $0.id == "utc" }?.lastSeen ?? 0) >= before + 3
        }
        #expect(fleet.current(utc, model: "m").contentSha == fleet.sha(v1))
        #expect(try fleet.events("utc").allSatisfy { !($0.kind == "activated" && $0.sha256 == fleet.sha(v2)) })
        #expect(try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(r.id)"]).waitingForWindow == 1)

        // The same agent, its clock five and a half hours ahead: inside its window, it activates.
        for p in fleet.background where p.arguments?.contains("utc") == true && p.isRunning {
            kill(p.processIdentifier, SIGTERM)
            p.waitUntilExit()
        }
        _ = try fleet.start(
            "fleet-agent", fleet.agentArgs(utc, extra: ["--device-id", "utc"]), log: fleet.dir + "/utc-later.log",
            env: ["EDGEFLEET_TEST_CLOCK_SKEW": "\(5 * 3600 + 1800)"])
        try fleet.waitFor("UTC on v2 inside its window", timeout: 60) { fleet.current(utc, model: "m").contentSha == fleet.sha(v2) }
        // Downloaded once, before the window: activating did not fetch it again.
        let downloads = try fleet.events("utc").filter { $0.kind == "downloaded" && $0.sha256 == fleet.sha(v2) }.count
        #expect(downloads == 1)
    }
}
