import FleetCore
import Foundation
import Hummingbird

/// The operator's side of failure handling: a release that failed on a device is held there until
/// the operator retries it (or a newer release replaces it).
extension OperatorRoutes {
    func registerRecovery(_ routes: Audiences) {
        routes.operators.post("/v1/rollouts/:rid/retry") { request, context in
            let rollout = try await rolloutRecord(context)()
            let body = try await JSON.decode(RolloutRetryRequest.self, request, limit: Self.bodyLimit)
            var devices: [String]? = nil
            if let id = body.device {
                guard Name.isValid(id) else { throw APIError(.badRequest, "invalid-device", "'\(id)' is not a valid device id") }
                guard try await store.device(id) != nil else { throw APIError(.notFound, "unknown-device", "no device \(id)") }
                devices = [id]
            }
            if let c = body.cell {
                let key = try Self.cellKey(c)
                let members =
                    Targeting.members(
                        of: rollout, devices: try await store.deviceCells(),
                        inForce: try await store.activeRollouts())[key]?.map(\.id) ?? []
                devices = devices.map { d in d.filter(Set(members).contains) } ?? members
            }
            let who = actor(request, context)
            let now = clock()
            let cleared = try await store.clearFailures(release: rollout.releaseId, devices: devices, by: who, at: now)
            let ids = cleared.map(\.deviceId).sorted()
            try await store.recordAction(
                rollout: rollout.id,
                RolloutActionRecord(
                    at: now, actor: who, action: "retry", cell: body.cell,
                    detail: "\(ids.count) device(s) sent \(rollout.releaseId) again" + (body.device.map { " (device \($0))" } ?? "")))
            return try JSON.response(RolloutRetryResult(rollout: rollout.id, release: rollout.releaseId, retried: ids))
        }
    }

    static func cellKey(_ c: String) throws -> CellKey {
        guard let key = CellKey(parsing: c) else { throw APIError(.badRequest, "invalid-cell", "a cell is CLASS/TIER or WAVE:CLASS/TIER") }
        return key
    }
}
