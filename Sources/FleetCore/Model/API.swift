/// Operator-API documents, shared by the controller and fleetctl.
public struct ModelInfo: Codable, Equatable, Sendable {
    public var name: String
    public var minQuality: Double?
    public var createdAt: Int64
    public var nextSerial: Int
    public var variants: Int
    public init(name: String, minQuality: Double?, createdAt: Int64, nextSerial: Int, variants: Int) {
        self.name = name; self.minQuality = minQuality; self.createdAt = createdAt; self.nextSerial = nextSerial; self.variants = variants
    }
}

public struct NewModel: Codable, Sendable {
    public var name: String
    public var minQuality: Double?
    public init(name: String, minQuality: Double? = nil) { self.name = name; self.minQuality = minQuality }
}

public struct ArtifactInfo: Codable, Equatable, Sendable {
    public var sha256: String
    public var size: Int64
    public init(sha256: String, size: Int64) { self.sha256 = sha256; self.size = size }
}

public struct VariantInfo: Codable, Equatable, Sendable {
    public var model: String
    public var variant: CatalogVariant
    public var quality: Double?
    public var createdAt: Int64
    public init(model: String, variant: CatalogVariant, quality: Double?, createdAt: Int64) {
        self.model = model; self.variant = variant; self.quality = quality; self.createdAt = createdAt
    }
}

public struct NewVariant: Codable, Sendable {
    public var variant: CatalogVariant
    public var quality: Double?
    /// The builder's or evaluator's report, stored with the variant (`fleetctl variant show`).
    public var report: VariantReport?
    public init(variant: CatalogVariant, quality: Double? = nil, report: VariantReport? = nil) {
        self.variant = variant; self.quality = quality; self.report = report
    }
}

public struct NewRelease: Codable, Sendable {
    public var catalog: Envelope
    public init(catalog: Envelope) { self.catalog = catalog }
}

public struct ReleaseInfo: Codable, Equatable, Sendable {
    public var id: String
    public var model: String
    public var version: String
    public var serial: Int
    public var catalogSha256: String
    public var createdAt: Int64
    public var variants: [CatalogVariant]
    public init(
        id: String, model: String, version: String, serial: Int, catalogSha256: String, createdAt: Int64, variants: [CatalogVariant]
    ) {
        self.id = id; self.model = model; self.version = version; self.serial = serial
        self.catalogSha256 = catalogSha256; self.createdAt = createdAt; self.variants = variants
    }
}

public struct NewRollout: Codable, Sendable {
    public var release: String
    public var strategy: String  // "all" (every device at once) or "staged" (phases per cell, gated)
    public var policy: String?  // for "staged": a policy of fleet/policies, default "canary"
    /// For "staged": a whole policy document (the YAML of fleet/policies) used instead of a named one.
    public var policyDocument: String?
    /// For "staged": every bake time of the policy multiplied by this (labs: 0.01; 0 skips bakes).
    public var bakeScale: Double?
    /// Only the devices this label selector picks (see docs/API.md, "Selectors"); nil: every device.
    public var selector: String?
    /// Take over the devices an active rollout of the same model already covers, instead of being refused.
    public var supersede: Bool?
    /// A maintenance window for activation ("mon-fri 02:00+3h Europe/Berlin"), over the policy's and the fleet's.
    public var window: String?
    public init(
        release: String, strategy: String, policy: String? = nil, policyDocument: String? = nil, bakeScale: Double? = nil,
        selector: String? = nil, supersede: Bool? = nil, window: String? = nil
    ) {
        self.release = release; self.strategy = strategy; self.policy = policy; self.policyDocument = policyDocument;
        self.bakeScale = bakeScale
        self.selector = selector; self.supersede = supersede; self.window = window
    }
}

/// `fleetctl variant trial`: measure `variants` on `devices` devices of a class.
public struct NewTrial: Codable, Sendable {
    public var hardwareClass: String
    public var variants: [String]
    public var devices: Int
    public init(hardwareClass: String, variants: [String], devices: Int) {
        self.hardwareClass = hardwareClass; self.variants = variants; self.devices = devices
    }
}

public struct TrialInfo: Codable, Equatable, Sendable {
    public var id: Int64
    public var model: String
    public var release: String
    public var hardwareClass: String
    public var variants: [String]
    public var devices: [String]
    /// `running` until every device measured every variant (or could not run it), then `done`.
    public var state: TrialState
    /// Per device, the variants it has measured.
    public var measured: [String: [String]]
    public init(
        id: Int64, model: String, release: String, hardwareClass: String, variants: [String], devices: [String], state: TrialState,
        measured: [String: [String]]
    ) {
        self.id = id; self.model = model; self.release = release; self.hardwareClass = hardwareClass; self.variants = variants
        self.devices = devices; self.state = state; self.measured = measured
    }
}

