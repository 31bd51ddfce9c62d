import FleetCore
import Foundation

/// Every decoder an agent runs on bytes from the network, and the verifier behind them, on one input.
/// Errors are the expected outcome; a crash, a hang or unbounded memory is a finding.
func fuzzMetadata(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size > 0 else { return 0 }
    let input = Data(bytes: data, count: size)
    _ = try? StrictJSON.validate(input, maxBytes: MetadataLimits.checkInResponse)
    _ = try? FleetJSON.decode(CheckInResponse.self, from: input, limit: MetadataLimits.checkInResponse)
    _ = try? FleetJSON.decode(RootMetadata.self, from: input, limit: MetadataLimits.root)
    _ = try? FleetJSON.decode(ReleaseCatalog.self, from: input, limit: MetadataLimits.catalog)
    _ = try? FleetJSON.decode(Assignment.self, from: input, limit: MetadataLimits.assignment)
    _ = try? FleetJSON.decode(TimestampMetadata.self, from: input, limit: MetadataLimits.timestamp)
    _ = try? FleetJSON.decode(EventBatch.self, from: input, limit: 1 << 20)
    if let envelope = try? Envelope.parse(input) {
        // Pinning verifies a self-signed root: signature, threshold and expiry checks on hostile input.
        _ = try? TrustedState(pinning: envelope, now: 1_800_000_000)
        _ = envelope.payloadDigest
    }
    if let response = try? FleetJSON.decode(CheckInResponse.self, from: input, limit: MetadataLimits.checkInResponse),
        let timestamp = response.timestamp, let state = Fixture.state
    {
        var trust = state
        _ = try? trust.rotate(through: response.rootChain, now: 1_800_000_000)
        for u in response.updates {
            _ = try? UpdateVerifier.verify(
                catalog: u.catalog, assignment: u.assignment, timestamp: timestamp, state: state,
                deviceId: "edge-x86-vnni-01", facts: Fixture.facts, now: 1_800_000_000)
        }
    }
    return 0
}

/// A pinned root of throwaway keys, so inputs can reach the checks behind the signature check.
enum Fixture {
    static let keys = Dictionary(
        uniqueKeysWithValues: Role.allCases.map { role in
            (
                role,
                try! SigningKey(role: role, rawPrivateKey: [UInt8](repeating: UInt8(1 + Role.allCases.firstIndex(of: role)!), count: 32))
            )
        })
    static let state: TrustedState? = {
        let root = RootMetadata(version: 1, expiresAt: 2_000_000_000, roleKeys: keys)
        guard let env = try? Envelope.sign(root, type: PayloadType.root, keys: [keys[.root]!]) else { return nil }
        return try? TrustedState(pinning: env, now: 1_800_000_000)
    }()
    static let facts = DeviceFacts(
        deviceId: "edge-x86-vnni-01", arch: "x86_64", cpuFlags: ["avx2", "fma", "avx512_vnni"],
        memoryBytes: 16 << 30, diskFreeBytes: 64 << 30)
}

/// `FUZZ_WRITE_SEEDS=DIR FuzzMetadata` writes a seed corpus signed by the fixture keys (a check-in
/// answer that passes every check, its parts, the root) and exits: how Corpus/metadata was made.
func writeSeeds(to dir: String) {
    let k = Fixture.keys
    let variant = CatalogVariant(
        name: "m-int8", sha256: String(repeating: "ab", count: 32), size: 1000, fileName: "model.safetensors",
        format: "safetensors", dtype: "int8")
    let hwClass = HardwareClass(
        name: "x86-avx512-vnni", match: HardwareClass.Match(arch: ["x86_64"], cpuFlags: ["avx512_vnni"]), formats: ["int8"])
    let catalog = ReleaseCatalog(
        model: "m", version: "1", serial: 1, expiresAt: 2_000_000_000, variants: [variant], hardwareClasses: [hwClass])
    let catEnv = try! Envelope.sign(catalog, type: PayloadType.catalog, keys: [k[.release]!])
    let assignment = Assignment(
        deviceId: "edge-x86-vnni-01", hardwareClass: "x86-avx512-vnni", model: "m", release: "m@1", variant: "m-int8",
        sha256: variant.sha256, size: 1000,
        package: PackageRef(kind: "full", sha256: variant.sha256, size: 1000, url: "/v1/artifacts/" + variant.sha256),
        counter: 1, expiresAt: 2_000_000_000, catalogSha256: catEnv.payloadDigest)
    let asEnv = try! Envelope.sign(assignment, type: PayloadType.assignment, keys: [k[.director]!])
    let ts = try! Envelope.sign(
        TimestampMetadata(version: 1, expiresAt: 2_000_000_000, catalogs: ["m@1": catEnv.payloadDigest]),
        type: PayloadType.timestamp, keys: [k[.timestamp]!])
    let response = CheckInResponse(
        deviceId: "edge-x86-vnni-01", hardwareClass: "x86-avx512-vnni", tier: "fibre", rootChain: [], timestamp: ts,
        updates: [ModelUpdate(model: "m", catalog: catEnv, assignment: asEnv)], held: [:], pollSeconds: 30)
    guard let state = Fixture.state,
        (try? UpdateVerifier.verify(
            catalog: catEnv, assignment: asEnv, timestamp: ts, state: state, deviceId: "edge-x86-vnni-01",
            facts: Fixture.facts, now: 1_800_000_000)) != nil
    else {
        fatalError("the seed check-in answer does not verify against the fixture root")
    }
    let seeds: [(String, Data)] = [
        ("checkin.json", try! FleetJSON.encode(response)),
        ("root-envelope.json", try! FleetJSON.encode(state.rootEnvelope)),
        ("catalog.json", Data(catEnv.payloadBytes!)),
        ("assignment.json", Data(asEnv.payloadBytes!)),
        ("timestamp.json", Data(ts.payloadBytes!)),
        ("events.json", try! FleetJSON.encode(EventBatch(events: [StatusEvent(seq: 1, time: 1, kind: "committed", model: "m")])))
    ]
    for (name, data) in seeds { try! data.write(to: URL(fileURLWithPath: dir + "/" + name)) }
    print("wrote \(seeds.count) seeds to \(dir)")
}

/// libFuzzer's own `main` (linked but unused) refers to this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func llvmFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzMetadata(data, size) }

// SwiftPM gives an executable its own `main`, so libFuzzer's is not linked: start its driver here.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

if let dir = ProcessInfo.processInfo.environment["FUZZ_WRITE_SEEDS"] {
    writeSeeds(to: dir)
} else {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzMetadata))
}
