import Testing
@testable import FleetCore

@Suite struct VariantSelectorTests {
    typealias F = Fixture

    private let all = [Candidate(variant: F.fp32), Candidate(variant: F.fp16), Candidate(variant: F.int8)]

    private func select(
        facts: DeviceFacts = Fixture.facts, hw: HardwareClass? = Fixture.avx2Class,
        tier: BandwidthTier? = nil, _ candidates: [Candidate], installed: String? = nil,
        policy: SelectionPolicy = SelectionPolicy()
    ) -> Selection {
        VariantSelector.select(
            facts: facts, hardwareClass: hw, tier: tier, candidates: candidates,
            installedSha256: installed, policy: policy)
    }

    private func verdict(_ s: Selection, _ v: CatalogVariant) -> CandidateVerdict? {
        s.verdicts.first { $0.variant == v.name }
    }

    /// Every candidate has exactly one verdict, in candidate order, with a reason; at most one is
    /// chosen and it is eligible and is the one named in `chosen`.
    private func checkVerdicts(_ s: Selection, _ candidates: [Candidate], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(s.verdicts.map(\.variant) == candidates.map(\.variant.name), sourceLocation: sourceLocation)
        for (v, c) in zip(s.verdicts, candidates) {
            #expect(!v.reason.isEmpty, sourceLocation: sourceLocation)
            #expect(v.dtype == c.variant.dtype && v.size == c.variant.size, sourceLocation: sourceLocation)
            #expect(!v.chosen || v.eligible, sourceLocation: sourceLocation)
        }
        let chosen = s.verdicts.filter(\.chosen)
        #expect(chosen.count <= 1, sourceLocation: sourceLocation)
        #expect(chosen.first?.variant == s.chosen, sourceLocation: sourceLocation)
    }

    // MARK: Preference

    @Test func choosesTheClassesPreferredFormat() {
        let s = select(all)
        checkVerdicts(s, all)
        #expect(s.hardwareClass == "x86-avx2")
        #expect(s.chosen == F.int8.name)
        #expect(s.overBudget == false)
        #expect(s.verdicts.map(\.eligible) == [true, true, true])
        #expect(s.verdicts.map(\.chosen) == [false, false, true])
    }

    @Test func gpuClassPrefersFP16AndDoesNotRunInt8() {
        let s = select(hw: F.gpuClass, all)
        checkVerdicts(s, all)
        #expect(s.chosen == F.fp16.name)
        #expect(verdict(s, F.int8)?.eligible == false)
        #expect(verdict(s, F.fp32)?.eligible == true)
    }

    @Test func preferenceOrderOfTheClassDecides() {
        let fp32First = HardwareClass(name: "big", match: .init(), formats: ["fp32", "fp16", "int8"])
        #expect(select(hw: fp32First, all).chosen == F.fp32.name)
        let fp16Only = HardwareClass(name: "half", match: .init(), formats: ["fp16"])
        let s = select(hw: fp16Only, all)
        #expect(s.chosen == F.fp16.name)
        #expect(s.verdicts.filter(\.eligible).map(\.variant) == [F.fp16.name])
    }

    @Test func resultDoesNotDependOnCandidateOrder() {
        let candidates = all + [Candidate(variant: F.int8VNNI)]
        var vnni = F.facts
        vnni.cpuFlags.append("avx512_vnni")
        let expected = select(facts: vnni, candidates).chosen
        #expect(expected == F.int8VNNI.name)  // same rank as int8, smaller
        for perm in permutations(candidates) {
            #expect(select(facts: vnni, perm).chosen == expected)
        }
    }

    // MARK: Exclusions

    @Test func requirementsUnmetExcludeAVariant() {
        let candidates = [Candidate(variant: F.int8VNNI), Candidate(variant: F.int8)]
        let s = select(candidates)
        checkVerdicts(s, candidates)
        #expect(verdict(s, F.int8VNNI)?.eligible == false)
        #expect(s.chosen == F.int8.name)
    }

    @Test func formatNotRunByTheClassIsExcluded() {
        let int4 = F.variant("detector-int4", "int4", 50 * F.MB)
        let s = select([Candidate(variant: int4)])
        #expect(verdict(s, int4)?.eligible == false)
        #expect(s.chosen == nil)
        #expect(s.overBudget == false)
    }

