import Logging
import ServiceLifecycle

/// The sd_notify side of a daemon run by a `ServiceGroup`: READY=1 once `readiness` holds,
/// WATCHDOG=1 at half the manager's interval while the group runs, STOPPING=1 on graceful shutdown.
public struct ServiceNotifierService: Service {
    let notifier: ServiceNotifier
    let readiness: @Sendable () async -> Bool
    let logger: Logger

    public init(notifier: ServiceNotifier = .process, logger: Logger, readiness: @escaping @Sendable () async -> Bool) {
        self.notifier = notifier; self.readiness = readiness; self.logger = logger
    }

    public func run() async throws {
        // Returning early would end the group (the default for services): wait for shutdown.
        guard notifier.isActive else {
            try? await gracefulShutdown()
            return
        }
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    while !Task.isCancelled, !Task.isShuttingDownGracefully {
                        if await readiness() { break }
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                    if Task.isCancelled || Task.isShuttingDownGracefully { return }
                    notifier.ready()
                    logger.debug("told the service manager: ready")
                }
                if let interval = notifier.pingInterval {
                    group.addTask {
                        // Pinged from the concurrency pool the daemon's work runs on: a stuck pool stops the pings.
                        while !Task.isCancelled, !Task.isShuttingDownGracefully {
                            notifier.watchdog()
                            try? await Task.sleep(for: interval)
                        }
                    }
                }
                try? await gracefulShutdown()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            notifier.stopping()
        }
    }
}
