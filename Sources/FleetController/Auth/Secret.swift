import FleetCore
import Foundation

/// Bearer secrets: operator API tokens (`efop_…`) and one-time enrollment tokens (`efen_…`).
/// 256 random bits, base64url; the prefix lets secret scanners and people recognise them. Only the
/// SHA-256 of a secret is stored: with 256 bits of entropy a fast hash is enough (no dictionary to
/// try), and a lookup by hash needs no constant-time comparison of secrets.
enum Secret {
    static let operatorPrefix = "efop_"
    static let enrollmentPrefix = "efen_"
    static let maxLength = 128

    static func make(prefix: String) -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        let text = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return prefix + text
    }

    static func hash(_ secret: String) -> String { Digest.sha256Hex(Array(secret.utf8)) }

    /// The public id of a stored secret: the start of its hash, safe to show and log.
    static func id(ofHash hash: String) -> String { String(hash.prefix(12)) }

    /// The dashboard's session cookie: it holds an operator token, for reads only.
    static let cookieName = "edgefleet_token"

    /// The token in a `Cookie:` header, if there is one.
    static func cookieToken(_ header: String?) -> String? {
        guard let header, header.count <= 8192 else { return nil }
        for part in header.split(separator: ";") {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces) == cookieName else { continue }
            let token = kv[1].trimmingCharacters(in: .whitespaces)
            return token.isEmpty || token.count > maxLength ? nil : token
        }
        return nil
    }

    /// The bearer token of an `Authorization: Bearer …` header, if well formed.
    static func bearer(_ header: String?) -> String? {
        guard let header, header.count <= maxLength + 7 else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }
}