    @Test func qualityUnderTheFloorIsExcluded() {
        let candidates = [
            Candidate(variant: F.int8, quality: 0.95), Candidate(variant: F.fp16, quality: 0.995),
            Candidate(variant: F.fp32, quality: 1.0)
        ]
        let s = select(candidates, policy: SelectionPolicy(minQuality: 0.99))
        checkVerdicts(s, candidates)
        #expect(verdict(s, F.int8)?.eligible == false)
        #expect(s.chosen == F.fp16.name)
        // At the floor is fine.
        #expect(select([Candidate(variant: F.int8, quality: 0.99)], policy: SelectionPolicy(minQuality: 0.99)).chosen == F.int8.name)
        // Without a floor quality only breaks ties.
        #expect(select(candidates).chosen == F.int8.name)
    }

    @Test func unmeasuredVariantFailsTheFloorButTheReferencePasses() {
        // A derived variant nobody measured is held back by a floor; the fp32 reference is not.
        let s = select([Candidate(variant: F.int8), Candidate(variant: F.fp32)], policy: SelectionPolicy(minQuality: 0.99))
        #expect(verdict(s, F.int8)?.eligible == false)
        #expect(verdict(s, F.int8)?.reason.contains("not measured") == true)
        #expect(s.chosen == F.fp32.name)
        // Without a floor an unmeasured variant is still eligible.
        #expect(select([Candidate(variant: F.int8)]).chosen == F.int8.name)
        // A derived fp32 (a pruned variant) is not a reference.
        var pruned = F.fp32
        pruned.lineage = Lineage(derivedFrom: "base", technique: "pruning")
        #expect(select([Candidate(variant: pruned)], policy: SelectionPolicy(minQuality: 0.99)).chosen == nil)
    }

    @Test func variantTooLargeForMemoryIsExcluded() {
        var small = F.facts
        small.memoryBytes = 300 * F.MB  // half is 150 MB: only int8 (100 MB) fits
        let s = select(facts: small, hw: F.gpuClass, all)
        checkVerdicts(s, all)
        #expect(s.verdicts.map(\.eligible) == [false, false, false])
        #expect(s.chosen == nil)
        #expect(s.overBudget == false)
        #expect(select(facts: small, all).chosen == F.int8.name)
        // The fraction is a policy.
        #expect(select(facts: small, hw: F.gpuClass, all, policy: SelectionPolicy(maxMemoryFraction: 0.7)).chosen == F.fp16.name)
    }

    @Test func variantTooLargeForDiskIsExcludedUnlessInstalled() {
        var tight = F.facts
        tight.diskFreeBytes = 150 * F.MB  // int8 needs 2 x 100 MB
        let s = select(facts: tight, all)
        checkVerdicts(s, all)
        #expect(s.verdicts.map(\.eligible) == [false, false, false])
        #expect(s.chosen == nil)
        // Already installed: nothing to download, no room needed.
        #expect(select(facts: tight, all, installed: F.int8.sha256).chosen == F.int8.name)
        // A smaller disk factor is a policy.
        #expect(select(facts: tight, all, policy: SelectionPolicy(diskFactor: 1.5)).chosen == F.int8.name)
    }

    @Test func variantOverTheClassLimitIsExcluded() {
        let arm = DeviceFacts(arch: "aarch64", cpuFlags: [], memoryBytes: 4 * F.GB, diskFreeBytes: 32 * F.GB)
        let bigInt8 = F.variant("detector-int8-big", "int8", 200 * F.MB)
        let candidates = [Candidate(variant: bigInt8), Candidate(variant: F.int8)]
        let s = select(facts: arm, hw: F.armClass, candidates)
        checkVerdicts(s, candidates)
        #expect(verdict(s, bigInt8)?.eligible == false)
        #expect(s.chosen == F.int8.name)
    }

    // MARK: Budget

    private let cellular = BandwidthTier(name: "cellular", metered: true, budgetBytes: 150 * Fixture.MB)

