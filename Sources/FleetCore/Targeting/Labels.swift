/// Why a label key, value or set was refused.
public struct LabelError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case invalidKey  // empty, too long, bad characters, bad prefix
        case invalidValue  // too long or bad characters
        case reservedKey  // class, tier, arch: built in, cannot be set
        case tooMany  // more than Labels.maxPerDevice
        case malformed  // an assignment that is not "k=v"
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// Device labels: validation (Kubernetes rules), the precedence of their three sources, and what a
/// selector sees.
public enum Labels {
    public static let maxPerDevice = 32
    /// Built-in selector keys: their values come from the device's cell, never from a label.
    public static let reservedKeys: Set<String> = ["class", "tier", "arch"]

    /// The label that names a device's IANA time zone (its maintenance windows are read in it).
    /// Its value is a zone name, so it may hold `/` and `+` ("Europe/Berlin", "Etc/GMT+5"), which
    /// other values may not; selectors cannot name such values.
    public static let timezoneKey = "timezone"

    /// An IANA zone name: 1-64 of letters, digits, `/`, `_`, `-`, `+`; no leading `/`, no `..`.
    public static func validate(zone: String) throws(LabelError) {
        let u = zone.utf8
        let ok =
            !u.isEmpty && u.count <= 64 && u.first != UInt8(ascii: "/") && !zone.contains("..")
            && u.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                    || c == UInt8(ascii: "/") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: "+")
            }
        if !ok { throw LabelError(.invalidValue, "label \(timezoneKey) '\(zone)': not an IANA time zone name (e.g. Europe/Berlin)") }
    }

    static let maxNameLength = 63
    static let maxPrefixLength = 253

    /// `[prefix/]name`: prefix a DNS subdomain of at most 253 characters, name at most 63,
    /// alphanumeric at both ends with `-`, `_`, `.` inside.
    public static func validate(key: String) throws(LabelError) {
        if let problem = keyProblem(key.utf8) { throw LabelError(.invalidKey, "label key '\(key)': \(problem)") }
    }

    /// At most 63 characters, empty allowed, alphanumeric at both ends with `-`, `_`, `.` inside.
    public static func validate(value: String) throws(LabelError) {
        if let problem = nameProblem(value.utf8, allowEmpty: true) {
            throw LabelError(.invalidValue, "label value '\(value)': \(problem)")
        }
    }

    /// A device's label set: every key and value, no reserved key, at most `maxPerDevice`.
    public static func validate(_ labels: [String: String]) throws(LabelError) {
        if labels.count > maxPerDevice {
            throw LabelError(.tooMany, "\(labels.count) labels, at most \(maxPerDevice) per device")
        }
        // Sorted, so that the error named is the same from run to run.
        for key in labels.keys.sorted() {
            try validateSettable(key: key)
            if key == timezoneKey { try validate(zone: labels[key]!) } else { try validate(value: labels[key]!) }
        }
    }

    /// "k=v" (as given to `--label` or `fleetctl devices label`): the key must be one a label may have.
    public static func parseAssignment(_ text: String) throws(LabelError) -> (key: String, value: String) {
        guard let eq = text.firstIndex(of: "=") else {
            throw LabelError(.malformed, "'\(text)' is not key=value")
        }
        let key = String(text[..<eq]), value = String(text[text.index(after: eq)...])
        if key.isEmpty { throw LabelError(.malformed, "'\(text)' has no key before '='") }
        try validateSettable(key: key)
        try validate(value: value)
        return (key, value)
    }

    /// Precedence: operator over enrollment token over the device's own (agent) labels, key by key.
    /// Reserved keys are left out whatever their source, so that a device reporting `class=…` as a
    /// label cannot pose as another cell to a selector.
    public static func effective(
        agent: [String: String], enrollment: [String: String],
        operator: [String: String]
    ) -> [String: String] {
        var result = agent
        result.merge(enrollment) { _, bound in bound }
        result.merge(`operator`) { _, set in set }
        for key in reservedKeys { result.removeValue(forKey: key) }
        return result
    }

    /// What a selector sees: the labels plus the built-in keys class, tier, arch (nil values left
    /// out). A built-in value wins over a label of the same key, which validation never lets in.
    public static func selectable(
        _ labels: [String: String], hardwareClass: String?, tier: String?,
        arch: String?
    ) -> [String: String] {
        var result = labels
        for key in reservedKeys { result.removeValue(forKey: key) }
        if let hardwareClass { result["class"] = hardwareClass }
        if let tier { result["tier"] = tier }
        if let arch { result["arch"] = arch }
        return result
    }

    static func validateSettable(key: String) throws(LabelError) {
        try validate(key: key)
        if reservedKeys.contains(key) {
            throw LabelError(.reservedKey, "'\(key)' is a built-in selector key and cannot be set as a label")
        }
    }

    // MARK: Character rules (on UTF-8 bytes: anything outside ASCII is refused)

    static func isAlphanumeric(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
    }

    static func isNameByte(_ b: UInt8) -> Bool {
        isAlphanumeric(b) || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
    }

    static func nameProblem<C: BidirectionalCollection<UInt8>>(_ bytes: C, allowEmpty: Bool) -> String? {
        if bytes.isEmpty { return allowEmpty ? nil : "empty name" }
        if bytes.count > maxNameLength { return "\(bytes.count) characters, at most \(maxNameLength)" }
        if !bytes.allSatisfy(isNameByte) { return "only letters, digits, '-', '_' and '.' are allowed" }
        if !isAlphanumeric(bytes.first!) || !isAlphanumeric(bytes.last!) {
            return "must begin and end with a letter or digit"
        }
        return nil
    }

    static func keyProblem(_ key: String.UTF8View) -> String? {
        guard let slash = key.firstIndex(of: UInt8(ascii: "/")) else { return nameProblem(key, allowEmpty: false) }
        let prefix = key[..<slash], name = key[key.index(after: slash)...]
        if let problem = prefixProblem(prefix) { return "prefix: \(problem)" }
        if name.contains(UInt8(ascii: "/")) { return "more than one '/'" }
        return nameProblem(name, allowEmpty: false)
    }

    /// A DNS subdomain: dot-separated lower-case alphanumeric labels, '-' inside.
    static func prefixProblem(_ prefix: Substring.UTF8View) -> String? {
        if prefix.isEmpty { return "empty" }
        if prefix.count > maxPrefixLength { return "\(prefix.count) characters, at most \(maxPrefixLength)" }
        for part in prefix.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            let lowerAlnum: (UInt8) -> Bool = { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7A) }
            guard let first = part.first, let last = part.last, lowerAlnum(first), lowerAlnum(last),
                part.allSatisfy({ lowerAlnum($0) || $0 == UInt8(ascii: "-") })
            else {
                return "must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
            }
        }
        return nil
    }
}
