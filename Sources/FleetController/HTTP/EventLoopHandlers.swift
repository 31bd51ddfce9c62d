import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL

/// Runs the jobs of the tasks that prefer it on one NIO event loop. A device's request, its
/// PostgreSQL statements (whose connections live on the same loops) and its response then stay on
/// the thread that reads and writes the sockets, instead of waking a thread of Swift's task pool
/// and the loop again at every step: each wake-up is a context switch, and with several replicas
/// sharing the cores, each less busy, most steps are one.
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        // From the loop itself this only queues the job (no wake-up).
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// A connection's handling (reading requests, routing, writing responses) run on its channel's
/// event loop. Routes whose work is long on the CPU (operators' reports, the dashboard) move off
/// the loop again (`OffTheEventLoop`), so they never hold up the connections that share it.
struct EventLoopBoundChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> { base.setup(channel: channel, logger: logger) }

    func handle(value: Value, logger: Logger) async {
        await withTaskExecutorPreference(EventLoopTaskExecutor(value.channel.eventLoop)) {
            await base.handle(value: value, logger: logger)
        }
    }
}

/// Runs the rest of a request on Swift's global task pool (`globalConcurrentExecutor`).
struct OffTheEventLoop<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await withTaskExecutorPreference(globalConcurrentExecutor) { try await next(request, context) }
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1, over TLS when `tls` is given, each connection handled on its event loop
    /// (`EventLoopBoundChannel`).
    static func controller(tls: TLSConfiguration?) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            let http = HTTP1Channel(responder: responder)
            guard let tls else { return EventLoopBoundChannel(base: http) }
            return EventLoopBoundChannel(base: try TLSChannel(http, tlsConfiguration: tls))
        }
    }
}
