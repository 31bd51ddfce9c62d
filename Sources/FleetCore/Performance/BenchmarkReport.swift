/// What the operator's benchmark measured on a staged model, before it went live: the JSON its
/// command prints on stdout, plus the energy the agent read from the device's counters.
public struct BenchmarkReport: Codable, Equatable, Sendable {
    public var latencyP50Ms: Double
    public var latencyP95Ms: Double?
    /// Inferences the benchmark ran (needed to turn an energy counter into joules per inference).
    public var iterations: Int?
    public var peakMemoryBytes: Int64?
    public var joulesPerInference: Double?
    /// Where the energy figure came from: `counter` (the device's energy counters, read by the
    /// agent around the run), `command` (the benchmark's own figure); nil with `energyUnavailable`.
    public var energySource: String?
    public var energyUnavailable: String?

    public init(
        latencyP50Ms: Double, latencyP95Ms: Double? = nil, iterations: Int? = nil, peakMemoryBytes: Int64? = nil,
        joulesPerInference: Double? = nil, energySource: String? = nil, energyUnavailable: String? = nil
    ) {
        self.latencyP50Ms = latencyP50Ms; self.latencyP95Ms = latencyP95Ms; self.iterations = iterations
        self.peakMemoryBytes = peakMemoryBytes; self.joulesPerInference = joulesPerInference
        self.energySource = energySource; self.energyUnavailable = energyUnavailable
    }

    public enum Problem: String, Error, Sendable {
        case notJSON = "not-json"
        case missingLatency = "missing-latency"
        case outOfRange = "out-of-range"
    }

    /// The command's stdout, checked: finite, non-negative, p95 not below p50, sizes that make sense.
    public static func parse(_ bytes: [UInt8]) throws(Problem) -> BenchmarkReport {
        let r: BenchmarkReport
        do { r = try FleetJSON.decode(BenchmarkReport.self, from: Data(bytes), limit: 64 * 1024) } catch {
            throw bytes.contains(UInt8(ascii: "{")) ? .missingLatency : .notJSON
        }
        func ok(_ v: Double?) -> Bool { v.map { $0.isFinite && $0 >= 0 && $0 < 86_400_000 } ?? true }
        guard ok(r.latencyP50Ms), ok(r.latencyP95Ms), ok(r.joulesPerInference),
            (r.latencyP95Ms ?? r.latencyP50Ms) >= r.latencyP50Ms,
            (r.iterations ?? 1) > 0, (r.peakMemoryBytes ?? 0) >= 0
        else { throw .outOfRange }
        return r
    }
}

/// What the fleet measured of one artifact on one hardware class: the median over the devices
/// of each device's latest figures (a benchmark before it went live, or runtime metrics since).
public struct VariantMeasurement: Codable, Equatable, Sendable {
    public var sha256: String
    public var variant: String?
    public var hardwareClass: String
    public var devices: Int
    public var latencyP50Ms: Double?
    public var latencyP95Ms: Double?
    public var peakMemoryBytes: Int64?
    public var joulesPerInference: Double?
    public var energyDevices: Int

    public init(
        sha256: String, variant: String? = nil, hardwareClass: String, devices: Int, latencyP50Ms: Double? = nil,
        latencyP95Ms: Double? = nil, peakMemoryBytes: Int64? = nil, joulesPerInference: Double? = nil, energyDevices: Int = 0
    ) {
        self.sha256 = sha256; self.variant = variant; self.hardwareClass = hardwareClass; self.devices = devices
        self.latencyP50Ms = latencyP50Ms; self.latencyP95Ms = latencyP95Ms; self.peakMemoryBytes = peakMemoryBytes
        self.joulesPerInference = joulesPerInference; self.energyDevices = energyDevices
    }

    /// One device's latest figures for one artifact.
    public struct Sample: Equatable, Sendable {
        public var device: String
        public var hardwareClass: String
        public var sha256: String
        public var latencyP50Ms: Double?
        public var latencyP95Ms: Double?
        public var peakMemoryBytes: Int64?
        public var joulesPerInference: Double?
        public init(
            device: String, hardwareClass: String, sha256: String, latencyP50Ms: Double?, latencyP95Ms: Double? = nil,
            peakMemoryBytes: Int64? = nil, joulesPerInference: Double? = nil
        ) {
            self.device = device; self.hardwareClass = hardwareClass; self.sha256 = sha256; self.latencyP50Ms = latencyP50Ms
            self.latencyP95Ms = latencyP95Ms; self.peakMemoryBytes = peakMemoryBytes; self.joulesPerInference = joulesPerInference
        }
    }

    /// Per (artifact, class): medians over devices, one sample per device (the caller passes each
    /// device's latest).
    public static func aggregate(_ samples: [Sample]) -> [VariantMeasurement] {
        func median(_ xs: [Double]) -> Double? {
            guard !xs.isEmpty else { return nil }
            let s = xs.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        let groups = Dictionary(grouping: samples) { "\($0.sha256)\u{0}\($0.hardwareClass)" }
        return groups.values.compactMap { g -> VariantMeasurement? in
            guard let first = g.first else { return nil }
            let joules = g.compactMap(\.joulesPerInference)
            let memory = median(g.compactMap { $0.peakMemoryBytes.map(Double.init) })
            return VariantMeasurement(
                sha256: first.sha256, hardwareClass: first.hardwareClass,
                devices: Set(g.map(\.device)).count, latencyP50Ms: median(g.compactMap(\.latencyP50Ms)),
                latencyP95Ms: median(g.compactMap(\.latencyP95Ms)), peakMemoryBytes: memory.map { Int64($0) },
                joulesPerInference: median(joules), energyDevices: joules.count)
        }.sorted { ($0.hardwareClass, $0.sha256) < ($1.hardwareClass, $1.sha256) }
    }
}
