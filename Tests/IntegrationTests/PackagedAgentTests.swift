import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// The agent and the controller as their units start them: the packaged unit's ExecStart and the
/// packaged configuration, with paths redirected into the test's directory, and sd_notify
/// received on a socket the test makes.
@Suite("Packaged daemons", .serialized, .ownThread)
struct PackagedAgentTests {
    /// The unit's ExecStart as argv, its /usr and /etc paths moved under `root`.
    static func execStart(unit: String, root: String) throws -> [String] {
        let line = try #require(try ShippedPackages.unit(unit)["Service"]?["ExecStart"]?.last)
        return line.split(separator: " ").map { arg in
            let a = String(arg)
            return a.hasPrefix("/usr/") || a.hasPrefix("/etc/") ? root + a : a
        }
    }

    /// The packaged config with `values` put in place of its keys (each must be there, commented
    /// or not) and `extra` lines added.
    static func redirect(config path: String, _ values: [String: String], extra: [String] = []) throws {
        var lines = try String(contentsOfFile: path, encoding: .utf8).components(separatedBy: "\n")
        for (key, value) in values {
            let index = try #require(
                lines.firstIndex { $0.hasPrefix(key + ":") || $0.hasPrefix("# " + key + ":") }, "the packaged config has no \(key):")
            lines[index] = "\(key): \(value)"
        }
        try (lines + extra).joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test func packagedAgentRunsFromItsUnitSpeaksNotifyAndStaysSmall() throws {
        let built = try ShippedPackages.get()
        // Packed relative relocations (make agent) need glibc 2.36; the package says so.
        #expect(try ShippedPackages.field(built.agent, "Depends").contains("libc6 (>= 2.36)"))
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let model = try fleet.makeFile("m.safetensors", size: 24 << 20, seed: 7)
        try fleet.publish(model: "m", version: "1", variants: [("m-int8", "int8", model)])

        let root = fleet.dir + "/root"
        try ShippedPackages.extract(built.agent, into: root)
        let argv = try Self.execStart(unit: root + "/lib/systemd/system/edgefleet-agent.service", root: root)
        #expect(argv.first == root + "/usr/bin/fleet-agent" && argv.dropFirst().first == "run")
        try Self.redirect(
            config: root + "/etc/edgefleet/agent.yaml",
            [
                "controller": fleet.url, "root": fleet.dir + "/keys/root.json",
                "state": root + "/var/lib/edgefleet/state", "models": root + "/var/lib/edgefleet/models"
            ],
            extra: ["facts: " + TestFleet.demoFacts("edge-x86-vnni-01.json"), "poll-seconds: 1"])

        let socket = try NotifySocket(abstract: true)
        let agent = try fleet.start(
            argv[0], Array(argv.dropFirst()), log: fleet.dir + "/agent.log",
            env: ["NOTIFY_SOCKET": socket.address, "WATCHDOG_USEC": "1000000"])
        try socket.waitFor("READY=1", timeout: 60)
        let a = TestFleet.Agent(
            name: "edge-x86-vnni-01", state: root + "/var/lib/edgefleet/state", models: root + "/var/lib/edgefleet/models",
            facts: "")
        try fleet.waitFor("the model installed by the packaged agent", timeout: 120) {
            fleet.current(a, model: "m").contentSha == fleet.sha(model)
        }
        let installing = ShippedPackages.memory(pid: agent.processIdentifier)
        // Idle: ten more watchdog pings (five seconds at WATCHDOG_USEC=1 s), check-ins every second.
        let pings = socket.count("WATCHDOG=1")
        let deadline = Date().addingTimeInterval(60)
        while socket.count("WATCHDOG=1") < pings + 10, Date() < deadline { _ = socket.receive(timeout: 2) }
        #expect(socket.count("WATCHDOG=1") >= pings + 10, "the agent stopped feeding the watchdog")
        let idle = try #require(ShippedPackages.memory(pid: agent.processIdentifier))
        print(
            "footprint: packaged agent idle RSS \(idle.rss / 1024) KiB (anonymous \(idle.anon / 1024) KiB, file-backed \(idle.file / 1024) KiB), "
                + "peak RSS while installing a 24 MiB model \(installing.map { $0.peak / 1024 } ?? 0) KiB")
        #expect(idle.peak <= 64 << 20, "installing RSS \(idle.peak) bytes")
        // What the agent allocates itself stays small; the rest are clean pages of the binary and of
        // libcurl's TLS libraries, those the install used given back once it was over.
        #expect(idle.anon <= 8 << 20, "anonymous RSS \(idle.anon) bytes")
        #expect(idle.rss <= 20 << 20, "idle RSS \(idle.rss) bytes")

        // doctor from the same files finds nothing wrong (plain HTTP is a warning).
        let doctor = try fleet.run(argv[0], ["doctor", "--config-file", root + "/etc/edgefleet/agent.yaml"])
        #expect(doctor.status == 0, "\(doctor.stdout)\(doctor.stderr)")
        #expect(doctor.stdout.contains("ok    root-pinned:") && doctor.stdout.contains("ok    clock-ok:"), "\(doctor.stdout)")

        kill(agent.processIdentifier, SIGTERM)
        try socket.waitFor("STOPPING=1", timeout: 30)
        try fleet.waitFor("the agent to exit", timeout: 60) { !agent.isRunning }
        #expect(agent.terminationReason == .exit && agent.terminationStatus == 0, "\(fleet.log("agent.log"))")
    }

