/// Root metadata: the role keys and thresholds. Signed by the root role (by the previous root's
/// threshold too, when it rotates keys).
public struct RootMetadata: Codable, Equatable, Sendable {
    public struct RoleKeys: Codable, Equatable, Sendable {
        public var keyids: [String]
        public var threshold: Int
        public init(keyids: [String], threshold: Int) { self.keyids = keyids; self.threshold = threshold }
    }

    public var type = "root"
    public var specVersion = 1
    public var version: Int
    public var expiresAt: Int64
    public var keys: [String: PublicKey]
    public var roles: [String: RoleKeys]

    public init(version: Int, expiresAt: Int64, keys: [String: PublicKey], roles: [String: RoleKeys]) {
        self.version = version
        self.expiresAt = expiresAt
        self.keys = keys
        self.roles = roles
    }

    /// Root metadata for one key per role, threshold 1.
    public init(version: Int, expiresAt: Int64, roleKeys: [Role: SigningKey]) {
        var keys: [String: PublicKey] = [:]
        var roles: [String: RoleKeys] = [:]
        for (role, key) in roleKeys {
            keys[key.keyID] = key.publicKey
            roles[role.rawValue] = RoleKeys(keyids: [key.keyID], threshold: 1)
        }
        self.init(version: version, expiresAt: expiresAt, keys: keys, roles: roles)
    }
}

/// What a variant needs from a device to run at all.
public struct Requirements: Codable, Equatable, Sendable {
    public var arch: [String]?
    public var cpuFlags: [String]?
    public var minMemoryBytes: Int64?
    public var accelerators: [String]?
    /// What the agent must be able to do (`ReleaseKind.selfUpdateCapability` for an agent binary);
    /// absent from the JSON when nil, so older catalogs read the same.
    public var capabilities: [String]?

    public init(
        arch: [String]? = nil, cpuFlags: [String]? = nil, minMemoryBytes: Int64? = nil, accelerators: [String]? = nil,
        capabilities: [String]? = nil
    ) {
        self.arch = arch
        self.cpuFlags = cpuFlags
        self.minMemoryBytes = minMemoryBytes
        self.accelerators = accelerators
        self.capabilities = capabilities
    }

    public var isEmpty: Bool { arch == nil && cpuFlags == nil && minMemoryBytes == nil && accelerators == nil && capabilities == nil }

    /// The first requirement the facts do not meet, or nil.
    public func unmet(by facts: DeviceFacts) -> String? {
        if let arch, !arch.contains(facts.arch) { return "needs arch \(arch.joined(separator: "|")), device is \(facts.arch)" }
        if let cpuFlags {
            let missing = cpuFlags.filter { !facts.cpuFlags.contains($0) }
            if !missing.isEmpty { return "needs CPU flags \(missing.joined(separator: ","))" }
        }
        if let minMemoryBytes, facts.memoryBytes < minMemoryBytes {
            return "needs \(ByteCount.format(minMemoryBytes)) memory, device has \(ByteCount.format(facts.memoryBytes))"
        }
        if let accelerators, !accelerators.contains(where: { a in facts.accelerators.contains { $0.hasPrefix(a) } }) {
            return "needs accelerator \(accelerators.joined(separator: "|"))"
        }
        if let capabilities {
            let missing = capabilities.filter { !(facts.capabilities ?? []).contains($0) }
            if !missing.isEmpty { return "needs agent capability \(missing.joined(separator: ","))" }
        }
        return nil
    }
}

/// One artifact in a release catalog.
public struct CatalogVariant: Codable, Equatable, Sendable {
    public var name: String
    public var sha256: String
    public var size: Int64
    public var fileName: String
    public var format: String  // onnx, safetensors, …
    public var dtype: String  // fp32, fp16, int8, int4, …
    public var requires: Requirements
    public var attributes: [String: String]
    /// What it was derived from, by which technique, recipe and tool; nil for a model registered as
    /// itself (a reference). Absent from the JSON when nil, so older catalogs read the same.
    public var lineage: Lineage?

    public init(
        name: String, sha256: String, size: Int64, fileName: String, format: String, dtype: String,
        requires: Requirements = Requirements(), attributes: [String: String] = [:], lineage: Lineage? = nil
    ) {
        self.name = name; self.sha256 = sha256; self.size = size; self.fileName = fileName
        self.format = format; self.dtype = dtype; self.requires = requires; self.attributes = attributes
        self.lineage = lineage
    }
}

/// The release catalog, signed by the offline release key: the only artifacts a device may install
/// for a model, and the hardware-class definitions the device classifies itself with.
public struct ReleaseCatalog: Codable, Equatable, Sendable {
    public var type = "catalog"
    public var model: String
    public var version: String
    public var serial: Int  // strictly increasing per model
    public var expiresAt: Int64
    public var variants: [CatalogVariant]
    public var hardwareClasses: [HardwareClass]
    /// nil: a model release (and absent from the JSON, so model catalogs read as before).
    public var kind: ReleaseKind?

