import FleetCore
import Foundation
import Hummingbird

/// The fleet's performance table: what devices measured of each variant, per hardware class.
struct PerformanceRoutes: Sendable {
    let store: any FleetStore
    let performance: PerformanceBook
    let metrics: ControllerMetrics

    func register(_ router: Router<FleetRequestContext>) {
        router.get("/v1/models/:model/perf") { _, context in
            let model = try context.parameters.require("model")
            guard try await store.model(model) != nil else { throw APIError(.notFound, "unknown-model", "no model \(model)") }
            return try JSON.response(try await performance.table(model: model))
        }
    }

    /// Every model's table as gauges, for /metrics.
    func recordMetrics() async throws {
        for m in try await store.models() {
            for row in try await performance.table(model: m.name) {
                let labels = [("model", m.name), ("variant", row.variant ?? row.sha256), ("hardware_class", row.hardwareClass)]
                metrics.registry.makeGauge(name: "edgefleet_variant_measured_devices", labels: labels,
                                           help: "Devices whose figures make up the variant's performance on the class").set(Int64(row.devices))
                if let p50 = row.latencyP50Ms {
                    metrics.registry.makeGauge(name: "edgefleet_variant_latency_p50_ms", labels: labels,
                                               help: "Median over devices of each device's p50 inference latency").set(p50)
                }
                if let p95 = row.latencyP95Ms {
                    metrics.registry.makeGauge(name: "edgefleet_variant_latency_p95_ms", labels: labels,
                                               help: "Median over devices of each device's p95 inference latency").set(p95)
                }
                if let mem = row.peakMemoryBytes {
                    metrics.registry.makeGauge(name: "edgefleet_variant_peak_memory_bytes", labels: labels,
                                               help: "Median peak memory of the benchmark").set(mem)
                }
                if let j = row.joulesPerInference {
                    metrics.registry.makeGauge(name: "edgefleet_variant_joules_per_inference", labels: labels,
                                               help: "Median energy per inference, from devices with energy counters").set(j)
                }
            }
        }
    }
}
