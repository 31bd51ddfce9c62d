import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// Genuine frugal answers captured from a real controller for devices run by the real agent, and
/// the keys that signed them. Built once per test process.
/// - `t1`: a device that installed release 1 through frugal check-ins; `idle1` is its idle answer.
/// - `t2`: the same device after it moved on to release 2.
/// - `change2`: the answer `t1` gets once release 2 is out (its catalog and assignment, whole).
/// - `otherIdle`: the idle answer of another device of the same class running release 1.
final class FrugalWorld: @unchecked Sendable {
    static let deviceId = "edge-x86-vnni-01"
    static let otherId = "edge-x86-vnni-02"
    nonisolated(unsafe) private static var dir: String?
    private static let cached: Result<FrugalWorld, any Error> = Result { try FrugalWorld() }
    static func shared() throws -> FrugalWorld { try cached.get() }

    let fleet: TestFleet
    let facts: String
    let timestampKey: SigningKey, directorKey: SigningKey
    let idle1: Data, change2: Data, otherIdle: Data

    /// What an agent keeps in checkin.json (FleetAgent's CheckInMemory).
    struct Memory: Decodable {
        struct Held: Decodable { var catalog: Envelope; var assignment: Envelope }
        var factsDigest: String?
        var held: [String: Held]
    }

