/// Whether the controller may accept a release catalog: the checks that stand between an
/// operator's signed catalog and the fleet, beside `UpdateVerifier` (which makes the device's own
/// checks). Pure: the caller supplies what the store knows.
public enum ReleaseAcceptance {
    public struct Rejection: Error, Equatable, Sendable, CustomStringConvertible {
        public enum Code: String, Sendable {
            /// Not signed by the release role's threshold, malformed, expired: `trust` says which.
            case trust
            case invalidVersion = "invalid-version"
            case unknownModel = "unknown-model"
            case emptyRelease = "empty-release"
            /// A variant not registered with that name, hash and size.
            case unknownVariant = "unknown-variant"
            /// The serial is not above the model's last.
            case staleSerial = "stale-serial"
            /// An agent release under another name than `ReleaseKind.agentModel`, a model release
            /// under that name, or an agent binary that does not say which architecture and
            /// capability it needs.
            case wrongKind = "wrong-kind"
        }
        public var code: Code
        public var message: String
        public var trust: TrustError?
        public init(_ code: Code, _ message: String, trust: TrustError? = nil) {
            self.code = code; self.message = message; self.trust = trust
        }
        public var description: String { "\(code.rawValue): \(message)" }
    }

    /// What the store knows about the catalog's model: nil when the model is not registered.
    public struct ModelState: Sendable {
        public var registered: [String: CatalogVariant]
        public var lastSerial: Int
        public init(registered: [String: CatalogVariant], lastSerial: Int) { self.registered = registered; self.lastSerial = lastSerial }
    }

    public struct Accepted: Sendable {
        public var catalog: ReleaseCatalog
        /// SHA-256 of the signed payload: what timestamps and snapshots name.
        public var payloadSha256: String
    }

    /// The catalog inside `envelope`, decoded once, if the controller may serve it. `model` is
    /// asked for the catalog's model (after the signature checks).
    public static func check(
        _ envelope: Envelope, root: RootMetadata, now: Int64,
        model: (String) async throws -> ModelState?
    ) async throws -> Accepted {
        let body: [UInt8]
        let catalog: ReleaseCatalog
        do {
            body = try MetadataVerifier.verify(envelope, type: PayloadType.catalog, role: .release, root: root)
            do { catalog = try FleetJSON.decode(ReleaseCatalog.self, from: Data(body), limit: MetadataLimits.catalog) } catch {
                throw TrustError(error, what: "catalog")
            }
        } catch let e as TrustError {
            throw Rejection(.trust, e.message, trust: e)
        }
        guard catalog.expiresAt > now else {
            throw Rejection(.trust, "catalog is already expired", trust: TrustError(.expired, "catalog is already expired"))
        }
        guard Name.isValid(catalog.version) else { throw Rejection(.invalidVersion, "'\(catalog.version)' is not a valid version") }
        guard let state = try await model(catalog.model) else { throw Rejection(.unknownModel, "no model \(catalog.model)") }
        guard !catalog.variants.isEmpty else { throw Rejection(.emptyRelease, "the catalog lists no variants") }
        guard catalog.releaseKind.allows(model: catalog.model) else {
            throw Rejection(.wrongKind, "a \(catalog.releaseKind.rawValue) release cannot be published as \(catalog.model)")
        }
        if catalog.releaseKind == .agent {
            // Only agents that say they can update themselves, and only on their architecture.
            for v in catalog.variants
            where v.requires.arch?.isEmpty ?? true || !(v.requires.capabilities ?? []).contains(ReleaseKind.selfUpdateCapability)
                || v.format != ReleaseKind.agentFormat
            {
                throw Rejection(
                    .wrongKind,
                    "agent binary \(v.name) must be format \(ReleaseKind.agentFormat) and require an arch and capability \(ReleaseKind.selfUpdateCapability)"
                )
            }
        }
        for v in catalog.variants {
            guard let r = state.registered[v.name], r.sha256 == v.sha256, r.size == v.size else {
                throw Rejection(.unknownVariant, "variant \(v.name) is not registered with that hash and size")
            }
        }
        guard catalog.serial > state.lastSerial else {
            throw Rejection(.staleSerial, "catalog serial \(catalog.serial) is not above \(state.lastSerial)")
        }
        return Accepted(catalog: catalog, payloadSha256: Digest.sha256Hex(body))
    }
}
