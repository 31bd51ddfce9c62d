import FleetCore
import HTTPTypes
import Hummingbird
import Logging
import Prometheus

/// The guard of one audience's routes (`Audiences`): authenticates the request, authorises it
/// against the requirement the routes declared, rate-limits device check-ins, and writes the audit
/// record of every call that changes something. Runs inside `ErrorMiddleware`, so a refusal becomes
/// the usual JSON error.
struct AccessGuard: RouterMiddleware {
    typealias Context = FleetRequestContext
    let requirement: AccessPolicy.Requirement
    let checker: AccessChecker

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await checker.handle(request, context: context, requirement: requirement, next: next)
    }
}

/// What every audience's guard shares: the access settings, the stores, the check-in limiter.
struct AccessChecker: Sendable {
    typealias Context = FleetRequestContext

    let options: AccessOptions
    let store: any AccessStore
    let checkIns: RateLimiter
    let metrics: ControllerMetrics
    let clock: @Sendable () -> Int64

    static var refused: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "edgefleet", metricName: "access_refused", unitName: "total",
            helpText: "Requests refused by authentication, authorisation or rate limits")
    }

    func handle(
        _ request: Request, context: Context, requirement: AccessPolicy.Requirement,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var context = context
        let audited = AccessPolicy.audited(requirement, method: request.method)
        do {
            context.principal = try await authenticate(requirement, request, &context)
            try authorise(requirement, context.principal)
        } catch {
            if audited || (isOperatorRoute(requirement) && isRefusal(error)) {
                await audit(request, principal: context.principal, fallbackActor: try? await claimedActor(request), error: error)
            }
            if let e = error as? AccessError {
                metrics.registry.makeCounter(descriptor: Self.refused, labels: [("code", e.code.rawValue)]).increment()
                if requirement == .device || requirement == .checkIn {
                    context.logger.warning("device refused", metadata: ["path": "\(request.uri.path)", "error": "\(e.code.rawValue)"])
                }
            }
            throw error
        }
        guard audited else { return try await next(request, context) }
        do {
            let response = try await next(request, context)
            await audit(request, principal: context.principal, status: Int(response.status.code))
            return response
        } catch {
            await audit(request, principal: context.principal, error: error)
            throw error
        }
    }

    /// A role is checked apart from authentication, so a refusal names who was refused.
    private func authorise(_ requirement: AccessPolicy.Requirement, _ principal: Principal?) throws {
        guard case .role(let needed) = requirement, let principal else { return }
        guard let role = principal.role, role >= needed else {
            throw AccessError(
                .insufficientRole,
                "this call needs the \(needed.rawValue) role; \(principal.actor) has \(principal.role?.rawValue ?? "none")")
        }
    }

    private func authenticate(_ requirement: AccessPolicy.Requirement, _ request: Request, _ context: inout Context) async throws
        -> Principal?
    {
        switch requirement {
        case .open, .enrollment:
            return nil
        case .role:
            return try await operatorPrincipal(request)
        case .device, .checkIn:
            // The device the route names; a malformed name is the route's to answer (invalid-device-id).
            guard let id = context.parameters.get("id"), Name.isValid(id) else { return nil }
            let identity: DeviceAccessCheck?
            if requirement == .checkIn {
                let records = try await store.checkInRecords(id)
                identity = records.access
                context.checkInDevice = .some(records.device)
            } else {
                identity = try await store.deviceAccess(id)
            }
            if options.mode == .enforced {
                guard let peer = await options.peerCertificates(request, context) else {
                    throw AccessError(.clientCertificateRequired, "devices must present their client certificate")
                }
                guard let identity else { throw AccessError(.unknownDevice, "device \(id) has not enrolled") }
                guard identity.fingerprint == peer.fingerprint else {
                    throw AccessError(.identityMismatch, "the client certificate is not the one device \(id) enrolled with")
                }
            }
            switch identity?.status {
            case .revoked?: throw AccessError(.deviceRevoked, "device \(id) is revoked")
            case .pending?: throw AccessError(.devicePending, "device \(id) waits for approval")
            case .accepted?, nil: break
            }
            if requirement == .checkIn, let wait = checkIns.take(id) {
                throw AccessError(.rateLimited, "device \(id) checks in too often; retry in \(wait) s", retryAfter: wait)
            }
            return .device(id)
        case .artifact:
            if options.mode == .open { return try await optionalOperator(request) }
            if let peer = await options.peerCertificates(request, context) {
                // An accepted device may fetch artifacts; a refused one gets nothing, not even those.
                if let identity = try await store.deviceIdentity(fingerprint: peer.fingerprint) {
                    guard identity.status == .accepted else {
                        throw AccessError(
                            identity.status == .revoked ? .deviceRevoked : .devicePending,
                            "device \(identity.deviceId) is \(identity.status.rawValue)")
                    }
                    return .device(identity.deviceId)
                }
            }
            return try await operatorPrincipal(request)
        }
    }

    /// The caller of an operator route: its token, or in open mode the name it claims.
    private func operatorPrincipal(_ request: Request) async throws -> Principal {
        if let p = try await optionalOperator(request) { return p }
        guard options.mode == .open else {
            throw AccessError(.unauthenticated, "this call needs an operator token: Authorization: Bearer efop_…")
        }
        return .development(try await claimedActor(request))
    }

    private func optionalOperator(_ request: Request) async throws -> Principal? {
        // A browser on the dashboard sends its token as a cookie; it is honoured for reads only, so a
        // forged cross-site request can change nothing.
        let reading = request.method == .get || request.method == .head
        let header = request.headers[.authorization]
        let cookie = reading ? Secret.cookieToken(request.headers[.cookie]) : nil
        guard header != nil || cookie != nil else { return nil }
        guard let secret = header != nil ? Secret.bearer(header) : cookie, secret.hasPrefix(Secret.operatorPrefix),
            secret.count <= Secret.maxLength,
            let token = try await store.apiToken(hash: Secret.hash(secret))
        else {
            throw AccessError(.invalidToken, "the bearer token is not a known operator token")
        }
        let now = clock()
        if token.revokedAt != nil { throw AccessError(.tokenRevoked, "token \(token.id) (\(token.name)) is revoked") }
        if let e = token.expiresAt, e <= now { throw AccessError(.tokenExpired, "token \(token.id) (\(token.name)) has expired") }
        if (token.lastUsedAt ?? 0) + 60 <= now { try? await store.touchAPIToken(id: token.id, at: now) }
        return .token(token)
    }

    private func claimedActor(_ request: Request) async throws -> String {
        let a = request.headers[HTTPField.Name("X-Fleet-Actor")!] ?? "operator"
        return Name.isValid(a) ? a : "operator"
    }

    private func isOperatorRoute(_ r: AccessPolicy.Requirement) -> Bool { if case .role = r { true } else { false } }
    private func isRefusal(_ error: any Error) -> Bool {
        guard let e = error as? AccessError else { return false }
        return e.status == .unauthorized || e.status == .forbidden
    }

    private func audit(
        _ request: Request, principal: Principal?, fallbackActor: String? = nil, status: Int? = nil, error: (any Error)? = nil
    ) async {
        let api = error.map(APIError.from)
        let code = status ?? Int(api?.status.code ?? 500)
        let outcome =
            switch code {
            case 200..<400: "ok"
            case 401, 403: "denied"
            case 400..<500: "rejected"
            default: "failed"
            }
        let actor = principal?.actor ?? (options.mode == .open ? fallbackActor.map { "dev:\($0)" } : nil) ?? "anonymous"
        let record = AuditRecord(
            at: clock(), actor: actor, role: principal?.role?.rawValue, method: request.method.rawValue,
            path: String(request.uri.path.prefix(512)), status: code, outcome: outcome, detail: api?.code)
        do { try await store.appendAudit(record) } catch {
            // A lost audit record is logged, never silently dropped.
            Logger(label: "edgefleet.audit").error("audit record not stored", metadata: ["record": "\(record)", "error": "\(error)"])
        }
    }
}
