import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization
import Testing
@testable import FleetController

/// The controller's side of frugal check-ins, through the router: what it leaves out, what it asks
/// to have sent again, and that what it answers verifies on the device with what the device holds.
@Suite("Frugal check-ins (controller)")
struct FrugalCheckInControllerTests {
    /// What a device holds after reading answers, as the agent keeps it.
    struct Device {
        var id: String
        var facts: DeviceFacts
        var trust: TrustedState
        var held: [String: (catalog: Envelope, assignment: Envelope)] = [:]

        var holds: [String: HeldMetadata] {
            held.mapValues { h in
                HeldMetadata(
                    catalog: h.catalog.payloadDigest,
                    counter: (try? FleetJSON.decode(Assignment.self, from: Data(h.assignment.payloadBytes ?? []), limit: 1 << 16))?.counter
                        ?? 0)
            }
        }

        /// `installed` nil: left out (unchanged since the last check-in).
        func request(sendFacts: Bool, installed: [String: String]? = [:]) -> CheckInRequest {
            var r = CheckInRequest(
                facts: sendFacts ? facts : nil, installed: installed ?? [:], agentVersion: sendFacts ? "t" : nil,
                factsDigest: sendFacts ? nil : facts.digest, holds: held.isEmpty ? nil : holds,
                rootVersion: trust.root.version, timestampVersion: trust.timestampVersion)
            r.installedSent = installed != nil
            return r
        }

