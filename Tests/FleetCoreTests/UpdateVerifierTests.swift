import Testing
@testable import FleetCore

/// The whole chain a device checks before it installs anything, one test per attack
/// (named as go-tuf / python-tuf name them). Each rejection also checks that the caller's
/// TrustedState is unchanged.
@Suite struct UpdateVerifierTests {
    typealias F = Fixture

    // MARK: Happy path

    @Test func acceptsValidUpdateAndAdvancesTrustedState() throws {
        let state = F.pinnedState()
        let b = F.bundle()
        let result = try F.verify(b, state: state)
        #expect(result.variant == F.int8)
        #expect(result.catalog == F.catalog())
        #expect(result.assignment == F.assignment(catalogSha256: b.catalog.payloadDigest))
        #expect(result.state.timestampVersion == 10)
        #expect(result.state.catalogSerials == [F.model: 3])
        #expect(result.state.assignmentCounters == [F.model: 7])
        #expect(result.state.assignmentDigests == [F.model: b.assignment.payloadDigest])
        #expect(result.state.root == state.root)
        #expect(result.state.rootEnvelope == state.rootEnvelope)
        // The input is a value: it has not moved.
        #expect(state == F.pinnedState())
        #expect(state.timestampVersion == 0 && state.catalogSerials.isEmpty && state.assignmentCounters.isEmpty)
    }

    @Test func acceptsNewerUpdateOnTopOfTrustedState() throws {
        let state = F.stateAfterDefaultUpdate()
        let b = F.bundle(
            catalog: {
                $0.serial = 4; $0.version = "1.3.0"
            },
            assignment: {
                $0.counter = 8; $0.release = "\(F.model)@1.3.0"
                $0.variant = F.fp16.name; $0.sha256 = F.fp16.sha256; $0.size = F.fp16.size
                $0.package = PackageRef(kind: "full", sha256: F.fp16.sha256, size: F.fp16.size, url: "u")
            },
            timestamp: { $0.version = 11 })
        let result = try F.verify(b, state: state)
        #expect(result.variant == F.fp16)
        #expect(result.state.timestampVersion == 11)
        #expect(result.state.catalogSerials[F.model] == 4)
        #expect(result.state.assignmentCounters[F.model] == 8)
        #expect(result.state.assignmentDigests[F.model] == b.assignment.payloadDigest)
    }

    /// A reply lost on the way and sent again is the same bytes: accepted, state unchanged.
    @Test func idempotentRedeliveryOfTheSameAssignmentIsAccepted() throws {
        let b = F.bundle()
        let first = try F.verify(b, state: F.pinnedState())
        let again = try F.verify(b, state: first.state)
        #expect(again.state == first.state)
        #expect(again.variant == first.variant)
    }

    @Test func keepsStateOfOtherModels() throws {
        var state = F.pinnedState()
        state.catalogSerials["other"] = 99
        state.assignmentCounters["other"] = 1_000
        state.assignmentDigests["other"] = "d"
        let result = try F.verify(F.bundle(), state: state)
        #expect(result.state.catalogSerials == ["other": 99, F.model: 3])
        #expect(result.state.assignmentCounters == ["other": 1_000, F.model: 7])
    }

    // MARK: Signatures

    @Test func timestampWithoutSignatureIsRejected() {
        expectRejection(.missingSignature, F.bundle(timestampKeys: []))
    }

    @Test func catalogWithoutSignatureIsRejected() {
        expectRejection(.missingSignature, F.bundle(catalogKeys: []))
    }

    @Test func assignmentWithoutSignatureIsRejected() {
        expectRejection(.missingSignature, F.bundle(assignmentKeys: []))
    }

    /// The director is an online key: alone it must not be able to introduce an artifact.
    @Test func artifactSignedByTheDirectorKeyAloneIsRejected() {
        // The director's signature is not a release signature; TrustError documents
        // `missingSignature` as "no signature from a key of the role".
        expectRejection(.missingSignature, F.bundle(catalogKeys: [F.directorKey]))
        expectRejection(.missingSignature, F.bundle(catalogKeys: [F.directorKey, F.timestampKey, F.rootKey]))
    }

    @Test func assignmentSignedByTheReleaseKeyInsteadOfTheDirectorIsRejected() {
        expectRejection(.missingSignature, F.bundle(assignmentKeys: [F.releaseKey]))
    }

