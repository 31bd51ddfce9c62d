import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// The agent updates itself through the signed release path: `fleetctl agent publish`, a normal
/// rollout, and on the device a slot beside the running binary, a hand-over by exec, a commit after
/// the new agent's first check-in, and the previous binary back when the new one does not make it.
/// Real binaries; each `--once` run is what a service manager's (re)start would be.
@Suite("Agent self-update", .serialized, .ownThread)
struct SelfUpdateTests {
    static let packaged = TestFleet.bin + "/fleet-agent"

    /// A fleet with a controller and one device per name, each enrolled by one check-in.
    final class Scene {
        let fleet: TestFleet
        var devices: [String: TestFleet.Agent] = [:]
        var packagedSha: String

        init(devices names: [String]) throws {
            fleet = try TestFleet()
            try fleet.startController()
            packagedSha = fleet.sha(SelfUpdateTests.packaged)
            let template = try String(contentsOfFile: TestFleet.demoFacts("edge-x86-avx2-01.json"), encoding: .utf8)
            for name in names {
                let facts = fleet.dir + "/\(name).json"
                try template.replacingOccurrences(of: "edge-x86-avx2-01", with: name).write(
                    toFile: facts, atomically: true, encoding: .utf8)
                devices[name] = fleet.agent(name, facts: facts)
            }
        }

        func cleanup() { fleet.cleanup() }

        func device(_ name: String) -> TestFleet.Agent { devices[name]! }

        /// One `--once` run: a (re)start of the agent by its service manager.
        @discardableResult
        func run(_ name: String, crash: String? = nil, extra: [String] = []) throws -> CommandResult {
            try fleet.runOnce(
                device(name), env: crash.map { ["EDGEFLEET_CRASH_POINT": $0] } ?? [:],
                extra: ["--self-update-deadline", "30"] + extra)
        }

        /// A copy of the debug agent with `tag` appended (ELF ignores trailing bytes): another sha256.
        func agentBuild(_ tag: String) throws -> String {
            let path = fleet.dir + "/fleet-agent-" + tag
            var data = try Data(contentsOf: URL(fileURLWithPath: SelfUpdateTests.packaged))
            data.append(Data("\nedgefleet-test-build \(tag)\n".utf8))
            try data.write(to: URL(fileURLWithPath: path))
            chmod(path, 0o755)
            return path
        }

        func script(_ name: String, _ body: String) throws -> String {
            let path = fleet.dir + "/" + name
            try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o755)
            return path
        }

        /// Publishes `binary` as agent release VERSION and rolls it out to every device.
        func release(_ version: String, _ binary: String) throws {
            _ = try fleet.fleetctl(["agent", "publish", "--version", version, "--binary", "x86_64=" + binary, "--keys", fleet.dir + "/keys"]
            )
            _ = try fleet.fleetctl(["rollout", "start", "\(ReleaseKind.agentModel)@\(version)", "--all"])
        }

