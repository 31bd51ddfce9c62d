/// A signed envelope over raw payload bytes (the DSSE layout). Verification reads the bytes as
/// they came; nothing is re-serialised to check a signature.
public struct Envelope: Codable, Equatable, Sendable {
    public struct Signature: Codable, Equatable, Sendable {
        public var keyid: String
        public var sig: String
    }

    public var payloadType: String
    public var payload: String  // base64 of the exact signed bytes
    public var signatures: [Signature]

    public init(payloadType: String, payloadBytes: [UInt8]) {
        self.payloadType = payloadType
        self.payload = Data(payloadBytes).base64EncodedString()
        self.signatures = []
    }

    /// Encodes `value` once and signs those bytes with every key given.
    public static func sign<T: Encodable>(_ value: T, type: String, keys: [SigningKey]) throws -> Envelope {
        let bytes = [UInt8](try FleetJSON.encode(value))
        var env = Envelope(payloadType: type, payloadBytes: bytes)
        for key in keys { env.addSignature(key) }
        return env
    }

    public mutating func addSignature(_ key: SigningKey) {
        guard let bytes = payloadBytes else { return }
        let sig = key.sign(Self.preAuthEncoding(type: payloadType, body: bytes))
        signatures.removeAll { $0.keyid == key.keyID }
        signatures.append(Signature(keyid: key.keyID, sig: Data(sig).base64EncodedString()))
    }

    public var payloadBytes: [UInt8]? {
        Data(base64Encoded: payload).map { [UInt8]($0) }
    }

    /// SHA-256 of the signed payload bytes: how other metadata refers to this document.
    public var payloadDigest: String { Digest.sha256Hex(payloadBytes ?? []) }

    /// DSSE pre-authentication encoding: binds the payload type into what is signed.
    static func preAuthEncoding(type: String, body: [UInt8]) -> [UInt8] {
        let t = Array(type.utf8)
        var out = Array("DSSEv1 \(t.count) ".utf8)
        out += t
        out += Array(" \(body.count) ".utf8)
        out += body
        return out
    }

    public static func parse(_ data: Data) throws(TrustError) -> Envelope {
        do { return try FleetJSON.decode(Envelope.self, from: data, limit: MetadataLimits.envelope) } catch {
            throw TrustError(error, what: "envelope")
        }
    }
}
