import FleetCore
import Foundation
import Logging
import PostgresNIO
import TestSupport
import Testing
@testable import FleetController

/// One PostgreSQL server for the store tests of this process, started on first use and stopped
/// (its folder removed) when the process exits: a static is never deinitialised.
enum SharedPostgres {
    static let server: Result<PostgresServer, any Error> = {
        let started = Result { try PostgresServer.start() }
        if case .success = started { atexit { SharedPostgres.stopAtExit() } }
        return started
    }()
    private static func stopAtExit() { if case .success(let s) = server { s.stopAtExit() } }
    /// A new database; stores opened on its URL keep `pool` connections open each (the server
    /// takes 200 in all, and a test process opens many stores).
    static func database(pool: Int = 4) throws -> String { try server.get().createDatabase() + "?pool=\(pool)" }
    /// The database a URL of `database()` names.
    static func name(_ url: String) -> String { String(url.split(separator: "/").last!.split(separator: "?").first!) }
}

enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }

    /// A fresh, migrated store and what it needs removed afterwards.
    func store() async throws -> (SQLStore, location: String) {
        switch self {
        case .sqlite:
            let dir = try TestScratch.directory("store")
            return (try await SQLStore.sqlite(path: dir + "/fleet.sqlite"), dir + "/fleet.sqlite")
        case .postgres:
            let url = try SharedPostgres.database()
            return (try await SQLStore.postgres(try PostgresLocation(url: url), migrate: true, logger: Logger(label: "test")), url)
        }
    }

    /// A fresh database migrated only as far as `version` (as an earlier build left it), and how to
    /// open it as today's store (which migrates it the rest of the way).
    func database(atSchema version: Int) async throws -> (old: any SQLDatabase, reopen: () async throws -> SQLStore) {
        let old: any SQLDatabase
        let reopen: () async throws -> SQLStore
        switch self {
        case .sqlite:
            let dir = try TestScratch.directory("schema-v\(version)")
            old = try SQLiteDatabase(path: dir + "/fleet.sqlite")
            reopen = { try await SQLStore.sqlite(path: dir + "/fleet.sqlite") }
        case .postgres:
            let url = try SharedPostgres.database()
            old = try await PostgresDatabase.connect(try PostgresLocation(url: url), logger: Logger(label: "test"))
            reopen = { try await SQLStore.postgres(try PostgresLocation(url: url), migrate: true, logger: Logger(label: "test")) }
        }
        try await Migrations.run(old, through: version)
        return (old, reopen)
    }

    /// A second store on the same database: another replica.
    func replica(of location: String) async throws -> SQLStore {
        switch self {
        case .sqlite: return try await SQLStore.sqlite(path: location)
        case .postgres:
            return try await SQLStore.postgres(try PostgresLocation(url: location), migrate: true, logger: Logger(label: "test"))
        }
    }
}

private func event(
    _ seq: UInt64, _ kind: String = "metrics", model: String = "m", sha: String? = nil, release: String? = nil,
    detail: String? = nil
) -> StatusEvent {
    StatusEvent(seq: seq, time: 1_800_000_000, kind: kind, model: model, sha256: sha, release: release, detail: detail)
}

private let device = DeviceRecord(
    id: "dev-1", facts: DeviceFacts(arch: "x86_64", cpuFlags: ["avx2"], memoryBytes: 1 << 30, diskFreeBytes: 1 << 30),
    hardwareClass: "x86-avx2", tier: "fibre", installed: [:], phase: nil, status: .idle, statusDetail: nil,
    held: [:], firstSeen: 1, lastSeen: 1, agentVersion: "t")

@Suite("Store on both back ends")
struct StoreBackendTests {
    @Test(arguments: Backend.allCases)
    func eventsAreStoredOncePerSequenceNumber(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        try await store.upsertDevice(device)
        let sha = String(repeating: "a", count: 64)
        let first = try await store.appendEvents(
            deviceId: "dev-1", [event(1), event(2, "committed", sha: sha, release: "m@1"), event(2), event(3)],
            receivedAt: 10)
        #expect(first.stored == 3)
        #expect(first.duplicates == 1)
        #expect(first.ackedThrough == 3)
        let again = try await store.appendEvents(deviceId: "dev-1", [event(3), event(4, "failed", release: "m@1")], receivedAt: 11)
        #expect(again.stored == 1 && again.duplicates == 1 && again.ackedThrough == 4)
        #expect(try await store.events(deviceId: "dev-1", after: 0, limit: 10).map(\.seq) == [1, 2, 3, 4])
        // The commit set what the device runs; the failure is held; the status is the latest install event's.
        let stored = try #require(try await store.device("dev-1"))
        #expect(stored.installed == ["m": sha])
        #expect(stored.status == .failed)
        #expect(try await store.installed(model: "m") == ["dev-1": sha])
        #expect(try await store.failures(deviceId: "dev-1").map(\.release) == ["m@1"])
    }

