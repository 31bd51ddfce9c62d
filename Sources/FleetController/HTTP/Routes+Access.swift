import FleetCore
import Foundation
import Hummingbird

/// Access management: operator tokens, enrollment tokens and enrollment, device approval and
/// revocation, the audit log and root rotation. Each route names who may call it (`Audiences`).
struct AccessRoutes: Sendable {
    let store: any AccessStore
    let keys: OnlineKeys
    let options: AccessOptions
    let enrollments: RateLimiter
    let clock: @Sendable () -> Int64

    static let bodyLimit = 64 * 1024
    static let maxAuditLimit = 1000

    func register(_ routes: Audiences) {
        routes.admins.post("/v1/tokens") { request, context in
            let body = try await JSON.decode(NewAPIToken.self, request, limit: Self.bodyLimit)
            guard Name.isValid(body.name), body.name.utf8.count <= 64 else {
                throw APIError(.badRequest, "invalid-name", "a token name is a plain name of at most 64 bytes")
            }
            if let s = body.expiresInSeconds, s <= 0 || s > 10 * 365 * 86_400 {
                throw APIError(.badRequest, "invalid-expiry", "expiresInSeconds must be positive and at most ten years")
            }
            let now = clock()
            let created = try await TokenIssuer.createAPIToken(
                store: store, name: body.name, role: body.role, createdBy: actor(context),
                expiresAt: body.expiresInSeconds.map { now + $0 }, now: now)
            return try JSON.response(created, status: .created)
        }
        routes.admins.get("/v1/tokens") { _, _ in try JSON.response(try await store.apiTokens()) }
        routes.admins.post("/v1/tokens/:tid/revoke") { _, context in
            let id = try context.parameters.require("tid")
            guard try await store.revokeAPIToken(id: id, at: clock()) else { throw APIError(.notFound, "unknown-token", "no token \(id)") }
            return try JSON.response(try await store.apiTokens().first { $0.id == id })
        }

        routes.admins.post("/v1/enrollment-tokens") { request, context in
            let body = try await JSON.decode(NewEnrollmentToken.self, request, limit: Self.bodyLimit)
            if let d = body.deviceId, !Name.isValid(d) {
                throw APIError(.badRequest, "invalid-device-id", "device id '\(d)' is not a valid name")
            }
            let seconds = body.expiresInSeconds ?? options.enrollmentTokenSeconds
            guard seconds > 0, seconds <= options.enrollmentTokenMaxSeconds else {
                throw APIError(
                    .badRequest, "invalid-expiry", "an enrollment token lives between 1 s and \(options.enrollmentTokenMaxSeconds) s")
            }
            if let labels = body.labels {
                try LabelRequests.validate(labels)
            }
            let now = clock()
            let secret = Secret.make(prefix: Secret.enrollmentPrefix)
            let hash = Secret.hash(secret)
            let info = EnrollmentTokenInfo(
                id: Secret.id(ofHash: hash), deviceId: body.deviceId, createdAt: now, createdBy: actor(context),
                expiresAt: now + seconds, requireApproval: body.requireApproval ?? false,
                labels: body.labels?.nilIfEmpty)
            try await store.createEnrollmentToken(hash: hash, info)
            return try JSON.response(CreatedEnrollmentToken(token: secret, info: info), status: .created)
        }
        routes.admins.get("/v1/enrollment-tokens") { _, _ in try JSON.response(try await store.enrollmentTokens()) }

        routes.enrolling.post("/v1/enroll") { request, context in
            let body = try await JSON.decode(EnrollmentRequest.self, request, limit: Self.bodyLimit)
            guard Name.isValid(body.deviceId) else {
                throw APIError(.badRequest, "invalid-device-id", "device id '\(body.deviceId)' is not a valid name")
            }
            let now = clock()
            do {
                if let wait = enrollments.take(body.deviceId) {
                    throw AccessError(
                        .rateLimited, "too many enrollment attempts for \(body.deviceId); retry in \(wait) s", retryAfter: wait)
                }
                guard body.token.hasPrefix(Secret.enrollmentPrefix), body.token.count <= Secret.maxLength else {
                    throw AccessError(.enrollmentTokenInvalid, "not an enrollment token")
                }
                let peer = await options.peerCertificates(request, context)
                if options.mode == .enforced, peer == nil {
                    throw AccessError(.clientCertificateRequired, "enroll over mutual TLS with the device's client certificate")
                }
                let identity = try await store.enroll(
                    tokenHash: Secret.hash(body.token), deviceId: body.deviceId, fingerprint: peer?.fingerprint,
                    facts: body.facts, now: now)
                try await auditEnrollment(
                    body.deviceId, status: 201, outcome: "ok", detail: "\(identity.status.rawValue) with token \(identity.enrollmentToken)")
                context.logger.notice("device enrolled", metadata: ["device": "\(body.deviceId)", "status": "\(identity.status.rawValue)"])
                return try JSON.response(identity, status: .created)
            } catch {
                let api = APIError.from(error)
                try? await auditEnrollment(body.deviceId, status: Int(api.status.code), outcome: "denied", detail: api.code)
                throw error
            }
        }

        routes.viewers.get("/v1/device-identities") { _, _ in try JSON.response(try await store.deviceIdentities()) }
        routes.viewers.get("/v1/device-identities/:id") { _, context in
            let id = try deviceID(context)
            guard let identity = try await store.deviceIdentity(id) else {
                throw APIError(.notFound, "unknown-device", "device \(id) never enrolled")
            }
            return try JSON.response(identity)
        }
        routes.admins.post("/v1/devices/:id/approve") { _, context in
            let id = try deviceID(context)
            guard let current = try await store.deviceIdentity(id) else {
                throw APIError(.notFound, "unknown-device", "device \(id) never enrolled")
            }
            guard current.status != .revoked else {
                throw APIError(.conflict, "device-revoked", "device \(id) is revoked; it must enroll again with a new token")
            }
            return try JSON.response(try await store.setDeviceAccess(id, .accepted, by: actor(context), at: clock()))
        }
        routes.admins.post("/v1/devices/:id/revoke") { _, context in
            let id = try deviceID(context)
            return try JSON.response(try await store.setDeviceAccess(id, .revoked, by: actor(context), at: clock()))
        }

        routes.admins.get("/v1/audit") { request, _ in
            let limit = request.uri.queryParameters.get("limit", as: Int.self) ?? 200
            guard (1...Self.maxAuditLimit).contains(limit) else {
                throw APIError(.badRequest, "invalid-limit", "limit is 1 to \(Self.maxAuditLimit)")
            }
            let actor = request.uri.queryParameters.get("actor")
            return try JSON.response(try await store.audit(limit: limit, actor: actor))
        }

        routes.admins.post("/v1/root") { request, _ in
            let body = try await JSON.decode(RootRotation.self, request, limit: MetadataLimits.envelope)
            let now = clock()
            let next = try keys.history.verifyNext(body.root, now: now, online: [keys.director, keys.timestamp])
            // Stored before it is served: a restart must not forget a root devices may have followed.
            // Two rotations racing to the same version: the store's primary key lets one through.
            try await store.appendRootVersion(next.version, body.root, at: now)
            try keys.history.adopt(body.root, root: next)
            return try JSON.response(rootInfo(), status: .created)
        }
        routes.viewers.get("/v1/root/info") { _, _ in try JSON.response(rootInfo()) }
    }

    private func rootInfo() -> RootInfo {
        let s = keys.history.current
        return RootInfo(version: s.root.version, expiresAt: s.root.expiresAt, chain: s.chain.map(RootHistory.version(of:)))
    }

    private func actor(_ context: FleetRequestContext) -> String { context.principal?.actor ?? "anonymous" }

    private func auditEnrollment(_ device: String, status: Int, outcome: String, detail: String) async throws {
        try await store.appendAudit(
            AuditRecord(
                at: clock(), actor: "device:\(device)", role: nil, method: "POST", path: "/v1/enroll",
                status: status, outcome: outcome, detail: detail))
    }
}
