import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import Testing
@testable import FleetController

/// A controller that enforces access, driven through the router. The TLS client certificate is
/// simulated: the test's peer source reads the fingerprint from `X-Test-Peer` (the real source
/// reads the validated certificate from the TLS channel; the integration tests cover that).
final class ManualClock: Sendable {
    let value = Atomic<Int64>(1_800_000_000)
}

struct AccessFixture {
    let f: ControllerFixture
    let clock = ManualClock()
    static let peerHeader = HTTPField.Name("X-Test-Peer")!

    init() throws { f = try ControllerFixture() }

    func app(mode: AccessOptions.Mode = .enforced, checkInBurst: Int = 30) async throws -> some ApplicationProtocol {
        var options = ControllerOptions(
            dataDirectory: f.dir + "/data", host: "127.0.0.1", port: 0, keysDirectory: f.dir + "/keys",
            configDirectory: f.configDir, rolloutTickSeconds: nil)
        options.access = AccessOptions(mode: mode, checkInBurst: checkInBurst, checkInsPerMinute: 1)
        options.access.peerCertificates = { request, _ in request.headers[Self.peerHeader].map { PeerCertificate(fingerprint: $0) } }
        let clock = self.clock
        return try await Controller.makeApplication(
            options: options, logger: Logger(label: "test"), clock: { clock.value.load(ordering: .relaxed) }
        ).0
    }

    var now: Int64 { clock.value.load(ordering: .relaxed) }
    func advance(_ seconds: Int64) { clock.value.add(seconds, ordering: .relaxed) }

    /// The admin token the controller wrote on its first start.
    var adminToken: String {
        get throws {
            try String(contentsOfFile: f.dir + "/data/" + AdminBootstrap.fileName, encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines)
        }
    }

    func cleanup() { f.cleanup() }
}

func bearer(_ token: String, peer: String? = nil) -> HTTPFields {
    var h = HTTPFields()
    h[.authorization] = "Bearer \(token)"
    if let peer { h[AccessFixture.peerHeader] = peer }
    return h
}

func peer(_ fingerprint: String) -> HTTPFields {
    var h = HTTPFields()
    h[AccessFixture.peerHeader] = fingerprint
    return h
}

extension TestClientProtocol {
    func token(_ admin: String, name: String, role: OperatorRole, expiresIn: Int64? = nil) async throws -> CreatedAPIToken {
        let r = try await json(
            .post, "/v1/tokens", NewAPIToken(name: name, role: role, expiresInSeconds: expiresIn), headers: bearer(admin))
        #expect(r.status == .created)
        return try decode(CreatedAPIToken.self, r)
    }

    func enrollmentToken(_ admin: String, _ body: NewEnrollmentToken = NewEnrollmentToken()) async throws -> String {
        let r = try await json(.post, "/v1/enrollment-tokens", body, headers: bearer(admin))
        #expect(r.status == .created)
        return try decode(CreatedEnrollmentToken.self, r).token
    }

    func enroll(_ device: String, token: String, fingerprint: String?) async throws -> TestResponse {
        var facts = ControllerFixture.vnniFacts
        facts.deviceId = device
        return try await json(
            .post, "/v1/enroll", EnrollmentRequest(deviceId: device, token: token, facts: facts),
            headers: fingerprint.map(peer) ?? [:])
    }

    func checkIn(_ device: String, fingerprint: String?) async throws -> TestResponse {
        try await json(
            .post, "/v1/devices/\(device)/checkin",
            CheckInRequest(facts: ControllerFixture.vnniFacts, installed: [:], agentVersion: "t"),
            headers: fingerprint.map(peer) ?? [:])
    }
}

let fpA = String(repeating: "a", count: 64)
let fpB = String(repeating: "b", count: 64)