        /// Reads an answer as the agent does; throws the first fault.
        mutating func read(_ r: CheckInResponse, now: Int64) throws {
            var models = r.updates.map { ($0.model, $0.catalog, $0.assignment) }
            for (m, a) in r.reassigned { models.append((m, try #require(held[m]).catalog, a)) }
            for m in r.unchanged { let h = try #require(held[m]); models.append((m, h.catalog, h.assignment)) }
            let stamp = try #require(r.stamp).envelope(type: PayloadType.timestamp, role: .timestamp, root: trust.root)
            let snapshot = CheckInSnapshot(
                deviceId: id,
                models: Dictionary(
                    uniqueKeysWithValues: models.map {
                        ($0.0, CheckInSnapshot.Entry(catalog: $0.1.payloadDigest, assignment: $0.2.payloadDigest))
                    }))
            for (m, c, a) in models {
                var f = facts
                f.deviceId = id
                let v = try UpdateVerifier.verify(
                    catalog: c, assignment: a, timestamp: stamp, state: trust, deviceId: id, facts: f,
                    now: now, snapshot: snapshot)
                trust = v.state
                held[m] = (c, a)
            }
        }
    }

    func catalog(_ f: ControllerFixture, _ variants: [CatalogVariant], classes: [HardwareClass], version: String, serial: Int) throws
        -> Envelope
    {
        let c = ReleaseCatalog(
            model: "m", version: version, serial: serial, expiresAt: f.now + 86_400 * 30, variants: variants,
            hardwareClasses: classes)
        return try Envelope.sign(c, type: PayloadType.catalog, keys: [f.keys[.release]!])
    }

    func device(_ client: some TestClientProtocol, _ id: String) async throws -> DeviceInfo? {
        let r = try await client.execute(uri: "/v1/devices/\(id)", method: .get)
        return r.status == .ok ? try decode(DeviceInfo.self, r) : nil
    }

    func checkIn(_ client: some TestClientProtocol, _ d: Device, _ req: CheckInRequest) async throws -> (CheckInResponse, Int, Int) {
        let r = try await client.json(.post, "/v1/devices/\(d.id)/checkin", req)
        #expect(r.status == .ok)
        return (try decode(CheckInResponse.self, r), try FleetJSON.encode(req).count, r.body.readableBytes)
    }

    @Test func idleCheckInCarriesOnlyTheTimestampAndVerifiesWithWhatTheDeviceHolds() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let v = try await client.publish(
                model: "m",
                variants: [
                    ("m-fp32", "fp32", [1, 2, 3, 4]), ("m-fp16", "fp16", [9, 9]),
                    ("m-int8", "int8", [5, 6]), ("m-int4", "int4", [7])
                ])
            let classes = try decode([HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get))
            try await client.json(.post, "/v1/releases", NewRelease(catalog: try catalog(f, v, classes: classes, version: "1", serial: 1)))
            try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1", strategy: "all"))
            var d = Device(
                id: "dev-1", facts: ControllerFixture.vnniFacts, trust: try TrustedState(pinning: try f.rootEnvelope, now: f.now))
            d.facts.deviceId = "dev-1"

            // First frugal check-in: facts sent, nothing held: the whole catalog and assignment.
            let (first, _, _) = try await checkIn(client, d, d.request(sendFacts: true))
            #expect(first.updates.count == 1 && first.unchanged.isEmpty && first.timestamp == nil && first.resend == nil)
            #expect(first.retry != nil)
            try d.read(first, now: f.now)
            let assigned = try FleetJSON.decode(Assignment.self, from: Data(d.held["m"]!.assignment.payloadBytes!), limit: 1 << 16)
            #expect(assigned.variant == "m-int8")
            let v1 = d.trust.timestampVersion
            #expect(v1 >= UInt64(f.now))

            // Installed: the next check-in says so; the same assignment is left out.
            let (installedNow, _, _) = try await checkIn(client, d, d.request(sendFacts: false, installed: ["m": assigned.sha256]))
            #expect(installedNow.unchanged == ["m"] && installedNow.updates.isEmpty)
            try d.read(installedNow, now: f.now)

            // Idle: a digest for the facts, installed left out (unchanged since the last check-in).
            let (idle, reqBytes, respBytes) = try await checkIn(client, d, d.request(sendFacts: false, installed: nil))
            #expect(idle.updates.isEmpty && idle.reassigned.isEmpty && idle.unchanged == ["m"] && idle.retry == nil)
            #expect(idle.rootChain.isEmpty && idle.timestamp == nil)
            try d.read(idle, now: f.now)
            #expect(d.trust.timestampVersion == v1 + 2)
            print("idle check-in through the router: request \(reqBytes) bytes, answer \(respBytes) bytes, \(v.count) variants")
            #expect(reqBytes + respBytes <= 600)
            // The controller kept the installed artifact the device reported before.
            let stored = try await device(client, "dev-1")
            #expect(stored?.installed["m"] == assigned.sha256)
            #expect(stored?.agentVersion == "t")

            // A device that claims a later timestamp version gets a later one still.
            var ahead = d
            ahead.trust.timestampVersion = UInt64(f.now) + 500
            let (later, _, _) = try await checkIn(client, ahead, ahead.request(sendFacts: false, installed: nil))
            let ts = try FleetJSON.decode(TimestampMetadata.self, from: Data(try #require(later.stamp).payload.utf8), limit: 1 << 16)
            #expect(ts.version == UInt64(f.now) + 501)

            // Another class: the facts come again, the catalog is held, only the assignment changes.
            var board = d
            board.facts = ControllerFixture.boardFacts
            board.facts.deviceId = "dev-1"
            let (moved, _, _) = try await checkIn(client, board, board.request(sendFacts: true, installed: ["m": assigned.sha256]))
            #expect(moved.updates.isEmpty && moved.reassigned.keys.sorted() == ["m"] && moved.retry != nil)
            try board.read(moved, now: f.now)
            #expect(
                try FleetJSON.decode(Assignment.self, from: Data(board.held["m"]!.assignment.payloadBytes!), limit: 1 << 16).variant
                    == "m-int4")

            // A new release: a new catalog, sent whole.
            try await client.json(
                .post, "/v1/releases", NewRelease(catalog: try catalog(f, [v[0], v[2]], classes: classes, version: "2", serial: 2)))
            try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@2", strategy: "all"))
            d.trust = board.trust
            let (next, _, _) = try await checkIn(client, d, d.request(sendFacts: true, installed: ["m": assigned.sha256]))
            #expect(next.updates.count == 1 && next.unchanged.isEmpty)
            try d.read(next, now: f.now)
        }
    }

    @Test func anIdleCheckInMovesOnlyTheTimeSeenAndAChangeIsStillWrittenAtOnce() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        let time = Mutex(f.now)
        let (app, _) = try await f.parts(clock: { time.withLock { $0 } })
        try await app.test(.router) { client in
            var d = Device(
                id: "dev-4", facts: ControllerFixture.vnniFacts, trust: try TrustedState(pinning: try f.rootEnvelope, now: f.now))
            d.facts.deviceId = "dev-4"
            _ = try await checkIn(client, d, d.request(sendFacts: true))
            let first = try #require(try await device(client, "dev-4"))
            #expect(first.lastSeen == f.now)
            // Idle a minute later: the time seen moves, nothing else does.
            time.withLock { $0 += 60 }
            _ = try await checkIn(client, d, d.request(sendFacts: false, installed: nil))
            var expected = first
            expected.lastSeen = f.now + 60
            #expect(try await device(client, "dev-4") == expected)
            // What the device runs changed: written with the time.
            time.withLock { $0 += 60 }
            let sha = String(repeating: "c", count: 64)
            _ = try await checkIn(client, d, d.request(sendFacts: false, installed: ["m": sha]))
            let changed = try #require(try await device(client, "dev-4"))
            #expect(changed.installed == ["m": sha] && changed.lastSeen == f.now + 120)
        }
    }

    /// The digest a frugal check-in is compared with is the one stored with the facts; a row
    /// stored without one (before the column existed) is worked out from its facts, and the
    /// digest is stored at the device's next write.
    @Test func theFactsDigestIsStoredWithTheFactsAndWorkedOutForOlderRows() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        let (app, driver) = try await f.parts()
        let store = try #require(driver.store as? SQLStore)
        @Sendable func stored() async throws -> String? {
            try await store.db.scalar("SELECT facts_digest AS d FROM devices WHERE id = ?", ["dev-5"]).text
        }
        try await app.test(.router) { client in
            var d = Device(
                id: "dev-5", facts: ControllerFixture.vnniFacts, trust: try TrustedState(pinning: try f.rootEnvelope, now: f.now))
            d.facts.deviceId = "dev-5"
            _ = try await checkIn(client, d, d.request(sendFacts: true))
            #expect(try await stored() == d.facts.digest)

            // Stored before digests were kept: worked out from the facts.
            try await store.db.execute("UPDATE devices SET facts_digest = NULL WHERE id = ?", ["dev-5"])
            let (older, _, _) = try await checkIn(client, d, d.request(sendFacts: false))
            #expect(older.resend == nil)

            // The stored digest is the one compared (a wrong one asks for the facts again).
            try await store.db.execute("UPDATE devices SET facts_digest = ? WHERE id = ?", [String(repeating: "0", count: 64), "dev-5"])
            let (wrong, _, _) = try await checkIn(client, d, d.request(sendFacts: false))
            #expect(wrong.resend == .factsMismatch)

            // New facts: their digest is stored with them.
            var board = d
            board.facts = ControllerFixture.boardFacts
            board.facts.deviceId = "dev-5"
            _ = try await checkIn(client, board, board.request(sendFacts: true))
            #expect(try await stored() == board.facts.digest)
            let (frugal, _, _) = try await checkIn(client, board, board.request(sendFacts: false))
            #expect(frugal.resend == nil)
        }
    }

