import FleetCore
import Hummingbird
import NIOCore
import NIOSSL

/// The client certificate of a mutual-TLS connection, reduced to what identifies a device: the
/// SHA-256 of its public key (SubjectPublicKeyInfo), so a certificate renewed for the same key
/// keeps the identity, and a certificate for another key never gets it.
struct PeerCertificate: Sendable, Equatable {
    var fingerprint: String

    typealias Source = @Sendable (Request, FleetRequestContext) async -> PeerCertificate?

    /// The certificate the TLS handshake validated against the fleet CA; nil on plain HTTP or when
    /// the client presented none.
    static let fromTLS: Source = { _, context in
        guard let channel = context.channel,
            let certificate = try? await channel.nioSSL_peerCertificate().get()
        else { return nil }
        return fingerprint(of: certificate)
    }

    static func fingerprint(of certificate: NIOSSLCertificate) -> PeerCertificate? {
        guard let spki = try? certificate.extractPublicKey().toSPKIBytes() else { return nil }
        return PeerCertificate(fingerprint: Digest.sha256Hex(spki))
    }
}
