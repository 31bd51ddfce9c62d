import FleetCore
import Foundation
import Logging
import Testing
@testable import FleetController

/// The gate tick reads devices and telemetry from per-process copies brought up to date by change
/// revisions, and from latest-outcome tables kept at ingest. These tests hold them to the slow
/// path (every row read, every event scanned) on the same data.
@Suite("Gate feeds on both back ends")
struct GateFeedTests {
    static func device(
        _ id: String, class cls: String = "x86-avx2", tier: String = "fibre", labels: [String: String]? = nil,
        lastSeen: Int64 = 1
    ) -> DeviceRecord {
        var facts = DeviceFacts(arch: "x86_64", cpuFlags: ["avx2"], memoryBytes: 1 << 30, diskFreeBytes: 1 << 30)
        facts.labels = labels
        return DeviceRecord(
            id: id, facts: facts, hardwareClass: cls, tier: tier, installed: [:], phase: nil, status: .idle, statusDetail: nil,
            held: [:], firstSeen: 1, lastSeen: lastSeen, agentVersion: "t")
    }

    static func sortedCells(_ cells: [DeviceCellRecord]) -> [DeviceCellRecord] { cells.sorted { $0.id < $1.id } }

    /// Hashed from the digest's bytes now, without the hex round trip: every position is the same.
    @Test func cohortPositionsAreTheSameAsBefore() {
        for i in 0..<500 {
            let device = "dev-\(i)"
            var v: UInt64 = 0
            for b in Hex.decode(Digest.sha256Hex(Array("42\u{0}\(device)".utf8)))!.prefix(8) { v = v << 8 | UInt64(b) }
            #expect(Cohort.position(rollout: "42", device: device) == Double(v >> 11) / Double(1 << 53))
        }
    }

    @Test(arguments: Backend.allCases)
    func aDeviceWrittenByAnotherReplicaIsSeenAtTheNextRead(_ backend: Backend) async throws {
        let (a, location) = try await backend.store()
        let b = try await backend.replica(of: location)
        defer {
            Task {
                await a.db.close(); await b.db.close()
            }
        }
        try await a.upsertDevice(Self.device("dev-1"))
        let first = try await a.deviceCellSnapshot()
        #expect(first.records.map(\.id) == ["dev-1"])
        // Nothing changed: the same version (a member list derived from it is kept).
        #expect(try await a.deviceCellSnapshot().version == first.version)
        // A check-in that changes only its time does not change the cells.
        try await b.upsertDevice(Self.device("dev-1", lastSeen: 99))
        #expect(try await a.deviceCellSnapshot().version == first.version)

        // Another replica adds a device, moves one to another tier and labels it.
        try await b.upsertDevice(Self.device("dev-2", class: "arm64-dotprod", labels: ["region": "eu-west"]))
        try await b.upsertDevice(Self.device("dev-1", tier: "cellular"))
        _ = try await b.updateOperatorLabels(deviceId: "dev-1", set: ["owner": "team-a"], remove: [])
        let second = try await a.deviceCellSnapshot()
        #expect(second.version != first.version)
        #expect(Self.sortedCells(second.records) == Self.sortedCells(try await a.deviceCellsReadingAll()))
        let one = try #require(second.records.first { $0.id == "dev-1" })
        #expect(one.tier == "cellular" && one.labels == ["owner": "team-a"])
        #expect(second.records.first { $0.id == "dev-2" }?.labels == ["region": "eu-west"])

        // Labels removed elsewhere, and a read after the feed was reset (a reconnect) reads whole.
        _ = try await b.updateOperatorLabels(deviceId: "dev-1", set: [:], remove: ["owner"])
        #expect(try await a.deviceCells().first { $0.id == "dev-1" }?.labels == [:])
        a.cache.invalidateAll()
        #expect(Self.sortedCells(try await a.deviceCells()) == Self.sortedCells(try await a.deviceCellsReadingAll()))
    }

