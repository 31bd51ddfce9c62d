/// A strict RFC 8259 syntax checker. It exists because Foundation's decoders accept duplicate
/// object keys (keeping one of them), which lets two parties read different values out of the same
/// signed bytes. It checks; it does not build values.
public enum StrictJSON {
    public static let maxDepth = 64

    public static func validate(_ data: Data, maxBytes: Int) throws(MetadataError) {
        guard data.count <= maxBytes else {
            throw MetadataError(.tooLarge, "document of \(data.count) bytes exceeds the limit of \(maxBytes)")
        }
        var parser = Parser(bytes: [UInt8](data))
        try parser.skipWhitespace()
        try parser.value(depth: 0)
        try parser.skipWhitespace()
        guard parser.index == parser.bytes.count else {
            throw MetadataError(.malformed, "trailing bytes at offset \(parser.index)")
        }
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        mutating func fail(_ what: String) -> MetadataError {
            MetadataError(.malformed, "\(what) at offset \(index)")
        }

        mutating func skipWhitespace() throws(MetadataError) {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
        }

        /// `depth` counts the containers open around and including this one.
        func checkDepth(_ depth: Int) throws(MetadataError) {
            guard depth <= StrictJSON.maxDepth else {
                throw MetadataError(.tooDeep, "nesting deeper than \(StrictJSON.maxDepth) at offset \(index)")
            }
        }

        mutating func value(depth: Int) throws(MetadataError) {
            guard index < bytes.count else { throw fail("unexpected end") }
            switch bytes[index] {
            case UInt8(ascii: "{"): try object(depth: depth + 1)
            case UInt8(ascii: "["): try array(depth: depth + 1)
            case UInt8(ascii: "\""): _ = try string()
            case UInt8(ascii: "t"): try literal("true")
            case UInt8(ascii: "f"): try literal("false")
            case UInt8(ascii: "n"): try literal("null")
            default: try number()
            }
        }

        mutating func literal(_ word: String) throws(MetadataError) {
            let w = Array(word.utf8)
            guard index + w.count <= bytes.count, Array(bytes[index..<index + w.count]) == w else {
                throw fail("invalid literal")
            }
            index += w.count
        }

        mutating func number() throws(MetadataError) {
            let start = index
            if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw fail("invalid value") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
            } else {
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard index < bytes.count, isDigit(bytes[index]) else { throw fail("invalid fraction") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard index < bytes.count, isDigit(bytes[index]) else { throw fail("invalid exponent") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            guard index > start else { throw fail("invalid value") }
        }

        func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

        /// Returns the decoded bytes of the string so that keys can be compared after unescaping
        /// ("a" and "\u0061" are the same key).
        mutating func string() throws(MetadataError) -> [UInt8] {
            index += 1  // opening quote
            var out: [UInt8] = []
            while true {
                guard index < bytes.count else { throw fail("unterminated string") }
                let b = bytes[index]
                if b == UInt8(ascii: "\"") { index += 1; return out }
                if b < 0x20 { throw fail("control character in string") }
                if b == UInt8(ascii: "\\") {
                    index += 1
                    guard index < bytes.count else { throw fail("unterminated escape") }
                    let e = bytes[index]
                    index += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        let unit = try hex4()
                        var scalarValue = UInt32(unit)
                        if (0xD800...0xDBFF).contains(unit) {
                            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                                throw fail("lone surrogate")
                            }
                            index += 2
                            let low = try hex4()
                            guard (0xDC00...0xDFFF).contains(low) else { throw fail("invalid surrogate pair") }
                            scalarValue = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                        } else if (0xDC00...0xDFFF).contains(unit) {
                            throw fail("lone surrogate")
                        }
                        guard let scalar = Unicode.Scalar(scalarValue) else { throw fail("invalid escape") }
                        out.append(contentsOf: Array(String(Character(scalar)).utf8))
                    default: throw fail("invalid escape")
                    }
                } else {
                    out.append(b)
                    index += 1
                }
            }
        }

        mutating func hex4() throws(MetadataError) -> UInt16 {
            guard index + 4 <= bytes.count else { throw fail("short unicode escape") }
            var v: UInt16 = 0
            for _ in 0..<4 {
                let c = bytes[index]
                let d: UInt16
                switch c {
                case 0x30...0x39: d = UInt16(c - 0x30)
                case 0x41...0x46: d = UInt16(c - 0x41 + 10)
                case 0x61...0x66: d = UInt16(c - 0x61 + 10)
                default: throw fail("invalid unicode escape")
                }
                v = v << 4 | d
                index += 1
            }
            return v
        }

        mutating func object(depth: Int) throws(MetadataError) {
            try checkDepth(depth)
            index += 1
            // Keys compare as Swift strings (canonical equivalence), exactly as the decoder's
            // dictionaries will: "é" and "e\u0301" are the same key to it, so they are here.
            var keys = Set<String>()
            try skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return }
            while true {
                try skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected object key") }
                let keyStart = index
                let name = String(decoding: try string(), as: UTF8.self)
                guard keys.insert(name).inserted else {
                    throw MetadataError(.duplicateKey, "duplicate key \"\(name)\" at offset \(keyStart)")
                }
                try skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                index += 1
                try skipWhitespace()
                try value(depth: depth)
                try skipWhitespace()
                guard index < bytes.count else { throw fail("unterminated object") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "}") { index += 1; return }
                throw fail("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws(MetadataError) {
            try checkDepth(depth)
            index += 1
            try skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return }
            while true {
                try skipWhitespace()
                try value(depth: depth)
                try skipWhitespace()
                guard index < bytes.count else { throw fail("unterminated array") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "]") { index += 1; return }
                throw fail("expected ',' or ']'")
            }
        }
    }
}
