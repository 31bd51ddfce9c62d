import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// The attack catalogue: a malicious controller (Support/evil_controller.py) serves crafted metadata
/// and artifacts to the real fleet-agent of a device that runs a model. Metadata are captured from a
/// real controller or signed with the fleet's own keys (an attacker who stole those keys). After
/// each attempt the device's trusted state and its whole models folder are compared byte for byte
/// with what they were, and the fault the agent reported is checked.
@Suite("Attack catalogue against the real agent", .serialized, .ownThread)
struct AttackCatalogueTests {
    typealias W = AttackWorld

    /// Runs the agent once against the scene. Metadata attacks must leave the trusted state
    /// byte-identical; attacks on the artifact channel come with genuine metadata, which the device
    /// records as TUF requires (`trustAfter`), and nothing else. The models folder never changes.
    @discardableResult
    func attempt(
        _ s: AttackScene, trustAfter: Data? = nil, exitOK: Bool = true,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (result: CommandResult, events: [StatusEvent]) {
        let before = s.snapshot
        let trustBefore = s.trust
        let seen = s.events().count
        let r = try s.run()
        let after = s.snapshot
        if exitOK {
            #expect(r.status == 0 && !r.signalled, "agent failed: \(r.stderr)", sourceLocation: sourceLocation)
        }
        let models = { (x: DeviceSnapshot) in x.lines.filter { !$0.hasPrefix("state/trust.json") } }
        #expect(models(before) == models(after), "device changed: \(before.difference(after))", sourceLocation: sourceLocation)
        #expect(
            s.trust == (trustAfter ?? trustBefore), "trusted state changed: \(String(decoding: s.trust, as: UTF8.self))",
            sourceLocation: sourceLocation)
        return (r, Array(s.events().dropFirst(seen)))
    }

    func faults(_ events: [StatusEvent]) -> [String] {
        events.filter { $0.kind == "rejected" }.compactMap { $0.detail?.split(separator: ":").first.map(String.init) }
    }