    @Test func variantOverTheTierBudgetIsHeld() {
        let s = select(hw: F.gpuClass, tier: cellular, all)
        checkVerdicts(s, all)
        #expect(s.tier == "cellular")
        #expect(s.chosen == nil)
        #expect(s.overBudget == true)
        #expect(verdict(s, F.fp16)?.eligible == false)
        #expect(verdict(s, F.fp32)?.eligible == false)
    }

    @Test func budgetIsNotReportedWhenAVariantFits() {
        let s = select(tier: cellular, all)
        #expect(s.chosen == F.int8.name)
        #expect(s.overBudget == false)
        #expect(verdict(s, F.fp16)?.eligible == false)
    }

    @Test func budgetIsNotReportedWhenSomethingElseBlocks() {
        var tiny = F.facts
        tiny.memoryBytes = 100 * F.MB  // nothing fits in memory
        let s = select(facts: tiny, hw: F.gpuClass, tier: cellular, all)
        #expect(s.chosen == nil)
        #expect(s.overBudget == false)
    }

    @Test func installedVariantIsNotChargedAgainstTheBudget() {
        let s = select(hw: F.gpuClass, tier: cellular, all, installed: F.fp16.sha256)
        #expect(s.chosen == F.fp16.name)
        #expect(s.overBudget == false)
    }

    /// A delta against what the device runs is what travels: it is charged against the budget.
    @Test func deltaUnderTheBudgetMakesAVariantEligible() {
        let candidates = [Candidate(variant: F.fp32), Candidate(variant: F.fp16, transferSize: 20 * F.MB), Candidate(variant: F.int8)]
        let s = select(hw: F.gpuClass, tier: cellular, candidates)
        checkVerdicts(s, candidates)
        #expect(s.chosen == F.fp16.name)
        #expect(s.overBudget == false)
        #expect(verdict(s, F.fp32)?.eligible == false)
    }

    @Test func deltaOverTheBudgetIsStillHeld() {
        let candidates = [Candidate(variant: F.fp16, transferSize: 160 * F.MB)]
        let s = select(hw: F.gpuClass, tier: cellular, candidates)
        #expect(s.chosen == nil)
        #expect(s.overBudget == true)
        // A delta larger than the artifact is charged as it is.
        let small = [Candidate(variant: F.int8, transferSize: 151 * F.MB)]
        #expect(select(tier: cellular, small).overBudget == true)
    }

    @Test func deltaDoesNotExcuseMemoryOrDisk() {
        var tight = F.facts
        tight.diskFreeBytes = 150 * F.MB  // the new slot is still written whole
        let candidates = [Candidate(variant: F.int8, transferSize: F.MB)]
        #expect(select(facts: tight, candidates).chosen == nil)
        tight = F.facts
        tight.memoryBytes = 100 * F.MB
        #expect(select(facts: tight, candidates).chosen == nil)
    }

    /// POSSIBLE BUG: the tie-break comment says "then the smaller download", but it compares
    /// artifact sizes. With delta packages (transferSize) the smaller download is no longer the
    /// smaller artifact: at equal format and quality a 100 MB variant reachable by a 5 MB delta
    /// loses to a 90 MB variant sent whole.
    @Test func smallerDownloadWinsWhenDeltasDiffer() {
        let viaDelta = Candidate(variant: F.variant("int8-a", "int8", 100 * F.MB), transferSize: 5 * F.MB)
        let whole = Candidate(variant: F.variant("int8-b", "int8", 90 * F.MB))
        #expect(select([viaDelta, whole]).chosen == "int8-a")
    }

    @Test func tierWithoutBudgetNeverHolds() {
        let s = select(hw: F.gpuClass, tier: BandwidthTier(name: "lan", metered: false), all)
        #expect(s.chosen == F.fp16.name)
        #expect(s.tier == "lan")
        #expect(s.overBudget == false)
    }

    // MARK: No class, no candidates

    @Test func deviceWithoutHardwareClassGetsNothing() {
        let s = select(hw: nil, tier: cellular, all)
        checkVerdicts(s, all)
        #expect(s.hardwareClass == nil)
        #expect(s.chosen == nil)
        #expect(s.overBudget == false)
        #expect(s.verdicts.allSatisfy { !$0.eligible })
    }

