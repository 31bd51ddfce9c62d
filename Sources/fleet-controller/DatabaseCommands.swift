import ArgumentParser
import FleetController
import Foundation
import Logging

/// Where the controller keeps its state: the data directory's SQLite file, or PostgreSQL.
struct DatabaseOptions: ParsableArguments {
    @Option(
        help:
            "PostgreSQL shared by controller replicas: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?pool=N]. Default: the SQLite file in the data directory (one box)."
    )
    var database: String?

    func validate() throws {
        if let database, !(database.hasPrefix("postgres://") || database.hasPrefix("postgresql://")) {
            throw ValidationError("--database must be a postgres:// URL, got '\(database)'")
        }
    }
}

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Bring the database's schema up to this build's, once, under a lock that concurrent runs wait for.",
        discussion: "A database whose schema is newer than this build is refused and left unchanged.")

    @Option(help: "The controller's data directory (its SQLite file, when no --database is given).")
    var data: String = "."

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        do {
            print(
                try await Controller.migrate(
                    databaseURL: database.database, dataDirectory: data, logger: Logger(label: "edgefleet.migrate")))
        } catch {
            FileHandle.standardError.write(Data("fleet-controller migrate: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct SeedDevicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed-devices",
        abstract:
            "Write a simulated fleet into the database for a scale run: the devices fleet-sim plays, classified as check-ins would be.",
        discussion:
            "Device i is PREFIX followed by i zero-padded to 7 digits, with the facts fleet-sim sends for it. Existing rows are kept.")

    @Option(help: "How many devices.") var count: Int
    @Option(help: "Id prefix, as fleet-sim's --id-prefix.") var idPrefix: String = "sim-"
    @Option(help: "The controller's data directory (its SQLite file, when no --database is given).") var data: String = "."
    @Option(help: "Directory with hardware-classes.yaml and bandwidth-tiers.yaml.") var config: String = "fleet"
    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        try database.validate()
        guard count >= 1 && count <= 100_000_000 else { throw ValidationError("--count must be 1…100000000") }
        guard !idPrefix.isEmpty, idPrefix.utf8.count <= 32,
            idPrefix.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else {
            throw ValidationError("--id-prefix must be up to 32 letters, digits, - or _")
        }
    }

    func run() async throws {
        var options = ControllerOptions(dataDirectory: data, host: "", port: 0, keysDirectory: "", configDirectory: config)
        options.databaseURL = database.database
        do {
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let r = try await DeviceSeeder.seed(options: options, count: count, prefix: idPrefix, logger: Logger(label: "edgefleet.seed"))
            print(
                "seeded \(r.devices) devices in \(String(format: "%.1f", r.seconds)) s (\(Int(Double(r.devices) / max(r.seconds, 0.001)))/s) over \(r.perCell.count) cells"
            )
        } catch {
            FileHandle.standardError.write(Data("fleet-controller seed-devices: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
