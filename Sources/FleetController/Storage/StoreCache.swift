import FleetCore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// What a replica keeps in memory of what every check-in reads: releases (never change once
/// made), the rollouts in force, each rollout's cells, models and variants, trials, quarantined
/// artifacts. An entry is dropped
/// when this process writes the table, when another replica's write is announced (PostgreSQL
/// NOTIFY on the `edgefleet_changes` channel, sent in the writing transaction, so only once it
/// commits), and in any case after `maxAge`: NOTIFY is not durable (a listener that reconnects
/// has missed what was sent meanwhile, and drops everything).
final class StoreCache: Sendable {
    enum Topic: String, Sendable, CaseIterable {
        case rollouts, cells, models, variants, trials, quarantine, priors
    }

    static let channel = "edgefleet_changes"

    /// Names this process in the announcements it sends ("TOPIC@ORIGIN"), so that its listener
    /// passes over its own: what this process wrote, it dealt with in its cache at the commit.
    let origin: String = Digest.sha256Hex(Array("\(ProcessInfo.processInfo.processIdentifier) \(ContinuousClock.now)".utf8)).prefix(16)
        .description

    func announcement(_ topic: Topic) -> String { topic.rawValue + "@" + origin }

    /// The topic an announcement names, nil when this process sent it; `.some(nil)`: not one this
    /// build knows (everything is read again).
    func topic(announced payload: String) -> Topic?? {
        let parts = payload.split(separator: "@", maxSplits: 1)
        if parts.count == 2, parts[1] == origin { return nil }
        return .some(parts.first.flatMap { Topic(rawValue: String($0)) })
    }

    private struct Entry { var value: any Sendable; var at: ContinuousClock.Instant }
    private struct State {
        var entries: [String: Entry] = [:]
        var releases: [String: ReleaseRecord] = [:]
        /// Bumped per topic at every invalidation, so that a read that raced a write does not
        /// store what it read before the write.
        var generation: [Topic: UInt64] = [:]
    }
    private let state = Mutex(State())
    let maxAge: Swift.Duration
    /// The device cells and gate telemetry, kept whole and read again only where changed.
    let feeds: ChangeFeeds

    /// The times devices were last seen by check-ins that changed nothing else, not written yet.
    let seen: SeenBatch

    /// `fullReadEvery`: how often the feeds read their tables whole anyway.
    init(maxAge: Swift.Duration = .seconds(2), fullReadEvery: Swift.Duration = .seconds(600), seen: SeenBatch = SeenBatch()) {
        self.maxAge = maxAge
        feeds = ChangeFeeds(fullEvery: fullReadEvery)
        self.seen = seen
    }

    func release(_ id: String) -> ReleaseRecord? { state.withLock { $0.releases[id] } }
    func keep(release: ReleaseRecord) {
        state.withLock { s in
            if s.releases.count > 10_000 { s.releases.removeAll() }
            s.releases[release.id] = release
        }
    }

    /// The cached value of `key` under `topic`, or `load()`'s, kept unless the topic changed meanwhile.
    func value<T: Sendable>(_ topic: Topic, _ key: String, _ load: () async throws -> T) async throws -> T {
        let full = topic.rawValue + "/" + key
        let now = ContinuousClock.now
        let (hit, generation): (T?, UInt64) = state.withLock { s in
            if let e = s.entries[full], now - e.at < maxAge, let v = e.value as? T { return (v, 0) }
            return (nil, s.generation[topic, default: 0])
        }
        if let hit { return hit }
        let fresh = try await load()
        state.withLock { s in
            guard s.generation[topic, default: 0] == generation else { return }
            if s.entries.count > 50_000 { s.entries.removeAll() }
            s.entries[full] = Entry(value: fresh, at: now)
        }
        return fresh
    }

    /// After this process wrote part of `key`'s value: the cached copy, if any, changed by
    /// `change` instead of dropped (the next read need not go to the database); a read that raced
    /// the write is kept out, and the topic's other entries are dropped as by `invalidate`.
    func patch<T: Sendable>(_ topic: Topic, _ key: String, _ change: (inout T) -> Void) {
        state.withLock { s in
            s.generation[topic, default: 0] &+= 1
            let full = topic.rawValue + "/" + key, prefix = topic.rawValue + "/"
            let kept = s.entries[full]
            s.entries = s.entries.filter { !$0.key.hasPrefix(prefix) }
            guard var entry = kept, var value = entry.value as? T else { return }
            change(&value)
            entry.value = value
            s.entries[full] = entry
        }
    }

    func invalidate(_ topic: Topic) {
        state.withLock { s in
            s.generation[topic, default: 0] &+= 1
            let prefix = topic.rawValue + "/"
            s.entries = s.entries.filter { !$0.key.hasPrefix(prefix) }
        }
    }

    /// Everything is read again (the feeds whole): what changed meanwhile may not have been announced.
    func invalidateAll() {
        for t in Topic.allCases { invalidate(t) }
        feeds.resetAll()
    }
}

