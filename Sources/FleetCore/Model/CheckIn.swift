/// What an agent sends when it checks in.
///
/// Frugal check-ins (an agent that sends `timestampVersion`): `facts` only when they changed since
/// the controller last stored them (otherwise `factsDigest`), `installed` only when it changed since
/// the last check-in, and in `holds` what the agent holds per model, so that the controller sends a
/// catalog or an assignment only when it changed. An agent that sends none of the new fields gets
/// the full answer, as before. See README, "Check-in protocol".
public struct CheckInRequest: Codable, Equatable, Sendable {
    /// nil: unchanged since the controller stored them; `factsDigest` says which they are.
    public var facts: DeviceFacts?
    /// model -> sha256 of the current slot.
    public var installed: [String: String]
    /// false: `installed` was left out of a frugal request because it is what the last check-in
    /// said (the controller takes the one it stored).
    public var installedSent = true
    /// nil: the one the controller stored with the facts (sent again whenever the facts are).
    public var agentVersion: String?
    public var phase: String?  // install phase, for the operator's view
    /// Models whose delta could not be applied here: send the whole artifact if the budget allows.
    public var fullPackages: [String]?
    /// `DeviceFacts.digest` of the facts left out.
    public var factsDigest: String?
    /// model -> the catalog and assignment the agent holds, verified.
    public var holds: [String: HeldMetadata]?
    /// The root version the agent trusts: the root chain comes only when it is behind.
    public var rootVersion: Int?
    /// The timestamp version the agent trusts. Its presence makes the check-in frugal.
    public var timestampVersion: UInt64?
    /// The sha256 of the running agent binary and what it can do (`ReleaseKind.selfUpdateCapability`):
    /// sent with the facts, kept by the controller inside them, outside their digest.
    public var agentSha256: String?
    public var capabilities: [String]?

    public init(
        facts: DeviceFacts?, installed: [String: String], agentVersion: String?, phase: String? = nil,
        fullPackages: [String]? = nil, factsDigest: String? = nil, holds: [String: HeldMetadata]? = nil,
        rootVersion: Int? = nil, timestampVersion: UInt64? = nil
    ) {
        self.facts = facts; self.installed = installed; self.agentVersion = agentVersion; self.phase = phase
        self.fullPackages = fullPackages; self.factsDigest = factsDigest; self.holds = holds
        self.rootVersion = rootVersion; self.timestampVersion = timestampVersion
    }

    /// The agent understands per-device timestamps and compact answers.
    public var isFrugal: Bool { timestampVersion != nil }

    enum CodingKeys: String, CodingKey {
        case facts, installed, agentVersion, phase, fullPackages, factsDigest, holds, rootVersion, timestampVersion, agentSha256,
            capabilities
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        facts = try c.decodeIfPresent(DeviceFacts.self, forKey: .facts)
        let sent = try c.decodeIfPresent([String: String].self, forKey: .installed)
        installed = sent ?? [:]
        installedSent = sent != nil
        agentVersion = try c.decodeIfPresent(String.self, forKey: .agentVersion)
        phase = try c.decodeIfPresent(String.self, forKey: .phase)
        fullPackages = try c.decodeIfPresent([String].self, forKey: .fullPackages)
        factsDigest = try c.decodeIfPresent(String.self, forKey: .factsDigest)
        holds = try c.decodeIfPresent([String: HeldMetadata].self, forKey: .holds)
        rootVersion = try c.decodeIfPresent(Int.self, forKey: .rootVersion)
        timestampVersion = try c.decodeIfPresent(UInt64.self, forKey: .timestampVersion)
        agentSha256 = try c.decodeIfPresent(String.self, forKey: .agentSha256)
        capabilities = try c.decodeIfPresent([String].self, forKey: .capabilities)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(facts, forKey: .facts)
        if installedSent || !isFrugal { try c.encode(installed, forKey: .installed) }
        try c.encodeIfPresent(agentVersion, forKey: .agentVersion)
        try c.encodeIfPresent(phase, forKey: .phase)
        try c.encodeIfPresent(fullPackages, forKey: .fullPackages)
        try c.encodeIfPresent(factsDigest, forKey: .factsDigest)
        try c.encodeIfPresent(holds, forKey: .holds)
        try c.encodeIfPresent(rootVersion, forKey: .rootVersion)
        try c.encodeIfPresent(timestampVersion, forKey: .timestampVersion)
        try c.encodeIfPresent(agentSha256, forKey: .agentSha256)
        try c.encodeIfPresent(capabilities, forKey: .capabilities)
    }
}

