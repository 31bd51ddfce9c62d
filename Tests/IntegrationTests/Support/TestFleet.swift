import FleetCore
import Foundation
import Testing
#if canImport(Glibc)
    import Glibc
#endif

struct CommandResult {
    var status: Int32
    var signalled: Bool
    var stdout: String
    var stderr: String
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A controller, keys and agents as real processes on loopback, each fleet in its own temporary
/// directory with its own port.
final class TestFleet: @unchecked Sendable {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let bin = ProcessInfo.processInfo.environment["EDGEFLEET_BIN"] ?? repoRoot + "/.build/debug"

    let dir: String
    /// The controller's port: chosen free, and chosen again if another process took it before the
    /// controller bound it (the gap between closing the probe socket and the bind).
    private(set) var port: Int
    var controller: Process?
    var background: [Process] = []
    var url: String { "http://127.0.0.1:\(port)" }

    init() throws {
        dir = NSTemporaryDirectory() + "edgefleet-it-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        port = try Self.freePort()
        for tool in ["fleet-controller", "fleet-agent", "fleetctl"]
        where !FileManager.default.isExecutableFile(atPath: "\(Self.bin)/\(tool)") {
            throw HarnessError("\(Self.bin)/\(tool) is missing: run `swift build` first")
        }
    }

    deinit { stop() }

    func stop() {
        for p in background + [controller].compactMap({ $0 }) where p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        background = []
        controller = nil
    }

    func cleanup() {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw HarnessError("no free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    // MARK: processes

    @discardableResult
    func run(_ tool: String, _ args: [String], env: [String: String] = [:], timeout: Double = 120) throws -> CommandResult {
        try Self.runProcess(tool.hasPrefix("/") ? tool : "\(Self.bin)/\(tool)", args, env: env, timeout: timeout, scratch: dir)
    }

    /// Runs `executable` to its end (killed after `timeout`), its output captured through files in
    /// `scratch` (pipes could fill and stall a chatty process).
    static func runProcess(
        _ executable: String, _ args: [String], env: [String: String] = [:], timeout: Double = 120,
        scratch: String = NSTemporaryDirectory()
    ) throws -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        let out = scratch + "/.out-\(UUID().uuidString)", err = out + ".err"
        FileManager.default.createFile(atPath: out, contents: nil)
        FileManager.default.createFile(atPath: err, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: out); try? FileManager.default.removeItem(atPath: err) }
        p.standardOutput = FileHandle(forWritingAtPath: out)
        p.standardError = FileHandle(forWritingAtPath: err)
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            throw HarnessError("\(executable) \(args.joined(separator: " ")) did not finish in \(timeout) s")
        }
        p.waitUntilExit()
        return CommandResult(
            status: p.terminationStatus, signalled: p.terminationReason == .uncaughtSignal,
            stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    func start(_ tool: String, _ args: [String], log: String, env: [String: String] = [:]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool.hasPrefix("/") ? tool : "\(Self.bin)/\(tool)")
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        FileManager.default.createFile(atPath: log, contents: nil)
        let h = FileHandle(forWritingAtPath: log)
        p.standardOutput = h
        p.standardError = h
        try p.run()
        background.append(p)
        return p
    }

    /// Polls `condition` until it holds or the deadline passes (asked once more at the deadline:
    /// a thread that slept past it on a busy machine still sees what happened meanwhile).
    func waitFor(_ what: String, timeout: Double = 30, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            usleep(50_000)
        }
        if try condition() { return }
        throw HarnessError("timed out waiting for \(what)")
    }

    // MARK: fleet

    func fleetctl(_ args: [String], controller: String? = nil) throws -> String {
        let r = try run("fleetctl", ["--controller", controller ?? url] + args)
        guard r.status == 0 else { throw HarnessError("fleetctl \(args.joined(separator: " ")) failed: \(r.stderr)\(r.stdout)") }
        return r.stdout
    }

    /// A copy of the repository's fleet/ configuration whose bandwidth tiers are `tiers` (YAML).
    func config(tiers: String) throws -> String {
        let c = dir + "/fleet"
        try? FileManager.default.removeItem(atPath: c)
        try FileManager.default.copyItem(atPath: Self.repoRoot + "/fleet", toPath: c)
        try tiers.write(toFile: c + "/bandwidth-tiers.yaml", atomically: true, encoding: .utf8)
        return c
    }

    /// A device's events as the controller stored them, oldest first.
    func events(_ device: String, controller: String? = nil) throws -> [StatusEvent] {
        try fleetctlJSON([StatusEvent].self, ["devices", "events", device, "--limit", "1000"], controller: controller).sorted {
            $0.seq < $1.seq
        }
    }

    func fleetctlJSON<T: Decodable>(_ t: T.Type, _ args: [String], controller: String? = nil) throws -> T {
        let out = try run("fleetctl", ["--controller", controller ?? url, "--json"] + args)
        guard out.status == 0 else { throw HarnessError("fleetctl \(args) failed: \(out.stderr)") }
        return try JSONDecoder().decode(t, from: Data(out.stdout.utf8))
    }

