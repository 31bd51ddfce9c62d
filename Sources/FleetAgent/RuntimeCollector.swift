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

    public init(
        model: String, latenciesMs: [Double]? = nil, latencyP50Ms: Double? = nil, latencyP95Ms: Double? = nil,
        requests: Int? = nil, errors: Int? = nil, crashes: Int? = nil
    ) {
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
        guard values.allSatisfy({ $0.isFinite && $0 >= 0 && $0 < 86_400_000 }) else {
            return "latencies must be finite, non-negative milliseconds"
        }
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
        /// Summaries reported without raw latencies, as running sums weighted by their request
        /// counts: constant memory however many arrive.
        var p50Sum = 0.0, p50Weight = 0.0, p95Sum = 0.0, p95Weight = 0.0
        var requests: Int = 0
        /// Errors of reports that said how many requests they served, and those requests.
        var errors: Int = 0
        var requestsWithErrors: Int = 0
        var crashes: Int = 0
    }

    /// Counts saturate here instead of overflowing, whatever a local client sends.
    static let countCap = 1 << 52

    static func add(_ a: Int, _ b: Int) -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? countCap : min(sum, countCap)
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
            if samples.isEmpty {
                let weight = Double(max(r.requests ?? 1, 1))
                if let p50 = r.latencyP50Ms { w.p50Sum += p50 * weight; w.p50Weight += weight }
                if let p95 = r.latencyP95Ms { w.p95Sum += p95 * weight; w.p95Weight += weight }
            }
            let served = r.requests ?? samples.count
            w.requests = Self.add(w.requests, served)
            // Errors count against the requests of the same report; a report without requests has none.
            if r.requests != nil || !samples.isEmpty {
                w.errors = Self.add(w.errors, r.errors ?? 0)
                w.requestsWithErrors = Self.add(w.requestsWithErrors, served)
            }
            w.crashes = Self.add(w.crashes, r.crashes ?? 0)
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
            } else {
                if w.p50Weight > 0 { m.latencyP50Ms = w.p50Sum / w.p50Weight }
                if w.p95Weight > 0 { m.latencyP95Ms = w.p95Sum / w.p95Weight }
            }
            if w.requestsWithErrors > 0 { m.errorRate = min(1, Double(w.errors) / Double(w.requestsWithErrors)) }
            out[model] = m
        }
        return out
    }

    /// Nearest-rank quantile of sorted values.
    static func quantile(_ sorted: [Double], _ q: Double) -> Double {
        let rank = Int((q * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }
}
