import FleetCore

/// Operator tokens are made here, for the API and for `fleet-controller token create` alike.
enum TokenIssuer {
    /// A new secret and its record; the caller stores `hash` with `created.info`.
    static func make(name: String, role: OperatorRole, createdBy: String, expiresAt: Int64?, now: Int64) -> (
        hash: String, created: CreatedAPIToken
    ) {
        let secret = Secret.make(prefix: Secret.operatorPrefix)
        let hash = Secret.hash(secret)
        let info = APITokenInfo(
            id: Secret.id(ofHash: hash), name: name, role: role, createdAt: now, createdBy: createdBy, expiresAt: expiresAt)
        return (hash, CreatedAPIToken(token: secret, info: info))
    }

    static func createAPIToken(
        store: any AccessStore, name: String, role: OperatorRole, createdBy: String, expiresAt: Int64?,
        now: Int64
    ) async throws -> CreatedAPIToken {
        let (hash, created) = make(name: name, role: role, createdBy: createdBy, expiresAt: expiresAt, now: now)
        try await store.createAPIToken(hash: hash, created.info)
        return created
    }
}
