import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// Statements that cannot wait forever on a connection that closed under them.
///
/// postgres-nio (1.33) hands a statement to its connection's channel without a promise for the
/// write. When the server closes the connection (a restart, a failover, `pg_terminate_backend`,
/// an idle timeout in a pooler) just before the statement reaches the channel, the channel's
/// handlers are already gone, the write fails with nobody told, and the statement's answer never
/// comes: the task that awaits it hangs for good. The pool hands out such a connection when the
/// close has happened on its event loop but not yet reached the pool (seen: a statement right after
/// PostgreSQL ended every connection of a pool hung in 1 run of 4 to 20 on a loaded machine).
///
/// Here a statement is started from a task of its own on its connection's event loop, after a
/// check that the channel is still open (on the loop nothing can close it between the check and the
/// write), and the caller waits on a continuation of its own. A sweep once a `period` fails the
/// statements whose connection has been closed for a whole period (a statement the connection's
/// own close fails, the normal case, is gone by then) with a `database` error. A statement on an
/// open connection is never cut short here, however long it runs.
final class PostgresStatements: Sendable {
    static let shared = PostgresStatements(period: .seconds(1))

    private struct Entry {
        let connection: PostgresConnection
        let fail: @Sendable () -> Void
        var closedSince: ContinuousClock.Instant?
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var next: UInt64 = 0
        var sweeping = false
    }

    let period: Swift.Duration
    private let state = Mutex(State())

    init(period: Swift.Duration) { self.period = period }

    /// Statements waiting for an answer now.
    var inFlight: Int { state.withLock { $0.entries.count } }

    /// Runs `body` (which starts a statement on `connection` and returns its answer) as described
    /// above; throws `StorageError(.database)` when the connection closes and the statement's
    /// answer never comes.
    func run<T: Sendable>(on connection: PostgresConnection, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let once = ResumeOnce(continuation)
            let id = register(connection) {
                once.resume(throwing: StorageError(.database, "postgres: the connection closed before the statement's answer came"))
            }
            Task(executorPreference: EventLoopTaskExecutor(connection.eventLoop)) {
                do {
                    guard !connection.isClosed else {
                        throw StorageError(.database, "postgres: the connection closed before the statement was sent")
                    }
                    let value = try await body()
                    self.unregister(id)
                    once.resume(returning: value)
                } catch {
                    self.unregister(id)
                    once.resume(throwing: error)
                }
            }
        }
    }

    private func register(_ connection: PostgresConnection, fail: @escaping @Sendable () -> Void) -> UInt64 {
        let (id, startSweep) = state.withLock { s -> (UInt64, Bool) in
            s.next &+= 1
            s.entries[s.next] = Entry(connection: connection, fail: fail)
            let start = !s.sweeping
            s.sweeping = true
            return (s.next, start)
        }
        if startSweep { Task.detached { await self.sweep() } }
        return id
    }

    private func unregister(_ id: UInt64) { _ = state.withLock { $0.entries.removeValue(forKey: id) } }

    /// Runs while statements are in flight.
    private func sweep() async {
        while true {
            try? await Task.sleep(for: period)
            let now = ContinuousClock.now
            let (failing, done) = state.withLock { s -> ([@Sendable () -> Void], Bool) in
                var failing: [@Sendable () -> Void] = []
                for (id, var entry) in s.entries where entry.connection.isClosed {
                    if let since = entry.closedSince {
                        if now - since >= period {
                            failing.append(entry.fail)
                            s.entries.removeValue(forKey: id)
                        }
                    } else {
                        entry.closedSince = now
                        s.entries[id] = entry
                    }
                }
                if s.entries.isEmpty { s.sweeping = false }
                return (failing, s.entries.isEmpty)
            }
            if !failing.isEmpty {
                Logger(label: "edgefleet.postgres").warning(
                    "statements failed: their connection closed before the answer came", metadata: ["statements": "\(failing.count)"])
            }
            for fail in failing { fail() }
            if done { return }
        }
    }
}

/// A continuation resumed by whichever comes first.
private final class ResumeOnce<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, any Error>?>
    init(_ c: CheckedContinuation<T, any Error>) { continuation = Mutex(c) }
    func resume(returning value: T) { continuation.withLock { $0.take() }?.resume(returning: value) }
    func resume(throwing error: any Error) { continuation.withLock { $0.take() }?.resume(throwing: error) }
}

extension PostgresConnection {
    /// `query` through `PostgresStatements`: the rows are read by the caller, after the answer
    /// has begun.
    func guardedQuery(_ query: PostgresQuery, logger: Logger) async throws -> PostgresRowSequence {
        try await PostgresStatements.shared.run(on: self) { try await self.query(query, logger: logger) }
    }
}
