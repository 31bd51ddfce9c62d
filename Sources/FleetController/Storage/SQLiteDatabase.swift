import CSQLite
import Foundation

/// A value bound to or read from SQLite.
enum SQLValue: Equatable, Sendable {
    case null
    case int(Int64)
    case real(Double)
    case text(String)

    var int: Int64? { if case .int(let v) = self { return v }; return nil }
    var real: Double? {
        switch self { case .real(let v): return v; case .int(let v): return Double(v); default: return nil }
    }
    var text: String? { if case .text(let v) = self { return v }; return nil }
}

protocol SQLValueConvertible { var sqlValue: SQLValue { get } }
extension String: SQLValueConvertible { var sqlValue: SQLValue { .text(self) } }
extension Int64: SQLValueConvertible { var sqlValue: SQLValue { .int(self) } }
extension Int: SQLValueConvertible { var sqlValue: SQLValue { .int(Int64(self)) } }
extension UInt64: SQLValueConvertible { var sqlValue: SQLValue { .int(Int64(bitPattern: self)) } }
extension Double: SQLValueConvertible { var sqlValue: SQLValue { .real(self) } }
extension Optional: SQLValueConvertible where Wrapped: SQLValueConvertible {
    var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

struct StorageError: Error, CustomStringConvertible {
    enum Code: String { case conflict, notFound, sqlite, corrupt }
    let code: Code
    let message: String
    init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    var description: String { "\(code.rawValue): \(message)" }
}

/// One SQLite connection, serialised by a lock. WAL journal and synchronous=FULL: a committed
/// transaction survives kill -9 and power loss.
final class SQLiteDatabase: @unchecked Sendable {
    private var db: OpaquePointer?
    private let lock = NSRecursiveLock()
    let path: String

    init(path: String) throws {
        self.path = path
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw StorageError(.sqlite, "cannot open \(path): \(msg)")
        }
        db = handle
        sqlite3_busy_timeout(handle, 5000)
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=FULL")
        try execute("PRAGMA foreign_keys=ON")
    }

    deinit { sqlite3_close(db) }

    func execute(_ sql: String, _ params: [any SQLValueConvertible] = []) throws {
        _ = try query(sql, params)
    }

    @discardableResult
    func query(_ sql: String, _ params: [any SQLValueConvertible] = []) throws -> [[SQLValue]] {
        lock.lock(); defer { lock.unlock() }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK else {
            throw StorageError(.sqlite, "prepare: \(lastError)")
        }
        defer { sqlite3_finalize(stmt) }
        for (i, p) in params.enumerated() {
            let idx = Int32(i + 1)
            switch p.sqlValue {
            case .null: sqlite3_bind_null(stmt, idx)
            case .int(let v): sqlite3_bind_int64(stmt, idx, v)
            case .real(let v): sqlite3_bind_double(stmt, idx, v)
            case .text(let v): sqlite3_bind_text(stmt, idx, v, -1, ef_sqlite_transient())
            }
        }
        var rows: [[SQLValue]] = []
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            if rc == SQLITE_CONSTRAINT { throw StorageError(.conflict, lastError) }
            guard rc == SQLITE_ROW else { throw StorageError(.sqlite, "step: \(lastError)") }
            var row: [SQLValue] = []
            for c in 0..<sqlite3_column_count(stmt) {
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_INTEGER: row.append(.int(sqlite3_column_int64(stmt, c)))
                case SQLITE_FLOAT: row.append(.real(sqlite3_column_double(stmt, c)))
                case SQLITE_TEXT: row.append(.text(String(cString: sqlite3_column_text(stmt, c))))
                default: row.append(.null)
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// Runs one statement committed without waiting for the disk (WAL, synchronous=NORMAL): it
    /// survives a crash of the process, and a power loss may take it back to the previous value,
    /// never half. For facts that the next message repeats anyway (a device's last check-in);
    /// the next FULL commit makes it durable too.
    func executeRelaxed(_ sql: String, _ params: [any SQLValueConvertible] = []) throws {
        lock.lock(); defer { lock.unlock() }
        try execute("PRAGMA synchronous=NORMAL")
        defer { try? execute("PRAGMA synchronous=FULL") }
        try execute(sql, params)
    }

    /// Runs `body` in one IMMEDIATE transaction: all of it is stored, or none.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        lock.lock(); defer { lock.unlock() }
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    var changes: Int { Int(sqlite3_changes(db)) }

    private var lastError: String { String(cString: sqlite3_errmsg(db)) }
}
