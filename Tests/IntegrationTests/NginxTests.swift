import FleetCore
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// nginx from deploy/nginx/ in front of a real controller started with
/// `--artifact-accel-redirect`: the API goes through to the controller, artifact bytes come from
/// nginx after the controller's access check, and nginx's internal location is not reachable.
@Suite("nginx in front of the controller", .serialized)
struct NginxTests {
    static var nginx: String? {
        ["/usr/sbin/nginx", "/usr/bin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// nginx as a plain process in `fleet.dir/nginx`, proxying to `upstreams`; stopped with QUIT
    /// (a KILLed master would leave its worker holding the port).
    final class Front {
        let process: Process
        let port: Int
        var url: String { "http://127.0.0.1:\(port)" }

        init(_ fleet: TestFleet, nginx: String, upstreams: [Int]) throws {
            let prefix = fleet.dir + "/nginx"
            try FileManager.default.createDirectory(atPath: prefix, withIntermediateDirectories: true)
            port = try TestFleet.freePort()
            let render = try fleet.run("/usr/bin/env", ["bash", TestFleet.repoRoot + "/deploy/nginx/render.sh", "--prefix", prefix,
                                                        "--listen", "127.0.0.1:\(port)", "--workers", "1",
                                                        "--artifacts", fleet.dir + "/controller/artifacts/sha256"]
                                                + upstreams.flatMap { ["--upstream", "127.0.0.1:\($0)"] })
            guard render.status == 0 else { throw HarnessError("render.sh: \(render.stderr)") }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: nginx)
            p.arguments = ["-p", prefix + "/", "-c", "nginx.conf", "-g", "daemon off;"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle(forWritingAtPath: prefix + "/error.log") ?? FileHandle.nullDevice
            try p.run()
            process = p
            let url = "http://127.0.0.1:\(port)"
            try fleet.waitFor("nginx in front of the controller") {
                guard p.isRunning else { throw HarnessError("nginx exited: " + fleet.log("nginx/error.log")) }
                return (try? fleet.run("/usr/bin/env", ["curl", "-fsS", url + "/healthz"], timeout: 5).status) == 0
            }
        }

        func stop() {
            guard process.isRunning else { return }
            kill(process.processIdentifier, SIGQUIT)
            process.waitUntilExit()
        }
    }

    func curl(_ fleet: TestFleet, _ args: [String]) throws -> CommandResult {
        try fleet.run("/usr/bin/env", ["curl", "-sS"] + args, timeout: 60)
    }

    /// The status code curl saw, with the body written to `out`.
    func status(_ fleet: TestFleet, _ args: [String], out: String = "/dev/null") throws -> String {
        try curl(fleet, ["-o", out, "-w", "%{http_code}"] + args).stdout
    }

    @Test func artifactsComeFromNginxAfterTheControllersCheckAndCheckInsGoThrough() throws {
        guard let nginx = Self.nginx else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("nginx is missing in CI (Makefile DEB_PACKAGES has nginx-light)") }
            print("SKIPPED artifactsComeFromNginxAfterTheControllersCheckAndCheckInsGoThrough: nginx is not installed")
            return
        }
        let fleet = try TestFleet()
        try fleet.startController(extra: ["--artifact-accel-redirect", "/_artifacts/"])
        // A replica that is down comes first: nginx must pass every request on to the live one.
        let front = try Front(fleet, nginx: nginx, upstreams: [try TestFleet.freePort(), fleet.port])
        defer { front.stop(); fleet.cleanup() }

        let file = try fleet.makeFile("m-v1.safetensors", size: 700_000, seed: 11)
        let sha = fleet.sha(file)
        try fleet.publish(model: "m", version: "1", variants: [("m-v1", "int8", file)])

        // The controller itself names the file and sends no bytes.
        let direct = try curl(fleet, ["-D", "-", "-o", "/dev/null", fleet.url + "/v1/artifacts/" + sha])
        #expect(direct.stdout.lowercased().contains("x-accel-redirect: /_artifacts/\(sha.prefix(2))/\(sha)"), "\(direct.stdout)")

        // Through nginx: the whole file, then a download cut at 250,000 bytes and resumed with Range.
        let whole = fleet.dir + "/whole.bin", part = fleet.dir + "/part.bin"
        #expect(try status(fleet, [front.url + "/v1/artifacts/" + sha], out: whole) == "200")
        #expect(fleet.sha(whole) == sha)
        #expect(try status(fleet, ["-r", "0-249999", front.url + "/v1/artifacts/" + sha], out: part) == "206")
        #expect(FileManager.default.contents(atPath: part)?.count == 250_000)
        let resumed = try curl(fleet, ["-C", "-", "-o", part, "-w", "%{http_code}", front.url + "/v1/artifacts/" + sha])
        #expect(resumed.stdout == "206", "\(resumed.stderr)")
        #expect(fleet.sha(part) == sha)
        let head = try curl(fleet, ["-I", front.url + "/v1/artifacts/" + sha]).stdout.lowercased()
        #expect(head.contains("content-length: 700000"), "\(head)")
        #expect(head.contains("etag: \"\(sha)\""), "\(head)")

        // nginx's internal location is not a way around the controller; unknown artifacts are 404.
        #expect(try status(fleet, [front.url + "/_artifacts/\(sha.prefix(2))/\(sha)"]) == "404")
        #expect(try status(fleet, [front.url + "/v1/artifacts/" + String(repeating: "0", count: 64)]) == "404")

        // A real agent checks in through nginx and installs what nginx serves.
        let a = fleet.agent("edge-x86-vnni-01", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let cycle = try fleet.runOnce(a, controller: front.url)
        #expect(cycle.status == 0, "\(cycle.stderr)")
        #expect(fleet.current(a, model: "m").contentSha == sha)
        #expect(try fleet.events("edge-x86-vnni-01").contains { $0.kind == EventKind.committed.rawValue && $0.sha256 == sha })

        // A revoked device is refused through nginx, and its agent changes nothing.
        _ = try fleet.fleetctl(["devices", "revoke", "edge-x86-vnni-01"])
        let body = String(decoding: try FleetJSON.encode(CheckInRequest(facts: SimulatedDevice.facts(index: 0), installed: [:], agentVersion: "test")), as: UTF8.self)
        #expect(try status(fleet, ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body,
                                   front.url + "/v1/devices/edge-x86-vnni-01/checkin"]) == "403")
        let refused = try fleet.runOnce(a, controller: front.url)
        #expect(refused.status != 0)
        #expect(fleet.current(a, model: "m").contentSha == sha)
        // Another device, never seen, checks in through nginx (open access accepts it by id).
        #expect(try status(fleet, ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body,
                                   front.url + "/v1/devices/\(SimulatedDevice.id(prefix: "sim-", index: 0))/checkin"]) == "200")
    }
}
