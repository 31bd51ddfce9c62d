import ArgumentParser
import FleetController
import Foundation
import Logging

/// Where the controller keeps its state: the data directory's SQLite file, or PostgreSQL.
struct DatabaseOptions: ParsableArguments {
    @Option(help: "PostgreSQL shared by controller replicas: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?pool=N]. Default: the SQLite file in the data directory (one box).")
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
            print(try await Controller.migrate(databaseURL: database.database, dataDirectory: data, logger: Logger(label: "edgefleet.migrate")))
        } catch {
            FileHandle.standardError.write(Data("fleet-controller migrate: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
