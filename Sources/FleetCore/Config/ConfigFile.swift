/// A daemon's configuration file: the small, strict subset of YAML that `run`/`serve` flags need —
/// `key: scalar`, a list (`key:` then `  - item` lines, or `[a, b]`), or one level of map (`key:`
/// then `  name: value` lines, or `{}`). Comments with `#`. Anchors, tags, block scalars, tabs and
/// deeper nesting are refused with the line they are on, so the agent needs no YAML library.
public struct ConfigFile: Equatable, Sendable {
    public enum Value: Equatable, Sendable {
        case scalar(String)
        case list([String])
        case map([MapEntry])
    }

    public struct MapEntry: Equatable, Sendable {
        public var key: String
        public var value: String
        public var line: Int
    }

    public struct Entry: Equatable, Sendable {
        public var key: String
        public var value: Value
        /// 1-based line of the key.
        public var line: Int
    }

    /// Where the text came from, for messages.
    public var source: String
    public var entries: [Entry]

    public init(source: String, entries: [Entry]) { self.source = source; self.entries = entries }

    public static func parse(_ text: String, source: String) throws(ConfigFileError) -> ConfigFile {
        // "\r\n" is one Character in Swift: made "\n" first so that it splits lines too.
        let lines = text.replacing("\r\n", with: "\n").split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var parser = Parser(source: source, lines: lines)
        return ConfigFile(source: source, entries: try parser.parse())
    }
}

/// A configuration file that cannot be used, with the line at fault.
public struct ConfigFileError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case unreadable = "config-unreadable"
        case syntax = "config-syntax"
        case unsupported = "config-unsupported"
        case duplicateKey = "config-duplicate-key"
        case unknownKey = "config-unknown-key"
        case badValue = "config-bad-value"
    }

    public let code: Code
    public let source: String
    /// 1-based; 0 when the fault is the whole file.
    public let line: Int
    public let key: String?
    public let message: String

    public init(_ code: Code, source: String, line: Int, key: String? = nil, _ message: String) {
        self.code = code; self.source = source; self.line = line; self.key = key; self.message = message
    }

    public var description: String {
        (line > 0 ? "\(source):\(line): " : "\(source): ") + message + " [\(code.rawValue)]"
    }
}

private struct Parser {
    let source: String
    let lines: [String]
    var index = 0

    init(source: String, lines: [String]) { self.source = source; self.lines = lines }

    func fail(_ code: ConfigFileError.Code, _ line: Int, key: String? = nil, _ message: String) -> ConfigFileError {
        ConfigFileError(code, source: source, line: line, key: key, message)
    }

    /// (indent, content without comment and trailing space) of a line; nil when blank.
    func content(_ n: Int) throws(ConfigFileError) -> (Int, String)? {
        var raw = lines[n]
        if raw.hasSuffix("\r") { raw.removeLast() }
        let indent = raw.prefix { $0 == " " }.count
        if raw.dropFirst(indent).first == "\t" { throw fail(.syntax, n + 1, "a tab in the indentation (use spaces)") }
        let text = stripComment(String(raw.dropFirst(indent)))
        return text.isEmpty ? nil : (indent, text)
    }

    mutating func parse() throws(ConfigFileError) -> [ConfigFile.Entry] {
        var entries: [ConfigFile.Entry] = []
        var seen: Set<String> = []
        while index < lines.count {
            let n = index
            guard let (indent, text) = try content(n) else { index += 1; continue }
            if n == firstContentLine(), text == "---" { index += 1; continue }
            guard indent == 0 else { throw fail(.syntax, n + 1, "indented line outside a list or map") }
            if text.hasPrefix("- ") || text == "-" { throw fail(.syntax, n + 1, "a list item needs a key above it") }
            let (key, rest) = try splitKey(text, line: n + 1)
            guard seen.insert(key).inserted else { throw fail(.duplicateKey, n + 1, key: key, "'\(key)' is given twice") }
            index += 1
            let value: ConfigFile.Value
            if rest.isEmpty {
                value = try block(key: key, line: n + 1)
            } else if rest.hasPrefix("[") {
                value = .list(
                    try flowItems(rest, open: "[", close: "]", line: n + 1).map { item throws(ConfigFileError) in
                        try scalar(item, line: n + 1)
                    })
            } else if rest.hasPrefix("{") {
                var map: [ConfigFile.MapEntry] = []
                for item in try flowItems(rest, open: "{", close: "}", line: n + 1) {
                    let (k, v) = try splitKey(item, line: n + 1)
                    guard !map.contains(where: { $0.key == k }) else {
                        throw fail(.duplicateKey, n + 1, key: k, "'\(key).\(k)' is given twice")
                    }
                    map.append(.init(key: k, value: try scalar(v, line: n + 1), line: n + 1))
                }
                value = .map(map)
            } else {
                value = .scalar(try scalar(rest, line: n + 1))
            }
            entries.append(.init(key: key, value: value, line: n + 1))
        }
        return entries
    }

    func firstContentLine() -> Int? {
        for n in lines.indices { if let _ = try? content(n) { return n } }
        return nil
    }

