/// Signature and threshold checks of envelopes against root metadata. Pure: time is passed in.
public enum MetadataVerifier {
    /// Returns the payload bytes when at least `threshold` distinct keys of `role` signed them.
    public static func verify(_ envelope: Envelope, type: String, role: Role, root: RootMetadata) throws(TrustError) -> [UInt8] {
        guard envelope.payloadType == type else {
            throw TrustError(.wrongPayloadType, "expected \(type), got \(envelope.payloadType)")
        }
        guard let body = envelope.payloadBytes else { throw TrustError(.malformed, "\(role.rawValue): payload is not base64") }
        guard let roleKeys = root.roles[role.rawValue], roleKeys.threshold >= 1 else {
            throw TrustError(.malformed, "root metadata has no usable \(role.rawValue) role")
        }
        let message = Envelope.preAuthEncoding(type: type, body: body)
        var validKeys = Set<String>()
        var roleSignatures = 0
        for signature in envelope.signatures where roleKeys.keyids.contains(signature.keyid) {
            roleSignatures += 1
            guard let key = root.keys[signature.keyid], key.keyID == signature.keyid,
                let sig = Data(base64Encoded: signature.sig)
            else { continue }
            if key.verify(signature: [UInt8](sig), message: message) { validKeys.insert(signature.keyid) }
        }
        if roleSignatures == 0 {
            throw TrustError(.missingSignature, "no signature by a \(role.rawValue) key")
        }
        if validKeys.isEmpty {
            throw TrustError(.badSignature, "no valid \(role.rawValue) signature")
        }
        guard validKeys.count >= roleKeys.threshold else {
            throw TrustError(.thresholdNotMet, "\(validKeys.count) valid \(role.rawValue) signature(s), threshold is \(roleKeys.threshold)")
        }
        return body
    }

    static func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8], limit: Int, what: String) throws(TrustError) -> T {
        do { return try FleetJSON.decode(type, from: Data(body), limit: limit) } catch { throw TrustError(error, what: what) }
    }

    static func checkExpiry(_ expiresAt: Int64, now: Int64, what: String) throws(TrustError) {
        guard expiresAt > now else { throw TrustError(.expired, "\(what) expired at \(expiresAt), now \(now)") }
    }

    /// A root a device pins on enrollment: signed by its own root threshold and not expired.
    public static func verifyInitialRoot(_ envelope: Envelope, now: Int64) throws(TrustError) -> RootMetadata {
        guard let body = envelope.payloadBytes else { throw TrustError(.malformed, "root: payload is not base64") }
        let root = try decode(RootMetadata.self, body, limit: MetadataLimits.root, what: "root")
        guard root.type == "root" else { throw TrustError(.wrongPayloadType, "root: type is \(root.type)") }
        _ = try verify(envelope, type: PayloadType.root, role: .root, root: root)
        try checkExpiry(root.expiresAt, now: now, what: "root")
        return root
    }

    /// Root rotation: version N+1 must be signed by the threshold of N and by its own threshold.
    /// Only the last root of a chain must be unexpired (`checkExpiry`), as in TUF.
    public static func verifyRootUpdate(_ envelope: Envelope, trusted: RootMetadata, now: Int64, checkExpiry: Bool = true)
        throws(TrustError) -> RootMetadata
    {
        _ = try verify(envelope, type: PayloadType.root, role: .root, root: trusted)
        let body = envelope.payloadBytes ?? []
        let next = try decode(RootMetadata.self, body, limit: MetadataLimits.root, what: "root")
        guard next.type == "root" else { throw TrustError(.wrongPayloadType, "root: type is \(next.type)") }
        _ = try verify(envelope, type: PayloadType.root, role: .root, root: next)
        guard next.version == trusted.version + 1 else {
            throw TrustError(
                next.version <= trusted.version ? .rollback : .malformed,
                "root version \(next.version) does not follow trusted version \(trusted.version)")
        }
        if checkExpiry { try Self.checkExpiry(next.expiresAt, now: now, what: "root") }
        return next
    }
}
