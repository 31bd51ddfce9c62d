import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// A controller serving mutual TLS with enforced access, a development PKI made by
/// certs/gen-dev-pki.sh in the test's own directory, and agents with client certificates.
extension TestFleet {
    var pki: String { dir + "/pki" }
    var rogue: String { dir + "/rogue-pki" }
    var secureURL: String { "https://127.0.0.1:\(port)" }
    var adminTokenFile: String { dir + "/controller/admin.token" }

    func makePKI(devices: [String]) throws {
        for (out, ids) in [(pki, devices), (rogue, ["rogue-01"])] {
            let r = try run("/usr/bin/env", ["bash", Self.repoRoot + "/certs/gen-dev-pki.sh", out] + ids)
            guard r.status == 0 else { throw HarnessError("gen-dev-pki.sh: \(r.stderr)") }
        }
    }

    func startSecureController(extra: [String] = []) throws {
        if !FileManager.default.fileExists(atPath: dir + "/keys/root.json") {
            let r = try run("fleetctl", ["keys", "init", "--dir", dir + "/keys"])
            guard r.status == 0 else { throw HarnessError("keys init: \(r.stderr)") }
        }
        controller = try start(
            "fleet-controller",
            [
                "serve", "--data", dir + "/controller", "--listen", "127.0.0.1:\(port)",
                "--keys", dir + "/keys/online", "--config", Self.repoRoot + "/fleet", "--poll-seconds", "1",
                "--tls-cert", pki + "/controller.crt", "--tls-key", pki + "/controller.key",
                "--client-ca", pki + "/ca.crt"
            ] + extra, log: dir + "/controller.log")
        try waitFor("controller over TLS") {
            (try? run("/usr/bin/env", ["curl", "-fsS", "--cacert", pki + "/ca.crt", secureURL + "/healthz"], timeout: 10).status) == 0
                && FileManager.default.fileExists(atPath: adminTokenFile)
        }
    }

    /// fleetctl against the TLS controller with a token file (the bootstrap admin's by default).
    @discardableResult
    func ctl(_ args: [String], tokenFile: String? = nil, ca: String? = nil) throws -> CommandResult {
        try run("fleetctl", ["--controller", secureURL, "--ca", ca ?? pki + "/ca.crt", "--token-file", tokenFile ?? adminTokenFile] + args)
    }

    func ctlOK(_ args: [String]) throws -> String {
        let r = try ctl(args)
        guard r.status == 0 else { throw HarnessError("fleetctl \(args.joined(separator: " ")) failed: \(r.stderr)\(r.stdout)") }
        return r.stdout
    }

    func securePublish(model: String, version: String, file: String, addModel: Bool) throws {
        if addModel { _ = try ctlOK(["model", "add", model]) }
        _ = try ctlOK(["variant", "add", model, file, "--name", "\(model)-\(version)", "--dtype", "int8", "--format", "safetensors"])
        _ = try ctlOK(["release", "create", model, "--version", version, "--keys", dir + "/keys", "--variants", "\(model)-\(version)"])
        _ = try ctlOK(["rollout", "start", "\(model)@\(version)", "--all"])
    }

    func enrollmentTokenFile(for device: String) throws -> String {
        let file = dir + "/enroll-\(device)-\(UUID().uuidString.prefix(6)).token"
        _ = try ctlOK(["devices", "enroll-token", "--device", device, "--out", file])
        return file
    }

    /// One agent cycle over mutual TLS with the device's certificate (or `cert`/`key`/`ca` instead).
    @discardableResult
    func secureOnce(
        _ a: Agent, id: String, cert: String? = nil, key: String? = nil, ca: String? = nil, noCert: Bool = false,
        enrollToken: String? = nil
    ) throws -> CommandResult {
        var extra = ["--once", "--device-id", id, "--ca", ca ?? pki + "/ca.crt"]
        if !noCert { extra += ["--cert", cert ?? "\(pki)/devices/\(id).crt", "--key", key ?? "\(pki)/devices/\(id).key"] }
        if let enrollToken { extra += ["--enroll-token-file", enrollToken] }
        return try run("fleet-agent", agentArgs(a, controller: secureURL, extra: extra))
    }

