/// A status event from a device. `seq` is per device and strictly increasing; the controller
/// stores each (device, seq) exactly once, so a batch resent after a lost reply is harmless.
public struct StatusEvent: Codable, Equatable, Sendable {
    public var seq: UInt64
    public var time: Int64
    /// What happened; a kind this build does not know is kept as `.other` with its raw value.
    public var kind: EventKind
    public var model: String?
    public var sha256: String?
    public var release: String?
    public var detail: String?
    /// An `InstallFault` raw value on `failed`, `retrying` and `rolled-back` events (a string on
    /// the wire, so that a newer agent's fault does not make an older controller refuse the batch).
    public var fault: String?
    /// On `retrying`: when the device will try again (its own clock).
    public var retryAt: Int64?
    /// On `metrics`: the model's runtime figures. Agents before this field sent them as JSON in
    /// `detail`; `runtimeMetrics` reads either.
    public var metrics: RuntimeMetrics?

    public init(
        seq: UInt64, time: Int64, kind: EventKind, model: String? = nil, sha256: String? = nil,
        release: String? = nil, detail: String? = nil, fault: String? = nil, retryAt: Int64? = nil, metrics: RuntimeMetrics? = nil
    ) {
        self.seq = seq; self.time = time; self.kind = kind; self.model = model; self.sha256 = sha256
        self.release = release; self.detail = detail; self.fault = fault; self.retryAt = retryAt; self.metrics = metrics
    }

    /// The runtime figures of a `metrics` event: the typed field, or from an older agent the JSON
    /// in `detail`; nil on other kinds and when the figures do not decode.
    public var runtimeMetrics: RuntimeMetrics? {
        guard kind == .metrics else { return nil }
        if let metrics { return metrics }
        guard let detail else { return nil }
        return try? JSONDecoder().decode(RuntimeMetrics.self, from: Data(detail.utf8))
    }
}

public struct EventBatch: Codable, Equatable, Sendable {
    public var events: [StatusEvent]
    /// Events the device's bounded outbox had to drop (oldest first) since it started counting.
    public var droppedEvents: UInt64?
    public init(events: [StatusEvent], droppedEvents: UInt64? = nil) { self.events = events; self.droppedEvents = droppedEvents }
    public static let maxEvents = 500
}

public struct EventAck: Codable, Equatable, Sendable {
    /// Every event with seq up to this one is stored.
    public var ackedThrough: UInt64
    public var stored: Int
    public var duplicates: Int
    public init(ackedThrough: UInt64, stored: Int, duplicates: Int) {
        self.ackedThrough = ackedThrough; self.stored = stored; self.duplicates = duplicates
    }
}

/// Runtime metrics of a model as the local inference service reports them; carried in the
/// `metrics` of a `metrics` status event (by agents before it, as JSON in its `detail`).
public struct RuntimeMetrics: Codable, Equatable, Sendable {
    public var latencyP50Ms: Double?
    public var latencyP95Ms: Double?
    public var errorRate: Double?
    public var requests: Int?
    public var crashes: Int?

    public init(
        latencyP50Ms: Double? = nil, latencyP95Ms: Double? = nil, errorRate: Double? = nil, requests: Int? = nil, crashes: Int? = nil
    ) {
        self.latencyP50Ms = latencyP50Ms; self.latencyP95Ms = latencyP95Ms; self.errorRate = errorRate
        self.requests = requests; self.crashes = crashes
    }
}
