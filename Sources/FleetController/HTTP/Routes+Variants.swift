import FleetCore
import Foundation
import Hummingbird

/// Variant reports and controller-side variant builds.
struct VariantRoutes: Sendable {
    let store: any FleetStore
    let builder: VariantBuildService

    func register(_ routes: Audiences) {
        routes.viewers.get("/v1/models/:model/variants/:name") { _, context in
            let model = try context.parameters.require("model"), name = try context.parameters.require("name")
            guard let v = try await store.variants(model: model).first(where: { $0.variant.name == name }) else {
                throw APIError(.notFound, "unknown-variant", "model \(model) has no variant \(name)")
            }
            let info = VariantInfo(model: v.model, variant: v.variant, quality: v.quality, createdAt: v.createdAt)
            return try JSON.response(VariantDetail(variant: info, report: try await store.variantReport(model: model, variant: name)))
        }
        routes.operators.post("/v1/models/:model/variants/build") { request, context in
            let model = try context.parameters.require("model")
            let body = try await JSON.decode(VariantBuildRequest.self, request, limit: 64 * 1024)
            return try JSON.response(try await builder.build(model: model, body), status: .created)
        }
    }
}
