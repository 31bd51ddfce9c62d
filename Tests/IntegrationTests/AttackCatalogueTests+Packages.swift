import FleetCore
import Foundation
import Testing
#if canImport(Glibc)
    import Glibc
#endif

/// The attack catalogue, continued: packages, parsing and paths (see AttackCatalogueTests.swift).
extension AttackCatalogueTests {
    // MARK: deltas and packages

    /// A delta assignment for release 2 with `package` (signed by the stolen director key).
    func deltaAssignment(_ w: W, package: Data, base: String? = nil, bump: UInt64 = 20) throws -> CheckInResponse {
        var a = try assignment(w.r2full)
        let sha = Digest.sha256Hex(package)
        a.counter += bump
        a.package = PackageRef(
            kind: PackageRef.delta, sha256: sha, size: Int64(package.count), url: "/v1/artifacts/\(sha)",
            baseSha256: base ?? w.v1Sha)
        return W.response(timestamp: w.r2full.timestamp, catalog: try update(w.r2full).catalog, assignment: try sign(a, w))
    }

    @Test func deltaWhoseBaseIsNotTheInstalledModelIsRefused() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let pkg = try Data(contentsOf: URL(fileURLWithPath: try #require(w.deltaPackage, "the controller built no delta")))
        let response = try deltaAssignment(w, package: pkg, base: Digest.sha256Hex(Array("a model this device never ran".utf8)))
        try s.serve(response)
        try s.putArtifact(Digest.sha256Hex(pkg), pkg)
        let (_, events) = try attempt(s, trustAfter: try w.trustAfterAccepting(response, before: s.trust))
        let rejected = try #require(events.first { $0.kind == "rejected" })
        #expect(rejected.detail?.contains("is not the installed model") == true, "\(rejected)")
        #expect(s.artifactRequests.isEmpty)
    }

    @Test func tamperedDeltaIsNeverInstalled() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let genuine = try Data(contentsOf: URL(fileURLWithPath: try #require(w.deltaPackage, "the controller built no delta")))
        let delta = try assignment(w.r2delta)
        #expect(delta.package.kind == PackageRef.delta && delta.package.sha256 == Digest.sha256Hex(genuine))
        var flipped = genuine
        flipped[flipped.count / 2] ^= 0x5A

        // On the way: the genuine delta assignment, a package with one byte flipped.
        try s.serve(w.r2delta)
        try s.putArtifact(delta.package.sha256, flipped)
        var (_, events) = try attempt(s, trustAfter: try w.trustAfterAccepting(w.r2delta, before: s.trust))
        #expect(events.firstFailure?.detail?.contains("sha256") == true, "\(events)")
        #expect(events.firstFailure?.fault == InstallFault.hashMismatch.rawValue, "\(events)")

        // The stolen director key signs the flipped package itself: it must fail when applied.
        var response = try deltaAssignment(w, package: flipped, bump: 21)
        try s.serve(response)
        try s.putArtifact(Digest.sha256Hex(flipped), flipped)
        (_, events) = try attempt(s, trustAfter: try w.trustAfterAccepting(response, before: s.trust))
        #expect(events.firstFailure?.detail?.contains("delta could not be applied") == true, "\(events)")
        #expect(events.firstFailure?.fault == InstallFault.deltaFailed.rawValue, "\(events)")

        // A well-formed delta from the installed model to the attacker's file.
        let evil = try s.fleet.makeFile("evil.safetensors", size: fileSize(w.v2), seed: 9)
        let made = try s.fleet.run(
            "fleetctl", ["delta", "create", "--base", w.v1, "--target", evil, "--out", s.fleet.dir + "/evil.efdelta"])
        #expect(made.status == 0, "\(made.stderr)")
        let evilDelta = try Data(contentsOf: URL(fileURLWithPath: s.fleet.dir + "/evil.efdelta"))
        response = try deltaAssignment(w, package: evilDelta, bump: 22)
        try s.serve(response)
        try s.putArtifact(Digest.sha256Hex(evilDelta), evilDelta)
        (_, events) = try attempt(s, trustAfter: try w.trustAfterAccepting(response, before: s.trust))
        #expect(events.firstFailure?.detail?.contains("delta could not be applied") == true, "\(events)")
        #expect(events.firstFailure?.fault == InstallFault.deltaFailed.rawValue, "\(events)")
        #expect(s.fleet.current(s.agent, model: "m").contentSha == w.v1Sha)
    }

    @Test func truncatedPackageIsNeverInstalled() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let whole = try Data(contentsOf: URL(fileURLWithPath: w.v2))

        // The server sends half of the artifact and says that is all there is.
        try s.serve(w.r2full)
        try s.putArtifact(w.v2Sha, whole.prefix(whole.count / 2))
        try attempt(s, trustAfter: try w.trustAfterAccepting(w.r2full, before: s.trust))
        #expect(s.fleet.journalPhase(s.agent, model: "m") == "downloading")
        #expect(s.fleet.current(s.agent, model: "m").contentSha == w.v1Sha)
        // When the rest can be had, the download resumes and the signed bytes are installed.
        try s.putArtifact(w.v2Sha, whole)
        let resumed = try s.run()
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(s.fleet.current(s.agent, model: "m").contentSha == w.v2Sha)
        #expect(s.artifactRequests.last?["range"] as? String == "bytes=\(whole.count / 2)-")
    }

    @Test func truncatedDeltaSignedByTheDirectorIsNeverInstalled() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let genuine = try Data(contentsOf: URL(fileURLWithPath: try #require(w.deltaPackage, "the controller built no delta")))
        for (i, cut) in [genuine.count / 2, genuine.count - 1].enumerated() {
            let truncated = genuine.prefix(cut)
            let response = try deltaAssignment(w, package: truncated, bump: UInt64(20 + i))
            try s.serve(response)
            try s.putArtifact(Digest.sha256Hex(truncated), truncated)
            let (_, events) = try attempt(s, trustAfter: try w.trustAfterAccepting(response, before: s.trust))
            #expect(events.firstFailure?.detail?.contains("delta could not be applied") == true, "cut at \(cut): \(events)")
            #expect(events.firstFailure?.fault == InstallFault.deltaFailed.rawValue, "cut at \(cut): \(events)")
        }
    }

    // MARK: parsing

    /// Inserts `members` right after the opening brace of a signed payload.
    func withMembers(_ envelope: Envelope, _ members: String) -> [UInt8] {
        var bytes = envelope.payloadBytes ?? []
        bytes.insert(contentsOf: Array(members.utf8), at: 1)
        return bytes
    }

    @Test func jsonWithDuplicateKeysIsRejected() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let u = try update(w.r2full)
        let evilSha = String(repeating: "e", count: 64)
        // A signed assignment naming two artifacts: a parser that keeps one of them must not be trusted.
        let dupAssignment = W.signRaw(
            withMembers(u.assignment, "\"sha256\":\"\(evilSha)\","), type: PayloadType.assignment, by: [w.director])
        try s.serve(W.response(timestamp: w.r2full.timestamp, catalog: u.catalog, assignment: dupAssignment))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.duplicateKey.rawValue])
        // A release-signed catalog with two serials.
        let dupCatalog = W.signRaw(withMembers(u.catalog, "\"serial\":999999,"), type: PayloadType.catalog, by: [w.release])
        try s.serve(
            W.response(timestamp: try timestamp(w, ids: ["m@2": dupCatalog.payloadDigest]), catalog: dupCatalog, assignment: u.assignment))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.duplicateKey.rawValue])
        // The check-in answer itself with two lists of updates.
        var raw = [UInt8](try FleetJSON.encode(w.r2full))
        raw.insert(contentsOf: Array("\"updates\":[],".utf8), at: 1)
        try s.serveRaw(Data(raw))
        let (r, _) = try attempt(s, exitOK: false)
        #expect(r.status != 0 && r.stderr.contains("duplicateKey"), "\(r.stderr)")
        #expect(s.artifactRequests.isEmpty)
    }

    @Test func oversizedMetadataIsRejected() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let u = try update(w.r2full)
        let pad = { (n: Int) in "\"padding\":\"\(String(repeating: "x", count: n))\"," }
        let bigAssignment = W.signRaw(
            withMembers(u.assignment, pad(MetadataLimits.assignment)), type: PayloadType.assignment, by: [w.director])
        try s.serve(W.response(timestamp: w.r2full.timestamp, catalog: u.catalog, assignment: bigAssignment))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.tooLarge.rawValue])
        let bigCatalog = W.signRaw(withMembers(u.catalog, pad(MetadataLimits.catalog)), type: PayloadType.catalog, by: [w.release])
        try s.serve(
            W.response(timestamp: try timestamp(w, ids: ["m@2": bigCatalog.payloadDigest]), catalog: bigCatalog, assignment: u.assignment))
        #expect(faults(try attempt(s).events) == [TrustError.Fault.tooLarge.rawValue])
        // A check-in answer over its limit, well-formed.
        var raw = [UInt8](try FleetJSON.encode(w.r2full))
        raw.insert(contentsOf: Array(pad(MetadataLimits.checkInResponse).utf8), at: 1)
        try s.serveRaw(Data(raw))
        let (r, _) = try attempt(s, exitOK: false)
        #expect(r.status != 0 && r.stderr.contains("tooLarge"), "\(r.stderr)")
        #expect(s.artifactRequests.isEmpty)
    }

    // MARK: paths

    @Test func pathTraversalInNamesIsRejected() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let evil = randomBytes(100_000, seed: 10)
        let evilSha = Digest.sha256Hex(evil)
        try s.putArtifact(evilSha, evil)
        let u = try update(w.r2full)
        let goodCatalog = try W.payload(u.catalog, as: ReleaseCatalog.self)
        let goodAssignment = try assignment(w.r2full)
        // Every key but root is stolen: release, director and timestamp sign whatever names they like.
        let cases: [(String, String, String, String)] = [  // (model, variant file name, artifact sha256, what)
            ("../escape", "model.safetensors", evilSha, "model name"),
            ("m", "../../../escape.safetensors", evilSha, "file name"),
            ("m", "sub/../../escape.onnx_data", evilSha, "external-data style path"),
            ("m", "model.safetensors", "../../../escape", "artifact hash used as a file name")
        ]
        for (i, (model, fileName, sha, what)) in cases.enumerated() {
            var cat = goodCatalog
            cat.model = model
            cat.variants = [
                CatalogVariant(
                    name: "m-evil", sha256: sha, size: Int64(evil.count), fileName: fileName,
                    format: "safetensors", dtype: "int8")
            ]
            let catalog = try Envelope.sign(cat, type: PayloadType.catalog, keys: [w.release])
            var a = goodAssignment
            a.model = model; a.release = "\(model)@\(cat.version)"; a.variant = "m-evil"; a.sha256 = sha; a.size = Int64(evil.count)
            a.counter += UInt64(30 + i); a.catalogSha256 = catalog.payloadDigest
            a.package = PackageRef(kind: PackageRef.full, sha256: sha, size: Int64(evil.count), url: "/v1/artifacts/\(evilSha)")
            try s.serve(
                W.response(
                    timestamp: try timestamp(w, naming: [catalog], bump: UInt64(1 + i)), catalog: catalog,
                    assignment: try sign(a, w), model: model))
            let (_, events) = try attempt(s)
            #expect(faults(events) == [TrustError.Fault.malformed.rawValue], "\(what): \(events)")
            // Every folder a `..` path from the state or models folder could reach.
            let reachable = [s.fleet.dir, s.fleet.dir + "/device", parentFolder(s.fleet.dir)]
            let escaped = reachable.flatMap { d in
                ((try? FileManager.default.contentsOfDirectory(atPath: d)) ?? []).filter { $0.contains("escape") }
            }
            #expect(escaped.isEmpty, "\(what): the agent wrote \(escaped) outside its folders")
        }
        #expect(s.artifactRequests.isEmpty)
    }

    func parentFolder(_ p: String) -> String { URL(fileURLWithPath: p).deletingLastPathComponent().path }
    func isSymlink(_ p: String) -> Bool { (try? FileManager.default.destinationOfSymbolicLink(atPath: p)) != nil }

    @Test func symlinkPlantedInTheModelsFolderIsNotFollowed() throws {
        let s = try AttackScene(); defer { s.cleanup() }
        let w = s.world
        let outside = s.fleet.dir + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try Data("precious".utf8).write(to: URL(fileURLWithPath: outside + "/keep"))
        let outsideBefore = { () -> [String] in
            var l: [String] = []; DeviceSnapshot.walk(outside, "outside", &l); return l
        }()
        try s.serve(w.r2full)
        try s.putArtifact(w.v2Sha, file: w.v2)

        // Where the next slot and its staging folder belong, someone left symlinks to a folder
        // outside, and one more beside the slots. With no update offered, the agent's start-up
        // clean-up removes them (unlink, never followed); the slot it runs is untouched.
        let plants = ["\(s.agent.models)/m/\(w.v2Sha)", "\(s.agent.models)/m/.staging-\(w.v2Sha)", "\(s.agent.models)/m/planted"]
        for p in plants { try FileManager.default.createSymbolicLink(atPath: p, withDestinationPath: outside) }
        let slots = {
            DeviceSnapshot(s.agent).lines.filter { $0.hasPrefix("models") && !plants.contains(where: $0.hasPrefix) && !$0.contains("-> /") }
        }
        let slotsBefore = slots()
        let trustBefore = s.trust
        try s.serveRaw(Data(#"{"deviceId":"edge-x86-vnni-01","rootChain":[],"updates":[],"held":{},"pollSeconds":1}"#.utf8))
        let idle = try s.run()
        #expect(idle.status == 0, "\(idle.stderr)")
        #expect(slots() == slotsBefore, "the slots changed")
        #expect(s.trust == trustBefore)
        var outsideAfter: [String] = []
        DeviceSnapshot.walk(outside, "outside", &outsideAfter)
        #expect(outsideAfter == outsideBefore)
        // Planted again, with release 2 offered: the install writes a real folder, never through a link.
        for p in plants where !isSymlink(p) { try FileManager.default.createSymbolicLink(atPath: p, withDestinationPath: outside) }
        try s.serve(w.r2full)
        let r = try s.run()
        #expect(r.status == 0, "\(r.stderr)")
        outsideAfter = []
        DeviceSnapshot.walk(outside, "outside", &outsideAfter)
        #expect(outsideAfter == outsideBefore, "the agent wrote through a planted symlink")
        #expect(!isSymlink("\(s.agent.models)/m/\(w.v2Sha)") && s.fleet.current(s.agent, model: "m").contentSha == w.v2Sha)

        // A symlink as the model's own folder: the agent refuses to work through it.
        let s2 = try AttackScene(); defer { s2.cleanup() }
        try FileManager.default.moveItem(atPath: s2.agent.models + "/m", toPath: outside + "/m")
        try FileManager.default.createSymbolicLink(atPath: s2.agent.models + "/m", withDestinationPath: outside + "/m")
        var mBefore: [String] = []
        DeviceSnapshot.walk(outside + "/m", "m", &mBefore)
        try s2.serve(w.r2full)
        try s2.putArtifact(w.v2Sha, file: w.v2)
        try attempt(s2, trustAfter: try w.trustAfterAccepting(w.r2full, before: s2.trust))
        var mAfter: [String] = []
        DeviceSnapshot.walk(outside + "/m", "m", &mAfter)
        #expect(mAfter == mBefore, "the agent wrote through a symlinked model folder: \(mAfter)")
    }
}
