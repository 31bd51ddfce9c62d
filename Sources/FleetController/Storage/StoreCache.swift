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

    /// `fullReadEvery`: how often the feeds read their tables whole anyway.
    init(maxAge: Swift.Duration = .seconds(2), fullReadEvery: Swift.Duration = .seconds(600)) {
        self.maxAge = maxAge
        feeds = ChangeFeeds(fullEvery: fullReadEvery)
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
                        if let topic = StoreCache.Topic(rawValue: n.payload) {
                            self.cache.invalidate(topic)
                        } else {
                            self.cache.invalidateAll()
                        }
                    }
                }
            }
        }
    }
}
