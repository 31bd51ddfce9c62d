import FleetCore
import Foundation

/// Access tables next to the fleet tables in the same SQLite file. New tables only: the
/// migration never touches the existing ones.
extension SQLiteStore: AccessStore {
    func migrateAccess() throws {
        try db.transaction {
            try db.execute("""
                CREATE TABLE IF NOT EXISTS api_tokens (
                    hash TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL,
                    created_at INTEGER NOT NULL, created_by TEXT NOT NULL, expires_at INTEGER, revoked_at INTEGER,
                    last_used_at INTEGER)
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS enrollment_tokens (
                    hash TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, device_id TEXT, created_at INTEGER NOT NULL,
                    created_by TEXT NOT NULL, expires_at INTEGER NOT NULL, require_approval INTEGER NOT NULL,
                    used_at INTEGER, used_by TEXT)
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS device_identities (
                    device_id TEXT PRIMARY KEY, status TEXT NOT NULL, fingerprint TEXT, enrolled_at INTEGER NOT NULL,
                    enrollment_token TEXT NOT NULL, facts TEXT, decided_by TEXT, decided_at INTEGER)
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS audit_log (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL, role TEXT,
                    method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, outcome TEXT NOT NULL, detail TEXT)
                """)
            try db.execute("CREATE INDEX IF NOT EXISTS audit_actor ON audit_log (actor, id)")
            try db.execute("CREATE INDEX IF NOT EXISTS identity_fingerprint ON device_identities (fingerprint)")
            try db.execute("""
                CREATE TABLE IF NOT EXISTS root_versions (
                    version INTEGER PRIMARY KEY, envelope TEXT NOT NULL, added_at INTEGER NOT NULL)
                """)
        }
    }

    private func text<T: Encodable>(_ v: T) throws -> String { String(decoding: try FleetJSON.encode(v), as: UTF8.self) }
    private func value<T: Decodable>(_ t: T.Type, _ s: SQLValue) throws -> T {
        guard let text = s.text else { throw StorageError(.corrupt, "expected JSON text for \(T.self)") }
        do { return try JSONDecoder().decode(t, from: Data(text.utf8)) } catch {
            throw StorageError(.corrupt, "stored \(T.self) does not decode: \(error)")
        }
    }

    // MARK: operator tokens

    private static let tokenColumns = "id, name, role, created_at, created_by, expires_at, revoked_at, last_used_at"

    private func tokenRow(_ r: [SQLValue]) throws -> APITokenInfo {
        guard let role = r[2].text.flatMap(OperatorRole.init(rawValue:)) else { throw StorageError(.corrupt, "token with an unknown role") }
        return APITokenInfo(id: r[0].text ?? "", name: r[1].text ?? "", role: role, createdAt: r[3].int ?? 0, createdBy: r[4].text ?? "",
                            expiresAt: r[5].int, revokedAt: r[6].int, lastUsedAt: r[7].int)
    }

    func createAPIToken(hash: String, _ t: APITokenInfo) async throws { try createAPITokenSync(hash: hash, t) }

    func createAPITokenSync(hash: String, _ t: APITokenInfo) throws {
        try db.execute("INSERT INTO api_tokens (hash, \(Self.tokenColumns)) VALUES (?,?,?,?,?,?,?,?,?)",
                       [hash, t.id, t.name, t.role.rawValue, t.createdAt, t.createdBy, t.expiresAt, t.revokedAt, t.lastUsedAt])
    }

    func apiToken(hash: String) async throws -> APITokenInfo? {
        try db.query("SELECT \(Self.tokenColumns) FROM api_tokens WHERE hash = ?", [hash]).first.map(tokenRow)
    }

    func apiTokens() async throws -> [APITokenInfo] {
        try db.query("SELECT \(Self.tokenColumns) FROM api_tokens ORDER BY created_at, id").map(tokenRow)
    }