@Suite("Access: operator tokens, roles, enrollment, device identities, audit, limits")
struct AuthTests {
    /// Every route the controller registers, with the access it declares where it is registered. A
    /// route added without updating this table fails here: who may call it is decided on purpose.
    static let declaredAccess: [(HTTPRequest.Method, String, AccessPolicy.Requirement)] = [
        (.get, "/healthz", .open),
        (.get, "/metrics", .open),
        (.get, "/v1/root", .open),
        (.post, "/v1/devices/{id}/checkin", .checkIn),
        (.post, "/v1/devices/{id}/events", .device),
        (.put, "/v1/artifacts", .role(.operator)),
        (.get, "/v1/artifact-quarantine", .role(.viewer)),
        (.post, "/v1/artifact-quarantine/scrub", .role(.operator)),
        (.get, "/v1/artifacts/{sha}", .artifact),
        (.head, "/v1/artifacts/{sha}", .artifact),
        (.get, "/v1/config/hardware-classes", .role(.viewer)),
        (.get, "/v1/config/bandwidth-tiers", .role(.viewer)),
        (.post, "/v1/models", .role(.operator)),
        (.get, "/v1/models", .role(.viewer)),
        (.get, "/v1/models/{model}", .role(.viewer)),
        (.post, "/v1/models/{model}/variants", .role(.operator)),
        (.get, "/v1/models/{model}/variants", .role(.viewer)),
        (.post, "/v1/releases", .role(.operator)),
        (.get, "/v1/releases", .role(.viewer)),
        (.get, "/v1/releases/{id}/packages", .role(.viewer)),
        (.get, "/v1/releases/{id}", .role(.viewer)),
        (.post, "/v1/rollouts", .role(.operator)),
        (.get, "/v1/rollouts/{rid}", .role(.viewer)),
        (.post, "/v1/rollouts/{rid}/promote", .role(.operator)),
        (.post, "/v1/rollouts/{rid}/pause", .role(.operator)),
        (.post, "/v1/rollouts/{rid}/resume", .role(.operator)),
        (.post, "/v1/rollouts/{rid}/abort", .role(.operator)),
        (.post, "/v1/rollouts/{rid}/retry", .role(.operator)),
        (.get, "/v1/policies", .role(.viewer)),
        (.get, "/v1/policies/{name}", .role(.viewer)),
        (.get, "/v1/rollouts", .role(.viewer)),
        (.get, "/v1/devices", .role(.viewer)),
        (.post, "/v1/devices/{id}/labels", .role(.operator)),
        (.get, "/v1/devices/{id}", .role(.viewer)),
        (.get, "/v1/devices/{id}/explain", .role(.viewer)),
        (.get, "/v1/devices/{id}/events", .role(.viewer)),
        (.get, "/v1/status", .role(.viewer)),
        (.get, "/v1/models/{model}/perf", .role(.viewer)),
        (.post, "/v1/models/{model}/trials", .role(.operator)),
        (.get, "/v1/models/{model}/trials", .role(.viewer)),
        (.get, "/v1/models/{model}/variants/{name}", .role(.viewer)),
        (.post, "/v1/models/{model}/variants/build", .role(.operator)),
        (.get, "/", .role(.viewer)),
        (.get, "/login", .open),
        (.post, "/login", .open),
        (.get, "/logout", .open),
        (.get, "/v1/rollouts/{rid}/history", .role(.viewer)),
        (.post, "/v1/tokens", .role(.admin)),
        (.get, "/v1/tokens", .role(.admin)),
        (.post, "/v1/tokens/{tid}/revoke", .role(.admin)),
        (.post, "/v1/enrollment-tokens", .role(.admin)),
        (.get, "/v1/enrollment-tokens", .role(.admin)),
        (.post, "/v1/enroll", .enrollment),
        (.get, "/v1/device-identities", .role(.viewer)),
        (.get, "/v1/device-identities/{id}", .role(.viewer)),
        (.post, "/v1/devices/{id}/approve", .role(.admin)),
        (.post, "/v1/devices/{id}/revoke", .role(.admin)),
        (.get, "/v1/audit", .role(.admin)),
        (.post, "/v1/root", .role(.admin)),
        (.get, "/v1/root/info", .role(.viewer))
    ]

