import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOPosix
import Testing
import TestSupport
@testable import FleetController

/// Devices' requests are handled on their connection's event loop (no hop to Swift's task pool
/// and back at each step); every other audience's on the task pool, so that a long report never
/// holds up the connections sharing a loop.
@Suite("Requests on event loops")
struct EventLoopHandlerTests {
    @Test func devicesRoutesStayOnTheEventLoopAndTheOthersRunOnTheTaskPool() async throws {
        let store = try await SQLStore.sqlite(path: try TestScratch.directory("loops") + "/fleet.sqlite")
        let router = Router(context: FleetRequestContext.self)
        let routes = Audiences(
            router: router,
            checker: AccessChecker(
                options: AccessOptions(mode: .open).resolved, store: store,
                checkIns: RateLimiter(burst: 100, perMinute: 6000, clock: { 0 }), metrics: ControllerMetrics(), clock: { 0 }))
        // Where the handler is after a real suspension (a statement on the SQLite queue).
        @Sendable func whereAmI() async throws -> Response {
            _ = try await store.deviceCount()
            let place = MultiThreadedEventLoopGroup.currentEventLoop == nil ? "task-pool" : "event-loop"
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: place)))
        }
        routes.checkIns.post("/v1/devices/:id/checkin") { _, _ in try await whereAmI() }
        routes.devices.post("/v1/devices/:id/events") { _, _ in try await whereAmI() }
        routes.artifactReaders.get("/v1/artifacts/:sha") { _, _ in try await whereAmI() }
        routes.anyone.get("/probe") { _, _ in try await whereAmI() }
        routes.viewers.get("/v1/probe") { _, _ in try await whereAmI() }
        routes.operators.post("/v1/probe") { _, _ in try await whereAmI() }

        let app = Application(
            router: router, server: .controller(tls: nil), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            func place(_ method: HTTPRequest.Method, _ path: String) async throws -> String {
                try await client.execute(uri: path, method: method) { response in
                    #expect(response.status == .ok, "\(method) \(path)")
                    return String(buffer: response.body)
                }
            }
            for _ in 0..<3 {  // keep-alive: later requests on one connection too
                let checkIn = try await place(.post, "/v1/devices/dev-1/checkin")
                let events = try await place(.post, "/v1/devices/dev-1/events")
                let artifact = try await place(.get, "/v1/artifacts/\(String(repeating: "a", count: 64))")
                let open = try await place(.get, "/probe")
                let viewer = try await place(.get, "/v1/probe")
                let op = try await place(.post, "/v1/probe")
                #expect([checkIn, events, artifact] == ["event-loop", "event-loop", "event-loop"])
                #expect([open, viewer, op] == ["task-pool", "task-pool", "task-pool"])
            }
        }
    }
}
