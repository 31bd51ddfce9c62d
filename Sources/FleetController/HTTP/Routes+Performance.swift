import FleetCore
import Foundation
import Hummingbird

/// The fleet's performance table: what devices measured of each variant, per hardware class.
struct PerformanceRoutes: Sendable {
    let store: any FleetStore
    let performance: PerformanceBook
    let metrics: ControllerMetrics
    let clock: @Sendable () -> Int64

    func register(_ routes: Audiences) {
        routes.viewers.get("/v1/models/:model/perf") { _, context in
            let model = try context.parameters.require("model")
            guard try await store.model(model) != nil else { throw APIError(.notFound, "unknown-model", "no model \(model)") }
            return try JSON.response(try await performance.table(model: model))
        }
        routes.operators.post("/v1/models/:model/trials") { request, context in
            let model = try context.parameters.require("model")
            let body = try await JSON.decode(NewTrial.self, request, limit: 64 * 1024)
            return try JSON.response(try await startTrial(model: model, body, actor: "operator"), status: .created)
        }
        routes.viewers.get("/v1/models/:model/trials") { _, context in
            let model = try context.parameters.require("model")
            guard try await store.model(model) != nil else { throw APIError(.notFound, "unknown-model", "no model \(model)") }
            var out: [TrialInfo] = []
            for t in try await store.trials(model: model) { out.append(try await info(t)) }
            return try JSON.response(out)
        }
    }

    /// A trial measures `variants` of the release in force on `devices` devices of a class, chosen
    /// by a stable hash, through the normal signed path.
    func startTrial(model: String, _ body: NewTrial, actor: String) async throws -> TrialInfo {
        guard try await store.model(model) != nil else { throw APIError(.notFound, "unknown-model", "no model \(model)") }
        guard (1...1000).contains(body.devices) else { throw APIError(.badRequest, "invalid-devices", "devices must be 1 to 1000") }
        guard !body.variants.isEmpty, body.variants.count <= 16, body.variants.allSatisfy(Name.isValid) else {
            throw APIError(.badRequest, "invalid-variants", "give 1 to 16 variant names")
        }
        guard let rollout = try await store.activeRollouts().first(where: { $0.model == model && $0.state != .aborted }),
            let release = try await store.release(rollout.releaseId)
        else {
            throw APIError(
                .conflict, "no-release-in-force", "model \(model) has no rollout in force: a trial measures variants of its release")
        }
        let names = Set(release.catalog.variants.map(\.name))
        if let missing = body.variants.first(where: { !names.contains($0) }) {
            throw APIError(
                .badRequest, "unknown-variant", "\(missing) is not in \(release.id) (has: \(names.sorted().joined(separator: ", ")))")
        }
        let members = try await store.deviceCells().filter { $0.hardwareClass == body.hardwareClass }.map(\.id)
        guard !members.isEmpty else { throw APIError(.conflict, "no-devices", "no device of class \(body.hardwareClass) is known") }
        let chosen = members.sorted {
            Cohort.position(rollout: "trial:\(model)", device: $0) < Cohort.position(rollout: "trial:\(model)", device: $1)
        }
        .prefix(body.devices)
        let t = try await store.createTrial(
            TrialRecord(
                id: 0, model: model, release: release.id, hardwareClass: body.hardwareClass,
                variants: body.variants, devices: Array(chosen), state: .running,
                createdAt: clock(), createdBy: actor))
        return try await info(t)
    }

    /// A trial is done once each of its devices has figures for every variant. A device that cannot
    /// run a variant (it does not fit) skips it and goes back to its model, and the trial stays
    /// `running` for it.
    func info(_ t: TrialRecord) async throws -> TrialInfo {
        let shas =
            try await store.release(t.release).map {
                Dictionary($0.catalog.variants.map { ($0.name, $0.sha256) }, uniquingKeysWith: { a, _ in a })
            } ?? [:]
        var measured: [String: [String]] = [:]
        for d in t.devices {
            let have = try await store.measuredArtifacts(model: t.model, deviceId: d)
            measured[d] = t.variants.filter { shas[$0].map(have.contains) ?? false }
        }
        var state = t.state
        if state == .running, measured.values.allSatisfy({ $0.count == t.variants.count }) {
            state = .done
            try await store.setTrialState(t.id, state.rawValue)
        }
        return TrialInfo(
            id: t.id, model: t.model, release: t.release, hardwareClass: t.hardwareClass, variants: t.variants,
            devices: t.devices, state: state, measured: measured)
    }

    /// Every model's table as gauges, for /metrics.
    func recordMetrics() async throws {
        for m in try await store.models() {
            for row in try await performance.table(model: m.name) {
                let labels = [("model", m.name), ("variant", row.variant ?? row.sha256), ("hardware_class", row.hardwareClass)]
                metrics.registry.makeGauge(
                    name: "edgefleet_variant_measured_devices", labels: labels,
                    help: "Devices whose figures make up the variant's performance on the class"
                ).set(Int64(row.devices))
                if let p50 = row.latencyP50Ms {
                    metrics.registry.makeGauge(
                        name: "edgefleet_variant_latency_p50_ms", labels: labels,
                        help: "Median over devices of each device's p50 inference latency"
                    ).set(p50)
                }
                if let p95 = row.latencyP95Ms {
                    metrics.registry.makeGauge(
                        name: "edgefleet_variant_latency_p95_ms", labels: labels,
                        help: "Median over devices of each device's p95 inference latency"
                    ).set(p95)
                }
                if let mem = row.peakMemoryBytes {
                    metrics.registry.makeGauge(
                        name: "edgefleet_variant_peak_memory_bytes", labels: labels,
                        help: "Median peak memory of the benchmark"
                    ).set(mem)
                }
                if let j = row.joulesPerInference {
                    metrics.registry.makeGauge(
                        name: "edgefleet_variant_joules_per_inference", labels: labels,
                        help: "Median energy per inference, from devices with energy counters"
                    ).set(j)
                }
            }
        }
    }
}