    @Test func everyRouteDeclaresTheAccessOfTheTable() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        let registered = try await a.f.routeTable()
        #expect(Set(registered).count == registered.count, "a route is registered twice")
        let expected = Set(Self.declaredAccess.map { RouteTable.Entry(method: $0.0, path: $0.1, requirement: $0.2) })
        #expect(Set(registered).subtracting(expected).isEmpty, "routes missing from the table: \(Set(registered).subtracting(expected))")
        #expect(expected.subtracting(registered).isEmpty, "routes in the table not registered: \(expected.subtracting(registered))")
        // A device's routes name the device the guard checks the certificate against.
        for e in registered where e.requirement == .device || e.requirement == .checkIn {
            #expect(e.path.contains("{id}"), "\(e)")
        }
    }

    /// The guards are really on the routes: every registered route, called without credentials and
    /// then with a viewer's token, is refused exactly as its requirement says, before its handler.
    @Test func everyRouteIsGuardedAsItDeclares() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        let registered = try await a.f.routeTable()
        try await a.app().test(.router) { client async throws in
            let viewer = try await client.token(try a.adminToken, name: "dash", role: .viewer)
            let refusals: Set<String> = ["unauthenticated", "client-certificate-required", "insufficient-role"]
            for e in registered {
                let path = e.path.replacingOccurrences(of: "{sha}", with: String(repeating: "0", count: 64))
                    .replacingOccurrences(of: "{id}", with: "d1").replacingOccurrences(of: "{rid}", with: "1")
                    .replacingOccurrences(of: "{model}", with: "m").replacingOccurrences(of: "{name}", with: "n")
                    .replacingOccurrences(of: "{tid}", with: "1")
                let anonymous = errorCode(try await client.execute(uri: path, method: e.method))
                let asViewer = errorCode(try await client.execute(uri: path, method: e.method, headers: bearer(viewer.token)))
                switch e.requirement {
                case .open, .enrollment:
                    #expect(!refusals.contains(anonymous ?? ""), "\(e): \(anonymous ?? "-")")
                case .device, .checkIn:
                    #expect(anonymous == "client-certificate-required", "\(e)")
                case .artifact:
                    #expect(anonymous == "unauthenticated", "\(e)")
                    #expect(!refusals.contains(asViewer ?? ""), "\(e): \(asViewer ?? "-")")
                case .role(let role):
                    #expect(anonymous == "unauthenticated", "\(e)")
                    if role == .viewer {
                        #expect(!refusals.contains(asViewer ?? ""), "\(e): \(asViewer ?? "-")")
                    } else {
                        #expect(asViewer == "insufficient-role", "\(e)")
                    }
                }
            }
        }
    }

    @Test func operatorTokenWithoutTheNeededRoleChangesNothing() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            let viewer = try await client.token(admin, name: "dash", role: .viewer)
            let op = try await client.token(admin, name: "ci", role: .operator)

            let refused = try await client.json(.post, "/v1/models", NewModel(name: "m"), headers: bearer(viewer.token))
            #expect(refused.status == .forbidden)
            #expect(errorCode(refused) == "insufficient-role")
            let models = try await client.execute(uri: "/v1/models", method: .get, headers: bearer(viewer.token))
            #expect(models.status == .ok)
            #expect(try decode([ModelInfo].self, models).isEmpty)

            // An operator changes the fleet but not access.
            #expect(try await client.json(.post, "/v1/models", NewModel(name: "m"), headers: bearer(op.token)).status == .created)
            let escalate = try await client.json(.post, "/v1/tokens", NewAPIToken(name: "me2", role: .admin), headers: bearer(op.token))
            #expect(escalate.status == .forbidden)
            #expect(errorCode(escalate) == "insufficient-role")
            let revoke = try await client.json(.post, "/v1/devices/d1/revoke", [String: String](), headers: bearer(op.token))
            #expect(errorCode(revoke) == "insufficient-role")
            // Spellings of an admin path that the policy table might read differently from the router.
            for path in ["/v1/%74okens", "/v1/./tokens", "/v1/x/../tokens", "/v1/tokens/", "//v1/tokens", "/V1/tokens"] {
                let r = try await client.json(.post, path, NewAPIToken(name: "sneaky", role: .admin), headers: bearer(op.token))
                #expect(r.status != .created, "\(path)")
            }
            let tokens = try decode([APITokenInfo].self, try await client.execute(uri: "/v1/tokens", method: .get, headers: bearer(admin)))
            #expect(tokens.map(\.name).sorted() == ["bootstrap-admin", "ci", "dash"])
        }
    }

    @Test func callsWithoutAUsableTokenAreUnauthenticated() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            #expect(try await errorCode(client.execute(uri: "/v1/devices", method: .get)) == "unauthenticated")
            #expect(try await errorCode(client.execute(uri: "/v1/devices", method: .get, headers: bearer("efop_nope"))) == "invalid-token")
            #expect(
                try await errorCode(client.execute(uri: "/v1/devices", method: .get, headers: bearer(String(repeating: "x", count: 5000))))
                    == "invalid-token")
            // X-Fleet-Actor is not a credential when access is enforced.
            #expect(
                try await client.execute(uri: "/v1/devices", method: .get, headers: [HTTPField.Name("X-Fleet-Actor")!: "root"]).status
                    == .unauthorized)

            let shortLived = try await client.token(admin, name: "temp", role: .viewer, expiresIn: 60)
            #expect(try await client.execute(uri: "/v1/devices", method: .get, headers: bearer(shortLived.token)).status == .ok)
            a.advance(61)
            #expect(
                try await errorCode(client.execute(uri: "/v1/devices", method: .get, headers: bearer(shortLived.token))) == "token-expired")

            let revoked = try await client.token(admin, name: "gone", role: .admin)
            let r = try await client.json(.post, "/v1/tokens/\(revoked.info.id)/revoke", [String: String](), headers: bearer(admin))
            #expect(r.status == .ok)
            let after = try await client.execute(uri: "/v1/tokens", method: .get, headers: bearer(revoked.token))
            #expect(after.status == .unauthorized)
            #expect(errorCode(after) == "token-revoked")
            // The secret is never stored or listed: only its hash's prefix as id.
            let body = String(buffer: try await client.execute(uri: "/v1/tokens", method: .get, headers: bearer(admin)).body)
            #expect(!body.contains(revoked.token) && !body.contains(admin))
        }
    }

    @Test func enrollmentTokenIsOneTime() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            let token = try await client.enrollmentToken(admin)
            let first = try await client.enroll("dev-a", token: token, fingerprint: fpA)
            #expect(first.status == .created)
            #expect(try decode(DeviceIdentityInfo.self, first).status == .accepted)
            #expect(try await client.checkIn("dev-a", fingerprint: fpA).status == .ok)

            let again = try await client.enroll("dev-b", token: token, fingerprint: fpB)
            #expect(again.status == .forbidden)
            #expect(errorCode(again) == "enrollment-token-used")
            #expect(try await errorCode(client.checkIn("dev-b", fingerprint: fpB)) == "unknown-device-identity")
            let ids = try decode(
                [DeviceIdentityInfo].self, try await client.execute(uri: "/v1/device-identities", method: .get, headers: bearer(admin)))
            #expect(ids.map(\.deviceId) == ["dev-a"])
        }
    }

    @Test func expiredEnrollmentTokenIsRefusedAndStaysUnused() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            let token = try await client.enrollmentToken(admin, NewEnrollmentToken(expiresInSeconds: 3600))
            a.advance(3601)
            let r = try await client.enroll("dev-a", token: token, fingerprint: fpA)
            #expect(r.status == .forbidden)
            #expect(errorCode(r) == "enrollment-token-expired")
            let tokens = try decode(
                [EnrollmentTokenInfo].self, try await client.execute(uri: "/v1/enrollment-tokens", method: .get, headers: bearer(admin)))
            #expect(tokens.count == 1 && tokens[0].usedAt == nil)
            #expect(try await client.execute(uri: "/v1/device-identities/dev-a", method: .get, headers: bearer(admin)).status == .notFound)
            // Made-up tokens and tokens of the wrong kind are refused alike.
            #expect(try await errorCode(client.enroll("dev-a", token: "efen_made-up", fingerprint: fpA)) == "enrollment-token-invalid")
            #expect(try await errorCode(client.enroll("dev-a", token: admin, fingerprint: fpA)) == "enrollment-token-invalid")
        }
    }

    @Test func unknownDeviceIdentityIsRefused() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            // Never enrolled, even with a certificate from the fleet CA.
            #expect(try await errorCode(client.checkIn("dev-x", fingerprint: fpA)) == "unknown-device-identity")
            // Enrolled, but another certificate claims its id; or no certificate at all.
            _ = try await client.enroll("dev-a", token: try await client.enrollmentToken(admin), fingerprint: fpA)
            let stolen = try await client.checkIn("dev-a", fingerprint: fpB)
            #expect(stolen.status == .forbidden)
            #expect(errorCode(stolen) == "identity-mismatch")
            #expect(try await errorCode(client.checkIn("dev-a", fingerprint: nil)) == "client-certificate-required")
            // The id cannot be enrolled again over the live identity.
            let takeover = try await client.enroll("dev-a", token: try await client.enrollmentToken(admin), fingerprint: fpB)
            #expect(errorCode(takeover) == "already-enrolled")
            // Enrollment itself needs the certificate that will be the identity.
            #expect(
                try await errorCode(client.enroll("dev-c", token: try await client.enrollmentToken(admin), fingerprint: nil))
                    == "client-certificate-required")
            // Nothing was registered by the refused calls.
            let devices = try decode([DeviceInfo].self, try await client.execute(uri: "/v1/devices", method: .get, headers: bearer(admin)))
            #expect(devices.isEmpty)
        }
    }

    @Test func boundEnrollmentTokenServesOnlyItsDevice() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            let token = try await client.enrollmentToken(admin, NewEnrollmentToken(deviceId: "dev-a"))
            #expect(try await errorCode(client.enroll("dev-b", token: token, fingerprint: fpB)) == "enrollment-token-wrong-device")
            #expect(try await client.enroll("dev-a", token: token, fingerprint: fpA).status == .created)
        }
    }

    @Test func pendingDeviceGetsNothingUntilApproved() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            let token = try await client.enrollmentToken(admin, NewEnrollmentToken(requireApproval: true))
            #expect(
                try decode(DeviceIdentityInfo.self, try await client.enroll("dev-a", token: token, fingerprint: fpA)).status == .pending)
            #expect(try await errorCode(client.checkIn("dev-a", fingerprint: fpA)) == "device-pending")
            let approved = try await client.json(.post, "/v1/devices/dev-a/approve", [String: String](), headers: bearer(admin))
            #expect(try decode(DeviceIdentityInfo.self, approved).status == .accepted)
            #expect(try await client.checkIn("dev-a", fingerprint: fpA).status == .ok)
        }
    }

    @Test func revokedDeviceGetsNothing() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            _ = try await client.enroll("dev-a", token: try await client.enrollmentToken(admin), fingerprint: fpA)
            #expect(try await client.checkIn("dev-a", fingerprint: fpA).status == .ok)
            let up = try await client.execute(
                uri: "/v1/artifacts", method: .put, headers: bearer(admin), body: ByteBuffer(bytes: [1, 2, 3]))
            let sha = try decode(ArtifactInfo.self, up).sha256
            #expect(try await client.execute(uri: "/v1/artifacts/\(sha)", method: .get, headers: peer(fpA)).status == .ok)

            let r = try await client.json(.post, "/v1/devices/dev-a/revoke", [String: String](), headers: bearer(admin))
            #expect(try decode(DeviceIdentityInfo.self, r).status == .revoked)
            for response in [
                try await client.checkIn("dev-a", fingerprint: fpA),
                try await client.json(.post, "/v1/devices/dev-a/events", EventBatch(events: []), headers: peer(fpA)),
                try await client.execute(uri: "/v1/artifacts/\(sha)", method: .get, headers: peer(fpA))
            ] {
                #expect(response.status == .forbidden)
                #expect(errorCode(response) == "device-revoked")
            }
            // Approval does not undo a revocation: the device must enroll again with a new token.
            #expect(
                try await errorCode(client.json(.post, "/v1/devices/dev-a/approve", [String: String](), headers: bearer(admin)))
                    == "device-revoked")
            // Unknown certificates get no artifacts either.
            #expect(try await client.execute(uri: "/v1/artifacts/\(sha)", method: .get, headers: peer(fpB)).status == .unauthorized)
        }
    }

    @Test func openModeStillRefusesARevokedDevice() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app(mode: .open).test(.router) { client async throws in
            #expect(!FileManager.default.fileExists(atPath: a.f.dir + "/data/" + AdminBootstrap.fileName))
            #expect(try await client.checkIn("dev-a", fingerprint: nil).status == .ok)
            #expect(try await client.json(.post, "/v1/devices/dev-a/revoke", [String: String]()).status == .ok)
            #expect(try await errorCode(client.checkIn("dev-a", fingerprint: nil)) == "device-revoked")
        }
    }

    @Test func auditRecordsWhoDidWhatAndWhen() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            let op = try await client.token(admin, name: "ci", role: .operator)
            let viewer = try await client.token(admin, name: "dash", role: .viewer)
            a.advance(10)
            #expect(try await client.json(.post, "/v1/models", NewModel(name: "m"), headers: bearer(op.token)).status == .created)
            a.advance(10)
            _ = try await client.json(.post, "/v1/models", NewModel(name: "m2"), headers: bearer(viewer.token))
            _ = try await client.json(.post, "/v1/models", NewModel(name: "m"), headers: bearer(op.token))  // exists: 409
            _ = try await client.enroll("dev-a", token: "efen_bad", fingerprint: fpA)
            _ = try await client.execute(uri: "/v1/devices", method: .get, headers: bearer(op.token))  // reads are not audited

            let log = try decode(
                [AuditRecord].self, try await client.execute(uri: "/v1/audit?limit=10", method: .get, headers: bearer(admin)))
            let summary = log.reversed().map {
                "\($0.at - a.now) \($0.actor) \($0.role ?? "-") \($0.method) \($0.path) \($0.status) \($0.outcome)"
            }
            #expect(
                summary == [
                    "-20 token:bootstrap-admin admin POST /v1/tokens 201 ok",
                    "-20 token:bootstrap-admin admin POST /v1/tokens 201 ok",
                    "-10 token:ci operator POST /v1/models 201 ok",
                    "0 token:dash viewer POST /v1/models 403 denied",
                    "0 token:ci operator POST /v1/models 409 rejected",
                    "0 device:dev-a - POST /v1/enroll 403 denied"
                ])
            #expect(log.first?.detail == "enrollment-token-invalid")
            let mine = try decode(
                [AuditRecord].self, try await client.execute(uri: "/v1/audit?actor=token:ci", method: .get, headers: bearer(admin)))
            #expect(mine.count == 2)
            #expect(try await errorCode(client.execute(uri: "/v1/audit", method: .get, headers: bearer(op.token))) == "insufficient-role")
        }
    }

    @Test func checkInsOverTheRateGet429AndTheServerStaysUp() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app(checkInBurst: 3).test(.router) { client async throws in
            let admin = try a.adminToken
            _ = try await client.enroll("dev-a", token: try await client.enrollmentToken(admin), fingerprint: fpA)
            _ = try await client.enroll("dev-b", token: try await client.enrollmentToken(admin), fingerprint: fpB)
            for _ in 0..<3 { #expect(try await client.checkIn("dev-a", fingerprint: fpA).status == .ok) }
            let limited = try await client.checkIn("dev-a", fingerprint: fpA)
            #expect(limited.status == .tooManyRequests)
            #expect(errorCode(limited) == "rate-limited")
            #expect(limited.headers[.retryAfter] == "60")
            // Other devices and the rest of the API are unaffected; the bucket refills with time.
            #expect(try await client.checkIn("dev-b", fingerprint: fpB).status == .ok)
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
            a.advance(60)
            #expect(try await client.checkIn("dev-a", fingerprint: fpA).status == .ok)
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(metrics.contains("edgefleet_access_refused_total{code=\"rate-limited\"} 1"))
        }
    }

    @Test func oversizedOrMalformedAccessRequestsAre4xx() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            let big = "{\"deviceId\":\"d\",\"token\":\"efen_x\",\"facts\":{\"pad\":\"" + String(repeating: "x", count: 70 * 1024) + "\"}}"
            let r = try await client.execute(
                uri: "/v1/enroll", method: .post, headers: [.contentType: "application/json"], body: ByteBuffer(string: big))
            #expect(r.status == .contentTooLarge)
            #expect(
                try await errorCode(
                    client.json(
                        .post, "/v1/tokens", NewAPIToken(name: String(repeating: "n", count: 65), role: .viewer),
                        headers: bearer(admin))) == "invalid-name")
            #expect(
                try await errorCode(
                    client.json(
                        .post, "/v1/enrollment-tokens", NewEnrollmentToken(expiresInSeconds: 365 * 86_400),
                        headers: bearer(admin))) == "invalid-expiry")
            #expect(try await errorCode(client.raw(.post, "/v1/tokens", "{\"name\":\"a\",\"role\":\"root\"}")) == "unauthenticated")
            var headers = bearer(admin)
            headers[.contentType] = "application/json"
            let badRole = try await client.execute(
                uri: "/v1/tokens", method: .post, headers: headers,
                body: ByteBuffer(string: "{\"name\":\"a\",\"role\":\"root\"}"))
            #expect(badRole.status == .badRequest)
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
    }

    @Test func bootstrapAdminTokenIsWrittenOnceOwnerOnly() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        _ = try await a.app()
        let path = a.f.dir + "/data/" + AdminBootstrap.fileName
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let first = try a.adminToken
        #expect(first.hasPrefix("efop_"))
        _ = try await a.app()  // a restart keeps the active admin token
        #expect(try a.adminToken == first)
        // Offline: another admin token straight into the data directory.
        let offline = try await AdminBootstrap.createToken(
            dataDirectory: a.f.dir + "/data", name: "rescue", role: .admin, expiresInSeconds: nil)
        try await a.app().test(.router) { client async throws in
            #expect(try await client.execute(uri: "/v1/tokens", method: .get, headers: bearer(offline.token)).status == .ok)
        }
    }

    @Test func rootRotationIsServedToDevicesAsAChain() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        let f = a.f
        let newRoot = SigningKey(role: .root)
        var keys = f.keys
        keys[.root] = newRoot
        let v2 = RootMetadata(version: 2, expiresAt: f.now + 86_400 * 365, roleKeys: keys)
        let good = try Envelope.sign(v2, type: PayloadType.root, keys: [f.keys[.root]!, newRoot])
        let unsignedByOld = try Envelope.sign(v2, type: PayloadType.root, keys: [newRoot])
        var dropped = keys
        dropped[.director] = SigningKey(role: .director)
        let dropsDirector = try Envelope.sign(
            RootMetadata(version: 2, expiresAt: f.now + 86_400, roleKeys: dropped), type: PayloadType.root,
            keys: [f.keys[.root]!, newRoot])
        try await a.app().test(.router) { client async throws in
            let admin = try a.adminToken
            let op = try await client.token(admin, name: "ci", role: .operator)
            #expect(
                try await errorCode(client.json(.post, "/v1/root", RootRotation(root: good), headers: bearer(op.token)))
                    == "insufficient-role")
            #expect(
                try await errorCode(client.json(.post, "/v1/root", RootRotation(root: unsignedByOld), headers: bearer(admin)))?.hasPrefix(
                    "trust-") == true)
            #expect(
                try await errorCode(client.json(.post, "/v1/root", RootRotation(root: dropsDirector), headers: bearer(admin)))
                    == "online-key-not-in-root")
            let r = try await client.json(.post, "/v1/root", RootRotation(root: good), headers: bearer(admin))
            #expect(r.status == .created)
            #expect(try decode(RootInfo.self, r).version == 2)
            #expect(
                try await errorCode(client.json(.post, "/v1/root", RootRotation(root: good), headers: bearer(admin)))?.hasPrefix("trust-")
                    == true)

            _ = try await client.enroll("dev-a", token: try await client.enrollmentToken(admin), fingerprint: fpA)
            let checkIn = try decode(CheckInResponse.self, try await client.checkIn("dev-a", fingerprint: fpA))
            var trust = try TrustedState(pinning: try f.rootEnvelope, now: f.now)
            try trust.rotate(through: checkIn.rootChain, now: f.now)
            #expect(trust.root.version == 2)
            #expect(try decode(Envelope.self, try await client.execute(uri: "/v1/root", method: .get)) == good)
        }
        // After a restart the controller still serves version 2 and its chain.
        try await a.app().test(.router) { client async throws in
            #expect(try decode(Envelope.self, try await client.execute(uri: "/v1/root", method: .get)) == good)
        }
    }
}
