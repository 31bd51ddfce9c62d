import Crypto

/// An Ed25519 key pair of one role. The private half only ever lives in a key file with mode 0600.
public struct SigningKey: Sendable {
    public let role: Role
    let privateKey: Curve25519.Signing.PrivateKey

    public init(role: Role) {
        self.role = role
        self.privateKey = Curve25519.Signing.PrivateKey()
    }

    public init(role: Role, rawPrivateKey: [UInt8]) throws(TrustError) {
        self.role = role
        do {
            self.privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: rawPrivateKey)
        } catch {
            throw TrustError(.malformed, "\(role.rawValue) private key is not a 32-byte Ed25519 key")
        }
    }

    public var publicKey: PublicKey { PublicKey(ed25519: [UInt8](privateKey.publicKey.rawRepresentation)) }
    public var keyID: String { publicKey.keyID }
    public var rawPrivateKey: [UInt8] { [UInt8](privateKey.rawRepresentation) }

    public func sign(_ message: [UInt8]) -> [UInt8] {
        // Ed25519 signing of a valid key does not fail.
        [UInt8]((try? privateKey.signature(for: message)) ?? Data())
    }

    /// The key file format: {"role": …, "keytype": "ed25519", "private": hex}.
    public struct File: Codable, Sendable {
        public var role: Role
        public var keytype: String
        public var `private`: String
    }

    public func fileContents() throws -> Data {
        try FleetJSON.encode(File(role: role, keytype: "ed25519", private: Hex.encode(rawPrivateKey)), pretty: true)
    }

    public static func parse(_ data: Data) throws(TrustError) -> SigningKey {
        let file: File
        do { file = try FleetJSON.decode(File.self, from: data, limit: 4096) } catch {
            throw TrustError(.malformed, "key file: \(error.message)")
        }
        guard file.keytype == "ed25519", let raw = Hex.decode(file.private), raw.count == 32 else {
            throw TrustError(.malformed, "key file: not an ed25519 private key")
        }
        return try SigningKey(role: file.role, rawPrivateKey: raw)
    }
}

public struct PublicKey: Codable, Hashable, Sendable {
    public var keytype: String
    public var `public`: String

    public init(ed25519 raw: [UInt8]) {
        keytype = "ed25519"
        `public` = Hex.encode(raw)
    }

    /// Key ids are the SHA-256 of the raw public key, so that an id cannot name two keys.
    public var keyID: String { Digest.sha256Hex(Hex.decode(`public`) ?? []) }

    func verify(signature: [UInt8], message: [UInt8]) -> Bool {
        guard keytype == "ed25519", let raw = Hex.decode(`public`),
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw)
        else { return false }
        return key.isValidSignature(signature, for: message)
    }
}
