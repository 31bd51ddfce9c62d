import Testing
import FleetCore

/// The strict configuration-file reader both daemons use: what it accepts, what it refuses (with
/// the line), and how the file's keys become flags that the command line overrides.
@Suite struct ConfigFileTests {
    static let schema = ConfigSchema([
        "controller": .string, "poll-seconds": .number, "max-restarts": .integer, "rate-limit": .size,
        "once": .flag, "energy-counter": .list, "labels": .map(flag: "label")
    ])

    func failure(_ text: String, overriddenBy commandLine: [String] = []) -> ConfigFileError? {
        do {
            _ = try ConfigFile.parse(text, source: "agent.yaml").arguments(schema: Self.schema, overriddenBy: commandLine)
            return nil
        } catch {
            return error
        }
    }

    @Test func everyKindOfValueBecomesItsFlag() throws {
        let text = """
            ---
            # the device in hall 3
            controller: "https://ctl.example:8443"   # quoted, with a comment
            poll-seconds: 2.5
            max-restarts: 4
            rate-limit: 2M
            once: true
            energy-counter:
              - /sys/class/powercap/intel-rapl:0/energy_uj
              - '/sys/x y'
            labels:
              site: berlin
              line: "3"

            """
        let args = try ConfigFile.parse(text, source: "agent.yaml").arguments(schema: Self.schema, overriddenBy: [])
        #expect(
            args == [
                "--controller", "https://ctl.example:8443", "--poll-seconds", "2.5", "--max-restarts", "4",
                "--rate-limit", "2M", "--once",
                "--energy-counter", "/sys/class/powercap/intel-rapl:0/energy_uj", "--energy-counter", "/sys/x y",
                "--label", "site=berlin", "--label", "line=3"
            ])
    }

    @Test func flowListsMapsAndFalseFlags() throws {
        let file = try ConfigFile.parse("energy-counter: [a, 'b, c']\nlabels: {site: x, rack: \"7\"}\nonce: false\nlabels2:\n", source: "f")
        #expect(file.entries.map(\.line) == [1, 2, 3, 4])
        #expect(file.entries[0].value == .list(["a", "b, c"]))
        let args = try ConfigFile(source: "f", entries: Array(file.entries.prefix(3))).arguments(schema: Self.schema, overriddenBy: [])
        #expect(args == ["--energy-counter", "a", "--energy-counter", "b, c", "--label", "site=x", "--label", "rack=7"])
    }

    @Test func flagsGivenByHandOverrideTheFile() throws {
        let file = try ConfigFile.parse(
            "controller: http://a\npoll-seconds: 5\nenergy-counter: [x]\nlabels:\n  site: a\n  rack: \"1\"\n", source: "f")
        let args = try file.arguments(
            schema: Self.schema,
            overriddenBy: ["--controller", "http://b", "--poll-seconds=9", "--energy-counter", "y", "--label", "site=b"])
        // What the command line gives is left out of the file's part; other map entries stay.
        #expect(args == ["--label", "rack=1"])
    }

    @Test func unknownKeyIsNamedWithItsLine() {
        let error = failure("controller: http://a\n\n# comment\ncontroler: http://b\n")
        #expect(error?.code == .unknownKey)
        #expect(error?.line == 4)
        #expect(error?.key == "controler")
    }

    @Test func valuesOfTheWrongKindAreRefusedWithTheirLine() {
        func at(_ text: String) -> String? { failure(text).map { "\($0.code.rawValue)@\($0.line):\($0.key ?? "")" } }
        #expect(at("poll-seconds: fast") == "config-bad-value@1:poll-seconds")
        #expect(at("controller: a\nmax-restarts: 2.5") == "config-bad-value@2:max-restarts")
        #expect(at("rate-limit: lots") == "config-bad-value@1:rate-limit")
        #expect(at("once: yes") == "config-bad-value@1:once")
        #expect(at("controller:\n  - a\n  - b") == "config-bad-value@1:controller")
        #expect(at("labels: berlin") == "config-bad-value@1:labels")
        #expect(at("controller: ''") == "config-bad-value@1:controller")
        #expect(at("controller: http://a") == nil)
    }

    @Test func whatTheSubsetDoesNotHaveIsRefusedNotGuessed() {
        func code(_ text: String) -> String? {
            do { _ = try ConfigFile.parse(text, source: "f"); return nil } catch { return "\(error.code.rawValue)@\(error.line)" }
        }
        #expect(code("a: 1\na: 2") == "config-duplicate-key@2")
        #expect(code("labels:\n  site: a\n  site: b") == "config-duplicate-key@3")
        #expect(code("labels:\n\tsite: a") == "config-syntax@2")
        #expect(code("labels:\n  site:\n    deeper: x") == "config-unsupported@2")
        #expect(code("labels:\n  site: a\n    deeper: x") == "config-unsupported@3")
        #expect(code("list:\n  - a: b") == "config-unsupported@2")
        #expect(code("a: &anchor x") == "config-unsupported@1")
        #expect(code("a: *alias") == "config-unsupported@1")
        #expect(code("a: !!str x") == "config-unsupported@1")
        #expect(code("a: |\n  text") == "config-unsupported@1")
        #expect(code("a: \"open") == "config-syntax@1")
        #expect(code("a: [x, [y]]") == "config-unsupported@1")
        #expect(code("  a: 1") == "config-syntax@1")
        #expect(code("- a") == "config-syntax@1")
        #expect(code("a:b") == "config-syntax@1")
        #expect(code("a b: 1") == "config-syntax@1")
        #expect(code("a: x: y") == "config-unsupported@1")
    }

    @Test func commentsAndQuotesAreReadAsYAMLReadsThem() throws {
        let file = try ConfigFile.parse(
            "a: x#not-a-comment\nb: 'it''s # here' # gone\nc: \"tab\\there\"\r\nd: http://h:8080/p\n", source: "f")
        #expect(
            file.entries.map(\.value) == [
                .scalar("x#not-a-comment"), .scalar("it's # here"), .scalar("tab\there"), .scalar("http://h:8080/p")
            ])
    }

    @Test func commandLineGetsTheFileRightAfterTheSubcommand() throws {
        let files = ["/etc/a.yaml": "controller: http://file\n"]
        let expanded = try ConfigFileCommandLine.expand(
            ["run", "--config-file", "/etc/a.yaml", "--once"], subcommand: "run", schema: Self.schema,
            defaultPath: "/etc/default.yaml", exists: { files[$0] != nil }, read: { files[$0] })
        #expect(expanded == ["run", "--controller", "http://file", "--config-file", "/etc/a.yaml", "--once"])
        // No file named and none at the default path: the command line as given.
        #expect(
            try ConfigFileCommandLine.expand(
                ["run", "--once"], subcommand: "run", schema: Self.schema, defaultPath: "/nope",
                exists: { _ in false }, read: { _ in nil }) == ["run", "--once"])
        // Other subcommands are not touched.
        #expect(
            try ConfigFileCommandLine.expand(
                ["hash", "f"], subcommand: "run", schema: Self.schema, defaultPath: "/etc/a.yaml",
                exists: { files[$0] != nil }, read: { files[$0] }) == ["hash", "f"])
        // A file named but unreadable is an error, not silently skipped.
        #expect(throws: ConfigFileError.self) {
            try ConfigFileCommandLine.expand(
                ["run", "--config-file=/missing"], subcommand: "run", schema: Self.schema, defaultPath: "/x",
                exists: { _ in false }, read: { _ in nil })
        }
    }
}