    @Test func unknownFactsOrInstalledAskForTheWholeCheckIn() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let v = try await client.publish(model: "m", variants: [("m-int8", "int8", [5, 6])])
            let classes = try decode([HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get))
            try await client.json(.post, "/v1/releases", NewRelease(catalog: try catalog(f, v, classes: classes, version: "1", serial: 1)))
            try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1", strategy: "all"))
            var d = Device(
                id: "dev-2", facts: ControllerFixture.vnniFacts, trust: try TrustedState(pinning: try f.rootEnvelope, now: f.now))
            d.facts.deviceId = "dev-2"

            // Never seen: a digest alone is not enough, and nothing is stored for it.
            let (unknown, _, _) = try await checkIn(client, d, d.request(sendFacts: false))
            #expect(unknown.resend == .unknownFacts && unknown.updates.isEmpty && unknown.stamp == nil)
            #expect(try await device(client, "dev-2") == nil)

            let (first, _, _) = try await checkIn(client, d, d.request(sendFacts: true))
            try d.read(first, now: f.now)

            // A digest of other facts (another device's, or facts that changed without being sent).
            var confused = d
            confused.facts = ControllerFixture.boardFacts
            confused.facts.deviceId = "dev-2"
            let (mismatch, _, _) = try await checkIn(client, confused, confused.request(sendFacts: false))
            #expect(mismatch.resend == .factsMismatch && mismatch.updates.isEmpty && mismatch.unchanged.isEmpty)
            #expect(try await device(client, "dev-2")?.hardwareClass == "x86-avx512-vnni")