    @Test func timestampSignedByTheDirectorKeyIsRejected() {
        expectRejection(.missingSignature, F.bundle(timestampKeys: [F.directorKey]))
    }

    @Test func tamperedCatalogPayloadIsRejected() {
        let good = F.sign(F.catalog(), PayloadType.catalog, [F.releaseKey])
        var evil = F.catalog()
        evil.variants[2].sha256 = Digest.sha256Hex(Array("evil".utf8))
        let forged = F.tampered(good, bytes: F.json(evil))
        // Assignment and timestamp name the forged bytes, so only the signature can stop it.
        expectRejection(
            .badSignature,
            F.bundle(
                assignment: {
                    $0.sha256 = evil.variants[2].sha256
                    $0.package.sha256 = evil.variants[2].sha256
                },
                catalogEnvelope: forged))
    }

    @Test func tamperedAssignmentPayloadIsRejected() {
        var b = F.bundle()
        var evil = F.assignment(catalogSha256: b.catalog.payloadDigest)
        evil.package.url = "https://evil.example/payload"
        b.assignment = F.tampered(b.assignment, bytes: F.json(evil))
        expectRejection(.badSignature, b)
    }

    @Test func tamperedTimestampPayloadIsRejected() {
        var b = F.bundle()
        let evil = TimestampMetadata(version: 1_000, expiresAt: F.now + 365 * F.day, catalogs: [F.model: b.catalog.payloadDigest])
        b.timestamp = F.tampered(b.timestamp, bytes: F.json(evil))
        expectRejection(.badSignature, b)
    }

    /// An attacker labels its own signature with the release key's id.
    @Test func signatureByAnUntrustedKeyUnderATrustedKeyIDIsRejected() {
        var forged = F.sign(F.catalog(), PayloadType.catalog, [F.attackerKey])
        forged.signatures[0].keyid = F.releaseKey.keyID
        expectRejection(.badSignature, F.bundle(catalogEnvelope: forged))
    }

    @Test func signatureThatIsNotBase64IsRejected() {
        var env = F.sign(F.catalog(), PayloadType.catalog, [F.releaseKey])
        env.signatures[0].sig = "***"
        expectRejection(.badSignature, F.bundle(catalogEnvelope: env))
    }

    @Test func oneValidSignatureAmongForgedOnesIsEnoughAtThresholdOne() throws {
        var env = F.sign(F.catalog(), PayloadType.catalog, [F.attackerKey])
        env.signatures[0].keyid = F.releaseKey.keyID
        env.signatures.append(F.sign(F.catalog(), PayloadType.catalog, [F.releaseKey]).signatures[0])
        #expect(throws: Never.self) { try F.verify(F.bundle(catalogEnvelope: env), state: F.pinnedState()) }
    }

    // MARK: Thresholds

    /// A state pinned to a root whose release role needs two of [release, release2].
    private func thresholdTwoState(keyids: [String] = [F.releaseKey.keyID, F.releaseKey2.keyID]) -> TrustedState {
        var root = F.rootMetadata()
        root.keys[F.releaseKey2.keyID] = F.releaseKey2.publicKey
        root.roles[Role.release.rawValue] = RootMetadata.RoleKeys(keyids: keyids, threshold: 2)
        return try! TrustedState(pinning: F.sign(root, PayloadType.root, [F.rootKey]), now: F.now)
    }

    @Test func thresholdNotMetWithOneOfTwoReleaseSignatures() {
        expectRejection(.thresholdNotMet, F.bundle(catalogKeys: [F.releaseKey]), state: thresholdTwoState())
        expectRejection(.thresholdNotMet, F.bundle(catalogKeys: [F.releaseKey2]), state: thresholdTwoState())
    }

    @Test func thresholdMetWithBothReleaseSignatures() throws {
        let result = try F.verify(F.bundle(catalogKeys: [F.releaseKey, F.releaseKey2]), state: thresholdTwoState())
        #expect(result.variant == F.int8)
    }

    /// go-tuf TestVerifyDuplicateSignatures: one key's signature repeated must count once.
    @Test func duplicateSignaturesFromOneKeyDoNotMeetThreshold() {
        var env = F.sign(F.catalog(), PayloadType.catalog, [F.releaseKey])
        env.signatures.append(env.signatures[0])
        env.signatures.append(env.signatures[0])
        expectRejection(.thresholdNotMet, F.bundle(catalogEnvelope: env), state: thresholdTwoState())
    }

