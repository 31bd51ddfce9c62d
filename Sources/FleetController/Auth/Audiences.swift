import FleetCore
import HTTPTypes
import Hummingbird
import Synchronization

/// The controller's routes by who may call them. Each audience is a route group whose guard
/// authenticates and authorises a request before its handler runs, so a route and its access
/// requirement are one declaration. Route code is handed these groups, never the bare router: a
/// route cannot be added without saying who may call it.
struct Audiences: Sendable {
    /// Liveness, Prometheus metrics, the public root metadata and the dashboard's sign-in page.
    let anyone: Audience
    /// The one-time enrollment token in the body is the credential.
    let enrolling: Audience
    /// The accepted device named by the route's `:id`, proven by its client certificate.
    let devices: Audience
    /// A device's check-in: as `devices`, within the per-device check-in rate.
    let checkIns: Audience
    /// Content-addressed artifacts: any accepted device, or an operator token.
    let artifactReaders: Audience
    let viewers: Audience
    let operators: Audience
    let admins: Audience
    /// Every route registered through an audience, with its requirement.
    let table: RouteTable

    init(router: Router<FleetRequestContext>, checker: AccessChecker) {
        let table = RouteTable()
        // Devices' routes (many short requests) run on their connection's event loop when the
        // server handles connections there (`EventLoopBoundChannel`); the others, some long on
        // the CPU (reports over the whole fleet, the dashboard, uploads), on the task pool.
        func audience(_ r: AccessPolicy.Requirement, onEventLoop: Bool = false) -> Audience {
            let group = router.group()
            if !onEventLoop { group.add(middleware: OffTheEventLoop()) }
            return Audience(requirement: r, group: group.add(middleware: AccessGuard(requirement: r, checker: checker)), table: table)
        }
        anyone = audience(.open)
        enrolling = audience(.enrollment)
        devices = audience(.device, onEventLoop: true)
        checkIns = audience(.checkIn, onEventLoop: true)
        artifactReaders = audience(.artifact, onEventLoop: true)
        viewers = audience(.role(.viewer))
        operators = audience(.role(.operator))
        admins = audience(.role(.admin))
        self.table = table
    }
}

/// One audience's route group. Registering a route records it with the audience's requirement.
struct Audience: RouterMethods, Sendable {
    typealias Context = FleetRequestContext
    let requirement: AccessPolicy.Requirement
    fileprivate let group: RouterGroup<Context>
    fileprivate let table: RouteTable

    @discardableResult
    func on<Responder: HTTPResponder>(_ path: RouterPath, method: HTTPRequest.Method, responder: Responder) -> Audience
    where Responder.Context == Context {
        table.record(RouteTable.Entry(method: method, path: path.description, requirement: requirement))
        group.on(path, method: method, responder: responder)
        return self
    }

    @discardableResult
    func add(middleware: any MiddlewareProtocol<Request, Response, Context>) -> Audience {
        group.add(middleware: middleware)
        return self
    }
}

/// The routes as registered, for tests and `fleet-controller routes`-style listings.
final class RouteTable: Sendable {
    struct Entry: Hashable, Sendable, CustomStringConvertible {
        let method: HTTPRequest.Method
        let path: String
        let requirement: AccessPolicy.Requirement
        var description: String { "\(method.rawValue) \(path) → \(requirement)" }
    }

    private let entries = Mutex<[Entry]>([])

    fileprivate func record(_ e: Entry) { entries.withLock { $0.append(e) } }

    var all: [Entry] { entries.withLock { $0 } }
}
