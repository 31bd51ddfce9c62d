import FleetCore
import Foundation
import Testing
import TestSupport

/// kill -9 of the agent at every journaled step and after every action of an install, then a
/// restart: each time the device must end with exactly the old or exactly the new model.
@Suite("Crash at every install step", .serialized, .ownThread)
struct CrashTests {
    static let commitPath = [
        "journal:downloading", "action:download", "journal:verifying", "action:verify", "journal:staged", "action:stage",
        "journal:activating", "action:activate", "journal:checkingHealth", "action:checkHealth", "journal:committed", "action:commit"
    ]
    static let rollbackPath = ["action:checkHealth", "journal:rollingBack", "action:rollback", "journal:rolledBack", "action:discard"]

    @Test func killAtEveryStepEndsInOldOrNew() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let template = fleet.agent("template", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let v1 = try fleet.makeFile("v1.safetensors", size: 2 << 20, seed: 60)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        let health = ["--health-command", "test \"$EDGEFLEET_MODEL_SHA256\" != \"$BAD_SHA\""]
        try fleet.runOnce(template, env: ["BAD_SHA": "none"], extra: health)
        let old = fleet.sha(v1)
        #expect(fleet.current(template, model: "m").contentSha == old)

        let v2 = try fleet.makeFile("v2.safetensors", size: 2 << 20, seed: 61)
        try fleet.publish(model: "m", version: "2", variants: [("m-v2", "int8", v2)], addModel: false)
        let new = fleet.sha(v2)

        var tried = 0
        for (path, bad, expectedEnd) in [(Self.commitPath, "none", new), (Self.rollbackPath, new, old)] {
            for point in path {
                let copy = fleet.agent("crash-\(tried)", facts: template.facts)
                let c = try fleet.run("/bin/cp", ["-a", fleet.dir + "/agents/template", fleet.dir + "/agents/crash-\(tried)"])
                #expect(c.status == 0)
                tried += 1
                let crashed = try fleet.runOnce(copy, env: ["BAD_SHA": bad, "EDGEFLEET_CRASH_POINT": point], extra: health)
                #expect(crashed.signalled, "no crash at \(point): \(crashed.stderr)")
                let after = fleet.current(copy, model: "m")
                #expect(after.link == old || after.link == new, "after a crash at \(point) current is \(after.link ?? "missing")")
                #expect(after.contentSha == after.link, "after a crash at \(point) the model read through current is incomplete")

                let restarted = try fleet.runOnce(copy, env: ["BAD_SHA": bad], extra: health)
                #expect(restarted.status == 0, "restart after \(point): \(restarted.stderr)")
                let end = fleet.current(copy, model: "m")
                #expect(
                    end.link == expectedEnd && end.contentSha == expectedEnd,
                    "after a crash at \(point) and a restart the device runs \(end.link ?? "nothing")")
            }
        }
        print("crash points tried: \(tried)")
        #expect(tried == Self.commitPath.count + Self.rollbackPath.count)
    }
}