    public init(
        model: String, version: String, serial: Int, expiresAt: Int64, variants: [CatalogVariant], hardwareClasses: [HardwareClass],
        kind: ReleaseKind? = nil
    ) {
        self.model = model; self.version = version; self.serial = serial; self.expiresAt = expiresAt
        self.variants = variants; self.hardwareClasses = hardwareClasses; self.kind = kind
    }

    public var releaseKind: ReleaseKind { kind ?? .model }
}

/// How the artifact travels: whole, or as a delta against the exact model the device runs.
public struct PackageRef: Codable, Equatable, Sendable {
    public static let full = "full"
    public static let delta = "delta"
    public var kind: String  // "full" or "delta"
    public var sha256: String
    public var size: Int64
    public var url: String
    public var baseSha256: String?

    public init(kind: String, sha256: String, size: Int64, url: String, baseSha256: String? = nil) {
        self.kind = kind; self.sha256 = sha256; self.size = size; self.url = url; self.baseSha256 = baseSha256
    }
}

/// A per-device assignment, signed by the online director key.
public struct Assignment: Codable, Equatable, Sendable {
    public var type = "assignment"
    public var deviceId: String
    public var hardwareClass: String
    public var model: String
    public var release: String  // "model@version"
    public var variant: String
    public var sha256: String
    public var size: Int64
    public var package: PackageRef
    public var counter: UInt64  // strictly increasing per (device, model)
    public var expiresAt: Int64
    public var catalogSha256: String  // binds the assignment to one catalog version
    /// Maintenance windows: the new model may be downloaded and staged at any time but goes live
    /// only inside one of these (Unix seconds, computed by the controller in the device's zone);
    /// nil: any time.
    public var activation: [ActivationWindow]?
    /// The catalog's kind, signed again by the director: nil for a model.
    public var kind: ReleaseKind?

    public init(
        deviceId: String, hardwareClass: String, model: String, release: String, variant: String,
        sha256: String, size: Int64, package: PackageRef, counter: UInt64, expiresAt: Int64, catalogSha256: String
    ) {
        self.deviceId = deviceId; self.hardwareClass = hardwareClass; self.model = model; self.release = release
        self.variant = variant; self.sha256 = sha256; self.size = size; self.package = package
        self.counter = counter; self.expiresAt = expiresAt; self.catalogSha256 = catalogSha256
    }
}

/// Freshness, signed by the online timestamp key with a short expiry. Two forms:
/// - fleet-wide (agents that send the full check-in): names every catalog in force (by release id,
///   "model@version"), so an attacker cannot keep serving an old one;
/// - per device (frugal check-ins, Uptane's per-vehicle director metadata): `snapshot` is the
///   `CheckInSnapshot` digest of exactly the catalog and assignment this device must hold for each
///   model the answer covers, so an idle answer that leaves them out still binds them. Its version
///   is the signing time, at least one above what the device says it trusts: it only goes forward
///   for that device with no per-device counter kept by the controller.
public struct TimestampMetadata: Codable, Equatable, Sendable {
    public var type = "timestamp"
    public var version: UInt64
    public var expiresAt: Int64
    public var catalogs: [String: String]  // release id "model@version" -> sha256 of the catalog payload
    /// Per-device form: the snapshot digest; nil in the fleet-wide form.
    public var snapshot: String?

    public init(version: UInt64, expiresAt: Int64, catalogs: [String: String], snapshot: String? = nil) {
        self.version = version; self.expiresAt = expiresAt; self.catalogs = catalogs; self.snapshot = snapshot
    }

    enum CodingKeys: String, CodingKey { case type, version, expiresAt, catalogs, snapshot }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        version = try c.decode(UInt64.self, forKey: .version)
        expiresAt = try c.decode(Int64.self, forKey: .expiresAt)
        snapshot = try c.decodeIfPresent(String.self, forKey: .snapshot)
        // The per-device form may leave the catalogs out (the snapshot binds them); the fleet-wide one may not.
        if snapshot == nil {
            catalogs = try c.decode([String: String].self, forKey: .catalogs)
        } else {
            catalogs = try c.decodeIfPresent([String: String].self, forKey: .catalogs) ?? [:]
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        try c.encode(version, forKey: .version)
        try c.encode(expiresAt, forKey: .expiresAt)
        // The fleet-wide form is byte for byte what it was before the per-device one existed.
        if snapshot == nil || !catalogs.isEmpty { try c.encode(catalogs, forKey: .catalogs) }
        try c.encodeIfPresent(snapshot, forKey: .snapshot)
    }
}