/// What an agent holds for one model: the sha256 of its catalog payload and the counter of its
/// assignment. Hints only: whatever the controller leaves out because of them, the device checks
/// against the per-device timestamp with the full digests of what it holds.
public struct HeldMetadata: Codable, Equatable, Sendable {
    public var catalog: String
    public var counter: UInt64
    public init(catalog: String, counter: UInt64) { self.catalog = catalog; self.counter = counter }
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

/// Why a frugal check-in must be sent again whole (facts and installed models) before it can be
/// answered. The agent does so once, in the same cycle.
public enum ResendReason: String, Codable, Sendable {
    case unknownFacts = "unknown-facts"  // a digest, and no facts stored for this device
    case factsMismatch = "facts-mismatch"  // a digest that is not the one of the stored facts
    case unknownInstalled = "unknown-installed"  // `installed` left out, and none stored for this device
}

public struct CheckInResponse: Codable, Equatable, Sendable {
    public var deviceId: String
    public var hardwareClass: String?
    public var tier: String?
    public var rootChain: [Envelope]  // newer root versions, in order, for rotation
    /// The fleet-wide timestamp (full check-ins).
    public var timestamp: Envelope?
    public var updates: [ModelUpdate]
    public var held: [String: String]  // model -> why nothing is assigned (over-budget, no variant fits)
    public var pollSeconds: Int
    /// How this device retries a failed assignment (its tier's policy); nil: the agent's default.
    /// A frugal answer carries it only with a new assignment.
    public var retry: RetryPolicy?
    /// Frugal answers: model -> its new assignment; the catalog is the one the device holds.
    public var reassigned: [String: Envelope]
    /// Frugal answers: models whose catalog and assignment the device holds are still current.
    public var unchanged: [String]
    /// Frugal answers: the per-device timestamp (its `snapshot` binds updates, reassigned and unchanged).
    public var stamp: CompactEnvelope?
    /// Frugal answers: nothing else is in this answer; send the check-in again with facts and installed.
    public var resend: ResendReason?
    /// Encode as a frugal answer: leave out what is empty and what the agent does not use.
    public var compact = false

    public init(
        deviceId: String, hardwareClass: String?, tier: String?, rootChain: [Envelope], timestamp: Envelope?,
        updates: [ModelUpdate], held: [String: String], pollSeconds: Int, retry: RetryPolicy? = nil,
        reassigned: [String: Envelope] = [:], unchanged: [String] = [], stamp: CompactEnvelope? = nil,
        resend: ResendReason? = nil, compact: Bool = false
    ) {
        self.deviceId = deviceId; self.hardwareClass = hardwareClass; self.tier = tier; self.rootChain = rootChain
        self.timestamp = timestamp; self.updates = updates; self.held = held; self.pollSeconds = pollSeconds
        self.retry = retry; self.reassigned = reassigned; self.unchanged = unchanged; self.stamp = stamp
        self.resend = resend; self.compact = compact
    }

    enum CodingKeys: String, CodingKey {
        case deviceId, hardwareClass, tier, rootChain, timestamp, updates, held, pollSeconds, retry, reassigned, unchanged, stamp, resend
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        deviceId = try c.decodeIfPresent(String.self, forKey: .deviceId) ?? ""
        hardwareClass = try c.decodeIfPresent(String.self, forKey: .hardwareClass)
        tier = try c.decodeIfPresent(String.self, forKey: .tier)
        rootChain = try c.decodeIfPresent([Envelope].self, forKey: .rootChain) ?? []
        timestamp = try c.decodeIfPresent(Envelope.self, forKey: .timestamp)
        updates = try c.decodeIfPresent([ModelUpdate].self, forKey: .updates) ?? []
        held = try c.decodeIfPresent([String: String].self, forKey: .held) ?? [:]
        pollSeconds = try c.decode(Int.self, forKey: .pollSeconds)
        retry = try c.decodeIfPresent(RetryPolicy.self, forKey: .retry)
        reassigned = try c.decodeIfPresent([String: Envelope].self, forKey: .reassigned) ?? [:]
        unchanged = try c.decodeIfPresent([String].self, forKey: .unchanged) ?? []
        stamp = try c.decodeIfPresent(CompactEnvelope.self, forKey: .stamp)
        resend = try c.decodeIfPresent(ResendReason.self, forKey: .resend)
        compact = stamp != nil || resend != nil
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if !compact {
            // Agents before frugal check-ins need every one of these keys.
            try c.encode(deviceId, forKey: .deviceId)
            try c.encodeIfPresent(hardwareClass, forKey: .hardwareClass)
            try c.encodeIfPresent(tier, forKey: .tier)
            try c.encode(rootChain, forKey: .rootChain)
            try c.encode(updates, forKey: .updates)
            try c.encode(held, forKey: .held)
        } else {
            if !rootChain.isEmpty { try c.encode(rootChain, forKey: .rootChain) }
            if !updates.isEmpty { try c.encode(updates, forKey: .updates) }
            if !held.isEmpty { try c.encode(held, forKey: .held) }
        }
        try c.encodeIfPresent(timestamp, forKey: .timestamp)
        try c.encode(pollSeconds, forKey: .pollSeconds)
        try c.encodeIfPresent(retry, forKey: .retry)
        if !reassigned.isEmpty { try c.encode(reassigned, forKey: .reassigned) }
        if !unchanged.isEmpty { try c.encode(unchanged, forKey: .unchanged) }
        try c.encodeIfPresent(stamp, forKey: .stamp)
        try c.encodeIfPresent(resend, forKey: .resend)
    }
}

/// Names used as path components and keys: models, variants, devices. No separators, no dots at
/// the start, nothing a filesystem or a URL would read as structure.
public enum Name {
    public static func isValid(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 128, let first = s.utf8.first, first != UInt8(ascii: ".") && first != UInt8(ascii: "-") else {
            return false
        }
        return s.utf8.allSatisfy { c in
            (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c)
                || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".")
        }
    }
}
