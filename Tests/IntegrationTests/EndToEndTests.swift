import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// Real fleet-controller, fleet-agent and fleetctl processes on loopback.
@Suite("End to end with real binaries", .serialized, .ownThread)
struct EndToEndTests {
    @Test func eachDeviceGetsTheVariantOfItsHardwareClassWithIdenticalBytes() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let fp32 = try fleet.makeFile("m-fp32.safetensors", size: 3 << 20, seed: 1)
        let int8 = try fleet.makeFile("m-int8.safetensors", size: 1 << 20, seed: 2)
        let int4 = try fleet.makeFile("m-int4.safetensors", size: 600_000, seed: 3)
        try fleet.publish(
            model: "m", version: "1.0.0", variants: [("m-fp32", "fp32", fp32), ("m-int8", "int8", int8), ("m-int4", "int4", int4)])

        let expected = [("edge-x86-vnni-01", int8), ("edge-x86-avx2-01", fp32), ("edge-board-1gb-01", int4)]
        for (name, _) in expected {
            let r = try fleet.runOnce(fleet.agent(name, facts: TestFleet.demoFacts(name + ".json")))
            #expect(r.status == 0, "agent \(name): \(r.stderr)")
        }
        for (name, file) in expected {
            let a = fleet.agent(name, facts: TestFleet.demoFacts(name + ".json"))
            let cur = fleet.current(a, model: "m")
            #expect(cur.link == fleet.sha(file), "\(name) runs the wrong variant")
            #expect(cur.contentSha == fleet.sha(file), "\(name) has bytes that differ from the published file")
        }
        let devices = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"])
        #expect(devices.count == 3)
        #expect(devices.allSatisfy { $0.status == .committed })
        #expect(Set(devices.compactMap(\.hardwareClass)) == ["x86-avx512-vnni", "x86-avx2", "small-board-1gb"])
    }

    @Test func tamperedArtifactIsRejectedAndTheOldModelStaysCurrent() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let a = fleet.agent("edge-x86-vnni-01", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let v1 = try fleet.makeFile("v1.safetensors", size: 1 << 20, seed: 10)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        try fleet.runOnce(a)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))

        let v2 = try fleet.makeFile("v2.safetensors", size: 1 << 20, seed: 11)
        try fleet.publish(model: "m", version: "2", variants: [("m-v2", "int8", v2)], addModel: false)
        // Someone with write access to the artifact store (or a cache on the way) flips one byte.
        let stored = fleet.artifactPath(fleet.sha(v2))
        var bytes = [UInt8](FileManager.default.contents(atPath: stored)!)
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: stored))

        let r = try fleet.runOnce(a)
        #expect(r.status == 0)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        #expect(fleet.journalPhase(a, model: "m") == "failed")
        #expect(!FileManager.default.fileExists(atPath: "\(a.models)/m/\(fleet.sha(v2))"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: a.state + "/downloads").isEmpty)
        // Bytes that do not hash as signed may have been corrupted on the way: the device will try
        // again after the tier's backoff (a bounded number of times), and says when.
        let device = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first
        #expect(device?.status == .retrying)
        #expect(device?.statusDetail?.contains("sha256") == true)
        let last = try fleet.events("edge-x86-vnni-01").last
        #expect(last?.kind == "retrying" && last?.fault == InstallFault.hashMismatch.rawValue && last?.retryAt != nil)

        // The same bad assignment is not fetched again on the next cycle (its retry time has not come).
        let log = try fleet.runOnce(a)
        #expect(!log.stderr.contains("installing"))
    }

    @Test func tamperedAssignmentIsRejectedBeforeAnyDownload() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let a = fleet.agent("edge-x86-vnni-01", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let v1 = try fleet.makeFile("v1.safetensors", size: 500_000, seed: 20)
        let other = try fleet.makeFile("other.safetensors", size: 700_000, seed: 21)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1), ("m-fp32", "fp32", other)])
        try fleet.runOnce(a)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))

        let v2 = try fleet.makeFile("v2.safetensors", size: 500_000, seed: 22)
        try fleet.publish(model: "m", version: "2", variants: [("m-v2", "int8", v2)], addModel: false, alsoRelease: ["m-fp32"])
        // A man in the middle points the signed assignment at another artifact of the catalog.
        let proxy = try fleet.startProxy(["--tamper-assignment", fleet.sha(other)])
        let trustBefore = FileManager.default.contents(atPath: a.state + "/trust.json")
        let r = try fleet.runOnce(a, controller: "http://127.0.0.1:\(proxy.port)")
        #expect(r.status == 0)
        #expect(r.stderr.contains("badSignature"))
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        #expect(FileManager.default.contents(atPath: a.state + "/trust.json") == trustBefore)
        let log = fleet.proxyLog(proxy.log)
        #expect(log.contains { $0["tampered"] as? Bool == true })
        #expect(!log.contains { ($0["path"] as? String)?.hasPrefix("/v1/artifacts/") == true })
        let device = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first
        #expect(device?.status == .rejected)
    }

    @Test func downloadCutInTheMiddleResumesWithRange() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let size = 4 << 20
        let v1 = try fleet.makeFile("v1.safetensors", size: size, seed: 30)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        let proxy = try fleet.startProxy(["--cut-after", "\(size * 2 / 5)"])
        let a = fleet.agent("edge-x86-vnni-01", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let r = try fleet.runOnce(a, controller: "http://127.0.0.1:\(proxy.port)")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        let downloads = fleet.proxyLog(proxy.log).filter { ($0["path"] as? String)?.hasPrefix("/v1/artifacts/") == true }
        #expect(downloads.count == 2)
        let first = downloads.first?["sent"] as? Int ?? 0
        #expect(downloads.first?["cut"] as? Bool == true)
        #expect(downloads.last?["range"] as? String == "bytes=\(first)-")
        let total = downloads.reduce(0) { $0 + ($1["sent"] as? Int ?? 0) }
        #expect(Double(total) < 1.5 * Double(size), "fetched \(total) bytes for a \(size)-byte file")
    }

    @Test func restartedAgentContinuesAnInterruptedDownload() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let size = 4 << 20
        let v1 = try fleet.makeFile("v1.safetensors", size: size, seed: 40)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        // The first download stalls after 1 MiB and stays open: the kill finds exactly that much,
        // however late the test gets to it.
        let proxy = try fleet.startProxy(["--stall-after", "\(1 << 20)"])
        let a = fleet.agent("edge-x86-vnni-01", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let controller = "http://127.0.0.1:\(proxy.port)"
        let p = try fleet.start("fleet-agent", fleet.agentArgs(a, controller: controller), log: fleet.dir + "/agent.log")
        let part = "\(a.state)/downloads/\(fleet.sha(v1)).part"
        try fleet.waitFor("a partial download", timeout: 60) {
            (try? FileManager.default.attributesOfItem(atPath: part)[.size] as? Int) ?? 0 >= 1 << 20
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let partial = (try FileManager.default.attributesOfItem(atPath: part)[.size] as? Int) ?? 0
        #expect(partial > 0 && partial < size)
        #expect(fleet.journalPhase(a, model: "m") == "downloading")
        #expect(fleet.current(a, model: "m").link == nil)

        let r = try fleet.runOnce(a, controller: controller)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        let downloads = fleet.proxyLog(proxy.log).filter { ($0["path"] as? String)?.hasPrefix("/v1/artifacts/") == true }
        let resumed = try #require(downloads.last?["range"] as? String)
        let offset = Int(resumed.dropFirst("bytes=".count).dropLast()) ?? -1
        #expect(offset >= partial)
        let total = downloads.reduce(0) { $0 + ($1["sent"] as? Int ?? 0) }
        #expect(Double(total) < 1.5 * Double(size), "fetched \(total) bytes for a \(size)-byte file")
    }

    @Test func failingHealthCheckRollsBackToThePreviousModel() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let a = fleet.agent("edge-arm64-01", facts: TestFleet.demoFacts("edge-arm64-01.json"))
        let v1 = try fleet.makeFile("v1.safetensors", size: 300_000, seed: 50)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        try fleet.runOnce(a, extra: ["--health-command", "test -s \"$EDGEFLEET_MODEL_PATH\""])
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))

        let v2 = try fleet.makeFile("v2.safetensors", size: 300_000, seed: 51)
        try fleet.publish(model: "m", version: "2", variants: [("m-v2", "int8", v2)], addModel: false)
        // The new model hangs its health check: the agent kills it at the timeout and rolls back.
        let r = try fleet.runOnce(a, extra: ["--health-command", "sleep 30", "--health-timeout", "1"])
        #expect(r.status == 0)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        #expect(fleet.journalPhase(a, model: "m") == "rolledBack")
        #expect(!FileManager.default.fileExists(atPath: "\(a.models)/m/\(fleet.sha(v2))"))
        let device = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first
        #expect(device?.status == .rolledBack)
        #expect(device?.statusDetail?.contains("timed out") == true)
    }

    /// `serve --event-loops N`: the controller carries its connections on N threads (replicas that
    /// share a machine's cores use fewer); a count out of range is a usage error, nothing started.
    @Test func controllerServesOnTheEventLoopsItIsGiven() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        let refused = try fleet.run(
            "fleet-controller", ["serve", "--data", fleet.dir + "/never", "--keys", fleet.dir + "/keys/online", "--event-loops", "0"])
        #expect(refused.status == 64, "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: fleet.dir + "/never"))
        try fleet.startController(extra: ["--event-loops", "3"])  // not this machine's core count
        let pid = try #require(fleet.controller?.processIdentifier)
        let threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").map { task in
            ((try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8)) ?? "")
        }
        #expect(threads.filter { $0.hasPrefix("NIO-SGLTN") }.count == 3, "\(threads)")
    }

    @Test func agentRefusesToStartWithoutAPinnedRoot() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        let a = fleet.agent("x", facts: TestFleet.demoFacts("edge-arm64-01.json"))
        let r = try fleet.run(
            "fleet-agent",
            [
                "run", "--controller", fleet.url, "--state", a.state, "--models", a.models,
                "--facts", a.facts, "--once"
            ])
        #expect(r.status == 2)
        #expect(r.stderr.contains("--root"))
        #expect((try? FileManager.default.contentsOfDirectory(atPath: a.models)) ?? [] == [])
    }
}

