import FleetCore

struct DeviceRecord: Sendable, Equatable {
    var id: String
    var facts: DeviceFacts
    var hardwareClass: String?
    var tier: String?
    var installed: [String: String]
    var phase: String?
    var status: DeviceStatus
    var statusDetail: String?
    var held: [String: String]
    var firstSeen: Int64
    var lastSeen: Int64
    var agentVersion: String?
    /// Labels bound by the enrollment token and set by the operator (the device's own are in its facts).
    var enrolledLabels: [String: String] = [:]
    var operatorLabels: [String: String] = [:]
    /// `facts.probed.digest` when known (stored with the facts, so a frugal check-in is compared
    /// without encoding and hashing them again); nil: not known, worked out where needed.
    var factsDigest: String? = nil

    /// The digest a frugal check-in names these facts by.
    var probedFactsDigest: String { factsDigest ?? facts.probed.digest }

    /// Its labels after precedence: operator over enrollment token over the device's own.
    var labels: [String: String] {
        Labels.effective(agent: facts.labels ?? [:], enrollment: enrolledLabels, operator: operatorLabels)
    }

    /// What a selector sees: the labels and the built-in keys class, tier and arch.
    var selectable: [String: String] {
        Labels.selectable(labels, hardwareClass: hardwareClass, tier: tier, arch: facts.arch)
    }

    /// The zone named by its `timezone` label, else the one its facts report.
    var timezoneLabel: String? { labels[Labels.timezoneKey] }
}

/// A rollout's first send of its release to a device: what the device ran before (its rollback
/// target), and when.
struct RolloutReach: Sendable, Equatable {
    var rollout: Int64
    var priorRelease: String?
    var priorSha256: String?
    var at: Int64
}

struct ModelRecord: Sendable, Equatable {
    var name: String
    var minQuality: Double?
    var createdAt: Int64
}

struct VariantRecord: Sendable, Equatable {
    var model: String
    var variant: CatalogVariant
    var quality: Double?
    var createdAt: Int64
}

struct ReleaseRecord: Sendable, Equatable {
    var id: String
    var model: String
    var version: String
    var serial: Int
    var catalogEnvelope: Envelope
    var catalogSha256: String
    var catalog: ReleaseCatalog
    var createdAt: Int64
}

struct RolloutRecord: Sendable, Equatable {
    var id: Int64
    var releaseId: String
    var model: String
    var strategy: String  // "all", or the policy name
    var state: RolloutState
    var createdAt: Int64
    /// A staged rollout's policy, as it was when the rollout started.
    var policy: RolloutPolicy? = nil
    /// What the devices ran before: the control cohort's release, and the rollback target.
    var previousReleaseId: String? = nil
    var createdBy: String = "operator"
    /// The devices the rollout is for; everything by default.
    var selector: LabelSelector = .everything
    /// Set at start: activation only inside this window (over the policy's and the fleet's).
    var window: MaintenanceWindow? = nil
    /// The wave that runs now (0 without waves); waves before it completed.
    var wave: Int = 0
}

/// One cell of a staged rollout: its state machine and the cohort cut-off of its current phase.
struct StoredCell: Codable, Sendable, Equatable {
    var state: CellState
    /// Devices whose cohort position is below this get the new release.
    var cutoff: Double
    var observation: CellObservation?
    /// When the cell last added a point to its history.
    var historyAt: Int64? = nil
    /// The stored row's revision when this copy was read (not part of the body): a write that
    /// replaces it succeeds only while the row is still at this revision.
    var revision: Int64 = 0

    private enum CodingKeys: String, CodingKey { case state, cutoff, observation, historyAt }
}

struct DeviceCellRecord: Sendable, Equatable {
    var id: String
    var hardwareClass: String?
    var tier: String?
    var arch: String? = nil
    /// The zone the device's facts report (its `timezone` label, if any, is in `labels`).
    var timezone: String? = nil
    /// Effective labels (operator over enrollment over the device's own).
    var labels: [String: String] = [:]

    var selectable: [String: String] { Labels.selectable(labels, hardwareClass: hardwareClass, tier: tier, arch: arch) }

    /// The zone named by its `timezone` label, if any.
    var timezoneLabel: String? { labels[Labels.timezoneKey] }
}

/// How many devices are of one class and tier, in one status.
struct DeviceCount: Sendable, Equatable {
    var hardwareClass: String?
    var tier: String?
    var status: DeviceStatus
    var devices: Int
}

struct DeviceCellSnapshot: Sendable {
    var records: [DeviceCellRecord]
    var version: UInt64
}

