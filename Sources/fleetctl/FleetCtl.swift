import ArgumentParser
import FleetClient
import FleetCore
import Foundation

@main
enum Entry {
    /// `fleetctl --controller URL noun verb` is accepted as well as `fleetctl noun verb --controller URL`:
    /// global options given before the subcommand are moved behind it, where every leaf command reads them.
    static func main() {
        FleetCtl.main(GlobalOptions.hoist(Array(CommandLine.arguments.dropFirst())))
    }
}

struct FleetCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleetctl",
        abstract: "Operate an EdgeFleet: keys, models, variants, releases, rollouts, devices.",
        discussion: """
            The controller URL comes from --controller or FLEET_CONTROLLER. Against a controller that enforces access, \
            give an operator token with --token-file (or FLEET_TOKEN_FILE, or the token itself in FLEET_TOKEN) and, \
            for https://, the fleet CA with --ca (or FLEET_CA).
            """,
        subcommands: [
            Keys.self, ModelCommand.self, VariantCommand.self, ReleaseCommand.self, RolloutCommand.self, PoliciesCommand.self,
            DevicesCommand.self, StatusCommand.self, DeltaCommand.self, TokensCommand.self, AuditCommand.self, AgentCommand.self
        ])
}

struct GlobalOptions: ParsableArguments {
    @Option(help: "Controller URL (default: $FLEET_CONTROLLER or http://127.0.0.1:8080).")
    var controller: String?

    @Flag(help: "Print JSON instead of tables.")
    var json = false

    @Option(help: "File holding an operator API token (default: $FLEET_TOKEN_FILE; or the token itself in $FLEET_TOKEN).")
    var tokenFile: String?

    @Option(help: "CA certificate (PEM) that the controller's https:// certificate must chain to (default: $FLEET_CA).")
    var ca: String?

    var baseURL: String {
        var url = controller ?? ProcessInfo.processInfo.environment["FLEET_CONTROLLER"] ?? "http://127.0.0.1:8080"
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    func client() -> API {
        let env = ProcessInfo.processInfo.environment
        var token = env["FLEET_TOKEN"]
        if let file = tokenFile ?? env["FLEET_TOKEN_FILE"] {
            token = (try? String(contentsOfFile: file, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let api = API(base: baseURL, token: token)
        api.http.tls = TLSOptions(caFile: ca ?? env["FLEET_CA"])
        return api
    }

    static let valued: Set<String> = ["--controller", "--token-file", "--ca"]

    static func hoist(_ args: [String]) -> [String] {
        var front: [String] = []
        var rest = args[...]
        while let first = rest.first, first.hasPrefix("--") {
            if first == "--json" || valued.contains(where: { first.hasPrefix($0 + "=") }) {
                front.append(first); rest = rest.dropFirst()
            } else if valued.contains(first), rest.count >= 2 {
                front += [first, rest[rest.startIndex + 1]]; rest = rest.dropFirst(2)
            } else {
                break
            }
        }
        return Array(rest) + front
    }

    func validate() throws {
        let url = baseURL
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw ValidationError("--controller must be an http:// or https:// URL, got '\(url)'")
        }
        if let file = tokenFile, !FileManager.default.isReadableFile(atPath: file) {
            throw ValidationError("--token-file \(file) cannot be read")
        }
    }

    func emit<T: Encodable>(_ value: T, table: () -> String) throws {
        if json {
            print(String(decoding: try FleetJSON.encode(value, pretty: true), as: UTF8.self))
        } else {
            print(table(), terminator: "")
        }
    }
}

/// Typed calls to the controller's operator API.
struct API {
    let base: String
    /// Operator API token; the controller records its name with every change.
    var token: String? = nil
    let http = HTTPClient()
    /// The token, and the user name an open (development) controller records instead.
    var actor: [String: String] {
        let user = ProcessInfo.processInfo.environment["USER"] ?? "operator"
        var h = ["X-Fleet-Actor": Name.isValid(user) ? user : "operator"]
        if let token, !token.isEmpty { h["Authorization"] = "Bearer \(token)" }
        return h
    }

    func get<T: Decodable>(_ path: String, as: T.Type) throws -> T {
        try http.json("GET", base + path, body: Optional<String>.none, headers: actor, as: T.self)
    }

    func post<B: Encodable, T: Decodable>(_ path: String, _ body: B, as: T.Type) throws -> T {
        try http.json("POST", base + path, body: body, headers: actor, as: T.self)
    }
}

/// A clear one-line failure instead of a stack of Swift error descriptions.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

func fail(_ error: any Error) -> CLIError {
    if let e = error as? HTTPClientError {
        switch e.code {
        case .status: return CLIError(e.body.map(APIErrorBody.message(from:)) ?? e.message)
        case .connect: return CLIError("cannot reach the controller: \(e.message)")
        default: return CLIError(e.message)
        }
    }
    return CLIError("\(error)")
}

/// Runs `body`, turning transport and API errors into one readable line.
func calling<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as ValidationError { throw e } catch let e as CLIError { throw e } catch { throw fail(error) }
}

/// Plain text tables: columns padded to their widest cell.
enum Table {
    static func render(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ") + "\n"
        }
        return line(header) + rows.map(line).joined()
    }
}

func timeText(_ t: Int64) -> String {
    let f = ISO8601DateFormatter()
    return f.string(from: Date(timeIntervalSince1970: TimeInterval(t)))
}
