import FleetCore
import Foundation

/// Access tables next to the fleet tables in the same database: operator and enrollment tokens,
/// device identities, the audit log, root versions.
extension SQLStore: AccessStore {
    // MARK: operator tokens

    private static let tokenColumns = "id, name, role, created_at, created_by, expires_at, revoked_at, last_used_at"

    private static func tokenRow(_ r: SQLRow) throws -> APITokenInfo {
        guard let role = OperatorRole(rawValue: try r.string("role")) else { throw StorageError(.corrupt, "token with an unknown role") }
        return APITokenInfo(
            id: try r.string("id"), name: try r.string("name"), role: role, createdAt: try r.int("created_at"),
            createdBy: try r.string("created_by"), expiresAt: try r.optionalInt("expires_at"),
            revokedAt: try r.optionalInt("revoked_at"), lastUsedAt: try r.optionalInt("last_used_at"))
    }

    func createAPIToken(hash: String, _ t: APITokenInfo) async throws {
        try await db.execute(
            "INSERT INTO api_tokens (hash, \(Self.tokenColumns)) VALUES (?,?,?,?,?,?,?,?,?)",
            [hash, t.id, t.name, t.role.rawValue, t.createdAt, t.createdBy, t.expiresAt, t.revokedAt, t.lastUsedAt])
    }

    func apiToken(hash: String) async throws -> APITokenInfo? {
        try await db.query("SELECT \(Self.tokenColumns) FROM api_tokens WHERE hash = ?", [hash]).first.map(Self.tokenRow)
    }

    func apiTokens() async throws -> [APITokenInfo] {
        try await db.query("SELECT \(Self.tokenColumns) FROM api_tokens ORDER BY created_at, id", []).map(Self.tokenRow)
    }

