import FleetCore
import Foundation
import Yams

struct ConfigError: Error, CustomStringConvertible {
    let file: String
    let message: String
    var description: String { "\(file): \(message)" }
}

/// Operator configuration from the fleet/ folder: hardware classes and bandwidth tiers.
struct FleetConfig: Sendable {
    var hardwareClasses: [HardwareClass]
    var bandwidthTiers: [BandwidthTier]
    /// Maintenance windows by selector (fleet/windows.yaml, optional): the first rule whose
    /// selector picks a device gives its window when neither the rollout nor its policy sets one.
    var maintenanceWindows: [WindowRule] = []

    struct WindowRule: Sendable, Equatable, Decodable {
        var selector: LabelSelector
        var window: MaintenanceWindow
    }

    static func load(directory: String) throws -> FleetConfig {
        let classesFile = directory + "/hardware-classes.yaml"
        let tiersFile = directory + "/bandwidth-tiers.yaml"
        let classes = try decode(ClassesFile.self, classesFile).classes.map { try $0.domain(file: classesFile) }
        let tiers = try decode(TiersFile.self, tiersFile).tiers.map { try $0.domain(file: tiersFile) }
        try checkUnique(classes.map(\.name), file: classesFile)
        try checkUnique(tiers.map(\.name), file: tiersFile)
        var windows: [WindowRule] = []
        let windowsFile = directory + "/windows.yaml"
        if FileManager.default.fileExists(atPath: windowsFile) {
            windows = try decode(WindowsFile.self, windowsFile).windows
            for (i, rule) in windows.enumerated() {
                if let problem = rule.window.validate() { throw ConfigError(file: windowsFile, message: "windows[\(i)]: \(problem)") }
                if let zone = rule.window.timezone, !WindowCalendar.isKnownZone(zone) {
                    throw ConfigError(file: windowsFile, message: "windows[\(i)]: unknown time zone '\(zone)'")
                }
            }
        }
        return FleetConfig(hardwareClasses: classes, bandwidthTiers: tiers, maintenanceWindows: windows)
    }

    private struct WindowsFile: Decodable { var windows: [WindowRule] }

    private static func checkUnique(_ names: [String], file: String) throws {
        var seen = Set<String>()
        for n in names {
            guard Name.isValid(n) else { throw ConfigError(file: file, message: "invalid name '\(n)'") }
            guard seen.insert(n).inserted else { throw ConfigError(file: file, message: "duplicate name '\(n)'") }
        }
    }

    private static func decode<T: Decodable>(_ t: T.Type, _ path: String) throws -> T {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError(file: path, message: "cannot read the file")
        }
        do { return try YAMLDecoder().decode(t, from: text) } catch {
            throw ConfigError(file: path, message: "\(error)")
        }
    }

    private struct ClassesFile: Decodable { var classes: [ClassEntry] }
    private struct ClassEntry: Decodable {
        struct MatchEntry: Decodable {
            var arch: [String]?
            var cpu_flags: [String]?
            var min_memory: String?
            var max_memory: String?
            var accelerators: [String]?
        }
        var name: String
        var description: String?
        var match: MatchEntry?
        var formats: [String]
        var max_model_size: String?
        var optimize: String?

        func domain(file: String) throws -> HardwareClass {
            func size(_ s: String?, _ field: String) throws -> Int64? {
                guard let s else { return nil }
                guard let v = ByteCount.parse(s) else { throw ConfigError(file: file, message: "\(name): \(field) '\(s)' is not a size") }
                return v
            }
            guard !formats.isEmpty else { throw ConfigError(file: file, message: "\(name): formats is empty") }
            let m = match
            return HardwareClass(
                name: name, description: description,
                match: .init(
                    arch: m?.arch, cpuFlags: m?.cpu_flags, minMemoryBytes: try size(m?.min_memory, "min_memory"),
                    maxMemoryBytes: try size(m?.max_memory, "max_memory"), accelerators: m?.accelerators),
                formats: formats, maxModelBytes: try size(max_model_size, "max_model_size"),
                optimize: try optimize.map { o in
                    guard o == "latency" || o == "energy" else {
                        throw ConfigError(file: file, message: "\(name): optimize must be latency or energy")
                    }
                    return o
                })
        }
    }

    private struct TiersFile: Decodable { var tiers: [TierEntry] }
    private struct TierEntry: Decodable {
        var name: String
        var description: String?
        var metered: Bool?
        var min_mbps: Double?
        var budget: String?
        var retry: RetryEntry?

        struct RetryEntry: Decodable {
            var attempts: Int?
            var backoff: String?
            var max_backoff: String?
            var max_bytes: String?
        }

        func domain(file: String) throws -> BandwidthTier {
            var budgetBytes: Int64? = nil
            if let budget {
                guard let v = ByteCount.parse(budget) else {
                    throw ConfigError(file: file, message: "\(name): budget '\(budget)' is not a size")
                }
                budgetBytes = v
            }
            var policy: RetryPolicy? = nil
            if let r = retry {
                func seconds(_ s: String?, _ field: String, _ fallback: Int64) throws -> Int64 {
                    guard let s else { return fallback }
                    guard let v = Duration.parse(s), v >= 1 else {
                        throw ConfigError(file: file, message: "\(name): retry.\(field) '\(s)' is not a duration (30s, 10m, 2h)")
                    }
                    return v
                }
                let d = RetryPolicy.default
                var maxBytes: Int64? = nil
                if let b = r.max_bytes {
                    guard let v = ByteCount.parse(b) else {
                        throw ConfigError(file: file, message: "\(name): retry.max_bytes '\(b)' is not a size")
                    }
                    maxBytes = v
                }
                let attempts = r.attempts ?? d.maxAttempts
                guard (1...10).contains(attempts) else { throw ConfigError(file: file, message: "\(name): retry.attempts must be 1 to 10") }
                let base = try seconds(r.backoff, "backoff", d.baseDelaySeconds)
                let cap = try seconds(r.max_backoff, "max_backoff", max(d.maxDelaySeconds, base))
                guard cap >= base else {
                    throw ConfigError(file: file, message: "\(name): retry.max_backoff is shorter than retry.backoff")
                }
                policy = RetryPolicy(maxAttempts: attempts, baseDelaySeconds: base, maxDelaySeconds: cap, maxRetryBytes: maxBytes)
            }
            return BandwidthTier(
                name: name, description: description, metered: metered, minMbps: min_mbps, budgetBytes: budgetBytes,
                retry: policy)
        }
    }
}

