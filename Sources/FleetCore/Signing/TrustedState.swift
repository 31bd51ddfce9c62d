/// What a device trusts: its pinned root and the highest versions and counters it has accepted.
/// Only ever moves forward; persisted by the agent after each accepted update.
public struct TrustedState: Codable, Equatable, Sendable {
    public var rootEnvelope: Envelope
    public var root: RootMetadata
    public var timestampVersion: UInt64 = 0
    public var catalogSerials: [String: Int] = [:]
    public var assignmentCounters: [String: UInt64] = [:]
    public var assignmentDigests: [String: String] = [:]
    /// sha256 of the per-device timestamp accepted at `timestampVersion`: another one of the same
    /// version is a replay. nil until a frugal check-in; absent from older trust files.
    public var timestampDigest: String?

    public init(pinning rootEnvelope: Envelope, now: Int64) throws(TrustError) {
        self.root = try MetadataVerifier.verifyInitialRoot(rootEnvelope, now: now)
        self.rootEnvelope = rootEnvelope
    }

    /// Follows a chain of newer roots, each signed by its predecessor.
    public mutating func rotate(through chain: [Envelope], now: Int64) throws(TrustError) {
        var current = root
        var latest = rootEnvelope
        for envelope in chain {
            guard let body = envelope.payloadBytes,
                let peek = try? FleetJSON.decode(RootMetadata.self, from: Data(body), limit: MetadataLimits.root)
            else {
                throw TrustError(.malformed, "root chain entry is not root metadata")
            }
            if peek.version <= current.version { continue }
            current = try MetadataVerifier.verifyRootUpdate(envelope, trusted: current, now: now, checkExpiry: false)
            latest = envelope
        }
        if current.version != root.version {
            try MetadataVerifier.checkExpiry(current.expiresAt, now: now, what: "root")
        }
        root = current
        rootEnvelope = latest
    }
}

/// An update that passed every check: what to install and what the device now trusts.
public struct VerifiedUpdate: Equatable, Sendable {
    public var assignment: Assignment
    public var variant: CatalogVariant
    public var catalog: ReleaseCatalog
    public var state: TrustedState
}