/// Delta packages between real model files, through the real controller and agent.
@Suite("Delta packages end to end", .serialized, .ownThread)
struct DeltaEndToEndTests {
    func models(_ fleet: TestFleet) throws -> (v1: String, v2: String) {
        for (dir, extra) in [("m1", [String]()), ("m2", ["--finetune"])] {
            let r = try fleet.run(
                "/usr/bin/env", ["python3", TestFleet.repoRoot + "/scripts/make-demo-model.py", fleet.dir + "/" + dir] + extra)
            #expect(r.status == 0, "\(r.stderr)")
        }
        return (fleet.dir + "/m1/model-int8.safetensors", fleet.dir + "/m2/model-int8.safetensors")
    }

    func waitForDeltas(_ fleet: TestFleet, release: String) throws -> [ReleasePackages.Delta] {
        var deltas: [ReleasePackages.Delta] = []
        try fleet.waitFor("delta packages of \(release)", timeout: 120) {
            struct Shown: Decodable { var packages: ReleasePackages }
            deltas = try fleet.fleetctlJSON(Shown.self, ["release", "show", release]).packages.variants.flatMap(\.deltas)
            return !deltas.isEmpty && deltas.allSatisfy { $0.status != .building }
        }
        return deltas
    }

    @Test func fineTuneTravelsAsADeltaAndInstallsTheSignedBytes() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let (v1, v2) = try models(fleet)
        let a = fleet.agent("edge-x86-vnni-01", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        try fleet.runOnce(a)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))

        _ = try fleet.fleetctl(["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-v2"])
        let deltas = try waitForDeltas(fleet, release: "m@2")
        let delta = try #require(deltas.first)
        #expect(delta.status == .ready)
        #expect(delta.baseSha256 == fleet.sha(v1))
        let size = try #require(delta.size)
        #expect(size < 2_118_552 / 4, "a last-layer fine-tune should need well under a quarter of the model")
        _ = try fleet.fleetctl(["rollout", "start", "m@2", "--all"])

        let r = try fleet.runOnce(a)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v2))
        let journal =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: a.state + "/journal.json"))) as? [String: Any]
        let job = ((journal?["installs"] as? [String: Any])?["m"] as? [String: Any])?["job"] as? [String: Any]
        #expect((job?["package"] as? [String: Any])?["kind"] as? String == "delta")
        struct Shown: Decodable { var packages: ReleasePackages }
        let shown = try fleet.fleetctlJSON(Shown.self, ["release", "show", "m@2"]).packages
        #expect(shown.devicesViaDelta == 1)
        #expect(shown.bytesSent == size)
        #expect(shown.received == 1 && shown.receivedViaDelta == 1)
    }

    @Test func tamperedDeltaFallsBackToTheFullArtifact() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let (v1, v2) = try models(fleet)
        let a = fleet.agent("edge-x86-vnni-01", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        try fleet.runOnce(a)
        _ = try fleet.fleetctl(["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-v2"])
        let delta = try #require(try waitForDeltas(fleet, release: "m@2").first?.packageSha256)
        // Corrupt the delta package in the controller's store.
        let stored = fleet.artifactPath(delta)
        var bytes = [UInt8](FileManager.default.contents(atPath: stored)!)
        bytes[bytes.count / 2] ^= 0x5A
        try Data(bytes).write(to: URL(fileURLWithPath: stored))
        _ = try fleet.fleetctl(["rollout", "start", "m@2", "--all"])

        let first = try fleet.runOnce(a)
        #expect(first.status == 0)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))  // old model untouched
        #expect(fleet.journalPhase(a, model: "m") == "failed")
        // The next check-in asks for the whole artifact, and the device is not over a byte budget.
        let second = try fleet.runOnce(a)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v2))
    }
}
