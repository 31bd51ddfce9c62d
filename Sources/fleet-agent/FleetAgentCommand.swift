import ArgumentParser
import FleetAgent
import FleetCommandLine
import FleetCore
import Logging
import ServiceLifecycle

@main
struct FleetAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet-agent",
        abstract: "The EdgeFleet device agent: checks in, verifies, installs models atomically, reports.",
        subcommands: [Run.self, Doctor.self, Hash.self, Fetch.self])

    /// `run` reads its configuration file first: its keys become flags placed before the ones
    /// given by hand, which therefore win.
    static func main() async { await main(expandingConfigFile: AgentConfigFile.expand) }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the agent loop (or one cycle with --once).")

    @Option(help: "Controller URL, e.g. http://127.0.0.1:8080.") var controller: String
    @Option(help: "State directory: identity, pinned root, install journal, telemetry outbox.") var state: String
    @Option(help: "Models directory: MODEL/<sha256>/ slots and MODEL/current links.") var models: String
    @Option(help: "JSON facts file that replaces the hardware probe (tests, simulation).") var facts: String?
    @Option(help: "root.json to pin on the first run (from `fleetctl keys init`).") var root: String?
    @Option(help: "Device id to use on the first run (default: from the facts file, else generated).") var deviceId: String?
    @Option(help: "Seconds between check-ins, jittered ±20% (default: what the controller asks for).") var pollSeconds: Double?
    @Option(help: "Shell command that checks a newly activated model; exit 0 means healthy.") var healthCommand: String?
    @Option(help: "Seconds the health command may take.") var healthTimeout: Double = 30
    @Option(help: "Download rate limit in bytes per second (suffixes K, M allowed).") var rateLimit: String?
    @Option(
        help:
            "Restarts of the agent in one unfinished install phase (a crash during activation or the health check) after which the install is rolled back and not tried again."
    )
    var maxRestarts: Int = 3
    @Option(
        help:
            "The operator's benchmark, run on each staged model before it goes live (EDGEFLEET_MODEL_PATH set); it prints JSON: latencyP50Ms, latencyP95Ms, iterations, peakMemoryBytes, joulesPerInference."
    )
    var benchmarkCommand: String?
    @Option(help: "Seconds the benchmark command may take.") var benchmarkTimeout: Double = 120
    @Option(
        help:
            "An energy counter in microjoules (repeatable) read around the benchmark (default: the RAPL domains under /sys/class/powercap)."
    )
    var energyCounter: [String] = []
    @Flag(help: "Do one check-in cycle (finishing any install it starts) and exit.") var once = false
    @Option(help: "Where the local inference service reports runtime metrics: 127.0.0.1:PORT, [::1]:PORT or unix:/PATH (loopback only).")
    var metricsListen: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: String = "info"
    @Option(
        name: .customLong("label"),
        help:
            "A label of this device, KEY=VALUE (repeatable; the config file's `labels:` map). Labels bound by the enrollment token or set by the operator take precedence."
    )
    var labels: [String] = []
    @Option(
        help:
            "YAML file with any of these options by their flag names (labels: as a map); flags given here override it. Default: \(AgentConfigFile.defaultPath) when it exists."
    )
    var configFile: String?
    @Option(
        help:
            "Seconds a new agent binary (an agent release) has, from the hand-over, to check in; otherwise the previous binary is restored."
    )
    var selfUpdateDeadline: Int = 300
    @Flag(help: "Do not install agent releases: this agent does not advertise the self-update capability.") var noSelfUpdate = false
    @OptionGroup var identity: AgentIdentityOptions

    func validate() throws {
        for label in labels where AgentConfigFile.labels([label]) == nil {
            throw ValidationError("--label '\(label)' must be KEY=VALUE")
        }
        guard controller.hasPrefix("http://") || controller.hasPrefix("https://") else {
            throw ValidationError("--controller must be an http:// or https:// URL")
        }
        if let pollSeconds { guard pollSeconds > 0 else { throw ValidationError("--poll-seconds must be positive") } }
        guard healthTimeout > 0 else { throw ValidationError("--health-timeout must be positive") }
        guard (1...100).contains(maxRestarts) else { throw ValidationError("--max-restarts must be 1 to 100") }
        guard (5...86_400).contains(selfUpdateDeadline) else { throw ValidationError("--self-update-deadline must be 5 to 86400 seconds") }
        guard benchmarkTimeout > 0 else { throw ValidationError("--benchmark-timeout must be positive") }
        if let rateLimit {
            guard let v = ByteCount.parse(rateLimit), v > 0 else { throw ValidationError("--rate-limit '\(rateLimit)' is not a rate") }
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level '\(logLevel)' is not a log level") }
        if let deviceId { guard Name.isValid(deviceId) else { throw ValidationError("--device-id '\(deviceId)' is not a valid name") } }
        if let metricsListen, MetricsListenAddress.parse(metricsListen) == nil {
            throw ValidationError("--metrics-listen '\(metricsListen)' is not a loopback HOST:PORT or unix:/ABSOLUTE/PATH")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "edgefleet.agent")
        // Before anything else: the committed or trial agent binary takes over from here (exec,
        // same process id), or a trial whose binary did not make it is given up.
        let onTrial = noSelfUpdate ? nil : AgentLauncher(stateDirectory: state, logger: logger).start()
        var url = controller
        while url.hasSuffix("/") { url.removeLast() }
        var options = AgentOptions(
            controllerURL: url, stateDirectory: state, modelsDirectory: models, factsFile: facts, rootFile: root,
            deviceId: deviceId, pollSeconds: pollSeconds, healthCommand: healthCommand,
            healthTimeoutSeconds: healthTimeout, rateLimitBytesPerSecond: rateLimit.flatMap(ByteCount.parse), once: once,
            metricsListen: metricsListen.flatMap(MetricsListenAddress.parse))
        options.tls = identity.tls
        options.maxRestarts = maxRestarts
        options.benchmarkCommand = benchmarkCommand
        options.benchmarkTimeoutSeconds = benchmarkTimeout
        options.energyCounters = energyCounter.isEmpty ? nil : energyCounter
        options.enrollToken = try identity.enrollToken()
        options.labels = AgentConfigFile.labels(labels) ?? [:]
        options.selfUpdateDeadlineSeconds = Int64(selfUpdateDeadline)
        options.selfUpdate = !noSelfUpdate
        options.onTrial = onTrial
        let agent: Agent
        do {
            agent = try Agent(options: options, logger: logger)
        } catch {
            logger.critical("agent cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(2)
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(
                service: AgentService(agent: agent, options: options, logger: logger), successTerminationBehavior: .gracefullyShutdownGroup)
        ]
        // A daemon gives back, after start-up and after each install, the pages it no longer uses.
        if !once { services.append(.init(service: IdlePageRelease(logger: logger), successTerminationBehavior: .ignore)) }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch {
            logger.error("agent exited with an error", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }
}

struct Hash: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the SHA-256 of a file as the agent verifies it.")
    @Argument(help: "File to hash.") var file: String
    func run() throws {
        let (sha, size) = try AgentTools.hash(file)
        print("\(sha)  \(size)  \(file)")
    }
}

struct Fetch: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Download a URL with the agent's resumable downloader.")
    @Argument(help: "URL to fetch.") var url: String
    @Option(help: "Output file; an existing partial file is resumed.") var out: String
    @Option(help: "Largest size accepted (suffixes K, M, G allowed).") var maxSize: String = "8G"
    @Option(help: "Rate limit in bytes per second.") var rateLimit: String?
    func validate() throws {
        guard ByteCount.parse(maxSize) != nil else { throw ValidationError("--max-size '\(maxSize)' is not a size") }
    }
    func run() throws {
        let r = try AgentTools.fetch(url, to: out, maxBytes: ByteCount.parse(maxSize)!, rateLimit: rateLimit.flatMap(ByteCount.parse))
        print("received \(r.bytesReceived) bytes (resumed from \(r.resumedFrom)), file \(r.fileSize) bytes, \(r.seconds) s")
    }
}