/// The online keys the controller holds (director, timestamp) and the root they must belong to.
struct OnlineKeys: Sendable {
    /// root.json and the rotations accepted since (shared: a rotation is seen by every holder).
    let history: RootHistory
    var rootEnvelope: Envelope { history.current.envelope }
    var root: RootMetadata { history.current.root }
    var director: SigningKey
    var timestamp: SigningKey
    /// Newer root versions after the first, for devices that pinned an older one.
    var rootChain: [Envelope] { history.current.chain }

    static func load(directory: String, now: Int64) throws -> OnlineKeys {
        func read(_ name: String) throws -> Data {
            guard let d = FileManager.default.contents(atPath: directory + "/" + name) else {
                throw ConfigError(file: directory + "/" + name, message: "missing (create keys with `fleetctl keys init`)")
            }
            return d
        }
        let rootEnv = try Envelope.parse(try read("root.json"))
        let root = try MetadataVerifier.verifyInitialRoot(rootEnv, now: now)
        let director = try SigningKey.parse(try read("director.key"))
        let timestamp = try SigningKey.parse(try read("timestamp.key"))
        for (key, role) in [(director, Role.director), (timestamp, Role.timestamp)] {
            guard key.role == role, root.roles[role.rawValue]?.keyids.contains(key.keyID) == true else {
                throw ConfigError(file: directory, message: "\(role.rawValue).key is not a \(role.rawValue) key of root.json")
            }
        }
        return OnlineKeys(history: RootHistory(envelope: rootEnv, root: root), director: director, timestamp: timestamp)
    }
}

