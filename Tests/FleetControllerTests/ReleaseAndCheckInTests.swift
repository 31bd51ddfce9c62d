import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import FleetController

@Suite("Releases, rollouts and check-in")
struct ReleaseAndCheckInTests {
    func catalog(
        _ f: ControllerFixture, _ variants: [CatalogVariant], classes: [HardwareClass], serial: Int = 1, version: String = "1.0.0",
        signer: Role = .release
    ) throws -> Envelope {
        let c = ReleaseCatalog(
            model: "m", version: version, serial: serial, expiresAt: f.now + 86_400 * 30,
            variants: variants, hardwareClasses: classes)
        return try Envelope.sign(c, type: PayloadType.catalog, keys: [f.keys[signer]!])
    }

    @Test func deviceGetsASignedAssignmentItCanVerify() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let variants = try await client.publish(
                model: "m",
                variants: [
                    ("m-fp32", "fp32", [1, 2, 3, 4]), ("m-int8", "int8", [5, 6]),
                    ("m-int4", "int4", [7])
                ])
            let classes = try decode([HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get))
            let rel = try await client.json(.post, "/v1/releases", NewRelease(catalog: try catalog(f, variants, classes: classes)))
            #expect(rel.status == .created)
            let roll = try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1.0.0", strategy: "all"))
            #expect(roll.status == .created)

            let req = CheckInRequest(facts: ControllerFixture.vnniFacts, installed: [:], agentVersion: "t")
            let r1 = try decode(CheckInResponse.self, try await client.json(.post, "/v1/devices/dev-1/checkin", req))
            #expect(r1.hardwareClass == "x86-avx512-vnni")
            #expect(r1.tier == "fibre")
            let update = try #require(r1.updates.first)
            // The device-side verifier accepts exactly what the controller signed.
            let trust = try TrustedState(pinning: try f.rootEnvelope, now: f.now)
            var facts = ControllerFixture.vnniFacts
            facts.deviceId = "dev-1"
            let verified = try UpdateVerifier.verify(
                catalog: update.catalog, assignment: update.assignment,
                timestamp: try #require(r1.timestamp), state: trust, deviceId: "dev-1",
                facts: facts, now: f.now)
            #expect(verified.variant.name == "m-int8")
            #expect(verified.assignment.counter == 1)
            #expect(verified.assignment.package.url == "/v1/artifacts/\(variants[1].sha256)")

            // Unchanged decision: the very same signed assignment, not a new counter.
            let r2 = try decode(CheckInResponse.self, try await client.json(.post, "/v1/devices/dev-1/checkin", req))
            #expect(r2.updates.first?.assignment == update.assignment)
            #expect(r2.timestamp == r1.timestamp)