    @Test(arguments: Backend.allCases)
    func twoReplicasIngestingTheSameBatchesStoreEachEventOnce(_ backend: Backend) async throws {
        let (a, location) = try await backend.store()
        let b = try await backend.replica(of: location)
        defer {
            Task {
                await a.db.close(); await b.db.close()
            }
        }
        try await a.upsertDevice(device)
        var batches: [[StatusEvent]] = []
        for i in 0..<20 {  // overlapping batches
            let first = UInt64(i * 5 + 1)
            batches.append((first...(first + 7)).map { event($0) })
        }
        let totals = try await withThrowingTaskGroup(of: EventIngest.self) { group in
            for batch in batches {
                group.addTask { try await a.appendEvents(deviceId: "dev-1", batch, receivedAt: 1) }
                group.addTask { try await b.appendEvents(deviceId: "dev-1", batch, receivedAt: 1) }
            }
            var all: [EventIngest] = []
            for try await r in group { all.append(r) }
            return all
        }
        let distinct = Set(batches.flatMap { (b: [StatusEvent]) in b.map { $0.seq } }).count
        let stored = totals.reduce(0) { $0 + $1.stored }
        #expect(stored == distinct)
        #expect(try await a.events(deviceId: "dev-1", after: 0, limit: 1000).count == distinct)
    }

    @Test(arguments: Backend.allCases)
    func assignmentCountersNeverGoBackAcrossReplicas(_ backend: Backend) async throws {
        let (a, location) = try await backend.store()
        let b = try await backend.replica(of: location)
        defer {
            Task {
                await a.db.close(); await b.db.close()
            }
        }
        let env = Envelope(payloadType: "t", payloadBytes: Array("{}".utf8))
        func record(_ counter: UInt64) -> AssignmentRecord {
            AssignmentRecord(
                deviceId: "dev-1", model: "m", counter: counter, releaseId: "m@1", variant: "fp32", sha256: "s", packageSha256: "s",
                envelope: env, expiresAt: 100)
        }
        // Both replicas race to sign the first assignment, then the next one from counter 1.
        let firsts = try await [a.replaceAssignment(record(1), expectedCounter: nil), b.replaceAssignment(record(1), expectedCounter: nil)]
        #expect(firsts.filter { $0 }.count == 1)
        async let x = a.replaceAssignment(record(2), expectedCounter: 1)
        async let y = b.replaceAssignment(record(2), expectedCounter: 1)
        #expect(try await [x, y].filter { $0 }.count == 1)
        #expect(try await a.replaceAssignment(record(3), expectedCounter: 1) == false)  // stale
        #expect(try await b.assignment(deviceId: "dev-1", model: "m")?.counter == 2)
    }

    @Test(arguments: Backend.allCases)
    func aRolloutsFirstSendIsRecordedWithItsAssignmentOrNotAtAll(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        let env = Envelope(payloadType: "t", payloadBytes: Array("{}".utf8))
        func record(_ counter: UInt64) -> AssignmentRecord {
            AssignmentRecord(
                deviceId: "dev-1", model: "m", counter: counter, releaseId: "m@2", variant: "fp32", sha256: "s", packageSha256: "s",
                envelope: env, expiresAt: 100)
        }
        let reach = RolloutReach(rollout: 7, priorRelease: "m@1", priorSha256: "p", at: 40)
        #expect(try await store.replaceAssignment(record(1), expectedCounter: nil, reaching: reach))
        let reached = try #require(try await store.rolloutDevice(rollout: 7, deviceId: "dev-1"))
        #expect(reached.priorRelease == "m@1" && reached.priorSha256 == "p" && reached.assignedAt == 40)
        #expect(try await store.priorReleases(rollout: 7) == ["m@1"])
        // An assignment that loses its race records nothing for the rollout.
        let lost = RolloutReach(rollout: 8, priorRelease: "m@0", priorSha256: "q", at: 41)
        #expect(try await store.replaceAssignment(record(5), expectedCounter: 3, reaching: lost) == false)
        #expect(try await store.rolloutDevice(rollout: 8, deviceId: "dev-1") == nil)
        #expect(try await store.priorReleases(rollout: 8).isEmpty)
    }

    @Test(arguments: Backend.allCases)
    func aCellIsReplacedOnlyAtTheRevisionItWasReadAt(_ backend: Backend) async throws {
        let (a, location) = try await backend.store()
        let b = try await backend.replica(of: location)
        defer {
            Task {
                await a.db.close(); await b.db.close()
            }
        }
        let rollout = try await activeRollout(a, strategy: "fast")
        let key = CellKey(hardwareClass: "x86-avx2", tier: "fibre")
        let fresh = StoredCell(state: CellState(phaseStartedAt: 1), cutoff: 0.1)
        // Two replicas open the same cell: one wins, the other reads the winner's.
        async let x = a.replaceCell(rollout: rollout, key, fresh, existed: false)
        async let y = b.replaceCell(rollout: rollout, key, fresh, existed: false)
        #expect(try await [x, y].compactMap { $0 }.count == 1)
        // A tick and an operator read the same copy; the operator's pause lands first.
        let read = try #require(try await a.cells(rollout: rollout)[key])
        var paused = read
        paused.state.status = .paused
        #expect(try await b.replaceCell(rollout: rollout, key, paused, existed: true) != nil)
        var ticked = read
        ticked.state.phase = 1
        #expect(try await a.replaceCell(rollout: rollout, key, ticked, existed: true) == nil)
        let now = try #require(try await a.cells(rollout: rollout)[key])
        #expect(now.state.status == .paused && now.state.phase == 0)
        #expect(now.revision == read.revision + 1)
        // One cell read past the cache, as a check-in about to send the release reads it.
        #expect(try await b.freshCell(rollout: rollout, key) == now)
        #expect(try await b.freshCell(rollout: rollout, CellKey(hardwareClass: "x86-avx2", tier: "cellular")) == nil)
    }

