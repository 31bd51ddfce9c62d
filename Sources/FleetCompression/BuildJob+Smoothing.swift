import Foundation

/// Calibration: per activation tensor, the largest magnitude seen in each channel (the last axis),
/// over the calibration samples. Produced by a calibrator command (`Calibrator`), read by the
/// `smooth` step.
public struct ActivationRanges: Sendable, Equatable {
    public var absmax: [String: [Float]]
    /// Mean of x² per channel, when the calibrator measured it (the error estimate uses absmax² otherwise).
    public var meanSquares: [String: [Float]]
    public var samples: Int
    public init(absmax: [String: [Float]], meanSquares: [String: [Float]] = [:], samples: Int) {
        self.absmax = absmax; self.meanSquares = meanSquares; self.samples = samples
    }
}

extension BuildJob {
    var smoothStep: (alpha: Double, minGain: Double)? {
        for s in recipe.steps { if case .smooth(let a, let g) = s { return (a, g) } }
        return nil
    }

    /// SmoothQuant-style smoothing for the MatMuls a compute form quantizes: for each activation
    /// read by such MatMuls, s_k = max|x_k|^α / max|w_k·|^(1−α) (clamped to [0.01, 100]); the weights'
    /// rows are multiplied by s (in `transform`) and the activation divided by it (a Mul the rewrite
    /// inserts). The Mul costs time at run time, so an activation is smoothed only when the estimated
    /// error of its MatMuls' outputs drops at least `min_gain` times (`SmoothingEstimate`). Returns
    /// the inverse-scale initializers to add, by activation.
    mutating func planSmoothing(
        _ decisions: inout [TensorDecision], graph: Onnx_GraphProto,
        fresh: (String) -> String
    ) throws(CompressionError) -> [(activation: String, name: String, inverse: [Float])] {
        guard let (alpha, minGain) = smoothStep else { return [] }
        guard let ranges = options.calibration else {
            notes.append("activations not smoothed: no calibration ranges (give calibration inputs or a calibrator)")
            return []
        }
        let index = Dictionary(decisions.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        var groups: [String: [Int]] = [:]
        var order: [String] = []
        var activationOf: [Int: Set<String>] = [:]
        for n in graph.node where (n.domain.isEmpty || n.domain == "ai.onnx") && n.opType == "MatMul" && n.input.count == 2 {
            guard let di = index[n.input[1]], decisions[di].site != nil, decisions[di].encoding != nil else { continue }
            if groups[n.input[0]] == nil { order.append(n.input[0]) }
            if !(groups[n.input[0]]?.contains(di) ?? false) { groups[n.input[0], default: []].append(di) }
            activationOf[di, default: []].insert(n.input[0])
        }
        var out: [(activation: String, name: String, inverse: [Float])] = []
        var unusable = 0, notWorth = 0
        var gains: [Double] = []
        for a in order {
            let members = groups[a]!
            // A weight read with two different activations cannot take both smoothings.
            guard members.allSatisfy({ activationOf[$0]!.count == 1 }), let amax = ranges.absmax[a],
                let k = decisions[members[0]].source?.shape.first, members.allSatisfy({ decisions[$0].source?.shape.first == k }),
                amax.count == Int(k)
            else { unusable += 1; continue }
            var weights: [[Float]] = []
            for di in members { weights.append(try decisions[di].source!.readFloats()) }
            // Weight levels of the MatMuls' format: int4 MatMulNBits ±7.5, int8 (also in int4 `mixed`) ±127.
            let levels: Double = if case .int4MatMulNBits = recipe.storage { 7.5 } else { 127 }
            let estimate = SmoothingEstimate(
                absmax: amax, meanSquares: ranges.meanSquares[a], weights: weights, rows: Int(k), weightLevels: levels)
            let s = estimate.scales(alpha: alpha)
            let gain = estimate.gain(s)
            guard gain >= minGain else { notWorth += 1; continue }
            gains.append(gain)
            for di in members { decisions[di].rowScales = s }
            out.append((a, fresh(a + "_smooth_inverse"), s.map { 1 / $0 }))
        }
        var note = String(
            format: "activations smoothed (alpha %.2f) before %d of %d MatMul groups, from %d calibration samples", alpha, out.count,
            order.count, ranges.samples)
        if !gains.isEmpty { note += String(format: " (estimated error %.1f–%.1fx lower)", gains.min()!, gains.max()!) }
        if notWorth > 0 {
            note += String(format: "; %d left as they were (estimated gain under %.1fx, not worth a Mul)", notWorth, minGain)
        }
        if unusable > 0 { note += "; \(unusable) without usable ranges" }
        notes.append(note)
        return out
    }
}

/// The output error of a quantized MatMul group, estimated from calibration statistics so that
/// smoothing goes only where it pays. Activations are quantized per tensor (step ∝ the largest
/// channel range), weights per output column (step ∝ the column's largest magnitude); each adds
/// noise of step²/12 per element, carried to the output by the other operand:
///   activation part ∝ (max_k r_k/s_k)² · Σ_k s_k² ‖W_k·‖²,   weight part ∝ Σ_n (max_k |s_k W_kn|)² · Σ_k E[x_k²]/s_k²
/// (uint8 activations over 255 steps, int8 weights over 127 each side, int4 about 7.5). gain(s) = error(1) / error(s).
struct SmoothingEstimate {
    let absmax: [Float]
    let meanSquares: [Float]
    let weights: [[Float]]
    let rows: Int
    let weightLevels: Double
    let rowMax: [Float]
    let rowSquares: [Double]

