/// Identity and access: operator API tokens with roles, one-time enrollment tokens, device
/// identities and the audit log, as they travel between fleetctl, the agent and the controller.

/// What an operator token may do. Each role includes the ones below it.
public enum OperatorRole: String, Codable, Sendable, CaseIterable, Comparable {
    /// Read everything an operator can read.
    case viewer
    /// Also change the fleet: artifacts, models, variants, releases, rollouts.
    case `operator`
    /// Also manage access: tokens, enrollment tokens, device approval and revocation, root rotation, audit log.
    case admin

    private var rank: Int {
        switch self {
        case .viewer: 0;
        case .operator: 1;
        case .admin: 2
        }
    }
    public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
}

public struct NewAPIToken: Codable, Sendable {
    public var name: String
    public var role: OperatorRole
    /// nil: does not expire.
    public var expiresInSeconds: Int64?
    public init(name: String, role: OperatorRole, expiresInSeconds: Int64? = nil) {
        self.name = name; self.role = role; self.expiresInSeconds = expiresInSeconds
    }
}

public struct APITokenInfo: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var role: OperatorRole
    public var createdAt: Int64
    public var createdBy: String
    public var expiresAt: Int64?
    public var revokedAt: Int64?
    public var lastUsedAt: Int64?
    public init(
        id: String, name: String, role: OperatorRole, createdAt: Int64, createdBy: String, expiresAt: Int64? = nil,
        revokedAt: Int64? = nil, lastUsedAt: Int64? = nil
    ) {
        self.id = id; self.name = name; self.role = role; self.createdAt = createdAt; self.createdBy = createdBy
        self.expiresAt = expiresAt; self.revokedAt = revokedAt; self.lastUsedAt = lastUsedAt
    }
}

/// The secret is shown once, here; the controller keeps only its SHA-256.
public struct CreatedAPIToken: Codable, Sendable {
    public var token: String
    public var info: APITokenInfo
    public init(token: String, info: APITokenInfo) { self.token = token; self.info = info }
}

public struct NewEnrollmentToken: Codable, Sendable {
    /// Only this device id may enroll with it; nil: any id not enrolled yet.
    public var deviceId: String?
    public var expiresInSeconds: Int64?
    /// The device lands in `pending` and waits for `fleetctl devices approve`.
    public var requireApproval: Bool?
    /// Labels bound to the device that enrolls with it; the device cannot override them.
    public var labels: [String: String]?
    public init(deviceId: String? = nil, expiresInSeconds: Int64? = nil, requireApproval: Bool? = nil, labels: [String: String]? = nil) {
        self.deviceId = deviceId; self.expiresInSeconds = expiresInSeconds; self.requireApproval = requireApproval; self.labels = labels
    }
}

public struct EnrollmentTokenInfo: Codable, Sendable, Equatable {
    public var id: String
    public var deviceId: String?
    public var createdAt: Int64
    public var createdBy: String
    public var expiresAt: Int64
    public var requireApproval: Bool
    public var usedAt: Int64?
    public var usedBy: String?
    /// Labels bound to the device that enrolls with it.
    public var labels: [String: String]?
    public init(
        id: String, deviceId: String?, createdAt: Int64, createdBy: String, expiresAt: Int64, requireApproval: Bool,
        usedAt: Int64? = nil, usedBy: String? = nil, labels: [String: String]? = nil
    ) {
        self.id = id; self.deviceId = deviceId; self.createdAt = createdAt; self.createdBy = createdBy; self.expiresAt = expiresAt
        self.requireApproval = requireApproval; self.usedAt = usedAt; self.usedBy = usedBy; self.labels = labels
    }
}

public struct CreatedEnrollmentToken: Codable, Sendable {
    public var token: String
    public var info: EnrollmentTokenInfo
    public init(token: String, info: EnrollmentTokenInfo) { self.token = token; self.info = info }
}

/// What a device sends once, with its one-time enrollment token. Over mutual TLS its identity
/// is the client certificate it presents on that connection; `certificate` is then ignored.
public struct EnrollmentRequest: Codable, Sendable {
    public var deviceId: String
    public var token: String
    public var facts: DeviceFacts
    public var agentVersion: String?
    public init(deviceId: String, token: String, facts: DeviceFacts, agentVersion: String? = nil) {
        self.deviceId = deviceId; self.token = token; self.facts = facts; self.agentVersion = agentVersion
    }
}

public enum DeviceAccess: String, Codable, Sendable {
    /// Enrolled with a token that asks for approval; gets nothing until approved.
    case pending
    case accepted
    /// Gets nothing, ever, under this identity.
    case revoked
}

public struct DeviceIdentityInfo: Codable, Sendable, Equatable {
    public var deviceId: String
    public var status: DeviceAccess
    /// SHA-256 (hex) of the client certificate's SubjectPublicKeyInfo; nil when enrolled over plain HTTP (development).
    public var fingerprint: String?
    public var enrolledAt: Int64
    public var enrollmentToken: String
    /// The facts sent at enrollment; nil for a device revoked before it ever enrolled.
    public var facts: DeviceFacts?
    public var decidedBy: String?
    public var decidedAt: Int64?
    public init(
        deviceId: String, status: DeviceAccess, fingerprint: String?, enrolledAt: Int64, enrollmentToken: String,
        facts: DeviceFacts?, decidedBy: String? = nil, decidedAt: Int64? = nil
    ) {
        self.deviceId = deviceId; self.status = status; self.fingerprint = fingerprint; self.enrolledAt = enrolledAt
        self.enrollmentToken = enrollmentToken; self.facts = facts; self.decidedBy = decidedBy; self.decidedAt = decidedAt
    }
}

/// One authorised (or refused) call: who, what, when, and how it ended.
public struct AuditRecord: Codable, Sendable, Equatable {
    public var id: Int64
    public var at: Int64
    /// `token:NAME` (operator token), `device:ID`, `dev:NAME` (open development mode), `anonymous`.
    public var actor: String
    public var role: String?
    public var method: String
    public var path: String
    public var status: Int
    /// ok, denied (401/403), rejected (other 4xx), failed (5xx).
    public var outcome: String
    public var detail: String?
    public init(
        id: Int64 = 0, at: Int64, actor: String, role: String?, method: String, path: String, status: Int, outcome: String,
        detail: String? = nil
    ) {
        self.id = id; self.at = at; self.actor = actor; self.role = role; self.method = method; self.path = path
        self.status = status; self.outcome = outcome; self.detail = detail
    }
}

public struct RootRotation: Codable, Sendable {
    public var root: Envelope
    public init(root: Envelope) { self.root = root }
}

public struct RootInfo: Codable, Sendable {
    public var version: Int
    public var expiresAt: Int64
    /// Versions after the first that devices can follow, oldest first.
    public var chain: [Int]
    public init(version: Int, expiresAt: Int64, chain: [Int]) { self.version = version; self.expiresAt = expiresAt; self.chain = chain }
}
