import FleetCore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Drives staged rollouts: per cell (hardware class × bandwidth tier) it observes the current
/// phase's cohort, evaluates the gates against the control cohort and steps the cell's state
/// machine. A cell that fails stops on its own; the others go on.
final class RolloutDriver: Service, Sendable {
    let store: any FleetStore
    /// The store the ticks write through: on replicas, fenced by the leader lease, so that a
    /// replica that lost the lease cannot overwrite its successor's cells.
    let tickStore: any FleetStore
    /// Whether this process does the ticks (nil: always, one box).
    let leader: LeaseFence?
    let logger: Logger
    let clock: @Sendable () -> Int64
    let tickSeconds: Double?
    let metrics: ControllerMetrics
    /// Runtime metrics older than this are not used by the gates.
    let metricsWindowSeconds: Int64 = 3600
    /// How far back a treated device's own figures on its prior release count as its baseline.
    let baselineWindowSeconds: Int64 = 7 * 86_400

    /// The fleet's maintenance windows by selector (a device's activation and timeout clock).
    let windows: [FleetConfig.WindowRule]

    init(
        store: any FleetStore, logger: Logger, clock: @escaping @Sendable () -> Int64, tickSeconds: Double?, metrics: ControllerMetrics,
        tickStore: (any FleetStore)? = nil, leader: LeaseFence? = nil, windows: [FleetConfig.WindowRule] = []
    ) {
        self.store = store; self.logger = logger; self.clock = clock; self.tickSeconds = tickSeconds; self.metrics = metrics
        self.tickStore = tickStore ?? store
        self.leader = leader
        self.windows = windows
    }