/// An operator's retry of the devices a rollout's release failed on: all of them, one cell's, or one device.
public struct RolloutRetryRequest: Codable, Sendable {
    public var cell: String?  // "class/tier"
    public var device: String?
    public init(cell: String? = nil, device: String? = nil) { self.cell = cell; self.device = device }
}

public struct RolloutRetryResult: Codable, Equatable, Sendable {
    public var rollout: Int64
    public var release: String
    /// The devices whose failure was forgotten: each is sent the release again at its next check-in.
    public var retried: [String]
    public init(rollout: Int64, release: String, retried: [String]) {
        self.rollout = rollout; self.release = release; self.retried = retried
    }
}

public struct RolloutActionRequest: Codable, Sendable {
    public var cell: String?  // "class/tier"; nil: every cell
    public init(cell: String? = nil) { self.cell = cell }
}

public struct RolloutStatus: Codable, Equatable, Sendable {
    public struct Cell: Codable, Equatable, Sendable {
        public var cell: String
        public var status: CellState.Status
        public var phase: Int  // 1-based
        public var phases: Int
        public var cohortShare: Double
        public var observation: CellObservation?
        public var gates: [GateResult]
        public var failedGate: GateResult?
        /// Gates that cannot judge and hold the cell at the end of its phase (policy `unjudged: block`).
        public var blockedBy: [String]?
        /// Devices of the cell the release failed on and that no operator retried: held as failed.
        public var failedNotRetried: Int?
        /// For a rolled-back or aborted cell: how many devices it reached are off the new release again.
        public var afterStop: CellAfterStop?
        public init(
            cell: String, status: CellState.Status, phase: Int, phases: Int, cohortShare: Double, observation: CellObservation?,
            gates: [GateResult], failedGate: GateResult?, blockedBy: [String]? = nil, failedNotRetried: Int? = nil,
            afterStop: CellAfterStop? = nil
        ) {
            self.cell = cell; self.status = status; self.phase = phase; self.phases = phases; self.cohortShare = cohortShare
            self.observation = observation; self.gates = gates; self.failedGate = failedGate
            self.blockedBy = blockedBy; self.failedNotRetried = failedNotRetried; self.afterStop = afterStop
        }
    }
    public struct Action: Codable, Equatable, Sendable {
        public var at: Int64
        public var actor: String
        public var action: String
        public var cell: String?
        public var detail: String?
        public init(at: Int64, actor: String, action: String, cell: String?, detail: String?) {
            self.at = at; self.actor = actor; self.action = action; self.cell = cell; self.detail = detail
        }
    }
    public var rollout: RolloutInfo
    public var policy: RolloutPolicy?
    public var previousRelease: String?
    public var cells: [Cell]
    public var actions: [Action]
    /// The policy's waves in order, with their progress; nil for a policy without waves.
    public var waves: [Wave]?
    /// Devices of the rollout whose assignment waits for its maintenance window to open.
    public var waitingForWindow: Int?

    public struct Wave: Codable, Equatable, Sendable {
        public var name: String
        public var selector: String
        public var status: WaveStatus
        public var devices: Int
        public var cells: Int
        public init(name: String, selector: String, status: WaveStatus, devices: Int, cells: Int) {
            self.name = name; self.selector = selector; self.status = status; self.devices = devices; self.cells = cells
        }
    }

    public init(
        rollout: RolloutInfo, policy: RolloutPolicy?, previousRelease: String?, cells: [Cell], actions: [Action],
        waves: [Wave]? = nil, waitingForWindow: Int? = nil
    ) {
        self.rollout = rollout; self.policy = policy; self.previousRelease = previousRelease; self.cells = cells; self.actions = actions
        self.waves = waves; self.waitingForWindow = waitingForWindow
    }
}

public struct RolloutInfo: Codable, Equatable, Sendable {
    public var id: Int64
    public var release: String
    public var model: String
    public var strategy: String
    public var state: RolloutState
    public var createdAt: Int64
    public var targeted: Int  // devices with an assignment of this release
    public var committed: Int
    public var failed: Int
    public var held: Int
    /// The devices it is for ("" : every device) and its maintenance window, if it sets one.
    public var selector: String?
    public var window: String?
    public init(
        id: Int64, release: String, model: String, strategy: String, state: RolloutState, createdAt: Int64,
        targeted: Int, committed: Int, failed: Int, held: Int, selector: String? = nil, window: String? = nil
    ) {
        self.id = id; self.release = release; self.model = model; self.strategy = strategy; self.state = state
        self.createdAt = createdAt; self.targeted = targeted; self.committed = committed; self.failed = failed; self.held = held
        self.selector = selector; self.window = window
    }
}

public struct DeviceInfo: Codable, Equatable, Sendable {
    public var id: String
    public var hardwareClass: String?
    public var tier: String?
    public var facts: DeviceFacts
    public var installed: [String: String]
    public var phase: String?
    /// From the last install outcome (`idle` before any).
    public var status: DeviceStatus
    public var statusDetail: String?
    public var assigned: [String: String]  // model -> variant name assigned
    public var held: [String: String]
    public var firstSeen: Int64
    public var lastSeen: Int64
    public var agentVersion: String?
    /// Effective labels, and where each came from: "agent", "enrollment" or "operator".
    public var labels: [String: String]?
    public var labelSources: [String: String]?

