import Foundation

/// A PostgreSQL server of its own for a test: initdb in a temporary folder, the server in the
/// foreground on a loopback port, stopped (and its folder removed) by `stop()`. Started as the
/// `postgres` user when the tests run as root (initdb refuses root).
public final class PostgresServer: @unchecked Sendable {
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    public let port: Int
    public let directory: String
    private let process: Process
    private let bin: String

    /// The URL of the server's default database.
    public var url: String { url(database: "postgres") }
    public func url(database: String) -> String { "postgres://fleet@127.0.0.1:\(port)/\(database)" }

    /// The server binaries of the newest installed PostgreSQL, or nil.
    public static func binDirectory() -> String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        for v in versions.reversed() where FileManager.default.isExecutableFile(atPath: "\(root)/\(v)/bin/postgres") {
            return "\(root)/\(v)/bin"
        }
        return nil
    }

    private static var asRoot: Bool { getuid() == 0 }

    private static func command(_ argv: [String]) -> [String] {
        // setpriv execs (no child of its own), so the PID started is the server's.
        asRoot ? ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"] + argv : argv
    }

    /// Runs `argv` to its end (as the postgres user when `asPostgres`), its output captured;
    /// a non-zero exit throws with that output.
    @discardableResult
    private static func run(_ argv: [String], asPostgres: Bool = true) throws -> String {
        let p = Process()
        let full = asPostgres ? command(argv) : argv
        p.executableURL = URL(fileURLWithPath: full[0])
        p.arguments = Array(full.dropFirst())
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard p.terminationStatus == 0 else { throw Unavailable(description: "\(argv.joined(separator: " ")) failed: \(text)") }
        return text
    }

    public static func start(deadline: Duration = .seconds(30)) throws -> PostgresServer {
        guard let bin = binDirectory() else {
            throw Unavailable(description: "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
        }
        let dir = NSTemporaryDirectory() + "edgefleet-pg-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        if asRoot { try run(["/usr/bin/chown", "postgres", dir], asPostgres: false) }
        try run([bin + "/initdb", "-D", dir + "/data", "-U", "fleet", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])
        var lastError = ""
        for _ in 0..<8 {
            let port = Int.random(in: 20_000...60_000)
            let p = Process()
            let argv = command([
                bin + "/postgres", "-D", dir + "/data", "-p", "\(port)", "-k", dir, "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off", "-c", "max_connections=200"
            ])
            p.executableURL = URL(fileURLWithPath: argv[0])
            p.arguments = Array(argv.dropFirst())
            if !FileManager.default.fileExists(atPath: dir + "/server.log") {
                guard FileManager.default.createFile(atPath: dir + "/server.log", contents: nil) else {
                    throw Unavailable(description: "cannot create \(dir)/server.log")
                }
            }
            guard let log = FileHandle(forWritingAtPath: dir + "/server.log") else {
                throw Unavailable(description: "cannot open \(dir)/server.log")
            }
            p.standardOutput = log
            p.standardError = log
            try p.run()
            let until = ContinuousClock.now + deadline
            while ContinuousClock.now < until, p.isRunning {
                if (try? run(["/usr/bin/pg_isready", "-q", "-h", "127.0.0.1", "-p", "\(port)"], asPostgres: false)) != nil {
                    return PostgresServer(port: port, directory: dir, process: p, bin: bin)
                }
                usleep(50_000)
            }
            if p.isRunning { p.terminate(); p.waitUntilExit() }
            lastError = (try? String(contentsOfFile: dir + "/server.log", encoding: .utf8)) ?? ""
        }
        try? FileManager.default.removeItem(atPath: dir)
        throw Unavailable(description: "postgres did not start: \(lastError.suffix(800))")
    }

    private init(port: Int, directory: String, process: Process, bin: String) {
        self.port = port; self.directory = directory; self.process = process; self.bin = bin
    }

    /// A new empty database on this server; its URL.
    public func createDatabase(_ name: String = "t" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(12))
        throws -> String
    {
        try Self.run(["/usr/bin/createdb", "-h", "127.0.0.1", "-p", "\(port)", "-U", "fleet", name], asPostgres: false)
        return url(database: name)
    }

    /// Runs SQL with psql and returns its unaligned output.
    public func psql(_ database: String, _ sql: String) throws -> String {
        try Self.run(
            ["/usr/bin/psql", "-h", "127.0.0.1", "-p", "\(port)", "-U", "fleet", "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            asPostgres: false)
    }

    /// Fast shutdown; removes the folder.
    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGINT)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// `stop()` for a process on its way out (an `atexit` handler), where waiting through
    /// Foundation's `Process` may not return: SIGINT, then up to `seconds` for the server to remove
    /// its pid file, then the folder goes.
    public func stopAtExit(seconds: Int = 10) {
        kill(process.processIdentifier, SIGINT)
        for _ in 0..<(seconds * 20) where FileManager.default.fileExists(atPath: directory + "/data/postmaster.pid") {
            usleep(50_000)
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { stop() }
}