/// A device a staged rollout sent its release to, and what it ran before (its rollback target).
struct RolloutDeviceRecord: Sendable, Equatable {
    var priorRelease: String?
    var priorSha256: String?
    var assignedAt: Int64
}

/// A cell at one moment, for the dashboard's charts.
struct CellHistoryPoint: Codable, Sendable, Equatable {
    var at: Int64
    var phase: Int
    var status: CellState.Status
    var targeted: Int
    var committed: Int
    var failed: Int
    var treatmentP50: Double?
    var controlP50: Double?
    var treatmentP95: Double?
    var controlP95: Double?
}

/// Who did what to a rollout, and when.
struct RolloutActionRecord: Codable, Sendable, Equatable {
    var at: Int64
    var actor: String
    var action: String
    var cell: String?
    var detail: String?
}

/// The last runtime metrics a device reported for a release.
struct DeviceMetrics: Sendable, Equatable {
    var deviceId: String
    var release: String
    var p50: Double?
    var p95: Double?
    var errorRate: Double?
    var crashes: Int
}

struct AssignmentRecord: Sendable, Equatable {
    var deviceId: String
    var model: String
    var counter: UInt64
    var releaseId: String
    var variant: String
    var sha256: String
    var packageSha256: String
    var envelope: Envelope
    var expiresAt: Int64
    /// The activation windows signed into the assignment; nil: any time.
    var activation: [ActivationWindow]? = nil
}

/// A delta package from one exact base artifact to one target artifact.
struct DeltaRecord: Sendable, Equatable {
    typealias Status = DeltaStatus
    var baseSha256: String
    var targetSha256: String
    var status: Status
    var packageSha256: String?
    var packageSize: Int64?
    var method: String?
    var detail: String?
    var createdAt: Int64
}

/// An assignment that failed on a device for good, not yet retried by an operator.
struct DeviceFailure: Sendable, Equatable {
    var deviceId: String
    var model: String
    var release: String
    var sha256: String?
    var kind: String
    var fault: String?
    var detail: String?
    var at: Int64
}

/// A variant trial: `devices` of `hardwareClass` are sent each of `variants` of `release` in turn.
struct TrialRecord: Sendable, Equatable {
    var id: Int64
    var model: String
    var release: String
    var hardwareClass: String
    var variants: [String]
    var devices: [String]
    var state: TrialState
    var createdAt: Int64
    var createdBy: String
}

/// What became of a release across every rollout that sent it.
/// Where a release stands on the devices it was sent to, read from its assignments alone (never
/// the whole fleet's rows): what `rollout status` and `rollout list` show of a rollout in force.
struct ReleaseProgress: Sendable, Equatable {
    /// Devices holding an assignment of the release.
    var targeted: Int
    /// Of those, devices that run the assigned artifact.
    var committed: Int
    /// Of the others, devices whose status is failed or rolled back.
    var failed: Int
    /// The activation windows of the assignments whose device does not run the artifact yet (nil:
    /// any time), for counting devices that wait for a window.
    var notRunningWindows: [[ActivationWindow]?]
}

struct ReleaseHistory: Sendable, Equatable {
    /// Devices ever sent an assignment of the release.
    var targeted: Int
    /// Devices that committed it, and how many of them by a delta package.
    var received: Int
    var receivedViaDelta: Int
    /// Devices it failed on, not retried.
    var failed: Int
}

struct EventIngest: Sendable, Equatable {
    var stored: Int
    var duplicates: Int
    var ackedThrough: UInt64
}

/// Everything the controller keeps, behind one protocol so that several backends (SQLite for a lab,
/// PostgreSQL for replicas) serve the same routes. Each method is atomic.
protocol FleetStore: Sendable {
    func upsertDevice(_ device: DeviceRecord) async throws
    func device(_ id: String) async throws -> DeviceRecord?
    /// Whether a device has checked in, without reading its row.
    func deviceExists(_ id: String) async throws -> Bool
    /// A check-in that changed nothing but the time the device was seen and (non-nil) the models
    /// it is held back on (written in batches).
    func touchDevice(_ id: String, lastSeen: Int64, held: [String: String]?) async throws
    func devices() async throws -> [DeviceRecord]
    /// The devices that run something of `model` (filtered in the database: a fleet where few run
    /// it is not read whole).
    func devices(running model: String) async throws -> [DeviceRecord]
    /// Devices counted by class, tier and status (in the database: no row is read whole).
    func deviceCounts() async throws -> [DeviceCount]
    /// Each device's status, by id (two short columns per device).
    func deviceStatuses() async throws -> [String: DeviceStatus]
    /// Every device's id, class and tier only: what the rollout driver needs, cheap to read.
    func deviceCells() async throws -> [DeviceCellRecord]
    /// The same, with a version that changes whenever any device's cell or labels do (work
    /// derived from the devices, such as a rollout's members, is kept while it stays the same).
    func deviceCellSnapshot() async throws -> DeviceCellSnapshot

