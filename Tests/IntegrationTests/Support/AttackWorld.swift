import FleetCore
import Foundation
import Testing
#if canImport(Glibc)
    import Glibc
#endif

/// What the attack catalogue compares before and after an attempt: the device's trusted-state
/// files and the whole models folder (every name, file bytes, symlink target), byte for byte.
struct DeviceSnapshot: Equatable {
    var lines: [String]

    static let trustedStateFiles = ["identity.json", "trust.json"]

    init(_ agent: TestFleet.Agent) {
        var out: [String] = []
        for name in Self.trustedStateFiles {
            let data = FileManager.default.contents(atPath: agent.state + "/" + name)
            out.append("state/\(name) \(data.map { Digest.sha256Hex($0) } ?? "missing")")
        }
        Self.walk(agent.models, "models", &out)
        lines = out
    }

    static func walk(_ path: String, _ label: String, _ out: inout [String]) {
        var st = stat()
        guard lstat(path, &st) == 0 else { out.append("\(label) missing"); return }
        switch st.st_mode & S_IFMT {
        case S_IFLNK:
            out.append("\(label) -> \((try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?")")
        case S_IFDIR:
            out.append("\(label)/ mode \(String(st.st_mode & 0o7777, radix: 8))")
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() {
                walk(path + "/" + name, label + "/" + name, &out)
            }
        default:
            let data = FileManager.default.contents(atPath: path) ?? Data()
            out.append("\(label) \(data.count) bytes sha256 \(Digest.sha256Hex(data)) mode \(String(st.st_mode & 0o7777, radix: 8))")
        }
    }

    /// The lines only one side has, for a failure message.
    func difference(_ other: DeviceSnapshot) -> String {
        let a = Set(lines), b = Set(other.lines)
        return "before only: \(a.subtracting(b).sorted()); after only: \(b.subtracting(a).sorted())"
    }
}

/// Genuine metadata captured once from a real controller, the keys that signed it (an attacker
/// who stole some of them is simulated by signing with them), and two device states: a device
/// running release 1 and one that has moved on to release 2. Built once per test process.
final class AttackWorld: @unchecked Sendable {
    static let deviceId = "edge-x86-vnni-01"
    static let otherDeviceId = "edge-x86-vnni-02"
    nonisolated(unsafe) private static var templateDir: String?
    private static let cached: Result<AttackWorld, any Error> = Result { try AttackWorld() }
    static func shared() throws -> AttackWorld { try cached.get() }

    let fleet: TestFleet
    let facts: String
    let deviceFacts: DeviceFacts
    let release: SigningKey, director: SigningKey, timestamp: SigningKey
    let v1: String, v2: String
    var v1Sha: String { fleet.sha(v1) }
    var v2Sha: String { fleet.sha(v2) }
    /// What the device got for release 1, for release 2 as a delta and as a full download, and what
    /// another device of the same class got for release 2.
    let r1: CheckInResponse, r2delta: CheckInResponse, r2full: CheckInResponse, r2other: CheckInResponse
    /// What the controller signed for this device id when it claimed the facts of an arm64 board.
    let r2otherClass: CheckInResponse
    /// The delta package the controller built from release 1 to release 2.
    let deltaPackage: String?