/// Rollout policies from fleet/policies/*.yaml.
enum PolicyLoader {
    static func load(directory: String) throws -> [String: RolloutPolicy] {
        var out: [String: RolloutPolicy] = [:]
        let dir = directory + "/policies"
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() where name.hasSuffix(".yaml") {
            let path = dir + "/" + name
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ConfigError(file: path, message: "cannot read the file")
            }
            let policy = try parse(text, file: path)
            guard out[policy.name] == nil else { throw ConfigError(file: path, message: "duplicate policy name '\(policy.name)'") }
            out[policy.name] = policy
        }
        return out
    }

    /// One policy document (YAML, the format of fleet/policies/*.yaml), checked whole.
    static func parse(_ text: String, file: String) throws -> RolloutPolicy {
        let entry: PolicyFile
        do { entry = try YAMLDecoder().decode(PolicyFile.self, from: text) } catch { throw ConfigError(file: file, message: "\(error)") }
        return try entry.domain(file: file)
    }

    private struct PolicyFile: Decodable {
        struct PhaseEntry: Decodable { var percent: Double; var min_devices: Int?; var bake: String? }
        struct GateEntry: Decodable {
            var max_install_failure_rate: Double?
            var max_health_failure_rate: Double?
            var max_timed_out_rate: Double?
            var max_latency_p50_ratio: Double?
            var max_latency_p95_ratio: Double?
            var max_error_rate_increase: Double?
            var max_crashes: Int?
            var min_sample: Int?
            var unjudged: String?
        }
        struct WaveEntry: Decodable {
            var name: String
            var selector: String?
            var phases: [PhaseEntry]?
            var gates: GateEntry?
            var on_failure: String?
            var window: MaintenanceWindow?
        }
        var name: String
        var phases: [PhaseEntry]
        var gates: GateEntry?
        var on_failure: String?
        var device_timeout: String?
        var hold_back: Double?
        var waves: [WaveEntry]?
        var window: MaintenanceWindow?

        func domain(file: String) throws -> RolloutPolicy {
            func seconds(_ s: String?, _ field: String) throws -> Int64? {
                guard let s else { return nil }
                guard let v = Duration.parse(s) else {
                    throw ConfigError(file: file, message: "\(field) '\(s)' is not a duration (30s, 10m, 2h)")
                }
                return v
            }
            func phaseList(_ entries: [PhaseEntry]) throws -> [RolloutPolicy.Phase] {
                try entries.map {
                    .init(percent: $0.percent, minDevices: $0.min_devices ?? 1, bakeSeconds: try seconds($0.bake, "bake") ?? 0)
                }
            }
            func gateSet(_ g: GateEntry?) throws -> RolloutPolicy.Gates {
                .init(
                    maxInstallFailureRate: g?.max_install_failure_rate, maxHealthFailureRate: g?.max_health_failure_rate,
                    maxTimedOutRate: g?.max_timed_out_rate, maxLatencyP50Ratio: g?.max_latency_p50_ratio,
                    maxLatencyP95Ratio: g?.max_latency_p95_ratio, maxErrorRateIncrease: g?.max_error_rate_increase,
                    maxCrashes: g?.max_crashes, minSample: g?.min_sample ?? 1,
                    unjudged: try g?.unjudged.map { u in
                        guard let v = RolloutPolicy.UnjudgedAction(rawValue: u) else {
                            throw ConfigError(file: file, message: "gates.unjudged must be block or pass")
                        }
                        return v
                    })
            }
            func failureAction(_ f: String?) throws -> RolloutPolicy.FailureAction? {
                guard let f else { return nil }
                guard let v = RolloutPolicy.FailureAction(rawValue: f) else {
                    throw ConfigError(file: file, message: "on_failure must be pause or rollback")
                }
                return v
            }
            let waveList: [RolloutPolicy.Wave]? = try waves?.map { w in
                let selector: LabelSelector
                do { selector = try LabelSelector(parsing: w.selector ?? "") } catch {
                    throw ConfigError(file: file, message: "wave \(w.name): selector: \(error)")
                }
                return RolloutPolicy.Wave(
                    name: w.name, selector: selector, phases: try w.phases.map(phaseList),
                    gates: try w.gates.map(gateSet), onFailure: try failureAction(w.on_failure), window: w.window)
            }
            let policy = RolloutPolicy(
                name: name, phases: try phaseList(phases), gates: try gateSet(gates), onFailure: try failureAction(on_failure) ?? .pause,
                deviceTimeoutSeconds: try seconds(device_timeout, "device_timeout") ?? 3600,
                holdBackPercent: hold_back, waves: waveList, window: window)
            guard Name.isValid(policy.name) else { throw ConfigError(file: file, message: "invalid policy name '\(name)'") }
            if let problem = policy.validate() { throw ConfigError(file: file, message: problem) }
            for zone in ([window] + (waveList ?? []).map(\.window)).compactMap({ $0?.timezone }) where !WindowCalendar.isKnownZone(zone) {
                throw ConfigError(file: file, message: "unknown time zone '\(zone)'")
            }
            return policy
        }
    }
}

enum Duration {
    /// "90", "90s", "10m", "2h", "1d" → seconds.
    static func parse(_ s: String) -> Int64? {
        let t = s.trimmed
        let units: [(String, Int64)] = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)]
        for (u, f) in units where t.hasSuffix(u) {
            guard let v = Int64(t.dropLast()), v >= 0 else { return nil }
            return v * f
        }
        guard let v = Int64(t), v >= 0 else { return nil }
        return v
    }
}
