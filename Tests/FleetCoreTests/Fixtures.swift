import Testing
@testable import FleetCore

/// Shared fixtures: deterministic keys (fixed seeds), one key per role, a catalog of four
/// variants, an assignment of the int8 variant to one device, and a timestamp naming the
/// catalog, all signed. Every time is an Int64 relative to the fixed `now`; no test reads a clock.
enum Fixture {
    static let now: Int64 = 1_750_000_000
    static let hour: Int64 = 3_600
    static let day: Int64 = 86_400
    static let MB: Int64 = 1_000_000
    static let GB: Int64 = 1_000_000_000

    static let deviceId = "edge-0001"
    static let model = "detector"
    static let release = "detector@1.2.0"

    // MARK: Keys

    /// An Ed25519 key from a fixed 32-byte seed, so key ids are the same in every run.
    static func key(_ role: Role, seed: UInt8) -> SigningKey {
        // A 32-byte seed is always a valid Ed25519 private key.
        try! SigningKey(role: role, rawPrivateKey: [UInt8](repeating: seed, count: 32))
    }

    static let rootKey = key(.root, seed: 1)
    static let releaseKey = key(.release, seed: 2)
    static let directorKey = key(.director, seed: 3)
    static let timestampKey = key(.timestamp, seed: 4)
    /// Keys used by rotation and threshold tests.
    static let rootKey2 = key(.root, seed: 11)
    static let rootKey3 = key(.root, seed: 21)
    static let releaseKey2 = key(.release, seed: 12)
    /// A key nobody trusts.
    static let attackerKey = key(.release, seed: 99)

    // MARK: Root

    static func rootMetadata(
        version: Int = 1, expiresAt: Int64 = now + 365 * day,
        root: SigningKey = rootKey, release: SigningKey = releaseKey,
        director: SigningKey = directorKey, timestamp: SigningKey = timestampKey
    ) -> RootMetadata {
        RootMetadata(
            version: version, expiresAt: expiresAt,
            roleKeys: [.root: root, .release: release, .director: director, .timestamp: timestamp])
    }

    static var rootEnvelope: Envelope { sign(rootMetadata(), PayloadType.root, [rootKey]) }

    /// A device's state right after enrollment: v1 root pinned, nothing accepted yet.
    static func pinnedState() -> TrustedState {
        do { return try TrustedState(pinning: rootEnvelope, now: now) } catch {
            // Fail the test, not the process: fall back to the same state without verification.
            Issue.record("fixture: the v1 root no longer pins: \(error)")
            return unverifiedState(root: rootMetadata(), envelope: rootEnvelope)
        }
    }

    /// A TrustedState built through its Codable form, bypassing verification (fixture fallback only).
    static func unverifiedState(root: RootMetadata, envelope: Envelope) -> TrustedState {
        struct Raw: Encodable {
            var rootEnvelope: Envelope, root: RootMetadata, timestampVersion: UInt64 = 0
            var catalogSerials: [String: Int] = [:], assignmentCounters: [String: UInt64] = [:], assignmentDigests: [String: String] = [:]
        }
        return try! JSONDecoder().decode(TrustedState.self, from: FleetJSON.encode(Raw(rootEnvelope: envelope, root: root)))
    }

    // MARK: Device and catalog

    /// An x86_64 box with AVX2 and no accelerator: classifies as "x86-avx2".
    static let facts = DeviceFacts(
        deviceId: deviceId, arch: "x86_64", cpuFlags: ["sse4_2", "avx", "avx2", "fma"],
        memoryBytes: 8 * GB, diskFreeBytes: 64 * GB, accelerators: [],
        downlinkMbps: 50, metered: false)

    static let gpuClass = HardwareClass(
        name: "x86-gpu", match: .init(arch: ["x86_64"], accelerators: ["/dev/nvidia"]),
        formats: ["fp16", "fp32"])
    static let avx2Class = HardwareClass(
        name: "x86-avx2", match: .init(arch: ["x86_64"], cpuFlags: ["avx2"]),
        formats: ["int8", "fp16", "fp32"])
    static let armClass = HardwareClass(
        name: "arm-small", match: .init(arch: ["aarch64"], maxMemoryBytes: 4 * GB),
        formats: ["int8"], maxModelBytes: 150 * MB)
    static let hardwareClasses = [gpuClass, avx2Class, armClass]

    static func variant(_ name: String, _ dtype: String, _ size: Int64, requires: Requirements = Requirements()) -> CatalogVariant {
        CatalogVariant(
            name: name, sha256: Digest.sha256Hex(Array("artifact:\(name)".utf8)), size: size,
            fileName: "\(name).onnx", format: "onnx", dtype: dtype, requires: requires)
    }

    static let fp32 = variant("detector-fp32", "fp32", 400 * MB)
    static let fp16 = variant("detector-fp16", "fp16", 200 * MB)
    static let int8 = variant("detector-int8", "int8", 100 * MB)
    static let int8VNNI = variant("detector-int8-vnni", "int8", 90 * MB, requires: Requirements(cpuFlags: ["avx512_vnni"]))

    static func catalog(serial: Int = 3, expiresAt: Int64 = now + 30 * day) -> ReleaseCatalog {
        ReleaseCatalog(
            model: model, version: "1.2.0", serial: serial, expiresAt: expiresAt,
            variants: [fp32, fp16, int8, int8VNNI], hardwareClasses: hardwareClasses)
    }

