import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Where a PostgreSQL database is: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?pool=N]`.
struct PostgresLocation: Sendable, Equatable {
    var host: String
    var port: Int
    var user: String
    var password: String?
    var database: String
    /// Connections this process's pool keeps open, all the time (replicas × (pool + 2 sessions:
    /// the cache listener and the leader election) must stay under the server's max_connections,
    /// 100 by default).
    var pool: Int

    static func isPostgresURL(_ s: String) -> Bool { s.hasPrefix("postgres://") || s.hasPrefix("postgresql://") }

    init(url: String) throws {
        guard Self.isPostgresURL(url), let c = URLComponents(string: url), let host = c.host, !host.isEmpty else {
            throw StorageError(.database, "'\(url)' is not a database URL of the form postgres://USER@HOST:PORT/DATABASE")
        }
        self.host = host
        port = c.port ?? 5432
        user = c.user ?? "postgres"
        password = c.password
        let path = c.path.hasPrefix("/") ? String(c.path.dropFirst()) : c.path
        database = path.isEmpty ? user : path
        pool = 12
        for item in c.queryItems ?? [] {
            switch item.name {
            case "pool":
                guard let n = item.value.flatMap(Int.init), (1...64).contains(n) else {
                    throw StorageError(.database, "pool in '\(url)' must be 1…64")
                }
                pool = n
            default:
                throw StorageError(.database, "unknown parameter \(item.name) in the database URL")
            }
        }
    }

    /// For messages and logs: never the password.
    var redacted: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    var connectionConfiguration: PostgresConnection.Configuration {
        PostgresConnection.Configuration(host: host, port: port, username: user, password: password, database: database, tls: .disable)
    }
}

/// The shared back end for replicas: PostgreSQL through a connection pool (postgres-nio's
/// `PostgresClient`, run for the life of the store).
final class PostgresDatabase: SQLDatabase {
    let dialect = SQLDialect.postgres
    let location: PostgresLocation
    let client: PostgresClient
    private let runner: Task<Void, Never>
    private let logger: Logger

    init(_ location: PostgresLocation, logger: Logger) {
        self.location = location
        self.logger = logger
        var config = PostgresClient.Configuration(
            host: location.host, port: location.port, username: location.user,
            password: location.password, database: location.database, tls: .disable)
        // Every connection kept open, and none pinged while idle: postgres-nio arms an idle
        // timer (connections above the minimum) and a keep-alive timer at every release of a
        // connection to the pool, each a few tasks and a clock sleep, cancelled again at the next
        // lease; at one lease per check-in that was most of the task switching of a replica. A
        // connection that breaks is found by the statement that uses it (an error, as for any
        // lost connection) and the pool opens another.
        config.options.maximumConnections = location.pool
        config.options.minimumConnections = location.pool
        config.options.keepAliveBehavior = nil
        config.options.connectTimeout = .seconds(5)
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.client = client
        runner = Task { await client.run() }
    }

    /// Connects and waits until the server answers (a few seconds at most).
    static func connect(_ location: PostgresLocation, logger: Logger) async throws -> PostgresDatabase {
        let db = PostgresDatabase(location, logger: logger)
        do {
            _ = try await db.query("SELECT 1 AS one", [])
        } catch {
            await db.close()
            throw StorageError(.database, "cannot reach \(location.redacted): \(error)")
        }
        return db
    }

    func close() async { runner.cancel() }

    // Every statement goes through `PostgresStatements` (one on a connection that closes under it
    // fails instead of waiting for good).
    func query(_ sql: String, _ params: [any SQLValueConvertible]) async throws -> [SQLRow] {
        let query = Self.statement(sql, params)
        let logger = logger
        do {
            return try await client.withConnection { connection in
                try await Self.rows(try await connection.guardedQuery(query, logger: logger))
            }
        } catch let e as PSQLError {
            throw Self.mapped(e)
        }
    }

    func query<S: HotStatement>(_ statement: S.Type, _ params: [any SQLValueConvertible]) async throws -> [SQLRow] {
        let binds = Self.bindings(params)
        let logger = logger
        do {
            return try await client.withConnection { connection in
                // A hot statement's few rows are read on the connection's event loop too.
                try await PostgresStatements.shared.run(on: connection) {
                    try await Self.rows(try await connection.execute(Prepared<S>(binds: binds), logger: logger))
                }
            }
        } catch let e as PSQLError {
            throw Self.mapped(e)
        }
    }

    /// A hot statement as postgres-nio prepares it: once per pooled connection, by name.
    private struct Prepared<S: HotStatement>: PostgresPreparedStatement {
        static var name: String { "edgefleet." + String(describing: S.self) }
        static var sql: String { PostgresDatabase.rewrites.numbered(S.sql) }
        let binds: PostgresBindings
        func makeBindings() throws -> PostgresBindings { binds }
        func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
    }

    func executeRelaxed(_ sql: String, _ params: [any SQLValueConvertible]) async throws {
        // One statement on a pooled connection commits by itself; waiting for the WAL flush is
        // what `synchronous_commit = off` would save, at the price of a round trip to set it.
        _ = try await query(sql, params)
    }

    func transaction<T: Sendable>(_ body: @Sendable (any SQLQuerying) async throws -> T) async throws -> T {
        do {
            return try await client.withConnection { connection in
                let tx = Transaction(connection: connection, logger: logger)
                try await tx.execute("BEGIN")
                do {
                    let result = try await body(tx)
                    try await tx.execute("COMMIT")
                    return result
                } catch {
                    _ = try? await tx.execute("ROLLBACK")
                    throw error
                }
            }
        } catch let e as PSQLError {
            throw Self.mapped(e)
        }
    }

    /// Statements on one leased connection inside BEGIN … COMMIT.
    private struct Transaction: SQLQuerying, @unchecked Sendable {
        let connection: PostgresConnection
        let logger: Logger
        var dialect: SQLDialect { .postgres }
        func query(_ sql: String, _ params: [any SQLValueConvertible]) async throws -> [SQLRow] {
            try await PostgresDatabase.run(sql, params) { q in try await connection.guardedQuery(q, logger: logger) }
        }
    }

    private static let rewrites = RewriteCache()

    static func run(
        _ sql: String, _ params: [any SQLValueConvertible],
        _ send: (PostgresQuery) async throws -> PostgresRowSequence
    ) async throws -> [SQLRow] {
        do {
            return try await rows(try await send(statement(sql, params)))
        } catch let e as PSQLError {
            throw mapped(e)
        }
    }

    private static func statement(_ sql: String, _ params: [any SQLValueConvertible]) -> PostgresQuery {
        PostgresQuery(unsafeSQL: rewrites.numbered(sql), binds: bindings(params))
    }

    private static func bindings(_ params: [any SQLValueConvertible]) -> PostgresBindings {
        var binds = PostgresBindings(capacity: params.count)
        for p in params {
            switch p.sqlValue {
            case .null: binds.appendNull()
            case .int(let v): binds.append(v)
            case .real(let v): binds.append(v)
            case .text(let v): binds.append(v)
            }
        }
        return binds
    }

    private static func rows<Rows: AsyncSequence>(_ sequence: Rows) async throws -> [SQLRow] where Rows.Element == PostgresRow {
        var rows: [SQLRow] = []
        var columns: SQLColumns?
        for try await row in sequence {
            var values: [SQLValue] = []
            values.reserveCapacity(row.count)
            var names: [String] = []
            for cell in row {
                if columns == nil { names.append(cell.columnName) }
                values.append(try value(cell))
            }
            if columns == nil { columns = SQLColumns(names) }
            rows.append(SQLRow(columns: columns!, values: values))
        }
        return rows
    }

    private static func value(_ cell: PostgresCell) throws -> SQLValue {
        guard cell.bytes != nil else { return .null }
        switch cell.dataType {
        case .int8, .int4, .int2: return .int(try cell.decode(Int64.self))
        case .float8, .float4: return .real(try cell.decode(Double.self))
        case .bool: return .int(try cell.decode(Bool.self) ? 1 : 0)
        default: return .text(try cell.decode(String.self))
        }
    }

    static func mapped(_ e: PSQLError) -> StorageError {
        let state = e.serverInfo?[.sqlState]
        let message = e.serverInfo?[.message] ?? "\(e.code)"
        if let state, state.hasPrefix("23") { return StorageError(.conflict, message) }
        return StorageError(.database, "postgres: \(message)\(state.map { " (\($0))" } ?? "")")
    }

    /// `?` placeholders rewritten once per distinct statement.
    final class RewriteCache: @unchecked Sendable {
        private let lock = NSLock()
        private var cache: [String: String] = [:]
        func numbered(_ sql: String) -> String {
            lock.lock(); defer { lock.unlock() }
            if let hit = cache[sql] { return hit }
            let out = SQLPlaceholders.numbered(sql)
            if cache.count < 1024 { cache[sql] = out }
            return out
        }
    }
}

extension PostgresLocation {
    /// Runs `session` on a connection of its own (LISTEN, a session advisory lock) until shutdown.
    /// After a loss (logged, with the next attempt's delay) it runs `lost` and connects again after
    /// a delay that doubles from `retry` up to 30 s, back to `retry` once a session has lasted a
    /// minute. `lost` runs once more at the end.
    func keepSession(
        id: Int, what: String, retry: Swift.Duration, logger: Logger, lost: @Sendable () async -> Void,
        _ session: @Sendable (PostgresConnection) async throws -> Void
    ) async {
        var delay = retry
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let started = ContinuousClock.now
            do {
                let connection = try await PostgresConnection.connect(configuration: connectionConfiguration, id: id, logger: logger)
                defer { Task { try? await connection.close() } }
                try await session(connection)
            } catch is CancellationError {
                break
            } catch {
                if Task.isShuttingDownGracefully || Task.isCancelled { break }
                if ContinuousClock.now - started > .seconds(60) { delay = retry }
                logger.warning("\(what): connection lost", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
            }
            await lost()
            let wait = delay
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
            delay = min(delay * 2, .seconds(30))
        }
        await lost()
    }
}