        // What is on the device's disk.
        func committed(_ name: String) -> String? {
            try? FileManager.default.destinationOfSymbolicLink(atPath: device(name).state + "/agent/\(ReleaseKind.agentModel)/current")
        }
        func trialExists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: device(name).state + "/agent/trial.json") }
        func phase(_ name: String) -> String? { fleet.journalPhase(device(name), model: ReleaseKind.agentModel) }
        func slotExists(_ name: String, _ sha: String) -> Bool {
            FileManager.default.fileExists(atPath: device(name).state + "/agent/\(ReleaseKind.agentModel)/\(sha)")
        }

        /// The binary the device's agent ran at its last check-in, as the controller stored it.
        func reportedSha(_ name: String) throws -> String? {
            try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first { $0.id == name }?.facts.agentSha256
        }

        func agentEvents(_ name: String) throws -> [StatusEvent] {
            try fleet.events(name).filter { $0.model == ReleaseKind.agentModel }
        }
    }

    /// A good build is installed and committed; a build that exits at once and one that hangs are
    /// each rolled back to the committed build, reported with their fault, and not tried again.
    /// An agent without the capability is never assigned an agent release.
    @Test func goodBuildCommitsAndBadBuildsRollBack() throws {
        let s = try Scene(devices: ["dev-a", "dev-old"]); defer { s.cleanup() }
        try #require(try s.run("dev-a").status == 0)
        try #require(try s.run("dev-old", extra: ["--no-self-update"]).status == 0)
        #expect(try s.reportedSha("dev-a") == s.packagedSha)

        // Good: 0.2.0 is handed over to in the same run, checks in and commits.
        let good = try s.agentBuild("0.2.0")
        let goodSha = s.fleet.sha(good)
        try s.release("0.2.0", good)
        let first = try s.run("dev-a")
        #expect(first.status == 0, "\(first.stderr.suffix(3000))")
        #expect(s.committed("dev-a") == goodSha)
        #expect(!s.trialExists("dev-a"))
        #expect(s.phase("dev-a") == "committed")
        #expect(try s.reportedSha("dev-a") == goodSha)
        #expect(try s.agentEvents("dev-a").contains { $0.kind == .committed && $0.sha256 == goodSha })
        // A fresh start of the packaged binary runs the committed one.
        #expect(try s.run("dev-a").status == 0)
        #expect(try s.reportedSha("dev-a") == goodSha)

        // The agent without the capability: held, nothing of the agent release on its disk.
        try #require(try s.run("dev-old", extra: ["--no-self-update"]).status == 0)
        let old = try #require(try s.fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first { $0.id == "dev-old" })
        #expect(old.held[ReleaseKind.agentModel] == HeldReason.noVariantFits.rawValue)
        #expect(old.assigned[ReleaseKind.agentModel] == nil)
        #expect(!FileManager.default.fileExists(atPath: s.device("dev-old").state + "/agent"))
        #expect(!FileManager.default.fileExists(atPath: s.device("dev-old").models + "/" + ReleaseKind.agentModel))

        // Bad: exits at once. The run that hands over ends with it; the restart restores 0.2.0.
        let exits = try s.script("agent-exits", "exit 3")
        try s.release("0.3.0", exits)
        let handedOver = try s.run("dev-a")
        #expect(handedOver.status == 3)
        #expect(s.committed("dev-a") == goodSha)
        // Killed at the steps of the rollback too: still the committed build.
        #expect(try s.run("dev-a", crash: "handover:abandoned").signalled)
        #expect(s.committed("dev-a") == goodSha)
        #expect(try s.run("dev-a", crash: "journal:rollingBack").signalled)
        #expect(try s.run("dev-a").status == 0)
        #expect(s.committed("dev-a") == goodSha && !s.trialExists("dev-a"))
        #expect(s.phase("dev-a") == "rolledBack")
        #expect(!s.slotExists("dev-a", s.fleet.sha(exits)))
        #expect(try s.reportedSha("dev-a") == goodSha)
        let rolledBack = try s.agentEvents("dev-a").filter { $0.kind == .rolledBack }
        #expect(rolledBack.map(\.fault) == [InstallFault.agentExited.rawValue])
        // Not tried again: further runs stay on 0.2.0 and start nothing.
        let started = try s.agentEvents("dev-a").filter { $0.kind == .started }.count
        #expect(try s.run("dev-a").status == 0)
        #expect(try s.agentEvents("dev-a").filter { $0.kind == .started }.count == started)
        #expect(s.committed("dev-a") == goodSha)

        // Bad: never checks in. The alarm set at the hand-over ends it at the deadline.
        let hangs = try s.script("agent-hangs", "exec sleep 600")
        try s.release("0.4.0", hangs)
        let hung = try s.run("dev-a", extra: ["--self-update-deadline", "5"])
        #expect(hung.signalled)
        #expect(try s.run("dev-a").status == 0)
        #expect(s.committed("dev-a") == goodSha && !s.trialExists("dev-a"))
        #expect(
            try s.agentEvents("dev-a").filter { $0.kind == .rolledBack }.map(\.fault)
                == [InstallFault.agentExited.rawValue, InstallFault.agentDeadline.rawValue])
        #expect(try s.reportedSha("dev-a") == goodSha)
    }

    /// `kill -9` at each step of the hand-over and the commit: after the restart the device runs
    /// exactly the old or the new agent, its disk says the same, and it keeps checking in.
    @Test func killDuringTheHandOverEndsOnOldOrNew() throws {
        let points = [
            "journal:activating", "handover:trial", "handover:attempt", "handover:started", "handover:checked-in",
            "handover:current", "journal:committed"
        ]
        let s = try Scene(devices: points.indices.map { "dev-k\($0)" }); defer { s.cleanup() }
        for name in s.devices.keys { try #require(try s.run(name).status == 0) }
        let new = try s.agentBuild("0.2.0")
        let newSha = s.fleet.sha(new)
        try s.release("0.2.0", new)
        var outcomes: [String: String] = [:]
        for (i, point) in points.enumerated() {
            let name = "dev-k\(i)"
            let killed = try s.run(name, crash: point)
            #expect(killed.signalled, "\(point): the crash point did not fire: \(killed.stderr.suffix(2000))")
            // Restarted by the service manager, then once more: settled.
            let restarted = try s.run(name)
            #expect(restarted.status == 0, "\(point): \(restarted.stderr.suffix(2000))")
            #expect(try s.run(name).status == 0)
            let committed = s.committed(name)
            let running = try s.reportedSha(name)
            #expect(committed == nil || committed == newSha, "\(point)")
            #expect(running == (committed ?? s.packagedSha), "\(point): runs \(running ?? "-"), disk says \(committed ?? "packaged")")
            #expect(!s.trialExists(name), "\(point)")
            #expect(["committed", "rolledBack"].contains(s.phase(name) ?? ""), "\(point): \(s.phase(name) ?? "-")")
            outcomes[point] = committed == newSha ? "new" : "old"
        }
        // Cut before the hand-over: the next start finishes it; cut after, before the commit: the
        // trial is given up; cut once `current` moved: the new agent.
        #expect(outcomes["journal:activating"] == "new" && outcomes["handover:trial"] == "new")
        #expect(outcomes["handover:started"] == "old" && outcomes["handover:checked-in"] == "old")
        #expect(outcomes["handover:current"] == "new" && outcomes["journal:committed"] == "new")
    }

    /// An agent binary whose bytes were changed on the server is refused before it is ever made
    /// executable or run.
    @Test func tamperedAgentBinaryIsNeverExecuted() throws {
        let s = try Scene(devices: ["dev-t"]); defer { s.cleanup() }
        try #require(try s.run("dev-t").status == 0)
        let marker = s.fleet.dir + "/ran"
        let honest = try s.script("agent-honest", "exit 0 # " + String(repeating: "x", count: marker.utf8.count))
        let sha = s.fleet.sha(honest)
        try s.release("0.2.0", honest)
        let evil = "#!/bin/sh\ntouch \(marker)\n"
        var bytes = Array(evil.utf8)
        let size = try Data(contentsOf: URL(fileURLWithPath: honest)).count
        try #require(bytes.count <= size)
        bytes += Array(repeating: UInt8(ascii: "#"), count: size - bytes.count)
        try Data(bytes).write(to: URL(fileURLWithPath: s.fleet.artifactPath(sha)))

        let r = try s.run("dev-t")
        #expect(r.status == 0, "\(r.stderr.suffix(2000))")
        #expect(!FileManager.default.fileExists(atPath: marker))
        #expect(!s.slotExists("dev-t", sha) && !s.trialExists("dev-t") && s.committed("dev-t") == nil)
        // Refused by the agent's hash check (or by the controller's own scrub, had it run first).
        #expect(
            try s.agentEvents("dev-t").contains {
                [InstallFault.hashMismatch.rawValue, InstallFault.downloadRefused.rawValue].contains($0.fault)
            })
        #expect(try !s.agentEvents("dev-t").contains { $0.kind == .activated })
        #expect(try s.reportedSha("dev-t") == s.packagedSha)
    }
}