    /// The bytes a device trusts and runs: trust.json and every entry under models/ (symlink
    /// targets and file digests). Equal snapshots mean nothing the device relies on changed.
    func deviceSnapshot(_ a: Agent) -> [String: String] {
        var out: [String: String] = ["trust.json": sha(a.state + "/trust.json")]
        let fm = FileManager.default
        guard let walker = fm.enumerator(atPath: a.models) else { return out }
        while let rel = walker.nextObject() as? String {
            let path = a.models + "/" + rel
            if let target = try? fm.destinationOfSymbolicLink(atPath: path) {
                out[rel] = "link:" + target
            } else {
                var isDir: ObjCBool = false
                _ = fm.fileExists(atPath: path, isDirectory: &isDir)
                out[rel] = isDir.boolValue ? "dir" : sha(path)
            }
        }
        return out
    }

    func identities() throws -> [DeviceIdentityInfo] {
        try JSONDecoder().decode([DeviceIdentityInfo].self, from: Data(try ctlOK(["--json", "devices", "identities"]).utf8))
    }
}

@Suite("Mutual TLS, enrollment and access with real binaries", .serialized, .ownThread)
struct TLSTests {
    /// A secure fleet in which device `dev-a` enrolled and runs release 1 of model m.
    func fleetWithEnrolledDevice(extraDevices: [String] = []) throws -> (TestFleet, TestFleet.Agent, String) {
        let fleet = try TestFleet()
        try fleet.makePKI(devices: ["dev-a", "expired:dev-a"] + extraDevices)
        try fleet.startSecureController()
        let v1 = try fleet.makeFile("v1.safetensors", size: 300_000, seed: 1)
        try fleet.securePublish(model: "m", version: "1", file: v1, addModel: true)
        let a = fleet.agent("dev-a", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let r = try fleet.secureOnce(a, id: "dev-a", enrollToken: try fleet.enrollmentTokenFile(for: "dev-a"))
        #expect(r.status == 0, "first cycle: \(r.stderr)")
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        return (fleet, a, v1)
    }

    @Test func deviceEnrollsWithAOneTimeTokenAndInstallsOverMutualTLS() throws {
        let (fleet, a, v1) = try fleetWithEnrolledDevice(extraDevices: ["dev-b", "dev-c"])
        defer { fleet.cleanup() }
        let ids = try fleet.identities()
        #expect(ids.map(\.deviceId) == ["dev-a"])
        #expect(ids.first?.status == .accepted)
        #expect(ids.first?.fingerprint?.count == 64)
        // Later cycles need no token: the certificate is the identity.
        #expect(try fleet.secureOnce(a, id: "dev-a").status == 0)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))

        // A token is spent by its first device: another device cannot enroll with it.
        // It binds region=eu-west; dev-b says region=us-east of itself, and the token's label stands.
        let token = fleet.dir + "/any-device.token"
        _ = try fleet.ctlOK(["devices", "enroll-token", "--out", token, "--label", "region=eu-west"])
        var bFacts = try JSONDecoder().decode(
            DeviceFacts.self, from: Data(contentsOf: URL(fileURLWithPath: TestFleet.demoFacts("edge-x86-vnni-01.json"))))
        bFacts.deviceId = nil
        bFacts.labels = ["region": "us-east", "site": "lab"]
        try FleetJSON.encode(bFacts).write(to: URL(fileURLWithPath: fleet.dir + "/dev-b.facts.json"))
        let b = fleet.agent("dev-b", facts: fleet.dir + "/dev-b.facts.json")
        #expect(try fleet.secureOnce(b, id: "dev-b", enrollToken: token).status == 0)
        let eu = try JSONDecoder().decode(
            [DeviceInfo].self, from: Data(try fleet.ctlOK(["--json", "devices", "list", "--selector", "region=eu-west"]).utf8))
        #expect(eu.map(\.id) == ["dev-b"])
        #expect(eu.first?.labels == ["region": "eu-west", "site": "lab"])
        #expect(eu.first?.labelSources == ["region": "enrollment", "site": "agent"])
        // The operator outranks both.
        _ = try fleet.ctlOK(["devices", "label", "dev-b", "region=eu-north"])
        #expect(try fleet.secureOnce(b, id: "dev-b").status == 0)
        let labelled = try JSONDecoder().decode(
            [DeviceInfo].self, from: Data(try fleet.ctlOK(["--json", "devices", "list", "--selector", "region=eu-north"]).utf8))
        #expect(labelled.first?.labelSources?["region"] == "operator")
        #expect(try fleet.ctl(["devices", "label", "dev-b", "class=fast"]).status != 0)
        let c = fleet.agent("dev-c", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let reuse = try fleet.secureOnce(c, id: "dev-c", enrollToken: token)
        #expect(reuse.status != 0)
        #expect(reuse.stderr.contains("enrollment-token-used"), "\(reuse.stderr)")
        #expect(reuse.stderr.contains("unknown-device-identity"), "\(reuse.stderr)")
        #expect(try fleet.identities().map(\.deviceId) == ["dev-a", "dev-b"])
        // dev-b with its state wiped and the spent token: its certificate is still its identity.
        try FileManager.default.removeItem(atPath: b.state)
        #expect(try fleet.secureOnce(b, id: "dev-b", enrollToken: token).status == 0)
        #expect(fleet.current(b, model: "m").contentSha == fleet.sha(v1))
    }

    @Test func revokedDeviceGetsNothingAndKeepsWhatItRuns() throws {
        let (fleet, a, v1) = try fleetWithEnrolledDevice()
        defer { fleet.cleanup() }
        _ = try fleet.ctlOK(["devices", "revoke", "dev-a"])
        let v2 = try fleet.makeFile("v2.safetensors", size: 300_000, seed: 2)
        try fleet.securePublish(model: "m", version: "2", file: v2, addModel: false)
        let before = fleet.deviceSnapshot(a)

        let r = try fleet.secureOnce(a, id: "dev-a")
        #expect(r.status != 0)
        #expect(r.stderr.contains("device-revoked"), "\(r.stderr)")
        #expect(fleet.deviceSnapshot(a) == before)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        // Not even the artifact it could name: the controller refuses a revoked certificate.
        let curl = try fleet.run(
            "/usr/bin/env",
            [
                "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", fleet.pki + "/ca.crt",
                "--cert", fleet.pki + "/devices/dev-a.crt", "--key", fleet.pki + "/devices/dev-a.key",
                fleet.secureURL + "/v1/artifacts/" + fleet.sha(v2)
            ])
        #expect(curl.stdout == "403")
        #expect(try fleet.identities().first?.status == .revoked)
        // Back only through a new enrollment token, which the operator hands out on purpose.
        #expect(try fleet.secureOnce(a, id: "dev-a", enrollToken: try fleet.enrollmentTokenFile(for: "dev-a")).status == 0)
        #expect(try fleet.identities().first?.status == .accepted)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v2))
    }

    @Test func expiredDeviceCertificateIsRefusedAndTheDeviceIsUnchanged() throws {
        let (fleet, a, v1) = try fleetWithEnrolledDevice()
        defer { fleet.cleanup() }
        let v2 = try fleet.makeFile("v2.safetensors", size: 300_000, seed: 2)
        try fleet.securePublish(model: "m", version: "2", file: v2, addModel: false)
        let before = fleet.deviceSnapshot(a)

        // The device's own key, with its certificate run out: the TLS handshake fails.
        let r = try fleet.secureOnce(a, id: "dev-a", cert: fleet.pki + "/devices/dev-a-expired.crt")
        #expect(r.status != 0)
        #expect(r.stderr.contains("certificate expired"), "\(r.stderr)")
        #expect(fleet.deviceSnapshot(a) == before)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        // With a valid certificate for the same key the device goes on.
        #expect(try fleet.secureOnce(a, id: "dev-a").status == 0)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v2))
    }

    @Test func operatorTokenWithoutTheNeededRoleChangesNothing() throws {
        let (fleet, a, v1) = try fleetWithEnrolledDevice()
        defer { fleet.cleanup() }
        let viewer = fleet.dir + "/viewer.token"
        _ = try fleet.ctlOK(["tokens", "create", "--name", "dashboard", "--role", "viewer", "--out", viewer])
        let v2 = try fleet.makeFile("v2.safetensors", size: 300_000, seed: 2)
        _ = try fleet.ctlOK(["variant", "add", "m", v2, "--name", "m-2", "--dtype", "int8", "--format", "safetensors"])
        _ = try fleet.ctlOK(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-2"])
        let before = fleet.deviceSnapshot(a)

        let refused = try fleet.ctl(["rollout", "start", "m@2", "--all"], tokenFile: viewer)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("insufficient-role"))
        #expect(try fleet.secureOnce(a, id: "dev-a").status == 0)
        #expect(fleet.deviceSnapshot(a) == before)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v1))
        // The viewer can read, and the refusal is in the audit log with its name.
        #expect(try fleet.ctl(["devices", "list"], tokenFile: viewer).status == 0)
        let audit = try JSONDecoder().decode([AuditRecord].self, from: Data(try fleet.ctlOK(["--json", "audit", "--limit", "5"]).utf8))
        #expect(
            audit.first.map { "\($0.actor) \($0.method) \($0.path) \($0.status) \($0.outcome)" }
                == "token:dashboard POST /v1/rollouts 403 denied")
    }

    @Test func agentWithoutAClientCertificateIsRejected() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.makePKI(devices: ["dev-a"])
        try fleet.startSecureController()
        let a = fleet.agent("dev-a", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let r = try fleet.secureOnce(a, id: "dev-a", noCert: true, enrollToken: try fleet.enrollmentTokenFile(for: "dev-a"))
        #expect(r.status != 0)
        #expect(r.stderr.contains("client-certificate-required"), "\(r.stderr)")
        #expect(try fleet.identities().isEmpty)
        let devices = try JSONDecoder().decode([DeviceInfo].self, from: Data(try fleet.ctlOK(["--json", "devices", "list"]).utf8))
        #expect(devices.isEmpty)
    }

    @Test func certificatesOfAnotherCAAreRejectedBothWays() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.makePKI(devices: ["dev-a"])
        try fleet.startSecureController()
        let token = try fleet.enrollmentTokenFile(for: "rogue-01")
        // A client certificate from another CA: the controller ends the handshake.
        let a = fleet.agent("rogue-01", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let r = try fleet.secureOnce(
            a, id: "rogue-01", cert: fleet.rogue + "/devices/rogue-01.crt", key: fleet.rogue + "/devices/rogue-01.key",
            enrollToken: token)
        #expect(r.status != 0)
        #expect(r.stderr.contains("unknown ca"), "\(r.stderr)")
        // An agent that pins another CA does not talk to this controller, with a good certificate.
        let b = fleet.agent("dev-a", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let pinned = try fleet.secureOnce(
            b, id: "dev-a", ca: fleet.rogue + "/ca.crt", enrollToken: try fleet.enrollmentTokenFile(for: "dev-a"))
        #expect(pinned.status != 0)
        #expect(pinned.stderr.contains("tls:"), "\(pinned.stderr)")
        // Nor does fleetctl.
        #expect(try fleet.ctl(["devices", "list"], ca: fleet.rogue + "/ca.crt").status != 0)
        #expect(try fleet.identities().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: b.state + "/enrollment.json"))
    }

    @Test func agentFollowsARootRotationAndInstallsTheNextRelease() throws {
        let (fleet, a, _) = try fleetWithEnrolledDevice()
        defer { fleet.cleanup() }
        try FileManager.default.copyItem(atPath: fleet.dir + "/keys/root.json", toPath: fleet.dir + "/root-v1.json")
        let out = try fleet.ctlOK(["keys", "rotate-root", "--dir", fleet.dir + "/keys"])
        #expect(out.contains("root version 2"))
        #expect(FileManager.default.fileExists(atPath: fleet.dir + "/keys/offline/root.v1.key"))
        #expect(try fleet.secureOnce(a, id: "dev-a").status == 0)
        let trust = try JSONDecoder().decode(TrustedState.self, from: FileManager.default.contents(atPath: a.state + "/trust.json")!)
        #expect(trust.root.version == 2)
        let v2 = try fleet.makeFile("v2.safetensors", size: 300_000, seed: 2)
        try fleet.securePublish(model: "m", version: "2", file: v2, addModel: false)
        #expect(try fleet.secureOnce(a, id: "dev-a").status == 0)
        #expect(fleet.current(a, model: "m").contentSha == fleet.sha(v2))
        // A controller restarted on the same data serves the rotated root; a new agent pinning
        // the first root follows it too.
        fleet.stop()
        try fleet.startSecureController()
        let other = fleet.agent("dev-b", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        _ = try fleet.run("/usr/bin/env", ["bash", TestFleet.repoRoot + "/certs/gen-dev-pki.sh", fleet.pki, "dev-b"])
        var args = fleet.agentArgs(
            other, controller: fleet.secureURL,
            extra: [
                "--once", "--device-id", "dev-b", "--ca", fleet.pki + "/ca.crt",
                "--cert", fleet.pki + "/devices/dev-b.crt", "--key", fleet.pki + "/devices/dev-b.key",
                "--enroll-token-file", try fleet.enrollmentTokenFile(for: "dev-b")
            ])
        if let i = args.firstIndex(of: "--root") { args[i + 1] = fleet.dir + "/root-v1.json" }
        #expect(try fleet.run("fleet-agent", args).status == 0)
        #expect(fleet.current(other, model: "m").contentSha == fleet.sha(v2))
    }

    @Test func plainHTTPOffLoopbackNeedsInsecureDevAndTLSFlagsGoTogether() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        let base = ["serve", "--data", fleet.dir + "/controller", "--keys", fleet.dir + "/keys/online"]
        let open = try fleet.run("fleet-controller", base + ["--listen", "0.0.0.0:\(fleet.port)"])
        #expect(open.status == 64)  // ArgumentParser's validation failure, before anything is opened
        #expect(open.stderr.contains("--insecure-dev"))
        let half = try fleet.run("fleet-controller", base + ["--listen", "127.0.0.1:\(fleet.port)", "--tls-cert", "x.crt"])
        #expect(half.status == 64)
        // Behind a TLS proxy: a malformed proxy address, or a proxy beside the controller's own TLS
        // or beside open access, is refused before anything is opened.
        for extra in [
            ["--trusted-proxy", "10.0.0.0/33"], ["--trusted-proxy", "nginx"],
            ["--trusted-proxy", "127.0.0.1", "--tls-cert", "x.crt", "--tls-key", "x.key", "--client-ca", "ca.crt"],
            ["--trusted-proxy", "127.0.0.1", "--insecure-dev"]
        ] {
            let r = try fleet.run("fleet-controller", base + ["--listen", "0.0.0.0:\(fleet.port)"] + extra)
            #expect(r.status == 64, "\(extra): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: fleet.dir + "/controller"))
    }

    @Test func overLimitRequestsGet4xxAndTheControllerStaysUp() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.makePKI(devices: ["dev-a"])
        try fleet.startSecureController(extra: ["--checkin-burst", "2", "--checkins-per-minute", "1"])
        let a = fleet.agent("dev-a", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        #expect(try fleet.secureOnce(a, id: "dev-a", enrollToken: try fleet.enrollmentTokenFile(for: "dev-a")).status == 0)
        #expect(try fleet.secureOnce(a, id: "dev-a").status == 0)
        let third = try fleet.secureOnce(a, id: "dev-a")  // third check-in within the minute
        #expect(third.status != 0)
        #expect(third.stderr.contains("rate-limited"), "\(third.stderr)")

        func curl(_ args: [String]) throws -> String {
            try fleet.run(
                "/usr/bin/env",
                [
                    "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", fleet.pki + "/ca.crt",
                    "--cert", fleet.pki + "/devices/dev-a.crt", "--key", fleet.pki + "/devices/dev-a.key"
                ] + args
            ).stdout
        }
        #expect(
            try curl([
                "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "{}",
                fleet.secureURL + "/v1/devices/dev-a/checkin"
            ]) == "429")
        let big = try fleet.makeFile("big.json", size: 2 << 20, seed: 3)
        #expect(
            try curl([
                "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + big,
                fleet.secureURL + "/v1/devices/dev-a/events"
            ]) == "413")
        #expect(
            try curl([
                "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + big,
                fleet.secureURL + "/v1/enroll"
            ]) == "413")
        #expect(try curl([fleet.secureURL + "/healthz"]) == "200")
        #expect(fleet.controller?.isRunning == true)
    }
}
