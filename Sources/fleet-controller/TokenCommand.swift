import ArgumentParser
import FleetController
import FleetCore

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Operator tokens made offline, against the data directory.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an operator API token in the controller's database and print it (shown once).",
            discussion: "For the first admin, or when every admin token is lost. The controller may be running.")

        @Option(help: "The controller's data directory.") var data: String
        @OptionGroup var database: DatabaseOptions
        @Option(help: "A name for the token (who or what uses it).") var name: String
        @Option(help: "viewer, operator or admin.") var role: String = "admin"
        @Option(help: "Days until the token expires (default: never).") var expiresDays: Int?

        func validate() throws {
            try database.validate()
            guard OperatorRole(rawValue: role) != nil else { throw ValidationError("--role must be viewer, operator or admin") }
            guard Name.isValid(name), name.utf8.count <= 64 else {
                throw ValidationError("--name must be a plain name of at most 64 bytes")
            }
            if let expiresDays { guard expiresDays >= 1 else { throw ValidationError("--expires-days must be at least 1") } }
        }

        func run() async throws {
            let created = try await AdminBootstrap.createToken(
                dataDirectory: data, databaseURL: database.database, name: name, role: OperatorRole(rawValue: role)!,
                expiresInSeconds: expiresDays.map { Int64($0) * 86_400 })
            print(created.token)
        }
    }
}