    init(absmax: [Float], meanSquares: [Float]?, weights: [[Float]], rows: Int, weightLevels: Double = 127) {
        self.absmax = absmax
        self.weightLevels = weightLevels
        self.meanSquares = meanSquares.flatMap { $0.count == rows ? $0 : nil } ?? absmax.map { $0 * $0 }
        self.weights = weights
        self.rows = rows
        var rowMax = [Float](repeating: 0, count: rows), rowSquares = [Double](repeating: 0, count: rows)
        for w in weights {
            let cols = w.count / rows
            w.withUnsafeBufferPointer { w in
                for r in 0..<rows {
                    for c in 0..<cols {
                        let v = w[r * cols + c]
                        rowMax[r] = max(rowMax[r], abs(v)); rowSquares[r] += Double(v) * Double(v)
                    }
                }
            }
        }
        self.rowMax = rowMax
        self.rowSquares = rowSquares
    }

    func scales(alpha: Double) -> [Float] {
        (0..<rows).map { r in
            guard absmax[r] > 0, rowMax[r] > 0, absmax[r].isFinite else { return 1 }
            return Float(min(100, max(0.01, pow(Double(absmax[r]), alpha) / pow(Double(rowMax[r]), 1 - alpha))))
        }
    }

    func error(_ s: [Float]) -> Double {
        var range = 0.0, act = 0.0, inputPower = 0.0
        for r in 0..<rows {
            let sr = Double(s[r])
            range = max(range, Double(absmax[r]) / sr)
            act += sr * sr * rowSquares[r]
            inputPower += Double(meanSquares[r]) / (sr * sr)
        }
        var weight = 0.0
        for w in weights {
            let cols = w.count / rows
            var colMax = [Double](repeating: 0, count: cols)
            w.withUnsafeBufferPointer { w in
                for r in 0..<rows {
                    let sr = Double(s[r]); for c in 0..<cols { colMax[c] = max(colMax[c], abs(Double(w[r * cols + c]) * sr)) }
                }
            }
            weight += colMax.reduce(0) { $0 + ($1 / weightLevels) * ($1 / weightLevels) } * inputPower
        }
        return (range / 255) * (range / 255) * act + weight
    }

    func gain(_ s: [Float]) -> Double {
        let after = error(s)
        return after > 0 ? error([Float](repeating: 1, count: rows)) / after : 1
    }
}