    /// A root listing the same key id twice must not let one key meet a threshold of two.
    @Test func keyListedTwiceInTheRoleDoesNotMeetThreshold() {
        let state = thresholdTwoState(keyids: [F.releaseKey.keyID, F.releaseKey.keyID])
        expectRejection(.thresholdNotMet, F.bundle(catalogKeys: [F.releaseKey]), state: state)
    }

    @Test func forgedSecondSignatureDoesNotMeetThreshold() {
        var env = F.sign(F.catalog(), PayloadType.catalog, [F.releaseKey, F.attackerKey])
        env.signatures[1].keyid = F.releaseKey2.keyID
        expectRejection(.thresholdNotMet, F.bundle(catalogEnvelope: env), state: thresholdTwoState())
    }

    /// A key listed under an id that is not its own hash is never used.
    @Test func keyStoredUnderAnotherKeyIDIsIgnored() {
        var root = F.rootMetadata()
        let fakeID = Digest.sha256Hex(Array("fake".utf8))
        root.keys[fakeID] = F.attackerKey.publicKey
        root.roles[Role.release.rawValue] = RootMetadata.RoleKeys(keyids: [fakeID], threshold: 1)
        let state = try! TrustedState(pinning: F.sign(root, PayloadType.root, [F.rootKey]), now: F.now)
        var env = F.sign(F.catalog(), PayloadType.catalog, [F.attackerKey])
        env.signatures[0].keyid = fakeID
        expectRejection(.badSignature, F.bundle(catalogEnvelope: env), state: state)
    }

    /// A threshold of 0 must not mean "no signature needed".
    @Test func roleWithThresholdZeroIsUnusable() {
        var root = F.rootMetadata()
        root.roles[Role.release.rawValue]?.threshold = 0
        let state = try! TrustedState(pinning: F.sign(root, PayloadType.root, [F.rootKey]), now: F.now)
        expectRejection(.malformed, F.bundle(catalogKeys: []), state: state)
        expectRejection(.malformed, F.bundle(), state: state)
    }

    @Test func rootWithoutTheRoleIsUnusable() {
        var root = F.rootMetadata()
        root.roles[Role.director.rawValue] = nil
        let state = try! TrustedState(pinning: F.sign(root, PayloadType.root, [F.rootKey]), now: F.now)
        expectRejection(.malformed, F.bundle(), state: state)
    }

    // MARK: Freshness

    @Test func expiredTimestampIsRejected() {
        expectRejection(.expired, F.bundle(timestamp: { $0.expiresAt = F.now }))
        expectRejection(.expired, F.bundle(timestamp: { $0.expiresAt = F.now - 1 }))
        #expect(throws: Never.self) { try F.verify(F.bundle(timestamp: { $0.expiresAt = F.now + 1 }), state: F.pinnedState()) }
    }

    @Test func expiredCatalogIsRejected() {
        expectRejection(.expired, F.bundle(catalog: { $0.expiresAt = F.now }))
        #expect(throws: Never.self) { try F.verify(F.bundle(catalog: { $0.expiresAt = F.now + 1 }), state: F.pinnedState()) }
    }

    @Test func expiredAssignmentIsRejected() {
        expectRejection(.expired, F.bundle(assignment: { $0.expiresAt = F.now }))
        #expect(throws: Never.self) { try F.verify(F.bundle(assignment: { $0.expiresAt = F.now + 1 }), state: F.pinnedState()) }
    }

    @Test func freshBundleExpiresAsTimePasses() {
        // The same bytes, one hour later: the timestamp has expired (freeze attack).
        expectRejection(.expired, F.bundle(), now: F.now + F.hour)
    }

    /// Was a bug; fixed (TUF 5.3.10, freeze attack on root): the verifier never checks the expiry of the
    /// trusted root, so a device whose root expired keeps accepting updates from the online keys.
    @Test func expiredTrustedRootStopsUpdates() {
        let later = F.now + 400 * F.day  // the pinned root expires at now + 365 days
        let b = F.bundle(
            catalog: { $0.expiresAt = later + F.day },
            assignment: { $0.expiresAt = later + F.day },
            timestamp: { $0.expiresAt = later + F.hour })
        let fault = trustFault { try F.verify(b, state: F.pinnedState(), now: later) }
        #expect(fault == .expired)
    }

