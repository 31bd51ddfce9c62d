import FleetCore
import Foundation
import HTTPTypes
import NIOSSL
import Testing
@testable import FleetController

/// Which connections may speak for a client certificate, and what they must say.
@Suite("Trusted proxies")
struct TrustedProxiesTests {
    @Test func addressesAndNetworksOfBothFamilies() throws {
        let p = try TrustedProxies(["127.0.0.1", "10.1.0.0/16", "fd00::/8", "::1"])
        #expect(p.trusts("127.0.0.1") && !p.trusts("127.0.0.2"))
        #expect(p.trusts("10.1.255.7") && !p.trusts("10.2.0.1"))
        #expect(p.trusts("fd12:3456::1") && !p.trusts("fe80::1"))
        #expect(p.trusts("::1"))
        // An IPv4 peer seen through an IPv6 socket is still that IPv4 address.
        #expect(p.trusts("::ffff:10.1.2.3") && !p.trusts("::ffff:10.9.2.3"))
        #expect(!p.trusts(nil) && !p.trusts("not-an-address"))
        #expect(try TrustedProxies(["0.0.0.0/0"]).trusts("203.0.113.9"))
        #expect(try TrustedProxies(["192.168.1.0/25"]).trusts("192.168.1.127"))
        #expect(try !TrustedProxies(["192.168.1.0/25"]).trusts("192.168.1.128"))
        #expect(TrustedProxies.none.isEmpty && !TrustedProxies.none.trusts("127.0.0.1"))
    }

    @Test(arguments: ["", "nginx", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0/8", "::1/129", "1.2.3.4/x", "300.1.1.1"])
    func malformedValuesAreRefused(_ value: String) {
        #expect(throws: TrustedProxies.Invalid.self) { try TrustedProxies([value]) }
    }

    static func certificatePEM() throws -> String {
        let dir = NSTemporaryDirectory() + "proxy-cert-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=dev-a",
            "-days", "1", "-keyout", dir + "/k.pem", "-out", dir + "/c.pem"
        ]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        return try String(contentsOfFile: dir + "/c.pem", encoding: .utf8)
    }

    @Test func aCertificateIsTakenOnlyFromATrustedProxyThatVerifiedIt() throws {
        let pem = try Self.certificatePEM()
        let expected = try #require(PeerCertificate.fingerprint(of: try NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem)))
        let escaped = try #require(pem.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        let proxies = try TrustedProxies(["10.0.0.5"])
        func headers(cert: String?, verify: String?) -> HTTPFields {
            var h = HTTPFields()
            if let cert { h[TrustedProxies.certificateHeader] = cert }
            if let verify { h[TrustedProxies.verifyHeader] = verify }
            return h
        }
        #expect(proxies.certificate(headers: headers(cert: escaped, verify: "SUCCESS"), peer: "10.0.0.5") == expected)
        // The same headers from anyone else, or without the proxy's verdict, are nothing.
        #expect(proxies.certificate(headers: headers(cert: escaped, verify: "SUCCESS"), peer: "10.0.0.6") == nil)
        #expect(proxies.certificate(headers: headers(cert: escaped, verify: "SUCCESS"), peer: nil) == nil)
        #expect(
            proxies.certificate(headers: headers(cert: escaped, verify: "FAILED:unable to get issuer certificate"), peer: "10.0.0.5") == nil
        )
        #expect(proxies.certificate(headers: headers(cert: escaped, verify: "NONE"), peer: "10.0.0.5") == nil)
        #expect(proxies.certificate(headers: headers(cert: nil, verify: "SUCCESS"), peer: "10.0.0.5") == nil)
        #expect(proxies.certificate(headers: headers(cert: "not%20a%20certificate", verify: "SUCCESS"), peer: "10.0.0.5") == nil)
        #expect(
            proxies.certificate(headers: headers(cert: String(repeating: "A", count: 20_000), verify: "SUCCESS"), peer: "10.0.0.5") == nil)
        #expect(TrustedProxies.none.certificate(headers: headers(cert: escaped, verify: "SUCCESS"), peer: "127.0.0.1") == nil)
    }

    @Test func aCertificateHeaderIsParsedOnceAndStillTakenOnlyFromATrustedProxy() throws {
        let pem = try Self.certificatePEM()
        let expected = try #require(PeerCertificate.fingerprint(of: try NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem)))
        let escaped = try #require(pem.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        let parsed = ParsedCertificates(limit: 1)
        #expect(parsed.fingerprint(escaped) == expected)
        #expect(parsed.fingerprint(escaped) == expected)
        #expect(parsed.count == 1)
        // What does not parse is not kept; a full cache is emptied before it takes another.
        #expect(parsed.fingerprint("not%20a%20certificate") == nil)
        #expect(parsed.count == 1)
        let other = try #require(pem.addingPercentEncoding(withAllowedCharacters: .letters))
        #expect(other != escaped)
        #expect(parsed.fingerprint(other) == expected)
        #expect(parsed.count == 1)
        // A header parsed before gives nothing to a connection that is not a trusted proxy's.
        var h = HTTPFields()
        h[TrustedProxies.certificateHeader] = escaped
        h[TrustedProxies.verifyHeader] = "SUCCESS"
        let proxies = try TrustedProxies(["10.0.0.5"])
        #expect(proxies.certificate(headers: h, peer: "10.0.0.5") == expected)
        #expect(proxies.certificate(headers: h, peer: "10.0.0.6") == nil)
        h[TrustedProxies.verifyHeader] = "NONE"
        #expect(proxies.certificate(headers: h, peer: "10.0.0.5") == nil)
    }
}