    private init() throws {
        let fleet = try TestFleet()
        self.fleet = fleet
        Self.templateDir = fleet.dir
        atexit { if let d = AttackWorld.templateDir { try? FileManager.default.removeItem(atPath: d) } }
        defer { fleet.stop() }
        try fleet.startController()
        for (dir, extra) in [("m1", [String]()), ("m2", ["--finetune"])] {
            let r = try fleet.run(
                "/usr/bin/env", ["python3", TestFleet.repoRoot + "/scripts/make-demo-model.py", fleet.dir + "/" + dir] + extra)
            guard r.status == 0 else { throw HarnessError("make-demo-model: \(r.stderr)") }
        }
        v1 = fleet.dir + "/m1/model-int8.safetensors"
        v2 = fleet.dir + "/m2/model-int8.safetensors"
        let keys = fleet.dir + "/keys"
        release = try SigningKey.parse(Data(contentsOf: URL(fileURLWithPath: keys + "/offline/release.key")))
        director = try SigningKey.parse(Data(contentsOf: URL(fileURLWithPath: keys + "/online/director.key")))
        timestamp = try SigningKey.parse(Data(contentsOf: URL(fileURLWithPath: keys + "/online/timestamp.key")))
        facts = TestFleet.demoFacts("edge-x86-vnni-01.json")
        var f = try FleetJSON.decode(DeviceFacts.self, from: Data(contentsOf: URL(fileURLWithPath: facts)), limit: 1 << 20)
        f.deviceId = Self.deviceId
        deviceFacts = f

        // Release 1, captured as the device gets it, then installed by the real agent.
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", v1)])
        r1 = try Self.checkIn(fleet, facts: f, installed: [:])
        let a = fleet.agent("v1", facts: facts)
        let installed = try fleet.runOnce(a)
        guard installed.status == 0, fleet.current(a, model: "m").contentSha == fleet.sha(v1) else {
            throw HarnessError("template agent did not install release 1: \(installed.stderr)")
        }

        // Release 2 with a delta from release 1, captured three ways.
        _ = try fleet.fleetctl(["variant", "add", "m", v2, "--name", "m-v2", "--dtype", "int8", "--format", "safetensors"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", keys, "--variants", "m-v2"])
        struct Shown: Decodable { var packages: ReleasePackages }
        var deltas: [ReleasePackages.Delta] = []
        try fleet.waitFor("delta packages of m@2", timeout: 120) {
            deltas = try fleet.fleetctlJSON(Shown.self, ["release", "show", "m@2"]).packages.variants.flatMap(\.deltas)
            return !deltas.isEmpty && deltas.allSatisfy { $0.status != .building }
        }
        _ = try fleet.fleetctl(["rollout", "start", "m@2", "--all"])
        let v1Sha = fleet.sha(v1)
        r2delta = try Self.checkIn(fleet, facts: f, installed: ["m": v1Sha])
        r2full = try Self.checkIn(fleet, facts: f, installed: ["m": v1Sha], fullPackages: ["m"])
        var other = f
        other.deviceId = Self.otherDeviceId
        other.hostname = Self.otherDeviceId
        r2other = try Self.checkIn(fleet, facts: other, installed: ["m": v1Sha], fullPackages: ["m"])
        // This device's id with the facts of an arm64 board: a genuine assignment for another class.
        var arm = try FleetJSON.decode(
            DeviceFacts.self, from: Data(contentsOf: URL(fileURLWithPath: TestFleet.demoFacts("edge-arm64-01.json"))),
            limit: 1 << 20)
        arm.deviceId = Self.deviceId
        r2otherClass = try Self.checkIn(fleet, facts: arm, installed: ["m": v1Sha], fullPackages: ["m"])
        if let pkg = deltas.first(where: { $0.status == .ready })?.packageSha256 {
            deltaPackage = fleet.dir + "/v1-to-v2.efdelta"
            try FileManager.default.copyItem(atPath: fleet.artifactPath(pkg), toPath: deltaPackage!)
        } else {
            deltaPackage = nil
        }
        fleet.stop()

        // A device that moved on to release 2 (through the genuine full download).
        let c = try fleet.run("/bin/cp", ["-a", fleet.dir + "/agents/v1", fleet.dir + "/agents/v2"])
        guard c.status == 0 else { throw HarnessError("cp: \(c.stderr)") }
        let scene = try AttackScene(world: self, base: "v2", in: fleet)
        try scene.serve(r2full)
        try scene.putArtifact(fleet.sha(v2), file: v2)
        let r = try scene.run()
        guard r.status == 0, fleet.current(scene.agent, model: "m").contentSha == fleet.sha(v2) else {
            throw HarnessError("template agent did not install release 2: \(r.stderr)")
        }
        fleet.stop()
    }

    /// A check-in as the device would make it, straight to the real controller.
    static func checkIn(_ fleet: TestFleet, facts: DeviceFacts, installed: [String: String], fullPackages: [String]? = nil) throws
        -> CheckInResponse
    {
        let request = CheckInRequest(facts: facts, installed: installed, agentVersion: "0.1.0", fullPackages: fullPackages)
        let body = fleet.dir + "/checkin-request-\(UUID().uuidString.prefix(8)).json"
        try FleetJSON.encode(request).write(to: URL(fileURLWithPath: body))
        let r = try fleet.run(
            "/usr/bin/env",
            [
                "curl", "-fsS", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + body,
                "\(fleet.url)/v1/devices/\(facts.deviceId ?? "")/checkin"
            ])
        guard r.status == 0 else { throw HarnessError("check-in of \(facts.deviceId ?? ""): \(r.stderr)") }
        return try FleetJSON.decode(CheckInResponse.self, from: Data(r.stdout.utf8), limit: MetadataLimits.checkInResponse)
    }

    // MARK: forging

    static func payload<T: Decodable>(_ envelope: Envelope, as: T.Type) throws -> T {
        try FleetJSON.decode(T.self, from: Data(envelope.payloadBytes ?? []), limit: MetadataLimits.envelope)
    }

    /// Signs exactly these payload bytes (for payloads no encoder would write: duplicate keys, padding).
    static func signRaw(_ bytes: [UInt8], type: String, by keys: [SigningKey]) -> Envelope {
        var env = Envelope(payloadType: type, payloadBytes: bytes)
        for k in keys { env.addSignature(k) }
        return env
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    /// A check-in answer with one update.
    static func response(
        timestamp: Envelope?, catalog: Envelope, assignment: Envelope, model: String = "m",
        deviceId: String = deviceId
    ) -> CheckInResponse {
        CheckInResponse(
            deviceId: deviceId, hardwareClass: "x86-avx512-vnni", tier: "fibre", rootChain: [], timestamp: timestamp,
            updates: [ModelUpdate(model: model, catalog: catalog, assignment: assignment)], held: [:], pollSeconds: 1)
    }

    /// The trust file bytes a device holding `before` writes after accepting `response`'s update:
    /// genuine metadata move the trusted versions and counters forward, and nothing else may change.
    func trustAfterAccepting(_ response: CheckInResponse, before: Data) throws -> Data {
        let state = try FleetJSON.decode(TrustedState.self, from: before, limit: 4 << 20)
        let u = try #require(response.updates.first)
        let verified = try UpdateVerifier.verify(
            catalog: u.catalog, assignment: u.assignment, timestamp: try #require(response.timestamp),
            state: state, deviceId: Self.deviceId, facts: deviceFacts, now: Self.now())
        return try FleetJSON.encode(verified.state)
    }
}

/// One attempt: a copy of a template device, and a malicious controller (evil_controller.py) that
/// serves it what the test writes into the scenario folder.
final class AttackScene {
    let world: AttackWorld
    let fleet: TestFleet
    let scenario: String
    let agent: TestFleet.Agent
    let port: Int
    let host: String
    var url: String { "http://\(host):\(port)" }

    /// A fresh fleet folder with a copy of the template device `base` ("v1" or "v2").
    convenience init(_ base: String = "v1", listen host: String = "127.0.0.1") throws {
        let world = try AttackWorld.shared()
        let fleet = try TestFleet()
        let c = try fleet.run("/bin/cp", ["-a", world.fleet.dir + "/agents/" + base, fleet.dir + "/device"])
        guard c.status == 0 else { throw HarnessError("cp: \(c.stderr)") }
        try self.init(
            world: world,
            agent: TestFleet.Agent(
                name: "device", state: fleet.dir + "/device/state",
                models: fleet.dir + "/device/models", facts: world.facts), in: fleet, host: host)
    }

    /// A scene on a template device in place (used while the template is built).
    convenience init(world: AttackWorld, base: String, in fleet: TestFleet) throws {
        try self.init(world: world, agent: fleet.agent(base, facts: world.facts), in: fleet)
    }

    private init(world: AttackWorld, agent: TestFleet.Agent, in fleet: TestFleet, host: String = "127.0.0.1") throws {
        self.world = world
        self.fleet = fleet
        self.agent = agent
        self.host = host
        scenario = fleet.dir + "/evil-" + UUID().uuidString.prefix(6)
        try FileManager.default.createDirectory(atPath: scenario + "/artifacts", withIntermediateDirectories: true)
        port = try TestFleet.freePort()
        _ = try fleet.start(
            "/usr/bin/env",
            [
                "python3", TestFleet.repoRoot + "/Tests/IntegrationTests/Support/evil_controller.py",
                "--listen", "\(port)", "--host", host, "--dir", scenario
            ], log: scenario + ".out")
        let health = "http://\(host):\(port)/healthz"
        try fleet.waitFor("malicious controller") { (try? fleet.run("/usr/bin/env", ["curl", "-fsS", health], timeout: 5).status) == 0 }
    }

    func cleanup() { fleet.cleanup() }

    func serve(_ response: CheckInResponse) throws { try serveRaw(FleetJSON.encode(response)) }

    func serveRaw(_ data: Data) throws {
        try data.write(to: URL(fileURLWithPath: scenario + "/checkin.json"))
    }

    func flag(_ name: String, _ on: Bool = true) {
        if on { FileManager.default.createFile(atPath: scenario + "/" + name, contents: Data()) } else { unlink(scenario + "/" + name) }
    }

    func putArtifact(_ name: String, _ data: Data) throws {
        try data.write(to: URL(fileURLWithPath: scenario + "/artifacts/" + name))
    }

    func putArtifact(_ name: String, file: String) throws {
        try putArtifact(name, Data(contentsOf: URL(fileURLWithPath: file)))
    }

    func run() throws -> CommandResult { try fleet.runOnce(agent, controller: url) }

    var snapshot: DeviceSnapshot { DeviceSnapshot(agent) }
    var trust: Data { FileManager.default.contents(atPath: agent.state + "/trust.json") ?? Data() }

    /// Status events the agent reported to the malicious controller.
    func events() -> [StatusEvent] {
        ((try? String(contentsOfFile: scenario + "/events.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONDecoder().decode(StatusEvent.self, from: Data($0.utf8))
        }
    }

    func requests() -> [[String: Any]] {
        ((try? String(contentsOfFile: scenario + "/requests.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    var artifactRequests: [[String: Any]] { requests().filter { ($0["path"] as? String)?.hasPrefix("/v1/artifacts/") == true } }

    /// The fault classes of the updates the agent rejected, from its reports ("fault: message").
    var rejectedFaults: [String] {
        events().filter { $0.kind == "rejected" }.compactMap { $0.detail?.split(separator: ":").first.map(String.init) }
    }
}

extension Array where Element == StatusEvent {
    /// The first install failure: final (`failed`) or followed by a retry (`retrying`).
    var firstFailure: StatusEvent? { first { $0.kind == "failed" || $0.kind == "retrying" } }
}