    @Test(arguments: Backend.allCases)
    func aDeltaIsClaimedOnce(_ backend: Backend) async throws {
        let (a, location) = try await backend.store()
        let b = try await backend.replica(of: location)
        defer {
            Task {
                await a.db.close(); await b.db.close()
            }
        }
        async let x = a.claimDelta(base: "b", target: "t", at: 1)
        async let y = b.claimDelta(base: "b", target: "t", at: 1)
        #expect(try await [x, y].filter { $0 }.count == 1)
        #expect(try await a.buildingDeltas().count == 1)
    }

    @Test(arguments: Backend.allCases)
    func migrationsRunOnceAndANewerSchemaIsRefusedUnchanged(_ backend: Backend) async throws {
        let (store, location) = try await backend.store()
        defer { Task { await store.db.close() } }
        #expect(try await Migrations.version(store.db) == Migrations.latest)
        // A second run, and a replica starting, apply nothing.
        #expect(try await Migrations.run(store.db).applied.isEmpty)
        let replica = try await backend.replica(of: location)
        await replica.db.close()
        #expect(try await store.db.scalar("SELECT COUNT(*) AS n FROM schema_migrations").int == Int64(Migrations.latest))
        // A newer build wrote version latest+1: this one refuses it and changes nothing.
        try await store.db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)", [Migrations.latest + 1, "future", 1])
        let error = await #expect(throws: StorageError.self) { try await Migrations.run(store.db) }
        #expect(error?.code == .schemaTooNew)
        let error2 = await #expect(throws: StorageError.self) { _ = try await backend.replica(of: location) }
        #expect(error2?.code == .schemaTooNew)
        #expect(try await store.db.scalar("SELECT COUNT(*) AS n FROM schema_migrations").int == Int64(Migrations.latest + 1))
    }

    /// PostgreSQL (schema 9): a device row written again stays on its page (an update in place,
    /// no new index entries) even when inserts filled the table, as a seeded fleet's are.
    @Test func aDeviceSeenAgainIsUpdatedOnItsOwnPage() async throws {
        let (store, _) = try await Backend.postgres.store()
        defer { Task { await store.db.close() } }
        let ids = (0..<200).map { "dev-" + String(1000 + $0) }
        for id in ids { try await store.upsertDevice(GateFeedTests.device(id)) }
        func page(_ id: String) async throws -> String {
            let ctid = try await store.db.scalar("SELECT ctid::text AS c FROM devices WHERE id = ?", [id]).text ?? ""
            return String(ctid.dropFirst().prefix { $0 != "," })
        }
        var pages: [String] = []
        for id in ids { pages.append(try await page(id)) }
        #expect(Set(pages).count > 2)  // the rows fill several pages
        for id in ids.prefix(5) { try await store.touchDevice(id, lastSeen: 50) }
        try await store.flushSeen()
        for (id, before) in zip(ids.prefix(5), pages) {
            #expect(try await page(id) == before, "\(id)")
            #expect(try await store.db.scalar("SELECT last_seen AS t FROM devices WHERE id = ?", [id]).int == 50)
        }
    }

    @Test(arguments: Backend.allCases)
    func idleCheckInTimesAreWrittenInBatchesAndNeverBackwards(_ backend: Backend) async throws {
        let (store, location) = try await backend.store()
        let other = try await backend.replica(of: location)
        defer {
            Task {
                await store.db.close(); await other.db.close()
            }
        }
        try await store.upsertDevice(device)
        #expect(try await store.deviceExists("dev-1"))
        #expect(try await !store.deviceExists("dev-2"))
        // Pending: this process reads the new time, another replica the stored one.
        try await store.touchDevice("dev-1", lastSeen: 50)
        #expect(try await store.device("dev-1")?.lastSeen == 50)
        #expect(try await other.device("dev-1")?.lastSeen == 1)
        try await store.flushSeen()
        #expect(try await other.device("dev-1")?.lastSeen == 50)
        #expect(store.cache.seen.isEmpty)
        // A later time written by another replica is not moved back by an earlier one.
        try await other.touchDevice("dev-1", lastSeen: 70)
        try await other.flushSeen()
        try await store.touchDevice("dev-1", lastSeen: 60)
        try await store.flushSeen()
        #expect(try await store.device("dev-1")?.lastSeen == 70)
        // Nothing else of the row changes; an unknown device is not created.
        try await store.touchDevice("dev-2", lastSeen: 80)
        try await store.flushSeen()
        #expect(try await store.deviceExists("dev-2") == false)
        var expected = device
        expected.lastSeen = 70
        expected.factsDigest = device.facts.probed.digest  // stored with the facts
        #expect(try await other.device("dev-1") == expected)
    }

    /// A check-in's one read: the device's row and its access, each missing on its own, the
    /// same from the prepared statement every time it runs (PostgreSQL prepares it per connection).
    @Test(arguments: Backend.allCases)
    func aCheckInReadsTheRowAndTheAccessTogether(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        let none = try await store.checkInRecords("dev-1")
        #expect(none.access == nil && none.device == nil)
        try await store.upsertDevice(device)
        for _ in 0..<3 {
            let rowOnly = try await store.checkInRecords("dev-1")
            let row = try await store.device("dev-1")
            #expect(rowOnly.access == nil && rowOnly.device == row && row != nil)
        }
        // Revoked without ever enrolling (open mode): an identity with no certificate.
        _ = try await store.setDeviceAccess("dev-1", .revoked, by: "t", at: 5)
        _ = try await store.setDeviceAccess("dev-9", .revoked, by: "t", at: 5)
        let both = try await store.checkInRecords("dev-1")
        #expect(both.access == DeviceAccessCheck(status: .revoked, fingerprint: nil) && both.device?.id == "dev-1")
        #expect(try await store.deviceAccess("dev-1") == both.access)
        let accessOnly = try await store.checkInRecords("dev-9")
        #expect(accessOnly.access?.status == .revoked && accessOnly.device == nil)
        // Pending last-seen times show, as in `device`.
        try await store.touchDevice("dev-1", lastSeen: 40)
        #expect(try await store.checkInRecords("dev-1").device?.lastSeen == 40)
    }

    /// Held-back models batched with the time: this process reads them at once, another replica
    /// after the write; never written over a later check-in's row, nor over a whole-row write
    /// made after them.
    @Test(arguments: Backend.allCases)
    func heldModelsAreWrittenInBatchesAndNeverOverALaterCheckIn(_ backend: Backend) async throws {
        let (store, location) = try await backend.store()
        let other = try await backend.replica(of: location)
        defer {
            Task {
                await store.db.close(); await other.db.close()
            }
        }
        let phase = ["m": HeldReason.waitingForPhase.rawValue], wave = ["m": HeldReason.waitingForWave.rawValue]
        try await store.upsertDevice(device)
        try await store.touchDevice("dev-1", lastSeen: 50, held: phase)
        #expect(try await store.device("dev-1")?.held == phase)
        #expect(try await other.device("dev-1")?.held == [:])
        try await store.flushSeen()
        let written = try #require(try await other.device("dev-1"))
        #expect(written.held == phase && written.lastSeen == 50)
        // Another replica's later check-in (a whole row) is not overwritten by an earlier batch.
        var later = written
        later.lastSeen = 70
        later.held = wave
        try await other.upsertDevice(later)
        try await store.touchDevice("dev-1", lastSeen: 60, held: [:])
        try await store.flushSeen()
        #expect(try await other.device("dev-1")?.held == wave)
        // A whole-row write in this process drops what was pending for the device.
        try await store.touchDevice("dev-1", lastSeen: 80, held: [:])
        later.lastSeen = 80
        later.installed = ["m": String(repeating: "a", count: 64)]
        try await store.upsertDevice(later)
        try await store.flushSeen()
        let final = try #require(try await other.device("dev-1"))
        #expect(final.held == wave && final.installed == later.installed)
    }

    @Test(arguments: Backend.allCases)
    func aDueBatchIsWrittenByTheCheckInThatMakesItDue(_ backend: Backend) async throws {
        let (base, location) = try await backend.store()
        let store = SQLStore(db: base.db, cache: StoreCache(seen: SeenBatch(maxDevices: 2, maxDelay: .seconds(3600))))
        let other = try await backend.replica(of: location)
        defer {
            Task {
                await base.db.close(); await other.db.close()
            }
        }
        for id in ["dev-1", "dev-2"] {
            var d = device
            d.id = id
            try await store.upsertDevice(d)
        }
        try await store.touchDevice("dev-1", lastSeen: 20)
        #expect(try await other.device("dev-1")?.lastSeen == 1)
        try await store.touchDevice("dev-2", lastSeen: 30)
        #expect(try await other.device("dev-1")?.lastSeen == 20)
        #expect(try await other.device("dev-2")?.lastSeen == 30)
        #expect(store.cache.seen.isEmpty)
    }

    @Test func aBatchIsDueByCountOrByAge() {
        let batch = SeenBatch(maxDevices: 3, maxDelay: .seconds(1))
        let t0 = ContinuousClock.now
        #expect(!batch.add("a", at: 5, now: t0))
        #expect(!batch.add("a", at: 4, now: t0 + .milliseconds(100)))  // the later time is kept
        #expect(batch.pending("a") == .init(at: 5))
        #expect(!batch.add("b", at: 5, now: t0 + .milliseconds(200)))
        #expect(batch.add("c", at: 5, now: t0 + .milliseconds(300)))
        #expect(batch.take() == ["a": .init(at: 5), "b": .init(at: 5), "c": .init(at: 5)])
        #expect(!batch.add("d", at: 6, now: t0 + .seconds(5)))
        #expect(batch.add("e", at: 6, now: t0 + .seconds(6)))
        let taken = batch.take()
        batch.restore(taken, now: t0 + .seconds(7))
        #expect(batch.add("d", at: 9, now: t0 + .seconds(7)) == false)
        #expect(batch.take() == ["d": .init(at: 9), "e": .init(at: 6)])
    }

    /// Held-back models ride with the time: a later check-in's replace an earlier one's, an idle
    /// check-in after them keeps them, an earlier one (put back after a failed write) does not win.
    @Test func heldModelsInABatchFollowTheLatestCheckIn() {
        let batch = SeenBatch(maxDevices: 100, maxDelay: .seconds(60))
        let phase = ["m": HeldReason.waitingForPhase.rawValue], window = ["m": HeldReason.waitingForWave.rawValue]
        _ = batch.add("a", at: 5, held: phase)
        _ = batch.add("a", at: 7)
        #expect(batch.pending("a") == .init(at: 7, held: phase))
        _ = batch.add("a", at: 8, held: window)
        _ = batch.add("a", at: 6, held: [:])
        #expect(batch.pending("a") == .init(at: 8, held: window))
        let taken = batch.take()
        _ = batch.add("a", at: 9, held: [:])
        batch.restore(taken)
        #expect(batch.pending("a") == .init(at: 9, held: [:]))
        batch.discard("a")
        #expect(batch.isEmpty)
    }

    @Test func concurrentMigrationsOnOneDatabaseApplyEachStepOnce() async throws {
        let url = try SharedPostgres.database()
        let location = try PostgresLocation(url: url)
        let outcomes = try await withThrowingTaskGroup(of: Migrations.Outcome.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let db = try await PostgresDatabase.connect(location, logger: Logger(label: "test"))
                    defer { Task { await db.close() } }
                    return try await Migrations.run(db)
                }
            }
            var all: [Migrations.Outcome] = []
            for try await o in group { all.append(o) }
            return all
        }
        #expect(outcomes.filter { !$0.applied.isEmpty }.count == 1)
        #expect(outcomes.allSatisfy { $0.to == Migrations.latest })
        #expect(
            try SharedPostgres.server.get().psql(SharedPostgres.name(url), "SELECT COUNT(*) FROM schema_migrations")
                == "\(Migrations.latest)")
    }

    @Test func aSQLiteFileFromBeforeVersionedMigrationsKeepsItsData() async throws {
        let dir = NSTemporaryDirectory() + "edgefleet-legacy-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The schema of earlier builds: no schema_migrations, events without fault/retry_at,
        // history points without an id column.
        let old = try SQLiteDatabase(path: dir + "/fleet.sqlite")
        try await old.execute(
            """
            CREATE TABLE events (device_id TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL, kind TEXT NOT NULL,
                model TEXT, sha256 TEXT, release TEXT, detail TEXT, received_at INTEGER NOT NULL, PRIMARY KEY (device_id, seq))
            """)
        try await old.execute("INSERT INTO events VALUES ('dev-1', 1, 5, 'metrics', 'm', NULL, 'm@1', '{}', 5)")
        try await old.execute(
            "CREATE TABLE rollout_history (rollout_id INTEGER NOT NULL, cell TEXT NOT NULL, at INTEGER NOT NULL, body TEXT NOT NULL)")
        let point = CellHistoryPoint(at: 7, phase: 0, status: .running, targeted: 1, committed: 0, failed: 0)
        try await old.execute(
            "INSERT INTO rollout_history VALUES (1, 'c/t', 7, ?)", [String(decoding: try FleetJSON.encode(point), as: UTF8.self)])
        let store = try await SQLStore.sqlite(path: dir + "/fleet.sqlite")
        #expect(try await Migrations.version(store.db) == Migrations.latest)
        #expect(try await store.events(deviceId: "dev-1", after: 0, limit: 10).map(\.seq) == [1])
        #expect(try await store.history(rollout: 1)["c/t"] == [point])
        // The added columns work.
        let ingest = try await store.appendEvents(
            deviceId: "dev-1", [StatusEvent(seq: 2, time: 6, kind: "failed", fault: "hash-mismatch")], receivedAt: 6)
        #expect(ingest.stored == 1)
        #expect(try await store.events(deviceId: "dev-1", limit: 1).first?.fault == "hash-mismatch")
    }

    @Test func aRowWithAMissingValueIsACorruptError() async throws {
        let (store, _) = try await Backend.sqlite.store()
        try await store.db.execute(
            """
            INSERT INTO devices (id, facts, hardware_class, tier, installed, phase, status, status_detail, held, first_seen, last_seen, agent_version)
            VALUES ('dev-1', 'not json', NULL, NULL, '{}', NULL, 'idle', NULL, '{}', 1, 1, NULL)
            """)
        let error = await #expect(throws: StorageError.self) { _ = try await store.device("dev-1") }
        #expect(error?.code == .corrupt)
    }
}

