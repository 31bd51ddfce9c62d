import CSQLite
import Dispatch
import Foundation

/// One SQLite connection with its prepared statements, kept for reuse. Not thread-safe: each is
/// used from one serial queue only.
private final class SQLiteConnection: @unchecked Sendable {
    private var db: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]
    /// Statements kept prepared; beyond this the cache is emptied (queries are a fixed set, so
    /// only generated SQL — bulk inserts of varying width — ever reaches it).
    private static let cacheLimit = 256

    init(path: String, readOnly: Bool) throws {
        var handle: OpaquePointer?
        let flags = readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        let rc = sqlite3_open_v2(path, &handle, flags | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw StorageError(.database, "cannot open \(path): \(msg)")
        }
        db = handle
        sqlite3_busy_timeout(handle, 10_000)
        if !readOnly {
            try run("PRAGMA journal_mode=WAL", [])
            try run("PRAGMA synchronous=FULL", [])
        }
        try run("PRAGMA foreign_keys=ON", [])
    }

    deinit {
        for s in statements.values { sqlite3_finalize(s) }
        sqlite3_close(db)
    }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let s = statements[sql] { return s }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK, let stmt else {
            sqlite3_finalize(stmt)
            throw StorageError(.database, "prepare: \(lastError)")
        }
        if statements.count >= Self.cacheLimit {
            for s in statements.values { sqlite3_finalize(s) }
            statements.removeAll()
        }
        statements[sql] = stmt
        return stmt
    }

    func run(_ sql: String, _ params: [any SQLValueConvertible]) throws -> [SQLRow] {
        let stmt = try prepared(sql)
        defer { sqlite3_reset(stmt); sqlite3_clear_bindings(stmt) }
        for (i, p) in params.enumerated() {
            let idx = Int32(i + 1)
            switch p.sqlValue {
            case .null: sqlite3_bind_null(stmt, idx)
            case .int(let v): sqlite3_bind_int64(stmt, idx, v)
            case .real(let v): sqlite3_bind_double(stmt, idx, v)
            case .text(let v): sqlite3_bind_text(stmt, idx, v, -1, ef_sqlite_transient())
            }
        }
        var rows: [SQLRow] = []
        var columns: SQLColumns?
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            if rc == SQLITE_CONSTRAINT { throw StorageError(.conflict, lastError) }
            guard rc == SQLITE_ROW else { throw StorageError(.database, "step: \(lastError)") }
            let count = sqlite3_column_count(stmt)
            if columns == nil {
                columns = SQLColumns((0..<count).map { String(cString: sqlite3_column_name(stmt, $0)) })
            }
            var row: [SQLValue] = []
            row.reserveCapacity(Int(count))
            for c in 0..<count {
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_INTEGER: row.append(.int(sqlite3_column_int64(stmt, c)))
                case SQLITE_FLOAT: row.append(.real(sqlite3_column_double(stmt, c)))
                case SQLITE_TEXT: row.append(.text(String(cString: sqlite3_column_text(stmt, c))))
                default: row.append(.null)
                }
            }
            rows.append(SQLRow(columns: columns!, values: row))
        }
        return rows
    }

    var lastError: String { String(cString: sqlite3_errmsg(db)) }
}

/// The embedded back end: one SQLite file. WAL journal and synchronous=FULL: a committed
/// transaction survives kill -9 and power loss. Statements run on two serial queues of their own
/// (a writer and a reader connection), never on Swift's cooperative pool, whose few threads would
/// otherwise wait for the disk; writers take turns through an async lock held for a whole
/// transaction, so that nothing else runs inside one.
final class SQLiteDatabase: SQLDatabase, @unchecked Sendable {
    let path: String
    let dialect = SQLDialect.sqlite
    private let writer: SQLiteConnection
    private var reader: SQLiteConnection?
    private let writeQueue = DispatchQueue(label: "edgefleet.sqlite.write")
    private let readQueue = DispatchQueue(label: "edgefleet.sqlite.read")
    private let turn = AsyncLock()

    init(path: String) throws {
        self.path = path
        writer = try SQLiteConnection(path: path, readOnly: false)
    }

    private func onQueue<T: Sendable>(_ queue: DispatchQueue, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            queue.async { c.resume(with: Result { try body() }) }
        }
    }

    /// Plain reads go to the reader connection (WAL: they see every committed transaction and
    /// wait for none); everything else takes its turn on the writer.
    func query(_ sql: String, _ params: [any SQLValueConvertible]) async throws -> [SQLRow] {
        let p = params.map(\.sqlValue)
        if sql.utf8.first == UInt8(ascii: "S"), sql.hasPrefix("SELECT") {
            return try await onQueue(readQueue) { [self] in
                if reader == nil { reader = try SQLiteConnection(path: path, readOnly: true) }
                return try reader!.run(sql, p)
            }
        }
        return try await turn.withLock { try await onQueue(writeQueue) { [writer] in try writer.run(sql, p) } }
    }

    func transaction<T: Sendable>(_ body: @Sendable (any SQLQuerying) async throws -> T) async throws -> T {
        try await turn.withLock {
            try await onQueue(writeQueue) { [writer] in _ = try writer.run("BEGIN IMMEDIATE", []) }
            do {
                let result = try await body(Transaction(db: self))
                try await onQueue(writeQueue) { [writer] in _ = try writer.run("COMMIT", []) }
                return result
            } catch {
                _ = try? await onQueue(writeQueue) { [writer] in _ = try writer.run("ROLLBACK", []) }
                throw error
            }
        }
    }

    func executeRelaxed(_ sql: String, _ params: [any SQLValueConvertible]) async throws {
        let p = params.map(\.sqlValue)
        try await turn.withLock {
            try await onQueue(writeQueue) { [writer] in
                _ = try writer.run("PRAGMA synchronous=NORMAL", [])
                defer { _ = try? writer.run("PRAGMA synchronous=FULL", []) }
                _ = try writer.run(sql, p)
            }
        }
    }

    func close() async {}

    /// Statements of an open transaction: on the writer, without taking the turn it holds.
    private struct Transaction: SQLQuerying {
        let db: SQLiteDatabase
        var dialect: SQLDialect { .sqlite }
        func query(_ sql: String, _ params: [any SQLValueConvertible]) async throws -> [SQLRow] {
            let p = params.map(\.sqlValue)
            return try await db.onQueue(db.writeQueue) { [writer = db.writer] in try writer.run(sql, p) }
        }
    }
}