    private init() throws {
        let fleet = try TestFleet()
        self.fleet = fleet
        Self.dir = fleet.dir
        atexit { if let d = FrugalWorld.dir { try? FileManager.default.removeItem(atPath: d) } }
        defer { fleet.stop() }
        try fleet.startController()
        let keys = fleet.dir + "/keys"
        timestampKey = try SigningKey.parse(Data(contentsOf: URL(fileURLWithPath: keys + "/online/timestamp.key")))
        directorKey = try SigningKey.parse(Data(contentsOf: URL(fileURLWithPath: keys + "/online/director.key")))
        facts = TestFleet.demoFacts("edge-x86-vnni-01.json")
        var other = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: facts))) as! [String: Any]
        other["deviceId"] = Self.otherId
        other["hostname"] = Self.otherId
        let otherFacts = fleet.dir + "/other-facts.json"
        try JSONSerialization.data(withJSONObject: other).write(to: URL(fileURLWithPath: otherFacts))

        let v1 = try fleet.makeFile("v1.safetensors", size: 300_000, seed: 61)
        let v2 = try fleet.makeFile("v2.safetensors", size: 300_000, seed: 62)
        try fleet.publish(
            model: "m", version: "1",
            variants: [
                ("m-v1", "int8", v1), ("m-v1-fp16", "fp16", try fleet.makeFile("v1h", size: 310_000, seed: 63)),
                ("m-v1-fp32", "fp32", try fleet.makeFile("v1f", size: 320_000, seed: 64)),
                ("m-v1-int4", "int4", try fleet.makeFile("v1q", size: 150_000, seed: 65))
            ])
        let device = fleet.agent("f1", facts: facts)
        let otherDevice = fleet.agent("o1", facts: otherFacts)
        for a in [device, otherDevice] {
            let r = try fleet.runOnce(a)
            guard r.status == 0, fleet.current(a, model: "m").contentSha != nil else {
                throw HarnessError("release 1 not installed: \(r.stderr)")
            }
            // The next check-in reports the install; the device is idle from then on.
            _ = try fleet.runOnce(a)
        }
        idle1 = try Self.checkIn(fleet, device, Self.deviceId)
        otherIdle = try Self.checkIn(fleet, otherDevice, Self.otherId)
        guard try FleetJSON.decode(CheckInResponse.self, from: idle1, limit: 1 << 20).unchanged == ["m"] else {
            throw HarnessError("the captured answer of release 1 is not idle: \(String(decoding: idle1, as: UTF8.self))")
        }
        try Self.copy(fleet, "f1", "t1")

        try fleet.publish(model: "m", version: "2", variants: [("m-v2", "int8", v2)], addModel: false)
        change2 = try Self.checkIn(fleet, device, Self.deviceId, fullPackages: ["m"])
        guard try FleetJSON.decode(CheckInResponse.self, from: change2, limit: 1 << 20).updates.count == 1 else {
            throw HarnessError("release 2 did not come whole: \(String(decoding: change2, as: UTF8.self))")
        }
        try fleet.waitFor("release 2 installed", timeout: 120) {
            _ = try fleet.runOnce(device)
            return fleet.current(device, model: "m").contentSha == fleet.sha(v2)
        }
        try Self.copy(fleet, "f1", "t2")
        fleet.stop()
    }

    static func copy(_ fleet: TestFleet, _ from: String, _ to: String) throws {
        let c = try fleet.run("/bin/cp", ["-a", fleet.dir + "/agents/" + from, fleet.dir + "/agents/" + to])
        guard c.status == 0 else { throw HarnessError("cp: \(c.stderr)") }
    }

    static func memory(_ state: String) throws -> Memory {
        try JSONDecoder().decode(Memory.self, from: Data(contentsOf: URL(fileURLWithPath: state + "/checkin.json")))
    }

    static func trust(_ state: String) throws -> TrustedState {
        try FleetJSON.decode(TrustedState.self, from: Data(contentsOf: URL(fileURLWithPath: state + "/trust.json")), limit: 4 << 20)
    }

    /// The frugal check-in the device would make now (idle: facts and installed left out), straight
    /// to the real controller; the answer's bytes as they came.
    static func checkIn(_ fleet: TestFleet, _ a: TestFleet.Agent, _ id: String, fullPackages: [String]? = nil) throws -> Data {
        let memory = try memory(a.state)
        let trust = try trust(a.state)
        var holds: [String: HeldMetadata] = [:]
        for (model, h) in memory.held {
            let assignment = try AttackWorld.payload(h.assignment, as: Assignment.self)
            holds[model] = HeldMetadata(catalog: h.catalog.payloadDigest, counter: assignment.counter)
        }
        var request = CheckInRequest(
            facts: nil, installed: [:], agentVersion: nil, fullPackages: fullPackages, factsDigest: memory.factsDigest,
            holds: holds, rootVersion: trust.root.version, timestampVersion: trust.timestampVersion)
        request.installedSent = false
        let body = fleet.dir + "/frugal-request-\(UUID().uuidString.prefix(8)).json"
        try FleetJSON.encode(request).write(to: URL(fileURLWithPath: body))
        let r = try fleet.run(
            "/usr/bin/env",
            [
                "curl", "-fsS", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + body,
                "\(fleet.url)/v1/devices/\(id)/checkin"
            ])
        guard r.status == 0 else { throw HarnessError("frugal check-in of \(id): \(r.stderr)") }
        return Data(r.stdout.utf8)
    }

    func answer(_ data: Data) throws -> CheckInResponse { try FleetJSON.decode(CheckInResponse.self, from: data, limit: 1 << 20) }

    /// A per-device timestamp the stolen timestamp key signs, binding `snapshot`.
    func stamp(_ snapshot: CheckInSnapshot, version: UInt64, expiresAt: Int64? = nil, key: SigningKey? = nil) throws -> CompactEnvelope {
        let meta = TimestampMetadata(
            version: version, expiresAt: expiresAt ?? AttackWorld.now() + 3600, catalogs: [:], snapshot: snapshot.digest)
        return try CompactEnvelope.sign(meta, type: PayloadType.timestamp, keys: [key ?? timestampKey])
    }

    /// What a device holds, as its snapshot (`t1` or `t2` state folder).
    static func heldSnapshot(_ state: String, deviceId: String = deviceId) throws -> CheckInSnapshot {
        let m = try memory(state)
        return CheckInSnapshot(
            deviceId: deviceId,
            models: m.held.mapValues { .init(catalog: $0.catalog.payloadDigest, assignment: $0.assignment.payloadDigest) })
    }

    /// An answer of the frugal shape.
    static func response(
        stamp: CompactEnvelope?, updates: [ModelUpdate] = [], reassigned: [String: Envelope] = [:], unchanged: [String] = [],
        resend: ResendReason? = nil
    ) -> CheckInResponse {
        CheckInResponse(
            deviceId: "", hardwareClass: nil, tier: nil, rootChain: [], timestamp: nil, updates: updates, held: [:], pollSeconds: 1,
            reassigned: reassigned, unchanged: unchanged, stamp: stamp, resend: resend, compact: true)
    }
}

