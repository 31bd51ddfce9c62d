import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
@testable import FleetController

/// What the scale-out pieces promise on their own: the simulated fleet that fleet-sim plays and
/// `seed-devices` writes, and artifacts handed to nginx after the access check.
@Suite("Scale-out: simulated fleet and nginx hand-off")
struct ScaleOutTests {
    @Test func simulatedDeviceIdsArePaddedAndParseBack() {
        #expect(SimulatedDevice.id(prefix: "sim-", index: 42) == "sim-0000042")
        #expect(SimulatedDevice.id(prefix: "sim-", index: 12_345_678) == "sim-12345678")
        #expect(SimulatedDevice.index(of: "sim-0000042", prefix: "sim-") == 42)
        #expect(SimulatedDevice.index(of: "sim-42", prefix: "sim-") == nil)
        #expect(SimulatedDevice.index(of: "other-0000042", prefix: "sim-") == nil)
        #expect(Name.isValid(SimulatedDevice.id(prefix: "sim-", index: 999_999)))
    }

    /// Every simulated device falls into the class and tier it was drawn for under the repository's
    /// own fleet/ configuration, every class and every tier is populated, and a device's facts are
    /// the same every time they are asked for.
    @Test func simulatedFactsFallIntoTheirDrawnClassAndTier() throws {
        let config = try FleetConfig.load(directory: ControllerFixture.repoRoot + "/fleet")
        var classes: [String: Int] = [:], tiers: [String: Int] = [:]
        for i in 0..<5000 {
            let facts = SimulatedDevice.facts(index: i)
            #expect(facts == SimulatedDevice.facts(index: i))
            let c = HardwareClassifier.classify(facts, classes: config.hardwareClasses)?.name
            let t = TierClassifier.classify(facts, tiers: config.bandwidthTiers)?.name
            #expect(c == SimulatedDevice.profile(index: i).rawValue, "device \(i): \(facts)")
            #expect(t == SimulatedDevice.link(index: i).rawValue, "device \(i): \(facts)")
            classes[c ?? "none", default: 0] += 1
            tiers[t ?? "none", default: 0] += 1
        }
        #expect(Set(classes.keys) == Set(config.hardwareClasses.map(\.name)))
        #expect(Set(tiers.keys) == Set(config.bandwidthTiers.map(\.name)))
        // Shares close to the drawn ones (arm64-dotprod 30%, fibre 40%).
        #expect((1300...1700).contains(classes["arm64-dotprod"] ?? 0))
        #expect((1800...2200).contains(tiers["fibre"] ?? 0))
    }

    func accelApp(_ f: ControllerFixture) async throws -> some ApplicationProtocol {
        var options = ControllerOptions(
            dataDirectory: f.dir + "/data", host: "127.0.0.1", port: 0, keysDirectory: f.dir + "/keys",
            configDirectory: f.configDir, rolloutTickSeconds: nil)
        options.artifactAccelRedirect = "/_artifacts/"
        let now = f.now
        return try await Controller.makeApplication(options: options, logger: Logger(label: "test"), clock: { now }).0
    }

    /// Behind nginx the controller checks access and names the file; it never sends the bytes.
    @Test func artifactIsHandedToNginxAfterTheAccessCheck() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        let data: [UInt8] = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }
        let sha = Digest.sha256Hex(data)
        let accel = HTTPField.Name("X-Accel-Redirect")!
        try await accelApp(f).test(.router) { client in
            #expect(try await client.execute(uri: "/v1/artifacts", method: .put, body: ByteBuffer(bytes: data)).status == .created)
            let get = try await client.execute(uri: "/v1/artifacts/\(sha)", method: .get, headers: [.range: "bytes=10-19"])
            #expect(get.status == .ok)
            #expect(get.headers[accel] == "/_artifacts/\(sha.prefix(2))/\(sha)")
            #expect(get.body.readableBytes == 0)
            #expect(get.headers[.cacheControl]?.contains("immutable") == true)

            let unknown = try await client.execute(uri: "/v1/artifacts/" + String(repeating: "b", count: 64), method: .get)
            #expect(unknown.status == .notFound)
            #expect(unknown.headers[accel] == nil)
            let traversal = try await client.execute(uri: "/v1/artifacts/..%2F..%2Fetc%2Fpasswd", method: .get)
            #expect(traversal.status == .notFound)
            #expect(traversal.headers[accel] == nil)

            let cached = try await client.execute(uri: "/v1/artifacts/\(sha)", method: .get, headers: [.ifNoneMatch: "\"\(sha)\""])
            #expect(cached.status == .notModified)
            #expect(cached.headers[accel] == nil)
        }
    }

    @Test func accelPathJoinsPrefixAndShardedName() {
        let sha = String(repeating: "c", count: 64)
        #expect(ArtifactRoutes.accelPath(prefix: "/_artifacts/", sha256: sha) == "/_artifacts/cc/" + sha)
        #expect(ArtifactRoutes.accelPath(prefix: "/_artifacts", sha256: sha) == "/_artifacts/cc/" + sha)
    }
}
