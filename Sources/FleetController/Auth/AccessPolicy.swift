import FleetCore
import HTTPTypes

/// What a route asks of its caller. Each route declares it where it is registered (`Audiences`).
enum AccessPolicy {
    enum Requirement: Hashable, Sendable {
        /// Liveness, Prometheus metrics and the public root metadata.
        case open
        /// The one-time enrollment token in the body is the credential.
        case enrollment
        /// The enrolled, accepted device named by the route's `:id`.
        case device
        /// A device's check-in: `device`, within the per-device check-in rate.
        case checkIn
        /// Content-addressed artifacts: any accepted device, or an operator token.
        case artifact
        case role(OperatorRole)
    }

    /// Calls that change something, or concern access, are written to the audit log. Device
    /// check-ins and events are not: they are the devices' routine, counted in metrics instead.
    static func audited(_ requirement: Requirement, method: HTTPRequest.Method) -> Bool {
        switch requirement {
        case .open, .artifact, .device, .checkIn: return false
        case .enrollment: return false  // the enroll route writes its own record, naming the device
        case .role: return method != .get && method != .head
        }
    }
}
