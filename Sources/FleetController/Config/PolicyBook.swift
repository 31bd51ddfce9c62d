import FleetCore
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The rollout policies of fleet/policies, re-read on SIGHUP. A rollout keeps the copy it started
/// with: a reload changes only rollouts started after it.
final class PolicyBook: Sendable {
    let directory: String
    private let loaded: Mutex<[String: RolloutPolicy]>

    init(directory: String) throws {
        self.directory = directory
        loaded = Mutex(try PolicyLoader.load(directory: directory))
    }

    var current: [String: RolloutPolicy] { loaded.withLock { $0 } }

    /// Reads the folder again; a file that does not parse leaves the previous set in force.
    @discardableResult
    func reload() throws -> [String: RolloutPolicy] {
        let fresh = try PolicyLoader.load(directory: directory)
        loaded.withLock { $0 = fresh }
        return fresh
    }
}

/// Reloads the policy book when the process gets SIGHUP.
struct PolicyReloadService: Service {
    let book: PolicyBook
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        try await cancelWhenGracefulShutdown {
            for await _ in signals {
                do {
                    let names = try book.reload().keys.sorted()
                    logger.notice("policies reloaded", metadata: ["policies": "\(names.joined(separator: ","))"])
                } catch {
                    logger.error("policies not reloaded; the previous ones stay in force", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