    static func assignment(of v: CatalogVariant = int8, counter: UInt64 = 7, catalogSha256: String) -> Assignment {
        Assignment(
            deviceId: deviceId, hardwareClass: "x86-avx2", model: model, release: release, variant: v.name,
            sha256: v.sha256, size: v.size,
            package: PackageRef(kind: "full", sha256: v.sha256, size: v.size, url: "https://cdn.example/a/\(v.sha256)"),
            counter: counter, expiresAt: now + day, catalogSha256: catalogSha256)
    }

    static func timestamp(version: UInt64 = 10, catalogs: [String: String]) -> TimestampMetadata {
        TimestampMetadata(version: version, expiresAt: now + hour, catalogs: catalogs)
    }

    /// The timestamp's entry naming a catalog: keyed by release id "model@version".
    static func timestampEntries(_ c: ReleaseCatalog, digest: String) -> [String: String] {
        ["\(c.model)@\(c.version)": digest]
    }

    // MARK: Signing

    static func sign<T: Encodable>(_ value: T, _ type: String, _ keys: [SigningKey]) -> Envelope {
        try! Envelope.sign(value, type: type, keys: keys)
    }

    /// Signs exact bytes (for payloads no Encodable produces: duplicate keys, padding, garbage).
    static func signBytes(_ bytes: [UInt8], _ type: String, _ keys: [SigningKey]) -> Envelope {
        var envelope = Envelope(payloadType: type, payloadBytes: bytes)
        for key in keys { envelope.addSignature(key) }
        return envelope
    }

    static func json<T: Encodable>(_ value: T) -> [UInt8] { [UInt8](try! FleetJSON.encode(value)) }

    /// Replaces the payload bytes of an envelope and keeps its signatures (a tampering attacker).
    static func tampered(_ envelope: Envelope, bytes: [UInt8]) -> Envelope {
        var copy = envelope
        copy.payload = Data(bytes).base64EncodedString()
        return copy
    }

    // MARK: Update bundles

    struct Bundle {
        var catalog: Envelope
        var assignment: Envelope
        var timestamp: Envelope
    }

    /// A consistent signed bundle. Edits are applied before signing; the assignment and the
    /// timestamp are bound to the digest of whatever catalog envelope is used, unless an edit
    /// changes that. `catalogEnvelope` replaces the signed catalog (tampered or hand-made bytes).
    static func bundle(
        catalog editCatalog: (inout ReleaseCatalog) -> Void = { _ in },
        assignment editAssignment: (inout Assignment) -> Void = { _ in },
        timestamp editTimestamp: (inout TimestampMetadata) -> Void = { _ in },
        catalogEnvelope: Envelope? = nil,
        catalogKeys: [SigningKey] = [releaseKey],
        assignmentKeys: [SigningKey] = [directorKey],
        timestampKeys: [SigningKey] = [timestampKey]
    ) -> Bundle {
        var cat = catalog()
        editCatalog(&cat)
        let catEnv = catalogEnvelope ?? sign(cat, PayloadType.catalog, catalogKeys)
        let digest = catEnv.payloadDigest
        var a = assignment(catalogSha256: digest)
        editAssignment(&a)
        var ts = timestamp(catalogs: timestampEntries(cat, digest: digest))
        editTimestamp(&ts)
        return Bundle(
            catalog: catEnv, assignment: sign(a, PayloadType.assignment, assignmentKeys),
            timestamp: sign(ts, PayloadType.timestamp, timestampKeys))
    }

    static func verify(
        _ b: Bundle, state: TrustedState, deviceId: String = deviceId,
        facts: DeviceFacts = facts, now: Int64 = now
    ) throws(TrustError) -> VerifiedUpdate {
        try UpdateVerifier.verify(
            catalog: b.catalog, assignment: b.assignment, timestamp: b.timestamp,
            state: state, deviceId: deviceId, facts: facts, now: now)
    }

    /// The state after the default bundle was accepted (timestamp 10, serial 3, counter 7).
    static func stateAfterDefaultUpdate() -> TrustedState {
        do { return try verify(bundle(), state: pinnedState()).state } catch {
            Issue.record("fixture: the default bundle no longer verifies: \(error)")
            return pinnedState()
        }
    }
}

// MARK: Assertion helpers

/// The fault of the TrustError `body` throws, or nil when it does not throw. Any other error
/// type is a test failure. (Closures do not infer typed throws yet, hence the cast.)
func trustFault<R>(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> R) -> TrustError.Fault? {
    do { _ = try body(); return nil } catch let error as TrustError { return error.fault } catch {
        Issue.record("expected a TrustError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// The code of the MetadataError `body` throws, or nil when it does not throw.
func metadataCode(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> MetadataError.Code? {
    do { try body(); return nil } catch let error as MetadataError { return error.code } catch {
        Issue.record("expected a MetadataError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Runs UpdateVerifier.verify on `bundle`, expects a TrustError with `fault`, and checks that
/// the caller's TrustedState is unchanged (the verifier hands a new state back only on success).
func expectRejection(
    _ fault: TrustError.Fault, _ bundle: Fixture.Bundle, state: TrustedState = Fixture.pinnedState(),
    deviceId: String = Fixture.deviceId, facts: DeviceFacts = Fixture.facts, now: Int64 = Fixture.now,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let before = state
    let error = #expect(throws: TrustError.self, sourceLocation: sourceLocation) {
        _ = try Fixture.verify(bundle, state: state, deviceId: deviceId, facts: facts, now: now)
    }
    #expect(error?.fault == fault, "got \(String(describing: error))", sourceLocation: sourceLocation)
    #expect(state == before, sourceLocation: sourceLocation)
}