@Suite("Leader election on PostgreSQL")
struct LeaderElectionTests {
    @Test func oneLeaderAtATimeAndTheLeaseMovesWhenTheHolderGoes() async throws {
        let url = try SharedPostgres.database()
        let location = try PostgresLocation(url: url)
        let a = try await SQLStore.postgres(location, migrate: true, logger: Logger(label: "a"))
        let b = try await SQLStore.postgres(location, migrate: true, logger: Logger(label: "b"))
        defer {
            Task {
                await a.db.close(); await b.db.close()
            }
        }
        let fa = LeaseFence(), fb = LeaseFence()
        let ea = LeaderElector(
            location: location, store: a, fence: fa, replica: "a", interval: .milliseconds(100), logger: Logger(label: "a"))
        let eb = LeaderElector(
            location: location, store: b, fence: fb, replica: "b", interval: .milliseconds(100), logger: Logger(label: "b"))
        let ta = Task { try await ea.run() }
        let tb = Task { try await eb.run() }
        defer { ta.cancel(); tb.cancel() }
        try await waitUntil("a leader is elected") { fa.isLeader || fb.isLeader }
        #expect(fa.isLeader != fb.isLeader)
        let (leader, leaderTask, follower, followerStore) = fa.isLeader ? (fa, ta, fb, b) : (fb, tb, fa, a)
        let leaderStore = fa.isLeader ? a : b
        let oldEpoch = try #require(leader.epoch)
        // The leader's fenced writes go through while it holds the lease.
        try await leaderStore.fenced(leader).setRolloutState(1, .active)
        // The holder goes away: its session ends and the other replica takes over.
        let stale = LeaseFence()
        stale.set(oldEpoch)
        leaderTask.cancel()
        try await waitUntil("the follower takes over") { follower.isLeader }
        #expect(try #require(follower.epoch) > oldEpoch)
        // A write fenced by the old epoch is refused.
        let error = await #expect(throws: StorageError.self) { try await followerStore.fenced(stale).setRolloutState(1, .aborted) }
        #expect(error?.code == .fenced)
    }
}

