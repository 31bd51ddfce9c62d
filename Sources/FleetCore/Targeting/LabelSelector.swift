/// Why a selector (or a maintenance window) text was refused, and where.
public struct SelectorError: Error, Equatable, Sendable, CustomStringConvertible {
    /// 0-based character offset into the text.
    public var position: Int
    public var message: String

    public init(position: Int, message: String) {
        self.position = position
        self.message = message
    }

    public var description: String { "at character \(position + 1): \(message)" }
}

/// A Kubernetes-style label selector: requirements ANDed. Codable as its canonical string.
public struct LabelSelector: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Operator: String, Sendable, Hashable, CaseIterable {
        case equals, notEquals, isIn, notIn, exists, doesNotExist

        /// Canonical order of requirements on one key.
        var rank: Int {
            switch self {
            case .equals: 0
            case .notEquals: 1
            case .isIn: 2
            case .notIn: 3
            case .exists: 4
            case .doesNotExist: 5
            }
        }
    }

    public struct Requirement: Sendable, Hashable, CustomStringConvertible {
        public var key: String
        public var op: Operator
        /// Sorted, unique; one for equals/notEquals, none for exists/doesNotExist.
        public var values: [String]

        /// Canonical form: values sorted and unique; `in` of one value is `=`, `notin` of one is
        /// `!=` (and the reverse for several), exists/doesNotExist carry no values.
        /// `isIn` with no values matches nothing and `notIn` with none everything; neither has
        /// a text form (the parser refuses an empty list).
        public init(key: String, op: Operator, values: [String] = []) {
            let unique = Array(Set(values)).sorted()
            self.key = key
            self.values = unique
            switch op {
            case .equals, .isIn: self.op = unique.count == 1 ? .equals : .isIn
            case .notEquals, .notIn: self.op = unique.count == 1 ? .notEquals : .notIn
            case .exists, .doesNotExist: self.op = op; self.values = []
            }
        }

        @inline(__always)
        func matches(_ value: String?) -> Bool {
            switch op {
            case .equals: return value != nil && value == values.first
            case .notEquals: return value == nil || value != values.first
            case .isIn: guard let value else { return false }; return values.contains(value)
            case .notIn: guard let value else { return true }; return !values.contains(value)
            case .exists: return value != nil
            case .doesNotExist: return value == nil
            }
        }

        public var description: String {
            switch op {
            case .equals: "\(key)=\(values[0])"
            case .notEquals: "\(key)!=\(values[0])"
            case .isIn: "\(key) in (\(values.joined(separator: ",")))"
            case .notIn: "\(key) notin (\(values.joined(separator: ",")))"
            case .exists: key
            case .doesNotExist: "!\(key)"
            }
        }

        static func canonicalOrder(_ a: Requirement, _ b: Requirement) -> Bool {
            if a.key != b.key { return a.key < b.key }
            if a.op != b.op { return a.op.rank < b.op.rank }
            return a.values.lexicographicallyPrecedes(b.values)
        }
    }

    /// Sorted by key, then operator, then values; no exact duplicates (as made by the inits;
    /// assign through `init(requirements:)` to keep it so).
    public var requirements: [Requirement]

    public static let everything = LabelSelector(requirements: [])
    public var isEverything: Bool { requirements.isEmpty }

    public init(requirements: [Requirement]) {
        // Re-canonicalize each, in case a caller mutated one after init.
        let canonical = requirements.map { Requirement(key: $0.key, op: $0.op, values: $0.values) }
        var sorted = canonical.sorted(by: Requirement.canonicalOrder)
        var i = 1
        while i < sorted.count {
            if sorted[i] == sorted[i - 1] { sorted.remove(at: i) } else { i += 1 }
        }
        self.requirements = sorted
    }

    public init(parsing text: String) throws(SelectorError) {
        var parser = SelectorParser(text)
        self.init(requirements: try parser.parse())
    }

    // MARK: Matching (runs over every device of the fleet: no allocation per call)

    /// `k!=v` and `notin` match when k is absent (Kubernetes semantics).
    public func matches(_ labels: [String: String]) -> Bool {
        for r in requirements where !r.matches(labels[r.key]) { return false }
        return true
    }

    /// Same as `matches(Labels.selectable(labels, …))` without building the dictionary.
    public func matches(_ labels: [String: String], hardwareClass: String?, tier: String?, arch: String?) -> Bool {
        for r in requirements {
            let value: String?
            switch r.key {
            case "class": value = hardwareClass
            case "tier": value = tier
            case "arch": value = arch
            default: value = labels[r.key]
            }
            if !r.matches(value) { return false }
        }
        return true
    }

    public var description: String { requirements.map(\.description).joined(separator: ",") }

    // MARK: Codable, as the canonical string

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            try self.init(parsing: text)
        } catch {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription: "selector '\(text)': \(error)"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    // MARK: Disjointness

    /// True only when no label set can match both (e.g. region=eu vs region=us; k vs !k;
    /// k in (a,b) vs k notin (a,b)); false when unsure.
    ///
    /// Requirements on different keys are independent, so both match some label set exactly when,
    /// for every key, the requirements of both on that key allow some state of it (absent, or a
    /// value). Decided per key, which makes the answer exact, not just safe.
    public func provablyDisjoint(from other: LabelSelector) -> Bool {
        var constraints: [String: KeyConstraint] = [:]
        for r in requirements + other.requirements { constraints[r.key, default: KeyConstraint()].add(r) }
        return constraints.values.contains { !$0.isSatisfiable }
    }

    /// The states of one key that a conjunction of requirements allows.
    struct KeyConstraint {
        var absentAllowed = true
        var allowed: Set<String>? = nil  // nil: any value not excluded
        var excluded: Set<String> = []

        mutating func add(_ r: Requirement) {
            switch r.op {
            case .exists: absentAllowed = false
            case .doesNotExist: allowed = []
            case .equals, .isIn:
                absentAllowed = false
                allowed = allowed.map { $0.intersection(r.values) } ?? Set(r.values)
            case .notEquals, .notIn: excluded.formUnion(r.values)
            }
        }

        var isSatisfiable: Bool {
            if absentAllowed { return true }
            guard let allowed else { return true }  // infinitely many values, finitely many excluded
            return !allowed.subtracting(excluded).isEmpty
        }
    }
}

