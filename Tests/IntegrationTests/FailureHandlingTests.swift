import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// Failures handled once, through the real binaries: no re-install storm after a failed health
/// check, a bounded number of fetches of a corrupted artifact, a crash loop ended by a rollback.
@Suite("Failures handled once with real agents", .serialized, .ownThread)
struct FailureHandlingTests {
    /// Tiers as in fleet/, with retries fast enough for a test.
    static let fastRetryTiers = """
        tiers:
          - { name: fibre, metered: false, min_mbps: 50, retry: { attempts: 3, backoff: 1s, max_backoff: 2s } }
          - { name: cellular, metered: false, min_mbps: 2, retry: { attempts: 3, backoff: 1s, max_backoff: 2s } }
          - { name: constrained, retry: { attempts: 3, backoff: 1s, max_backoff: 2s } }
        """

    func activations(_ events: [StatusEvent], release: String) -> Int {
        events.filter { $0.kind == "activated" && $0.release == release }.count
    }

    /// Twelve agents in two classes; the new release fails its health check on one class under a
    /// policy that pauses on failure. Each bad canary activates the bad release exactly once and
    /// is then held as failed, however many times it checks in; the healthy class gets everyone.
    @Test func failingCanaryActivatesTheBadReleaseExactlyOnce() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let v1 = try fleet.makeFile("v1.safetensors", size: 200_000, seed: 70)
        let v2 = try fleet.makeFile("v2.safetensors", size: 200_000, seed: 71)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        _ = try fleet.fleetctl(["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8", "--format", "safetensors"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-v2"])

        let bad = "edge-arm64-01.json", good = "edge-x86-vnni-01.json"
        var agents: [(TestFleet.Agent, Bool)] = []
        for i in 0..<6 {
            agents.append((fleet.agent("arm-\(i)", facts: TestFleet.demoFacts(bad)), true))
            agents.append((fleet.agent("x86-\(i)", facts: TestFleet.demoFacts(good)), false))
        }
        // The new model is unhealthy on the arm64 class only.
        let unhealthyV2 = "test \"$EDGEFLEET_MODEL_SHA256\" != \(fleet.sha(v2))"
        for (a, sick) in agents {
            let extra = ["--device-id", a.name] + (sick ? ["--health-command", unhealthyV2] : [])
            let r = try fleet.runOnce(a, extra: extra)
            #expect(r.status == 0, "\(a.name): \(r.stderr)")
            #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        }
        let policy = fleet.dir + "/pause-on-failure.yaml"
        try """
        name: pause-on-failure
        phases:
          - { percent: 30, min_devices: 1, bake: 0s }
          - { percent: 100 }
        gates:
          min_sample: 1
          max_health_failure_rate: 0.2
          unjudged: pass
        on_failure: pause
        device_timeout: 10m
        """.write(toFile: policy, atomically: true, encoding: .utf8)
        let started = try fleet.fleetctlJSON(RolloutInfo.self, ["rollout", "start", "m@2", "--policy", policy])
        for (a, sick) in agents {
            _ = try fleet.start(
                "fleet-agent", fleet.agentArgs(a, extra: ["--device-id", a.name] + (sick ? ["--health-command", unhealthyV2] : [])),
                log: fleet.dir + "/\(a.name).log")
        }
        // The healthy class reaches every device; the sick class pauses after its canaries.
        try fleet.waitFor("the healthy class on v2 and the sick cell paused", timeout: 90) {
            let s = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(started.id)"])
            let healthyDone = agents.filter { !$0.1 }.allSatisfy { fleet.current($0.0, model: "m").contentSha == fleet.sha(v2) }
            return healthyDone && s.cells.contains { $0.cell.hasPrefix("arm64") && $0.status == .paused }
        }
        // Every agent keeps checking in for a while: at least five more check-ins each.
        let seen = Dictionary(
            uniqueKeysWithValues: try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).map { ($0.id, $0.lastSeen) })
        try fleet.waitFor("five more check-ins from every agent", timeout: 60) {
            try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).allSatisfy { $0.lastSeen >= (seen[$0.id] ?? 0) + 5 }
        }
        let status = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(started.id)"])
        let sickCell = try #require(status.cells.first { $0.cell.hasPrefix("arm64") })
        var canaries = 0
        for (a, sick) in agents {
            let n = activations(try fleet.events(a.name), release: "m@2")
            if sick {
                #expect(n <= 1, "\(a.name) activated the bad release \(n) times")
                #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1), "\(a.name) does not run v1")
                canaries += n
            } else {
                #expect(n == 1, "\(a.name) activated v2 \(n) times")
            }
        }
        #expect(canaries >= 1)
        #expect((sickCell.observation?.healthFailed ?? 0) >= 1)
        #expect(sickCell.failedNotRetried == canaries)
        let held = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).filter { $0.held["m"] == "failed" }
        #expect(held.count == canaries)
        // The rolled-back events carry their fault class.
        let failedEvents = try agents.filter(\.1).flatMap { try fleet.events($0.0.name) }.filter { $0.kind == "rolled-back" }
        #expect(failedEvents.count == canaries && failedEvents.allSatisfy { $0.fault == InstallFault.healthCheck.rawValue })
    }

    /// Every download of the artifact arrives with a byte flipped on the way (the stored copy is
    /// intact, so the controller finds nothing wrong on its side): the device tries it at most the
    /// tier's three attempts, with backoff, then is held as failed and fetches it no more.
    @Test func artifactCorruptedOnTheWayIsFetchedABoundedNumberOfTimes() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController(config: try fleet.config(tiers: Self.fastRetryTiers))
        let a = fleet.agent("edge-arm64-01", facts: TestFleet.demoFacts("edge-arm64-01.json"))
        let v1 = try fleet.makeFile("v1.safetensors", size: 300_000, seed: 80)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        try fleet.runOnce(a)
        let v2 = try fleet.makeFile("v2.safetensors", size: 2_000_000, seed: 81)
        try fleet.publish(model: "m", version: "2", variants: [("m-v2", "int8", v2)], addModel: false)
        let proxy = try fleet.startProxy(["--flip-artifact-byte"])

        _ = try fleet.start("fleet-agent", fleet.agentArgs(a, controller: "http://127.0.0.1:\(proxy.port)"), log: fleet.dir + "/agent.log")
        try fleet.waitFor("the device given up and held as failed", timeout: 60) {
            try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first?.held["m"] == "failed"
        }
        let seen = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first?.lastSeen ?? 0
        try fleet.waitFor("four more check-ins", timeout: 30) {
            (try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first?.lastSeen ?? 0) >= seen + 4
        }
        let events = try fleet.events("edge-arm64-01").filter { $0.release == "m@2" }
        #expect(events.filter { $0.kind == "started" }.count == 3, "\(events.map(\.kind))")
        let retrying = events.filter { $0.kind == "retrying" }
        #expect(retrying.count == 2)
        #expect(retrying.allSatisfy { $0.fault == InstallFault.hashMismatch.rawValue && $0.retryAt != nil })
        let final = try #require(events.last)
        #expect(final.kind == "failed" && final.fault == InstallFault.retriesExhausted.rawValue)
        // Later retries wait at least the backoff: attempts are spaced, never back to back.
        let starts = events.filter { $0.kind == "started" }.map(\.time)
        #expect(zip(starts, starts.dropFirst()).allSatisfy { $1 - $0 >= 1 })
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        #expect(try FileManager.default.contentsOfDirectory(atPath: a.state + "/downloads").isEmpty)
        // Three downloads of the 2 MB artifact crossed the proxy, no more.
        let downloads = fleet.proxyLog(proxy.log).filter { ($0["path"] as? String)?.hasSuffix(fleet.sha(v2)) == true }
        #expect(downloads.count == 3, "\(downloads)")
    }

    /// The artifact rotted on the controller's disk: the first device that cannot verify it makes
    /// the controller hash its copy again; the copy is quarantined and the device is held
    /// (`artifact-quarantined`) instead of being sent bytes that cannot verify.
    @Test func artifactRottenOnTheControllerIsCaughtByTheFirstDeviceReport() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController(config: try fleet.config(tiers: Self.fastRetryTiers))
        let a = fleet.agent("edge-arm64-01", facts: TestFleet.demoFacts("edge-arm64-01.json"))
        let v1 = try fleet.makeFile("v1.safetensors", size: 300_000, seed: 82)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        try fleet.runOnce(a)
        let v2 = try fleet.makeFile("v2.safetensors", size: 2_000_000, seed: 83)
        try fleet.publish(model: "m", version: "2", variants: [("m-v2", "int8", v2)], addModel: false)
        let stored = fleet.artifactPath(fleet.sha(v2))
        var bytes = [UInt8](FileManager.default.contents(atPath: stored)!)
        bytes[bytes.count / 3] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: stored))

        _ = try fleet.start("fleet-agent", fleet.agentArgs(a), log: fleet.dir + "/agent.log")
        try fleet.waitFor("the device held on a quarantined artifact", timeout: 60) {
            try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first?.held["m"] == "artifact-quarantined"
        }
        let seen = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first?.lastSeen ?? 0
        try fleet.waitFor("four more check-ins", timeout: 30) {
            (try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first?.lastSeen ?? 0) >= seen + 4
        }
        let events = try fleet.events("edge-arm64-01").filter { $0.release == "m@2" }
        #expect(events.first { $0.kind == "retrying" }?.fault == InstallFault.hashMismatch.rawValue)
        let started = events.filter { $0.kind == "started" }.count
        #expect((1...2).contains(started), "\(events.map(\.kind))")
        #expect(!FileManager.default.fileExists(atPath: stored), "the rotten copy is still in the store")
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        // The dashboard and /metrics say so.
        let page = try fleet.run("/usr/bin/env", ["curl", "-fsS", fleet.url + "/"], timeout: 20).stdout
        #expect(page.contains("data-quarantined=\"\(fleet.sha(v2))\""))
        let metrics = try fleet.run("/usr/bin/env", ["curl", "-fsS", fleet.url + "/metrics"], timeout: 20).stdout
        #expect(
            metrics.split(separator: "\n").contains {
                $0.hasPrefix("edgefleet_artifacts_quarantined") && $0.split(separator: " ").last.flatMap { Double($0) } == 1
            })
    }

    /// The agent dies in the health check of a new model at every start (the check kills it).
    /// After three restarts in that phase it rolls back without running the check again, reports
    /// a crash loop, and does not try that release again.
    @Test func crashLoopInTheHealthCheckEndsInRollback() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let a = fleet.agent("edge-arm64-01", facts: TestFleet.demoFacts("edge-arm64-01.json"))
        let v1 = try fleet.makeFile("v1.safetensors", size: 300_000, seed: 90)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        try fleet.runOnce(a)
        let v2 = try fleet.makeFile("v2.safetensors", size: 300_000, seed: 91)
        try fleet.publish(model: "m", version: "2", variants: [("m-v2", "int8", v2)], addModel: false)
        // The check kills the agent that runs it: a crash in the middle of the health check.
        let killer = ["--health-command", "kill -9 $PPID; sleep 2"]
        for attempt in 1...3 {
            let r = try fleet.runOnce(a, extra: killer)
            #expect(r.signalled && r.status == SIGKILL, "run \(attempt) was not killed: \(r.status) \(r.stderr)")
            #expect(fleet.journalPhase(a, model: "m") == "checkingHealth")
        }
        let r = try fleet.runOnce(a, extra: killer)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(fleet.journalPhase(a, model: "m") == "rolledBack")
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        #expect(!FileManager.default.fileExists(atPath: "\(a.models)/m/\(fleet.sha(v2))"))
        let events = try fleet.events("edge-arm64-01").filter { $0.release == "m@2" }
        let rolled = try #require(events.last { $0.kind == "rolled-back" })
        #expect(rolled.fault == InstallFault.crashLoop.rawValue)
        #expect(events.filter { $0.kind == "activated" }.count == 1)
        // Not tried again: the controller holds it, and the agent's own record refuses it too.
        let again = try fleet.runOnce(a, extra: killer)
        #expect(again.status == 0)
        #expect(!again.stderr.contains("installing"))
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        #expect(try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first?.held["m"] == "failed")
    }
}

