import Foundation
import Testing
@testable import FleetCore

/// Frugal check-ins in the pure core: the per-device timestamp and its snapshot, the compact
/// envelope, and the wire shapes old agents and controllers still read. Tests are named after
/// the attack they stop; each rejection also leaves the caller's TrustedState as it was.
@Suite struct FrugalCheckInTests {
    typealias F = Fixture

    /// The default catalog and assignment, and a per-device timestamp binding `snapshot` (by default
    /// exactly those two for the fixture device).
    struct Stamped {
        var catalog: Envelope
        var assignment: Envelope
        var snapshot: CheckInSnapshot
        var stamp: CompactEnvelope
        var timestamp: Envelope { stamp.envelope(type: PayloadType.timestamp, role: .timestamp, root: F.rootMetadata()) }
    }

    static func stamped(
        version: UInt64 = 1_750_000_000, expiresAt: Int64 = F.now + F.hour, counter: UInt64 = 7,
        keys: [SigningKey] = [F.timestampKey],
        bind: (inout CheckInSnapshot) -> Void = { _ in }
    ) -> Stamped {
        let b = F.bundle(assignment: { $0.counter = counter })
        let own = CheckInSnapshot(
            deviceId: F.deviceId,
            models: [
                F.model: .init(
                    catalog: b.catalog.payloadDigest,
                    assignment: b.assignment.payloadDigest)
            ])
        var bound = own
        bind(&bound)
        let meta = TimestampMetadata(version: version, expiresAt: expiresAt, catalogs: [:], snapshot: bound.digest)
        return Stamped(
            catalog: b.catalog, assignment: b.assignment, snapshot: own,
            stamp: try! CompactEnvelope.sign(meta, type: PayloadType.timestamp, keys: keys))
    }

    func verify(_ s: Stamped, state: TrustedState, snapshot: CheckInSnapshot? = nil) throws(TrustError) -> VerifiedUpdate {
        try UpdateVerifier.verify(
            catalog: s.catalog, assignment: s.assignment, timestamp: s.timestamp, state: state,
            deviceId: F.deviceId, facts: F.facts, now: F.now, snapshot: snapshot ?? s.snapshot)
    }

    func rejected(
        _ fault: TrustError.Fault, _ s: Stamped, state: TrustedState = Fixture.pinnedState(), snapshot: CheckInSnapshot? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let before = state
        #expect(trustFault { try verify(s, state: state, snapshot: snapshot) } == fault, sourceLocation: sourceLocation)
        #expect(state == before, sourceLocation: sourceLocation)
    }

    // MARK: accepted

    @Test func perDeviceTimestampBindingWhatTheDeviceHoldsIsAccepted() throws {
        let s = Self.stamped()
        let result = try verify(s, state: F.pinnedState())
        #expect(result.state.timestampVersion == 1_750_000_000)
        #expect(result.state.timestampDigest == Digest.sha256Hex(Array(s.stamp.payload.utf8)))
        #expect(result.state.assignmentCounters == [F.model: 7])
        // The same answer read again (several models share one timestamp) is accepted too.
        let again = try verify(s, state: result.state)
        #expect(again.state == result.state)
    }

    @Test func compactEnvelopeCarriesTheExactSignedBytes() throws {
        let s = Self.stamped()
        let env = s.timestamp
        #expect(env.payloadBytes == Array(s.stamp.payload.utf8))
        #expect(env.signatures.map(\.keyid) == [F.timestampKey.keyID])
        // Through JSON and back, the payload string is byte for byte what was signed.
        let wire = try FleetJSON.encode(s.stamp)
        let back = try FleetJSON.decode(CompactEnvelope.self, from: wire, limit: 1 << 16)
        #expect(back == s.stamp)
        _ = try MetadataVerifier.verify(
            back.envelope(type: PayloadType.timestamp, role: .timestamp, root: F.rootMetadata()),
            type: PayloadType.timestamp, role: .timestamp, root: F.rootMetadata())
        // A signed timestamp of the per-device form stays small whatever the catalog lists.
        print("per-device timestamp: \(wire.count) bytes compact, \(try FleetJSON.encode(env).count) bytes as an Envelope")
        #expect(wire.count < 300)
    }

    // MARK: mix-and-match

    @Test func timestampNamingAnotherCatalogIsMixAndMatch() {
        let s = Self.stamped { $0.models[F.model]?.catalog = Digest.sha256Hex(Array("another catalog".utf8)) }
        rejected(.mixAndMatch, s)
    }