            // Installed left out by a device the controller never stored: it cannot tell what runs.
            var stranger = d
            stranger.id = "dev-3"
            stranger.facts.deviceId = "dev-3"
            let (unknownInstalled, _, _) = try await checkIn(client, stranger, stranger.request(sendFacts: true, installed: nil))
            #expect(unknownInstalled.resend == .unknownInstalled && unknownInstalled.updates.isEmpty)

            // A held assignment that is not the current one: sent again (the catalog is the same), no resend.
            var stale = d.request(sendFacts: false, installed: nil)
            stale.holds?["m"]?.counter = 99
            let (whole, _, _) = try await checkIn(client, d, stale)
            #expect(whole.resend == nil && whole.reassigned.keys.sorted() == ["m"] && whole.unchanged.isEmpty)

            // Hints that are not digests are refused before anything is read.
            var bad = d.request(sendFacts: false)
            bad.holds = ["m": HeldMetadata(catalog: "../../etc", counter: 1)]
            let refused = try await client.json(.post, "/v1/devices/dev-2/checkin", bad)
            #expect(refused.status == .badRequest && errorCode(refused) == "invalid-holds")
            bad = d.request(sendFacts: false)
            bad.factsDigest = "x"
            let refused2 = try await client.json(.post, "/v1/devices/dev-2/checkin", bad)
            #expect(refused2.status == .badRequest && errorCode(refused2) == "invalid-facts-digest")
        }
    }

    @Test func oldAgentsGetTheFullAnswer() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let v = try await client.publish(model: "m", variants: [("m-int8", "int8", [5, 6])])
            let classes = try decode([HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get))
            try await client.json(.post, "/v1/releases", NewRelease(catalog: try catalog(f, v, classes: classes, version: "1", serial: 1)))
            try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1", strategy: "all"))
            // The request body of agents before frugal check-ins, byte for byte.
            let old =
                #"{"agentVersion":"0.0.9","facts":{"accelerators":[],"arch":"x86_64","cpuFlags":["avx2","fma","avx512f","avx512_vnni"],"diskFreeBytes":68719476736,"downlinkMbps":300,"memoryBytes":17179869184,"metered":false},"installed":{}}"#
            let r = try await client.raw(.post, "/v1/devices/old-1/checkin", old)
            #expect(r.status == .ok)
            let body = try #require(try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any])
            for key in ["deviceId", "rootChain", "updates", "held", "pollSeconds", "timestamp"] { #expect(body[key] != nil, "\(key)") }
            #expect(body["stamp"] == nil)
            let answer = try decode(CheckInResponse.self, r)
            let trust = try TrustedState(pinning: try f.rootEnvelope, now: f.now)
            var facts = try FleetJSON.decode(CheckInRequest.self, from: Data(old.utf8), limit: 1 << 16).facts!
            facts.deviceId = "old-1"
            let u = try #require(answer.updates.first)
            _ = try UpdateVerifier.verify(
                catalog: u.catalog, assignment: u.assignment, timestamp: try #require(answer.timestamp),
                state: trust, deviceId: "old-1", facts: facts, now: f.now)
            // A request with neither facts nor the frugal fields is refused.
            let none = try await client.raw(.post, "/v1/devices/old-1/checkin", #"{"installed":{}}"#)
            #expect(none.status == .badRequest && errorCode(none) == "missing-facts")
        }
    }

    @Test func rootChainComesOnlyWhenTheDeviceIsBehind() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        let newRoot = SigningKey(role: .root)
        var keys = f.keys
        keys[.root] = newRoot
        let good = try Envelope.sign(
            RootMetadata(version: 2, expiresAt: f.now + 86_400 * 365, roleKeys: keys), type: PayloadType.root,
            keys: [f.keys[.root]!, newRoot])
        try await f.app().test(.router) { client in
            #expect(try await client.json(.post, "/v1/root", RootRotation(root: good)).status == .created)
            var d = Device(
                id: "dev-r", facts: ControllerFixture.vnniFacts, trust: try TrustedState(pinning: try f.rootEnvelope, now: f.now))
            d.facts.deviceId = "dev-r"
            let (behind, _, _) = try await checkIn(client, d, d.request(sendFacts: true))
            #expect(behind.rootChain == [good])
            try d.trust.rotate(through: behind.rootChain, now: f.now)
            #expect(d.trust.root.version == 2)
            let (current, _, _) = try await checkIn(client, d, d.request(sendFacts: false, installed: nil))
            #expect(current.rootChain.isEmpty && current.resend == nil)
        }
    }
}
