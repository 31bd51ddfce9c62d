import FleetCore

/// What the controller keeps about who may do what: operator tokens and enrollment tokens (by the
/// SHA-256 of their secret, never the secret), device identities, the audit log, and the root
/// versions devices follow after a rotation. Each method is atomic.
protocol AccessStore: Sendable {
    func createAPIToken(hash: String, _ info: APITokenInfo) async throws
    func apiToken(hash: String) async throws -> APITokenInfo?
    func apiTokens() async throws -> [APITokenInfo]
    /// False when there is no token with that id.
    func revokeAPIToken(id: String, at: Int64) async throws -> Bool
    func touchAPIToken(id: String, at: Int64) async throws
    /// Tokens that are neither revoked nor expired at `now`, of `role`.
    func activeTokenCount(role: OperatorRole, now: Int64) async throws -> Int

    func createEnrollmentToken(hash: String, _ info: EnrollmentTokenInfo) async throws
    func enrollmentTokens() async throws -> [EnrollmentTokenInfo]
    /// In one transaction: the token must exist, be unused, unexpired and (when bound) name this
    /// device; the device must not hold a live identity. Marks the token used and stores the
    /// identity, whose status comes from the token. Throws `AccessError` otherwise, storing nothing.
    func enroll(tokenHash: String, deviceId: String, fingerprint: String?, facts: DeviceFacts, now: Int64) async throws
        -> DeviceIdentityInfo

    func deviceIdentity(_ id: String) async throws -> DeviceIdentityInfo?
    /// What a device route's guard checks: the identity's status and certificate, nothing more.
    func deviceAccess(_ id: String) async throws -> DeviceAccessCheck?
    /// A check-in's reads in one: the device's access and its stored row (either may be missing).
    func checkInRecords(_ id: String) async throws -> (access: DeviceAccessCheck?, device: DeviceRecord?)
    func deviceIdentity(fingerprint: String) async throws -> DeviceIdentityInfo?
    func deviceIdentities() async throws -> [DeviceIdentityInfo]
    /// Moves an identity to `status`; nil when the device never enrolled. Revoking a device that
    /// never enrolled (open development mode) stores a revoked identity without a certificate.
    func setDeviceAccess(_ id: String, _ status: DeviceAccess, by actor: String, at: Int64) async throws -> DeviceIdentityInfo?

    func appendAudit(_ record: AuditRecord) async throws
    /// Newest first.
    func audit(limit: Int, actor: String?) async throws -> [AuditRecord]

    /// Root versions after the first, oldest first.
    func rootVersions() async throws -> [Envelope]
    func appendRootVersion(_ version: Int, _ envelope: Envelope, at: Int64) async throws
}

/// The part of a device's identity its requests are checked against.
struct DeviceAccessCheck: Sendable, Equatable {
    var status: DeviceAccess
    var fingerprint: String?
}
