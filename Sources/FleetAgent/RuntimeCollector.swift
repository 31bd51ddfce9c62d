import FleetCore
import Synchronization

/// What a local inference service reports to the agent: raw latencies of the requests it served
/// since its last report, or its own summary of them, plus error and crash counts.
public struct InferenceReport: Codable, Equatable, Sendable {
    public var model: String
    public var latenciesMs: [Double]?
    public var latencyP50Ms: Double?
    public var latencyP95Ms: Double?
    public var requests: Int?
    public var errors: Int?
    public var crashes: Int?

    public init(model: String, latenciesMs: [Double]? = nil, latencyP50Ms: Double? = nil, latencyP95Ms: Double? = nil,
                requests: Int? = nil, errors: Int? = nil, crashes: Int? = nil) {
        self.model = model; self.latenciesMs = latenciesMs; self.latencyP50Ms = latencyP50Ms; self.latencyP95Ms = latencyP95Ms
        self.requests = requests; self.errors = errors; self.crashes = crashes
    }

    public static let maxLatencies = 10_000

    /// Nil when the report is usable; otherwise what is wrong with it.
    public func problem() -> String? {
        guard Name.isValid(model) else { return "model '\(model.prefix(64))' is not a plain name" }
        let counts = [requests, errors, crashes].compactMap { $0 }
        guard counts.allSatisfy({ $0 >= 0 && $0 <= 1 << 40 }) else { return "counts must be between 0 and 2^40" }
        if let requests, let errors, errors > requests { return "errors (\(errors)) exceed requests (\(requests))" }
        let values = (latenciesMs ?? []) + [latencyP50Ms, latencyP95Ms].compactMap { $0 }
        guard values.allSatisfy({ $0.isFinite && $0 >= 0 && $0 < 86_400_000 }) else { return "latencies must be finite, non-negative milliseconds" }
        if (latenciesMs?.count ?? 0) > Self.maxLatencies { return "at most \(Self.maxLatencies) latencies per report" }
        if let p50 = latencyP50Ms, let p95 = latencyP95Ms, p95 < p50 { return "latencyP95Ms is below latencyP50Ms" }
        if latenciesMs == nil && latencyP50Ms == nil && latencyP95Ms == nil && requests == nil && errors == nil && crashes == nil {
            return "the report carries no figures"
        }
        return nil
    }
}

/// Accumulates inference reports per model between two check-ins and turns each model's window
/// into one `RuntimeMetrics`. Latencies are kept in a bounded reservoir, so a busy service costs
/// the agent a fixed amount of memory however much it reports.
public final class RuntimeCollector: Sendable {
    public static let reservoirSize = 4096
    public static let maxModels = 64

    struct Window {
        var reservoir: [Double] = []
        var seen: Int = 0
        /// Summaries reported without raw latencies, weighted by their request counts.
        var summaries: [(p50: Double?, p95: Double?, weight: Double)] = []
        var requests: Int = 0
        var errors: Int = 0
        var crashes: Int = 0
        var reports: Int = 0
    }

    private let windows = Mutex<[String: Window]>([:])
    private let rng = Mutex(SeededGenerator(seed: 0x5eed_f1ee7))

    public init() {}

    public enum RecordError: Error, Equatable { case invalid(String), tooManyModels }

    public func record(_ r: InferenceReport) throws(RecordError) {
        if let problem = r.problem() { throw .invalid(problem) }
        try windows.withLock { (all: inout [String: Window]) throws(RecordError) in
            if all[r.model] == nil && all.count >= Self.maxModels { throw .tooManyModels }
            var w = all[r.model] ?? Window()
            w.reports += 1
            let samples = r.latenciesMs ?? []
            for x in samples {
                w.seen += 1
                if w.reservoir.count < Self.reservoirSize {
                    w.reservoir.append(x)
                } else {
                    // Reservoir sampling: each latency seen so far stays with equal probability.
                    let j = rng.withLock { $0.next() } % UInt64(w.seen)
                    if j < UInt64(Self.reservoirSize) { w.reservoir[Int(j)] = x }
                }
            }
            if samples.isEmpty, r.latencyP50Ms != nil || r.latencyP95Ms != nil {
                w.summaries.append((r.latencyP50Ms, r.latencyP95Ms, Double(max(r.requests ?? 1, 1))))
            }
            w.requests += r.requests ?? samples.count
            w.errors += r.errors ?? 0
            w.crashes += r.crashes ?? 0
            all[r.model] = w
        }
    }

    /// The figures gathered since the last drain, per model; the windows start again empty.
    public func drain() -> [String: RuntimeMetrics] {
        let taken = windows.withLock { all in
            let t = all
            all = [:]
            return t
        }
        var out: [String: RuntimeMetrics] = [:]
        for (model, w) in taken {
            var m = RuntimeMetrics(requests: w.requests, crashes: w.crashes)
            if !w.reservoir.isEmpty {
                let s = w.reservoir.sorted()
                m.latencyP50Ms = Self.quantile(s, 0.50)
                m.latencyP95Ms = Self.quantile(s, 0.95)
            } else if !w.summaries.isEmpty {
                m.latencyP50Ms = Self.weightedMean(w.summaries.compactMap { s in s.p50.map { ($0, s.weight) } })
                m.latencyP95Ms = Self.weightedMean(w.summaries.compactMap { s in s.p95.map { ($0, s.weight) } })
            }
            if w.requests > 0 { m.errorRate = Double(w.errors) / Double(w.requests) }
            out[model] = m
        }
        return out
    }

    /// Nearest-rank quantile of sorted values.
    static func quantile(_ sorted: [Double], _ q: Double) -> Double {
        let rank = Int((q * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    static func weightedMean(_ xs: [(Double, Double)]) -> Double? {
        let total = xs.reduce(0) { $0 + $1.1 }
        guard total > 0 else { return nil }
        return xs.reduce(0) { $0 + $1.0 * $1.1 } / total
    }
}