    public init(
        id: String, hardwareClass: String?, tier: String?, facts: DeviceFacts, installed: [String: String], phase: String?,
        status: DeviceStatus, statusDetail: String?, assigned: [String: String], held: [String: String],
        firstSeen: Int64, lastSeen: Int64, agentVersion: String?, labels: [String: String]? = nil, labelSources: [String: String]? = nil
    ) {
        self.id = id; self.hardwareClass = hardwareClass; self.tier = tier; self.facts = facts; self.installed = installed
        self.phase = phase; self.status = status; self.statusDetail = statusDetail; self.assigned = assigned; self.held = held
        self.firstSeen = firstSeen; self.lastSeen = lastSeen; self.agentVersion = agentVersion
        self.labels = labels; self.labelSources = labelSources
    }
}

/// `fleetctl devices label ID k=v … --remove k`: the operator's labels of one device.
public struct LabelUpdate: Codable, Sendable {
    public var set: [String: String]
    public var remove: [String]
    public init(set: [String: String] = [:], remove: [String] = []) { self.set = set; self.remove = remove }
}

public struct Explanation: Codable, Equatable, Sendable {
    public var deviceId: String
    public var model: String
    public var release: String
    public var selection: Selection
    public init(deviceId: String, model: String, release: String, selection: Selection) {
        self.deviceId = deviceId; self.model = model; self.release = release; self.selection = selection
    }
}

public struct FleetStatus: Codable, Equatable, Sendable {
    public var devices: Int
    public var byClass: [String: Int]
    public var byTier: [String: Int]
    public var byStatus: [String: Int]
    public var models: Int
    public var releases: Int
    public var activeRollouts: Int
    public var artifacts: Int
    public var artifactBytes: Int64
    public init(
        devices: Int, byClass: [String: Int], byTier: [String: Int], byStatus: [String: Int], models: Int,
        releases: Int, activeRollouts: Int, artifacts: Int, artifactBytes: Int64
    ) {
        self.devices = devices; self.byClass = byClass; self.byTier = byTier; self.byStatus = byStatus; self.models = models
        self.releases = releases; self.activeRollouts = activeRollouts; self.artifacts = artifacts; self.artifactBytes = artifactBytes
    }
}

/// The error body every EdgeFleet endpoint returns: {"error": {"code": …, "message": …}}.
public struct APIErrorBody: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
        /// Figures a client may act on (e.g. `devicesInCommon` of an overlapping rollout).
        public var counts: [String: Int]?
        public init(code: String, message: String, counts: [String: Int]? = nil) {
            self.code = code; self.message = message; self.counts = counts
        }
    }
    public var error: Detail
    public init(error: Detail) { self.error = error }

    public static func message(from body: Data) -> String {
        if let e = try? JSONDecoder().decode(APIErrorBody.self, from: body) { return "\(e.error.code): \(e.error.message)" }
        return String(decoding: body.prefix(300), as: UTF8.self)
    }
}

/// The packages of a release: per target variant the deltas built, and the bytes its assignments
/// send compared with full downloads.
public struct ReleasePackages: Codable, Equatable, Sendable {
    public struct Delta: Codable, Equatable, Sendable {
        public var baseSha256: String
        public var status: DeltaStatus
        public var method: String?
        public var packageSha256: String?
        public var size: Int64?
        public var detail: String?
        public init(baseSha256: String, status: DeltaStatus, method: String?, packageSha256: String?, size: Int64?, detail: String?) {
            self.baseSha256 = baseSha256; self.status = status; self.method = method; self.packageSha256 = packageSha256
            self.size = size; self.detail = detail
        }
    }
    public struct Variant: Codable, Equatable, Sendable {
        public var variant: String
        public var sha256: String
        public var size: Int64
        public var deltas: [Delta]
        public init(variant: String, sha256: String, size: Int64, deltas: [Delta]) {
            self.variant = variant; self.sha256 = sha256; self.size = size; self.deltas = deltas
        }
    }
    public var release: String
    public var variants: [Variant]
    public var devices: Int
    public var devicesViaDelta: Int
    public var bytesSent: Int64
    public var bytesFull: Int64
    /// Every device that installed the release, whichever rollout sent it, and how many by delta.
    public var received: Int?
    public var receivedViaDelta: Int?
    public init(
        release: String, variants: [Variant], devices: Int, devicesViaDelta: Int, bytesSent: Int64, bytesFull: Int64,
        received: Int? = nil, receivedViaDelta: Int? = nil
    ) {
        self.release = release; self.variants = variants; self.devices = devices; self.devicesViaDelta = devicesViaDelta
        self.bytesSent = bytesSent; self.bytesFull = bytesFull; self.received = received; self.receivedViaDelta = receivedViaDelta
    }
}
