import FleetCore
import Foundation
import Testing
@testable import FleetAgent

/// The agent's side of frugal check-ins, without a controller: what it leaves out of a request,
/// what it forgets after a rejected answer, and when it rewrites trust.json.
@Suite("Frugal check-ins (agent)")
struct FrugalCheckInAgentTests {
    struct Setup {
        let dir: String
        let agent: Agent
        let keys: [Role: SigningKey]
        func cleanup() { try? FileManager.default.removeItem(atPath: dir) }

        /// A slot for `model` at `sha256`, made current.
        func slot(_ model: String, _ sha256: String) throws {
            try FileManager.default.createDirectory(atPath: "\(dir)/models/\(model)/\(sha256)", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: "\(dir)/models/\(model)/current", withDestinationPath: sha256)
        }

        /// A signed catalog and assignment of `model` to `sha256` with `counter`.
        func held(_ model: String, sha256: String, counter: UInt64) throws -> HeldEnvelopes {
            let now = Int64(Date().timeIntervalSince1970)
            let catalog = try Envelope.sign(
                ReleaseCatalog(
                    model: model, version: "1", serial: 1, expiresAt: now + 3600, variants: [],
                    hardwareClasses: []), type: PayloadType.catalog, keys: [keys[.release]!])
            let a = Assignment(
                deviceId: "d1", hardwareClass: "c", model: model, release: "\(model)@1", variant: "v", sha256: sha256, size: 1,
                package: PackageRef(kind: PackageRef.full, sha256: sha256, size: 1, url: "u"), counter: counter,
                expiresAt: now + 3600, catalogSha256: catalog.payloadDigest)
            return HeldEnvelopes(catalog: catalog, assignment: try Envelope.sign(a, type: PayloadType.assignment, keys: [keys[.director]!]))
        }
    }

    func setup() throws -> Setup {
        let dir = NSTemporaryDirectory() + "ef-frugal-" + String(UInt32.random(in: 0...UInt32.max))
        var keys: [Role: SigningKey] = [:]
        for role in Role.allCases { keys[role] = SigningKey(role: role) }
        let root = RootMetadata(version: 1, expiresAt: Int64(Date().timeIntervalSince1970) + 86_400, roleKeys: keys)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FleetJSON.encode(try Envelope.sign(root, type: PayloadType.root, keys: [keys[.root]!])).write(
            to: URL(fileURLWithPath: dir + "/root.json"))
        let facts = DeviceFacts(deviceId: "d1", arch: "x86_64", cpuFlags: ["avx2"], memoryBytes: 1 << 30, diskFreeBytes: 1 << 30)
        try FleetJSON.encode(facts).write(to: URL(fileURLWithPath: dir + "/facts.json"))
        let agent = try Agent(
            options: AgentOptions(
                controllerURL: "http://127.0.0.1:9", stateDirectory: dir + "/state",
                modelsDirectory: dir + "/models", factsFile: dir + "/facts.json",
                rootFile: dir + "/root.json", deviceId: "d1"),
            logger: .init(label: "test"))
        return Setup(dir: dir, agent: agent, keys: keys)
    }

    let a = String(repeating: "a", count: 64), b = String(repeating: "b", count: 64)

    @Test func requestLeavesOutKnownFactsAndModelsThatRunTheirHeldAssignment() throws {
        let s = try setup(); defer { s.cleanup() }
        let facts = try s.agent.currentFacts()
        // Nothing known yet: facts and version go whole; nothing is held.
        var r = s.agent.checkInRequest(facts: facts, whole: false)
        #expect(r.facts == facts && r.agentVersion == Agent.version && r.factsDigest == nil && r.holds == nil && r.installedSent)
        #expect(r.timestampVersion == 0 && r.rootVersion == 1)

        try s.slot("runs", a)  // runs its held assignment
        try s.slot("moving", b)  // runs something else than its held assignment
        s.agent.memory.factsDigest = facts.digest
        s.agent.memory.agentVersion = s.agent.agentIdentity
        s.agent.memory.held = ["runs": try s.held("runs", sha256: a, counter: 4), "moving": try s.held("moving", sha256: a, counter: 2)]
        s.agent.memory.reported = ["runs": a]
        r = s.agent.checkInRequest(facts: facts, whole: false)
        #expect(r.facts == nil && r.agentVersion == nil && r.factsDigest == facts.digest)
        // Installed changed since the last check-in ("moving" has a slot now): sent, whole.
        #expect(r.installedSent && r.installed == ["runs": a, "moving": b])
        #expect(r.holds?.keys.sorted() == ["moving", "runs"])
        #expect(r.holds?["runs"] == HeldMetadata(catalog: s.agent.memory.held["runs"]!.catalog.payloadDigest, counter: 4))
        // Unchanged since the last check-in: left out.
        s.agent.memory.reported = ["runs": a, "moving": b]
        r = s.agent.checkInRequest(facts: facts, whole: false)
        #expect(!r.installedSent)
        let keys = try #require(try JSONSerialization.jsonObject(with: FleetJSON.encode(r)) as? [String: Any]).keys.sorted()
        #expect(keys == ["factsDigest", "holds", "rootVersion", "timestampVersion"])

        // Whole: everything, holds included (the answer can still leave out what is held).
        r = s.agent.checkInRequest(facts: facts, whole: true)
        #expect(
            r.facts == facts && r.factsDigest == nil && r.installedSent && r.installed == ["runs": a, "moving": b] && r.holds?.count == 2)

