import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// `kill -9` of the controller while devices report and while a staged rollout runs, then a
/// restart on the same data: no event lost or counted twice, and the rollout goes on from the
/// phase it was in.
@Suite("Controller killed during telemetry and rollouts", .serialized, .ownThread)
struct ControllerCrashTests {
    func killController(_ fleet: TestFleet) throws {
        let c = try #require(fleet.controller)
        kill(c.processIdentifier, SIGKILL)
        c.waitUntilExit()
        fleet.controller = nil
    }

    func restartController(_ fleet: TestFleet) throws {
        try fleet.startController()
    }

    /// Counts in the controller's database (read with Python's sqlite3, as an operator would).
    func eventCounts(_ fleet: TestFleet, device: String) throws -> (rows: Int, distinct: Int, min: Int, max: Int) {
        let script = """
            import sqlite3, sys
            db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
            print(*db.execute("SELECT COUNT(*), COUNT(DISTINCT seq), COALESCE(MIN(seq),0), COALESCE(MAX(seq),0) FROM events WHERE device_id = ?", (sys.argv[2],)).fetchone())
            """
        let r = try fleet.run("/usr/bin/env", ["python3", "-c", script, fleet.dir + "/controller/fleet.sqlite", device])
        let n = r.stdout.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard n.count == 4 else { throw HarnessError("sqlite: \(r.stdout)\(r.stderr)") }
        return (n[0], n[1], n[2], n[3])
    }

    @Test func killNineDuringTelemetryIngestionLosesNoEventAndCountsNoneTwice() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        var facts = try FleetJSON.decode(
            DeviceFacts.self, from: Data(contentsOf: URL(fileURLWithPath: TestFleet.demoFacts("edge-x86-vnni-01.json"))),
            limit: 1 << 20)
        facts.deviceId = "telemetry-01"
        _ = try AttackWorld.checkIn(fleet, facts: facts, installed: [:])  // the device exists once it has checked in
        let device = "telemetry-01"

