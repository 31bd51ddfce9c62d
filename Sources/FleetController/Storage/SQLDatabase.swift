import FleetCore
import Foundation

/// A value bound to or read from a SQL database.
enum SQLValue: Equatable, Sendable {
    case null
    case int(Int64)
    case real(Double)
    case text(String)

    var int: Int64? { if case .int(let v) = self { return v }; return nil }
    var real: Double? {
        switch self {
        case .real(let v): return v;
        case .int(let v): return Double(v);
        default: return nil
        }
    }
    var text: String? { if case .text(let v) = self { return v }; return nil }
}

protocol SQLValueConvertible { var sqlValue: SQLValue { get } }
extension String: SQLValueConvertible { var sqlValue: SQLValue { .text(self) } }
extension Int64: SQLValueConvertible { var sqlValue: SQLValue { .int(self) } }
extension Int: SQLValueConvertible { var sqlValue: SQLValue { .int(Int64(self)) } }
extension UInt64: SQLValueConvertible { var sqlValue: SQLValue { .int(Int64(bitPattern: self)) } }
extension Double: SQLValueConvertible { var sqlValue: SQLValue { .real(self) } }
extension SQLValue: SQLValueConvertible { var sqlValue: SQLValue { self } }
extension Optional: SQLValueConvertible where Wrapped: SQLValueConvertible {
    var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

struct StorageError: Error, CustomStringConvertible {
    enum Code: String {
        case conflict, notFound, corrupt
        /// The database refused or failed a statement (connection lost, disk full, bad SQL).
        case database
        /// The database's schema is newer than this controller knows: it must not write to it.
        case schemaTooNew = "schema-too-new"
        /// A write of work that runs once (the leader's) by a replica that is no longer the leader.
        case fenced
    }
    let code: Code
    let message: String
    init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    var description: String { "\(code.rawValue): \(message)" }
}

/// The column names of one result, shared by its rows.
final class SQLColumns: Sendable {
    let names: [String]
    private let index: [String: Int]
    init(_ names: [String]) {
        self.names = names
        var index: [String: Int] = [:]
        for (i, n) in names.enumerated() where index[n] == nil { index[n] = i }
        self.index = index
    }
    func position(_ name: String) -> Int? { index[name] }
}

/// One row of a result, read by column name. A column that is missing, NULL where a value must be,
/// or of the wrong type is a `corrupt` error naming the column: never a silent default.
struct SQLRow: Sendable {
    let columns: SQLColumns
    let values: [SQLValue]

    /// By position, for single aggregates (`SELECT COUNT(*) …`).
    subscript(_ i: Int) -> SQLValue { i < values.count ? values[i] : .null }

    func value(_ name: String) throws -> SQLValue {
        guard let i = columns.position(name) else { throw StorageError(.corrupt, "result has no column \(name)") }
        return values[i]
    }

    func string(_ name: String) throws -> String {
        guard let v = try optionalString(name) else { throw StorageError(.corrupt, "column \(name) is NULL") }
        return v
    }

    func optionalString(_ name: String) throws -> String? {
        switch try value(name) {
        case .null: return nil
        case .text(let s): return s
        default: throw StorageError(.corrupt, "column \(name) is not text")
        }
    }

    func int(_ name: String) throws -> Int64 {
        guard let v = try optionalInt(name) else { throw StorageError(.corrupt, "column \(name) is NULL") }
        return v
    }

    func optionalInt(_ name: String) throws -> Int64? {
        switch try value(name) {
        case .null: return nil
        case .int(let v): return v
        default: throw StorageError(.corrupt, "column \(name) is not an integer")
        }
    }

    func optionalDouble(_ name: String) throws -> Double? {
        switch try value(name) {
        case .null: return nil
        case .int(let v): return Double(v)
        case .real(let v): return v
        default: throw StorageError(.corrupt, "column \(name) is not a number")
        }
    }

    func bool(_ name: String) throws -> Bool { try int(name) != 0 }

    func json<T: Decodable>(_ type: T.Type, _ name: String) throws -> T {
        guard let v = try optionalJSON(type, name) else { throw StorageError(.corrupt, "column \(name) is NULL") }
        return v
    }