    @Test(arguments: Backend.allCases)
    func latestOutcomesAndMetricsMatchTheEventsOnARandomFleet(_ backend: Backend) async throws {
        let (store, location) = try await backend.store()
        let other = try await backend.replica(of: location)
        defer {
            Task {
                await store.db.close(); await other.db.close()
            }
        }
        var rng = SeededGenerator(seed: 7)
        let releases = ["m@1", "m@2", "n@1"],
            kinds = ["started", "downloaded", "activated", "committed", "failed", "rolled-back", "rejected"]
        var nextSeq: [String: UInt64] = [:]
        var sent: [String: [StatusEvent]] = [:]
        for round in 0..<6 {
            for i in 0..<60 {
                let id = "dev-\(i)"
                let writer = Bool.random(using: &rng) ? store : other
                if round == 0 { try await writer.upsertDevice(Self.device(id)) }
                var batch: [StatusEvent] = []
                for _ in 0..<Int.random(in: 0...4, using: &rng) {
                    let seq = (nextSeq[id] ?? 0) + UInt64.random(in: 1...2, using: &rng)  // gaps, as a dropped outbox leaves
                    nextSeq[id] = seq
                    let release = releases.randomElement(using: &rng)!
                    let model = String(release.prefix(1))
                    if Bool.random(using: &rng) {
                        let detail =
                            Int.random(in: 0..<8, using: &rng) == 0
                            ? "not json"
                            : "{\"latencyP50Ms\":\(Int.random(in: 1...50, using: &rng)),\"latencyP95Ms\":80,\"errorRate\":0.01,\"requests\":10,\"crashes\":0}"
                        batch.append(StatusEvent(seq: seq, time: 1, kind: "metrics", model: model, release: release, detail: detail))
                    } else {
                        batch.append(
                            StatusEvent(seq: seq, time: 1, kind: kinds.randomElement(using: &rng)!, model: model, release: release))
                    }
                }
                // An agent that heard no acknowledgement sends earlier events again with the new ones.
                if let old = sent[id], !old.isEmpty, Bool.random(using: &rng) { batch = Array(old.suffix(2)) + batch }
                sent[id, default: []] += batch
                _ = try await writer.appendEvents(deviceId: id, batch, receivedAt: Int64(100 * (round + 1)))
            }
            // Read between rounds, so that the copies are brought up to date piecewise.
            for release in releases {
                #expect(
                    try await store.installOutcomes(release: release) == (try await store.installOutcomesScanningEvents(release: release)))
            }
            for model in ["m", "n"] {
                for since: Int64 in [0, 200, Int64(100 * (round + 1))] {
                    let fast = try await store.latestRuntimeMetrics(model: model, since: since)
                    let slow = try await store.runtimeMetricsScanningEvents(model: model, since: since)
                    #expect(
                        fast == Dictionary(uniqueKeysWithValues: slow.map { ($0.deviceId, $0) }),
                        "model \(model) since \(since), round \(round)")
                }
            }
        }
    }

    @Test(arguments: Backend.allCases)
    func aRepeatedOrOlderEventChangesNoLatestOutcome(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        try await store.upsertDevice(Self.device("dev-1"))
        let batch = [
            StatusEvent(seq: 5, time: 1, kind: "started", model: "m", release: "m@1"),
            StatusEvent(seq: 6, time: 1, kind: "committed", model: "m", release: "m@1")
        ]
        _ = try await store.appendEvents(deviceId: "dev-1", batch, receivedAt: 10)
        #expect(try await store.installOutcomes(release: "m@1") == ["dev-1": "committed"])
        // The same batch again (no acknowledgement came back), and one the outbox held back with a lower seq.
        let again = try await store.appendEvents(deviceId: "dev-1", batch, receivedAt: 11)
        #expect(again.stored == 0)
        _ = try await store.appendEvents(
            deviceId: "dev-1", [StatusEvent(seq: 4, time: 1, kind: "failed", model: "m", release: "m@1")], receivedAt: 12)
        #expect(try await store.installOutcomes(release: "m@1") == ["dev-1": "committed"])
        #expect(try await store.installOutcomesScanningEvents(release: "m@1") == ["dev-1": "committed"])
        #expect(try await store.db.scalar("SELECT COUNT(*) AS n FROM latest_install_outcomes").int == 1)

        // A transaction that dies after storing the event leaves neither the event nor its outcome.
        struct Crash: Error {}
        let lost = StatusEvent(seq: 7, time: 1, kind: "rolled-back", model: "m", release: "m@1")
        await #expect(throws: Crash.self) {
            try await store.write { tx in
                try await tx.execute(
                    """
                    INSERT INTO events (device_id, seq, time, kind, model, release, received_at) VALUES ('dev-1', 7, 1, 'rolled-back', 'm', 'm@1', 13)
                    """)
                try await ChangeRevisions.ingest(tx, deviceId: "dev-1", stored: [lost], receivedAt: 13)
                throw Crash()
            }
        }
        #expect(try await store.installOutcomes(release: "m@1") == ["dev-1": "committed"])
        // The agent sends it again: now it counts, once.
        _ = try await store.appendEvents(deviceId: "dev-1", [lost], receivedAt: 14)
        _ = try await store.appendEvents(deviceId: "dev-1", [lost], receivedAt: 15)
        #expect(try await store.installOutcomes(release: "m@1") == ["dev-1": "rolled-back"])
        #expect(try await store.installOutcomesScanningEvents(release: "m@1") == ["dev-1": "rolled-back"])
    }

    /// A database as the previous build left it (schema 5, devices, labels, events) is carried
    /// over: the revision columns and latest tables are filled, and the copies match the tables.
    @Test(arguments: Backend.allCases)
    func aDatabaseFromTheBuildBeforeIsCarriedOver(_ backend: Backend) async throws {
        let (old, reopen) = try await backend.database(atSchema: 5)
        #expect(try await Migrations.version(old) == 5)
        for i in 0..<5 {
            try await old.execute(
                """
                INSERT INTO devices (id, facts, hardware_class, tier, installed, status, held, first_seen, last_seen, arch, agent_labels)
                VALUES (?, '{"arch":"x86_64","cpuFlags":[],"memoryBytes":1,"diskFreeBytes":1}', 'x86-avx2', ?, '{}', 'idle', '{}', 1, 1, 'x86_64', ?)
                """, ["dev-\(i)", i % 2 == 0 ? "fibre" : "cellular", "{\"region\":\"r\(i)\"}"])
        }
        try await old.execute("INSERT INTO device_labels (device_id, operator) VALUES ('dev-1', '{\"owner\":\"x\"}')")
        let events: [(String, Int, String, String?, String?)] = [
            ("dev-0", 1, "started", "m@1", nil), ("dev-0", 2, "committed", "m@1", nil), ("dev-1", 1, "failed", "m@1", nil),
            ("dev-1", 2, "metrics", "m@1", "{\"latencyP50Ms\":5}"), ("dev-2", 1, "metrics", "m@1", "{\"latencyP50Ms\":6}"),
            ("dev-2", 2, "metrics", "m@2", "{\"latencyP50Ms\":7}"), ("dev-3", 1, "committed", "m@2", nil)
        ]
        for (device, seq, kind, release, detail) in events {
            try await old.execute(
                "INSERT INTO events (device_id, seq, time, kind, model, release, detail, received_at) VALUES (?,?,1,?,'m',?,?,50)",
                [device, seq, kind, release, detail])
        }
        await old.close()

        let store = try await reopen()
        defer { Task { await store.db.close() } }
        #expect(try await Migrations.version(store.db) == Migrations.latest)
        #expect(Self.sortedCells(try await store.deviceCells()) == Self.sortedCells(try await store.deviceCellsReadingAll()))
        #expect(try await store.deviceCells().first { $0.id == "dev-1" }?.labels == ["region": "r1", "owner": "x"])
        for release in ["m@1", "m@2"] {
            #expect(try await store.installOutcomes(release: release) == (try await store.installOutcomesScanningEvents(release: release)))
        }
        #expect(try await store.installOutcomes(release: "m@1") == ["dev-0": "committed", "dev-1": "failed"])
        let metrics = try await store.latestRuntimeMetrics(model: "m", since: 0)
        #expect(metrics.mapValues(\.release) == ["dev-1": "m@1", "dev-2": "m@2"])
        // Writes after the upgrade are stamped and seen.
        try await store.upsertDevice(Self.device("dev-9"))
        #expect(try await store.deviceCells().contains { $0.id == "dev-9" })
    }

    /// The tick's observations over the copies equal those worked out from every row and event,
    /// on a random fleet, before and after another replica changes devices, labels and telemetry.
    @Test(arguments: Backend.allCases)
    func theTickObservesWhatTheSlowPathObserves(_ backend: Backend) async throws {
        let (store, location) = try await backend.store()
        let other = try await backend.replica(of: location)
        defer {
            Task {
                await store.db.close(); await other.db.close()
            }
        }
        let now: Int64 = 1_800_000_000
        try await RolloutBenchmark.publishTwoReleases(store, now: now)
        let policy = RolloutPolicy(
            name: "canary", phases: [.init(percent: 10, minDevices: 1), .init(percent: 50, minDevices: 1), .init(percent: 100)],
            gates: .init(
                maxInstallFailureRate: 0.2, maxHealthFailureRate: 0.2, maxTimedOutRate: 0.5, maxLatencyP95Ratio: 3,
                maxErrorRateIncrease: 0.5, maxCrashes: 100, minSample: 1),
            onFailure: .pause, deviceTimeoutSeconds: 7200)
        var rollout = RolloutRecord(
            id: 0, releaseId: "m@2", model: "m", strategy: policy.name, state: .active, createdAt: now, policy: policy,
            previousReleaseId: "m@1")
        rollout.selector = try LabelRequests.selector("region in (eu, us)")
        rollout = try await store.createRollout(rollout, superseding: [])
        var rng = SeededGenerator(seed: 11)
        let classes = ["x86-avx2", "arm64-dotprod"], tiers = ["fibre", "cellular"], regions = ["eu", "us", "ap"]
        var seq: [String: UInt64] = [:]
        func fill(_ writer: SQLStore, devices range: Range<Int>, receivedAt: Int64) async throws {
            for i in range {
                let id = "dev-\(i)"
                try await writer.upsertDevice(
                    Self.device(
                        id, class: classes.randomElement(using: &rng)!, tier: tiers.randomElement(using: &rng)!,
                        labels: ["region": regions.randomElement(using: &rng)!]))
                if Int.random(in: 0..<5, using: &rng) == 0 {
                    _ = try await writer.updateOperatorLabels(
                        deviceId: id, set: ["region": regions.randomElement(using: &rng)!], remove: [])
                }
                var batch: [StatusEvent] = []
                for _ in 0..<Int.random(in: 0...2, using: &rng) {
                    let s = (seq[id] ?? 0) + 1
                    seq[id] = s
                    let kind = ["committed", "committed", "failed", "rolled-back", "started", "metrics"].randomElement(using: &rng)!
                    let release = Bool.random(using: &rng) ? "m@2" : "m@1"
                    batch.append(
                        StatusEvent(
                            seq: s, time: 1, kind: kind, model: "m", release: release,
                            detail: kind == "metrics"
                                ? "{\"latencyP50Ms\":\(Int.random(in: 5...20, using: &rng)),\"latencyP95Ms\":30}" : nil))
                }
                _ = try await writer.appendEvents(deviceId: id, batch, receivedAt: receivedAt)
            }
        }
        let driver = RolloutDriver(
            store: store, logger: Logger(label: "test"), clock: { now }, tickSeconds: nil, metrics: ControllerMetrics())

        func resetCells() async throws {
            for c in classes {
                for t in tiers {
                    try await store.saveCell(
                        rollout: rollout.id, CellKey(hardwareClass: c, tier: t),
                        StoredCell(state: CellState(phase: 1, status: .running, phaseStartedAt: now - 60), cutoff: 0.5))
                }
            }
        }
        func compare() async throws {
            try await resetCells()
            try await driver.tick(now: now)
            let cells = try await store.freshCells(rollout: rollout.id)
            let inForce = try await store.activeRollouts()
            let slowMembers = Targeting.members(
                of: try #require(inForce.first), devices: try await store.deviceCellsReadingAll(), inForce: inForce)
            let outcomes = try await store.installOutcomesScanningEvents(release: "m@2")
            let runtime = Dictionary(
                try await store.runtimeMetricsScanningEvents(model: "m", since: now - driver.metricsWindowSeconds)
                    .map { ($0.deviceId, $0) }, uniquingKeysWith: { a, _ in a })
            #expect(Set(slowMembers.keys).isSubset(of: Set(cells.keys)))
            for (key, members) in slowMembers {
                let ids = members.map(\.id)
                let positions = ids.map { Cohort.position(rollout: "\(rollout.id)", device: $0) }
                let cutoff = max(0.5, RolloutDriver.cutoff(phase: policy.phases[1], sortedPositions: positions.sorted()))
                let cohort = zip(ids, positions).filter { $0.1 < cutoff }.map(\.0)
                let slow = driver.observe(
                    cohort: cohort, cell: ids, rollout: rollout, policy: policy, outcomes: outcomes, runtime: runtime,
                    phaseStartedAt: now - 60, now: now)
                #expect(cells[key]?.observation == slow, "cell \(key)")
            }
        }
        try await fill(store, devices: 0..<150, receivedAt: now - 100)
        try await compare()
        // Another replica adds devices, relabels and moves some, and sends telemetry.
        try await fill(other, devices: 100..<220, receivedAt: now - 50)
        try await compare()
    }

    /// A tick writes a cell only when something in it changed: a second tick that finds the same
    /// observation writes nothing (the revisions stay); installs the tick counts are written.
    @Test(arguments: Backend.allCases)
    func aTickThatFindsNothingNewWritesNoCell(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        let now: Int64 = 1_800_000_000
        try await RolloutBenchmark.publishTwoReleases(store, now: now)
        let policy = RolloutPolicy(
            name: "canary", phases: [.init(percent: 50, minDevices: 1), .init(percent: 100)],
            gates: .init(maxInstallFailureRate: 0.5, minSample: 100), onFailure: .pause, deviceTimeoutSeconds: 7200)
        let rollout = try await store.createRollout(
            RolloutRecord(
                id: 0, releaseId: "m@2", model: "m", strategy: policy.name, state: .active, createdAt: now, policy: policy,
                previousReleaseId: "m@1"),
            superseding: [])
        let ids = (0..<12).map { "dev-\($0)" }
        for (i, id) in ids.enumerated() {
            try await store.upsertDevice(Self.device(id, class: i % 2 == 0 ? "x86-avx2" : "arm64-dotprod"))
        }
        let driver = RolloutDriver(
            store: store, logger: Logger(label: "test"), clock: { now }, tickSeconds: nil, metrics: ControllerMetrics())
        try await driver.tick(now: now)
        let first = try await store.freshCells(rollout: rollout.id)
        #expect(first.count == 2)
        try await driver.tick(now: now + 1)
        let second = try await store.freshCells(rollout: rollout.id)
        #expect(second.mapValues(\.revision) == first.mapValues(\.revision))
        #expect(second == first)
        for id in ids {
            _ = try await store.appendEvents(
                deviceId: id, [StatusEvent(seq: 1, time: now, kind: .committed, model: "m", release: "m@2")], receivedAt: now + 2)
        }
        try await driver.tick(now: now + 2)
        let third = try await store.freshCells(rollout: rollout.id)
        for (key, cell) in third {
            let before = try #require(first[key])
            #expect(cell.revision == before.revision + 1, "cell \(key)")
            #expect((cell.observation?.committed ?? 0) > (before.observation?.committed ?? 0), "cell \(key)")
        }
    }
}