    func revokeAPIToken(id: String, at: Int64) async throws -> Bool {
        try db.transaction {
            guard try !db.query("SELECT 1 FROM api_tokens WHERE id = ?", [id]).isEmpty else { return false }
            try db.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [at, id])
            return true
        }
    }

    func touchAPIToken(id: String, at: Int64) async throws {
        try db.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", [at, id])
    }

    func activeTokenCount(role: OperatorRole, now: Int64) async throws -> Int { try activeTokenCountSync(role: role, now: now) }

    func activeTokenCountSync(role: OperatorRole, now: Int64) throws -> Int {
        Int(try db.query("""
            SELECT COUNT(*) FROM api_tokens WHERE role = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)
            """, [role.rawValue, now]).first?.first?.int ?? 0)
    }

    // MARK: enrollment

    private static let enrollmentColumns = "id, device_id, created_at, created_by, expires_at, require_approval, used_at, used_by"

    private func enrollmentRow(_ r: [SQLValue]) -> EnrollmentTokenInfo {
        EnrollmentTokenInfo(id: r[0].text ?? "", deviceId: r[1].text, createdAt: r[2].int ?? 0, createdBy: r[3].text ?? "",
                            expiresAt: r[4].int ?? 0, requireApproval: (r[5].int ?? 0) != 0, usedAt: r[6].int, usedBy: r[7].text)
    }

    func createEnrollmentToken(hash: String, _ t: EnrollmentTokenInfo) async throws {
        try db.execute("INSERT INTO enrollment_tokens (hash, \(Self.enrollmentColumns)) VALUES (?,?,?,?,?,?,?,?,?)",
                       [hash, t.id, t.deviceId, t.createdAt, t.createdBy, t.expiresAt, t.requireApproval ? 1 : 0, t.usedAt, t.usedBy])
    }

    func enrollmentTokens() async throws -> [EnrollmentTokenInfo] {
        try db.query("SELECT \(Self.enrollmentColumns) FROM enrollment_tokens ORDER BY created_at, id").map(enrollmentRow)
    }

    func enroll(tokenHash: String, deviceId: String, fingerprint: String?, facts: DeviceFacts, now: Int64) async throws -> DeviceIdentityInfo {
        let factsText = try text(facts)
        return try db.transaction {
            guard let token = try db.query("SELECT \(Self.enrollmentColumns) FROM enrollment_tokens WHERE hash = ?", [tokenHash])
                .first.map(enrollmentRow) else {
                throw AccessError(.enrollmentTokenInvalid, "the enrollment token is not known")
            }
            guard token.usedAt == nil else { throw AccessError(.enrollmentTokenUsed, "enrollment token \(token.id) was used already") }
            guard token.expiresAt > now else { throw AccessError(.enrollmentTokenExpired, "enrollment token \(token.id) has expired") }
            if let bound = token.deviceId, bound != deviceId {
                throw AccessError(.enrollmentTokenWrongDevice, "enrollment token \(token.id) is for another device")
            }
            if let existing = try identityLocked(deviceId), existing.status != .revoked {
                throw AccessError(.alreadyEnrolled, "device \(deviceId) is enrolled already (\(existing.status.rawValue)); revoke it first to enroll it again")
            }
            let identity = DeviceIdentityInfo(deviceId: deviceId, status: token.requireApproval ? .pending : .accepted, fingerprint: fingerprint,
                                              enrolledAt: now, enrollmentToken: token.id, facts: facts,
                                              decidedBy: token.requireApproval ? nil : "token:\(token.id)", decidedAt: token.requireApproval ? nil : now)
            try db.execute("UPDATE enrollment_tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL", [now, deviceId, tokenHash])
            guard db.changes == 1 else { throw AccessError(.enrollmentTokenUsed, "enrollment token \(token.id) was used already") }
            try db.execute("""
                INSERT INTO device_identities (device_id, status, fingerprint, enrolled_at, enrollment_token, facts, decided_by, decided_at)
                VALUES (?,?,?,?,?,?,?,?)
                ON CONFLICT(device_id) DO UPDATE SET status=excluded.status, fingerprint=excluded.fingerprint,
                  enrolled_at=excluded.enrolled_at, enrollment_token=excluded.enrollment_token, facts=excluded.facts,
                  decided_by=excluded.decided_by, decided_at=excluded.decided_at
                """, [deviceId, identity.status.rawValue, fingerprint, now, token.id, factsText, identity.decidedBy, identity.decidedAt])
            return identity
        }
    }

    private static let identityColumns = "device_id, status, fingerprint, enrolled_at, enrollment_token, facts, decided_by, decided_at"

    private func identityRow(_ r: [SQLValue]) throws -> DeviceIdentityInfo {
        guard let status = r[1].text.flatMap(DeviceAccess.init(rawValue:)) else { throw StorageError(.corrupt, "identity with an unknown status") }
        return DeviceIdentityInfo(deviceId: r[0].text ?? "", status: status, fingerprint: r[2].text, enrolledAt: r[3].int ?? 0,
                                  enrollmentToken: r[4].text ?? "", facts: r[5] == .null ? nil : try value(DeviceFacts.self, r[5]), decidedBy: r[6].text,
                                  decidedAt: r[7].int)
    }

    private func identityLocked(_ id: String) throws -> DeviceIdentityInfo? {
        try db.query("SELECT \(Self.identityColumns) FROM device_identities WHERE device_id = ?", [id]).first.map(identityRow)
    }

    func deviceIdentity(_ id: String) async throws -> DeviceIdentityInfo? { try identityLocked(id) }

    func deviceIdentity(fingerprint: String) async throws -> DeviceIdentityInfo? {
        try db.query("SELECT \(Self.identityColumns) FROM device_identities WHERE fingerprint = ? ORDER BY enrolled_at DESC LIMIT 1",
                     [fingerprint]).first.map(identityRow)
    }

    func deviceIdentities() async throws -> [DeviceIdentityInfo] {
        try db.query("SELECT \(Self.identityColumns) FROM device_identities ORDER BY device_id").map(identityRow)
    }

    func setDeviceAccess(_ id: String, _ status: DeviceAccess, by actor: String, at: Int64) async throws -> DeviceIdentityInfo? {
        try db.transaction {
            if try identityLocked(id) == nil {
                guard status == .revoked else { return nil }
                try db.execute("""
                    INSERT INTO device_identities (device_id, status, fingerprint, enrolled_at, enrollment_token, facts, decided_by, decided_at)
                    VALUES (?,?,NULL,?,'-',NULL,?,?)
                    """, [id, status.rawValue, at, actor, at])
            }
            try db.execute("UPDATE device_identities SET status = ?, decided_by = ?, decided_at = ? WHERE device_id = ?",
                           [status.rawValue, actor, at, id])
            return try identityLocked(id)
        }
    }

    // MARK: audit

    func appendAudit(_ r: AuditRecord) async throws {
        try db.execute("INSERT INTO audit_log (at, actor, role, method, path, status, outcome, detail) VALUES (?,?,?,?,?,?,?,?)",
                       [r.at, r.actor, r.role, r.method, r.path, r.status, r.outcome, r.detail])
    }

    func audit(limit: Int, actor: String?) async throws -> [AuditRecord] {
        let columns = "id, at, actor, role, method, path, status, outcome, detail"
        let rows = if let actor {
            try db.query("SELECT \(columns) FROM audit_log WHERE actor = ? ORDER BY id DESC LIMIT ?", [actor, limit])
        } else {
            try db.query("SELECT \(columns) FROM audit_log ORDER BY id DESC LIMIT ?", [limit])
        }
        return rows.map {
            AuditRecord(id: $0[0].int ?? 0, at: $0[1].int ?? 0, actor: $0[2].text ?? "", role: $0[3].text, method: $0[4].text ?? "",
                        path: $0[5].text ?? "", status: Int($0[6].int ?? 0), outcome: $0[7].text ?? "", detail: $0[8].text)
        }
    }

    // MARK: root versions

    func rootVersions() async throws -> [Envelope] { try rootVersionsSync() }

    func rootVersionsSync() throws -> [Envelope] {
        try db.query("SELECT envelope FROM root_versions ORDER BY version").map { try value(Envelope.self, $0[0]) }
    }

    func appendRootVersion(_ version: Int, _ envelope: Envelope, at: Int64) async throws {
        do {
            try db.execute("INSERT INTO root_versions (version, envelope, added_at) VALUES (?,?,?)", [version, try text(envelope), at])
        } catch let e as StorageError where e.code == .conflict {
            throw StorageError(.conflict, "root version \(version) is stored already")
        }
    }
}

extension SQLiteStore {
    /// For start-up and the offline command, which run before any request.
    func createAPITokenSync(name: String, role: OperatorRole, createdBy: String, expiresAt: Int64?, now: Int64) throws -> CreatedAPIToken {
        let (hash, created) = TokenIssuer.make(name: name, role: role, createdBy: createdBy, expiresAt: expiresAt, now: now)
        try createAPITokenSync(hash: hash, created.info)
        return created
    }
}
