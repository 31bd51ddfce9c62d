import FleetCore
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
    import Glibc
#endif

/// Two controller replicas on one PostgreSQL database, with the real binaries: devices check in
/// with either; the once-only work (rollout ticks) runs on the leader; `kill -9` of the leader
/// moves the lease to the other replica, and a staged rollout goes on from its phase there.
@Suite("Controller replicas on PostgreSQL", .serialized, .ownThread)
struct ReplicaTests {
    struct Health: Decodable { var status: String; var leader: String; var replica: String; var database: String }

    func health(_ fleet: TestFleet, _ url: String) -> Health? {
        guard let r = try? fleet.run("/usr/bin/env", ["curl", "-fsS", "--max-time", "2", url + "/healthz"], timeout: 5), r.status == 0
        else { return nil }
        return try? JSONDecoder().decode(Health.self, from: Data(r.stdout.utf8))
    }

    @Test func theLeaderKilledMidRolloutLeavesTheRolloutToTheOtherReplica() throws {
        let pg = try PostgresServer.start(); defer { pg.stop() }
        let database = try pg.createDatabase()
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController(extra: ["--database", database, "--replica", "a"])
        let urlA = fleet.url
        let portB = try TestFleet.freePort()
        let urlB = "http://127.0.0.1:\(portB)"
        // The second replica shares the database and the artifact directory.
        let b = try fleet.start(
            "fleet-controller",
            [
                "serve", "--data", fleet.dir + "/controller", "--listen", "127.0.0.1:\(portB)",
                "--keys", fleet.dir + "/keys/online", "--config", TestFleet.repoRoot + "/fleet",
                "--poll-seconds", "1", "--database", database, "--replica", "b"
            ],
            log: fleet.dir + "/controller-b.log")
        try fleet.waitFor("replica b") { health(fleet, urlB) != nil }
        try fleet.waitFor("a leader") { [urlA, urlB].compactMap { health(fleet, $0) }.filter { $0.leader == "true" }.count == 1 }
        #expect(health(fleet, urlA)?.database == "postgres")

        let facts = try Data(contentsOf: URL(fileURLWithPath: TestFleet.demoFacts("edge-x86-vnni-01.json")))
        var agents: [(TestFleet.Agent, String)] = []
        for i in 1...4 {
            var obj = try #require(try JSONSerialization.jsonObject(with: facts) as? [String: Any])
            obj["deviceId"] = "edge-replica-\(i)"
            obj["hostname"] = "edge-replica-\(i)"
            let path = fleet.dir + "/facts-\(i).json"
            try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: path))
            // Half the devices talk to each replica.
            agents.append((fleet.agent("edge-replica-\(i)", facts: path), i % 2 == 0 ? urlA : urlB))
        }
        let v1 = try fleet.makeFile("v1.safetensors", size: 200_000, seed: 91)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        for (a, url) in agents { #expect(try fleet.runOnce(a, controller: url).status == 0) }
        #expect(agents.allSatisfy { fleet.current($0.0, model: "m").contentSha == fleet.sha(v1) })

        let v2 = try fleet.makeFile("v2.safetensors", size: 200_000, seed: 92)
        _ = try fleet.fleetctl(
            ["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8", "--format", "safetensors"], controller: urlB)
        _ = try fleet.fleetctl(
            ["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-v2"], controller: urlB)
        let policy = fleet.dir + "/fast-unjudged-pass.yaml"
        let fast = try String(contentsOfFile: TestFleet.repoRoot + "/fleet/policies/fast.yaml", encoding: .utf8)
        try (fast + "\n").replacingOccurrences(of: "gates:\n", with: "gates:\n  unjudged: pass\n").write(
            toFile: policy, atomically: true, encoding: .utf8)
        _ = try fleet.fleetctl(["rollout", "start", "m@2", "--policy", policy], controller: urlA)
        let rollout = try #require(try fleet.fleetctlJSON([RolloutInfo].self, ["rollout", "list"]).first { $0.release == "m@2" })
        for (a, url) in agents { #expect(try fleet.runOnce(a, controller: url).status == 0) }
        let before = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rollout.id)"])
        let onV2 = agents.filter { fleet.current($0.0, model: "m").contentSha == fleet.sha(v2) }.count
        #expect(onV2 >= 1 && onV2 < agents.count, "phase 1 should reach some devices, not all: \(onV2)")

        // kill -9 the leader; the other replica takes the lease.
        let leaderIsA = health(fleet, urlA)?.leader == "true"
        let (leader, survivor) = leaderIsA ? (try #require(fleet.controller), urlB) : (b, urlA)
        let killedAt = Date()
        kill(leader.processIdentifier, SIGKILL)
        leader.waitUntilExit()
        try fleet.waitFor("the survivor takes the lease", timeout: 20) { health(fleet, survivor)?.leader == "true" }
        let failover = Date().timeIntervalSince(killedAt)
        #expect(failover <= 15, "leader failover took \(failover) s")

        let after = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rollout.id)"], controller: survivor)
        #expect(after.cells.map(\.phase) == before.cells.map(\.phase) || after.cells.map(\.phase).allSatisfy { $0 >= 1 })
        #expect(after.rollout.committed == before.rollout.committed)
        // Every device now talks to the survivor; none is counted twice; the rollout completes there.
        for (a, _) in agents { #expect(try fleet.runOnce(a, controller: survivor).status == 0) }
        try fleet.waitFor("the last phase, ticked by the new leader", timeout: 120) {
            try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rollout.id)"], controller: survivor).cells.allSatisfy {
                $0.phase == $0.phases
            }
        }
        for (a, _) in agents { #expect(try fleet.runOnce(a, controller: survivor).status == 0) }
        #expect(agents.allSatisfy { fleet.current($0.0, model: "m").contentSha == fleet.sha(v2) })
        let end = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rollout.id)"], controller: survivor)
        #expect(end.rollout.committed == agents.count, "committed \(end.rollout.committed) of \(agents.count)")
        // Each device's events are stored once, whichever replica received them.
        for (a, _) in agents {
            let seqs = try fleet.events(a.name, controller: survivor).map(\.seq)
            #expect(Set(seqs).count == seqs.count, "\(a.name): \(seqs)")
            #expect(try fleet.events(a.name, controller: survivor).filter { $0.kind == "committed" && $0.release == "m@2" }.count == 1)
        }
        print(
            "replicas: leader \(leaderIsA ? "a" : "b") killed; failover \(String(format: "%.1f", failover)) s; phases \(before.cells.map(\.phase)) → \(after.cells.map(\.phase)); committed \(before.rollout.committed) → \(end.rollout.committed)"
        )
    }
}