/// The last-seen times of idle check-ins, and the held-back models of check-ins that changed
/// nothing else (a rollout's phase reached a device's cell, or not yet), gathered and written
/// together: one statement for many devices instead of a write per check-in. A batch is due once
/// it holds `maxDevices` devices or its first entry is `maxDelay` old; until written, this
/// process's reads see what is pending (other replicas see it after the write, `maxDelay` later
/// at most while check-ins go on). Losing a pending batch (a crash) loses only what the devices'
/// next check-ins work out and write again.
final class SeenBatch: Sendable {
    /// When a device was last seen and, if its check-in changed them, the models it is held back
    /// on (nil: unchanged by the check-ins batched here).
    struct Seen: Sendable, Equatable {
        var at: Int64
        var held: [String: String]? = nil

        /// The later of two; a held set recorded earlier stays unless a later one replaces it.
        func merged(_ other: Seen) -> Seen {
            let (older, newer) = other.at >= at ? (self, other) : (other, self)
            return Seen(at: newer.at, held: newer.held ?? older.held)
        }
    }
    private struct State {
        var pending: [String: Seen] = [:]
        var since: ContinuousClock.Instant? = nil
    }
    private let state = Mutex(State())
    let maxDevices: Int
    let maxDelay: Swift.Duration

    init(maxDevices: Int = 2_000, maxDelay: Swift.Duration = .seconds(1)) {
        self.maxDevices = maxDevices; self.maxDelay = maxDelay
    }

    /// Records that `id` was seen at `time` (and held back on `held`, if given); true when the
    /// batch is due to be written.
    func add(_ id: String, at time: Int64, held: [String: String]? = nil, now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { s in
            if s.pending.isEmpty { s.since = now }
            let seen = Seen(at: time, held: held)
            s.pending[id] = s.pending[id].map { $0.merged(seen) } ?? seen
            return s.pending.count >= maxDevices || s.since.map { now - $0 >= maxDelay } ?? false
        }
    }

    /// The pending entries, taken out (to be written by the caller).
    func take() -> [String: Seen] {
        state.withLock { s in
            defer { s.pending = [:]; s.since = nil }
            return s.pending
        }
    }

    /// Puts back entries whose write failed; what was recorded since wins where it is later.
    func restore(_ entries: [String: Seen], now: ContinuousClock.Instant = .now) {
        state.withLock { s in
            if s.pending.isEmpty { s.since = now }
            s.pending.merge(entries) { current, failed in current.merged(failed) }
        }
    }

    /// Forgets what is pending for `id`: its whole row is being written now.
    func discard(_ id: String) { state.withLock { _ = $0.pending.removeValue(forKey: id) } }

    func pending(_ id: String) -> Seen? { state.withLock { $0.pending[id] } }
    var isEmpty: Bool { state.withLock { $0.pending.isEmpty } }

    /// `record` with what is pending for it, where that is later than the stored row.
    func overlay(_ record: DeviceRecord) -> DeviceRecord {
        guard let p = pending(record.id), p.at >= record.lastSeen, p.at > record.lastSeen || p.held != nil else { return record }
        var r = record
        r.lastSeen = p.at
        if let held = p.held { r.held = held }
        return r
    }
}

/// Listens for other replicas' announcements on a connection of its own and drops the cache
/// entries they name; drops everything after a reconnect.
final class StoreCacheListener: Service, Sendable {
    let location: PostgresLocation
    let cache: StoreCache
    let logger: Logger

    init(location: PostgresLocation, cache: StoreCache, logger: Logger) {
        self.location = location; self.cache = cache; self.logger = logger
    }

    func run() async throws {
        // While the connection is down, entries expire by age (`cacheSeconds`).
        await location.keepSession(id: 2, what: "cache listener", retry: .seconds(1), logger: logger, lost: { self.cache.invalidateAll() })
        { connection in
            try await cancelWhenGracefulShutdown {
                try await connection.listen(on: StoreCache.channel) { notifications in
                    // LISTEN is in force from here: what was missed before is read again.
                    self.cache.invalidateAll()
                    for try await n in notifications {
                        switch self.cache.topic(announced: n.payload) {
                        case .some(.some(let topic)): self.cache.invalidate(topic)
                        case .some(.none): self.cache.invalidateAll()
                        case .none: break  // this process's own write
                        }
                    }
                }
            }
        }
    }
}

/// Writes pending last-seen times once they are due even when no check-in comes to write them,
/// and what is left at graceful shutdown.
struct SeenFlusher: Service {
    let store: SQLStore
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: store.cache.seen.maxDelay) }
            } catch {
                break  // stopped or cancelled: write what is left below
            }
            await flush()
        }
        await flush()
    }

    private func flush() async {
        do { try await store.flushSeen() } catch {
            // Kept for the next attempt (`flushSeen` puts them back); the devices' next check-ins repeat them anyway.
            logger.warning("cannot write last-seen times", metadata: ["error": "\(error)"])
        }
    }
}
