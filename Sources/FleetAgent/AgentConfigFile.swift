import FleetCore

/// `fleet-agent run`'s configuration file: every flag of `run` by its name, and `labels:` as a map.
public enum AgentConfigFile {
    public static let defaultPath = "/etc/edgefleet/agent.yaml"

    public static let schema = ConfigSchema([
        "controller": .string, "state": .string, "models": .string, "facts": .string, "root": .string,
        "device-id": .string, "poll-seconds": .number, "health-command": .string, "health-timeout": .number,
        "rate-limit": .size, "max-restarts": .integer, "benchmark-command": .string, "benchmark-timeout": .number,
        "energy-counter": .list, "once": .flag, "metrics-listen": .string, "log-level": .string,
        "ca": .string, "cert": .string, "key": .string, "enroll-token-file": .string,
        "self-update-deadline": .integer, "no-self-update": .flag,
        "labels": .map(flag: "label")
    ])

    /// The command line with `run`'s configuration file put in (see `ConfigFileCommandLine`).
    public static func expand(_ argv: [String]) throws(ConfigFileError) -> [String] {
        try ConfigFileCommandLine.expand(
            argv, subcommand: "run", schema: schema, defaultPath: defaultPath,
            exists: { FS.exists($0) }, read: read)
    }

    /// The arguments a configuration file stands for on its own (doctor reads the file like `run`).
    public static func arguments(file path: String) throws(ConfigFileError) -> [String] {
        guard let text = read(path) else { throw ConfigFileError(.unreadable, source: path, line: 0, "cannot be read") }
        return try ConfigFile.parse(text, source: path).arguments(schema: schema, overriddenBy: [])
    }

    static func read(_ path: String) -> String? {
        (try? FS.read(path, limit: 1 << 20)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `--label k=v` values as a map; a value without '=' or with an empty key is refused.
    public static func labels(_ values: [String]) -> [String: String]? {
        var labels: [String: String] = [:]
        for v in values {
            guard let eq = v.firstIndex(of: "="), eq != v.startIndex else { return nil }
            labels[String(v[..<eq])] = String(v[v.index(after: eq)...])
        }
        return labels
    }
}
