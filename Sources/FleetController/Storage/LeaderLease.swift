import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The epoch of the leader lease this replica holds, if any. Writes of the leader's work (cell
/// ticks, rollout states, history) check it inside their own transaction: on PostgreSQL they read
/// the lease row `FOR SHARE`, so a deposed leader whose successor has already bumped the epoch
/// cannot overwrite what the successor wrote.
final class LeaseFence: Sendable {
    static let leaderLease = "leader"
    private let held = Mutex<Int64?>(nil)

    /// A fence for a process that is always the leader (SQLite: one box, one writer).
    static func alwaysLeader() -> LeaseFence {
        let f = LeaseFence()
        f.set(0)
        return f
    }

    var epoch: Int64? { held.withLock { $0 } }
    var isLeader: Bool { epoch != nil }
    func set(_ epoch: Int64?) { held.withLock { $0 = epoch } }

    func check(_ tx: any SQLQuerying) async throws {
        guard let mine = epoch else { throw StorageError(.fenced, "this replica does not hold the leader lease") }
        guard tx.dialect == .postgres else { return }
        let current = try await tx.query("SELECT epoch FROM leases WHERE name = ? FOR SHARE", [Self.leaderLease]).first
        guard let current, try current.int("epoch") == mine else {
            set(nil)
            throw StorageError(.fenced, "the leader lease moved to another replica (epoch \(mine) is over)")
        }
    }
}

/// Elects one replica among those on a PostgreSQL database to do the work that must run once:
/// the holder of a session advisory lock on a connection of its own. The lock frees itself when
/// that session ends (the process dies, the connection drops), and another replica's next attempt,
/// one `interval` later, takes it. Each new holder bumps the lease epoch, which fences the writes
/// of the one before.
final class LeaderElector: Service, Sendable {
    let location: PostgresLocation
    let store: SQLStore
    let fence: LeaseFence
    let replica: String
    let interval: Swift.Duration
    let logger: Logger
    let onChange: @Sendable (Bool) async -> Void

    init(
        location: PostgresLocation, store: SQLStore, fence: LeaseFence, replica: String, interval: Swift.Duration = .seconds(1),
        logger: Logger, onChange: @escaping @Sendable (Bool) async -> Void = { _ in }
    ) {
        self.location = location; self.store = store; self.fence = fence; self.replica = replica; self.interval = interval
        self.logger = logger; self.onChange = onChange
    }

    func run() async throws {
        await location.keepSession(id: 1, what: "leader election", retry: interval, logger: logger, lost: { await self.stepDown() }) {
            connection in
            try await self.hold(connection)
        }
    }

    /// Tries for the lock every `interval`; once held, checks the session stays alive and the lease
    /// still names this replica. Returns (or throws) when leadership is lost.
    private func hold(_ connection: PostgresConnection) async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            if !fence.isLeader {
                let rows = try await connection.guardedQuery(
                    "SELECT pg_try_advisory_lock(\(Migrations.advisoryLockKey + 1)) AS got", logger: logger)
                var got = false
                for try await row in rows { got = try row.decode(Bool.self) }
                if got {
                    let epoch = try await claim()
                    fence.set(epoch)
                    logger.notice("this replica is the leader", metadata: ["replica": "\(replica)", "epoch": "\(epoch)"])
                    await onChange(true)
                }
            } else {
                _ = try await connection.guardedQuery("SELECT 1", logger: logger)
                let holder = try await store.db.query("SELECT holder, epoch FROM leases WHERE name = ?", [LeaseFence.leaderLease]).first
                if try holder?.int("epoch") != fence.epoch {
                    logger.warning("the leader lease moved to another replica", metadata: ["replica": "\(replica)"])
                    return
                }
            }
            try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
        }
    }

    private func claim() async throws -> Int64 {
        let now = Int64(Date().timeIntervalSince1970)
        let rows = try await store.db.query(
            """
            INSERT INTO leases (name, holder, epoch, acquired_at) VALUES (?,?,1,?)
            ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, epoch = leases.epoch + 1, acquired_at = excluded.acquired_at
            RETURNING epoch
            """, [LeaseFence.leaderLease, replica, now])
        guard let epoch = try rows.first?.int("epoch") else { throw StorageError(.database, "the lease claim returned no epoch") }
        return epoch
    }

    private func stepDown() async {
        guard fence.isLeader else { return }
        fence.set(nil)
        logger.notice("this replica is no longer the leader", metadata: ["replica": "\(replica)"])
        await onChange(false)
    }
}
