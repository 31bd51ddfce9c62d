import FleetCore

/// The typed vocabulary (event kinds, rollout states, device statuses) in SQL text: each value
/// by its raw value through the typed case, so a query cannot name a state that does not exist.
enum SQLVocabulary {
    /// `'committed'`. Raw values are fixed lowercase words and hyphens, never input, so quoting
    /// needs no escaping (checked, so that a new case cannot break that silently).
    static func literal<T: RawRepresentable>(_ value: T) -> String where T.RawValue == String {
        precondition(value.rawValue.allSatisfy { $0.isLetter || $0 == "-" }, "not a vocabulary word: \(value.rawValue)")
        return "'\(value.rawValue)'"
    }

    /// `('started','downloaded',…)`
    static func list<T: RawRepresentable>(_ values: [T]) -> String where T.RawValue == String {
        "(" + values.map(literal).joined(separator: ",") + ")"
    }
}

extension SQLRow {
    /// A column holding a vocabulary word (a device status, a trial state): a word this build
    /// does not know is a `corrupt` error naming the column and the word, never a default.
    func vocabulary<T: RawRepresentable>(_ type: T.Type, _ name: String) throws -> T where T.RawValue == String {
        let text = try string(name)
        guard let value = T(rawValue: text) else { throw StorageError(.corrupt, "column \(name) holds '\(text)', not a \(T.self)") }
        return value
    }
}
