/// Variant choice per device: a pure function with a reason for every candidate.
public struct Candidate: Equatable, Sendable {
    public var variant: CatalogVariant
    public var quality: Double?        // mean cosine vs the base, when measured
    /// Bytes the device would download: a delta against what it runs, when one is built.
    public var transferSize: Int64?

    public init(variant: CatalogVariant, quality: Double? = nil, transferSize: Int64? = nil) {
        self.variant = variant
        self.quality = quality
        self.transferSize = transferSize
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

    public init(minQuality: Double? = nil, maxMemoryFraction: Double = 0.5, diskFactor: Double = 2.0) {
        self.minQuality = minQuality
        self.maxMemoryFraction = maxMemoryFraction
        self.diskFactor = diskFactor
    }
}

public enum VariantSelector {
    public static func select(facts: DeviceFacts, hardwareClass: HardwareClass?, tier: BandwidthTier?,
                              candidates: [Candidate], installedSha256: String? = nil,
                              policy: SelectionPolicy = SelectionPolicy()) -> Selection {
        var verdicts: [CandidateVerdict] = []
        var eligible: [(index: Int, rank: Int, c: Candidate)] = []
        var budgetBlocked: [(rank: Int, c: Candidate)] = []
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
            guard let rank = hw.formats.firstIndex(of: v.dtype) else {
                verdicts.append(verdict(false, "\(v.dtype) is not a format class \(hw.name) runs (\(hw.formats.joined(separator: ", ")))"))
                continue
            }
            if let min = policy.minQuality {
                if let q = c.quality {
                    if q < min { verdicts.append(verdict(false, "measured mean cosine \(q) is below the model's floor \(min)")); continue }
                } else if !c.isReference {
                    // A floor is a promise about measured quality: a derived variant nobody measured cannot keep it.
                    verdicts.append(verdict(false, "quality not measured; the model's floor is \(min)")); continue
                }
            }
            if let max = hw.maxModelBytes, v.size > max {
                verdicts.append(verdict(false, "\(ByteCount.format(v.size)) exceeds class limit \(ByteCount.format(max))")); continue
            }
            let memLimit = Int64(Double(facts.memoryBytes) * policy.maxMemoryFraction)
            if v.size > memLimit {
                verdicts.append(verdict(false, "\(ByteCount.format(v.size)) does not fit in \(ByteCount.format(facts.memoryBytes)) memory")); continue
            }
            let diskNeed = Int64(Double(v.size) * policy.diskFactor)
            if v.sha256 != installedSha256, diskNeed > facts.diskFreeBytes {
                verdicts.append(verdict(false, "needs \(ByteCount.format(diskNeed)) free disk, device has \(ByteCount.format(facts.diskFreeBytes))")); continue
            }
            let transfer = c.transferSize ?? v.size
            if let budget = tier?.budgetBytes, v.sha256 != installedSha256, transfer > budget {
                verdicts.append(verdict(false, "\(ByteCount.format(transfer)) download exceeds the \(tier!.name) budget of \(ByteCount.format(budget))"))
                budgetBlocked.append((rank, c))
                continue
            }
            let via = c.transferSize.map { " via a \(ByteCount.format($0)) delta" } ?? ""
            verdicts.append(verdict(true, "runs \(v.dtype) (preference \(rank + 1) of \(hw.name))\(via)"))
            eligible.append((verdicts.count - 1, rank, c))
        }
        // Best format for the class first, then measured quality, then the fewer bytes to download.
        let best = eligible.min { a, b in
            if a.rank != b.rank { return a.rank < b.rank }
            let qa = a.c.quality ?? 0, qb = b.c.quality ?? 0
            if qa != qb { return qa > qb }
            let ta = a.c.transferSize ?? a.c.variant.size, tb = b.c.transferSize ?? b.c.variant.size
            if ta != tb { return ta < tb }
            return a.c.variant.name < b.c.variant.name
        }
        if let best {
            verdicts[best.index].chosen = true
            verdicts[best.index].reason = "chosen: " + verdicts[best.index].reason
            for i in verdicts.indices where verdicts[i].eligible && i != best.index {
                verdicts[i].reason = "eligible, but \(best.c.variant.name) ranks higher: " + verdicts[i].reason
            }
        }
        let overBudget = best == nil && !budgetBlocked.isEmpty
        return Selection(hardwareClass: hardwareClass?.name, tier: tier?.name, chosen: best?.c.variant.name,
                         verdicts: verdicts, overBudget: overBudget)
    }
}