/// One attempt against a copy of a FrugalWorld device, served by the malicious controller.
final class FrugalScene {
    let world: FrugalWorld
    let fleet: TestFleet
    let scenario: String
    let agent: TestFleet.Agent
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    init(_ base: String) throws {
        world = try FrugalWorld.shared()
        fleet = try TestFleet()
        let c = try fleet.run("/bin/cp", ["-a", world.fleet.dir + "/agents/" + base, fleet.dir + "/device"])
        guard c.status == 0 else { throw HarnessError("cp: \(c.stderr)") }
        agent = TestFleet.Agent(
            name: "device", state: fleet.dir + "/device/state", models: fleet.dir + "/device/models", facts: world.facts)
        scenario = fleet.dir + "/evil"
        try FileManager.default.createDirectory(atPath: scenario + "/artifacts", withIntermediateDirectories: true)
        port = try TestFleet.freePort()
        _ = try fleet.start(
            "/usr/bin/env",
            [
                "python3", TestFleet.repoRoot + "/Tests/IntegrationTests/Support/evil_controller.py",
                "--listen", "\(port)", "--dir", scenario
            ], log: scenario + ".out")
        let health = "\(url)/healthz"
        try fleet.waitFor("malicious controller") { (try? fleet.run("/usr/bin/env", ["curl", "-fsS", health], timeout: 5).status) == 0 }
    }

    func cleanup() { fleet.cleanup() }
    func serve(_ r: CheckInResponse) throws { try serveRaw(FleetJSON.encode(r)) }
    func serveRaw(_ data: Data) throws { try data.write(to: URL(fileURLWithPath: scenario + "/checkin.json")) }
    var snapshot: DeviceSnapshot { DeviceSnapshot(agent) }
    var trust: Data { FileManager.default.contents(atPath: agent.state + "/trust.json") ?? Data() }

    func log(_ name: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: scenario + "/" + name, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    var checkInRequests: [[String: Any]] { log("requests.jsonl").filter { ($0["path"] as? String)?.hasSuffix("/checkin") == true } }
    var artifactRequests: [[String: Any]] { log("requests.jsonl").filter { ($0["path"] as? String)?.hasPrefix("/v1/artifacts/") == true } }

    /// Fault classes of the rejections the agent reported ("fault: message").
    var rejectedFaults: [String] {
        log("events.jsonl").filter { $0["kind"] as? String == "rejected" }.compactMap {
            ($0["detail"] as? String)?.split(separator: ":").first.map(String.init)
        }
    }
}

/// The attack catalogue for frugal check-ins: idle answers leave the catalog and the assignment
/// out, so every attack here is on what the per-device timestamp binds. After each attempt the
/// device's trusted state and its whole models folder are what they were, nothing was downloaded,
/// and the fault the agent reported is the one named.
@Suite("Attack catalogue: frugal check-ins", .serialized, .ownThread)
struct FrugalAttackCatalogueTests {
    typealias W = FrugalWorld

