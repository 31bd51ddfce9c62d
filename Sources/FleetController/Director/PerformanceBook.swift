import FleetCore

/// The fleet's performance table per model: latency, memory and energy per (artifact, hardware
/// class), from the devices' benchmarks and runtime metrics. Read on every check-in, so it is
/// kept for a few seconds rather than aggregated each time.
actor PerformanceBook {
    let store: any FleetStore
    let clock: @Sendable () -> Int64
    let maxAgeSeconds: Int64
    private var cache: [String: (at: Int64, table: [VariantMeasurement])] = [:]

    init(store: any FleetStore, clock: @escaping @Sendable () -> Int64, maxAgeSeconds: Int64 = 10) {
        self.store = store; self.clock = clock; self.maxAgeSeconds = maxAgeSeconds
    }

    func table(model: String) async throws -> [VariantMeasurement] {
        let now = clock()
        if let c = cache[model], now - c.at < maxAgeSeconds, now >= c.at { return c.table }
        let names = Dictionary(
            try await store.variants(model: model).map { ($0.variant.sha256, $0.variant.name) }, uniquingKeysWith: { a, _ in a })
        var table = VariantMeasurement.aggregate(try await store.performanceSamples(model: model))
        for i in table.indices { table[i].variant = names[table[i].sha256] }
        cache[model] = (now, table)
        return table
    }

    /// Figures of `model` on one class, by artifact.
    func measurements(model: String, hardwareClass: String) async throws -> [String: VariantMeasurement] {
        Dictionary(
            try await table(model: model).filter { $0.hardwareClass == hardwareClass }.map { ($0.sha256, $0) },
            uniquingKeysWith: { a, _ in a })
    }
}
