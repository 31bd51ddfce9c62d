import FleetCore
import Hummingbird
import NIOCore

/// The request context of every controller route: Hummingbird's core storage, the connection (for
/// the TLS client certificate) and, once the route's `AccessGuard` has run, who is calling.
struct FleetRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: (any Channel)?
    var principal: Principal?
    /// A check-in's stored device row, read by the guard with the device's access (one round
    /// trip); `.some(nil)`: the device never checked in; nil: not read.
    var checkInDevice: DeviceRecord??

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
        principal = nil
        checkInDevice = nil
    }
}

/// An authenticated caller.
enum Principal: Sendable, Equatable {
    /// An operator API token (its name and role).
    case token(APITokenInfo)
    /// An enrolled device, proven by its client certificate (or, in open development mode, by its path).
    case device(String)
    /// Open development mode without a token: the name fleetctl sends in X-Fleet-Actor.
    case development(String)

    /// How the audit log and rollout actions name the caller.
    var actor: String {
        switch self {
        case .token(let t): "token:\(t.name)"
        case .device(let id): "device:\(id)"
        case .development(let name): "dev:\(name)"
        }
    }

    /// What an operator route may be used for; open development mode is admin.
    var role: OperatorRole? {
        switch self {
        case .token(let t): t.role
        case .device: nil
        case .development: .admin
        }
    }
}