    @Test func noCandidatesChoosesNothing() {
        let s = select([])
        #expect(s.chosen == nil)
        #expect(s.verdicts.isEmpty)
        #expect(s.overBudget == false)
    }

    // MARK: Ties

    @Test func higherQualityWinsWithinAFormat() {
        let a = F.variant("int8-a", "int8", 100 * F.MB)
        let b = F.variant("int8-b", "int8", 100 * F.MB)
        #expect(select([Candidate(variant: a, quality: 0.97), Candidate(variant: b, quality: 0.98)]).chosen == "int8-b")
        #expect(select([Candidate(variant: b, quality: 0.98), Candidate(variant: a, quality: 0.97)]).chosen == "int8-b")
        // Measured beats unmeasured (which counts as 0).
        #expect(select([Candidate(variant: a), Candidate(variant: b, quality: 0.5)]).chosen == "int8-b")
    }

    @Test func smallerDownloadWinsAtEqualQuality() {
        let big = F.variant("int8-big", "int8", 120 * F.MB)
        let small = F.variant("int8-small", "int8", 80 * F.MB)
        #expect(select([Candidate(variant: big), Candidate(variant: small)]).chosen == "int8-small")
        #expect(select([Candidate(variant: small), Candidate(variant: big)]).chosen == "int8-small")
    }

    @Test func nameBreaksAFullTieDeterministically() {
        let b = F.variant("int8-b", "int8", 100 * F.MB)
        let a = F.variant("int8-a", "int8", 100 * F.MB)
        let s1 = select([Candidate(variant: b), Candidate(variant: a)])
        let s2 = select([Candidate(variant: a), Candidate(variant: b)])
        #expect(s1.chosen == "int8-a")
        #expect(s2.chosen == "int8-a")
        #expect(s1.verdicts.filter(\.eligible).count == 2)
    }

    @Test func selectionIsAPureFunction() {
        let tier = BandwidthTier(name: "cellular", metered: true, budgetBytes: 150 * F.MB)
        #expect(select(tier: tier, all) == select(tier: tier, all))
    }
}

/// All orderings of a small array (Heap's algorithm).
func permutations<T>(_ items: [T]) -> [[T]] {
    var a = items
    var out: [[T]] = []
    func generate(_ k: Int) {
        if k <= 1 { out.append(a); return }
        generate(k - 1)
        for i in 0..<(k - 1) {
            a.swapAt(k % 2 == 0 ? i : 0, k - 1)
            generate(k - 1)
        }
    }
    generate(a.count)
    return out
}

@Suite struct ClassifierTests {
    typealias F = Fixture

    @Test func firstMatchingClassWinsInOperatorOrder() {
        var gpu = F.facts
        gpu.accelerators = ["/dev/nvidia0"]
        // Matches both x86-gpu and x86-avx2: the one listed first wins.
        #expect(HardwareClassifier.classify(gpu, classes: F.hardwareClasses)?.name == "x86-gpu")
        #expect(HardwareClassifier.classify(gpu, classes: [F.avx2Class, F.gpuClass])?.name == "x86-avx2")
        #expect(HardwareClassifier.classify(F.facts, classes: F.hardwareClasses)?.name == "x86-avx2")
    }

    @Test func deviceMatchingNoClassHasNone() {
        var noAVX = F.facts
        noAVX.cpuFlags = ["sse4_2"]
        #expect(HardwareClassifier.classify(noAVX, classes: F.hardwareClasses) == nil)
        #expect(HardwareClassifier.classify(F.facts, classes: []) == nil)
        let bigArm = DeviceFacts(arch: "aarch64", cpuFlags: [], memoryBytes: 8 * F.GB, diskFreeBytes: F.GB)
        #expect(HardwareClassifier.classify(bigArm, classes: F.hardwareClasses) == nil)  // over maxMemoryBytes
        let smallArm = DeviceFacts(arch: "aarch64", cpuFlags: [], memoryBytes: 4 * F.GB, diskFreeBytes: F.GB)
        #expect(HardwareClassifier.classify(smallArm, classes: F.hardwareClasses)?.name == "arm-small")
    }