        // A device with a long outbox sends it the way the agent does: batches in order, the next one
        // from what the controller acknowledged, the same batch again after an error.
        let total = 3000
        let progress = fleet.dir + "/sender.progress"
        let sender = """
            import json, sys, time, urllib.request
            url, total, progress = sys.argv[1], int(sys.argv[2]), sys.argv[3]
            acked, posts, errors = 0, 0, 0
            while acked < total:
                batch = [{"seq": s, "time": 1700000000 + s, "kind": "metrics", "detail": "load %d" % s}
                         for s in range(acked + 1, min(total, acked + 25) + 1)]
                req = urllib.request.Request(url, data=json.dumps({"events": batch}).encode(), headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        acked = max(acked, json.load(r)["ackedThrough"])
                    posts += 1
                except Exception:
                    errors += 1
                    time.sleep(0.05)
                with open(progress + ".tmp", "w") as f:
                    f.write("%d %d %d" % (acked, posts, errors))
                import os; os.replace(progress + ".tmp", progress)
            """
        let p = try fleet.start(
            "/usr/bin/env", ["python3", "-c", sender, "\(fleet.url)/v1/devices/\(device)/events", "\(total)", progress],
            log: fleet.dir + "/sender.log")
        func acked() -> Int {
            Int(((try? String(contentsOfFile: progress, encoding: .utf8)) ?? "0").split(separator: " ").first ?? "0") ?? 0
        }
        try fleet.waitFor("a fifth of the events acknowledged", timeout: 120) { acked() >= total / 5 }
        try killController(fleet)
        let ackedAtKill = acked()
        try restartController(fleet)
        try fleet.waitFor("every event acknowledged", timeout: 300) { !p.isRunning }
        #expect(p.terminationStatus == 0, "\(fleet.log("sender.log"))")
        let counts = try eventCounts(fleet, device: device)
        let report = (try? String(contentsOfFile: progress, encoding: .utf8)) ?? ""
        print(
            "telemetry across a kill -9: \(total) events sent, \(counts.rows) stored (\(counts.distinct) distinct, seq \(counts.min)…\(counts.max)), acknowledged at the kill \(ackedAtKill); sender acked/posts/errors: \(report)"
        )
        #expect(
            counts.rows == total && counts.distinct == total && counts.min == 1 && counts.max == total,
            "stored \(counts.rows) rows, \(counts.distinct) distinct, of \(total) events")
    }

    @Test func killNineDuringAStagedRolloutContinuesFromItsPhase() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let facts = try Data(contentsOf: URL(fileURLWithPath: TestFleet.demoFacts("edge-x86-vnni-01.json")))
        var agents: [TestFleet.Agent] = []
        for i in 1...4 {
            var obj = try #require(try JSONSerialization.jsonObject(with: facts) as? [String: Any])
            obj["deviceId"] = "edge-x86-vnni-crash-\(i)"
            obj["hostname"] = "edge-x86-vnni-crash-\(i)"
            let path = fleet.dir + "/facts-\(i).json"
            try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: path))
            agents.append(fleet.agent("edge-x86-vnni-crash-\(i)", facts: path))
        }
        let v1 = try fleet.makeFile("v1.safetensors", size: 200_000, seed: 81)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        for a in agents { #expect(try fleet.runOnce(a).status == 0) }
        let v2 = try fleet.makeFile("v2.safetensors", size: 200_000, seed: 82)
        _ = try fleet.fleetctl(["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8", "--format", "safetensors"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-v2"])
        // The fast policy, for a fleet without an inference service: no runtime metrics, so the
        // latency gate cannot judge and must not hold the phase (unjudged: pass).
        let policy = fleet.dir + "/fast-unjudged-pass.yaml"
        let fast = try String(contentsOfFile: TestFleet.repoRoot + "/fleet/policies/fast.yaml", encoding: .utf8)
        try (fast + "\n# gates may pass unjudged here\n").replacingOccurrences(of: "gates:\n", with: "gates:\n  unjudged: pass\n")
            .write(toFile: policy, atomically: true, encoding: .utf8)
        _ = try fleet.fleetctl(["rollout", "start", "m@2", "--policy", policy])
        let rollout = try #require(try fleet.fleetctlJSON([RolloutInfo].self, ["rollout", "list"]).first { $0.release == "m@2" })
        for a in agents { #expect(try fleet.runOnce(a).status == 0) }
        let before = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rollout.id)"])
        let onV2 = agents.filter { fleet.current($0, model: "m").contentSha == fleet.sha(v2) }.count
        #expect(onV2 >= 1 && onV2 < agents.count, "phase 1 should reach some devices, not all: \(onV2)")

        try killController(fleet)
        try restartController(fleet)
        let after = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rollout.id)"])
        #expect(after.rollout.id == before.rollout.id && after.rollout.state == before.rollout.state)
        #expect(
            after.cells.map(\.phase) == before.cells.map(\.phase),
            "phases after the restart: \(after.cells.map(\.phase)), before: \(before.cells.map(\.phase))")
        #expect(
            after.rollout.committed == before.rollout.committed,
            "committed went from \(before.rollout.committed) to \(after.rollout.committed)")
        // Devices reporting again after the restart are not counted twice.
        for a in agents { #expect(try fleet.runOnce(a).status == 0) }
        let again = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rollout.id)"])
        #expect(again.rollout.committed == onV2, "committed \(again.rollout.committed), devices on release 2: \(onV2)")

        // The bake ends and the rollout moves on to every device, from where it was.
        try fleet.waitFor("the last phase", timeout: 120) {
            try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rollout.id)"]).cells.allSatisfy { $0.phase == $0.phases }
        }
        for a in agents { #expect(try fleet.runOnce(a).status == 0) }
        #expect(agents.allSatisfy { fleet.current($0, model: "m").contentSha == fleet.sha(v2) })
        let end = try fleet.fleetctlJSON(RolloutStatus.self, ["rollout", "status", "\(rollout.id)"])
        #expect(end.rollout.committed == agents.count, "committed \(end.rollout.committed) of \(agents.count)")
        print(
            "rollout across a kill -9: phase \(before.cells.map(\.phase)) before, \(after.cells.map(\.phase)) after the restart; committed \(before.rollout.committed) → \(after.rollout.committed) → \(end.rollout.committed)"
        )
    }
}