    func update(_ r: CheckInResponse) throws -> ModelUpdate { try #require(r.updates.first) }

    /// A timestamp the stolen timestamp key signs: newer than any the device has seen, naming `catalogs`.
    func timestamp(_ w: W, naming catalogs: [Envelope], expiresAt: Int64? = nil, bump: UInt64 = 1) throws -> Envelope {
        var ids: [String: String] = [:]
        for c in catalogs {
            let cat = try W.payload(c, as: ReleaseCatalog.self)
            ids["\(cat.model)@\(cat.version)"] = c.payloadDigest
        }
        return try timestamp(w, ids: ids, expiresAt: expiresAt, bump: bump)
    }

    /// The same, naming catalogs by release id (for catalogs no parser should read).
    func timestamp(_ w: W, ids: [String: String], expiresAt: Int64? = nil, bump: UInt64 = 1) throws -> Envelope {
        var ts = try W.payload(try #require(w.r2full.timestamp), as: TimestampMetadata.self)
        ts.version += bump
        if let expiresAt { ts.expiresAt = expiresAt }
        ts.catalogs.merge(ids) { $1 }
        return try Envelope.sign(ts, type: PayloadType.timestamp, keys: [w.timestamp])
    }

    func assignment(_ r: CheckInResponse) throws -> Assignment { try W.payload(try update(r).assignment, as: Assignment.self) }

    func sign(_ a: Assignment, _ w: W) throws -> Envelope { try Envelope.sign(a, type: PayloadType.assignment, keys: [w.director]) }

    func randomBytes(_ n: Int, seed: UInt64) -> Data {
        var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return Data(
            (0..<n).map { _ in
                x ^= x << 13; x ^= x >> 7; x ^= x << 17; return UInt8(truncatingIfNeeded: x)
            })
    }

    func fileSize(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1 }

    // MARK: artifacts

    @Test func arbitraryArtifactIsNeverInstalled() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        try s.serve(w.r2full)
        // Genuine metadata; the artifact server (or a cache) answers with other bytes of the signed length.
        try s.putArtifact(w.v2Sha, randomBytes(fileSize(w.v2), seed: 7))
        let (_, events) = try attempt(s, trustAfter: try w.trustAfterAccepting(w.r2full, before: s.trust))
        #expect(s.artifactRequests.count == 1)
        let failed = try #require(events.firstFailure)
        #expect(failed.detail?.contains("sha256") == true, "\(failed)")
        #expect(failed.fault == InstallFault.hashMismatch.rawValue, "\(failed)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.agent.state + "/downloads").isEmpty)
    }

    @Test func artifactSignedByTheDirectorKeyAloneIsRejected() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let evil = randomBytes(200_000, seed: 8)
        let evilSha = Digest.sha256Hex(evil)
        try s.putArtifact(evilSha, evil)
        let u = try update(w.r2full)
        // The online director key signs an assignment for an artifact the release catalog does not list.
        var a = try assignment(w.r2full)
        a.variant = "m-evil"; a.sha256 = evilSha; a.size = Int64(evil.count); a.counter += 10
        a.package = PackageRef(kind: PackageRef.full, sha256: evilSha, size: Int64(evil.count), url: "/v1/artifacts/\(evilSha)")
        try s.serve(W.response(timestamp: w.r2full.timestamp, catalog: u.catalog, assignment: try sign(a, w)))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.notInCatalog.rawValue])

        // It also signs a catalog that lists the artifact, and the timestamp key names that catalog.
        var cat = try W.payload(u.catalog, as: ReleaseCatalog.self)
        cat.variants.append(
            CatalogVariant(
                name: "m-evil", sha256: evilSha, size: Int64(evil.count), fileName: "model.safetensors",
                format: "safetensors", dtype: "int8"))
        let catalog = try Envelope.sign(cat, type: PayloadType.catalog, keys: [w.director])
        a.catalogSha256 = catalog.payloadDigest
        try s.serve(W.response(timestamp: try timestamp(w, naming: [catalog]), catalog: catalog, assignment: try sign(a, w)))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.missingSignature.rawValue])
        #expect(s.artifactRequests.isEmpty, "the agent fetched an artifact no release signed")
    }

    // MARK: freshness and replay

    @Test func rollbackToAnOlderCounterIsRejected() throws {
        let s = try AttackScene("v2"); defer { s.cleanup() }
        let w = s.world
        // The director key signs release 1 again with its old counter; the timestamp key names release 1.
        var a = try assignment(w.r1)
        a.expiresAt = W.now() + 3600
        let catalog = try update(w.r1).catalog
        try s.serve(W.response(timestamp: try timestamp(w, naming: [catalog]), catalog: catalog, assignment: try sign(a, w)))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.rollback.rawValue])
        #expect(s.artifactRequests.isEmpty)
        #expect(s.fleet.current(s.agent, model: "m").contentSha == w.v2Sha)
    }

    @Test func replayOfAnOldAssignmentIsRejected() throws {
        let s = try AttackScene("v2"); defer { s.cleanup() }
        let w = s.world
        // The whole answer the device got for release 1, replayed byte for byte.
        try s.serve(w.r1)
        try s.putArtifact(w.v1Sha, file: w.v1)
        #expect(faults(try attempt(s).events) == [TrustError.Fault.rollback.rawValue])
        // Release 1's catalog and assignment under a fresh timestamp that still names release 1.
        let u = try update(w.r1)
        try s.serve(W.response(timestamp: try timestamp(w, naming: [u.catalog]), catalog: u.catalog, assignment: u.assignment))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.rollback.rawValue])
        #expect(s.artifactRequests.isEmpty)
        #expect(s.fleet.current(s.agent, model: "m").contentSha == w.v2Sha)
    }

    @Test func counterReusedForAnotherAssignmentIsRejected() throws {
        let s = try AttackScene("v1"); defer { s.cleanup() }
        let w = s.world
        // Release 2 under the counter the device already accepted for release 1.
        var a = try assignment(w.r2full)
        a.counter = try assignment(w.r1).counter
        try s.serve(W.response(timestamp: w.r2full.timestamp, catalog: try update(w.r2full).catalog, assignment: try sign(a, w)))
        try s.putArtifact(w.v2Sha, file: w.v2)
        #expect(faults(try attempt(s).events) == [TrustError.Fault.replay.rawValue])
        #expect(s.artifactRequests.isEmpty)
    }

    @Test func freezeWithAnExpiredTimestampServedForeverIsRejected() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let u = try update(w.r2full)
        // The last timestamp an attacker captured, served long after it expired, every time.
        let frozen = try timestamp(w, naming: [], expiresAt: W.now() - 60, bump: 0)
        try s.serve(W.response(timestamp: frozen, catalog: u.catalog, assignment: u.assignment))
        try s.putArtifact(w.v2Sha, file: w.v2)
        for _ in 0..<3 {
            #expect(faults(try attempt(s).events) == [TrustError.Fault.expired.rawValue])
        }
        #expect(s.artifactRequests.isEmpty)
    }

    @Test func endlessArtifactIsCutAtTheSignedLength() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        try s.serve(w.r2full)
        s.flag("artifacts.endless")
        let (_, events) = try attempt(s, trustAfter: try w.trustAfterAccepting(w.r2full, before: s.trust))
        let failed = try #require(events.first { $0.kind == "failed" })
        #expect(failed.detail?.contains("longer than signed") == true, "\(failed)")
        #expect(failed.fault == InstallFault.tooLarge.rawValue, "\(failed)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.agent.state + "/downloads").isEmpty)
        let sent = s.artifactRequests.compactMap { $0["sent"] as? Int }.reduce(0, +)
        let size = fileSize(w.v2)
        print("endless artifact: the server pushed \(sent) bytes for a \(size)-byte artifact before the agent hung up")
        #expect(sent < size + (64 << 20), "the agent kept reading \(sent) bytes")
    }

    @Test func endlessCheckInAnswerIsCutAtTheLimit() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        s.flag("checkin.endless")
        let (r, _) = try attempt(s, exitOK: false)
        #expect(r.status != 0 && !r.signalled)
        #expect(r.stderr.contains("tooLarge"), "\(r.stderr)")
        let sent = s.requests().filter { ($0["path"] as? String)?.hasSuffix("/checkin") == true }.compactMap { $0["sent"] as? Int }.reduce(
            0, +)
        print("endless check-in: the server pushed \(sent) bytes before the agent hung up (limit \(MetadataLimits.checkInResponse))")
        #expect(sent < MetadataLimits.checkInResponse + (64 << 20))
    }

    // MARK: binding

    @Test func mixAndMatchOfCatalogAndAssignmentIsRejected() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let u1 = try update(w.r1), u2 = try update(w.r2full)
        try s.putArtifact(w.v2Sha, file: w.v2)
        // Release 2's catalog with release 1's assignment, and the other way round, all genuine.
        try s.serve(W.response(timestamp: w.r2full.timestamp, catalog: u2.catalog, assignment: u1.assignment))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.mixAndMatch.rawValue])
        try s.serve(W.response(timestamp: w.r2full.timestamp, catalog: u1.catalog, assignment: u2.assignment))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.mixAndMatch.rawValue])
        #expect(s.artifactRequests.isEmpty)
    }

    @Test func assignmentForAnotherDeviceIsRejected() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        #expect(try assignment(w.r2other).deviceId == W.otherDeviceId)
        try s.serve(w.r2other)
        try s.putArtifact(w.v2Sha, file: w.v2)
        #expect(faults(try attempt(s).events) == [TrustError.Fault.wrongDevice.rawValue])
        #expect(s.artifactRequests.isEmpty)
    }

    @Test func assignmentForAnotherHardwareClassIsRejected() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        // The director key signs release 2 for this device as if it were an arm64 board (the real
        // controller keeps a device's class, so a genuine one cannot be captured).
        var a = try assignment(w.r2full)
        a.hardwareClass = "arm64-dotprod"
        a.counter += 40
        try s.serve(W.response(timestamp: w.r2full.timestamp, catalog: try update(w.r2full).catalog, assignment: try sign(a, w)))
        try s.putArtifact(a.package.sha256, file: w.v2)
        #expect(faults(try attempt(s).events) == [TrustError.Fault.wrongHardwareClass.rawValue])
        #expect(s.artifactRequests.isEmpty)
    }
}
