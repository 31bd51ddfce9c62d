import FleetCore
import Foundation
import Hummingbird

/// Rollout policies: the ones of fleet/policies (reloaded on SIGHUP), or one a rollout brings.
extension OperatorRoutes {
    func registerPolicies(_ routes: Audiences) {
        routes.viewers.get("/v1/policies") { _, _ in
            try JSON.response(policies.current.values.sorted { $0.name < $1.name })
        }
        routes.viewers.get("/v1/policies/:name") { _, context in
            let name = try context.parameters.require("name")
            guard let p = policies.current[name] else {
                throw APIError(
                    .notFound, "unknown-policy", "no policy '\(name)' (have: \(policies.current.keys.sorted().joined(separator: ", ")))")
            }
            return try JSON.response(p)
        }
    }

    /// The policy a staged rollout starts with: its own document, or a named one; bakes scaled.
    func stagedPolicy(_ body: NewRollout) throws -> RolloutPolicy {
        var policy: RolloutPolicy
        if let doc = body.policyDocument {
            guard body.policy == nil else {
                throw APIError(.badRequest, "invalid-policy", "give a policy name or a policy document, not both")
            }
            do { policy = try PolicyLoader.parse(doc, file: "the uploaded policy") } catch let e as ConfigError {
                throw APIError(.badRequest, "invalid-policy", e.message)
            }
        } else {
            let name = body.policy ?? "canary"
            let book = policies.current
            guard let p = book[name] else {
                throw APIError(.badRequest, "unknown-policy", "no policy '\(name)' (have: \(book.keys.sorted().joined(separator: ", ")))")
            }
            policy = p
        }
        if let scale = body.bakeScale {
            guard scale.isFinite, scale >= 0, scale <= 100 else {
                throw APIError(.badRequest, "invalid-bake-scale", "bakeScale must be between 0 and 100")
            }
            policy = policy.scalingBakes(by: scale)
        }
        return policy
    }
}
