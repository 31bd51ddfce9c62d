/// The signed timestamp of a frugal check-in answer, in about half the bytes of an `Envelope`: the
/// payload is JSON text carried as a JSON string rather than base64, and the signatures name no key
/// (the payload type is implied by the field, the key found among the role's keys). Nothing is
/// re-serialised: the UTF-8 bytes of `payload` are both what is verified and what is parsed.
public struct CompactEnvelope: Codable, Equatable, Sendable {
    public var payload: String
    public var sigs: [String]  // base64 Ed25519 signatures over the DSSE pre-authentication encoding

    /// More signatures than any threshold needs are not looked at.
    public static let maxSignatures = 8

    public init(payload: String, sigs: [String]) { self.payload = payload; self.sigs = sigs }

    /// Encodes `value` once and signs those bytes with every key given.
    public static func sign<T: Encodable>(_ value: T, type: String, keys: [SigningKey]) throws -> CompactEnvelope {
        let bytes = [UInt8](try FleetJSON.encode(value))
        let message = Envelope.preAuthEncoding(type: type, body: bytes)
        return CompactEnvelope(
            payload: String(decoding: bytes, as: UTF8.self),
            sigs: keys.map { Data($0.sign(message)).base64EncodedString() })
    }

    /// The `Envelope` it stands for, each signature named after the key of `role` that made it.
    /// A signature no key of the role made is named after the role's first key, so that the usual
    /// verification reports it (`badSignature`); no signature at all is `missingSignature`.
    public func envelope(type: String, role: Role, root: RootMetadata) -> Envelope {
        let bytes = Array(payload.utf8)
        var env = Envelope(payloadType: type, payloadBytes: bytes)
        let keyids = root.roles[role.rawValue]?.keyids ?? []
        let message = Envelope.preAuthEncoding(type: type, body: bytes)
        for sig in sigs.prefix(Self.maxSignatures) {
            let raw = Data(base64Encoded: sig).map { [UInt8]($0) }
            let signer = keyids.first { id in
                guard let raw, let key = root.keys[id] else { return false }
                return key.verify(signature: raw, message: message)
            }
            if let id = signer ?? keyids.first {
                env.signatures.append(Envelope.Signature(keyid: id, sig: sig))
            }
        }
        return env
    }
}
