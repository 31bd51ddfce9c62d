import FleetCore
import Foundation
import HTTPTypes
import Hummingbird

/// The web page at `/`, and the rollout history behind its charts.
struct DashboardRoutes: Sendable {
    let store: any FleetStore
    let access: any AccessStore
    let operatorRoutes: OperatorRoutes
    let performance: PerformanceBook
    let quarantine: any ArtifactQuarantineStore
    let clock: @Sendable () -> Int64
    /// The label key devices are broken down by on the page; nil: none.
    let viewLabel: String?
    /// Mark the session cookie Secure (the controller serves HTTPS).
    let secureCookies: Bool
    /// The newest rollouts shown on the page.
    static let rolloutsShown = 8

    func register(_ routes: Audiences) {
        routes.viewers.get("/") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/html; charset=utf-8"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: Dashboard.render(try await data()))))
        }
        // Browsers cannot send a bearer header: /login turns an operator token into a cookie that
        // is honoured for reads only (see AccessChecker).
        routes.anyone.get("/login") { _, _ in html(Dashboard.login(message: nil), status: .ok) }
        routes.anyone.post("/login") { request, _ in
            let body = try await request.body.collect(upTo: 4096)
            let token = Self.formValue(String(buffer: body), "token") ?? ""
            guard token.hasPrefix(Secret.operatorPrefix), token.count <= Secret.maxLength,
                let info = try await access.apiToken(hash: Secret.hash(token)), info.revokedAt == nil,
                info.expiresAt.map({ $0 > clock() }) ?? true
            else {
                return html(Dashboard.login(message: "That is not a valid operator token."), status: .unauthorized)
            }
            var headers = HTTPFields()
            headers[.location] = "/"
            headers[.setCookie] =
                "\(Secret.cookieName)=\(token); Path=/; HttpOnly; SameSite=Strict; Max-Age=43200\(secureCookies ? "; Secure" : "")"
            return Response(status: .seeOther, headers: headers)
        }
        routes.anyone.get("/logout") { _, _ in
            var headers = HTTPFields()
            headers[.location] = "/login"
            headers[.setCookie] = "\(Secret.cookieName)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0\(secureCookies ? "; Secure" : "")"
            return Response(status: .seeOther, headers: headers)
        }
        routes.viewers.get("/v1/rollouts/:rid/history") { _, context in
            guard let id = Int64(try context.parameters.require("rid")) else {
                throw APIError(.badRequest, "invalid-rollout", "rollout ids are numbers")
            }
            guard try await store.rollout(id) != nil else { throw APIError(.notFound, "unknown-rollout", "no rollout \(id)") }
            return try JSON.response(try await store.history(rollout: id))
        }
    }

    func html(_ page: String, status: HTTPResponse.Status) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: page)))
    }

    /// One field of an application/x-www-form-urlencoded body.
    static func formValue(_ body: String, _ name: String) -> String? {
        for pair in body.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0] == name else { continue }
            return String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
        }
        return nil
    }

    func data() async throws -> DashboardData {
        var rollouts: [DashboardData.Rollout] = []
        for r in try await store.rollouts().sorted(by: { $0.id > $1.id }).prefix(Self.rolloutsShown) {
            rollouts.append(
                .init(status: try await operatorRoutes.rolloutStatus(r), history: try await store.history(rollout: r.id)))
        }
        var perf: [String: [VariantMeasurement]] = [:]
        for m in try await store.models() {
            let t = try await performance.table(model: m.name)
            if !t.isEmpty { perf[m.name] = t }
        }
        var view: LabelView? = nil
        if let key = viewLabel {
            view = LabelView.breakdown(
                key: key, devices: try await store.deviceCellsWithStatus().map { ($0.cell.selectable, $0.status.rawValue) })
        }
        return DashboardData(
            now: clock(), devices: try await store.deviceCounts(), eventsDropped: try await store.eventsDropped(),
            rollouts: rollouts, performance: perf, quarantined: try await quarantine.quarantinedArtifacts(), labelView: view)
    }
}