/// The whole chain a device checks before it writes a byte into a model slot.
public enum UpdateVerifier {
    public static func verify(
        catalog catalogEnvelope: Envelope, assignment assignmentEnvelope: Envelope,
        timestamp timestampEnvelope: Envelope, state: TrustedState,
        deviceId: String, facts: DeviceFacts, now: Int64,
        snapshot: CheckInSnapshot? = nil
    ) throws(TrustError) -> VerifiedUpdate {
        var next = state
        let root = state.root
        // An expired root stops updates until a newer one arrives through rotation.
        try MetadataVerifier.checkExpiry(root.expiresAt, now: now, what: "trusted root")

        // Freshness first: a frozen or replayed view of the world stops here.
        let (ts, bound) = try checkFreshness(
            timestampEnvelope, state: state, next: &next, deviceId: deviceId, now: now,
            snapshot: snapshot)

        let catBody = try MetadataVerifier.verify(catalogEnvelope, type: PayloadType.catalog, role: .release, root: root)
        let catalog = try MetadataVerifier.decode(ReleaseCatalog.self, catBody, limit: MetadataLimits.catalog, what: "catalog")
        try MetadataVerifier.checkExpiry(catalog.expiresAt, now: now, what: "catalog \(catalog.model)@\(catalog.version)")
        // Names become paths on the device (models/NAME/<sha256>/FILE, downloads/<sha256>.part): only
        // plain names and hex hashes, whichever keys signed them.
        guard Name.isValid(catalog.model) else { throw TrustError(.malformed, "catalog model name '\(catalog.model)' is not a plain name") }
        let catalogDigest = Digest.sha256Hex(catBody)
        if bound != nil {
            // Checked with the assignment below, against the snapshot.
        } else if ts.catalogs["\(catalog.model)@\(catalog.version)"] != catalogDigest {
            throw TrustError(.mixAndMatch, "timestamp does not name catalog \(catalog.model)@\(catalog.version)")
        }
        // An older catalog is acceptable only because a fresh timestamp names it (a director-driven
        // rollback to the previous release); the highest serial seen is kept for the record.
        next.catalogSerials[catalog.model] = max(state.catalogSerials[catalog.model] ?? 0, catalog.serial)

        let asBody = try MetadataVerifier.verify(assignmentEnvelope, type: PayloadType.assignment, role: .director, root: root)
        let assignment = try MetadataVerifier.decode(Assignment.self, asBody, limit: MetadataLimits.assignment, what: "assignment")
        try MetadataVerifier.checkExpiry(assignment.expiresAt, now: now, what: "assignment")
        guard assignment.deviceId == deviceId else {
            throw TrustError(.wrongDevice, "assignment is for device \(assignment.deviceId), this is \(deviceId)")
        }
        guard assignment.catalogSha256 == catalogDigest, assignment.model == catalog.model,
            assignment.release == "\(catalog.model)@\(catalog.version)"
        else {
            throw TrustError(.mixAndMatch, "assignment refers to another catalog")
        }
        // An agent binary never goes into a model slot, nor a model into the agent's.
        guard (assignment.kind ?? .model) == catalog.releaseKind, catalog.releaseKind.allows(model: catalog.model) else {
            throw TrustError(
                .wrongKind,
                "catalog \(catalog.model) of kind \(catalog.releaseKind.rawValue), assignment of kind \((assignment.kind ?? .model).rawValue)"
            )
        }
        let digest = Digest.sha256Hex(asBody)
        if let bound {
            let entry = bound.models[assignment.model]
            guard entry?.catalog == catalogDigest, entry?.assignment == digest, bound.digest == ts.snapshot else {
                throw TrustError(.mixAndMatch, "timestamp binds other catalogs or assignments than this answer and what the device holds")
            }
        }
        if let last = state.assignmentCounters[assignment.model] {
            if assignment.counter < last {
                throw TrustError(.rollback, "assignment counter \(assignment.counter) is below trusted \(last)")
            }
            if assignment.counter == last, state.assignmentDigests[assignment.model] != digest {
                throw TrustError(.replay, "assignment counter \(assignment.counter) was already used for another assignment")
            }
        }
        next.assignmentCounters[assignment.model] = assignment.counter
        next.assignmentDigests[assignment.model] = digest

        let ownClass = HardwareClassifier.classify(facts, classes: catalog.hardwareClasses)?.name
        guard ownClass == assignment.hardwareClass else {
            throw TrustError(
                .wrongHardwareClass, "assignment is for class \(assignment.hardwareClass), device classifies as \(ownClass ?? "none")")
        }

        guard let variant = catalog.variants.first(where: { $0.name == assignment.variant && $0.sha256 == assignment.sha256 }) else {
            throw TrustError(
                .notInCatalog,
                "variant \(assignment.variant) \(assignment.sha256.prefix(12)) is not in catalog \(catalog.model)@\(catalog.version)")
        }
        guard Digest.isSHA256Hex(variant.sha256), Name.isValid(variant.fileName) else {
            throw TrustError(.malformed, "variant \(variant.name): its sha256 or its file name '\(variant.fileName)' is not plain")
        }
        guard variant.size == assignment.size else {
            throw TrustError(.lengthMismatch, "assignment says \(assignment.size) bytes, catalog says \(variant.size)")
        }
        if let unmet = variant.requires.unmet(by: facts) {
            throw TrustError(.wrongHardwareClass, "variant \(variant.name) \(unmet)")
        }
        let pkg = assignment.package
        switch pkg.kind {
        case PackageRef.full:
            guard pkg.sha256 == variant.sha256 else { throw TrustError(.hashMismatch, "package hash differs from the catalog") }
            guard pkg.size == variant.size else { throw TrustError(.lengthMismatch, "package length differs from the catalog") }
        case PackageRef.delta:
            // The delta itself is made online; what it must produce is the release-signed artifact,
            // checked after it is applied. Its own length is bounded so a server cannot send without end.
            guard let base = pkg.baseSha256, Digest.isSHA256Hex(base), Digest.isSHA256Hex(pkg.sha256) else {
                throw TrustError(.malformed, "delta package without a valid base or package hash")
            }
            let limit = variant.size > Int64.max / 4 ? Int64.max : variant.size * 2 + (1 << 20)
            guard pkg.size > 0, pkg.size <= limit else {
                throw TrustError(.lengthMismatch, "delta package of \(pkg.size) bytes for a \(variant.size)-byte artifact")
            }
        default:
            throw TrustError(.unsupported, "package kind \(pkg.kind)")
        }
        return VerifiedUpdate(assignment: assignment, variant: variant, catalog: catalog, state: next)
    }
    /// A per-device timestamp that came with no catalog or assignment to check (an answer that
    /// covers no model): it must still bind exactly that, so that an answer stripped of every
    /// model under a genuine timestamp stops here. Returns what the device then trusts.
    public static func verifyAlone(
        timestamp timestampEnvelope: Envelope, state: TrustedState, deviceId: String,
        now: Int64
    ) throws(TrustError) -> TrustedState {
        var next = state
        try MetadataVerifier.checkExpiry(state.root.expiresAt, now: now, what: "trusted root")
        let empty = CheckInSnapshot(deviceId: deviceId, models: [:])
        let (ts, _) = try checkFreshness(timestampEnvelope, state: state, next: &next, deviceId: deviceId, now: now, snapshot: empty)
        guard ts.snapshot == empty.digest else {
            throw TrustError(.mixAndMatch, "timestamp binds catalogs and assignments this answer does not carry")
        }
        return next
    }

    /// Signature, expiry and version of the timestamp; for the per-device form, the snapshot it
    /// is to be checked against (the binding itself is checked once catalog and assignment are
    /// known to be signed, so that a changed byte stays a bad signature).
    static func checkFreshness(
        _ envelope: Envelope, state: TrustedState, next: inout TrustedState, deviceId: String, now: Int64,
        snapshot: CheckInSnapshot?
    ) throws(TrustError) -> (TimestampMetadata, CheckInSnapshot?) {
        let body = try MetadataVerifier.verify(envelope, type: PayloadType.timestamp, role: .timestamp, root: state.root)
        let ts = try MetadataVerifier.decode(TimestampMetadata.self, body, limit: MetadataLimits.timestamp, what: "timestamp")
        try MetadataVerifier.checkExpiry(ts.expiresAt, now: now, what: "timestamp")
        guard ts.version >= state.timestampVersion else {
            throw TrustError(.rollback, "timestamp version \(ts.version) is older than trusted \(state.timestampVersion)")
        }
        defer { next.timestampVersion = ts.version }
        guard ts.snapshot != nil else {
            if ts.version != state.timestampVersion { next.timestampDigest = nil }
            return (ts, nil)
        }
        // The per-device form binds the answer's whole view (what this device holds once it has
        // read the answer) instead of naming catalogs.
        guard let snapshot, snapshot.deviceId == deviceId else {
            throw TrustError(.mixAndMatch, "a per-device timestamp without this device's snapshot")
        }
        let digest = Digest.sha256Hex(body)
        if ts.version == state.timestampVersion, let seen = state.timestampDigest, seen != digest {
            throw TrustError(.replay, "timestamp version \(ts.version) was already used for another timestamp")
        }
        next.timestampDigest = digest
        return (ts, snapshot)
    }
}
