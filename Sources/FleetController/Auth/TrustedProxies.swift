import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import NIOSSL
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

/// The TLS-terminating proxies (nginx in front of the replicas) whose word about a client
/// certificate the controller takes. The proxy verifies the device's certificate against the
/// fleet CA and passes it on in `X-Client-Cert` (PEM, URL-escaped: nginx's
/// `$ssl_client_escaped_cert`) with `X-Client-Verify: SUCCESS`; the controller believes those
/// headers only on connections that come from one of these addresses, and ignores them from
/// anyone else.
public struct TrustedProxies: Sendable, Equatable {
    public static let certificateHeader = HTTPField.Name("X-Client-Cert")!
    public static let verifyHeader = HTTPField.Name("X-Client-Verify")!

    /// An address or a network (`10.0.0.0/8`, `fd00::/8`), IPv4 or IPv6.
    struct Network: Sendable, Equatable {
        let bytes: [UInt8]
        let prefix: Int

        func contains(_ address: [UInt8]) -> Bool {
            guard address.count == bytes.count else { return false }
            var left = prefix
            for (a, b) in zip(address, bytes) {
                guard left > 0 else { return true }
                let mask: UInt8 = left >= 8 ? 0xFF : ~(0xFF >> UInt8(left))
                if a & mask != b & mask { return false }
                left -= 8
            }
            return true
        }
    }

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    let networks: [Network]

    /// No proxy is trusted: client certificates come only from the controller's own TLS.
    public static let none = TrustedProxies(networks: [])

    private init(networks: [Network]) { self.networks = networks }

    public var isEmpty: Bool { networks.isEmpty }

    /// Parses `--trusted-proxy` values; a malformed one is an error naming it.
    public init(_ values: [String]) throws {
        networks = try values.map { value in
            let parts = value.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard let bytes = Self.address(parts[0]) else { throw Invalid(description: "'\(value)' is not an IP address or network") }
            let bits = bytes.count * 8
            guard let prefix = parts.count == 2 ? Int(parts[1]) : bits, (0...bits).contains(prefix) else {
                throw Invalid(description: "'\(value)': the prefix length must be 0 to \(bits)")
            }
            return Network(bytes: bytes, prefix: prefix)
        }
    }

    /// The bytes of an IPv4 or IPv6 address in text form (IPv4-mapped IPv6 read as IPv4).
    static func address(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF { return Array(bytes[12...]) }
        return bytes
    }

    func trusts(_ peer: String?) -> Bool {
        guard let peer, let bytes = Self.address(peer) else { return false }
        return networks.contains { $0.contains(bytes) }
    }

    /// The client certificate a trusted proxy verified, from the request's headers; nil when the
    /// connection is not from a trusted proxy, the proxy verified nothing, or the certificate does
    /// not parse.
    func certificate(headers: HTTPFields, peer: String?) -> PeerCertificate? {
        guard trusts(peer), headers[Self.verifyHeader] == "SUCCESS", let escaped = headers[Self.certificateHeader],
            escaped.utf8.count <= 16 << 10
        else { return nil }
        return Self.parsed.fingerprint(escaped)
    }

    /// Certificates already parsed, by the header's exact text (a device sends the same one at
    /// every check-in); shared by every listener of the process.
    static let parsed = ParsedCertificates()

    /// The source of device certificates behind these proxies.
    var source: PeerCertificate.Source {
        { request, context in certificate(headers: request.headers, peer: context.channel?.remoteAddress?.ipAddress) }
    }
}

/// The key fingerprints of the certificates proxies passed on, by the exact header text: the same
/// text is the same certificate, so its PEM is parsed and its key hashed once, not at every
/// check-in. Whether the proxy is trusted and verified it is still decided per request. Bounded:
/// emptied when full. A header that does not parse is not kept.
final class ParsedCertificates: Sendable {
    private let kept = Mutex<[String: PeerCertificate]>([:])
    let limit: Int

    init(limit: Int = 50_000) { self.limit = limit }

    var count: Int { kept.withLock { $0.count } }

    func fingerprint(_ escaped: String) -> PeerCertificate? {
        if let hit = kept.withLock({ $0[escaped] }) { return hit }
        guard let pem = escaped.removingPercentEncoding,
            let certificate = try? NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem),
            let parsed = PeerCertificate.fingerprint(of: certificate)
        else { return nil }
        kept.withLock { kept in
            if kept.count >= limit { kept.removeAll(keepingCapacity: true) }
            kept[escaped] = parsed
        }
        return parsed
    }
}