    func optionalJSON<T: Decodable>(_ type: T.Type, _ name: String) throws -> T? {
        guard let text = try optionalString(name) else { return nil }
        do { return try JSONDecoder().decode(type, from: Data(text.utf8)) } catch {
            throw StorageError(.corrupt, "column \(name) does not decode as \(T.self): \(error)")
        }
    }
}

/// What differs between the SQL the two back ends speak. Queries are written once, with `?`
/// placeholders and SQLite's type names; the PostgreSQL side rewrites both.
enum SQLDialect: String, Sendable {
    case sqlite, postgres

    /// DDL written with SQLite's types, in this dialect.
    func ddl(_ sql: String) -> String {
        guard self == .postgres else { return sql }
        return
            sql
            .replacingOccurrences(of: "INTEGER PRIMARY KEY AUTOINCREMENT", with: "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
            .replacingOccurrences(of: "INTEGER", with: "BIGINT")
            .replacingOccurrences(of: "REAL", with: "DOUBLE PRECISION")
    }

    /// An expression setting key `?` (first parameter) to the string `?` (second) in a JSON
    /// object stored as text in `column`.
    func jsonSet(_ column: String) -> String {
        switch self {
        case .sqlite: return "json_set(\(column), '$.\"' || ? || '\"', ?)"
        case .postgres: return "(\(column)::jsonb || jsonb_build_object(?::text, ?::text))::text"
        }
    }

    /// An expression reading the string at key `?` of a JSON object stored as text in `column`.
    func jsonGet(_ column: String) -> String {
        switch self {
        case .sqlite: return "json_extract(\(column), '$.\"' || ? || '\"')"
        case .postgres: return "(\(column)::jsonb ->> ?::text)"
        }
    }
}

/// Runs statements: a database, or one of its open transactions.
protocol SQLQuerying: Sendable {
    var dialect: SQLDialect { get }
    func query(_ sql: String, _ params: [any SQLValueConvertible]) async throws -> [SQLRow]
}

extension SQLQuerying {
    @discardableResult
    func query(_ sql: String) async throws -> [SQLRow] { try await query(sql, []) }
    func execute(_ sql: String, _ params: [any SQLValueConvertible] = []) async throws { _ = try await query(sql, params) }
    /// The first column of the first row, for aggregates.
    func scalar(_ sql: String, _ params: [any SQLValueConvertible] = []) async throws -> SQLValue {
        try await query(sql, params).first?[0] ?? .null
    }
}

/// A SQL database the store runs on: SQLite in one file (one box), or PostgreSQL shared by replicas.
/// A statement run on nearly every request (a check-in's read): worth preparing once per
/// connection, so that PostgreSQL parses and plans it once, not at every call. SQLite's
/// connections keep every statement prepared anyway.
protocol HotStatement {
    static var sql: String { get }
}

protocol SQLDatabase: SQLQuerying {
    /// `statement`'s SQL with `params`, prepared once per connection where that helps.
    func query<S: HotStatement>(_ statement: S.Type, _ params: [any SQLValueConvertible]) async throws -> [SQLRow]
    /// Runs `body` in one transaction: all of its statements are stored, or none. Errors thrown
    /// by `body` roll back and come out unchanged.
    func transaction<T: Sendable>(_ body: @Sendable (any SQLQuerying) async throws -> T) async throws -> T
    /// A statement committed without waiting for the disk: it survives a crash of the process, a
    /// power loss may take it back to the previous value, never half. For facts the next message
    /// repeats anyway (a device's last check-in).
    func executeRelaxed(_ sql: String, _ params: [any SQLValueConvertible]) async throws
    /// Closes connections; the database is unusable afterwards.
    func close() async
}

extension SQLDatabase {
    func query<S: HotStatement>(_ statement: S.Type, _ params: [any SQLValueConvertible]) async throws -> [SQLRow] {
        try await query(S.sql, params)
    }
}

enum SQLPlaceholders {
    /// `?` → `$1`, `$2`, … outside quoted strings and identifiers.
    static func numbered(_ sql: String) -> String {
        var out = String()
        out.reserveCapacity(sql.utf8.count + 16)
        var n = 0
        var quote: Character? = nil
        for c in sql {
            if let q = quote {
                if c == q { quote = nil }
                out.append(c)
            } else if c == "'" || c == "\"" {
                quote = c
                out.append(c)
            } else if c == "?" {
                n += 1
                out += "$\(n)"
            } else {
                out.append(c)
            }
        }
        return out
    }
}
