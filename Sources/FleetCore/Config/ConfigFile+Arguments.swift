/// Which keys a command's configuration file may hold, and the flag each one stands for: the key
/// is the flag's name without `--` (`health-command: …` is `--health-command …`).
public struct ConfigSchema: Sendable {
    public enum Kind: Sendable, Equatable {
        case string
        case integer
        case number
        /// A byte size or rate: digits with an optional K, M or G.
        case size
        /// `true` gives the flag, `false` leaves it out.
        case flag
        /// A repeatable option: a list, or one scalar.
        case list
        /// A map of `name: value` given as the repeatable flag `--flag name=value`.
        case map(flag: String)
    }

    public var keys: [String: Kind]
    public init(_ keys: [String: Kind]) { self.keys = keys }
}

extension ConfigFile {
    /// The command-line arguments the file stands for, leaving out every option that `commandLine`
    /// gives itself (flags override the file; a map entry is overridden by the flag naming the same
    /// name). Unknown keys and values of the wrong kind are errors with their line.
    public func arguments(schema: ConfigSchema, overriddenBy commandLine: [String]) throws(ConfigFileError) -> [String] {
        func given(_ flag: String) -> Bool {
            commandLine.contains { $0 == "--" + flag || $0.hasPrefix("--" + flag + "=") }
        }
        func values(of flag: String) -> [String] {
            var out: [String] = []
            for (i, arg) in commandLine.enumerated() {
                if arg == "--" + flag, i + 1 < commandLine.count { out.append(commandLine[i + 1]) }
                if arg.hasPrefix("--" + flag + "=") { out.append(String(arg.dropFirst(flag.count + 3))) }
            }
            return out
        }
        var args: [String] = []
        for entry in entries {
            let key = entry.key
            guard let kind = schema.keys[key] else {
                throw ConfigFileError(.unknownKey, source: source, line: entry.line, key: key, "unknown key '\(key)'")
            }
            func bad(_ why: String) -> ConfigFileError {
                ConfigFileError(.badValue, source: source, line: entry.line, key: key, "'\(key)' \(why)")
            }
            switch (kind, entry.value) {
            case (.map(let flag), .map(let pairs)):
                let overridden = Set(values(of: flag).compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
                for pair in pairs where !overridden.contains(pair.key) {
                    args += ["--" + flag, pair.key + "=" + pair.value]
                }
            case (.map, .scalar("")):
                break
            case (.map, _):
                throw bad("must be a map of name: value")
            case (.list, .list(let items)):
                if !given(key) { for item in items { args += ["--" + key, item] } }
            case (.list, .scalar(let item)):
                if !given(key), !item.isEmpty { args += ["--" + key, item] }
            case (_, .list), (_, .map):
                throw bad("must be a single value")
            case (.flag, .scalar(let v)):
                guard v == "true" || v == "false" else { throw bad("must be true or false, got '\(v)'") }
                if v == "true", !given(key) { args.append("--" + key) }
            case (let kind, .scalar(let v)):
                switch kind {
                case .integer: guard Int(v) != nil else { throw bad("must be a whole number, got '\(v)'") }
                case .number: guard let d = Double(v), d.isFinite else { throw bad("must be a number, got '\(v)'") }
                case .size: guard ByteCount.parse(v) != nil else { throw bad("must be a size like 512K, 20M or 8G, got '\(v)'") }
                default: guard !v.isEmpty else { throw bad("needs a value") }
                }
                if !given(key) { args += ["--" + key, v] }
            }
        }
        return args
    }
}