    /// `config`: an operator configuration folder other than the repository's fleet/.
    func startController(config: String? = nil, extra: [String] = []) throws {
        if !FileManager.default.fileExists(atPath: dir + "/keys/root.json") {
            let r = try run("fleetctl", ["keys", "init", "--dir", dir + "/keys"])
            guard r.status == 0 else { throw HarnessError("keys init: \(r.stderr)") }
        }
        for attempt in 1...3 {
            let log = dir + "/controller.log"
            let p = try start(
                "fleet-controller",
                [
                    "serve", "--data", dir + "/controller", "--listen", "127.0.0.1:\(port)",
                    "--keys", dir + "/keys/online", "--config", config ?? Self.repoRoot + "/fleet",
                    "--poll-seconds", "1"
                ] + extra, log: log)
            controller = p
            var exited = false
            try waitFor("controller health") {
                if !p.isRunning { exited = true; return true }
                return (try? run("fleetctl", ["--controller", url, "status"], timeout: 10).status) == 0
            }
            guard exited else { return }
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            guard attempt < 3, text.contains("ddress already in use") else {
                throw HarnessError("the controller exited at start: \(text.suffix(2000))")
            }
            port = try Self.freePort()
        }
    }

    /// Writes a file of `size` deterministic bytes seeded by `seed`.
    func makeFile(_ name: String, size: Int, seed: UInt64) throws -> String {
        var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var bytes = [UInt8](repeating: 0, count: size)
        for i in 0..<size {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            bytes[i] = UInt8(truncatingIfNeeded: x)
        }
        let path = dir + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Registers a model's variants (name, dtype, file) and releases and rolls out `version`.
    func publish(
        model: String, version: String, variants: [(String, String, String)], addModel: Bool = true,
        alsoRelease: [String] = []
    ) throws {
        if addModel { _ = try fleetctl(["model", "add", model]) }
        for (name, dtype, file) in variants {
            _ = try fleetctl(["variant", "add", model, file, "--name", name, "--dtype", dtype, "--format", "safetensors"])
        }
        _ = try fleetctl([
            "release", "create", model, "--version", version, "--keys", dir + "/keys",
            "--variants", (variants.map(\.0) + alsoRelease).joined(separator: ",")
        ])
        _ = try fleetctl(["rollout", "start", "\(model)@\(version)", "--all"])
    }

    struct Agent {
        let name: String
        let state: String
        let models: String
        let facts: String
    }

    func agent(_ name: String, facts: String) -> Agent {
        Agent(name: name, state: "\(dir)/agents/\(name)/state", models: "\(dir)/agents/\(name)/models", facts: facts)
    }

    static func demoFacts(_ file: String) -> String { repoRoot + "/fleet/demo/" + file }

    func agentArgs(_ a: Agent, controller: String? = nil, extra: [String] = []) -> [String] {
        [
            "run", "--controller", controller ?? url, "--state", a.state, "--models", a.models, "--facts", a.facts,
            "--root", dir + "/keys/root.json", "--poll-seconds", "1"
        ] + extra
    }

    @discardableResult
    func runOnce(_ a: Agent, controller: String? = nil, env: [String: String] = [:], extra: [String] = []) throws -> CommandResult {
        try run("fleet-agent", agentArgs(a, controller: controller, extra: ["--once"] + extra), env: env)
    }

    /// The sha256 `current` points at and the sha256 of the bytes a reader finds through it.
    func current(_ a: Agent, model: String) -> (link: String?, contentSha: String?) {
        let linkPath = "\(a.models)/\(model)/current"
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: linkPath) else { return (nil, nil) }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: linkPath)) ?? []
        guard files.count == 1, let data = FileManager.default.contents(atPath: linkPath + "/" + files[0]) else { return (target, nil) }
        return (target, Digest.sha256Hex(data))
    }

    func sha(_ path: String) -> String { Digest.sha256Hex(FileManager.default.contents(atPath: path) ?? Data()) }

    func journalPhase(_ a: Agent, model: String) -> String? {
        guard let data = FileManager.default.contents(atPath: a.state + "/journal.json"),
            let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let installs = obj["installs"] as? [String: Any], let m = installs[model] as? [String: Any]
        else { return nil }
        return m["phase"] as? String
    }

    func log(_ name: String) -> String { (try? String(contentsOfFile: dir + "/" + name, encoding: .utf8)) ?? "" }

    /// The artifact's file in the controller's content-addressed store.
    func artifactPath(_ sha: String) -> String { "\(dir)/controller/artifacts/sha256/\(sha.prefix(2))/\(sha)" }

    func startProxy(_ extra: [String]) throws -> (port: Int, log: String) {
        let p = try Self.freePort()
        let log = dir + "/proxy-\(p).jsonl"
        FileManager.default.createFile(atPath: log, contents: nil)
        _ = try start(
            "/usr/bin/env",
            [
                "python3", Self.repoRoot + "/Tests/IntegrationTests/Support/proxy.py", "--listen", "\(p)",
                "--upstream", "\(port)", "--log", log
            ] + extra, log: dir + "/proxy-\(p).out")
        try waitFor("proxy") { (try? run("/usr/bin/env", ["curl", "-fsS", "http://127.0.0.1:\(p)/healthz"], timeout: 5).status) == 0 }
        return (p, log)
    }

    func proxyLog(_ path: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}