    @Test func timestampBindingAnotherAssignmentIsMixAndMatch() {
        // The controller assigned something new; the answer left it out and the device still holds the old one.
        let s = Self.stamped { $0.models[F.model]?.assignment = Digest.sha256Hex(Array("counter 8".utf8)) }
        rejected(.mixAndMatch, s)
    }

    @Test func answerStrippedOfAModelTheTimestampCoversIsMixAndMatch() {
        let s = Self.stamped {
            $0.models["other-model"] = .init(catalog: String(repeating: "a", count: 64), assignment: String(repeating: "b", count: 64))
        }
        rejected(.mixAndMatch, s)
        // An answer stripped of every model still carries the timestamp: it binds more than nothing.
        let state = F.pinnedState()
        #expect(
            trustFault { try UpdateVerifier.verifyAlone(timestamp: s.timestamp, state: state, deviceId: F.deviceId, now: F.now) }
                == .mixAndMatch)
    }

    @Test func anotherDevicesTimestampIsMixAndMatch() {
        let s = Self.stamped { $0.deviceId = "edge-0002" }
        rejected(.mixAndMatch, s)
        // Even when the other device's snapshot is handed in as this device's.
        var theirs = s.snapshot
        theirs.deviceId = "edge-0002"
        rejected(.mixAndMatch, Self.stamped(), snapshot: theirs)
    }

    @Test func snapshotThatDoesNotDescribeTheEnvelopesIsMixAndMatch() {
        // A caller (or a confused agent) computing the snapshot from other envelopes than it verifies.
        let s = Self.stamped { $0.models[F.model]?.assignment = String(repeating: "c", count: 64) }
        rejected(
            .mixAndMatch, s,
            snapshot: CheckInSnapshot(
                deviceId: F.deviceId,
                models: [
                    F.model: .init(
                        catalog: s.catalog.payloadDigest, assignment: String(repeating: "c", count: 64))
                ]))
    }

    @Test func perDeviceTimestampWithoutASnapshotIsMixAndMatch() {
        let s = Self.stamped()
        let before = F.pinnedState()
        #expect(
            trustFault {
                try UpdateVerifier.verify(
                    catalog: s.catalog, assignment: s.assignment, timestamp: s.timestamp, state: before,
                    deviceId: F.deviceId, facts: F.facts, now: F.now)
            } == .mixAndMatch)
    }

    // MARK: freshness

    @Test func olderPerDeviceTimestampIsRollback() throws {
        let state = try verify(Self.stamped(version: 1_750_000_100), state: F.pinnedState()).state
        rejected(.rollback, Self.stamped(version: 1_750_000_099), state: state)
    }

    @Test func anotherTimestampOfTheSameVersionIsReplay() throws {
        let state = try verify(Self.stamped(version: 1_750_000_100), state: F.pinnedState()).state
        rejected(.replay, Self.stamped(version: 1_750_000_100, expiresAt: F.now + 2 * F.hour), state: state)
    }

    @Test func expiredPerDeviceTimestampIsExpired() {
        rejected(.expired, Self.stamped(expiresAt: F.now - 1))
    }

    @Test func stampSignedByTheDirectorKeyIsBadSignature() {
        rejected(.badSignature, Self.stamped(keys: [F.directorKey]))
    }

    @Test func stampWithoutSignaturesIsMissingSignature() {
        var s = Self.stamped()
        s.stamp.sigs = []
        rejected(.missingSignature, s)
        s.stamp.sigs = ["not base64!"]
        rejected(.badSignature, s)
    }

    @Test func stampWhosePayloadChangedIsBadSignature() {
        var s = Self.stamped()
        s.stamp.payload = s.stamp.payload.replacingOccurrences(of: "1750000000", with: "1750009999")
        rejected(.badSignature, s)
    }

    @Test func emptyAnswerWithAnEmptySnapshotIsAccepted() throws {
        let empty = CheckInSnapshot(deviceId: F.deviceId, models: [:])
        let meta = TimestampMetadata(version: 1_750_000_000, expiresAt: F.now + F.hour, catalogs: [:], snapshot: empty.digest)
        let env = try CompactEnvelope.sign(meta, type: PayloadType.timestamp, keys: [F.timestampKey])
            .envelope(type: PayloadType.timestamp, role: .timestamp, root: F.rootMetadata())
        let next = try UpdateVerifier.verifyAlone(timestamp: env, state: F.pinnedState(), deviceId: F.deviceId, now: F.now)
        #expect(next.timestampVersion == 1_750_000_000)
        #expect(next.assignmentCounters.isEmpty)
    }

    // MARK: snapshot and digests

    @Test func snapshotDigestDependsOnEveryFieldAndNotOnOrder() {
        let a = CheckInSnapshot(
            deviceId: "d", models: ["a": .init(catalog: "1", assignment: "2"), "b": .init(catalog: "3", assignment: "4")])
        #expect(a.text == "edgefleet-snapshot-v1\ndevice d\na 1 2\nb 3 4\n")
        var b = a
        b.models["b"]?.assignment = "5"
        #expect(a.digest != b.digest)
        var c = a
        c.deviceId = "e"
        #expect(a.digest != c.digest)
        #expect(CheckInSnapshot(deviceId: "d", models: [:]).digest != a.digest)
    }

    @Test func factsDigestIsOfTheCanonicalFacts() throws {
        let facts = F.facts
        // Through storage and back (decode, encode), the digest is the same.
        let stored = try FleetJSON.decode(DeviceFacts.self, from: FleetJSON.encode(facts), limit: 1 << 20)
        #expect(stored.digest == facts.digest)
        var changed = facts
        changed.downlinkMbps = 51
        #expect(changed.digest != facts.digest)
        #expect(Digest.isSHA256Hex(facts.digest))
    }

    // MARK: wire shapes

    @Test func oldAgentsRequestStillDecodes() throws {
        let old =
            #"{"agentVersion":"0.0.9","facts":{"arch":"x86_64","cpuFlags":[],"memoryBytes":1,"diskFreeBytes":1,"accelerators":[]},"installed":{}}"#
        let r = try FleetJSON.decode(CheckInRequest.self, from: Data(old.utf8), limit: 1 << 16)
        #expect(!r.isFrugal)
        #expect(r.facts?.arch == "x86_64" && r.agentVersion == "0.0.9" && r.holds == nil)
    }

    @Test func frugalRequestLeavesOutWhatIsKnown() throws {
        var r = CheckInRequest(
            facts: nil, installed: [:], agentVersion: nil, factsDigest: F.facts.digest,
            holds: [F.model: HeldMetadata(catalog: String(repeating: "a", count: 64), counter: 7)],
            rootVersion: 1, timestampVersion: 1_750_000_000)
        r.installedSent = false
        let wire = try FleetJSON.encode(r)
        let keys = try #require(try JSONSerialization.jsonObject(with: wire) as? [String: Any]).keys.sorted()
        #expect(keys == ["factsDigest", "holds", "rootVersion", "timestampVersion"])
        #expect(try FleetJSON.decode(CheckInRequest.self, from: wire, limit: 1 << 16) == r)
        // An empty installed map that is sent stays sent: "nothing installed" is not "unchanged".
        r.installedSent = true
        #expect(try FleetJSON.decode(CheckInRequest.self, from: FleetJSON.encode(r), limit: 1 << 16).installedSent)
    }

    @Test func compactAnswerLeavesOutWhatTheAgentDoesNotUse() throws {
        let stamp = Self.stamped().stamp
        let r = CheckInResponse(
            deviceId: F.deviceId, hardwareClass: "x86-avx2", tier: "fibre", rootChain: [], timestamp: nil,
            updates: [], held: [:], pollSeconds: 30, unchanged: [F.model], stamp: stamp, compact: true)
        let wire = try FleetJSON.encode(r)
        let keys = try #require(try JSONSerialization.jsonObject(with: wire) as? [String: Any]).keys.sorted()
        #expect(keys == ["pollSeconds", "stamp", "unchanged"])
        let back = try FleetJSON.decode(CheckInResponse.self, from: wire, limit: 1 << 16)
        #expect(back.unchanged == [F.model] && back.stamp == stamp && back.updates.isEmpty && back.rootChain.isEmpty)
        // The full answer old agents read keeps every key they need.
        var full = r
        full.compact = false
        let fullKeys = try #require(try JSONSerialization.jsonObject(with: FleetJSON.encode(full)) as? [String: Any]).keys
        #expect(Set(["deviceId", "rootChain", "updates", "held", "pollSeconds"]).isSubset(of: Set(fullKeys)))
    }

    @Test func fleetWideTimestampEncodesAsBefore() throws {
        let ts = TimestampMetadata(version: 3, expiresAt: 10, catalogs: ["m@1": "ab"])
        #expect(
            String(decoding: try FleetJSON.encode(ts), as: UTF8.self)
                == #"{"catalogs":{"m@1":"ab"},"expiresAt":10,"type":"timestamp","version":3}"#)
        // The fleet-wide form may not leave its catalogs out.
        #expect(
            metadataCode {
                _ = try FleetJSON.decode(
                    TimestampMetadata.self, from: Data(#"{"expiresAt":10,"type":"timestamp","version":3}"#.utf8), limit: 1 << 10)
            } == .malformed)
    }
}
