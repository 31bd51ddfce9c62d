import FleetCore
import Foundation
import Logging
import Synchronization

/// How long the rollout driver takes to evaluate a staged rollout's gates over a large fleet:
/// a SQLite store filled with devices, their install outcomes and their runtime metrics, then
/// timed ticks (store reads, cohorts, observations, gates, cell writes). `fleet-controller
/// bench-gates` runs it; `make bench` prints it.
public enum RolloutBenchmark {
    public struct Report: Codable, Sendable {
        public var devices: Int
        public var cells: Int
        public var events: Int
        public var cohortDevices: Int
        public var populateSeconds: Double
        /// Whole ticks after the first: reading devices and telemetry from the store, evaluating,
        /// saving every cell.
        public var tickSeconds: [Double]
        /// The first tick, which reads the devices and telemetry whole (a replica's start).
        public var firstTickSeconds: Double
        /// Where each tick's time went, first tick first.
        public var tickStages: [GateTickStages]
        /// The evaluation alone, on data already in memory: cohorts, observations, gates.
        public var evaluateSeconds: [Double]
        public var pausedCells: Int
        /// Selection by a selector over the whole fleet: the light device rows (labels included)
        /// read from the store, then the members of a rollout on a selector worked out in memory.
        public var selector: String
        public var selectorReadSeconds: [Double]
        public var selectorMatchSeconds: [Double]
        public var selectorMatched: Int
    }

    /// Region and site labels of bench device `i` (every third one with an operator label too).
    static let regions = ["eu-west", "eu-north", "eu-south", "us-east", "us-west", "ap-south", "ap-east", "sa-east"]
    static let selectorText = "region in (eu-west, eu-north), site != site-3, !quarantine"

    static let classes = ["x86-avx512-vnni", "x86-avx2", "arm64-dotprod", "small-board-1gb", "npu-edgetpu", "armv7-neon"]
    static let tiers = ["fibre", "cellular", "satellite-metered"]

    /// `databaseURL`: a PostgreSQL database to fill instead of a scratch SQLite file (it must be empty).
    /// Model `m` with releases `m@1` and `m@2` (empty catalogs signed by a fresh release key): what
    /// a rollout of `m@2` over `m@1` needs in the store.
    static func publishTwoReleases(_ store: any FleetStore, now: Int64) async throws {
        try await store.createModel(ModelRecord(name: "m", minQuality: nil, createdAt: now))
        let key = SigningKey(role: .release)
        for (serial, version) in ["1", "2"].enumerated() {
            let catalog = ReleaseCatalog(
                model: "m", version: version, serial: serial + 1, expiresAt: now + 86_400, variants: [], hardwareClasses: [])
            let env = try Envelope.sign(catalog, type: PayloadType.catalog, keys: [key])
            try await store.createRelease(
                ReleaseRecord(
                    id: "m@\(version)", model: "m", version: version, serial: serial + 1, catalogEnvelope: env,
                    catalogSha256: Digest.sha256Hex(Array(try FleetJSON.encode(env))), catalog: catalog, createdAt: now))
        }
    }