    func revokeAPIToken(id: String, at: Int64) async throws -> Bool {
        try await write { tx in
            guard try await !tx.query("SELECT 1 AS one FROM api_tokens WHERE id = ?", [id]).isEmpty else { return false }
            try await tx.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [at, id])
            return true
        }
    }

    func touchAPIToken(id: String, at: Int64) async throws {
        try await db.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", [at, id])
    }

    func activeTokenCount(role: OperatorRole, now: Int64) async throws -> Int {
        Int(
            try await db.scalar(
                """
                SELECT COUNT(*) AS n FROM api_tokens WHERE role = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)
                """, [role.rawValue, now]
            ).int ?? 0)
    }

    // MARK: enrollment

    private static let enrollmentColumns = "id, device_id, created_at, created_by, expires_at, require_approval, used_at, used_by, labels"

    private static func enrollmentRow(_ r: SQLRow) throws -> EnrollmentTokenInfo {
        EnrollmentTokenInfo(
            id: try r.string("id"), deviceId: try r.optionalString("device_id"), createdAt: try r.int("created_at"),
            createdBy: try r.string("created_by"), expiresAt: try r.int("expires_at"),
            requireApproval: try r.bool("require_approval"), usedAt: try r.optionalInt("used_at"),
            usedBy: try r.optionalString("used_by"), labels: try Self.labels(r, "labels").nilIfEmpty)
    }

    func createEnrollmentToken(hash: String, _ t: EnrollmentTokenInfo) async throws {
        try await db.execute(
            "INSERT INTO enrollment_tokens (hash, \(Self.enrollmentColumns)) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                hash, t.id, t.deviceId, t.createdAt, t.createdBy, t.expiresAt, t.requireApproval ? 1 : 0, t.usedAt, t.usedBy,
                try json(t.labels ?? [:])
            ])
    }

    func enrollmentTokens() async throws -> [EnrollmentTokenInfo] {
        try await db.query("SELECT \(Self.enrollmentColumns) FROM enrollment_tokens ORDER BY created_at, id", []).map(Self.enrollmentRow)
    }

    func enroll(tokenHash: String, deviceId: String, fingerprint: String?, facts: DeviceFacts, now: Int64) async throws
        -> DeviceIdentityInfo
    {
        let factsText = try json(facts)
        return try await write { tx in
            guard
                let token = try await tx.query("SELECT \(Self.enrollmentColumns) FROM enrollment_tokens WHERE hash = ?", [tokenHash])
                    .first.map(Self.enrollmentRow)
            else {
                throw AccessError(.enrollmentTokenInvalid, "the enrollment token is not known")
            }
            guard token.usedAt == nil else { throw AccessError(.enrollmentTokenUsed, "enrollment token \(token.id) was used already") }
            guard token.expiresAt > now else { throw AccessError(.enrollmentTokenExpired, "enrollment token \(token.id) has expired") }
            if let bound = token.deviceId, bound != deviceId {
                throw AccessError(.enrollmentTokenWrongDevice, "enrollment token \(token.id) is for another device")
            }
            if let existing = try await Self.identity(tx, deviceId), existing.status != .revoked {
                throw AccessError(
                    .alreadyEnrolled,
                    "device \(deviceId) is enrolled already (\(existing.status.rawValue)); revoke it first to enroll it again")
            }
            let identity = DeviceIdentityInfo(
                deviceId: deviceId, status: token.requireApproval ? .pending : .accepted, fingerprint: fingerprint,
                enrolledAt: now, enrollmentToken: token.id, facts: facts,
                decidedBy: token.requireApproval ? nil : "token:\(token.id)", decidedAt: token.requireApproval ? nil : now)
            let used = try await tx.query(
                "UPDATE enrollment_tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL RETURNING id",
                [now, deviceId, tokenHash])
            guard used.count == 1 else { throw AccessError(.enrollmentTokenUsed, "enrollment token \(token.id) was used already") }
            try await tx.execute(
                """
                INSERT INTO device_identities (device_id, status, fingerprint, enrolled_at, enrollment_token, facts, decided_by, decided_at)
                VALUES (?,?,?,?,?,?,?,?)
                ON CONFLICT(device_id) DO UPDATE SET status=excluded.status, fingerprint=excluded.fingerprint,
                  enrolled_at=excluded.enrolled_at, enrollment_token=excluded.enrollment_token, facts=excluded.facts,
                  decided_by=excluded.decided_by, decided_at=excluded.decided_at
                """, [deviceId, identity.status.rawValue, fingerprint, now, token.id, factsText, identity.decidedBy, identity.decidedAt])
            // The token's labels are the device's from now on (a new enrollment replaces them).
            try await tx.execute(
                """
                INSERT INTO device_labels (device_id, enrolled) VALUES (?, ?) ON CONFLICT(device_id) DO UPDATE SET enrolled = excluded.enrolled
                """, [deviceId, try self.json(token.labels ?? [:])])
            return identity
        }
    }

    private static let identityColumns = "device_id, status, fingerprint, enrolled_at, enrollment_token, facts, decided_by, decided_at"

    private static func identityRow(_ r: SQLRow) throws -> DeviceIdentityInfo {
        guard let status = DeviceAccess(rawValue: try r.string("status")) else {
            throw StorageError(.corrupt, "identity with an unknown status")
        }
        return DeviceIdentityInfo(
            deviceId: try r.string("device_id"), status: status, fingerprint: try r.optionalString("fingerprint"),
            enrolledAt: try r.int("enrolled_at"), enrollmentToken: try r.string("enrollment_token"),
            facts: try r.optionalJSON(DeviceFacts.self, "facts"), decidedBy: try r.optionalString("decided_by"),
            decidedAt: try r.optionalInt("decided_at"))
    }

    private static func identity(_ q: any SQLQuerying, _ id: String) async throws -> DeviceIdentityInfo? {
        try await q.query("SELECT \(identityColumns) FROM device_identities WHERE device_id = ?", [id]).first.map(identityRow)
    }

    func deviceIdentity(_ id: String) async throws -> DeviceIdentityInfo? { try await Self.identity(db, id) }

    func deviceAccess(_ id: String) async throws -> DeviceAccessCheck? {
        try await db.query(
            "SELECT status AS access_status, fingerprint AS access_fingerprint FROM device_identities WHERE device_id = ?", [id]
        )
        .first.flatMap(Self.accessCheck)
    }

    /// The access columns of a row (`access_status`, `access_fingerprint`); nil when the device never enrolled.
    static func accessCheck(_ r: SQLRow) throws -> DeviceAccessCheck? {
        guard let raw = try r.optionalString("access_status") else { return nil }
        guard let status = DeviceAccess(rawValue: raw) else { throw StorageError(.corrupt, "identity with an unknown status") }
        return DeviceAccessCheck(status: status, fingerprint: try r.optionalString("access_fingerprint"))
    }

    func deviceIdentity(fingerprint: String) async throws -> DeviceIdentityInfo? {
        try await db.query(
            "SELECT \(Self.identityColumns) FROM device_identities WHERE fingerprint = ? ORDER BY enrolled_at DESC LIMIT 1",
            [fingerprint]
        ).first.map(Self.identityRow)
    }

    func deviceIdentities() async throws -> [DeviceIdentityInfo] {
        try await db.query("SELECT \(Self.identityColumns) FROM device_identities ORDER BY device_id", []).map(Self.identityRow)
    }

    func setDeviceAccess(_ id: String, _ status: DeviceAccess, by actor: String, at: Int64) async throws -> DeviceIdentityInfo? {
        try await write { tx in
            if try await Self.identity(tx, id) == nil {
                guard status == .revoked else { return nil }
                try await tx.execute(
                    """
                    INSERT INTO device_identities (device_id, status, fingerprint, enrolled_at, enrollment_token, facts, decided_by, decided_at)
                    VALUES (?,?,NULL,?,'-',NULL,?,?)
                    """, [id, status.rawValue, at, actor, at])
            }
            try await tx.execute(
                "UPDATE device_identities SET status = ?, decided_by = ?, decided_at = ? WHERE device_id = ?",
                [status.rawValue, actor, at, id])
            return try await Self.identity(tx, id)
        }
    }

    // MARK: audit

    func appendAudit(_ r: AuditRecord) async throws {
        try await db.execute(
            "INSERT INTO audit_log (at, actor, role, method, path, status, outcome, detail) VALUES (?,?,?,?,?,?,?,?)",
            [r.at, r.actor, r.role, r.method, r.path, r.status, r.outcome, r.detail])
    }

    func audit(limit: Int, actor: String?) async throws -> [AuditRecord] {
        let columns = "id, at, actor, role, method, path, status, outcome, detail"
        let rows =
            if let actor {
                try await db.query("SELECT \(columns) FROM audit_log WHERE actor = ? ORDER BY id DESC LIMIT ?", [actor, limit])
            } else {
                try await db.query("SELECT \(columns) FROM audit_log ORDER BY id DESC LIMIT ?", [limit])
            }
        return try rows.map {
            AuditRecord(
                id: try $0.int("id"), at: try $0.int("at"), actor: try $0.string("actor"), role: try $0.optionalString("role"),
                method: try $0.string("method"), path: try $0.string("path"), status: Int(try $0.int("status")),
                outcome: try $0.string("outcome"), detail: try $0.optionalString("detail"))
        }
    }

    // MARK: root versions

    func rootVersions() async throws -> [Envelope] {
        try await db.query("SELECT envelope FROM root_versions ORDER BY version", []).map { try $0.json(Envelope.self, "envelope") }
    }

    func appendRootVersion(_ version: Int, _ envelope: Envelope, at: Int64) async throws {
        do {
            try await db.execute(
                "INSERT INTO root_versions (version, envelope, added_at) VALUES (?,?,?)", [version, try json(envelope), at])
        } catch let e as StorageError where e.code == .conflict {
            throw StorageError(.conflict, "root version \(version) is stored already")
        }
    }
}

extension SQLStore {
    /// For start-up and the offline command, which run before any request.
    func createAPIToken(name: String, role: OperatorRole, createdBy: String, expiresAt: Int64?, now: Int64) async throws -> CreatedAPIToken
    {
        let (hash, created) = TokenIssuer.make(name: name, role: role, createdBy: createdBy, expiresAt: expiresAt, now: now)
        try await createAPIToken(hash: hash, created.info)
        return created
    }
}
