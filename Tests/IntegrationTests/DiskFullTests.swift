import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// A device whose disk fills up: the models folder on a small tmpfs (in a mount namespace of its
/// own), filled while the package downloads, while the slot is staged and while a delta is applied.
/// Each time: a clear error, the old model kept, the space the attempt took released.
@Suite("Disk full during an install", .serialized, .ownThread)
struct DiskFullTests {
    /// Skips with a message, or fails in CI where namespaces are expected to work.
    static func diskOrSkip(_ fleet: TestFleet, bytes: Int, _ name: String) throws -> SmallDisk? {
        if let why = SmallDisk.unavailable() {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("\(name) cannot run in CI: \(why)") }
            print("SKIPPED \(name): \(why)")
            return nil
        }
        return try SmallDisk(fleet, bytes: bytes)
    }

    enum Layout { case oneDisk, modelsOnly }

    /// A copy of the v1 template device whose models folder (and, for `.oneDisk`, state folder) is on
    /// the small disk. Returns the device as the agent sees it and as the test sees it.
    func device(_ s: AttackScene, _ disk: SmallDisk, _ layout: Layout) throws -> (inside: TestFleet.Agent, outside: TestFleet.Agent) {
        let template = s.world.fleet.dir + "/agents/v1"
        let state = layout == .oneDisk ? disk.mountPoint + "/state" : s.fleet.dir + "/host-state"
        let models = disk.mountPoint + "/models"
        for (from, to) in [("state", state), ("models", models)] {
            let r =
                layout == .modelsOnly && from == "state"
                ? try s.fleet.run("/bin/cp", ["-a", template + "/state", to])
                : try disk.run(["cp", "-a", template + "/" + from, to])
            guard r.status == 0 else { throw HarnessError("cp: \(r.stderr)") }
        }
        let inside = TestFleet.Agent(name: "device", state: state, models: models, facts: s.world.facts)
        let outside = TestFleet.Agent(
            name: "device", state: layout == .oneDisk ? disk.view + "/state" : state,
            models: disk.view + "/models", facts: s.world.facts)
        return (inside, outside)
    }

    /// Runs the agent on the disk while the package downloads slowly, fills the disk as soon as the
    /// first bytes are in, and waits for the agent to finish.
    func installWhileFilling(
        _ s: AttackScene, _ disk: SmallDisk, _ d: (inside: TestFleet.Agent, outside: TestFleet.Agent),
        package: String
    ) throws -> String {
        try Data("262144".utf8).write(to: URL(fileURLWithPath: s.scenario + "/artifacts.throttle"))
        let log = s.fleet.dir + "/agent-\(UUID().uuidString.prefix(6)).log"
        let p = try disk.start(
            [TestFleet.bin + "/fleet-agent"] + s.fleet.agentArgs(d.inside, controller: s.url, extra: ["--once"]), log: log)
        let part = "\(d.outside.state)/downloads/\(package).part"
        try s.fleet.waitFor("the first bytes of the download", timeout: 60) {
            (try? FileManager.default.attributesOfItem(atPath: part)[.size] as? Int ?? 0) ?? 0 > 0
        }
        // Held still while the disk fills (nsenter execs the agent: this pid is the agent), so that
        // the fill lands before the download ends however fast the machine is.
        kill(p.processIdentifier, SIGSTOP)
        try s.fleet.waitFor("the agent to stop") { Self.state(p.processIdentifier) == "T" || !p.isRunning }
        try disk.fill()
        kill(p.processIdentifier, SIGCONT)
        try s.fleet.waitFor("the agent to finish", timeout: 120) { !p.isRunning }
        unlink(s.scenario + "/artifacts.throttle")
        return s.fleet.log(String(log.dropFirst(s.fleet.dir.count + 1)))
    }

    /// The state letter of a process in /proc/PID/stat (R, S, T, …).
    static func state(_ pid: Int32) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        return stat[stat.index(close, offsetBy: 2)...].split(separator: " ").first.map(String.init)
    }

    @Test func fullBeforeTheDownloadIsRefusedUpFront() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        guard let disk = try Self.diskOrSkip(s.fleet, bytes: 6 << 20, "fullBeforeTheDownloadIsRefusedUpFront") else { return }
        let d = try device(s, disk, .oneDisk)
        try s.serve(s.world.r2full)
        try s.putArtifact(s.world.v2Sha, file: s.world.v2)
        let before = DeviceSnapshot(d.outside)
        let used = try disk.usage().used
        let r = try disk.run([TestFleet.bin + "/fleet-agent"] + s.fleet.agentArgs(d.inside, controller: s.url, extra: ["--once"]))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(s.events().firstFailure?.detail?.hasPrefix("no space") == true, "\(s.events())")
        #expect(s.events().firstFailure?.fault == InstallFault.noSpace.rawValue, "\(s.events())")
        #expect(s.artifactRequests.isEmpty, "the agent downloaded although the disk could not hold the model")
        let after = DeviceSnapshot(d.outside)
        #expect(
            before.lines.filter { !$0.hasPrefix("state/") } == after.lines.filter { !$0.hasPrefix("state/") }, "\(before.difference(after))"
        )
        #expect(try disk.usage().used <= used + (64 << 10))
    }

    @Test func fullDuringTheDownloadKeepsTheOldModelAndReleasesTheSpace() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        guard let disk = try Self.diskOrSkip(s.fleet, bytes: 16 << 20, "fullDuringTheDownloadKeepsTheOldModelAndReleasesTheSpace") else {
            return
        }
        let d = try device(s, disk, .oneDisk)
        try s.serve(s.world.r2full)
        try s.putArtifact(s.world.v2Sha, file: s.world.v2)
        let models = DeviceSnapshot(d.outside).lines.filter { $0.hasPrefix("models") }
        let used = try disk.usage().used

        let log = try installWhileFilling(s, disk, d, package: s.world.v2Sha)
        #expect(log.contains("No space left on device"), "no clear error: \(log)")
        try disk.remove()
        #expect(DeviceSnapshot(d.outside).lines.filter { $0.hasPrefix("models") } == models)
        #expect(s.fleet.current(d.outside, model: "m").contentSha == s.world.v1Sha)
        let downloads = (try? FileManager.default.contentsOfDirectory(atPath: d.outside.state + "/downloads")) ?? []
        #expect(downloads.isEmpty, "the partial download still takes space: \(downloads)")
        #expect(try disk.usage().used <= used + (64 << 10), "space not released")

        // With room again, the next check-in installs the new model.
        let r = try disk.run([TestFleet.bin + "/fleet-agent"] + s.fleet.agentArgs(d.inside, controller: s.url, extra: ["--once"]))
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test func fullWhileStagingKeepsTheOldModelAndReleasesTheSpace() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        guard let disk = try Self.diskOrSkip(s.fleet, bytes: 12 << 20, "fullWhileStagingKeepsTheOldModelAndReleasesTheSpace") else {
            return
        }
        // The download goes to the state folder on another disk; the slot is copied onto the full one.
        let d = try device(s, disk, .modelsOnly)
        try s.serve(s.world.r2full)
        try s.putArtifact(s.world.v2Sha, file: s.world.v2)
        let models = DeviceSnapshot(d.outside).lines.filter { $0.hasPrefix("models") }

        _ = try installWhileFilling(s, disk, d, package: s.world.v2Sha)
        let failed = s.events().firstFailure
        #expect(failed?.detail?.contains("staging failed") == true && failed?.detail?.contains("noSpace") == true, "\(s.events())")
        #expect(failed?.fault == InstallFault.noSpace.rawValue, "\(s.events())")
        let usedFull = try disk.usage()
        try disk.remove()
        #expect(DeviceSnapshot(d.outside).lines.filter { $0.hasPrefix("models") } == models)
        #expect(s.fleet.current(d.outside, model: "m").contentSha == s.world.v1Sha)
        #expect(try FileManager.default.contentsOfDirectory(atPath: d.outside.state + "/downloads").isEmpty)
        print("staging on a full disk: used \(usedFull.used) bytes, free \(usedFull.free) with the filler")
    }

    @Test func fullWhileApplyingADeltaKeepsTheOldModelAndReleasesTheSpace() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        guard let disk = try Self.diskOrSkip(s.fleet, bytes: 12 << 20, "fullWhileApplyingADeltaKeepsTheOldModelAndReleasesTheSpace") else {
            return
        }
        let d = try device(s, disk, .modelsOnly)
        let delta = try #require(s.world.r2delta.updates.first.map { try AttackWorld.payload($0.assignment, as: Assignment.self) })
        try #require(delta.package.kind == PackageRef.delta, "the controller sent no delta")
        try s.serve(s.world.r2delta)
        try s.putArtifact(delta.package.sha256, file: try #require(s.world.deltaPackage))
        let models = DeviceSnapshot(d.outside).lines.filter { $0.hasPrefix("models") }

        _ = try installWhileFilling(s, disk, d, package: delta.package.sha256)
        let failed = s.events().firstFailure
        #expect(failed?.detail?.contains("No space left on device") == true, "\(s.events())")
        #expect(failed?.fault == InstallFault.noSpace.rawValue, "\(s.events())")
        try disk.remove()
        #expect(DeviceSnapshot(d.outside).lines.filter { $0.hasPrefix("models") } == models)
        #expect(s.fleet.current(d.outside, model: "m").contentSha == s.world.v1Sha)
        #expect(try FileManager.default.contentsOfDirectory(atPath: d.outside.state + "/downloads").isEmpty)
    }
}