            // Another device of another class gets another variant; the first one's assignment
            // cannot be used by it.
            var board = ControllerFixture.boardFacts
            board.deviceId = "board-1"
            let r3 = try decode(
                CheckInResponse.self,
                try await client.json(
                    .post, "/v1/devices/board-1/checkin",
                    CheckInRequest(facts: board, installed: [:], agentVersion: "t")))
            let boardUpdate = try #require(r3.updates.first)
            let v3 = try UpdateVerifier.verify(
                catalog: boardUpdate.catalog, assignment: boardUpdate.assignment, timestamp: r3.timestamp!,
                state: trust, deviceId: "board-1", facts: board, now: f.now)
            #expect(v3.variant.name == "m-int4")
            #expect(throws: TrustError.self) {
                try UpdateVerifier.verify(
                    catalog: update.catalog, assignment: update.assignment, timestamp: r3.timestamp!,
                    state: trust, deviceId: "board-1", facts: board, now: f.now)
            }

            let explain = try decode([Explanation].self, try await client.execute(uri: "/v1/devices/dev-1/explain", method: .get))
            #expect(explain.first?.selection.chosen == "m-int8")
            #expect(explain.first?.selection.verdicts.count == 3)

            let rollouts = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get))
            #expect(rollouts.first?.targeted == 2)
        }
    }

    @Test func newReleaseBumpsTheCounter() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let v = try await client.publish(model: "m", variants: [("a", "int8", [1]), ("b", "int8", [2])])
            let classes = try decode([HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get))
            try await client.json(.post, "/v1/releases", NewRelease(catalog: try catalog(f, [v[0]], classes: classes)))
            try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1.0.0", strategy: "all"))
            let req = CheckInRequest(facts: ControllerFixture.vnniFacts, installed: [:], agentVersion: "t")
            _ = try await client.json(.post, "/v1/devices/d/checkin", req)
            try await client.json(
                .post, "/v1/releases", NewRelease(catalog: try catalog(f, [v[1]], classes: classes, serial: 2, version: "2.0.0")))
            try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@2.0.0", strategy: "all"))
            let r = try decode(CheckInResponse.self, try await client.json(.post, "/v1/devices/d/checkin", req))
            let body = try #require(r.updates.first?.assignment.payloadBytes)
            let a = try JSONDecoder().decode(Assignment.self, from: Data(body))
            #expect(a.counter == 2)
            #expect(a.variant == "b")
            let rollouts = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get))
            #expect(rollouts.map(\.state) == [.superseded, .active])
        }
    }

    @Test func releaseSignedByTheDirectorKeyIsRefused() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let v = try await client.publish(model: "m", variants: [("a", "int8", [1])])
            let r = try await client.json(.post, "/v1/releases", NewRelease(catalog: try catalog(f, v, classes: [], signer: .director)))
            #expect(r.status == .unprocessableContent)
            #expect(errorCode(r) == "trust-missingSignature")
            #expect(try decode([ReleaseInfo].self, try await client.execute(uri: "/v1/releases", method: .get)).isEmpty)
        }
    }

    @Test func releaseWithUnregisteredHashOrStaleSerialIsRefused() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            var v = try await client.publish(model: "m", variants: [("a", "int8", [1])])
            try await client.json(.post, "/v1/releases", NewRelease(catalog: try catalog(f, v, classes: [])))
            let stale = try await client.json(
                .post, "/v1/releases", NewRelease(catalog: try catalog(f, v, classes: [], serial: 1, version: "1.0.1")))
            #expect(stale.status == .conflict)
            v[0].sha256 = String(repeating: "b", count: 64)
            let forged = try await client.json(
                .post, "/v1/releases", NewRelease(catalog: try catalog(f, v, classes: [], serial: 2, version: "2")))
            #expect(forged.status == .unprocessableContent)
            #expect(errorCode(forged) == "unknown-variant")
        }
    }

    @Test func variantForAMissingArtifactIsRefused() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            try await client.json(.post, "/v1/models", NewModel(name: "m"))
            let v = CatalogVariant(
                name: "x", sha256: String(repeating: "c", count: 64), size: 3, fileName: "x.onnx", format: "onnx", dtype: "int8")
            let r = try await client.json(.post, "/v1/models/m/variants", NewVariant(variant: v))
            #expect(r.status == .unprocessableContent)
            #expect(errorCode(r) == "unknown-artifact")
            let dup = try await client.json(.post, "/v1/models", NewModel(name: "m"))
            #expect(dup.status == .conflict)
            let traversal = try await client.json(.post, "/v1/models", NewModel(name: "../etc"))
            #expect(traversal.status == .badRequest)
        }
    }

    @Test func deviceOverItsTierBudgetIsHeldNotSentAFullDownload() async throws {
        let tiers = """
            tiers:
              - name: tiny
                budget: 2B
            """
        let f = try ControllerFixture(tiers: tiers); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let v = try await client.publish(model: "m", variants: [("big", "int8", [1, 2, 3, 4, 5])])
            let classes = try decode([HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get))
            try await client.json(.post, "/v1/releases", NewRelease(catalog: try catalog(f, v, classes: classes)))
            try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1.0.0", strategy: "all"))
            let r = try decode(
                CheckInResponse.self,
                try await client.json(
                    .post, "/v1/devices/d/checkin",
                    CheckInRequest(facts: ControllerFixture.vnniFacts, installed: [:], agentVersion: "t")))
            #expect(r.updates.isEmpty)
            #expect(r.held["m"] == "over-budget")
            let device = try decode(DeviceInfo.self, try await client.execute(uri: "/v1/devices/d", method: .get))
            #expect(device.held["m"] == "over-budget")
            let rollouts = try decode([RolloutInfo].self, try await client.execute(uri: "/v1/rollouts", method: .get))
            #expect(rollouts.first?.held == 1)
        }
    }
}
