import FleetCore
import HTTPTypes

/// Who may call what, in one table. Routes added later fall under the defaults: reading needs a
/// viewer, anything else an operator, so a new route is never open by accident.
enum AccessPolicy {
    enum Requirement: Equatable, Sendable {
        /// Liveness, Prometheus metrics and the public root metadata.
        case open
        /// The one-time enrollment token in the body is the credential.
        case enrollment
        /// The enrolled, accepted device named in the path.
        case device(String)
        /// Content-addressed artifacts: any accepted device, or an operator token.
        case artifact
        case role(OperatorRole)
    }

    static func requirement(method: HTTPRequest.Method, path: String) -> Requirement {
        let p = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let reading = method == .get || method == .head
        switch (reading, p.count) {
        case (true, 1) where p[0] == "healthz" || p[0] == "metrics": return .open
        case (true, 2) where p == ["v1", "root"]: return .open
        case (_, 1) where p[0] == "login" || p[0] == "logout": return .open   // the dashboard's sign-in page
        default: break
        }
        guard p.first == "v1", p.count >= 2 else { return reading ? .role(.viewer) : .role(.operator) }
        switch p[1] {
        case "enroll" where p.count == 2 && method == .post:
            return .enrollment
        case "devices" where p.count == 4 && method == .post && (p[3] == "checkin" || p[3] == "events"):
            return .device(p[2])
        case "devices" where p.count == 4 && method == .post && (p[3] == "approve" || p[3] == "revoke"):
            return .role(.admin)
        case "artifacts" where reading && p.count == 3:
            return .artifact
        case "tokens", "enrollment-tokens", "audit":
            return .role(.admin)
        case "root" where !reading:
            return .role(.admin)
        default:
            return reading ? .role(.viewer) : .role(.operator)
        }
    }

    /// Calls that change something, or concern access, are written to the audit log. Device
    /// check-ins and events are not: they are the devices' routine, counted in metrics instead.
    static func audited(_ requirement: Requirement, method: HTTPRequest.Method) -> Bool {
        switch requirement {
        case .open, .artifact, .device: return false
        case .enrollment: return false   // the enroll route writes its own record, naming the device
        case .role: return method != .get && method != .head
        }
    }
}
