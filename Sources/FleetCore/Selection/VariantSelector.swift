/// Variant choice per device: a pure function with a reason for every candidate.
public struct Candidate: Equatable, Sendable {
    public var variant: CatalogVariant
    public var quality: Double?  // mean cosine vs the base, when measured
    /// Bytes the device would download: a delta against what it runs, when one is built.
    public var transferSize: Int64?
    /// What the fleet measured of this artifact on the device's hardware class.
    public var measured: VariantMeasurement?

    public init(variant: CatalogVariant, quality: Double? = nil, transferSize: Int64? = nil, measured: VariantMeasurement? = nil) {
        self.variant = variant
        self.quality = quality
        self.transferSize = transferSize
        self.measured = measured
    }

    /// The model as registered, fp32 and derived from nothing: what the others are measured against,
    /// so it passes a quality floor without a measurement.
    public var isReference: Bool { variant.lineage == nil && variant.dtype == "fp32" }
}

public struct CandidateVerdict: Codable, Equatable, Sendable {
    public var variant: String
    public var dtype: String
    public var size: Int64
    public var eligible: Bool
    public var chosen: Bool
    public var reason: String
}

public struct Selection: Codable, Equatable, Sendable {
    public var hardwareClass: String?
    public var tier: String?
    public var chosen: String?
    public var verdicts: [CandidateVerdict]
    /// Set when the only thing that rules out the best variant is the tier's byte budget.
    public var overBudget: Bool
}

public struct SelectionPolicy: Equatable, Sendable {
    public var minQuality: Double?
    /// A model needs about its size in memory plus working space; a variant larger than this
    /// fraction of device memory is not sent.
    public var maxMemoryFraction: Double
    /// Room needed on disk: the new slot plus the download, kept beside the current slot.
    public var diskFactor: Double
    /// Devices of a class that must have measured a variant before its figures rank it.
    public var minMeasuredDevices: Int

    public init(minQuality: Double? = nil, maxMemoryFraction: Double = 0.5, diskFactor: Double = 2.0, minMeasuredDevices: Int = 3) {
        self.minQuality = minQuality
        self.maxMemoryFraction = maxMemoryFraction
        self.diskFactor = diskFactor
        self.minMeasuredDevices = max(minMeasuredDevices, 1)
    }
}

public enum VariantSelector {
    /// "int8-dyn p50 1.6 ms on 12 devices of x86-avx512-vnni".
    public static func figure(_ name: String, _ m: VariantMeasurement) -> String {
        var s = "\(name) p50 \(ms(m.latencyP50Ms ?? 0))"
        if let p95 = m.latencyP95Ms { s += " p95 \(ms(p95))" }
        if let j = m.joulesPerInference { s += ", \(formatNumber(j)) J/inference" }
        return s + " on \(m.devices) device\(m.devices == 1 ? "" : "s") of \(m.hardwareClass)"
    }

    static func ms(_ v: Double) -> String { formatNumber(v) + " ms" }

    static func formatNumber(_ v: Double) -> String {
        let r = (v * 100).rounded() / 100
        return r == r.rounded() ? String(Int(r)) : String(r)
    }