    func run() async throws {
        guard let tickSeconds else { return try await gracefulShutdown() }
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do { try await tick(now: clock()) } catch { logger.error("rollout tick failed", metadata: ["error": "\(error)"]) }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(Int(tickSeconds * 1000))) }
        }
    }

    /// The devices a rollout takes, by cell (wave, class, tier), from the store's light listing (no
    /// facts decoded): those its selector and waves pick and no newer rollout of the model takes.
    func members(of rollout: RolloutRecord) async throws -> [CellKey: [DeviceCellRecord]] {
        try await cellMembers(of: rollout, devices: try await store.deviceCellSnapshot(), inForce: try await store.activeRollouts())
            .mapValues(\.devices)
    }

    func membersByCell(_ rollout: RolloutRecord) async throws -> [CellKey: [String]] {
        // Over the whole fleet (seconds of CPU at 1,000,000 devices, the first time): on the task
        // pool even when a device's check-in, handled on its connection's event loop, opens a cell.
        try await withTaskExecutorPreference(globalConcurrentExecutor) {
            try await cellMembers(of: rollout, devices: try await store.deviceCellSnapshot(), inForce: try await store.activeRollouts())
                .mapValues(\.ids)
        }
    }

    /// A cell's members with each one's cohort position (hashed once, not at every tick).
    struct CellMembers: Sendable {
        var devices: [DeviceCellRecord]
        var ids: [String]
        /// `positions[i]` is `ids[i]`'s.
        var positions: [Double]
        var sortedPositions: [Double]
    }

    private struct KeptMembers: Sendable {
        var devicesVersion: UInt64
        var rollout: RolloutRecord
        var inForce: [RolloutRecord]
        var cells: [CellKey: CellMembers]
    }
    /// Per rollout: its members as last worked out, kept while the devices' cells and labels and
    /// the rollouts in force stay the same (the selector matching and hashing over the whole fleet
    /// is most of a tick's work otherwise).
    private let keptMembers = Mutex<[Int64: KeptMembers]>([:])

    func cellMembers(of rollout: RolloutRecord, devices: DeviceCellSnapshot, inForce: [RolloutRecord]) -> [CellKey: CellMembers] {
        if let kept = keptMembers.withLock({ $0[rollout.id] }), kept.devicesVersion == devices.version, kept.rollout == rollout,
            kept.inForce == inForce
        {
            return kept.cells
        }
        let salt = "\(rollout.id)"
        let cells = Targeting.members(of: rollout, devices: devices.records, inForce: inForce).mapValues { ds in
            let positions = ds.map { Cohort.position(rollout: salt, device: $0.id) }
            return CellMembers(devices: ds, ids: ds.map(\.id), positions: positions, sortedPositions: positions.sorted())
        }
        keptMembers.withLock { kept in
            let live = Set(inForce.map(\.id)).union([rollout.id])
            kept = kept.filter { live.contains($0.key) }
            kept[rollout.id] = KeptMembers(devicesVersion: devices.version, rollout: rollout, inForce: inForce, cells: cells)
        }
        return cells
    }

    /// The cohort cut-off for a phase: the phase's share, raised so that at least `minDevices`
    /// of the cell's devices are in.
    static func cutoff(phase: RolloutPolicy.Phase, rollout: Int64, devices: [String], holdBack: Double = 0) -> Double {
        cutoff(
            phase: phase, sortedPositions: devices.map { Cohort.position(rollout: "\(rollout)", device: $0) }.sorted(), holdBack: holdBack)
    }

    /// Every device, once a cell completed.
    static let everyone = 1.0000001

    /// `holdBack`: the share of the cell (the highest positions) kept on the old release as its
    /// control cohort until the cell completes.
    static func cutoff(phase: RolloutPolicy.Phase, sortedPositions positions: [Double], holdBack: Double = 0) -> Double {
        var cut = phase.percent / 100
        if phase.minDevices > 0, !positions.isEmpty {
            let k = min(phase.minDevices, positions.count) - 1
            cut = max(cut, positions[k].nextUp)
        }
        if holdBack > 0 { return min(cut, 1 - holdBack) }
        return phase.percent >= 100 ? everyone : cut
    }

    /// The cell a device checking in belongs to, created in phase 0 on first sight.
    /// `persist: false` answers without saving a new cell (read-only callers such as `explain`).
    func cell(
        for device: DeviceRecord, rollout: RolloutRecord, wave: Int = 0, policy rolloutPolicy: RolloutPolicy, now: Int64,
        persist: Bool = true
    ) async throws -> StoredCell {
        let key = Targeting.cell(hardwareClass: device.hardwareClass, tier: device.tier, rollout: rollout, wave: wave)
        let policy = rolloutPolicy.forWave(wave)
        if let c = try await store.cells(rollout: rollout.id)[key] { return c }
        // A cell that first appears after the rollout completed (a new class, a device that moved
        // tier) is complete too: nothing would ever advance it.
        if rollout.state == .completed {
            return StoredCell(
                state: CellState(phase: policy.phases.count - 1, status: .completed, phaseStartedAt: now), cutoff: Self.everyone)
        }
        guard persist else {
            let members = try await membersByCell(rollout)[key] ?? []
            return StoredCell(
                state: CellState(phaseStartedAt: now),
                cutoff: Self.cutoff(
                    phase: policy.phases[0], rollout: rollout.id, devices: members + [device.id],
                    holdBack: policy.holdBackShare))
        }
        return try await cellWrites.withLock {
            // Another check-in (or a tick) may have opened it meanwhile.
            if let c = try await store.cells(rollout: rollout.id)[key] { return c }
            let members = try await membersByCell(rollout)[key] ?? []
            let cell = StoredCell(
                state: CellState(phaseStartedAt: now),
                cutoff: Self.cutoff(
                    phase: policy.phases[0], rollout: rollout.id, devices: members + [device.id],
                    holdBack: policy.holdBackShare))
            // Another replica may open it at the same moment: the first one stored wins.
            guard let opened = try await store.replaceCell(rollout: rollout.id, key, cell, existed: false) else {
                if let c = try await store.cells(rollout: rollout.id)[key] { return c }
                throw StorageError(.conflict, "cell \(key) of rollout \(rollout.id) was opened and removed meanwhile")
            }
            try await store.recordAction(
                rollout: rollout.id,
                RolloutActionRecord(
                    at: now, actor: "controller", action: "cell-opened",
                    cell: key.description, detail: "phase 1 of \(policy.phases.count)"))
            return opened
        }
    }

    /// A cell adds a history point when something changed, and at least this often while it runs.
    let historyEverySeconds: Int64 = 60

    /// Ticks, operator actions and new cells change cells one at a time: an operator's pause saved
    /// while a tick runs is not overwritten by the tick's older copy.
    let cellWrites = AsyncLock()

    func tick(now: Int64) async throws {
        guard leader?.isLeader ?? true else { return }
        try await cellWrites.withLock {
            let inForce = try await store.activeRollouts()
            let start = ContinuousClock.now
            let devices = try await store.deviceCellSnapshot()
            var stages = GateTickStages(deviceCells: Self.seconds(since: start))
            for rollout in inForce where rollout.state == .active {
                guard let policy = rollout.policy else { continue }
                let t = ContinuousClock.now
                let members = cellMembers(of: rollout, devices: devices, inForce: inForce)
                stages.members += Self.seconds(since: t)
                try await tick(rollout, policy: policy, members: members, now: now, stages: &stages)
            }
            stages.total = Self.seconds(since: start)
            lastStages.withLock { $0 = stages }
        }
        completedTicks.add(1, ordering: .relaxed)
        metrics.rolloutTicks.increment()
        metrics.recordRollouts(try await store.rollouts())
    }

    static func historyPoint(_ cell: StoredCell, at now: Int64) -> CellHistoryPoint {
        let o = cell.observation ?? CellObservation(targeted: 0)
        return CellHistoryPoint(
            at: now, phase: cell.state.phase, status: cell.state.status, targeted: o.targeted,
            committed: o.committed, failed: o.installFailed + o.healthFailed + o.timedOut,
            treatmentP50: o.treatment?.latencyP50Ms, controlP50: o.control?.latencyP50Ms,
            treatmentP95: o.treatment?.latencyP95Ms, controlP95: o.control?.latencyP95Ms)
    }

    private func tick(
        _ rollout: RolloutRecord, policy rolloutPolicy: RolloutPolicy, members membership: [CellKey: CellMembers],
        now: Int64, stages: inout GateTickStages
    ) async throws {
        // Cells of waves that have not started are not opened; they wait for the waves before.
        let byCell = membership.filter { rolloutPolicy.waveIndex(named: $0.key.wave) <= rollout.wave }
        var cells = try await tickStore.cells(rollout: rollout.id)
        var t = ContinuousClock.now
        let outcomes = try await tickStore.installOutcomes(release: rollout.releaseId)
        stages.outcomes += Self.seconds(since: t); t = .now
        let runtime = try await tickStore.latestRuntimeMetrics(model: rollout.model, since: now - metricsWindowSeconds)
        stages.runtimeMetrics += Self.seconds(since: t); t = .now
        let reached = try await tickStore.rolloutDevices(rollout: rollout.id)
        let baselines = try await baselines(rollout, reached: reached, now: now)
        let failedDevices = Set(try await tickStore.failures(release: rollout.releaseId).map(\.deviceId))
        stages.otherReads += Self.seconds(since: t)
        var skipped = false
        var stoppedWaves: [String: CellKey] = [:]
        for (key, cellMembers) in byCell.sorted(by: { $0.key < $1.key }) {
            let members = cellMembers.ids
            let policy = rolloutPolicy.forCell(key)
            let cellStart = ContinuousClock.now
            var evaluated = cellStart
            defer {
                if let c = cells[key] {
                    metrics.recordCellHolds(
                        rollout: rollout.id, release: rollout.releaseId, cell: key, state: c.state,
                        failedHeld: failedDevices.isEmpty ? 0 : members.filter(failedDevices.contains).count)
                }
                stages.evaluation += Self.seconds(evaluated - cellStart)
                stages.cellWrites += Self.seconds(since: evaluated)
            }
            if let c = cells[key], c.state.status != .running, c.state.status != .baking {
                // A stopped or completed cell keeps the record it had when it stopped: the
                // observation and gates that stopped it, and its counts.
                metrics.recordCell(
                    rollout: rollout.id, release: rollout.releaseId, cell: key, state: c.state,
                    observation: c.observation ?? CellObservation(targeted: 0))
                continue
            }
            let positions = cellMembers.sortedPositions
            let holdBack = policy.holdBackShare
            var stored =
                cells[key]
                ?? StoredCell(
                    state: CellState(phaseStartedAt: now),
                    cutoff: Self.cutoff(phase: policy.phases[0], sortedPositions: positions, holdBack: holdBack))
            // Devices that joined the cell since the cut-off was set may raise the minimum count.
            stored.cutoff = max(
                stored.cutoff, Self.cutoff(phase: policy.phases[stored.state.phase], sortedPositions: positions, holdBack: holdBack))
            var cohort: [String] = []
            for (i, p) in cellMembers.positions.enumerated() where p < stored.cutoff { cohort.append(members[i]) }
            let wave = rolloutPolicy.waveIndex(named: key.wave)
            let deadlines =
                windowsApply(rollout: rollout, wave: wave, policy: rolloutPolicy)
                ? timeoutDeadlines(
                    cohort: Set(cohort), members: cellMembers.devices, rollout: rollout, wave: wave, policy: policy,
                    phaseStartedAt: stored.state.phaseStartedAt)
                : [:]
            let observation = observe(
                cohort: cohort, cell: members, rollout: rollout, policy: policy, outcomes: outcomes,
                runtime: runtime, reached: reached, baselines: baselines,
                phaseStartedAt: stored.state.phaseStartedAt, now: now, deadlines: deadlines)
            let before = stored
            stored.observation = observation
            let (next, actions) = CellStateMachine.step(stored.state, .tick(now: now, observation: observation), policy: policy)
            if next.status == .completed {
                stored.cutoff = Self.everyone
            } else if next.phase != stored.state.phase {
                stored.cutoff = Self.cutoff(phase: policy.phases[next.phase], sortedPositions: positions, holdBack: holdBack)
            }
            stored.state = next
            let addHistory =
                before.observation != stored.observation || before.state != stored.state
                || now - (before.historyAt ?? .min / 2) >= historyEverySeconds
            if addHistory { stored.historyAt = now }
            evaluated = .now
            let existed = cells[key] != nil
            let saved: StoredCell
            if existed, stored == before {
                saved = before  // nothing to write: the same observation and state, no history point due
            } else {
                // Only over the copy this tick read: an operator's action saved meanwhile (here or on
                // another replica) wins, and this cell waits for the next tick. Other replicas drop
                // their copies only for what check-ins decide by: a new cell, its state, its cut-off
                // (a tick that only counted installs would otherwise have every replica read all the
                // cells again at each cell written).
                let decides = !existed || before.state != stored.state || before.cutoff != stored.cutoff
                guard let written = try await tickStore.replaceCell(rollout: rollout.id, key, stored, existed: existed, announce: decides)
                else {
                    logger.info(
                        "cell changed during the tick; judged again next tick", metadata: ["rollout": "\(rollout.id)", "cell": "\(key)"])
                    skipped = true
                    continue
                }
                if addHistory { try await tickStore.appendHistory(rollout: rollout.id, cell: key, Self.historyPoint(written, at: now)) }
                saved = written
            }
            metrics.recordCell(rollout: rollout.id, release: rollout.releaseId, cell: key, state: next, observation: observation)
            for a in actions {
                switch a {
                case .paused(.some), .rolledBack(.some): metrics.gateFailures.increment();
                default: break
                }
            }
            cells[key] = saved
            for a in actions { try await record(rollout, a, cell: key, actor: "controller", now: now) }
            for a in actions {
                switch a {
                case .paused(.some), .rolledBack(.some): stoppedWaves[key.wave ?? ""] = key;
                default: break
                }
            }
        }
        // A failing gate stops its whole wave: the wave's other cells pause (the waves after it
        // never start, as this one cannot complete).
        if rolloutPolicy.waves != nil {
            for (wave, failed) in stoppedWaves.sorted(by: { $0.key < $1.key }) {
                for key in cells.keys.sorted() where key.wave ?? "" == wave && key != failed {
                    guard var c = cells[key], c.state.status == .running || c.state.status == .baking else { continue }
                    let (next, _) = CellStateMachine.step(c.state, .pause, policy: rolloutPolicy.forCell(key))
                    c.state = next
                    guard let saved = try await tickStore.replaceCell(rollout: rollout.id, key, c, existed: true) else {
                        skipped = true; continue
                    }
                    cells[key] = saved
                    try await tickStore.recordAction(
                        rollout: rollout.id,
                        RolloutActionRecord(
                            at: now, actor: "controller", action: "paused", cell: key.description,
                            detail: "wave \(wave) stopped: a gate failed in cell \(failed)"))
                }
            }
        }
        guard !skipped else { return }
        // The current wave is done when every cell it has completed (a wave with no devices is
        // done at once); the next one starts, or the rollout completes after the last.
        let current = rollout.wave
        let waveCells = cells.filter { rolloutPolicy.waveIndex(named: $0.key.wave) == current }
        guard waveCells.values.allSatisfy({ $0.state.status == .completed }) else { return }
        guard byCell.keys.allSatisfy({ cells[$0] != nil }) else { return }
        if current + 1 < rolloutPolicy.waveCount {
            try await tickStore.setRolloutWave(rollout.id, current + 1)
            let name = rolloutPolicy.waveName(current + 1) ?? "\(current + 2)"
            try await tickStore.recordAction(
                rollout: rollout.id,
                RolloutActionRecord(
                    at: now, actor: "controller", action: "wave-started", cell: nil,
                    detail:
                        "wave \(name) (\(current + 2) of \(rolloutPolicy.waveCount)): \(membership.filter { $0.key.wave == name }.values.reduce(0) { $0 + $1.ids.count }) devices"
                ))
            return
        }
        if !cells.isEmpty || rolloutPolicy.waves != nil {
            try await tickStore.setRolloutState(rollout.id, .completed)
            try await tickStore.recordAction(
                rollout: rollout.id, RolloutActionRecord(at: now, actor: "controller", action: "completed", cell: nil, detail: nil))
        }
    }

    /// Whether any maintenance window can apply to the rollout's devices in `wave` (else no device
    /// has a deadline of its own, and none is worked out).
    func windowsApply(rollout: RolloutRecord, wave: Int, policy: RolloutPolicy) -> Bool {
        rollout.window != nil || policy.forWave(wave).window != nil || !windows.isEmpty
    }

    /// When each cohort device with a maintenance window times out: its timeout counts from the
    /// first time its window opens in the phase (a device that waits for its window is not late).
    /// Devices without a window are left out (the phase's start counts).
    func timeoutDeadlines(
        cohort: Set<String>, members: [DeviceCellRecord], rollout: RolloutRecord, wave: Int, policy: RolloutPolicy,
        phaseStartedAt: Int64
    ) -> [String: Int64] {
        var out: [String: Int64] = [:]
        var firstOpening: [String: Int64] = [:]  // per (window, zone): the same for every device there
        for d in members where cohort.contains(d.id) {
            guard let window = Targeting.window(rollout: rollout, wave: wave, selectable: d.selectable, fleet: windows) else { continue }
            let cacheKey = "\(window.description)\u{0}\(d.timezoneLabel ?? "")\u{0}\(d.timezone ?? "")"
            let opening: Int64
            if let o = firstOpening[cacheKey] {
                opening = o
            } else {
                let (zone, _) = WindowCalendar.zone(for: window, label: d.timezoneLabel, configured: d.timezone)
                let first = WindowCalendar.occurrences(of: window, in: zone, after: phaseStartedAt, count: 1).first
                opening = max(first?.start ?? phaseStartedAt, phaseStartedAt)
                firstOpening[cacheKey] = opening
            }
            out[d.id] = opening + policy.deviceTimeoutSeconds
        }
        return out
    }

    /// Each treated device's last figures on the release it ran before this rollout reached it.
    func baselines(_ rollout: RolloutRecord, reached: [String: RolloutDeviceRecord], now: Int64) async throws -> [String: DeviceMetrics] {
        var out: [String: DeviceMetrics] = [:]
        let priors = Set(reached.values.compactMap { $0.priorRelease ?? rollout.previousReleaseId })
        for release in priors.sorted() where release != rollout.releaseId {
            for m in try await store.runtimeMetrics(model: rollout.model, release: release, since: now - baselineWindowSeconds)
            where (reached[m.deviceId]?.priorRelease ?? rollout.previousReleaseId) == release {
                out[m.deviceId] = m
            }
        }
        return out
    }

    /// The cohort's install outcomes and runtime figures, and what the figures are compared with:
    /// the cell's devices still running what the treated devices ran before (the control cohort),
    /// or, when the cell has none, the treated devices' own last figures from before (baseline).
    func observe(
        cohort: [String], cell: [String], rollout: RolloutRecord, policy: RolloutPolicy,
        outcomes: [String: String], runtime: [String: DeviceMetrics], reached: [String: RolloutDeviceRecord] = [:],
        baselines: [String: DeviceMetrics] = [:], phaseStartedAt: Int64, now: Int64,
        deadlines: [String: Int64] = [:]
    ) -> CellObservation {
        var o = CellObservation(targeted: cohort.count)
        let deadline = phaseStartedAt + policy.deviceTimeoutSeconds
        for d in cohort {
            switch outcomes[d].map(EventKind.init(rawValue:)) {
            case .committed: o.committed += 1
            case .failed: o.installFailed += 1
            case .rolledBack: o.healthFailed += 1
            default: if now > (deadlines[d] ?? deadline) { o.timedOut += 1 }
            }
        }
        let cohortIDs = Set(cohort)
        var priors = Set(cohort.compactMap { reached[$0]?.priorRelease })
        if let p = rollout.previousReleaseId { priors.insert(p) }
        priors.remove(rollout.releaseId)
        var treatment: [DeviceMetrics] = [], control: [DeviceMetrics] = []
        for d in cell {
            guard let m = runtime[d] else { continue }
            if cohortIDs.contains(d) && m.release == rollout.releaseId {
                treatment.append(m)
            } else if priors.contains(m.release) {
                control.append(m)
            }
        }
        o.treatment = Self.sample(treatment)
        if !control.isEmpty {
            o.control = Self.sample(control)
            o.reference = .controlCohort
        } else if let own = Self.sample(treatment.compactMap { baselines[$0.deviceId] }) {
            o.control = own
            o.reference = .baseline
        }
        return o
    }

    /// A group's runtime figures: the median of the devices' own percentiles, the mean error rate.
    static func sample(_ ms: [DeviceMetrics]) -> RuntimeSample? {
        guard !ms.isEmpty else { return nil }
        func median(_ xs: [Double]) -> Double? {
            guard !xs.isEmpty else { return nil }
            let s = xs.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        let errors = ms.compactMap(\.errorRate)
        return RuntimeSample(
            devices: ms.count, latencyP50Ms: median(ms.compactMap(\.p50)), latencyP95Ms: median(ms.compactMap(\.p95)),
            errorRate: errors.isEmpty ? nil : errors.reduce(0, +) / Double(errors.count),
            crashes: ms.reduce(0) {
                let (s, o) = $0.addingReportingOverflow($1.crashes); return o ? Int.max : s
            })
    }

    /// An operator's promote, pause, resume or abort, on every cell or on one.
    func apply(_ event: CellEvent, name: String, rollout: RolloutRecord, cell only: CellKey?, actor: String, now: Int64) async throws {
        try await cellWrites.withLock { try await applyLocked(event, name: name, rollout: rollout, cell: only, actor: actor, now: now) }
    }

    private func applyLocked(_ event: CellEvent, name: String, rollout: RolloutRecord, cell only: CellKey?, actor: String, now: Int64)
        async throws
    {
        guard let policy = rollout.policy else {
            throw APIError(.badRequest, "not-staged", "rollout \(rollout.id) has no phases; only staged rollouts take \(name)")
        }
        guard rollout.state == .active else {
            throw APIError(.conflict, "rollout-not-active", "rollout \(rollout.id) is \(rollout.state.rawValue)")
        }
        let byCell = try await membersByCell(rollout)
        let cells = try await store.cells(rollout: rollout.id)
        if let only, cells[only] == nil { throw APIError(.notFound, "unknown-cell", "rollout \(rollout.id) has no cell \(only)") }
        for key in cells.keys.sorted() where only == nil || key == only {
            // Read, step, and replace at the revision read; a tick that saved the cell meanwhile
            // (on the leader, maybe another replica) makes it read again.
            for attempt in 1...5 {
                guard var stored = try await store.cells(rollout: rollout.id)[key] else { break }
                let cellPolicy = policy.forCell(key)
                let (next, actions) = CellStateMachine.step(stored.state, event, policy: cellPolicy)
                if next.status == .completed {
                    stored.cutoff = Self.everyone
                } else if next.phase != stored.state.phase {
                    stored.cutoff = Self.cutoff(
                        phase: cellPolicy.phases[next.phase], rollout: rollout.id, devices: byCell[key] ?? [],
                        holdBack: cellPolicy.holdBackShare)
                }
                stored.state = next
                if try await store.replaceCell(rollout: rollout.id, key, stored, existed: true) != nil {
                    for a in actions { try await record(rollout, a, cell: key, actor: actor, now: now) }
                    break
                }
                if attempt == 5 { throw APIError(.conflict, "cell-busy", "cell \(key) of rollout \(rollout.id) kept changing; try again") }
            }
        }
        try await store.recordAction(
            rollout: rollout.id, RolloutActionRecord(at: now, actor: actor, action: name, cell: only?.description, detail: nil))
        if event == .abort, only == nil {
            try await store.setRolloutState(rollout.id, .aborted)
        }
    }

    private func record(_ rollout: RolloutRecord, _ a: CellAction, cell: CellKey, actor: String, now: Int64) async throws {
        let (name, detail): (String, String?) =
            switch a {
            case .enteredPhase(let p): ("phase", "entered phase \(p + 1) of \(rollout.policy?.forCell(cell).phases.count ?? 0)")
            case .startedBake: ("bake", "all devices of the phase finished; baking")
            case .completed: ("cell-completed", nil)
            case .paused(let g): ("paused", g.map(Self.describe))
            case .rolledBack(let g): ("rolled-back", g.map(Self.describe))
            case .resumed: ("resumed", nil)
            case .aborted: ("aborted", nil)
            case .blocked(let gates):
                (
                    "blocked",
                    "cannot judge \(gates.joined(separator: ", ")): no treated figures or nothing to compare them with; waiting (promote to override)"
                )
            }
        if case .paused(let g?) = a {
            logger.warning("cell paused by gate", metadata: ["rollout": "\(rollout.id)", "cell": "\(cell)", "gate": "\(Self.describe(g))"])
        }
        if case .rolledBack(let g?) = a {
            logger.warning(
                "cell rolled back by gate", metadata: ["rollout": "\(rollout.id)", "cell": "\(cell)", "gate": "\(Self.describe(g))"])
        }
        try await store.recordAction(
            rollout: rollout.id, RolloutActionRecord(at: now, actor: actor, action: name, cell: cell.description, detail: detail))
    }

    /// Where the last tick's time went.
    let lastStages = Mutex(GateTickStages())
    /// Ticks this process ran to the end as the leader (`/healthz` says it: the first one after a
    /// start reads the whole fleet).
    let completedTicks = Atomic<Int>(0)

    static func seconds(since start: ContinuousClock.Instant) -> Double { seconds(ContinuousClock.now - start) }
    static func seconds(_ d: Swift.Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    static func describe(_ g: GateResult) -> String {
        "\(g.metric) \(g.observed.map { String(format: "%.3f", $0) } ?? "n/a") > \(String(format: "%.3f", g.threshold))"
    }
}

/// Where a gate tick's time went (seconds), for `fleet-controller bench-gates`.
public struct GateTickStages: Sendable, Codable, Equatable {
    /// The devices' cells and labels (this process's copy brought up to date).
    public var deviceCells = 0.0
    /// Each rollout's members by cell, with cohort positions (kept while nothing changed).
    public var members = 0.0
    public var outcomes = 0.0
    public var runtimeMetrics = 0.0
    /// Rollout devices, baselines, failures.
    public var otherReads = 0.0
    /// Cohorts, observations, gates, state machines.
    public var evaluation = 0.0
    /// Cells, history points and actions saved.
    public var cellWrites = 0.0
    public var total = 0.0
}