/// Recursive descent over the selector text, by character, so that errors name a character offset.
struct SelectorParser {
    let chars: [Character]
    var i = 0

    init(_ text: String) { chars = Array(text) }

    typealias Requirement = LabelSelector.Requirement

    mutating func parse() throws(SelectorError) -> [Requirement] {
        var result: [Requirement] = []
        skipSpace()
        if i == chars.count { return [] }
        while true {
            result.append(try requirement())
            skipSpace()
            if i == chars.count { return result }
            guard chars[i] == "," else { throw fail("expected ',' or the end of the selector, found '\(chars[i])'") }
            let comma = i
            i += 1
            skipSpace()
            if i == chars.count { throw SelectorError(position: comma, message: "trailing ','") }
        }
    }

    mutating func requirement() throws(SelectorError) -> Requirement {
        if chars[i] == "!" {
            i += 1
            skipSpace()
            let key = try self.key()
            skipSpace()
            if i < chars.count, chars[i] != "," {
                throw fail("'!\(key)' takes no operator or value; expected ',' or the end, found '\(chars[i])'")
            }
            return Requirement(key: key, op: .doesNotExist)
        }
        let key = try self.key()
        let afterKey = i
        skipSpace()
        guard i < chars.count, chars[i] != "," else { return Requirement(key: key, op: .exists) }
        switch chars[i] {
        case "=":
            i += 1
            if i < chars.count, chars[i] == "=" { i += 1 }
            return Requirement(key: key, op: .equals, values: [try singleValue()])
        case "!":
            guard i + 1 < chars.count, chars[i + 1] == "=" else { throw fail("unknown operator: '!' must be followed by '='") }
            i += 2
            return Requirement(key: key, op: .notEquals, values: [try singleValue()])
        default:
            guard i > afterKey, isWordChar(chars[i]) else {
                throw fail(chars[i].isASCII ? "unknown operator '\(chars[i])'" : "character '\(chars[i])' is not allowed")
            }
            let start = i
            while i < chars.count, isWordChar(chars[i]) { i += 1 }
            let word = String(chars[start..<i])
            let op: LabelSelector.Operator
            switch word {
            case "in": op = .isIn
            case "notin": op = .notIn
            default: throw SelectorError(position: start, message: "unknown operator '\(word)' (expected =, ==, !=, in, notin)")
            }
            return Requirement(key: key, op: op, values: try valueList())
        }
    }

    mutating func key() throws(SelectorError) -> String {
        let start = i
        while i < chars.count, isKeyChar(chars[i]) { i += 1 }
        if i == start {
            if i < chars.count, !isSyntax(chars[i]) { throw fail("character '\(chars[i])' is not allowed in a key") }
            throw fail("missing key")
        }
        let key = String(chars[start..<i])
        do { try Labels.validate(key: key) } catch { throw SelectorError(position: start, message: error.message) }
        return key
    }

    /// The value after `=`, `==` or `!=`: may be empty ("k=" selects an empty value).
    mutating func singleValue() throws(SelectorError) -> String {
        skipSpace()
        let value = try self.value()
        return value
    }

    mutating func value() throws(SelectorError) -> String {
        let start = i
        while i < chars.count, isValueChar(chars[i]) { i += 1 }
        if i < chars.count, !isSyntax(chars[i]), !isSpace(chars[i]) {
            throw fail("character '\(chars[i])' is not allowed in a value")
        }
        let value = String(chars[start..<i])
        do { try Labels.validate(value: value) } catch { throw SelectorError(position: start, message: error.message) }
        return value
    }

    mutating func valueList() throws(SelectorError) -> [String] {
        skipSpace()
        guard i < chars.count, chars[i] == "(" else { throw fail("expected '(' after in/notin") }
        let open = i
        i += 1
        var values: [String] = []
        while true {
            skipSpace()
            guard i < chars.count else { throw SelectorError(position: open, message: "unterminated '('") }
            if chars[i] == ")" {
                throw fail(values.isEmpty ? "empty value list" : "missing value after ','")
            }
            if chars[i] == "," { throw fail("missing value before ','") }
            values.append(try value())
            skipSpace()
            guard i < chars.count else { throw SelectorError(position: open, message: "unterminated '('") }
            if chars[i] == ")" { i += 1; return values }
            guard chars[i] == "," else { throw fail("expected ',' or ')', found '\(chars[i])'") }
            i += 1
        }
    }

    func fail(_ message: String) -> SelectorError { SelectorError(position: i, message: message) }

    mutating func skipSpace() { while i < chars.count, isSpace(chars[i]) { i += 1 } }

    func isSpace(_ c: Character) -> Bool { c.isASCII && c.isWhitespace }
    func isWordChar(_ c: Character) -> Bool { c.isASCII && c.isLetter }
    func isValueChar(_ c: Character) -> Bool {
        guard let a = c.asciiValue else { return false }
        return Labels.isNameByte(a)
    }
    func isKeyChar(_ c: Character) -> Bool { isValueChar(c) || c == "/" }
    func isSyntax(_ c: Character) -> Bool { "=!,()".contains(c) }
}
