import Foundation

/// Calibration: per activation tensor, the largest magnitude seen in each channel (the last axis),
/// over the calibration samples. Produced by a calibrator command (`Calibrator`), read by the
/// `smooth` step.
public struct ActivationRanges: Sendable, Equatable {
    public var absmax: [String: [Float]]
    public var samples: Int
    public init(absmax: [String: [Float]], samples: Int) { self.absmax = absmax; self.samples = samples }
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

    /// Rewrites `graph.node` in place; returns the operators it used (domain-qualified for contrib ones).
    /// `floatShapes`: the dims of the graph's fp32 initializers (bias candidates).
    func apply(_ graph: inout Onnx_GraphProto, floatShapes: [String: [Int64]], fresh: (String) -> String) -> [String] {
        var consumers: [String: [Int]] = [:]
        for (i, n) in graph.node.enumerated() { for x in n.input where !x.isEmpty { consumers[x, default: []].append(i) } }
        let graphOutputs = Set(graph.output.map(\.name))
        var folded = Set<Int>()
        var smoothed: [String: String] = [:]
        var quantizedInput: [String: (q: String, scale: String, zeroPoint: String)] = [:]
        var nodes: [Onnx_NodeProto] = []
        var ops = Set<String>()

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

        for (i, node) in graph.node.enumerated() where !folded.contains(i) {
            let defaultDomain = node.domain.isEmpty || node.domain == "ai.onnx"
            if defaultDomain, node.opType == "MatMul", node.input.count == 2, let w = weights[node.input[1]] {
                var a = node.input[0]
                if let inverse = smoothing[a] {
                    if let s = smoothed[a] { a = s } else {
                        let s = fresh(a + "_smoothed")
                        nodes.append(make("Mul", [a, inverse], [s]))
                        smoothed[a] = s
                        a = s
                    }
                }
                // The bias Add that follows goes into the fused operator, when it is a plain [N] vector.
                var output = node.output[0], bias = ""
                let fuses: Bool = if case .matMulInt8(.standard) = w.site { false } else { true }
                if fuses, !graphOutputs.contains(output), let c = consumers[output], c.count == 1 {
                    let add = graph.node[c[0]]
                    if add.opType == "Add", add.domain.isEmpty || add.domain == "ai.onnx", add.input.count == 2, add.input[0] != add.input[1] {
                        let other = add.input[0] == output ? add.input[1] : add.input[0]
                        if floatShapes[other] == [w.shape[1]] {
                            bias = other
                            output = add.output[0]
                            folded.insert(c[0])
                        }
                    }
                }
                switch w.site {
                case .matMulInt8(.onnxruntime):
                    nodes.append(make("DynamicQuantizeMatMul", [a, w.parts[0], w.parts[1]] + (bias.isEmpty ? [] : ["", bias]), [output],
                                      domain: "com.microsoft"))
                case .matMulInt8(.standard):
                    let q: (q: String, scale: String, zeroPoint: String)
                    if let known = quantizedInput[a] { q = known } else {
                        q = (fresh(a + "_quantized"), fresh(a + "_scale"), fresh(a + "_zero_point"))
                        nodes.append(make("DynamicQuantizeLinear", [a], [q.q, q.scale, q.zeroPoint]))
                        quantizedInput[a] = q
                    }
                    let integer = fresh(output + "_int32"), real = fresh(output + "_unscaled"), scale = fresh(output + "_scale")
                    nodes.append(make("MatMulInteger", [q.q, w.parts[0], q.zeroPoint], [integer]))
                    nodes.append(make("Cast", [integer], [real], [("to", 1)]))
                    nodes.append(make("Mul", [q.scale, w.parts[1]], [scale]))
                    nodes.append(make("Mul", [real, scale], [output]))
                case .matMulNBits(let block, let level):
                    nodes.append(make("MatMulNBits", [a] + w.parts + (bias.isEmpty ? [] : ["", bias]), [output], domain: "com.microsoft",
                                      [("K", w.shape[0]), ("N", w.shape[1]), ("bits", 4), ("block_size", Int64(block)),
                                       ("accuracy_level", Int64(level))]))
                case .gatherBlockQuantized:
                    nodes.append(node)
                }
            } else if defaultDomain, node.opType == "Gather", node.input.count == 2, let w = weights[node.input[0]],
                      case .gatherBlockQuantized(let block) = w.site {
                nodes.append(make("GatherBlockQuantized", [w.parts[0], node.input[1], w.parts[1], w.parts[2]], node.output, domain: "com.microsoft",
                                  [("gather_axis", 0), ("quantize_axis", 1), ("block_size", Int64(block))]))
            } else {
                nodes.append(node)
            }
        }
        graph.node = nodes
        return ops.sorted()
    }
}

extension BuildJob {
    var smoothAlpha: Double? {
        for s in recipe.steps { if case .smooth(let a) = s { return a } }
        return nil
    }

    /// SmoothQuant-style smoothing for the MatMuls a compute form quantizes: for each activation
    /// read by such MatMuls, s_k = max|x_k|^α / max|w_k·|^(1−α) (clamped to [0.01, 100]); the weights'
    /// rows are multiplied by s (in `transform`) and the activation divided by it (a Mul the rewrite
    /// inserts). Returns the inverse-scale initializers to add, by activation.
    mutating func planSmoothing(_ decisions: inout [TensorDecision], graph: Onnx_GraphProto,
                                fresh: (String) -> String) throws(CompressionError) -> [(activation: String, name: String, inverse: [Float])] {
        guard let alpha = smoothAlpha else { return [] }
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
        var skipped = 0
        for a in order {
            let members = groups[a]!
            // A weight read with two different activations cannot take both smoothings.
            guard members.allSatisfy({ activationOf[$0]!.count == 1 }), let amax = ranges.absmax[a],
                  let k = decisions[members[0]].source?.shape.first, members.allSatisfy({ decisions[$0].source?.shape.first == k }),
                  amax.count == Int(k) else { skipped += 1; continue }
            var wmax = [Float](repeating: 0, count: Int(k))
            for di in members {
                let w = try decisions[di].source!.readFloats()
                let cols = w.count / Int(k)
                w.withUnsafeBufferPointer { w in
                    for r in 0..<Int(k) { for c in 0..<cols { wmax[r] = max(wmax[r], abs(w[r * cols + c])) } }
                }
            }
            let s: [Float] = (0..<Int(k)).map { r in
                guard amax[r] > 0, wmax[r] > 0, amax[r].isFinite else { return 1 }
                let v = pow(Double(amax[r]), alpha) / pow(Double(wmax[r]), 1 - alpha)
                return Float(min(100, max(0.01, v)))
            }
            for di in members { decisions[di].rowScales = s }
            out.append((a, fresh(a + "_smooth_inverse"), s.map { 1 / $0 }))
        }
        notes.append(String(format: "activations smoothed (alpha %.2f) before %d MatMul groups from %d calibration samples", alpha, out.count, ranges.samples)
                     + (skipped > 0 ? "; \(skipped) groups without usable ranges left as they were" : ""))
        return out
    }
}
