import ArgumentParser
import FleetCommandLine
import FleetController
import Foundation
import Logging
import NIOCore

@main
struct FleetControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet-controller",
        abstract: "The EdgeFleet controller: HTTP API, director, artifact store.",
        subcommands: [Serve.self, MigrateCommand.self, SeedDevicesCommand.self, TokenCommand.self, BenchGates.self])

    /// `serve` reads its configuration file first: its keys become flags placed before the ones
    /// given by hand, which therefore win.
    static func main() async { await main(expandingConfigFile: ControllerConfigFile.expand) }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the controller API until SIGTERM.")

    @Option(help: "Directory for the SQLite database and the artifact store.")
    var data: String

    @Option(help: "Address to listen on, HOST:PORT.")
    var listen: String = "127.0.0.1:8080"

    @Option(help: "Directory with the online keys (director.key, timestamp.key) and root.json, from `fleetctl keys init`.")
    var keys: String

    @Option(help: "Directory with hardware-classes.yaml and bandwidth-tiers.yaml.")
    var config: String = "fleet"

    @Option(
        help:
            "Base URL put into assignments for artifact downloads (a CDN or cache in front of the controller). Default: the controller itself."
    )
    var artifactBaseUrl: String?

    @Option(help: "Seconds agents wait between check-ins.")
    var pollSeconds: Int = 30

    @Option(
        help:
            "Devices of a hardware class that must have measured a variant (benchmark or runtime metrics) before selection ranks it by the fleet's figures instead of the class's format order."
    )
    var measuredDevices: Int = 3

    @Option(help: "Largest artifact accepted for upload, in bytes (suffixes K, M, G allowed).")
    var maxArtifactSize: String = "8G"

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    @Option(
        help:
            "Command that measures variants built on the controller, run as CMD BASE VARIANT (default: $EDGEFLEET_EVALUATOR, else .venv/bin/python scripts/evaluate-variant.py when present)."
    )
    var evaluator: String?

    @Option(
        help:
            "Time between passes that hash every stored artifact again and quarantine the corrupt ones: seconds, or a number with s, m, h or d; 0 or off: no periodic pass."
    )
    var scrubInterval: String = "6h"

    @OptionGroup var database: DatabaseOptions

    @Flag(
        help:
            "Refuse to start unless the database's schema is this build's already (run `fleet-controller migrate` first). Default: migrate at start, under the migration lock."
    )
    var noMigrate = false

    @Option(help: "This replica's name in the leader lease and the logs (default: HOST:PID).")
    var replica: String?
    @Option(
        help:
            "Behind nginx (deploy/nginx/): answer artifact downloads with X-Accel-Redirect to this internal location (e.g. /_artifacts/, aliasing DATA/artifacts/sha256/) after the access check, and let nginx send the bytes."
    )
    var artifactAccelRedirect: String?

    @Option(help: "A label key (e.g. site) the dashboard and /metrics break devices down by: its most common values and \"other\".")
    var viewLabel: String?

    @Option(
        help:
            "Threads that carry HTTP and PostgreSQL connections (event loops; default: one per core). Replicas that share a machine's cores may do better with fewer each."
    )
    var eventLoops: Int?

    @Option(
        help:
            "YAML file with any of these options by their flag names; flags given here override it. Default: \(ControllerConfigFile.defaultPath) when it exists."
    )
    var configFile: String?

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        if let viewLabel {
            guard !viewLabel.isEmpty, !viewLabel.contains(where: { $0.isWhitespace || $0 == "=" }) else {
                throw ValidationError("--view-label '\(viewLabel)' is not a label key")
            }
        }
        try database.validate()
        if let eventLoops, !(1...256).contains(eventLoops) { throw ValidationError("--event-loops must be 1…256, got \(eventLoops)") }
        guard parseListen() != nil else { throw ValidationError("--listen must be HOST:PORT with a port from 1 to 65535, got '\(listen)'") }
        try security.validate(host: parseListen()!.0)
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level '\(logLevel)' is not a log level") }
        guard pollSeconds >= 1 else { throw ValidationError("--poll-seconds must be at least 1") }
        guard measuredDevices >= 1 else { throw ValidationError("--measured-devices must be at least 1") }
        guard parseSize(maxArtifactSize) != nil else { throw ValidationError("--max-artifact-size '\(maxArtifactSize)' is not a size") }
        if let a = artifactAccelRedirect, !a.hasPrefix("/") || a.contains("..") || a.contains(where: { $0.isWhitespace || $0.isNewline }) {
            throw ValidationError("--artifact-accel-redirect must be a path like /_artifacts/, got '\(a)'")
        }
        guard ScrubInterval.seconds(scrubInterval) != nil else {
            throw ValidationError("--scrub-interval '\(scrubInterval)' is not a duration (e.g. 6h, 30m, 0)")
        }
    }

    func parseListen() -> (String, Int)? {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        let host = String(listen[..<colon])
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    func parseSize(_ s: String) -> Int64? { SizeParser.parse(s) }

    /// The default evaluator shipped in the repository: scripts/evaluate-variant.py in .venv, when both exist.
    static func shippedEvaluator() -> String? {
        let cwd = FileManager.default.currentDirectoryPath
        let python = cwd + "/.venv/bin/python", script = cwd + "/scripts/evaluate-variant.py"
        guard FileManager.default.isExecutableFile(atPath: python), FileManager.default.fileExists(atPath: script) else { return nil }
        return "'\(python)' '\(script)'"
    }

    func run() async throws {
        // Before anything opens a connection: the shared event loops are made at first use.
        if let eventLoops { NIOSingletons.groupLoopCountSuggestion = eventLoops }
        var logger = Logger(label: "edgefleet.controller")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let (host, port) = parseListen()!
        var options = ControllerOptions(
            dataDirectory: data, host: host, port: port, keysDirectory: keys, configDirectory: config,
            artifactBaseURL: artifactBaseUrl, maxArtifactBytes: parseSize(maxArtifactSize)!,
            pollSeconds: pollSeconds)
        options.tls = security.tls
        options.minMeasuredDevices = measuredDevices
        options.evaluator = evaluator ?? options.evaluator ?? Self.shippedEvaluator()
        if options.evaluator == nil {
            logger.warning(
                "no variant evaluator: variants built here are unmeasured, and a model's quality floor refuses them (pass --evaluator, or run `make venv`)"
            )
        }
        options.access = security.access
        options.scrubIntervalSeconds = ScrubInterval.seconds(scrubInterval)
        options.databaseURL = database.database
        options.migrate = !noMigrate
        if let replica { options.replicaName = replica }
        options.artifactAccelRedirect = artifactAccelRedirect
        options.viewLabel = viewLabel
        do {
            try await Controller.serve(options: options, logger: logger)
        } catch {
            logger.critical("controller stopped", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }
}