/// Gates judged per cell through real agents and their local metrics endpoints.
@Suite("Gates per cell with real agents", .serialized, .ownThread)
struct CellGateTests {
    /// A stand-in inference service for each agent: reports latencies through the agent's local
    /// endpoint, `slow` ms for the release under test and 20 ms otherwise.
    func feed(_ fleet: TestFleet, _ agents: [(TestFleet.Agent, Int)], slowSha: String, slow: Double) throws {
        for (a, port) in agents {
            let ms = fleet.current(a, model: "m").contentSha == slowSha ? slow : 20
            let body = "{\"model\":\"m\",\"latenciesMs\":[\(ms),\(ms),\(ms + 1)],\"errors\":0}"
            _ = try fleet.run(
                "/usr/bin/env", ["curl", "-s", "-o", "/dev/null", "-X", "POST", "http://127.0.0.1:\(port)/v1/metrics", "-d", body],
                timeout: 10)
        }
    }

    /// Rollout m@2 is rolled back in the cell by a failed health check; rollout m@3, three times
    /// slower, is then judged against the cell's devices still on m@1 (what its canary ran
    /// before), not against m@2 (the previous rollout's release, which no device runs), and is
    /// stopped by the latency gate.
    @Test func cellRolledBackOnceStopsAThreeTimesSlowerNextRelease() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let v1 = try fleet.makeFile("v1.safetensors", size: 100_000, seed: 60)
        let v2 = try fleet.makeFile("v2.safetensors", size: 100_000, seed: 61)
        let v3 = try fleet.makeFile("v3.safetensors", size: 100_000, seed: 62)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        for (name, file, version) in [("m-v2", v2, "2"), ("m-v3", v3, "3")] {
            _ = try fleet.fleetctl(["variant", "add", "m", file, "--name", name, "--dtype", "int8", "--format", "safetensors"])
            _ = try fleet.fleetctl(["release", "create", "m", "--version", version, "--keys", fleet.dir + "/keys", "--variants", name])
        }
        var agents: [(TestFleet.Agent, Int)] = []
        let unhealthyV2 = "test \"$EDGEFLEET_MODEL_SHA256\" != \(fleet.sha(v2))"
        for i in 0..<4 {
            let a = fleet.agent("vnni-\(i)", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
            let port = try TestFleet.freePort()
            _ = try fleet.start(
                "fleet-agent",
                fleet.agentArgs(
                    a,
                    extra: [
                        "--device-id", a.name, "--health-command", unhealthyV2,
                        "--metrics-listen", "127.0.0.1:\(port)"
                    ]),
                log: fleet.dir + "/\(a.name).log")
            agents.append((a, port))
        }
        try fleet.waitFor("every agent on v1", timeout: 60) {
            agents.allSatisfy { fleet.current($0.0, model: "m").contentSha == fleet.sha(v1) }
        }
        let policy = fleet.dir + "/rollback.yaml"
        try """
        name: rollback-on-failure
        phases:
          - { percent: 25, min_devices: 1, bake: 0s }
          - { percent: 100 }
        gates:
          min_sample: 1
          max_health_failure_rate: 0.2
          max_latency_p95_ratio: 1.5
        on_failure: rollback
        device_timeout: 10m
        """.write(toFile: policy, atomically: true, encoding: .utf8)

        // Figures on v1 first, then the m@2 rollout: its canary fails the health check.
        let r2 = try fleet.fleetctlJSON(RolloutInfo.self, ["rollout", "start", "m@2", "--policy", policy]).id
        try fleet.waitFor("the m@2 cell rolled back", timeout: 90) {
            try feed(fleet, agents, slowSha: fleet.sha(v3), slow: 60)
            return try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(r2)"]).cells.first?.status == .rolledBack
        }
        try fleet.waitFor("every agent on v1 again", timeout: 60) {
            agents.allSatisfy { fleet.current($0.0, model: "m").contentSha == fleet.sha(v1) }
        }

        // m@3, three times slower: stopped by the latency gate, judged against the m@1 devices.
        let r3 = try fleet.fleetctlJSON(RolloutInfo.self, ["rollout", "start", "m@3", "--policy", policy]).id
        var cell: RolloutStatus.Cell?
        try fleet.waitFor("the m@3 cell stopped by its latency gate", timeout: 120) {
            try feed(fleet, agents, slowSha: fleet.sha(v3), slow: 60)
            cell = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(r3)"]).cells.first
            return cell?.status == .rolledBack
        }
        let stopped = try #require(cell)
        #expect(stopped.failedGate?.metric == "latency-p95-ratio")
        #expect((2.5...3.5).contains(stopped.failedGate?.observed ?? 0), "\(String(describing: stopped.failedGate))")
        #expect(stopped.observation?.reference == .controlCohort)
        #expect((stopped.observation?.control?.devices ?? 0) >= 1)
        try fleet.waitFor("every agent back on v1", timeout: 60) {
            agents.allSatisfy { fleet.current($0.0, model: "m").contentSha == fleet.sha(v1) }
        }
    }

