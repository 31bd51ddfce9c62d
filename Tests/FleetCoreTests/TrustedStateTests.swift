import Testing
@testable import FleetCore

/// Root pinning at enrollment and root rotation (TUF 5.3): each new root must be signed by the
/// threshold of the previous root and by its own.
@Suite struct TrustedStateTests {
    typealias F = Fixture

    // Chain: v1 root key A, v2 root key B, v3 root key C. Other role keys unchanged.
    private let v1 = F.rootMetadata(version: 1)
    private let v2 = F.rootMetadata(version: 2, root: F.rootKey2)
    private let v3 = F.rootMetadata(version: 3, root: F.rootKey3)

    private func sign(_ root: RootMetadata, _ keys: [SigningKey]) -> Envelope { F.sign(root, PayloadType.root, keys) }
    private var v2Env: Envelope { sign(v2, [F.rootKey, F.rootKey2]) }
    private var v3Env: Envelope { sign(v3, [F.rootKey2, F.rootKey3]) }

    /// Rotates a copy of `state`; returns the fault and checks that a failed rotation changed nothing.
    private func rotate(
        _ state: TrustedState, _ chain: [Envelope], now: Int64 = Fixture.now,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> (TrustedState, TrustError.Fault?) {
        var s = state
        let fault = trustFault { try s.rotate(through: chain, now: now) }
        if fault != nil { #expect(s == state, "a failed rotation must leave the state as it was", sourceLocation: sourceLocation) }
        return (s, fault)
    }

    // MARK: Pinning

    @Test func pinsAValidRoot() throws {
        let state = try TrustedState(pinning: F.rootEnvelope, now: F.now)
        #expect(state.root == v1)
        #expect(state.rootEnvelope == F.rootEnvelope)
        #expect(state.timestampVersion == 0)
        #expect(state.catalogSerials.isEmpty && state.assignmentCounters.isEmpty && state.assignmentDigests.isEmpty)
    }

    @Test func trustedStateSurvivesAJSONRoundTrip() throws {
        let state = F.stateAfterDefaultUpdate()
        let decoded = try FleetJSON.decode(TrustedState.self, from: try FleetJSON.encode(state), limit: 1 << 20)
        #expect(decoded == state)
    }

    private func pinFault(_ env: Envelope, now: Int64 = Fixture.now) -> TrustError.Fault? {
        trustFault { try TrustedState(pinning: env, now: now) }
    }

    @Test func pinningRejectsAnExpiredRoot() {
        #expect(pinFault(sign(F.rootMetadata(expiresAt: F.now), [F.rootKey])) == .expired)
        #expect(pinFault(F.rootEnvelope, now: F.now + 365 * F.day) == .expired)
        #expect(pinFault(F.rootEnvelope, now: F.now + 365 * F.day - 1) == nil)
    }

    @Test func pinningRejectsARootNotSignedByItsRootKey() {
        #expect(pinFault(sign(v1, [])) == .missingSignature)
        #expect(pinFault(sign(v1, [F.releaseKey, F.directorKey])) == .missingSignature)
        var forged = sign(v1, [F.attackerKey])
        forged.signatures[0].keyid = F.rootKey.keyID
        #expect(pinFault(forged) == .badSignature)
    }

    @Test func pinningRejectsATamperedRoot() {
        var evil = v1
        evil.keys[F.attackerKey.keyID] = F.attackerKey.publicKey
        evil.roles[Role.release.rawValue] = .init(keyids: [F.attackerKey.keyID], threshold: 1)
        #expect(pinFault(F.tampered(F.rootEnvelope, bytes: F.json(evil))) == .badSignature)
    }

    @Test func pinningRejectsAnotherDocumentType() {
        // A root-shaped document signed as a catalog.
        #expect(pinFault(F.sign(v1, PayloadType.catalog, [F.rootKey])) == .wrongPayloadType)
        // Root payload type, but the document says it is a catalog.
        var notRoot = v1
        notRoot.type = "catalog"
        #expect(pinFault(sign(notRoot, [F.rootKey])) == .wrongPayloadType)
        // Something else entirely.
        #expect(pinFault(F.bundle().catalog) == .malformed)
    }

    @Test func pinningRejectsDuplicateKeysAndOversize() {
        let good = String(decoding: F.json(v1), as: UTF8.self)
        let dup = good.replacing(#""version":1"#, with: #""version":1,"version":9"#)
        #expect(dup != good)
        #expect(pinFault(F.signBytes(Array(dup.utf8), PayloadType.root, [F.rootKey])) == .duplicateKey)
        let padded = F.json(v1) + [UInt8](repeating: 0x20, count: MetadataLimits.root)
        #expect(pinFault(F.signBytes(padded, PayloadType.root, [F.rootKey])) == .tooLarge)
        var notBase64 = F.rootEnvelope
        notBase64.payload = "%%%"
        #expect(pinFault(notBase64) == .malformed)
    }

    @Test func pinningRequiresTheRootThreshold() {
        var root = v1
        root.keys[F.rootKey2.keyID] = F.rootKey2.publicKey
        root.roles[Role.root.rawValue] = .init(keyids: [F.rootKey.keyID, F.rootKey2.keyID], threshold: 2)
        #expect(pinFault(sign(root, [F.rootKey])) == .thresholdNotMet)
        #expect(pinFault(sign(root, [F.rootKey, F.rootKey2])) == nil)
    }

    // MARK: Rotation

    @Test func followsAValidRotation() {
        let (state, fault) = rotate(F.pinnedState(), [v2Env])
        #expect(fault == nil)
        #expect(state.root == v2)
        #expect(state.rootEnvelope == v2Env)
    }

    @Test func followsAChainOfRotations() {
        let (state, fault) = rotate(F.pinnedState(), [v2Env, v3Env])
        #expect(fault == nil)
        #expect(state.root == v3)
        #expect(state.rootEnvelope == v3Env)
        // And step by step gives the same result.
        let (step1, _) = rotate(F.pinnedState(), [v2Env])
        let (step2, _) = rotate(step1, [v3Env])
        #expect(step2 == state)
    }

    @Test func rotationKeepsCountersAndVersions() {
        let before = F.stateAfterDefaultUpdate()
        let (after, fault) = rotate(before, [v2Env])
        #expect(fault == nil)
        #expect(after.timestampVersion == before.timestampVersion)
        #expect(after.catalogSerials == before.catalogSerials)
        #expect(after.assignmentCounters == before.assignmentCounters)
        #expect(after.assignmentDigests == before.assignmentDigests)
    }

    @Test func emptyChainChangesNothing() {
        let (state, fault) = rotate(F.pinnedState(), [])
        #expect(fault == nil)
        #expect(state == F.pinnedState())
    }

    /// An attacker with the new keys only (or a compromised new root) cannot rotate the device.
    @Test func newRootSignedOnlyByTheNewKeyIsRejected() {
        let (_, fault) = rotate(F.pinnedState(), [sign(v2, [F.rootKey2])])
        #expect(fault == .missingSignature)
    }

    /// The new root must also be signed by its own threshold (its keys are live).
    @Test func newRootSignedOnlyByTheOldKeyIsRejected() {
        let (_, fault) = rotate(F.pinnedState(), [sign(v2, [F.rootKey])])
        #expect(fault == .missingSignature)
    }

    @Test func newRootWithForgedNewSignatureIsRejected() {
        var env = sign(v2, [F.rootKey, F.attackerKey])
        env.signatures[1].keyid = F.rootKey2.keyID
        let (_, fault) = rotate(F.pinnedState(), [env])
        #expect(fault == .badSignature)
    }

    @Test func rotationRequiresTheOldRootThreshold() {
        var old = v1
        old.keys[F.rootKey2.keyID] = F.rootKey2.publicKey
        old.roles[Role.root.rawValue] = .init(keyids: [F.rootKey.keyID, F.rootKey2.keyID], threshold: 2)
        let state = try! TrustedState(pinning: sign(old, [F.rootKey, F.rootKey2]), now: F.now)
        let next = F.rootMetadata(version: 2, root: F.rootKey3)
        #expect(rotate(state, [sign(next, [F.rootKey, F.rootKey3])]).1 == .thresholdNotMet)
        #expect(rotate(state, [sign(next, [F.rootKey, F.rootKey2, F.rootKey3])]).1 == nil)
    }

    @Test func versionSkipIsRejected() {
        // v3 signed by v1's key and its own: valid signatures, but it skips v2.
        let skip = sign(F.rootMetadata(version: 3, root: F.rootKey3), [F.rootKey, F.rootKey3])
        let (_, fault) = rotate(F.pinnedState(), [skip])
        #expect(fault == .malformed)
        // A chain with a gap fails too.
        #expect(rotate(F.pinnedState(), [v3Env]).1 == .missingSignature)
    }

    @Test func olderVersionsInTheChainAreIgnored() {
        let (a, fa) = rotate(F.pinnedState(), [F.rootEnvelope, v2Env])
        #expect(fa == nil)
        #expect(a.root == v2)
        let (b, fb) = rotate(F.pinnedState(), [v2Env, F.rootEnvelope])
        #expect(fb == nil)
        #expect(b.root == v2)
        // Old entries are skipped without being verified: even a broken one does no harm.
        let unsigned = sign(v1, [])
        let (c, fc) = rotate(a, [unsigned, v2Env])
        #expect(fc == nil)
        #expect(c == a)
    }

    /// A rollback of the root directly through verifyRootUpdate (rotate skips old versions).
    @Test func rootRollbackIsRejected() {
        let old = F.rootMetadata(version: 1)
        let env = sign(old, [F.rootKey, F.rootKey2])  // signed by v2's key and its own
        let fault = trustFault { try MetadataVerifier.verifyRootUpdate(env, trusted: v2, now: F.now) }
        #expect(fault == .rollback)
        let same = sign(F.rootMetadata(version: 2, root: F.rootKey2), [F.rootKey2])
        #expect(trustFault { try MetadataVerifier.verifyRootUpdate(same, trusted: v2, now: F.now) } == .rollback)
    }

    @Test func expiredNewRootIsRejected() {
        let expired = sign(F.rootMetadata(version: 2, expiresAt: F.now, root: F.rootKey2), [F.rootKey, F.rootKey2])
        #expect(rotate(F.pinnedState(), [expired]).1 == .expired)
    }

    /// Was a bug; fixed (TUF 5.3.4 / 5.3.10): an intermediate root may have expired; only the newest
    /// root in the chain must be current. verifyRootUpdate checks the expiry of every step, so
    /// a device offline for longer than one root's lifetime can never rotate again.
    @Test func expiredIntermediateRootDoesNotBlockRotation() {
        let later = F.now + 400 * F.day
        let v2Expired = sign(F.rootMetadata(version: 2, expiresAt: F.now + 100 * F.day, root: F.rootKey2), [F.rootKey, F.rootKey2])
        let v3Current = sign(F.rootMetadata(version: 3, expiresAt: later + 365 * F.day, root: F.rootKey3), [F.rootKey2, F.rootKey3])
        let (state, fault) = rotate(F.pinnedState(), [v2Expired, v3Current], now: later)
        #expect(fault == nil)
        #expect(state.root.version == 3)
    }

    /// The whole chain is accepted or nothing is: a bad entry after a good one leaves v1.
    @Test func failedRotationLeavesTheStateUnchanged() {
        let badV3 = sign(v3, [F.rootKey3])  // not signed by v2's key
        let (state, fault) = rotate(F.pinnedState(), [v2Env, badV3])
        #expect(fault == .missingSignature)
        #expect(state.root == v1)
    }

    @Test func chainEntryThatIsNotARootIsMalformed() {
        #expect(rotate(F.pinnedState(), [F.bundle().assignment]).1 == .malformed)
        var garbage = v2Env
        garbage.payload = "!!"
        #expect(rotate(F.pinnedState(), [garbage]).1 == .malformed)
    }

    // MARK: Rotation takes effect

    /// Key revocation: after a rotation replaces the release key, the old key signs nothing.
    @Test func revokedReleaseKeyIsRejectedAfterRotation() throws {
        let next = F.rootMetadata(version: 2, release: F.releaseKey2)
        let (state, fault) = rotate(F.pinnedState(), [sign(next, [F.rootKey])])
        #expect(fault == nil)
        expectRejection(.missingSignature, F.bundle(catalogKeys: [F.releaseKey]), state: state)
        #expect(try F.verify(F.bundle(catalogKeys: [F.releaseKey2]), state: state).variant == F.int8)
        // The old state still trusts the old key (state is a value; nothing was shared).
        #expect(throws: Never.self) { try F.verify(F.bundle(catalogKeys: [F.releaseKey]), state: F.pinnedState()) }
    }

    @Test func revokedOnlineKeysAreRejectedAfterRotation() {
        let newDirector = F.key(.director, seed: 13)
        let newTimestamp = F.key(.timestamp, seed: 14)
        let next = F.rootMetadata(version: 2, director: newDirector, timestamp: newTimestamp)
        let (state, fault) = rotate(F.pinnedState(), [sign(next, [F.rootKey])])
        #expect(fault == nil)
        // Old timestamp key (checked first), then old director key with a current timestamp.
        expectRejection(.missingSignature, F.bundle(assignmentKeys: [newDirector], timestampKeys: [F.timestampKey]), state: state)
        expectRejection(.missingSignature, F.bundle(assignmentKeys: [F.directorKey], timestampKeys: [newTimestamp]), state: state)
        #expect(throws: Never.self) {
            try F.verify(F.bundle(assignmentKeys: [newDirector], timestampKeys: [newTimestamp]), state: state)
        }
    }
}
