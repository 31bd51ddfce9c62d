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

/// The graph surgery of the compute forms: the operators that read quantized weights are replaced
/// by ones that compute from them (MatMul → DynamicQuantizeMatMul, MatMulInteger or MatMulNBits;
/// Gather → GatherBlockQuantized); smoothed activations get a per-channel Mul before their MatMuls.
struct ComputeRewrite {
    struct Weight { var site: ComputeSite; var parts: [String]; var shape: [Int64] }
    /// By the original weight's name.
    var weights: [String: Weight] = [:]
    /// Activation name → the initializer holding 1/s per channel.
    var smoothing: [String: String] = [:]

    var isEmpty: Bool { weights.isEmpty }

    /// One MatMul the rewrite replaces: its weight, and the bias Add it absorbs (when fused).
    private struct Reader { var node: Int; var weight: Weight; var bias: String; var biasAdd: Int?; var output: String }

    /// Rewrites `graph.node` in place; returns the operators it used (domain-qualified for contrib
    /// ones) and the initializers it added (split sizes). `floatShapes`: the dims of the graph's fp32
    /// initializers (bias candidates). Sibling MatMuls of the onnxruntime forms (same activation,
    /// same form, each with its bias: attention's Q, K and V) become one operator over their weights
    /// joined by Concat, which onnxruntime folds into one initializer when it loads the model, and a
    /// Split: one activation quantization and one GEMM instead of three.
    func apply(_ graph: inout Onnx_GraphProto, floatShapes: [String: [Int64]], opset: Int64,
               fresh: (String) -> String) -> (operators: [String], initializers: [Onnx_TensorProto]) {
        var consumers: [String: [Int]] = [:]
        for (i, n) in graph.node.enumerated() { for x in n.input where !x.isEmpty { consumers[x, default: []].append(i) } }
        let graphOutputs = Set(graph.output.map(\.name))
        func isDefault(_ n: Onnx_NodeProto) -> Bool { n.domain.isEmpty || n.domain == "ai.onnx" }

        // Pass 1: the MatMuls to replace, the bias each absorbs, and the sibling groups.
        var readers: [Int: Reader] = [:]
        var siblings: [String: [Int]] = [:]     // activation → reader nodes, in graph order
        for (i, node) in graph.node.enumerated() where isDefault(node) && node.opType == "MatMul" && node.input.count == 2 {
            guard let w = weights[node.input[1]] else { continue }
            var r = Reader(node: i, weight: w, bias: "", biasAdd: nil, output: node.output[0])
            let fuses: Bool = if case .matMulInt8(.standard) = w.site { false } else { true }
            if fuses, !graphOutputs.contains(node.output[0]), let c = consumers[node.output[0]], c.count == 1 {
                let add = graph.node[c[0]]
                if add.opType == "Add", isDefault(add), add.input.count == 2, add.input[0] != add.input[1] {
                    let other = add.input[0] == node.output[0] ? add.input[1] : add.input[0]
                    if floatShapes[other] == [w.shape[1]] { r.bias = other; r.biasAdd = c[0]; r.output = add.output[0] }
                }
            }
            readers[i] = r
            if fuses { siblings[node.input[0], default: []].append(i) }
        }
        var groupOf: [Int: [Int]] = [:]
        for (_, members) in siblings where members.count > 1 {
            let first = readers[members[0]]!
            guard members.allSatisfy({ !readers[$0]!.bias.isEmpty && readers[$0]!.weight.site == first.weight.site
                                       && readers[$0]!.weight.shape[0] == first.weight.shape[0] }) else { continue }
            for m in members { groupOf[m] = members }
        }

        var skip = Set(readers.values.compactMap(\.biasAdd))
        var smoothed: [String: String] = [:]
        var quantizedInput: [String: (q: String, scale: String, zeroPoint: String)] = [:]
        var nodes: [Onnx_NodeProto] = []
        var ops = Set<String>()
        var added: [Onnx_TensorProto] = []

        func make(_ op: String, _ inputs: [String], _ outputs: [String], domain: String = "", _ attrs: [(String, Int64)] = []) -> Onnx_NodeProto {
            var n = Onnx_NodeProto()
            n.opType = op
            n.domain = domain
            n.input = inputs
            n.output = outputs
            n.name = fresh(outputs[0] + "_" + op)
            n.attribute = attrs.map { name, value in
                var a = Onnx_AttributeProto(); a.name = name; a.type = .int; a.i = value; return a
            }
            ops.insert(domain.isEmpty ? op : domain + "." + op)
            return n
        }
        func activation(_ a: String) -> String {
            guard let inverse = smoothing[a] else { return a }
            if let s = smoothed[a] { return s }
            let s = fresh(a + "_smoothed")
            nodes.append(make("Mul", [a, inverse], [s]))
            smoothed[a] = s
            return s
        }
        /// The fused operator for a weight (or joined weights) of `site`.
        func compute(_ site: ComputeSite, _ a: String, _ parts: [String], k: Int64, n: Int64, bias: String, output: String) {
            switch site {
            case .matMulInt8(.onnxruntime):
                nodes.append(make("DynamicQuantizeMatMul", [a, parts[0], parts[1]] + (bias.isEmpty ? [] : ["", bias]), [output], domain: "com.microsoft"))
            case .matMulNBits(let block, let level):
                nodes.append(make("MatMulNBits", [a] + parts + (bias.isEmpty ? [] : ["", bias]), [output], domain: "com.microsoft",
                                  [("K", k), ("N", n), ("bits", 4), ("block_size", Int64(block)), ("accuracy_level", Int64(level))]))
            case .matMulInt8(.standard), .gatherBlockQuantized:
                break
            }
        }

        for (i, node) in graph.node.enumerated() where !skip.contains(i) {
            if let r = readers[i] {
                let a = activation(node.input[0])
                if let members = groupOf[i] {
                    // The first sibling in graph order stands for the group; the others are skipped.
                    let group = members.map { readers[$0]! }
                    for m in members { skip.insert(m) }
                    let base = fresh(r.weight.parts[0] + "_joined")
                    // int8 B [K, N]: columns join on axis 1; MatMulNBits blobs [N, …]: rows on axis 0.
                    let weightAxis: Int64 = if case .matMulInt8 = r.weight.site { 1 } else { 0 }
                    var joined: [String] = []
                    for p in r.weight.parts.indices {
                        let name = fresh(base + "_part\(p)")
                        nodes.append(make("Concat", group.map { $0.weight.parts[p] }, [name], [("axis", p == 0 ? weightAxis : 0)]))
                        joined.append(name)
                    }
                    let bias = fresh(base + "_bias")
                    nodes.append(make("Concat", group.map(\.bias), [bias], [("axis", 0)]))
                    let total = group.reduce(Int64(0)) { $0 + $1.weight.shape[1] }
                    let out = fresh(base + "_output")
                    compute(r.weight.site, a, joined, k: r.weight.shape[0], n: total, bias: bias, output: out)
                    let sizes = group.map { $0.weight.shape[1] }
                    if opset >= 13 {
                        var t = Onnx_TensorProto()
                        t.name = fresh(base + "_split")
                        t.dataType = TensorDType.i64.onnxCode
                        t.dims = [Int64(sizes.count)]
                        t.rawData = sizes.withUnsafeBytes { Data($0) }
                        added.append(t)
                        nodes.append(make("Split", [out, t.name], group.map(\.output), [("axis", -1)]))
                    } else {
                        var split = make("Split", [out], group.map(\.output), [("axis", -1)])
                        var attr = Onnx_AttributeProto(); attr.name = "split"; attr.type = .ints; attr.ints = sizes
                        split.attribute.append(attr)
                        nodes.append(split)
                    }
                    continue
                }
                switch r.weight.site {
                case .matMulInt8(.standard):
                    let q: (q: String, scale: String, zeroPoint: String)
                    if let known = quantizedInput[a] { q = known } else {
                        q = (fresh(a + "_quantized"), fresh(a + "_scale"), fresh(a + "_zero_point"))
                        nodes.append(make("DynamicQuantizeLinear", [a], [q.q, q.scale, q.zeroPoint]))
                        quantizedInput[a] = q
                    }
                    let output = node.output[0]
                    let integer = fresh(output + "_int32"), real = fresh(output + "_unscaled"), scale = fresh(output + "_scale")
                    nodes.append(make("MatMulInteger", [q.q, r.weight.parts[0], q.zeroPoint], [integer]))
                    nodes.append(make("Cast", [integer], [real], [("to", 1)]))
                    nodes.append(make("Mul", [q.scale, r.weight.parts[1]], [scale]))
                    nodes.append(make("Mul", [real, scale], [output]))
                default:
                    compute(r.weight.site, a, r.weight.parts, k: r.weight.shape[0], n: r.weight.shape[1], bias: r.bias, output: r.output)
                }
            } else if isDefault(node), node.opType == "Gather", node.input.count == 2, let w = weights[node.input[0]],
                      case .gatherBlockQuantized(let block) = w.site {
                nodes.append(make("GatherBlockQuantized", [w.parts[0], node.input[1], w.parts[1], w.parts[2]], node.output, domain: "com.microsoft",
                                  [("gather_axis", 0), ("quantize_axis", 1), ("block_size", Int64(block))]))
            } else {
                nodes.append(node)
            }
        }
        graph.node = nodes
        return (ops.sorted(), added)
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
    mutating func planSmoothing(_ decisions: inout [TensorDecision], graph: Onnx_GraphProto,
                                fresh: (String) -> String) throws(CompressionError) -> [(activation: String, name: String, inverse: [Float])] {
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
                  amax.count == Int(k) else { unusable += 1; continue }
            var weights: [[Float]] = []
            for di in members { weights.append(try decisions[di].source!.readFloats()) }
            let levels: Double = if case .int4MatMulNBits = recipe.storage { 7.5 } else { 127 }
            let estimate = SmoothingEstimate(absmax: amax, meanSquares: ranges.meanSquares[a], weights: weights, rows: Int(k), weightLevels: levels)
            let s = estimate.scales(alpha: alpha)
            let gain = estimate.gain(s)
            guard gain >= minGain else { notWorth += 1; continue }
            gains.append(gain)
            for di in members { decisions[di].rowScales = s }
            out.append((a, fresh(a + "_smooth_inverse"), s.map { 1 / $0 }))
        }
        var note = String(format: "activations smoothed (alpha %.2f) before %d of %d MatMul groups, from %d calibration samples", alpha, out.count,
                          order.count, ranges.samples)
        if !gains.isEmpty { note += String(format: " (estimated error %.1f–%.1fx lower)", gains.min()!, gains.max()!) }
        if notWorth > 0 { note += String(format: "; %d left as they were (estimated gain under %.1fx, not worth a Mul)", notWorth, minGain) }
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
                for r in 0..<rows { for c in 0..<cols {
                    let v = w[r * cols + c]
                    rowMax[r] = max(rowMax[r], abs(v)); rowSquares[r] += Double(v) * Double(v)
                } }
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
                for r in 0..<rows { let sr = Double(s[r]); for c in 0..<cols { colMax[c] = max(colMax[c], abs(Double(w[r * cols + c]) * sr)) } }
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