    /// The indented lines under `key:`: all list items or all `name: value` pairs, one indent.
    mutating func block(key: String, line: Int) throws(ConfigFileError) -> ConfigFile.Value {
        var items: [String] = []
        var map: [ConfigFile.MapEntry] = []
        var indentOfBlock: Int? = nil
        while index < lines.count {
            guard let (indent, text) = try content(index) else { index += 1; continue }
            if indent == 0 { break }
            let n = index + 1
            if let b = indentOfBlock, b != indent { throw fail(.unsupported, n, key: key, "nesting deeper than one level under '\(key)'") }
            indentOfBlock = indent
            if text == "-" || text.hasPrefix("- ") {
                guard map.isEmpty else { throw fail(.syntax, n, key: key, "a list item among the map entries of '\(key)'") }
                let item = String(text.dropFirst()).trimmed
                if item.hasPrefix("- ") || item.hasPrefix("[") || item.hasPrefix("{")
                    || (try? splitKey(item, line: n)) != nil && !isQuoted(item)
                {
                    throw fail(.unsupported, n, key: key, "nesting deeper than one level under '\(key)'")
                }
                items.append(try scalar(item, line: n))
            } else {
                guard items.isEmpty else { throw fail(.syntax, n, key: key, "a map entry among the list items of '\(key)'") }
                let (k, v) = try splitKey(text, line: n)
                guard !v.isEmpty, !v.hasPrefix("["), !v.hasPrefix("{") else {
                    throw fail(.unsupported, n, key: key, "nesting deeper than one level under '\(key)'")
                }
                guard !map.contains(where: { $0.key == k }) else { throw fail(.duplicateKey, n, key: k, "'\(key).\(k)' is given twice") }
                map.append(.init(key: k, value: try scalar(v, line: n), line: n))
            }
            index += 1
        }
        if !map.isEmpty { return .map(map) }
        if !items.isEmpty { return .list(items) }
        // `key:` with nothing under it: YAML's null, taken as an empty value.
        return .scalar("")
    }

    func isQuoted(_ s: String) -> Bool { s.hasPrefix("\"") || s.hasPrefix("'") }

    /// `name: rest` with a plain key of letters, digits, '-', '_' and '.'.
    func splitKey(_ text: String, line: Int) throws(ConfigFileError) -> (String, String) {
        guard let colon = text.firstIndex(of: ":") else { throw fail(.syntax, line, "expected 'key: value', got '\(text)'") }
        let key = String(text[..<colon])
        let after = text[text.index(after: colon)...]
        guard after.isEmpty || after.first == " " else { throw fail(.syntax, line, "expected a space after '\(key):'") }
        guard !key.isEmpty, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }) else {
            throw fail(.syntax, line, "'\(key)' is not a plain key")
        }
        return (key, after.trimmed)
    }

    func flowItems(_ text: String, open: Character, close: Character, line: Int) throws(ConfigFileError) -> [String] {
        guard text.last == close else { throw fail(.syntax, line, "'\(open)' without a closing '\(close)' on the same line") }
        let inner = String(text.dropFirst().dropLast())
        var items: [String] = []
        var current = ""
        var quote: Character? = nil
        for ch in inner {
            if let q = quote {
                current.append(ch)
                if ch == q { quote = nil }
            } else if ch == "\"" || ch == "'" {
                quote = ch; current.append(ch)
            } else if ch == "," {
                items.append(current.trimmed); current = ""
            } else if ch == "[" || ch == "{" {
                throw fail(.unsupported, line, "nesting deeper than one level")
            } else {
                current.append(ch)
            }
        }
        if !current.trimmed.isEmpty || !items.isEmpty { items.append(current.trimmed) }
        if items.contains(where: \.isEmpty) { throw fail(.syntax, line, "an empty item in '\(text)'") }
        return items
    }

    /// A plain, 'single' or "double" quoted scalar.
    func scalar(_ text: String, line: Int) throws(ConfigFileError) -> String {
        if text.hasPrefix("\"") {
            guard text.count >= 2, text.hasSuffix("\"") else { throw fail(.syntax, line, "unterminated \"string\"") }
            var out = ""
            var escaped = false
            for ch in text.dropFirst().dropLast() {
                if escaped {
                    switch ch {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "\\", "\"", "/": out.append(ch)
                    default: throw fail(.unsupported, line, "escape \\\(ch) in a \"string\"")
                    }
                    escaped = false
                } else if ch == "\\" {
                    escaped = true
                } else if ch == "\"" {
                    throw fail(.syntax, line, "a stray '\"' in a \"string\"")
                } else {
                    out.append(ch)
                }
            }
            if escaped { throw fail(.syntax, line, "unterminated \"string\"") }
            return out
        }
        if text.hasPrefix("'") {
            guard text.count >= 2, text.hasSuffix("'") else { throw fail(.syntax, line, "unterminated 'string'") }
            let inner = String(text.dropFirst().dropLast())
            guard !inner.replacing("''", with: "").contains("'") else { throw fail(.syntax, line, "a stray \"'\" in a 'string'") }
            return inner.replacing("''", with: "'")
        }
        if let first = text.first, "&*!|>%@`".contains(first) {
            throw fail(.unsupported, line, "'\(first)' (anchors, aliases, tags, block scalars) is not supported: quote the value")
        }
        if text.contains(": ") { throw fail(.unsupported, line, "a value with ': ' must be quoted") }
        return text
    }

    /// The line without a `#` comment (one that starts the line or follows a space, outside quotes).
    func stripComment(_ text: String) -> String {
        let chars = Array(text)
        var quote: Character? = nil
        var end = chars.count
        var i = 0
        while i < chars.count {
            let ch = chars[i]
            let previous: Character = i == 0 ? " " : chars[i - 1]
            if let q = quote {
                if ch == "\\", q == "\"" { i += 2; continue }
                if ch == q {
                    // '' inside a 'single-quoted' scalar is a quote, not its end.
                    if q == "'", i + 1 < chars.count, chars[i + 1] == "'" { i += 2; continue }
                    quote = nil
                }
            } else if ch == "\"" || ch == "'" {
                if previous == " " || previous == "[" || previous == "{" || previous == "," { quote = ch }
            } else if ch == "#" && previous == " " {
                end = i
                break
            }
            i += 1
        }
        var s = String(chars[..<end])
        while s.last == " " { s.removeLast() }
        return s
    }
}
