import FleetCore

/// The agent's state folder: identity, pinned trust, install journal, telemetry outbox, partial
/// downloads. Every file is replaced atomically, except the outbox, which is appended to
/// (`OutboxFile`); the journal and the outbox are changed through `AgentRecords` alone.
struct AgentState {
    let root: String
    var downloads: String { root + "/downloads" }

    init(root: String) throws(AgentIOError) {
        self.root = root
        try FS.makeDirectories(root)
        try FS.makeDirectories(root + "/downloads")
    }

    func load<T: Decodable>(_ name: String, as type: T.Type, limit: Int = 4 << 20) throws -> T? {
        let path = root + "/" + name
        guard FS.exists(path) else { return nil }
        let bytes = try FS.read(path, limit: limit)
        return try FleetJSON.decode(type, from: Data(bytes), limit: limit)
    }

    func save<T: Encodable>(_ name: String, _ value: T) throws {
        try FS.writeAtomically(root + "/" + name, [UInt8](try FleetJSON.encode(value)))
    }

    func downloadPath(_ sha256: String) -> String { "\(downloads)/\(sha256).part" }
}

struct Identity: Codable { var deviceId: String }

/// Per-model install journals, and each model's failed attempts of its latest assignment (so a
/// bad artifact is not fetched again and again: retries wait, are capped, then stop; a new
/// assignment is tried).
struct Journal: Codable, Equatable {
    var installs: [String: InstallState] = [:]
    /// Assignment counters that failed, as journals before retry records kept them: never retried.
    var failedCounters: [String: UInt64] = [:]
    /// Failed attempts of the latest failed assignment per model.
    var retries: [String: RetryRecord]? = nil
    /// Models whose delta to this target sha256 failed: the next check-in asks for the full artifact.
    var deltaFailed: [String: String] = [:]
    /// The release each installed artifact (by sha256) came with, so runtime metrics name it.
    var releaseOf: [String: String]? = nil
    /// No status event had a seq at or above this when the outbox file was last compacted: where
    /// numbering goes on if the file's header cannot be read.
    var eventSeqFloor: UInt64? = nil
}

/// The link measurement the agent reports as its downlink.
struct LinkStats: Codable, Equatable { var mbps: Double; var bytes: Int64 }

/// Status events waiting to be acknowledged by the controller, in memory (`OutboxFile` keeps
/// them on disk). Bounded: when it is full the oldest events are dropped and counted.
struct Outbox: Codable, Equatable {
    var nextSeq: UInt64 = 1
    var pending: [StatusEvent] = []
    var dropped: UInt64 = 0
    static let capacity = 1000

    /// A new event with the next seq; `detail` is cut to 1000 characters.
    func event(
        kind: EventKind, time: Int64, model: String? = nil, sha256: String? = nil, release: String? = nil, detail: String? = nil,
        fault: InstallFault? = nil, retryAt: Int64? = nil, metrics: RuntimeMetrics? = nil
    ) -> StatusEvent {
        StatusEvent(
            seq: nextSeq, time: time, kind: kind, model: model, sha256: sha256, release: release,
            detail: detail.map { String($0.prefix(1000)) }, fault: fault?.rawValue, retryAt: retryAt, metrics: metrics)
    }

    mutating func append(
        kind: EventKind, time: Int64, model: String? = nil, sha256: String? = nil, release: String? = nil, detail: String? = nil,
        fault: InstallFault? = nil, retryAt: Int64? = nil, metrics: RuntimeMetrics? = nil
    ) {
        append(
            event(
                kind: kind, time: time, model: model, sha256: sha256, release: release, detail: detail, fault: fault, retryAt: retryAt,
                metrics: metrics))
    }

    /// Adds an event numbered already (a new one from `event`, or one replayed from the file).
    mutating func append(_ e: StatusEvent) {
        pending.append(e)
        nextSeq = max(nextSeq, e.seq + 1)
        if pending.count > Self.capacity {
            dropped += UInt64(pending.count - Self.capacity)
            pending.removeFirst(pending.count - Self.capacity)
        }
    }

    mutating func acknowledge(through seq: UInt64) {
        pending.removeAll { $0.seq <= seq }
    }
}

/// What the agent keeps between frugal check-ins (`checkin.json`): which facts the controller has
/// stored, and per model the catalog and assignment it verified last, so that the controller need
/// not send them again. A cache, never trust: whatever it holds is verified again, against each
/// new timestamp, before it is acted on; when it is lost the next check-in is a whole one.
struct CheckInMemory: Codable, Equatable {
    /// `DeviceFacts.digest` of the facts the controller stored, and the agent (version, binary, capabilities) sent with them.
    var factsDigest: String?
    var agentVersion: String?
    var held: [String: HeldEnvelopes] = [:]
    /// The installed models the last check-in told the controller about.
    var reported: [String: String]?
    /// The retry policy of the device's tier, as last sent (it comes with new assignments).
    var retry: RetryPolicy?
}

/// A model's verified catalog and assignment, as they were signed.
struct HeldEnvelopes: Codable, Equatable {
    var catalog: Envelope
    var assignment: Envelope
}