        // Changed facts, or another agent version, go whole again.
        var changed = facts
        changed.memoryBytes += 1
        #expect(s.agent.checkInRequest(facts: changed, whole: false).facts == changed)
        s.agent.memory.agentVersion = "0.0.1"
        #expect(s.agent.checkInRequest(facts: facts, whole: false).agentVersion == Agent.version)
    }

    @Test func rejectedAnswerForgetsWhatIsHeldAndKeepsTrust() throws {
        let s = try setup(); defer { s.cleanup() }
        try s.slot("m", a)
        s.agent.memory.held = ["m": try s.held("m", sha256: a, counter: 4)]
        s.agent.saveMemory()
        let trustBefore = s.agent.trust
        let facts = try s.agent.currentFacts()

        // "Unchanged" under a timestamp signed by the director key, not the timestamp key.
        let snapshot = CheckInSnapshot(
            deviceId: "d1",
            models: [
                "m": .init(
                    catalog: s.agent.memory.held["m"]!.catalog.payloadDigest,
                    assignment: s.agent.memory.held["m"]!.assignment.payloadDigest)
            ])
        let meta = TimestampMetadata(
            version: 10, expiresAt: Int64(Date().timeIntervalSince1970) + 600, catalogs: [:], snapshot: snapshot.digest)
        let forged = try CompactEnvelope.sign(meta, type: PayloadType.timestamp, keys: [s.keys[.director]!])
        try s.agent.apply(
            CheckInResponse(
                deviceId: "", hardwareClass: nil, tier: nil, rootChain: [], timestamp: nil, updates: [], held: [:],
                pollSeconds: 1, unchanged: ["m"], stamp: forged, compact: true), facts: facts)
        #expect(s.agent.trust == trustBefore)
        #expect(s.agent.memory.held.isEmpty)
        let saved = try JSONDecoder().decode(
            CheckInMemory.self, from: Data(contentsOf: URL(fileURLWithPath: s.dir + "/state/checkin.json")))
        #expect(saved.held.isEmpty)
        #expect(s.agent.installer.outbox.pending.last?.detail?.hasPrefix(TrustError.Fault.badSignature.rawValue) == true)
        // And the next request claims nothing, so the controller sends everything again.
        #expect(s.agent.checkInRequest(facts: facts, whole: false).holds == nil)

        // "Unchanged" for a model the device does not hold.
        let genuine = try CompactEnvelope.sign(meta, type: PayloadType.timestamp, keys: [s.keys[.timestamp]!])
        try s.agent.apply(
            CheckInResponse(
                deviceId: "", hardwareClass: nil, tier: nil, rootChain: [], timestamp: nil, updates: [], held: [:],
                pollSeconds: 1, unchanged: ["m"], stamp: genuine, compact: true), facts: facts)
        #expect(s.agent.installer.outbox.pending.last?.detail?.hasPrefix(TrustError.Fault.mixAndMatch.rawValue) == true)
        #expect(s.agent.trust == trustBefore)
    }

    @Test func trustIsRewrittenForANewerTimestampAloneAtMostHourly() throws {
        let s = try setup(); defer { s.cleanup() }
        var previous = s.agent.trust
        previous.timestampVersion = 1_800_000_000
        previous.timestampDigest = a
        s.agent.savedTimestampVersion = 1_800_000_000
        var next = previous
        next.timestampVersion += 30
        next.timestampDigest = b
        #expect(!s.agent.needsSaving(next, over: previous))
        next.timestampVersion = previous.timestampVersion + 3600
        #expect(s.agent.needsSaving(next, over: previous))
        // Anything else at once.
        next.timestampVersion = previous.timestampVersion + 30
        next.assignmentCounters["m"] = 5
        #expect(s.agent.needsSaving(next, over: previous))
        // The fleet-wide form, as before: every change.
        var legacy = previous
        legacy.timestampDigest = nil
        var legacyNext = legacy
        legacyNext.timestampVersion += 1
        #expect(s.agent.needsSaving(legacyNext, over: legacy))
    }
}