    @discardableResult
    func attempt(
        _ s: FrugalScene, _ expected: [TrustError.Fault]?, exitOK: Bool = true,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> CommandResult {
        let before = s.snapshot
        let trustBefore = s.trust
        let r = try s.fleet.runOnce(s.agent, controller: s.url)
        if exitOK { #expect(r.status == 0 && !r.signalled, "agent failed: \(r.stderr)", sourceLocation: sourceLocation) }
        #expect(s.snapshot == before, "device changed: \(before.difference(s.snapshot))", sourceLocation: sourceLocation)
        #expect(s.trust == trustBefore, "trusted state changed", sourceLocation: sourceLocation)
        #expect(s.artifactRequests.isEmpty, "the agent downloaded something", sourceLocation: sourceLocation)
        if let expected {
            #expect(s.rejectedFaults == expected.map(\.rawValue), "\(r.stderr)", sourceLocation: sourceLocation)
        }
        return r
    }

    @Test func genuineIdleAnswerIsAcceptedWithoutADownload() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        try s.serveRaw(s.world.idle1)
        // Accepted: nothing rejected, nothing fetched; trust.json is not rewritten for a newer timestamp alone.
        try attempt(s, [])
        let sent = try #require(s.checkInRequests.first)
        #expect(!((sent["keys"] as? [String]) ?? []).contains("facts"))
        print(
            "idle check-in against the malicious controller: request \(sent["received"] ?? "?") bytes, answer \(sent["sent"] ?? "?") bytes")
    }

    @Test func replayOfAnOldIdleAnswerIsRejected() throws {
        // The device moved on to release 2; the idle answer it got while it ran release 1 comes back.
        let s = try FrugalScene("t2"); defer { s.cleanup() }
        try s.serveRaw(s.world.idle1)
        let r = try attempt(s, nil)
        // Older than the trusted timestamp (or, signed in the same second, another one of its version).
        #expect([[TrustError.Fault.rollback.rawValue], [TrustError.Fault.replay.rawValue]].contains(s.rejectedFaults), "\(r.stderr)")
    }

    @Test func idleAnswerWhoseTimestampNamesAnotherCatalogIsRejected() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        let w = s.world
        // The stolen timestamp key binds release 2's catalog with the assignment the device holds.
        var bound = try W.heldSnapshot(s.agent.state)
        let catalog2 = try #require(try w.answer(w.change2).updates.first).catalog
        bound.models["m"]?.catalog = catalog2.payloadDigest
        let trusted = try W.trust(s.agent.state).timestampVersion
        try s.serve(W.response(stamp: try w.stamp(bound, version: trusted + 10), unchanged: ["m"]))
        try attempt(s, [.mixAndMatch])
    }

    @Test func strippedAnswerThatOmitsAChangedAssignmentIsRejected() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        let change = try s.world.answer(s.world.change2)
        // Release 2 is out; the answer keeps the genuine timestamp and says nothing changed.
        try s.serve(W.response(stamp: change.stamp, unchanged: ["m"]))
        try attempt(s, [.mixAndMatch])
    }