    // MARK: Rollback and replay

    @Test func rollbackOfAssignmentCounterIsRejected() {
        let state = F.stateAfterDefaultUpdate()
        expectRejection(.rollback, F.bundle(assignment: { $0.counter = 6 }), state: state)
        expectRejection(.rollback, F.bundle(assignment: { $0.counter = 0 }), state: state)
    }

    @Test func replayOfACounterWithDifferentContentIsRejected() {
        let state = F.stateAfterDefaultUpdate()
        // Same counter 7, another variant.
        expectRejection(
            .replay,
            F.bundle(assignment: {
                $0.variant = F.fp16.name; $0.sha256 = F.fp16.sha256; $0.size = F.fp16.size
                $0.package = PackageRef(kind: "full", sha256: F.fp16.sha256, size: F.fp16.size, url: "u")
            }),
            state: state)
        // Same counter 7, only the expiry differs.
        expectRejection(.replay, F.bundle(assignment: { $0.expiresAt += 1 }), state: state)
    }

    /// Rolling a device back to the previous release: an older catalog is accepted when a fresh
    /// timestamp names it, and the highest serial seen is kept.
    @Test func olderCatalogIsAcceptedOnlyWhenAFreshTimestampNamesIt() throws {
        let state = F.stateAfterDefaultUpdate()
        let seen = try #require(state.catalogSerials[F.model])
        let rollback = try F.verify(
            F.bundle(
                catalog: { $0.serial = 2 }, assignment: { $0.counter = 8 },
                timestamp: { $0.version = 11 }), state: state)
        #expect(rollback.catalog.serial == 2)
        #expect(rollback.state.catalogSerials[F.model] == seen)
        #expect(throws: Never.self) {
            try F.verify(F.bundle(assignment: { $0.counter = 8 }, timestamp: { $0.version = 11 }), state: state)
        }
    }

    @Test func timestampVersionGoingBackIsRejected() {
        let state = F.stateAfterDefaultUpdate()
        expectRejection(.rollback, F.bundle(assignment: { $0.counter = 8 }, timestamp: { $0.version = 9 }), state: state)
        expectRejection(.rollback, F.bundle(assignment: { $0.counter = 8 }, timestamp: { $0.version = 0 }), state: state)
    }

    // MARK: Targeting

    @Test func assignmentForAnotherDeviceIsRejected() {
        expectRejection(.wrongDevice, F.bundle(), deviceId: "edge-0002")
        expectRejection(.wrongDevice, F.bundle(assignment: { $0.deviceId = "edge-0002" }))
        expectRejection(.wrongDevice, F.bundle(assignment: { $0.deviceId = "" }))
    }

    @Test func assignmentForAnotherHardwareClassIsRejected() {
        expectRejection(.wrongHardwareClass, F.bundle(assignment: { $0.hardwareClass = "x86-gpu" }))
        expectRejection(.wrongHardwareClass, F.bundle(assignment: { $0.hardwareClass = "" }))
    }

    @Test func deviceThatMatchesNoClassIsRejected() {
        var riscv = F.facts
        riscv.arch = "riscv64"
        expectRejection(.wrongHardwareClass, F.bundle(), facts: riscv)
    }

    @Test func variantWhoseRequirementsTheDeviceDoesNotMeetIsRejected() throws {
        let v = F.int8VNNI
        let b = F.bundle(assignment: {
            $0.variant = v.name; $0.sha256 = v.sha256; $0.size = v.size
            $0.package = PackageRef(kind: "full", sha256: v.sha256, size: v.size, url: "u")
        })
        expectRejection(.wrongHardwareClass, b)
        var vnni = F.facts
        vnni.cpuFlags.append("avx512_vnni")
        #expect(try F.verify(b, state: F.pinnedState(), facts: vnni).variant == v)
    }

    // MARK: Catalog membership and artifact identity

    @Test func artifactNotInCatalogIsRejected() {
        let rogue = Digest.sha256Hex(Array("rogue".utf8))
        expectRejection(
            .notInCatalog,
            F.bundle(assignment: {
                $0.variant = "detector-int4"; $0.sha256 = rogue
                $0.package.sha256 = rogue
            }))
    }

    /// A known variant name carrying another artifact's hash is not in the catalog either.
    @Test func knownNameWithForeignHashIsRejected() {
        let rogue = Digest.sha256Hex(Array("rogue".utf8))
        expectRejection(
            .notInCatalog,
            F.bundle(assignment: {
                $0.sha256 = rogue; $0.package.sha256 = rogue
            }))
        expectRejection(
            .notInCatalog,
            F.bundle(assignment: {
                $0.sha256 = F.fp32.sha256; $0.package.sha256 = F.fp32.sha256
            }))
    }

    @Test func assignmentSizeDifferentFromCatalogIsRejected() {
        expectRejection(
            .lengthMismatch,
            F.bundle(assignment: {
                $0.size += 1; $0.package.size += 1
            }))
        expectRejection(
            .lengthMismatch,
            F.bundle(assignment: {
                $0.size = 0; $0.package.size = 0
            }))
    }

    @Test func packageSizeDifferentFromCatalogIsRejected() {
        expectRejection(.lengthMismatch, F.bundle(assignment: { $0.package.size += 1 }))
        expectRejection(.lengthMismatch, F.bundle(assignment: { $0.package.size = 1 }))
    }

    @Test func packageHashDifferentFromCatalogIsRejected() {
        expectRejection(.hashMismatch, F.bundle(assignment: { $0.package.sha256 = F.fp32.sha256 }))
        expectRejection(.hashMismatch, F.bundle(assignment: { $0.package.sha256 = Digest.sha256Hex(Array("evil".utf8)) }))
    }

    @Test func packageOfUnknownKindIsRejected() {
        expectRejection(.unsupported, F.bundle(assignment: { $0.package.kind = "bsdiff" }))
        expectRejection(.unsupported, F.bundle(assignment: { $0.package.kind = "" }))
        expectRejection(.unsupported, F.bundle(assignment: { $0.package.kind = "Full" }))
    }

    // MARK: Delta packages

    /// A delta from the fp16 slot the device runs to the int8 artifact.
    private static func delta(
        size: Int64 = 5 * Fixture.MB, sha256: String = Digest.sha256Hex(Array("delta".utf8)),
        base: String? = Fixture.fp16.sha256
    ) -> PackageRef {
        PackageRef(kind: PackageRef.delta, sha256: sha256, size: size, url: "https://cdn.example/d/x", baseSha256: base)
    }

    @Test func acceptsDeltaPackage() throws {
        let pkg = Self.delta()
        let result = try F.verify(F.bundle(assignment: { $0.package = pkg }), state: F.pinnedState())
        #expect(result.assignment.package == pkg)
        #expect(result.variant == F.int8)  // what the delta must produce is still the catalog's artifact
    }

    @Test func deltaWithoutAValidBaseIsRejected() {
        expectRejection(.malformed, F.bundle(assignment: { $0.package = Self.delta(base: nil) }))
        expectRejection(.malformed, F.bundle(assignment: { $0.package = Self.delta(base: "") }))
        expectRejection(.malformed, F.bundle(assignment: { $0.package = Self.delta(base: F.fp16.sha256.uppercased()) }))
        expectRejection(.malformed, F.bundle(assignment: { $0.package = Self.delta(base: "../../" + String(F.fp16.sha256.dropFirst(6))) }))
    }

    /// An assignment naming another release than the catalog it is bound to.
    @Test func assignmentForAnotherReleaseIsRejected() {
        expectRejection(.mixAndMatch, F.bundle(assignment: { $0.release = "\(F.model)@0.0.1" }))
    }

    @Test func deltaWithoutAValidHashIsRejected() {
        expectRejection(.malformed, F.bundle(assignment: { $0.package = Self.delta(sha256: "") }))
        expectRejection(.malformed, F.bundle(assignment: { $0.package = Self.delta(sha256: "not-a-hash") }))
    }

    /// Endless-data attack: a delta's length is bounded by the artifact it must produce.
    @Test func deltaOfUnboundedLengthIsRejected() throws {
        let bound = F.int8.size * 2 + (1 << 20)
        expectRejection(.lengthMismatch, F.bundle(assignment: { $0.package = Self.delta(size: bound + 1) }))
        expectRejection(.lengthMismatch, F.bundle(assignment: { $0.package = Self.delta(size: Int64.max) }))
        expectRejection(.lengthMismatch, F.bundle(assignment: { $0.package = Self.delta(size: 0) }))
        expectRejection(.lengthMismatch, F.bundle(assignment: { $0.package = Self.delta(size: -1) }))
        #expect(try F.verify(F.bundle(assignment: { $0.package = Self.delta(size: bound) }), state: F.pinnedState()).variant == F.int8)
    }

    @Test func deltaDoesNotExcuseTheOtherChecks() {
        expectRejection(
            .notInCatalog,
            F.bundle(assignment: {
                $0.package = Self.delta(); $0.sha256 = Self.delta().sha256
            }))
        expectRejection(
            .lengthMismatch,
            F.bundle(assignment: {
                $0.package = Self.delta(); $0.size = 5 * F.MB
            }))
        expectRejection(.wrongDevice, F.bundle(assignment: { $0.package = Self.delta() }), deviceId: "edge-0002")
    }

    // MARK: Mix and match

    @Test func assignmentBoundToAnotherCatalogIsRejected() {
        let older = F.sign(F.catalog(serial: 2), PayloadType.catalog, [F.releaseKey])
        expectRejection(.mixAndMatch, F.bundle(assignment: { $0.catalogSha256 = older.payloadDigest }))
        expectRejection(.mixAndMatch, F.bundle(assignment: { $0.catalogSha256 = "" }))
    }

    @Test func assignmentForAnotherModelIsRejected() {
        expectRejection(.mixAndMatch, F.bundle(assignment: { $0.model = "segmenter" }))
    }

    @Test func timestampNamingAnotherCatalogIsRejected() {
        let newer = F.sign(F.catalog(serial: 4), PayloadType.catalog, [F.releaseKey])
        expectRejection(.mixAndMatch, F.bundle(timestamp: { $0.catalogs = F.timestampEntries(F.catalog(), digest: newer.payloadDigest) }))
        expectRejection(.mixAndMatch, F.bundle(timestamp: { $0.catalogs = [:] }))
        // The right digest, filed under another model / release.
        expectRejection(
            .mixAndMatch,
            F.bundle(timestamp: { ts in
                let digest = ts.catalogs[F.release]!
                ts.catalogs = ["segmenter@1.2.0": digest, "\(F.model)@0.9.0": digest, "\(F.model)@1.2.1": digest]
            }))
    }

    /// Timestamps name catalogs by release id: an entry under the bare model name (the older
    /// keying) does not vouch for any particular version of it.
    @Test func timestampNamingOnlyTheModelIsRejected() {
        expectRejection(.mixAndMatch, F.bundle(timestamp: { ts in ts.catalogs = [F.model: ts.catalogs[F.release]!] }))
    }

    /// Several releases of one model may be in force at once (a rollback target and the current
    /// one); each is accepted on its own entry.
    @Test func timestampNamingSeveralReleasesOfAModelIsAccepted() throws {
        let previous = F.sign(F.catalog(serial: 2), PayloadType.catalog, [F.releaseKey])
        let b = F.bundle(timestamp: { $0.catalogs["\(F.model)@1.1.0"] = previous.payloadDigest })
        #expect(try F.verify(b, state: F.pinnedState()).catalog.serial == 3)
    }

    // MARK: Payload shape

    @Test func duplicateKeysInsideASignedAssignmentAreRejected() {
        var b = F.bundle()
        // A second "deviceId" the signer may not have seen; the decoder would keep one of them.
        let good = String(decoding: b.assignment.payloadBytes!, as: UTF8.self)
        let evil = good.replacing(#""deviceId":"#, with: #""deviceId":"edge-9999","deviceId":"#)
        #expect(evil != good)
        b.assignment = F.signBytes(Array(evil.utf8), PayloadType.assignment, [F.directorKey])
        expectRejection(.duplicateKey, b)
    }

    @Test func duplicateKeysInsideASignedTimestampAreRejected() {
        let b = F.bundle()
        let digest = b.catalog.payloadDigest
        let other = Digest.sha256Hex(Array("x".utf8))
        let bytes =
            #"{"catalogs":{"\#(F.release)":"\#(other)","\#(F.release)":"\#(digest)"},"expiresAt":\#(F.now + F.hour),"type":"timestamp","version":10}"#
        let ts = F.signBytes(Array(bytes.utf8), PayloadType.timestamp, [F.timestampKey])
        expectRejection(.duplicateKey, F.Bundle(catalog: b.catalog, assignment: b.assignment, timestamp: ts))
    }

    @Test func duplicateKeysInsideASignedCatalogAreRejected() {
        let good = String(decoding: F.json(F.catalog()), as: UTF8.self)
        let evil = good.replacing(#""serial":3"#, with: #""serial":3,"serial":1"#)
        #expect(evil != good)
        let env = F.signBytes(Array(evil.utf8), PayloadType.catalog, [F.releaseKey])
        expectRejection(.duplicateKey, F.bundle(catalogEnvelope: env))
    }

    @Test func oversizeAssignmentIsRejected() {
        var b = F.bundle()
        // Valid JSON padded with white space past the 16 KiB limit, properly signed.
        let padded = b.assignment.payloadBytes! + [UInt8](repeating: 0x20, count: MetadataLimits.assignment)
        b.assignment = F.signBytes(padded, PayloadType.assignment, [F.directorKey])
        expectRejection(.tooLarge, b)
    }

    @Test func oversizeTimestampIsRejected() {
        var b = F.bundle()
        let padded = b.timestamp.payloadBytes! + [UInt8](repeating: 0x20, count: MetadataLimits.timestamp)
        b.timestamp = F.signBytes(padded, PayloadType.timestamp, [F.timestampKey])
        expectRejection(.tooLarge, b)
    }

    @Test func oversizeCatalogIsRejected() {
        let padded = F.json(F.catalog()) + [UInt8](repeating: 0x0A, count: MetadataLimits.catalog)
        expectRejection(.tooLarge, F.bundle(catalogEnvelope: F.signBytes(padded, PayloadType.catalog, [F.releaseKey])))
    }

    @Test func payloadExactlyAtTheLimitIsAccepted() throws {
        var b = F.bundle()
        let body = b.assignment.payloadBytes!
        let padded = body + [UInt8](repeating: 0x20, count: MetadataLimits.assignment - body.count)
        b.assignment = F.signBytes(padded, PayloadType.assignment, [F.directorKey])
        #expect(try F.verify(b, state: F.pinnedState()).state.assignmentDigests[F.model] == Digest.sha256Hex(padded))
    }

    @Test func assignmentEnvelopePassedAsCatalogIsRejected() {
        let b = F.bundle()
        expectRejection(.wrongPayloadType, F.Bundle(catalog: b.assignment, assignment: b.assignment, timestamp: b.timestamp))
        expectRejection(.wrongPayloadType, F.Bundle(catalog: b.catalog, assignment: b.timestamp, timestamp: b.timestamp))
        expectRejection(.wrongPayloadType, F.Bundle(catalog: b.catalog, assignment: b.assignment, timestamp: b.catalog))
        expectRejection(.wrongPayloadType, F.Bundle(catalog: b.catalog, assignment: b.assignment, timestamp: F.rootEnvelope))
    }

    /// An assignment document signed by the director, relabelled as a catalog: the director
    /// signature is not a release signature, and would not verify under the new label anyway.
    @Test func documentSignedAsOneTypeCannotBeRelabelled() {
        var b = F.bundle()
        b.assignment.payloadType = PayloadType.catalog
        let relabelled = b.assignment
        b = F.bundle()
        expectRejection(.missingSignature, F.Bundle(catalog: relabelled, assignment: b.assignment, timestamp: b.timestamp))
    }

    @Test func signedPayloadOfTheWrongShapeIsMalformed() {
        var b = F.bundle()
        b.assignment = F.signBytes(Array(#"{"type":"assignment"}"#.utf8), PayloadType.assignment, [F.directorKey])
        expectRejection(.malformed, b)
        b = F.bundle()
        b.timestamp = F.signBytes(Array("[]".utf8), PayloadType.timestamp, [F.timestampKey])
        expectRejection(.malformed, b)
        b = F.bundle()
        b.timestamp = F.signBytes(Array(#"{"version":10} trailing"#.utf8), PayloadType.timestamp, [F.timestampKey])
        expectRejection(.malformed, b)
    }

    /// Signed bytes that JSON-parse but do not fit the schema are refused, not coerced.
    @Test func signedPayloadWithNegativeCounterIsMalformed() {
        var b = F.bundle()
        let good = String(decoding: b.assignment.payloadBytes!, as: UTF8.self)
        let evil = good.replacing(#""counter":7"#, with: #""counter":-1"#)
        #expect(evil != good)
        b.assignment = F.signBytes(Array(evil.utf8), PayloadType.assignment, [F.directorKey])
        expectRejection(.malformed, b)
    }
}