    @Test func matchChecksEveryField() {
        let f = DeviceFacts(
            arch: "x86_64", cpuFlags: ["avx2", "fma"], memoryBytes: 8 * F.GB, diskFreeBytes: F.GB,
            accelerators: ["/dev/apex_0"])
        typealias M = HardwareClass.Match
        #expect(M().matches(f))
        #expect(M(arch: ["aarch64", "x86_64"]).matches(f))
        #expect(!M(arch: ["aarch64"]).matches(f))
        #expect(M(cpuFlags: ["avx2", "fma"]).matches(f))
        #expect(!M(cpuFlags: ["avx2", "avx512f"]).matches(f))  // all of them
        #expect(M(minMemoryBytes: 8 * F.GB).matches(f))
        #expect(!M(minMemoryBytes: 8 * F.GB + 1).matches(f))
        #expect(M(maxMemoryBytes: 8 * F.GB).matches(f))
        #expect(!M(maxMemoryBytes: 8 * F.GB - 1).matches(f))
        #expect(M(accelerators: ["/dev/nvidia", "/dev/apex"]).matches(f))  // any, by prefix
        #expect(!M(accelerators: ["/dev/nvidia"]).matches(f))
        #expect(!M(accelerators: []).matches(f))
    }

    @Test func requirementsReportTheFirstUnmetOne() {
        let f = DeviceFacts(
            arch: "x86_64", cpuFlags: ["avx2"], memoryBytes: 4 * F.GB, diskFreeBytes: F.GB,
            accelerators: ["/dev/accel0"])
        #expect(Requirements().isEmpty)
        #expect(Requirements().unmet(by: f) == nil)
        #expect(
            Requirements(arch: ["x86_64"], cpuFlags: ["avx2"], minMemoryBytes: 4 * F.GB, accelerators: ["/dev/accel"]).unmet(by: f) == nil)
        #expect(!Requirements(arch: ["x86_64"]).isEmpty)
        #expect(Requirements(arch: ["aarch64"]).unmet(by: f) != nil)
        #expect(Requirements(cpuFlags: ["avx2", "avx512f"]).unmet(by: f) != nil)
        #expect(Requirements(minMemoryBytes: 4 * F.GB + 1).unmet(by: f) != nil)
        #expect(Requirements(accelerators: ["/dev/nvidia"]).unmet(by: f) != nil)
    }

    // MARK: Tiers

    private let tiers = [
        BandwidthTier(name: "cellular", metered: true, budgetBytes: 50 * Fixture.MB),
        BandwidthTier(name: "fast", metered: false, minMbps: 100),
        BandwidthTier(name: "slow", metered: false)
    ]

    private func tier(metered: Bool?, mbps: Double?) -> String? {
        var f = F.facts
        f.metered = metered
        f.downlinkMbps = mbps
        return TierClassifier.classify(f, tiers: tiers)?.name
    }

    @Test func meteredLinkIsCellularWhateverItsSpeed() {
        #expect(tier(metered: true, mbps: 500) == "cellular")
        #expect(tier(metered: true, mbps: nil) == "cellular")
    }

    @Test func unmeteredLinkIsClassedByThroughput() {
        #expect(tier(metered: false, mbps: 200) == "fast")
        #expect(tier(metered: false, mbps: 100) == "fast")
        #expect(tier(metered: false, mbps: 99.9) == "slow")
    }

    @Test func unmeasuredLinkCountsAsSlowestUnmetered() {
        #expect(tier(metered: nil, mbps: nil) == "slow")
        #expect(tier(metered: false, mbps: nil) == "slow")
        #expect(tier(metered: nil, mbps: 1_000) == "fast")
    }

    @Test func tierWithoutMeteredFlagMatchesEither() {
        let any = [BandwidthTier(name: "any", minMbps: 10)]
        var f = F.facts
        f.metered = true
        f.downlinkMbps = 20
        #expect(TierClassifier.classify(f, tiers: any)?.name == "any")
        f.metered = false
        #expect(TierClassifier.classify(f, tiers: any)?.name == "any")
        f.downlinkMbps = 5
        #expect(TierClassifier.classify(f, tiers: any) == nil)
        #expect(TierClassifier.classify(f, tiers: []) == nil)
    }
}