    public static func run(devices n: Int, directory: String, runs: Int, databaseURL: String? = nil) async throws -> Report {
        precondition(n > 0 && runs > 0)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let store: SQLStore
        if let databaseURL {
            store = try await SQLStore.postgres(try PostgresLocation(url: databaseURL), migrate: true, logger: Logger(label: "bench"))
        } else {
            store = try await SQLStore.sqlite(path: directory + "/bench.sqlite")
        }
        let now: Int64 = 1_800_000_000
        let policy = RolloutPolicy(
            name: "bench-canary",
            phases: [
                .init(percent: 1, minDevices: 1, bakeSeconds: 1800), .init(percent: 10, minDevices: 2, bakeSeconds: 1800),
                .init(percent: 50, minDevices: 1, bakeSeconds: 3600), .init(percent: 100)
            ],
            gates: .init(
                maxInstallFailureRate: 0.05, maxHealthFailureRate: 0.05, maxTimedOutRate: 0.10, maxLatencyP95Ratio: 1.5,
                maxErrorRateIncrease: 0.01, maxCrashes: 0, minSample: 1),
            onFailure: .pause, deviceTimeoutSeconds: 7200)

        let t0 = ContinuousClock.now
        try await publishTwoReleases(store, now: now)
        let rollout = try await store.createRollout(
            RolloutRecord(
                id: 0, releaseId: "m@2", model: "m", strategy: policy.name, state: .active,
                createdAt: now, policy: policy, previousReleaseId: "m@1"), superseding: [])
        // Every cell in its third phase (50%): half the fleet is the cohort, half the control.
        var rng = SeededGenerator(seed: 42)
        var events = 0, cohort = 0
        let facts = String(
            decoding: try FleetJSON.encode(DeviceFacts(arch: "x86_64", cpuFlags: [], memoryBytes: 1 << 30, diskFreeBytes: 1 << 30)),
            as: UTF8.self)
        var deviceRows: [[any SQLValueConvertible]] = [], eventRows: [[any SQLValueConvertible]] = []
        for i in 0..<n {
            let id = "dev-\(i)"
            let cls = classes[i % classes.count], tier = tiers[(i / classes.count) % tiers.count]
            let labels = "{\"region\":\"\(regions[i % regions.count])\",\"site\":\"site-\(i % 50)\"}"
            deviceRows.append([id, facts, cls, tier, now, now, labels])
            let inCohort = Cohort.position(rollout: "\(rollout.id)", device: id) < 0.5
            var seq: Int64 = 1
            if inCohort {
                cohort += 1
                let roll = rng.next() % 1000
                let kind: EventKind = roll < 985 ? .committed : (roll < 995 ? .failed : .rolledBack)
                eventRows.append(
                    [id, seq, now, kind.rawValue, "m", nil as String?, "m@2", nil as String?, now] + RuntimeMetricsColumns.values(nil))
                seq += 1
                events += 1
            }
            let base = inCohort ? 12.0 : 10.0
            let p50 = base + Double(rng.next() % 400) / 100
            let m = RuntimeMetrics(
                latencyP50Ms: p50, latencyP95Ms: p50 * 2, errorRate: Double(rng.next() % 10) / 1000, requests: 500, crashes: 0)
            eventRows.append(
                [id, seq, now, EventKind.metrics.rawValue, "m", nil as String?, inCohort ? "m@2" : "m@1", nil as String?, now]
                    + RuntimeMetricsColumns.values(m))
            events += 1
        }
        try await store.insertRows(
            table: "devices", columns: ["id", "facts", "hardware_class", "tier", "first_seen", "last_seen", "agent_labels"],
            constants: [
                "installed": "'{}'", "status": SQLVocabulary.literal(DeviceStatus.committed), "held": "'{}'", "agent_version": "'bench'",
                "arch": "'x86_64'"
            ],
            rows: deviceRows)
        try await store.insertRows(
            table: "device_labels", columns: ["device_id", "operator"],
            rows: stride(from: 0, to: n, by: 3).map { ["dev-\($0)", "{\"owner\":\"team-\($0 % 7)\"}"] })
        try await store.insertRows(
            table: "events",
            columns: ["device_id", "seq", "time", "kind", "model", "sha256", "release", "detail", "received_at"]
                + RuntimeMetricsColumns.names,
            rows: eventRows)
        // Bulk-loaded events bypass ingest: the latest-outcome and latest-metrics tables are filled as a migration fills them.
        try await store.backfillLatestTelemetry()
        for c in classes {
            for t in tiers {
                try await store.saveCell(
                    rollout: rollout.id, CellKey(hardwareClass: c, tier: t),
                    StoredCell(state: CellState(phase: 2, status: .running, phaseStartedAt: now), cutoff: 0.5))
            }
        }
        let populate = ContinuousClock.now - t0

        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let driver = RolloutDriver(store: store, logger: logger, clock: { now }, tickSeconds: nil, metrics: ControllerMetrics())
        var ticks: [Double] = [], evaluations: [Double] = [], stages: [GateTickStages] = []
        let record = try await store.rollout(rollout.id)!
        for _ in 0...runs {
            // Each run starts from the same cell states, so every tick does the same work.
            for c in classes {
                for t in tiers {
                    try await store.saveCell(
                        rollout: rollout.id, CellKey(hardwareClass: c, tier: t),
                        StoredCell(state: CellState(phase: 2, status: .running, phaseStartedAt: now), cutoff: 0.5))
                }
            }
            let a = ContinuousClock.now
            try await driver.tick(now: now + 60)
            ticks.append(seconds(ContinuousClock.now - a))
            stages.append(driver.lastStages.withLock { $0 })

            let byCell = driver.cellMembers(
                of: record, devices: try await store.deviceCellSnapshot(), inForce: try await store.activeRollouts())
            let outcomes = try await store.installOutcomes(release: record.releaseId)
            let runtime = try await store.latestRuntimeMetrics(model: "m", since: 0)
            precondition(runtime.count == n, "the gates read every device's figures")
            let b = ContinuousClock.now
            var judged = 0
            for (_, cell) in byCell {
                let members = cell.ids
                var inCohort: [String] = []
                for (i, p) in cell.positions.enumerated() where p < 0.5 { inCohort.append(members[i]) }
                let o = driver.observe(
                    cohort: inCohort, cell: members, rollout: record, policy: policy, outcomes: outcomes,
                    runtime: runtime, phaseStartedAt: now, now: now + 60)
                judged += GateEvaluator.evaluate(o, gates: policy.gates).count
            }
            evaluations.append(seconds(ContinuousClock.now - b))
            precondition(judged > 0)
        }
        let paused = try await store.cells(rollout: rollout.id).values.filter { $0.state.status == .paused }.count

        // Selection cost: a rollout on a selector, its members over the whole fleet.
        var targeted = record
        targeted.selector = try LabelRequests.selector(selectorText)
        var reads: [Double] = [], matches: [Double] = []
        var matched = 0
        for _ in 0..<runs {
            let a = ContinuousClock.now
            let rows = try await store.deviceCells()
            let inForce = try await store.activeRollouts()
            let b = ContinuousClock.now
            matched = Targeting.members(of: targeted, devices: rows, inForce: inForce).values.reduce(0) { $0 + $1.count }
            reads.append(seconds(b - a))
            matches.append(seconds(ContinuousClock.now - b))
        }
        return Report(
            devices: n, cells: classes.count * tiers.count, events: events, cohortDevices: cohort, populateSeconds: seconds(populate),
            tickSeconds: Array(ticks.dropFirst()), firstTickSeconds: ticks[0], tickStages: stages, evaluateSeconds: evaluations,
            pausedCells: paused, selector: selectorText,
            selectorReadSeconds: reads, selectorMatchSeconds: matches, selectorMatched: matched)
    }

    static func seconds(_ d: Swift.Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
