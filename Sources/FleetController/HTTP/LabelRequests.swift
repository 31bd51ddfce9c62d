import FleetCore

/// Labels and selectors from a request, turned into typed API errors.
enum LabelRequests {
    static func validate(_ labels: [String: String]) throws {
        let checked = Result { () throws(LabelError) in try Labels.validate(labels) }
        if case .failure(let e) = checked { throw APIError(.badRequest, "invalid-labels", e.message) }
    }

    static func validate(keys: [String]) throws {
        for key in keys {
            if case .failure(let e) = Result(catching: { () throws(LabelError) in try Labels.validate(key: key) }) {
                throw APIError(.badRequest, "invalid-labels", e.message)
            }
        }
    }

    /// nil or "": every device. A malformed selector is 400 `invalid-selector` with its position in `counts`.
    static func selector(_ text: String?) throws -> LabelSelector {
        switch Result(catching: { () throws(SelectorError) in try LabelSelector(parsing: text ?? "") }) {
        case .success(let s): return s
        case .failure(let e): throw APIError(.badRequest, "invalid-selector", "selector: \(e)", counts: ["position": e.position])
        }
    }
}
