/// The kinds of status events an agent sends. Raw values are the wire vocabulary.
///
/// A kind this build does not know (a newer agent's) decodes as `.other` with its raw string
/// kept, and encodes back to that string: the controller stores it as sent instead of refusing
/// the batch, and it takes part in nothing that needs a known kind (status, outcomes, failures).
public enum EventKind: Hashable, Sendable {
    case started, downloaded, verified, activated, committed
    case rolledBack
    /// The assignment failed and will not be tried again here until an operator retries it or a
    /// newer assignment replaces it.
    case failed
    /// One attempt failed; the agent tries again at the event's `retryAt`.
    case retrying
    /// Signed metadata was refused before anything was downloaded.
    case rejected
    /// Runtime figures of the model as its inference service reported them (`StatusEvent.metrics`).
    case metrics
    /// The operator's benchmark on a staged model: a `BenchmarkReport` in the detail.
    case benchmark
    /// The benchmark command failed; the install goes on (the health check decides).
    case benchmarkFailed
    /// A kind this build does not know, by its raw value.
    case other(String)

    public static let known: [EventKind] = [
        .started, .downloaded, .verified, .activated, .committed, .rolledBack, .failed, .retrying, .rejected, .metrics,
        .benchmark, .benchmarkFailed
    ]

    /// The install steps whose latest one per (release, device) is the device's outcome of that release.
    public static let installOutcomes: [EventKind] = [.started, .downloaded, .verified, .activated, .committed, .failed, .rolledBack]

    public var isInstallOutcome: Bool { Self.installOutcomes.contains(self) }
}

extension EventKind: RawRepresentable {
    public init(rawValue: String) {
        switch rawValue {
        case "started": self = .started
        case "downloaded": self = .downloaded
        case "verified": self = .verified
        case "activated": self = .activated
        case "committed": self = .committed
        case "rolled-back": self = .rolledBack
        case "failed": self = .failed
        case "retrying": self = .retrying
        case "rejected": self = .rejected
        case "metrics": self = .metrics
        case "benchmark": self = .benchmark
        case "benchmark-failed": self = .benchmarkFailed
        default: self = .other(rawValue)
        }
    }

    public var rawValue: String {
        switch self {
        case .started: "started"
        case .downloaded: "downloaded"
        case .verified: "verified"
        case .activated: "activated"
        case .committed: "committed"
        case .rolledBack: "rolled-back"
        case .failed: "failed"
        case .retrying: "retrying"
        case .rejected: "rejected"
        case .metrics: "metrics"
        case .benchmark: "benchmark"
        case .benchmarkFailed: "benchmark-failed"
        case .other(let raw): raw
        }
    }
}

extension EventKind: Codable {
    public init(from decoder: any Decoder) throws { self.init(rawValue: try decoder.singleValueContainer().decode(String.self)) }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// A literal names its kind as on the wire (`"committed"` is `.committed`), so tests and fixtures
/// can write kinds as the controller's API shows them.
extension EventKind: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self.init(rawValue: value) }
}

extension EventKind: CustomStringConvertible {
    public var description: String { rawValue }
}

/// The device status shown to operators (`DeviceInfo.status`), from the kind of its latest
/// install event.
public enum DeviceStatus: String, Codable, Sendable, CaseIterable {
    case idle, installing, committed, failed, retrying, rejected
    case rolledBack = "rolled-back"

    /// The status an event of this kind leaves the device in; nil for kinds that leave it as it is.
    public init?(after kind: EventKind) {
        switch kind {
        case .started, .downloaded, .verified, .activated: self = .installing
        case .committed: self = .committed
        case .failed: self = .failed
        case .rolledBack: self = .rolledBack
        case .rejected: self = .rejected
        case .retrying: self = .retrying
        case .metrics, .benchmark, .benchmarkFailed, .other: return nil
        }
    }
}