    func createModel(_ model: ModelRecord) async throws
    func model(_ name: String) async throws -> ModelRecord?
    func models() async throws -> [ModelRecord]

    func addVariant(_ variant: VariantRecord) async throws
    func variants(model: String) async throws -> [VariantRecord]
    func saveVariantReport(model: String, variant: String, _ report: VariantReport) async throws
    func variantReport(model: String, variant: String) async throws -> VariantReport?

    func createRelease(_ release: ReleaseRecord) async throws
    func release(_ id: String) async throws -> ReleaseRecord?
    func releases() async throws -> [ReleaseRecord]
    func maxSerial(model: String) async throws -> Int

    /// Creates a rollout and marks `superseding` (rollouts of the same model it takes over) superseded.
    func createRollout(_ r: RolloutRecord, superseding: [Int64]) async throws -> RolloutRecord
    /// Moves a rollout to its next wave (ticks on the leader: fenced).
    func setRolloutWave(_ id: Int64, _ wave: Int) async throws
    /// The operator's labels of a device: `set` added or replaced, `remove` removed. nil: no such device.
    func updateOperatorLabels(deviceId: String, set: [String: String], remove: [String]) async throws -> DeviceRecord?
    /// The rollout as stored now (never cached).
    func rollout(_ id: Int64) async throws -> RolloutRecord?
    func rollouts() async throws -> [RolloutRecord]
    /// The rollout in force for each model: active, completed or aborted (not superseded).
    func activeRollouts() async throws -> [RolloutRecord]
    func setRolloutState(_ id: Int64, _ state: RolloutState) async throws

    func cells(rollout: Int64) async throws -> [CellKey: StoredCell]
    /// The cells as stored now, past any cache: for a decision that must not act on a stale copy.
    func freshCells(rollout: Int64) async throws -> [CellKey: StoredCell]
    /// One cell as stored now, past the cache.
    func freshCell(rollout: Int64, _ key: CellKey) async throws -> StoredCell?
    func saveCell(rollout: Int64, _ key: CellKey, _ cell: StoredCell) async throws
    /// Writes `cell` only if the stored one is still at `cell.revision` (or, for a cell read as
    /// absent, still absent): two writers that read the same copy cannot both win. Returns the
    /// stored cell (at its new revision), or nil when another write came first.
    /// `announce: false`: a change to what only views and the next tick read (the observation, the
    /// history time), not to what check-ins decide by (state and cut-off): the other replicas'
    /// copies are not dropped for it and take it at their next re-read (`StoreCache.maxAge`).
    func replaceCell(rollout: Int64, _ key: CellKey, _ cell: StoredCell, existed: Bool, announce: Bool) async throws -> StoredCell?
    func recordAction(rollout: Int64, _ a: RolloutActionRecord) async throws
    func actions(rollout: Int64) async throws -> [RolloutActionRecord]
    /// The latest install event of each device for a release: device → kind.
    func installOutcomes(release: String) async throws -> [String: String]
    /// The latest runtime-metrics event of each device of a model received since `since` (the
    /// controller's clock: device clocks are not trusted for windows).
    func runtimeMetrics(model: String, since: Int64) async throws -> [DeviceMetrics]
    /// The same by device.
    func latestRuntimeMetrics(model: String, since: Int64) async throws -> [String: DeviceMetrics]

    func assignment(deviceId: String, model: String) async throws -> AssignmentRecord?
    func assignments() async throws -> [AssignmentRecord]
    /// Stores `record` only if the stored counter is still `expectedCounter` (nil: none stored).
    func replaceAssignment(_ record: AssignmentRecord, expectedCounter: UInt64?) async throws -> Bool

    /// Inserts a `building` record unless one exists for the pair; true when it inserted.
    func claimDelta(base: String, target: String, at: Int64) async throws -> Bool
    func finishDelta(_ record: DeltaRecord) async throws
    func delta(base: String, target: String) async throws -> DeltaRecord?
    func deltas(target: String) async throws -> [DeltaRecord]
    func buildingDeltas() async throws -> [(String, String)]