    /// Real agents, no inference service: a latency gate has nothing to judge. Under the default
    /// policy the cell does not leave its first phase; it is blocked, visibly, until promoted.
    @Test func gateThatCannotJudgeBlocksTheCell() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let v1 = try fleet.makeFile("v1.safetensors", size: 100_000, seed: 64)
        let v2 = try fleet.makeFile("v2.safetensors", size: 100_000, seed: 65)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        _ = try fleet.fleetctl(["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8", "--format", "safetensors"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-v2"])
        var agents: [TestFleet.Agent] = []
        for i in 0..<3 {
            let a = fleet.agent("vnni-\(i)", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
            _ = try fleet.start("fleet-agent", fleet.agentArgs(a, extra: ["--device-id", a.name]), log: fleet.dir + "/\(a.name).log")
            agents.append(a)
        }
        try fleet.waitFor("every agent on v1", timeout: 60) {
            agents.allSatisfy { fleet.current($0, model: "m").contentSha == fleet.sha(v1) }
        }
        let rid = try fleet.fleetctlJSON(RolloutInfo.self, ["rollout", "start", "m@2", "--policy", "fast", "--bake-scale", "0"]).id
        var cell: RolloutStatus.Cell?
        try fleet.waitFor("the cell blocked by its latency gate", timeout: 60) {
            cell = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rid)"]).cells.first
            return cell?.blockedBy != nil
        }
        #expect(cell?.blockedBy == ["latency-p95-ratio"])
        #expect(cell?.phase == 1)
        let onV2 = agents.filter { fleet.current($0, model: "m").contentSha == fleet.sha(v2) }.count
        #expect(onV2 >= 1 && onV2 < agents.count, "\(onV2) of \(agents.count) on v2 while blocked")
        let shown = try fleet.fleetctl(["rollout", "status", "\(rid)"])
        #expect(shown.contains("blocked: latency-p95-ratio cannot judge"))
        _ = try fleet.fleetctl(["rollout", "promote", "\(rid)"])
        try fleet.waitFor("everyone on v2 after the promote", timeout: 60) {
            agents.allSatisfy { fleet.current($0, model: "m").contentSha == fleet.sha(v2) }
        }
    }

    /// SIGHUP re-reads fleet/policies: a policy added to the folder is offered without a restart.
    @Test func policiesAreReloadedOnSIGHUP() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        let config = try fleet.config(
            tiers: try String(contentsOfFile: TestFleet.repoRoot + "/fleet/bandwidth-tiers.yaml", encoding: .utf8))
        try fleet.startController(config: config)
        let before = try fleet.fleetctlJSON([RolloutPolicy].self, ["policies", "list"]).map(\.name)
        #expect(!before.contains("night"))
        try """
        name: night
        phases:
          - { percent: 100, bake: 1h }
        """.write(toFile: config + "/policies/night.yaml", atomically: true, encoding: .utf8)
        let pid = try #require(fleet.controller?.processIdentifier)
        kill(pid, SIGHUP)
        try fleet.waitFor("the new policy listed", timeout: 20) {
            try fleet.fleetctlJSON([RolloutPolicy].self, ["policies", "list"]).map(\.name).contains("night")
        }
        // A broken file leaves the policies in force and the controller up.
        try "name: [".write(toFile: config + "/policies/broken.yaml", atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        try fleet.waitFor("the reload failure logged", timeout: 20) { fleet.log("controller.log").contains("policies not reloaded") }
        #expect(try fleet.fleetctlJSON([RolloutPolicy].self, ["policies", "list"]).map(\.name).contains("night"))
        #expect(fleet.controller?.isRunning == true)
        let shown = try fleet.fleetctl(["policies", "show", "night"])
        #expect(shown.contains("policy night"))
    }
}
