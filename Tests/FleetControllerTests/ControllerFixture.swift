import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import TestSupport
@testable import FleetController

/// A controller on a temporary data directory with fresh keys and a fixed clock; requests go
/// through the router without a socket.
struct ControllerFixture {
    let dir: String
    let keys: [Role: SigningKey]
    let root: RootMetadata
    let now: Int64 = 1_800_000_000
    let configDir: String

    static var repoRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// `tiers` replaces fleet/bandwidth-tiers.yaml when given.
    init(tiers: String? = nil) throws {
        dir = try TestScratch.directory("ctl")
        try FileManager.default.createDirectory(atPath: dir + "/keys", withIntermediateDirectories: true)
        var k: [Role: SigningKey] = [:]
        for role in Role.allCases { k[role] = SigningKey(role: role) }
        keys = k
        root = RootMetadata(version: 1, expiresAt: now + 86_400 * 365, roleKeys: k)
        let env = try Envelope.sign(root, type: PayloadType.root, keys: [k[.root]!])
        try FleetJSON.encode(env).write(to: URL(fileURLWithPath: dir + "/keys/root.json"))
        try k[.director]!.fileContents().write(to: URL(fileURLWithPath: dir + "/keys/director.key"))
        try k[.timestamp]!.fileContents().write(to: URL(fileURLWithPath: dir + "/keys/timestamp.key"))
        if let tiers {
            configDir = dir + "/fleet"
            try FileManager.default.createDirectory(atPath: configDir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(
                atPath: Self.repoRoot + "/fleet/hardware-classes.yaml", toPath: configDir + "/hardware-classes.yaml")
            try FileManager.default.copyItem(atPath: Self.repoRoot + "/fleet/policies", toPath: configDir + "/policies")
            try tiers.write(toFile: configDir + "/bandwidth-tiers.yaml", atomically: true, encoding: .utf8)
        } else {
            configDir = Self.repoRoot + "/fleet"
        }
    }

    var rootEnvelope: Envelope { get throws { try Envelope.parse(Data(contentsOf: URL(fileURLWithPath: dir + "/keys/root.json"))) } }

    func app(deltaBuilder: (any DeltaBuilding)? = nil) async throws -> some ApplicationProtocol {
        try await parts(deltaBuilder: deltaBuilder).0
    }

    /// The application and its rollout driver, on `clock` (default: the fixed `now`).
    /// `databaseURL`: a PostgreSQL database instead of the data directory's SQLite file (replicas
    /// are several `parts` on one URL); `cacheSeconds`: how long cached copies live.
    func parts(
        deltaBuilder: (any DeltaBuilding)? = nil, clock: (@Sendable () -> Int64)? = nil, databaseURL: String? = nil,
        cacheSeconds: Double = 2, listensForChanges: Bool = true
    ) async throws -> (some ApplicationProtocol, RolloutDriver) {
        var options = ControllerOptions(
            dataDirectory: dir + "/data", host: "127.0.0.1", port: 0, keysDirectory: dir + "/keys",
            configDirectory: configDir, rolloutTickSeconds: nil)
        options.databaseURL = databaseURL
        options.cacheSeconds = cacheSeconds
        options.listensForChanges = listensForChanges
        let fixedNow = now
        let (app, driver, _) = try await Controller.makeApplication(
            options: options, logger: Logger(label: "test"), clock: clock ?? { fixedNow },
            deltaBuilder: deltaBuilder)
        return (app, driver)
    }

    /// Every route the controller registers, with the access it declared.
    func routeTable() async throws -> [RouteTable.Entry] {
        let options = ControllerOptions(
            dataDirectory: dir + "/data", host: "127.0.0.1", port: 0, keysDirectory: dir + "/keys",
            configDirectory: configDir, rolloutTickSeconds: nil)
        return try await Controller.makeApplication(options: options, logger: Logger(label: "test"), clock: { 0 }).2.all
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: dir) }

    static let vnniFacts = DeviceFacts(
        arch: "x86_64", cpuFlags: ["avx2", "fma", "avx512f", "avx512_vnni"], memoryBytes: 16 << 30,
        diskFreeBytes: 64 << 30, downlinkMbps: 300, metered: false)
    static let boardFacts = DeviceFacts(
        arch: "aarch64", cpuFlags: ["asimd"], memoryBytes: 1 << 30, diskFreeBytes: 8 << 30,
        downlinkMbps: 5, metered: false)
}

extension TestClientProtocol {
    @discardableResult
    func json<T: Encodable>(_ method: HTTPRequest.Method, _ uri: String, _ body: T, headers: HTTPFields = [:]) async throws -> TestResponse
    {
        var h = headers
        h[.contentType] = "application/json"
        return try await execute(uri: uri, method: method, headers: h, body: ByteBuffer(bytes: try FleetJSON.encode(body)))
    }

    func raw(_ method: HTTPRequest.Method, _ uri: String, _ body: String) async throws -> TestResponse {
        try await execute(uri: uri, method: method, headers: [.contentType: "application/json"], body: ByteBuffer(string: body))
    }

    /// Registers a model with one variant per (name, dtype, bytes) and returns the variants.
    func publish(model: String, variants: [(String, String, [UInt8])]) async throws -> [CatalogVariant] {
        try await json(.post, "/v1/models", NewModel(name: model))
        var out: [CatalogVariant] = []
        for (name, dtype, bytes) in variants {
            let up = try await execute(uri: "/v1/artifacts", method: .put, body: ByteBuffer(bytes: bytes))
            #expect(up.status == .created)
            let info = try decode(ArtifactInfo.self, up)
            let v = CatalogVariant(name: name, sha256: info.sha256, size: info.size, fileName: "\(name).onnx", format: "onnx", dtype: dtype)
            let r = try await json(.post, "/v1/models/\(model)/variants", NewVariant(variant: v))
            #expect(r.status == .created)
            out.append(v)
        }
        return out
    }
}

extension ControllerFixture {
    /// Signs and posts releases `model`@1, @2, … in order, release K carrying `variants[K-1]`, for
    /// the controller's hardware classes and valid `days` from `from` (the fixture's time if nil);
    /// each must be accepted.
    func postReleases(
        _ client: some TestClientProtocol, model: String, _ variants: [[CatalogVariant]], days: Int64 = 30, from: Int64? = nil
    ) async throws {
        let start = from ?? now
        let classes = try decode([HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get))
        for (i, vs) in variants.enumerated() {
            let c = ReleaseCatalog(
                model: model, version: "\(i + 1)", serial: i + 1, expiresAt: start + 86_400 * days, variants: vs, hardwareClasses: classes)
            let r = try await client.json(
                .post, "/v1/releases", NewRelease(catalog: try Envelope.sign(c, type: PayloadType.catalog, keys: [keys[.release]!])))
            #expect(r.status == .created)
        }
    }
}

func decode<T: Decodable>(_ t: T.Type, _ r: TestResponse) throws -> T {
    try JSONDecoder().decode(t, from: Data(r.body.readableBytesView))
}

func errorCode(_ r: TestResponse) -> String? {
    (try? JSONDecoder().decode(APIErrorBody.self, from: Data(r.body.readableBytesView)))?.error.code
}