    /// Stores each (device, seq) once and updates the device's status from install events.
    func appendEvents(deviceId: String, _ events: [StatusEvent], receivedAt: Int64) async throws -> EventIngest
    func events(deviceId: String, limit: Int) async throws -> [StatusEvent]
    /// The events after `seq`, oldest first.
    func events(deviceId: String, after seq: UInt64, limit: Int) async throws -> [StatusEvent]

    /// A device's failures not yet retried: the releases the director does not send it again.
    func failures(deviceId: String) async throws -> [DeviceFailure]
    /// The devices a release failed on and that were not retried.
    func failures(release: String) async throws -> [DeviceFailure]
    func releaseHistory(release: String) async throws -> ReleaseHistory
    /// The release's assignments against what their devices run (`model`'s artifact).
    func releaseProgress(release: String, model: String) async throws -> ReleaseProgress
    /// Devices that hold `model` back (a held reason for it), counted in the store.
    func devicesHolding(model: String) async throws -> Int

    func createTrial(_ t: TrialRecord) async throws -> TrialRecord
    func trials(model: String) async throws -> [TrialRecord]
    func setTrialState(_ id: Int64, _ state: String) async throws
    /// The artifacts of `model` a device has reported figures for (benchmark or runtime metrics).
    func measuredArtifacts(model: String, deviceId: String) async throws -> Set<String>
    /// An operator's retry: forgets the failures of `release` (on `devices`, or all) and makes the
    /// next check-in of each sign a new assignment. Returns what it cleared.
    func clearFailures(release: String, devices: [String]?, by actor: String, at: Int64) async throws -> [DeviceFailure]

    /// Remembers, once, that a rollout sent its release to a device and what the device ran before.
    func recordRolloutDevice(rollout: Int64, deviceId: String, priorRelease: String?, priorSha256: String?, at: Int64) async throws
    /// `replaceAssignment` that also records, in the same transaction, that a rollout reached the
    /// device (`recordRolloutDevice`), when `reaching` is given and the assignment is written.
    func replaceAssignment(_ record: AssignmentRecord, expectedCounter: UInt64?, reaching: RolloutReach?) async throws -> Bool
    func rolloutDevice(rollout: Int64, deviceId: String) async throws -> RolloutDeviceRecord?
    /// Every release the rollout's devices ran before it reached them.
    func priorReleases(rollout: Int64) async throws -> Set<String>
    /// Every device the rollout sent its release to, with what it ran before.
    func rolloutDevices(rollout: Int64) async throws -> [String: RolloutDeviceRecord]
    /// The latest runtime-metrics event of each device for one release, received since `since`.
    func runtimeMetrics(model: String, release: String, since: Int64) async throws -> [DeviceMetrics]
    /// Each device's latest benchmark and runtime figures per artifact of `model`.
    func performanceSamples(model: String) async throws -> [VariantMeasurement.Sample]
    /// What each device runs of `model` now: device → sha256.
    func installed(model: String) async throws -> [String: String]
    /// The release a device's latest commit of `sha256` came with.
    func committedRelease(deviceId: String, model: String, sha256: String) async throws -> String?

    /// The rollout's history points per cell, oldest first; bounded per cell.
    func appendHistory(rollout: Int64, cell: CellKey, _ point: CellHistoryPoint) async throws
    func history(rollout: Int64) async throws -> [String: [CellHistoryPoint]]
    /// The count of events a device's outbox dropped, as the device last reported it.
    func recordDropped(deviceId: String, total: UInt64, at: Int64) async throws
    func eventsDropped() async throws -> [String: UInt64]

    func meta(_ key: String) async throws -> String?
    func setMeta(_ key: String, _ value: String) async throws
}

extension FleetStore {
    /// A check-in that changed nothing but the time the device was seen.
    func touchDevice(_ id: String, lastSeen: Int64) async throws { try await touchDevice(id, lastSeen: lastSeen, held: nil) }

    /// A cell write the other replicas hear of (a new cell, an operator's action, a state change).
    func replaceCell(rollout: Int64, _ key: CellKey, _ cell: StoredCell, existed: Bool) async throws -> StoredCell? {
        try await replaceCell(rollout: rollout, key, cell, existed: existed, announce: true)
    }

    /// Every device's cell and labels (the replica's copy) with its status (two columns per
    /// device): what views that group or select devices read, without any device's row whole. A
    /// device registered between the two reads counts as idle.
    func deviceCellsWithStatus() async throws -> [(cell: DeviceCellRecord, status: DeviceStatus)] {
        let statuses = try await deviceStatuses()
        return try await deviceCells().map { ($0, statuses[$0.id] ?? .idle) }
    }
}
