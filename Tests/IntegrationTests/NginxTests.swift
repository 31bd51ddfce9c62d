import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// nginx from deploy/nginx/ in front of a real controller started with
/// `--artifact-accel-redirect`: the API goes through to the controller, artifact bytes come from
/// nginx after the controller's access check, and nginx's internal location is not reachable.
@Suite("nginx in front of the controller", .serialized, .ownThread)
struct NginxTests {
    static var nginx: String? {
        ["/usr/sbin/nginx", "/usr/bin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// nginx, or nil after saying the test is skipped; in CI a missing nginx is a failure.
    static func nginxOrSkip(_ test: String = #function) -> String? {
        if let nginx { return nginx }
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            Issue.record("nginx is missing in CI (Makefile DEB_PACKAGES has nginx-light)")
        }
        print("SKIPPED \(test): nginx is not installed")
        return nil
    }

    /// nginx as a plain process in `fleet.dir/nginx`, proxying to `upstreams`; stopped with QUIT
    /// (a KILLed master would leave its worker holding the port).
    final class Front {
        let process: Process
        let port: Int
        let secure: Bool
        var url: String { "\(secure ? "https" : "http")://127.0.0.1:\(port)" }

        /// `pki`: mutual TLS in nginx with the development PKI's controller certificate and fleet CA.
        init(_ fleet: TestFleet, nginx: String, upstreams: [Int], pki: String? = nil) throws {
            let prefix = fleet.dir + "/nginx"
            try FileManager.default.createDirectory(atPath: prefix, withIntermediateDirectories: true)
            port = try TestFleet.freePort()
            let render = try fleet.run(
                "/usr/bin/env",
                [
                    "bash", TestFleet.repoRoot + "/deploy/nginx/render.sh", "--prefix", prefix,
                    "--listen", "127.0.0.1:\(port)", "--workers", "1",
                    "--artifacts", fleet.dir + "/controller/artifacts/sha256"
                ]
                    + upstreams.flatMap { ["--upstream", "127.0.0.1:\($0)"] }
                    + (pki.map {
                        [
                            "--tls-cert", $0 + "/controller.crt", "--tls-key", $0 + "/controller.key",
                            "--client-ca", $0 + "/ca.crt"
                        ]
                    } ?? []))
            guard render.status == 0 else { throw HarnessError("render.sh: \(render.stderr)") }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: nginx)
            p.arguments = ["-p", prefix + "/", "-c", "nginx.conf", "-g", "daemon off;"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle(forWritingAtPath: prefix + "/error.log") ?? FileHandle.nullDevice
            try p.run()
            process = p
            secure = pki != nil
            let url = "\(secure ? "https" : "http")://127.0.0.1:\(port)"
            try fleet.waitFor("nginx in front of the controller") {
                guard p.isRunning else { throw HarnessError("nginx exited: " + fleet.log("nginx/error.log")) }
                return
                    (try? fleet.run(
                        "/usr/bin/env", ["curl", "-fsS"] + (pki.map { ["--cacert", $0 + "/ca.crt"] } ?? []) + [url + "/healthz"],
                        timeout: 5
                    ).status) == 0
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
        guard let nginx = Self.nginxOrSkip() else { return }
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
        #expect(try fleet.events("edge-x86-vnni-01").contains { $0.kind == .committed && $0.sha256 == sha })

        // A revoked device is refused through nginx, and its agent changes nothing.
        _ = try fleet.fleetctl(["devices", "revoke", "edge-x86-vnni-01"])
        let body = String(
            decoding: try FleetJSON.encode(CheckInRequest(facts: SimulatedDevice.facts(index: 0), installed: [:], agentVersion: "test")),
            as: UTF8.self)
        #expect(
            try status(
                fleet,
                [
                    "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body,
                    front.url + "/v1/devices/edge-x86-vnni-01/checkin"
                ]) == "403")
        let refused = try fleet.runOnce(a, controller: front.url)
        #expect(refused.status != 0)
        #expect(fleet.current(a, model: "m").contentSha == sha)
        // Another device, never seen, checks in through nginx (open access accepts it by id).
        #expect(
            try status(
                fleet,
                [
                    "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body,
                    front.url + "/v1/devices/\(SimulatedDevice.id(prefix: "sim-", index: 0))/checkin"
                ]) == "200")
    }

    /// Mutual TLS in nginx: devices present their certificates to nginx, which verifies them against
    /// the fleet CA and passes them on; the controller, on plain HTTP behind it with
    /// `--trusted-proxy`, enforces access with them. A certificate header a client makes up never
    /// reaches the controller, and a certificate of another CA never gets past nginx.
    @Test func devicesPresentTheirCertificatesToNginxAndTheControllerEnforcesAccessBehindIt() throws {
        guard let nginx = Self.nginxOrSkip() else { return }
        let fleet = try TestFleet()
        defer { fleet.cleanup() }
        try fleet.makePKI(devices: ["dev-a", "dev-b"])
        let keys = try fleet.run("fleetctl", ["keys", "init", "--dir", fleet.dir + "/keys"])
        #expect(keys.status == 0, "\(keys.stderr)")
        fleet.controller = try fleet.start(
            "fleet-controller",
            [
                "serve", "--data", fleet.dir + "/controller", "--listen", "127.0.0.1:\(fleet.port)",
                "--keys", fleet.dir + "/keys/online", "--config", TestFleet.repoRoot + "/fleet",
                "--poll-seconds", "1", "--artifact-accel-redirect", "/_artifacts/",
                "--trusted-proxy", "127.0.0.1"
            ], log: fleet.dir + "/controller.log")
        try fleet.waitFor("the controller behind the proxy") {
            (try? fleet.run("/usr/bin/env", ["curl", "-fsS", fleet.url + "/healthz"], timeout: 10).status) == 0
                && FileManager.default.fileExists(atPath: fleet.adminTokenFile)
        }
        // Access is enforced on the controller's plain HTTP: no token, no operator call.
        #expect(try status(fleet, [fleet.url + "/v1/models"]) == "401")

        let front = try Front(fleet, nginx: nginx, upstreams: [fleet.port], pki: fleet.pki)
        defer { front.stop() }
        func ctl(_ args: [String]) throws -> String {
            let r = try fleet.run(
                "fleetctl", ["--controller", front.url, "--ca", fleet.pki + "/ca.crt", "--token-file", fleet.adminTokenFile] + args)
            guard r.status == 0 else { throw HarnessError("fleetctl \(args.joined(separator: " ")): \(r.stderr)\(r.stdout)") }
            return r.stdout
        }
        let v1 = try fleet.makeFile("v1.safetensors", size: 300_000, seed: 3)
        _ = try ctl(["model", "add", "m"])
        _ = try ctl(["variant", "add", "m", v1, "--name", "m-1", "--dtype", "int8", "--format", "safetensors"])
        _ = try ctl(["release", "create", "m", "--version", "1", "--keys", fleet.dir + "/keys", "--variants", "m-1"])
        _ = try ctl(["rollout", "start", "m@1", "--all"])
        let tokenFile = fleet.dir + "/enroll-dev-a.token"
        _ = try ctl(["devices", "enroll-token", "--device", "dev-a", "--out", tokenFile])

        // The device enrolls and installs through nginx, identified by the certificate nginx verified.
        let a = fleet.agent("dev-a", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let cert = fleet.pki + "/devices/dev-a.crt", key = fleet.pki + "/devices/dev-a.key"
        let tls = ["--device-id", "dev-a", "--ca", fleet.pki + "/ca.crt", "--cert", cert, "--key", key]
        let first = try fleet.runOnce(a, controller: front.url, extra: tls + ["--enroll-token-file", tokenFile])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        let spki = try fleet.run(
            "/usr/bin/env", ["bash", "-c", "openssl x509 -in '\(cert)' -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum"])
        let identities = try JSONDecoder().decode([DeviceIdentityInfo].self, from: Data(try ctl(["--json", "devices", "identities"]).utf8))
        #expect(identities.first { $0.deviceId == "dev-a" }?.fingerprint == String(spki.stdout.prefix(64)))
        #expect(try fleet.runOnce(a, controller: front.url, extra: tls).status == 0)

        // Without a certificate, or with a made-up certificate header, nginx passes nothing on.
        let body = String(
            decoding: try FleetJSON.encode(CheckInRequest(facts: SimulatedDevice.facts(index: 0), installed: [:], agentVersion: "test")),
            as: UTF8.self)
        let checkIn = [
            "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body, "--cacert", fleet.pki + "/ca.crt",
            front.url + "/v1/devices/dev-a/checkin"
        ]
        let answer = fleet.dir + "/answer.json"
        #expect(try status(fleet, checkIn, out: answer) == "401")
        #expect(try String(contentsOfFile: answer, encoding: .utf8).contains("client-certificate-required"))
        let escaped = try String(contentsOfFile: cert, encoding: .utf8).addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        #expect(try status(fleet, ["-H", "X-Client-Cert: \(escaped)", "-H", "X-Client-Verify: SUCCESS"] + checkIn, out: answer) == "401")
        #expect(try String(contentsOfFile: answer, encoding: .utf8).contains("client-certificate-required"))
        // A certificate of another CA is refused by nginx itself.
        let rogue = try status(
            fleet, ["--cert", fleet.rogue + "/devices/rogue-01.crt", "--key", fleet.rogue + "/devices/rogue-01.key"] + checkIn)
        #expect(rogue == "400")
        // Another device's certificate of the fleet CA passes nginx but is not this device's.
        #expect(
            try status(
                fleet, ["--cert", fleet.pki + "/devices/dev-b.crt", "--key", fleet.pki + "/devices/dev-b.key"] + checkIn, out: answer)
                == "403")
        #expect(try String(contentsOfFile: answer, encoding: .utf8).contains("identity-mismatch"))
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
    }
}
