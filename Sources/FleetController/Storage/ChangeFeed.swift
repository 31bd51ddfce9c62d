import FleetCore
import Foundation
import Synchronization

/// A table (or one release's or model's slice of one) kept in memory by this process and brought
/// up to date by reading only the rows whose change revision is at or past the last read's
/// horizon (see `ChangeRevisions`). Read whole on first use, after `reset()` (the cache listener
/// reconnected) and every `fullEvery` in any case; a row written by another replica or process is
/// seen by the next read after its commit, NOTIFY or not.
final class ChangeFeed<State: Sendable>: Sendable {
    struct Snapshot: Sendable {
        var state: State
        /// Changes whenever the state does; unique across the process's feeds.
        var version: UInt64
    }
    private struct Held: Sendable {
        var state: State
        var horizon: Int64
        var fullAt: ContinuousClock.Instant
        var version: UInt64
    }
    private let held = Mutex<Held?>(nil)
    private let turn = AsyncLock()
    private let resetPending = Mutex(false)
    let fullEvery: Swift.Duration
    var lastUse: ContinuousClock.Instant { used.withLock { $0 } }
    private let used = Mutex(ContinuousClock.now)

    init(fullEvery: Swift.Duration) { self.fullEvery = fullEvery }

    /// The next read reads everything.
    func reset() { resetPending.withLock { $0 = true } }

    /// `read(since)`: every row when `since` is nil, else the rows changed at or after it, folded
    /// into the state by `merge`, which says whether anything changed.
    func snapshot<Rows>(
        _ db: any SQLQuerying, empty: () -> State, read: (Int64?) async throws -> Rows,
        merge: (inout State, Rows) -> Bool
    ) async throws -> Snapshot {
        used.withLock { $0 = .now }
        return try await turn.withLock {
            let now = ContinuousClock.now
            // Taken out of the lock so that merging changes the one copy in place.
            var current = held.withLock { h -> Held? in
                let v = h; h = nil; return v
            }
            let full = resetPending.withLock { r -> Bool in
                let v = r; r = false; return v
            }
            let horizon = try await ChangeRevisions.horizon(db)
            do {
                if var h = current, !full, now - h.fullAt < fullEvery {
                    let rows = try await read(h.horizon)
                    if merge(&h.state, rows) { h.version = FeedVersions.next() }
                    h.horizon = horizon
                    current = h
                } else {
                    current = nil
                    var state = empty()
                    _ = merge(&state, try await read(nil))
                    current = Held(state: state, horizon: horizon, fullAt: now, version: FeedVersions.next())
                }
            } catch {
                // A failed read keeps what was held (its horizon unchanged: the rows are read again).
                held.withLock { $0 = current }
                throw error
            }
            let h = current!
            held.withLock { $0 = h }
            return Snapshot(state: h.state, version: h.version)
        }
    }
}

/// Versions of every feed's state in the process (a generic type cannot hold the counter).
enum FeedVersions {
    private static let counter = Atomic<UInt64>(0)
    static func next() -> UInt64 { counter.add(1, ordering: .relaxed).newValue }
}

/// Every device's cell and labels, in the order first seen.
struct DeviceCellTable: Sendable {
    var records: [DeviceCellRecord] = []
    var position: [String: Int] = [:]

    mutating func merge(_ rows: [DeviceCellRecord]) -> Bool {
        var changed = false
        for r in rows {
            if let i = position[r.id] {
                if records[i] != r { records[i] = r; changed = true }
            } else {
                position[r.id] = records.count
                records.append(r)
                changed = true
            }
        }
        return changed
    }
}

/// One release's latest install outcome per device: device → event kind.
struct InstallOutcomeTable: Sendable {
    var kinds: [String: String] = [:]

    mutating func merge(_ rows: [(String, String)]) -> Bool {
        var changed = false
        for (device, kind) in rows where kinds[device] != kind { kinds[device] = kind; changed = true }
        return changed
    }
}

/// One model's latest runtime metrics per device, and when each was received.
struct RuntimeMetricsTable: Sendable {
    /// Devices whose latest figures decode (those that do not are left out, as before).
    var metrics: [String: DeviceMetrics] = [:]
    var receivedAt: [String: Int64] = [:]
    /// No device's latest figures were received before this: a window starting at or before it
    /// keeps every device.
    var oldest: Int64 = .max

    mutating func merge(_ rows: [(String, DeviceMetrics?, Int64)]) -> Bool {
        for (device, m, at) in rows {
            metrics[device] = m
            receivedAt[device] = at
            oldest = min(oldest, at)
        }
        return !rows.isEmpty
    }

    func received(since: Int64) -> [String: DeviceMetrics] {
        if oldest >= since { return metrics }
        return metrics.filter { receivedAt[$0.key] ?? .min >= since }
    }
}

/// The feeds of one store cache: the device cells, and per release and per model the telemetry
/// the gates read (the few in use; one unused for a while is dropped).
final class ChangeFeeds: Sendable {
    let devices: ChangeFeed<DeviceCellTable>
    private let outcomeShelf: FeedShelf<InstallOutcomeTable>
    private let metricsShelf: FeedShelf<RuntimeMetricsTable>

    init(fullEvery: Swift.Duration) {
        devices = ChangeFeed(fullEvery: fullEvery)
        outcomeShelf = FeedShelf(fullEvery: fullEvery)
        metricsShelf = FeedShelf(fullEvery: fullEvery)
    }

    func outcomes(release: String) -> ChangeFeed<InstallOutcomeTable> { outcomeShelf.feed(release) }
    func metrics(model: String) -> ChangeFeed<RuntimeMetricsTable> { metricsShelf.feed(model) }

    func resetAll() {
        devices.reset()
        outcomeShelf.resetAll()
        metricsShelf.resetAll()
    }
}

/// Feeds by key, the least recently used dropped beyond `kept`.
final class FeedShelf<State: Sendable>: Sendable {
    private let feeds = Mutex<[String: ChangeFeed<State>]>([:])
    let fullEvery: Swift.Duration
    let kept: Int

    init(fullEvery: Swift.Duration, kept: Int = 16) { self.fullEvery = fullEvery; self.kept = kept }

    func feed(_ key: String) -> ChangeFeed<State> {
        feeds.withLock { f in
            if let hit = f[key] { return hit }
            if f.count >= kept, let stale = f.min(by: { $0.value.lastUse < $1.value.lastUse })?.key { f[stale] = nil }
            let made = ChangeFeed<State>(fullEvery: fullEvery)
            f[key] = made
            return made
        }
    }

    func resetAll() { feeds.withLock { $0.values.forEach { $0.reset() } } }
}