    @Test func answerStrippedOfEveryModelIsRejected() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        let change = try s.world.answer(s.world.change2)
        // Everything about release 2 removed; only the genuine timestamp is left.
        try s.serve(W.response(stamp: change.stamp))
        try attempt(s, [.mixAndMatch])
    }

    @Test func leftOutMetadataUnderAFleetWideTimestampIsRejected() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        let w = s.world
        // A downgrade: the per-device timestamp swapped for a fleet-wide one (names catalogs only).
        let held = try W.heldSnapshot(s.agent.state)
        let meta = TimestampMetadata(
            version: try W.trust(s.agent.state).timestampVersion + 10, expiresAt: AttackWorld.now() + 3600,
            catalogs: ["m@1": try #require(held.models["m"]).catalog])
        var r = W.response(stamp: nil, unchanged: ["m"])
        r.timestamp = try Envelope.sign(meta, type: PayloadType.timestamp, keys: [w.timestampKey])
        try s.serve(r)
        try attempt(s, [.mixAndMatch])
    }

    @Test func newAssignmentOfAnotherCatalogUnderTheHeldCatalogIsRejected() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        let change = try s.world.answer(s.world.change2)
        let u = try #require(change.updates.first)
        // Release 2's assignment sent as if only the assignment changed: it binds release 2's catalog.
        try s.serve(W.response(stamp: change.stamp, reassigned: ["m": u.assignment]))
        try attempt(s, [.mixAndMatch])
    }

    @Test func genuineUpdateUnderAnotherModelNameIsRejected() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        var change = try s.world.answer(s.world.change2)
        // Release 2, genuine and whole, filed under a name that is a path.
        change.updates[0].model = "../m"
        try s.serve(change)
        try attempt(s, [.mixAndMatch])
        // Nothing of it is claimed as held by the next check-in, which the controller would refuse.
        try s.serveRaw(s.world.idle1)
        try s.fleet.runOnce(s.agent, controller: s.url)
        let held = try W.memory(s.agent.state).held
        #expect(!held.keys.contains("../m"))
    }

    @Test func idleAnswerOfAnotherDeviceIsRejected() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        #expect(try s.world.answer(s.world.otherIdle).unchanged == ["m"])
        try s.serveRaw(s.world.otherIdle)
        let r = try attempt(s, nil)
        // Its snapshot is of the other device (or, signed in the second this one's was, a second timestamp of that version).
        #expect([[TrustError.Fault.mixAndMatch.rawValue], [TrustError.Fault.replay.rawValue]].contains(s.rejectedFaults), "\(r.stderr)")
    }

    @Test func anotherTimestampOfTheTrustedVersionIsRejected() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        let trusted = try W.trust(s.agent.state)
        #expect(trusted.timestampDigest != nil)
        // What the device holds, bound by the stolen key under the version it trusts, with another expiry.
        let stamp = try s.world.stamp(
            try W.heldSnapshot(s.agent.state), version: trusted.timestampVersion, expiresAt: AttackWorld.now() + 7200)
        try s.serve(W.response(stamp: stamp, unchanged: ["m"]))
        try attempt(s, [.replay])
    }

    @Test func frozenIdleAnswerExpires() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        let trusted = try W.trust(s.agent.state).timestampVersion
        let stamp = try s.world.stamp(try W.heldSnapshot(s.agent.state), version: trusted + 1, expiresAt: AttackWorld.now() - 60)
        try s.serve(W.response(stamp: stamp, unchanged: ["m"]))
        for _ in 0..<2 { try attempt(s, nil) }
        #expect(s.rejectedFaults.first == TrustError.Fault.expired.rawValue)
    }

    @Test func idleTimestampSignedByTheDirectorKeyIsRejected() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        let w = s.world
        var idle = try w.answer(w.idle1)
        let payload = Array(try #require(idle.stamp).payload.utf8)
        let message = Array("DSSEv1 \(PayloadType.timestamp.utf8.count) \(PayloadType.timestamp) \(payload.count) ".utf8) + payload
        idle.stamp?.sigs = [Data(w.directorKey.sign(message)).base64EncodedString()]
        try s.serve(idle)
        try attempt(s, [.badSignature])
    }

    @Test func endlessResendIsBoundedAndChangesNothing() throws {
        let s = try FrugalScene("t1"); defer { s.cleanup() }
        // Facts-digest confusion: whatever the device sends, the answer is "send it all again".
        try s.serve(W.response(stamp: nil, resend: .factsMismatch))
        let r = try attempt(s, nil, exitOK: false)
        #expect(r.status != 0 && !r.signalled)
        let sent = s.checkInRequests.map { ($0["keys"] as? [String]) ?? [] }
        #expect(sent.count == 2, "\(sent)")
        #expect(sent.first.map { !$0.contains("facts") && $0.contains("factsDigest") } == true, "\(sent)")
        #expect(sent.last.map { $0.contains("facts") && $0.contains("installed") } == true, "\(sent)")
        // The next cycle starts whole: no loop across cycles either.
        try attempt(s, nil, exitOK: false)
        let next = s.checkInRequests.map { ($0["keys"] as? [String]) ?? [] }
        #expect(next.count == 4 && next[2].contains("facts"), "\(next)")
    }
}
