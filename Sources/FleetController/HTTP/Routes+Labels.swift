import FleetCore
import Hummingbird

/// The operator's labels of a device, and where each effective label came from.
extension OperatorRoutes {
    func registerLabels(_ routes: Audiences) {
        routes.operators.post("/v1/devices/:id/labels") { request, context in
            let id = try deviceID(context)
            let body = try await JSON.decode(LabelUpdate.self, request, limit: Self.bodyLimit)
            try LabelRequests.validate(keys: body.remove)
            try LabelRequests.validate(body.set)
            guard let device = try await store.updateOperatorLabels(deviceId: id, set: body.set, remove: body.remove) else {
                throw APIError(.notFound, "unknown-device", "no device \(id)")
            }
            context.logger.notice(
                "device labels changed",
                metadata: [
                    "device": "\(id)", "set": "\(body.set.keys.sorted())", "removed": "\(body.remove.sorted())",
                    "by": "\(actor(request, context))"
                ])
            return try JSON.response(deviceInfo(device, try await store.assignments()))
        }
    }

    /// Which source each effective label came from (the highest that sets it).
    static func labelSources(_ d: DeviceRecord) -> [String: String] {
        var out: [String: String] = [:]
        for k in (d.facts.labels ?? [:]).keys { out[k] = "agent" }
        for k in d.enrolledLabels.keys { out[k] = "enrollment" }
        for k in d.operatorLabels.keys { out[k] = "operator" }
        return out
    }
}
