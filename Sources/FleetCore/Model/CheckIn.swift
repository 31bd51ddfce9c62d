/// What an agent sends when it checks in.
public struct CheckInRequest: Codable, Equatable, Sendable {
    public var facts: DeviceFacts
    public var installed: [String: String]          // model -> sha256 of the current slot
    public var agentVersion: String
    public var phase: String?                       // install phase, for the operator's view
    /// Models whose delta could not be applied here: send the whole artifact if the budget allows.
    public var fullPackages: [String]?

    public init(facts: DeviceFacts, installed: [String: String], agentVersion: String, phase: String? = nil,
                fullPackages: [String]? = nil) {
        self.facts = facts; self.installed = installed; self.agentVersion = agentVersion; self.phase = phase
        self.fullPackages = fullPackages
    }
}

/// One model's signed update: the release catalog and this device's assignment.
public struct ModelUpdate: Codable, Equatable, Sendable {
    public var model: String
    public var catalog: Envelope
    public var assignment: Envelope
    public init(model: String, catalog: Envelope, assignment: Envelope) {
        self.model = model; self.catalog = catalog; self.assignment = assignment
    }
}

public struct CheckInResponse: Codable, Equatable, Sendable {
    public var deviceId: String
    public var hardwareClass: String?
    public var tier: String?
    public var rootChain: [Envelope]     // newer root versions, in order, for rotation
    public var timestamp: Envelope?
    public var updates: [ModelUpdate]
    public var held: [String: String]    // model -> why nothing is assigned (over-budget, no variant fits)
    public var pollSeconds: Int
    /// How this device retries a failed assignment (its tier's policy); nil: the agent's default.
    public var retry: RetryPolicy?

    public init(deviceId: String, hardwareClass: String?, tier: String?, rootChain: [Envelope], timestamp: Envelope?,
                updates: [ModelUpdate], held: [String: String], pollSeconds: Int, retry: RetryPolicy? = nil) {
        self.deviceId = deviceId; self.hardwareClass = hardwareClass; self.tier = tier; self.rootChain = rootChain
        self.timestamp = timestamp; self.updates = updates; self.held = held; self.pollSeconds = pollSeconds
        self.retry = retry
    }
}

/// Names used as path components and keys: models, variants, devices. No separators, no dots at
/// the start, nothing a filesystem or a URL would read as structure.
public enum Name {
    public static func isValid(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 128, let first = s.utf8.first, first != UInt8(ascii: ".") && first != UInt8(ascii: "-") else { return false }
        return s.utf8.allSatisfy { c in
            (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c)
                || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".")
        }
    }
}
