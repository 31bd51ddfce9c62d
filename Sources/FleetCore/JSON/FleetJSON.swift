/// The one JSON codec setup of EdgeFleet: sorted keys (stable bytes), no escaping of slashes.
public enum FleetJSON {
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    public static func encode<T: Encodable>(_ value: T, pretty: Bool = false) throws -> Data {
        try encoder(pretty: pretty).encode(value)
    }

    /// Decodes after a strict syntax check: duplicate keys, excessive nesting and oversize input are
    /// rejected before the decoder sees the bytes (JSONDecoder silently keeps the last duplicate).
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, limit: Int) throws(MetadataError) -> T {
        try StrictJSON.validate(data, maxBytes: limit)
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            throw MetadataError(.malformed, "\(T.self): \(Self.describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? DecodingError {
            switch e {
            case .keyNotFound(let key, let ctx): return "missing field '\(key.stringValue)' at \(path(ctx))"
            case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .dataCorrupted(let ctx):
                return "\(ctx.debugDescription) at \(path(ctx))"
            @unknown default: return "\(e)"
            }
        }
        return "\(error)"
    }

    private static func path(_ ctx: DecodingError.Context) -> String {
        let p = ctx.codingPath.map(\.stringValue).joined(separator: ".")
        return p.isEmpty ? "top level" : p
    }
}

/// Why a metadata document was refused before any signature was looked at.
public struct MetadataError: Error, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable { case malformed, duplicateKey, tooLarge, tooDeep }
    public let code: Code
    public let message: String
    public init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    public var description: String { "\(code.rawValue): \(message)" }
}