    /// The controller from a config file, a flag overriding one of its keys, READY once it serves.
    @Test func controllerReadsItsConfigFileAndSpeaksNotify() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        _ = try fleet.run("fleetctl", ["keys", "init", "--dir", fleet.dir + "/keys"])
        let config = fleet.dir + "/controller.yaml"
        try """
        data: \(fleet.dir)/controller
        listen: 127.0.0.1:1   # overridden on the command line
        keys: \(fleet.dir)/keys/online
        config: \(TestFleet.repoRoot)/fleet
        poll-seconds: 1
        view-label: site
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = try NotifySocket(abstract: false, directory: fleet.dir)
        let controller = try fleet.start(
            "fleet-controller", ["serve", "--config-file", config, "--listen", "127.0.0.1:\(fleet.port)"],
            log: fleet.dir + "/controller.log", env: ["NOTIFY_SOCKET": socket.address, "WATCHDOG_USEC": "2000000"])
        try socket.waitFor("READY=1", timeout: 120)
        // READY comes once requests are answered.
        #expect(try fleet.run("fleetctl", ["--controller", fleet.url, "status"], timeout: 10).status == 0)
        try socket.waitFor("WATCHDOG=1", timeout: 30)
        kill(controller.processIdentifier, SIGTERM)
        try socket.waitFor("STOPPING=1", timeout: 30)
        try fleet.waitFor("the controller to exit", timeout: 60) { !controller.isRunning }
    }

    @Test func configFileErrorsNameTheKeyAndLine() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        let file = fleet.dir + "/agent.yaml"
        func agent(_ yaml: String, _ extra: [String] = []) throws -> CommandResult {
            try yaml.write(toFile: file, atomically: true, encoding: .utf8)
            return try fleet.run("fleet-agent", ["run", "--config-file", file, "--once"] + extra)
        }
        let unknown = try agent("controller: http://127.0.0.1:1\n# a comment\nstate-dir: /tmp/x\n")
        #expect(unknown.status == 78)
        #expect(unknown.stderr.contains("\(file):3:") && unknown.stderr.contains("[config-unknown-key]"), "\(unknown.stderr)")
        let bad = try agent("controller: http://127.0.0.1:1\nstate: /tmp/s\nmodels: /tmp/m\npoll-seconds: soon\n")
        #expect(bad.status == 78 && bad.stderr.contains("\(file):4:") && bad.stderr.contains("[config-bad-value]"), "\(bad.stderr)")
        let syntax = try agent("labels:\n  site:\n    nested: x\n")
        #expect(syntax.status == 78 && syntax.stderr.contains("[config-unsupported]"), "\(syntax.stderr)")
        // Values the file gives go through run's own validation like flags (ArgumentParser's exit 64).
        let invalid = try agent("controller: ftp://x\nstate: /tmp/s\nmodels: /tmp/m\n")
        #expect(invalid.status == 64, "\(invalid.stderr)")
        #expect(try agent("controller: http://x\nstate: /tmp/s\nmodels: /tmp/m\n", ["--label", "no-equals-sign"]).status == 64)
        let missing = try fleet.run("fleet-agent", ["run", "--config-file", fleet.dir + "/nope.yaml"])
        #expect(missing.status == 78 && missing.stderr.contains("[config-unreadable]"))

        let controllerFile = fleet.dir + "/controller.yaml"
        try "data: /tmp/d\nkeys: /tmp/k\nlisten-address: 1\n".write(toFile: controllerFile, atomically: true, encoding: .utf8)
        let c = try fleet.run("fleet-controller", ["serve", "--config-file", controllerFile])
        #expect(c.status == 78 && c.stderr.contains("\(controllerFile):3:") && c.stderr.contains("[config-unknown-key]"), "\(c.stderr)")
    }

    /// The command line wins over the file: the file names a controller that is not there.
    @Test func flagsOverrideTheConfigFile() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController()
        let a = fleet.agent("edge-x86-avx2-01", facts: TestFleet.demoFacts("edge-x86-avx2-01.json"))
        let file = fleet.dir + "/agent.yaml"
        try """
        controller: http://127.0.0.1:1
        state: \(a.state)
        models: \(a.models)
        root: \(fleet.dir)/keys/root.json
        facts: \(a.facts)
        labels:
          site: berlin
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let fails = try fleet.run("fleet-agent", ["run", "--config-file", file, "--once"])
        #expect(fails.status != 0)
        let works = try fleet.run(
            "fleet-agent", ["run", "--config-file", file, "--once", "--controller", fleet.url, "--label", "site=hamburg"])
        #expect(works.status == 0, "\(works.stderr)")
        #expect(try fleet.fleetctl(["devices", "list"]).contains("edge-x86-avx2-01"))
    }

    /// Everything wrong at once: each problem is reported with its code, and the exit status says so.
    @Test func doctorReportsEachProblemOfABrokenSetup() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try "a file, not a directory".write(toFile: fleet.dir + "/state", atomically: true, encoding: .utf8)
        let file = fleet.dir + "/agent.yaml"
        try """
        controller: http://127.0.0.1:\(try TestFleet.freePort())
        state: \(fleet.dir)/state
        models: \(fleet.dir)/state/models
        root: \(fleet.dir)/missing-root.json
        cert: \(fleet.dir)/missing-device.pem
        key: \(fleet.dir)/missing-device.key
        health-command: /opt/vendor/check-model --quick
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let r = try fleet.run("fleet-agent", ["doctor", "--config-file", file])
        #expect(r.status == 1)
        let failed = Set(
            r.stdout.split(separator: "\n").filter { $0.hasPrefix("FAIL  ") }
                .compactMap { $0.dropFirst(6).split(separator: ":").first.map(String.init) })
        #expect(
            failed == [
                "root-missing", "cert-unreadable", "key-unreadable", "controller-unreachable", "state-not-writable",
                "models-not-writable", "health-command-missing"
            ], "\(r.stdout)")
        #expect(!r.stdout.contains("FAIL  config"))
        #expect(r.stdout.components(separatedBy: "      fix: ").count - 1 >= failed.count)

        try "controller: http://x\nstate: /s\nmodels: /m\nhealth-comand: true\n".write(toFile: file, atomically: true, encoding: .utf8)
        let typo = try fleet.run("fleet-agent", ["doctor", "--config-file", file])
        #expect(typo.status == 1 && typo.stdout.contains("FAIL  config-unknown-key:"), "\(typo.stdout)")
        let none = try fleet.run("fleet-agent", ["doctor", "--config-file", fleet.dir + "/none.yaml"])
        #expect(none.status == 1 && none.stdout.contains("FAIL  config-missing:"))
    }

    /// Every flag of `run` and `serve` (as ArgumentParser lists them) is a key of the config file.
    @Test(arguments: [("fleet-agent", "run"), ("fleet-controller", "serve")])
    func everyFlagHasAConfigKey(tool: String, subcommand: String) throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        let dump = try fleet.run(tool, ["--experimental-dump-help"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
        let subcommands = (json["command"] as? [String: Any])?["subcommands"] as? [[String: Any]] ?? []
        let arguments = try #require(subcommands.first { $0["commandName"] as? String == subcommand }?["arguments"] as? [[String: Any]])
        var lines: [String] = []
        for argument in arguments {
            guard let name = (argument["names"] as? [[String: Any]])?.first(where: { $0["kind"] as? String == "long" })?["name"] as? String,
                !["help", "config-file"].contains(name)
            else { continue }
            switch (name, argument["kind"] as? String) {
            case ("label", _): lines.append("labels:\n  site: x")
            case (_, "flag"): lines.append("\(name): true")
            default: lines.append("\(name): 1")
            }
        }
        #expect(lines.count >= 15)
        let file = fleet.dir + "/all.yaml"
        try lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        // --help: the file was read (no unknown key) and nothing is started.
        let r = try fleet.run(tool, [subcommand, "--config-file", file, "--help"])
        #expect(r.status == 0, "\(r.stderr)")
    }
}