    public static func select(
        facts: DeviceFacts, hardwareClass: HardwareClass?, tier: BandwidthTier?,
        candidates: [Candidate], installedSha256: String? = nil,
        policy: SelectionPolicy = SelectionPolicy()
    ) -> Selection {
        var verdicts: [CandidateVerdict] = []
        var eligible: [(index: Int, rank: Int, c: Candidate)] = []
        var budgetBlocked: [(rank: Int, c: Candidate)] = []
        func enough(_ m: VariantMeasurement?) -> VariantMeasurement? {
            guard let m, m.devices >= policy.minMeasuredDevices, m.latencyP50Ms != nil else { return nil }
            return m
        }
        // The fastest fp32 measured here: the line a quantized variant must beat to be chosen.
        let fp32Figure = candidates.filter { $0.variant.dtype == "fp32" }
            .compactMap { c in enough(c.measured).flatMap { m in m.latencyP50Ms.map { (name: c.variant.name, m: m, p50: $0) } } }
            .min { $0.p50 < $1.p50 }
        for c in candidates {
            let v = c.variant
            func verdict(_ ok: Bool, _ reason: String) -> CandidateVerdict {
                CandidateVerdict(variant: v.name, dtype: v.dtype, size: v.size, eligible: ok, chosen: false, reason: reason)
            }
            guard let hw = hardwareClass else {
                verdicts.append(verdict(false, "device matches no hardware class"))
                continue
            }
            if let unmet = v.requires.unmet(by: facts) {
                verdicts.append(verdict(false, unmet)); continue
            }
            // An agent binary is not a model: the class's number formats, quality floor and model
            // size limit say nothing about it (its `requires` pick the architecture).
            let isAgent = v.format == ReleaseKind.agentFormat
            guard let rank = isAgent ? 0 : hw.formats.firstIndex(of: v.dtype) else {
                verdicts.append(verdict(false, "\(v.dtype) is not a format class \(hw.name) runs (\(hw.formats.joined(separator: ", ")))"))
                continue
            }
            if !isAgent, let min = policy.minQuality {
                if let q = c.quality {
                    if q < min { verdicts.append(verdict(false, "measured mean cosine \(q) is below the model's floor \(min)")); continue }
                } else if !c.isReference {
                    // A floor is a promise about measured quality: a derived variant nobody measured cannot keep it.
                    verdicts.append(verdict(false, "quality not measured; the model's floor is \(min)")); continue
                }
            }
            if !isAgent, let max = hw.maxModelBytes, v.size > max {
                verdicts.append(verdict(false, "\(ByteCount.format(v.size)) exceeds class limit \(ByteCount.format(max))")); continue
            }
            let memLimit = Int64(Double(facts.memoryBytes) * policy.maxMemoryFraction)
            if v.size > memLimit {
                verdicts.append(
                    verdict(false, "\(ByteCount.format(v.size)) does not fit in \(ByteCount.format(facts.memoryBytes)) memory"));
                continue
            }
            let diskNeed = Int64(Double(v.size) * policy.diskFactor)
            if v.sha256 != installedSha256, diskNeed > facts.diskFreeBytes {
                verdicts.append(
                    verdict(false, "needs \(ByteCount.format(diskNeed)) free disk, device has \(ByteCount.format(facts.diskFreeBytes))"));
                continue
            }
            let transfer = c.transferSize ?? v.size
            if let budget = tier?.budgetBytes, v.sha256 != installedSha256, transfer > budget {
                verdicts.append(
                    verdict(false, "\(ByteCount.format(transfer)) download exceeds the \(tier!.name) budget of \(ByteCount.format(budget))")
                )
                budgetBlocked.append((rank, c))
                continue
            }
            let via = c.transferSize.map { " via a \(ByteCount.format($0)) delta" } ?? ""
            // Measured slower than fp32 on this class: never the class's choice, whatever its format.
            if let m = enough(c.measured), let mine = m.latencyP50Ms, let fp32 = fp32Figure, c.variant.dtype != "fp32", mine > fp32.p50 {
                verdicts.append(
                    verdict(
                        false,
                        "measured slower than fp32 on \(hw.name): " + Self.figure(v.name, m) + "; fp32 " + Self.figure(fp32.name, fp32.m)))
                continue
            }
            let measuredText = enough(c.measured).map { "; " + Self.figure(v.name, $0) } ?? ""
            verdicts.append(verdict(true, "runs \(v.dtype) (preference \(rank + 1) of \(hw.name))\(via)\(measuredText)"))
            eligible.append((verdicts.count - 1, rank, c))
        }
        // By measurement, once two or more eligible variants have enough figures on the class:
        // fastest (or most frugal, on a class that optimises energy) first; the others after.
        let energy = hardwareClass?.optimize == "energy"
        func objective(_ c: Candidate) -> Double? {
            guard let m = enough(c.measured) else { return nil }
            return energy ? (m.joulesPerInference ?? m.latencyP50Ms.map { _ in .greatestFiniteMagnitude }) : m.latencyP50Ms
        }
        let byMeasurement = eligible.filter { objective($0.c) != nil }.count >= 2
        // Otherwise the class's formats are the prior: best format first, then measured quality,
        // then the fewer bytes to download.
        let best = eligible.min { a, b in
            if byMeasurement {
                switch (objective(a.c), objective(b.c)) {
                case let (x?, y?) where x != y: return x < y
                case (.some, nil): return true
                case (nil, .some): return false
                default: break
                }
            }
            if a.rank != b.rank { return a.rank < b.rank }
            let qa = a.c.quality ?? 0, qb = b.c.quality ?? 0
            if qa != qb { return qa > qb }
            let ta = a.c.transferSize ?? a.c.variant.size, tb = b.c.transferSize ?? b.c.variant.size
            if ta != tb { return ta < tb }
            return a.c.variant.name < b.c.variant.name
        }
        if let best {
            verdicts[best.index].chosen = true
            verdicts[best.index].reason = (byMeasurement ? "chosen by measurement: " : "chosen: ") + verdicts[best.index].reason
            for i in verdicts.indices where verdicts[i].eligible && i != best.index {
                verdicts[i].reason = "eligible, but \(best.c.variant.name) ranks higher: " + verdicts[i].reason
            }
        }
        let overBudget = best == nil && !budgetBlocked.isEmpty
        return Selection(
            hardwareClass: hardwareClass?.name, tier: tier?.name, chosen: best?.c.variant.name,
            verdicts: verdicts, overBudget: overBudget)
    }
}
