/// The devices of a simulated fleet, the same for `fleet-sim` (which plays them over HTTP) and the
/// controller's `seed-devices` (which writes them into the database): device `i` always has the
/// same id and the same facts, so a seeded database and a simulator run describe one fleet.
///
/// Facts are spread over the hardware classes and bandwidth tiers of the repository's `fleet/`
/// configuration (every class and every tier gets devices; class and tier are drawn
/// independently, so every cell is populated once the fleet has a few hundred devices).
public enum SimulatedDevice {
    /// Digits the index is padded to: `sim-0000042`. Indices past 9,999,999 simply grow longer.
    public static let idDigits = 7

    /// `<prefix><index zero-padded to 7 digits>`, e.g. `sim-0000042`.
    public static func id(prefix: String, index: Int) -> String {
        let digits = String(index)
        return prefix + String(repeating: "0", count: max(0, idDigits - digits.count)) + digits
    }

    /// The index in an id made by `id(prefix:index:)`, or nil when it is not one.
    public static func index(of id: String, prefix: String) -> Int? {
        guard id.hasPrefix(prefix) else { return nil }
        let rest = id.dropFirst(prefix.count)
        guard rest.count >= idDigits, rest.allSatisfy(\.isASCII), rest.allSatisfy(\.isNumber) else { return nil }
        return Int(rest)
    }

    /// The hardware class (of `fleet/hardware-classes.yaml`) a device is made to fall into, with its
    /// share of the fleet in per mille.
    public enum Profile: String, CaseIterable, Sendable {
        case smallBoard = "small-board-1gb"
        case edgeTPU = "npu-edgetpu"
        case x86VNNI = "x86-avx512-vnni"
        case x86AVX2 = "x86-avx2"
        case arm64DotProd = "arm64-dotprod"
        case armv7NEON = "armv7-neon"
        case x86Baseline = "x86-64-baseline"

        var perMille: Int {
            switch self {
            case .smallBoard: 100
            case .edgeTPU: 50
            case .x86VNNI: 150
            case .x86AVX2: 200
            case .arm64DotProd: 300
            case .armv7NEON: 100
            case .x86Baseline: 100
            }
        }
    }

    /// The bandwidth tier (of `fleet/bandwidth-tiers.yaml`) a device is made to fall into.
    public enum Link: String, CaseIterable, Sendable {
        case satellite = "satellite-metered"
        case fibre
        case cellular
        case constrained

        var perMille: Int {
            switch self {
            case .satellite: 100
            case .fibre: 400
            case .cellular: 350
            case .constrained: 150
            }
        }
    }

    /// The regions devices are labelled with (`region`), equally many in each.
    public static let regions = ["eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east"]
    /// Sites per region (`site`: `<region>-<nn>`).
    public static let sitesPerRegion = 40

    /// The labels device `index` reports, spread over `regions` and their sites, so that selectors
    /// and label views meet many values at scale.
    public static func labels(index: Int) -> [String: String] {
        let r = draw(index, salt: 4)
        let region = regions[Int(r % UInt64(regions.count))]
        let site = Int((r >> 16) % UInt64(sitesPerRegion))
        return ["region": region, "site": "\(region)-\(site < 10 ? "0" : "")\(site)"]
    }

    public static func profile(index: Int) -> Profile { pick(Profile.allCases, draw(index, salt: 1) % 1000, \.perMille) }
    public static func link(index: Int) -> Link { pick(Link.allCases, draw(index, salt: 2) % 1000, \.perMille) }

    /// The facts as a check-in stores them, with the device's id: what `seed-devices` writes, and
    /// what the digest of a frugal check-in is taken over.
    public static func storedFacts(prefix: String, index: Int) -> DeviceFacts {
        var f = facts(index: index)
        f.deviceId = id(prefix: prefix, index: index)
        return f
    }

    /// The facts device `index` reports (its id is not in them: the check-in path names the device).
    public static func facts(index: Int) -> DeviceFacts {
        let r = draw(index, salt: 3)
        let gib: Int64 = 1 << 30
        var facts: DeviceFacts
        switch profile(index: index) {
        case .smallBoard:
            let arm64 = r & 1 == 0
            facts = DeviceFacts(
                arch: arm64 ? "aarch64" : "armv7l", cpuFlags: arm64 ? ["fp", "asimd"] : ["half", "neon", "vfpv4"],
                memoryBytes: (r >> 1) & 1 == 0 ? gib : gib / 2, diskFreeBytes: 4_000_000_000)
        case .edgeTPU:
            facts = DeviceFacts(
                arch: "aarch64", cpuFlags: ["fp", "asimd", "asimddp"], memoryBytes: 4 * gib,
                diskFreeBytes: 16_000_000_000, accelerators: ["/dev/apex_0"])
        case .x86VNNI:
            facts = DeviceFacts(
                arch: "x86_64", cpuFlags: ["sse2", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni"],
                memoryBytes: Int64(8 << (r % 3)) * gib, diskFreeBytes: 100_000_000_000)
        case .x86AVX2:
            facts = DeviceFacts(
                arch: "x86_64", cpuFlags: ["sse2", "sse4_2", "avx", "avx2", "fma", "f16c"],
                memoryBytes: Int64(4 << (r % 3)) * gib, diskFreeBytes: 60_000_000_000)
        case .arm64DotProd:
            facts = DeviceFacts(
                arch: "aarch64", cpuFlags: ["fp", "asimd", "asimdhp", "asimdrdm", "asimddp"],
                memoryBytes: Int64(2 << (r % 3)) * gib, diskFreeBytes: 24_000_000_000)
        case .armv7NEON:
            facts = DeviceFacts(arch: "armv7l", cpuFlags: ["half", "neon", "vfpv4"], memoryBytes: 2 * gib, diskFreeBytes: 8_000_000_000)
        case .x86Baseline:
            facts = DeviceFacts(arch: "x86_64", cpuFlags: ["sse2", "sse4_2"], memoryBytes: 4 * gib, diskFreeBytes: 40_000_000_000)
        }
        // Link speed from its own bits, so that it does not follow the memory size.
        let s = Double((r >> 8) % 1000) / 1000
        switch link(index: index) {
        case .satellite: facts.downlinkMbps = 0.5 + 9.5 * s; facts.metered = true
        case .fibre: facts.downlinkMbps = 50 + 950 * s; facts.metered = false
        case .cellular: facts.downlinkMbps = 2 + 47 * s; facts.metered = false
        case .constrained:
            // A quarter has not measured its link yet (no figure at all), as fresh devices report.
            facts.downlinkMbps = (r >> 20) % 4 == 0 ? nil : 0.2 + 1.7 * s
            facts.metered = facts.downlinkMbps == nil ? nil : false
        }
        facts.kernel = facts.arch == "x86_64" ? "6.1.0-28-amd64" : "6.6.31+rpt-rpi-v8"
        facts.labels = labels(index: index)
        return facts
    }

    /// A stable pseudo-random draw for (index, salt): SplitMix64's finaliser, no state.
    static func draw(_ index: Int, salt: UInt64) -> UInt64 {
        var z = UInt64(truncatingIfNeeded: index) &* 0x9E37_79B9_7F4A_7C15 &+ salt &* 0xD1B5_4A32_D192_ED03
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private static func pick<T>(_ cases: [T], _ value: UInt64, _ weight: (T) -> Int) -> T {
        var left = Int(value)
        for c in cases {
            left -= weight(c)
            if left < 0 { return c }
        }
        return cases[cases.count - 1]
    }
}