/// Model m, its release m@1 and an active rollout of it (what a rollout's cells belong to); the rollout's id.
func activeRollout(_ store: SQLStore, strategy: String = "all") async throws -> Int64 {
    try await store.createModel(ModelRecord(name: "m", minQuality: nil, createdAt: 1))
    try await store.createRelease(
        ReleaseRecord(
            id: "m@1", model: "m", version: "1", serial: 1,
            catalogEnvelope: Envelope(payloadType: "t", payloadBytes: Array("{}".utf8)), catalogSha256: "s",
            catalog: ReleaseCatalog(model: "m", version: "1", serial: 1, expiresAt: 2, variants: [], hardwareClasses: []),
            createdAt: 1))
    return try await store.createRollout(
        RolloutRecord(id: 0, releaseId: "m@1", model: "m", strategy: strategy, state: .active, createdAt: 1), superseding: []
    ).id
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
func waitUntil(_ what: String, seconds: Double = 20, _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    // Once more at the deadline: a test not scheduled until after it still sees what happened.
    if try await condition() { return }
    Issue.record("timed out waiting until \(what)")
    throw CancellationError()
}

/// Two replicas on one database: a writer, and a reader whose cached entries would otherwise
/// live for an hour, so that only its listener (NOTIFY) refreshes them.
private struct ListeningReplicas {
    let writer: SQLStore
    let reader: SQLStore
    let listening: Task<Void, any Error>

    static func start() async throws -> ListeningReplicas {
        let location = try PostgresLocation(url: try SharedPostgres.database())
        let writer = try await SQLStore.postgres(location, migrate: true, logger: Logger(label: "b"))
        let cache = StoreCache(maxAge: .seconds(3600))
        let reader = SQLStore(db: try await PostgresDatabase.connect(location, logger: Logger(label: "a")), cache: cache)
        let listener = StoreCacheListener(location: location, cache: cache, logger: Logger(label: "a"))
        return ListeningReplicas(writer: writer, reader: reader, listening: Task { try await listener.run() })
    }

    func stop() {
        listening.cancel()
        Task {
            await writer.db.close(); await reader.db.close()
        }
    }

    /// Waits until the reader sees a model the writer makes now, after it cached its absence:
    /// the listener is up, and every announcement committed before has arrived (they arrive in
    /// commit order).
    func announcementsArrived(probe: String) async throws {
        #expect(try await reader.model(probe) == nil)
        try await writer.createModel(ModelRecord(name: probe, minQuality: nil, createdAt: 1))
        try await waitUntil("the reader sees model \(probe)") { try await reader.model(probe) != nil }
    }
}

@Suite("Replica caches on PostgreSQL")
struct StoreCacheTests {
    @Test func anotherReplicasWriteDropsTheCachedCopyThroughNotify() async throws {
        let replicas = try await ListeningReplicas.start()
        defer { replicas.stop() }
        let (writer, reader) = (replicas.writer, replicas.reader)
        try await writer.createModel(ModelRecord(name: "m", minQuality: nil, createdAt: 1))
        try await writer.createRelease(
            ReleaseRecord(
                id: "m@1", model: "m", version: "1", serial: 1,
                catalogEnvelope: Envelope(payloadType: "t", payloadBytes: Array("{}".utf8)), catalogSha256: "s",
                catalog: ReleaseCatalog(model: "m", version: "1", serial: 1, expiresAt: 2, variants: [], hardwareClasses: []),
                createdAt: 1))
        #expect(try await reader.activeRollouts().isEmpty)  // cached now
        try await replicas.announcementsArrived(probe: "probe")
        let rollout = try await writer.createRollout(
            RolloutRecord(id: 0, releaseId: "m@1", model: "m", strategy: "all", state: .active, createdAt: 1), superseding: [])
        try await waitUntil("the reader sees the new rollout") { try await reader.activeRollouts().map(\.id) == [rollout.id] }
        try await writer.setRolloutState(rollout.id, .aborted)
        try await waitUntil("the reader sees it aborted") { try await reader.activeRollouts().first?.state == .aborted }
    }

    /// A cell write made with `announce: false` (a tick that only counted installs) leaves the
    /// other replicas' copies alone; one that changes what check-ins decide by drops them.
    @Test func cellWritesThatCheckInsDoNotDecideByAreNotAnnounced() async throws {
        let replicas = try await ListeningReplicas.start()
        defer { replicas.stop() }
        let (writer, reader) = (replicas.writer, replicas.reader)
        let rollout = try await activeRollout(writer)
        let key = CellKey(hardwareClass: "x86-avx2", tier: "fibre", wave: nil)
        try await replicas.announcementsArrived(probe: "probe-1")
        try await writer.saveCell(rollout: rollout, key, StoredCell(state: CellState(phaseStartedAt: 1), cutoff: 0.05))
        try await waitUntil("the reader sees the new cell") { try await reader.cells(rollout: rollout)[key] != nil }
        let copy = try #require(try await reader.cells(rollout: rollout)[key])
        // Counted installs only: written, not announced.
        var counted = try #require(try await writer.freshCell(rollout: rollout, key))
        counted.observation = CellObservation(targeted: 3, committed: 2)
        let saved = try #require(try await writer.replaceCell(rollout: rollout, key, counted, existed: true, announce: false))
        // Had the cell write been announced, it would have arrived before this later one.
        try await replicas.announcementsArrived(probe: "probe-2")
        #expect(try await reader.cells(rollout: rollout)[key] == copy)
        #expect(try await reader.freshCell(rollout: rollout, key)?.observation == counted.observation)
        // The next phase: announced, the copy is dropped.
        var next = saved
        next.state = CellState(phase: 1, phaseStartedAt: 2)
        next.cutoff = 1
        _ = try #require(try await writer.replaceCell(rollout: rollout, key, next, existed: true, announce: true))
        try await waitUntil("the reader sees the next phase") { try await reader.cells(rollout: rollout)[key]?.state.phase == 1 }
    }
}

@Suite("Replica caches: what this process writes")
struct StoreCacheOwnWritesTests {
    /// A cell this process writes goes into its cached copy of the rollout's cells: the next read
    /// answers from the copy (a row changed behind the cache's back is not seen), with the
    /// written cell and its new revision.
    @Test(arguments: Backend.allCases)
    func aCellThisProcessWritesIsPutIntoItsCachedCopy(_ backend: Backend) async throws {
        let (base, _) = try await backend.store()
        let store = SQLStore(db: base.db, cache: StoreCache(maxAge: .seconds(3600)))
        defer { Task { await store.db.close() } }
        let rollout = try await activeRollout(store)
        let a = CellKey(hardwareClass: "x86-avx2", tier: "fibre", wave: nil)
        let b = CellKey(hardwareClass: "arm-dotprod", tier: "fibre", wave: nil)
        let first = StoredCell(state: CellState(phaseStartedAt: 1), cutoff: 0.05)
        try await store.saveCell(rollout: rollout, a, first)
        try await store.saveCell(rollout: rollout, b, first)
        let cached = try await store.cells(rollout: rollout)  // read once, cached for an hour
        #expect(cached.count == 2)
        // Changed behind the cache (no announcement): the copy still answers.
        var behind = first
        behind.cutoff = 0.9
        try await store.db.execute(
            "UPDATE rollout_cells SET body = ? WHERE rollout_id = ? AND cell = ?", [try store.json(behind), rollout, b.description])
        var next = try #require(cached[a])
        next.cutoff = 0.25
        let written = try #require(try await store.replaceCell(rollout: rollout, a, next, existed: true))
        let after = try await store.cells(rollout: rollout)
        #expect(after[a] == written && after[a]?.cutoff == 0.25 && after[a]?.revision == cached[a]!.revision + 1)
        #expect(after[b] == cached[b])
        // A write that lost (its revision is stale) drops the copy: the next read is the database's.
        var stale = next
        stale.cutoff = 0.5
        #expect(try await store.replaceCell(rollout: rollout, a, stale, existed: true) == nil)
        let reread = try await store.cells(rollout: rollout)
        #expect(reread[a]?.cutoff == 0.25 && reread[b]?.cutoff == 0.9)
    }

    /// Announcements name their sender: a listener passes over its own process's, acts on
    /// another's, and reads everything again on one it cannot read.
    @Test func announcementsFromThisProcessArePassedOver() {
        let mine = StoreCache(), theirs = StoreCache()
        #expect(mine.origin != theirs.origin)
        #expect(mine.topic(announced: mine.announcement(.cells)) == nil)
        #expect(mine.topic(announced: theirs.announcement(.cells)) == .some(.cells))
        #expect(mine.topic(announced: "rollouts") == .some(.rollouts))  // an older replica's
        #expect(mine.topic(announced: "something-new@x") == .some(nil))
    }
}

@Suite("Connection pool on PostgreSQL")
struct PostgresPoolTests {
    /// The pool's connections to this database, as PostgreSQL counts them (psql's own left out).
    private func connections(_ url: String) throws -> Int {
        return Int(
            try SharedPostgres.server.get().psql(
                SharedPostgres.name(url),
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")) ?? -1
    }

    /// Every connection stays open (no idle timer, no keep-alive ping armed at each release); one
    /// that PostgreSQL drops is opened again, and a statement after the drop still runs.
    @Test func thePoolKeepsItsConnectionsOpenAndReplacesDroppedOnes() async throws {
        let url = try SharedPostgres.database(pool: 3)
        let db = try await PostgresDatabase.connect(try PostgresLocation(url: url), logger: Logger(label: "test"))
        defer { Task { await db.close() } }
        try await waitUntil("the pool holds its 3 connections") { try connections(url) == 3 }

        let ended = try SharedPostgres.server.get().psql(
            SharedPostgres.name(url),
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()) t"
        )
        #expect(ended == "3")
        // A statement on a dropped connection fails as a database error, at most once per
        // connection; then the pool's new connections answer.
        var failures = 0, answered = false
        let deadline = ContinuousClock.now + .seconds(20)
        while !answered, ContinuousClock.now < deadline {
            do {
                answered = try await db.query("SELECT 1 AS one", []).first?.int("one") == 1
            } catch let e as StorageError {
                #expect(e.code == .database)
                failures += 1
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        #expect(answered)
        #expect(failures <= 3)
        try await waitUntil("the pool holds 3 connections again") { try connections(url) == 3 }
    }

    /// A statement whose answer can never come (as when postgres-nio drops a statement written to a
    /// channel that has just closed) fails with a `database` error once its connection is closed,
    /// and a statement on an open connection runs as long as it takes.
    @Test func aStatementOnAConnectionThatClosesFailsAndALongOneOnAnOpenConnectionFinishes() async throws {
        let location = try PostgresLocation(url: try SharedPostgres.database())
        let connection = try await PostgresConnection.connect(
            configuration: location.connectionConfiguration, id: 7, logger: Logger(label: "test"))
        let statements = PostgresStatements(period: .milliseconds(100))

        // Longer than ten sweeps, on an open connection: not cut short.
        let slept = try await statements.run(on: connection) {
            var n = 0
            for try await _ in try await connection.query("SELECT pg_sleep(1.2)", logger: Logger(label: "test")) { n += 1 }
            return n
        }
        #expect(slept == 1)
        #expect(statements.inFlight == 0)

        // A body that never returns, as a dropped statement's: the server ends the connection.
        let never = AsyncStream<Int>.makeStream()
        defer { never.continuation.finish() }  // lets the body end (with -1) whatever happened
        let waiting = Task {
            try await statements.run(on: connection) { () async throws -> Int in
                for await v in never.stream { return v }
                return -1
            }
        }
        try await waitUntil("the statement is in flight") { statements.inFlight == 1 }
        let ended = try SharedPostgres.server.get().psql(
            location.database,
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()) t"
        )
        #expect(ended == "1")
        try await waitUntil("the statement fails") { statements.inFlight == 0 }
        never.continuation.finish()
        let outcome = await waiting.result
        #expect(throws: StorageError.self) { try outcome.get() }
        if case .failure(let e as StorageError) = outcome { #expect(e.code == .database) }
        #expect(statements.inFlight == 0)

        // A statement on the closed connection fails at once.
        await #expect(throws: StorageError.self) {
            try await statements.run(on: connection) { 1 }
        }
    }
}
