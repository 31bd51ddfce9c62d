/// Magnitude pruning: the smallest |w| become zero. The threshold is found by a two-level radix
/// histogram of the magnitudes' bit patterns (for non-negative floats the bit pattern orders like
/// the value), so it is exact and linear in time, and a global threshold needs only two streaming
/// passes over the tensors instead of holding all of them.
struct MagnitudeHistogram {
    private(set) var high = [Int64](repeating: 0, count: 1 << 16)
    private(set) var low = [Int64](repeating: 0, count: 1 << 16)
    private(set) var total: Int64 = 0
    /// Set by `selectBin`: the high half the k-th magnitude falls in, and how many lie below it.
    private(set) var bin: Int?
    private(set) var belowBin: Int64 = 0

    mutating func addHigh(_ values: [Float]) {
        values.withUnsafeBufferPointer { v in
            for x in v { high[Int(abs(x).bitPattern >> 16)] += 1 }
        }
        total += Int64(values.count)
    }

    /// Finds the high bin holding the `k`-th smallest magnitude (0-based).
    mutating func selectBin(k: Int64) {
        var seen: Int64 = 0
        for b in 0..<high.count {
            if seen + high[b] > k { bin = b; belowBin = seen; return }
            seen += high[b]
        }
        bin = high.count - 1; belowBin = seen - high[high.count - 1]
    }

    mutating func addLow(_ values: [Float]) {
        guard let bin else { return }
        values.withUnsafeBufferPointer { v in
            for x in v {
                let bits = abs(x).bitPattern
                if Int(bits >> 16) == bin { low[Int(bits & 0xFFFF)] += 1 }
            }
        }
    }

    /// The `k`-th smallest magnitude (0-based), after `selectBin(k:)` and `addLow` over the same values.
    func threshold(k: Int64) -> Float {
        guard let bin else { return 0 }
        var seen = belowBin
        for b in 0..<low.count {
            if seen + low[b] > k { return Float(bitPattern: UInt32(bin) << 16 | UInt32(b)) }
            seen += low[b]
        }
        return Float(bitPattern: UInt32(bin) << 16 | 0xFFFF)
    }
}

enum MagnitudePruner {
    /// The magnitude below which a share `sparsity` of `values` lies.
    static func threshold(_ values: [Float], sparsity: Double) -> Float {
        let k = Int64((Double(values.count) * sparsity).rounded(.down))
        guard k > 0 else { return 0 }
        var h = MagnitudeHistogram()
        h.addHigh(values)
        h.selectBin(k: k - 1)
        h.addLow(values)
        return h.threshold(k: k - 1)
    }

    /// Zeroes every |w| ≤ threshold (the k smallest, ties included); returns how many became zero.
    @discardableResult
    static func apply(_ values: inout [Float], threshold: Float) -> Int {
        var n = 0
        values.withUnsafeMutableBufferPointer { v in
            for i in v.indices where abs(v[i]) <= threshold && v[i] != 0 { v[i] = 0; n += 1 }
        }
        return n
    }
}
