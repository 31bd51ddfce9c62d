import Foundation

/// Spelled-out LayerNorms (`ReduceMean → Sub → Mul|Pow → ReduceMean → Add ε → Sqrt → Div`, then
/// `Mul γ`, `Add β`) as one `LayerNormalization` (opset 17), which onnxruntime runs in one pass. When
/// something else reads the normalized value (a folded MatMul group), the operator gets γ = 1, β = 0
/// and the `Mul γ`, `Add β` stay. The residual `Add` before each fused norm becomes a `Sum` (the same
/// arithmetic): onnxruntime would otherwise fuse it into `SkipLayerNormalization`, which measured
/// slower than the spelled-out norm on its CPU provider (1.32).
enum LayerNormFusion {
    /// Operators whose meaning changed between opset 13 and 17 in ways raising the opset does not adapt.
    static let refused: Set<String> = ["BatchNormalization", "RoiAlign", "GridSample", "Scan", "Loop", "If", "SequenceMap", "DFT"]

    /// Whether a model at `opset` can carry LayerNormalization (17), raised if need be.
    static func canRaise(_ graph: Onnx_GraphProto, from opset: Int64) -> Bool {
        opset >= 17
            || (opset >= 13 && !graph.node.contains { ($0.domain.isEmpty || $0.domain == "ai.onnx") && refused.contains($0.opType) })
    }

    /// Rewrites `graph.node`; returns the initializers it added (γ = 1, β = 0 vectors) and the count.
    static func apply(
        _ graph: inout Onnx_GraphProto, vectors: [String: Int64], scalars: [String: Float], fresh: (String) -> String
    ) -> (initializers: [Onnx_TensorProto], fused: Int) {
        func isDefault(_ n: Onnx_NodeProto) -> Bool { n.domain.isEmpty || n.domain == "ai.onnx" }
        var consumers: [String: [Int]] = [:]
        var producer: [String: Int] = [:]
        for (i, n) in graph.node.enumerated() {
            for x in Set(n.input) where !x.isEmpty { consumers[x, default: []].append(i) }
            for o in n.output { producer[o] = i }
        }
        let outputs = Set(graph.output.map(\.name))
        func only(_ value: String, _ op: String) -> Int? {
            guard !outputs.contains(value), let c = consumers[value], c.count == 1, graph.node[c[0]].opType == op,
                isDefault(graph.node[c[0]])
            else { return nil }
            return c[0]
        }
        func lastAxis(_ n: Onnx_NodeProto) -> Bool {
            let axes = n.attribute.first { $0.name == "axes" }?.ints ?? []
            let keep = n.attribute.first { $0.name == "keepdims" }?.i ?? 1
            return axes == [-1] && keep == 1 && n.input.count == 1
        }
        var removed = Set<Int>()
        var replacement: [Int: [Onnx_NodeProto]] = [:]
        var added: [Onnx_TensorProto] = []
        var sums = Set<Int>()
        for (i, mean) in graph.node.enumerated() where isDefault(mean) && mean.opType == "ReduceMean" && lastAxis(mean) {
            let x = mean.input[0]
            guard let sub = only(mean.output[0], "Sub"), graph.node[sub].input == [x, mean.output[0]] else { continue }
            let d = graph.node[sub].output[0]
            guard let dc = consumers[d], dc.count == 2, !outputs.contains(d) else { continue }
            let square = dc.first { j in
                let n = graph.node[j]
                return isDefault(n)
                    && ((n.opType == "Mul" && n.input == [d, d]) || (n.opType == "Pow" && n.input[0] == d && scalars[n.input[1]] == 2))
            }
            let div = dc.first { graph.node[$0].opType == "Div" && graph.node[$0].input.first == d && isDefault(graph.node[$0]) }
            guard let square, let div, let variance = only(graph.node[square].output[0], "ReduceMean"), lastAxis(graph.node[variance]),
                let addEps = only(graph.node[variance].output[0], "Add"),
                let eps = graph.node[addEps].input.first(where: { $0 != graph.node[variance].output[0] }).flatMap({ scalars[$0] }),
                let sqrt = only(graph.node[addEps].output[0], "Sqrt"), graph.node[div].input == [d, graph.node[sqrt].output[0]]
            else { continue }
            let normalized = graph.node[div].output[0]
            // γ and β: Mul(n, γ) read only by Add(·, β), both vectors; then the whole norm is one operator.
            var gamma: String?, beta: String?, out = normalized, tail: [Int] = []
            if let mul = only(normalized, "Mul"), let g = graph.node[mul].input.first(where: { $0 != normalized && vectors[$0] != nil }),
                let add = only(graph.node[mul].output[0], "Add"),
                let b = graph.node[add].input.first(where: { $0 != graph.node[mul].output[0] && vectors[$0] == vectors[g] })
            {
                gamma = g; beta = b; out = graph.node[add].output[0]; tail = [mul, add]
            } else if let c = consumers[normalized],
                let mul = c.first(where: { graph.node[$0].opType == "Mul" && isDefault(graph.node[$0]) }),
                let g = graph.node[mul].input.first(where: { $0 != normalized && vectors[$0] != nil }), let k = vectors[g]
            {
                // Read elsewhere too: γ = 1, β = 0 here, the Mul and Add stay.
                var one = Onnx_TensorProto(), zero = Onnx_TensorProto()
                one.name = fresh(normalized + "_unit_scale"); zero.name = fresh(normalized + "_zero_shift")
                one.dataType = TensorDType.f32.onnxCode; zero.dataType = TensorDType.f32.onnxCode
                one.dims = [k]; zero.dims = [k]
                one.rawData = Data(TensorCodec.floatBytes([Float](repeating: 1, count: Int(k))))
                zero.rawData = Data(TensorCodec.floatBytes([Float](repeating: 0, count: Int(k))))
                added += [one, zero]
                gamma = one.name; beta = zero.name
            } else {
                continue
            }
            var ln = Onnx_NodeProto()
            ln.opType = "LayerNormalization"
            ln.input = [x, gamma!, beta!]
            ln.output = [out]
            ln.name = fresh(out + "_LayerNormalization")
            var axis = Onnx_AttributeProto(); axis.name = "axis"; axis.type = .int; axis.i = -1
            var epsilon = Onnx_AttributeProto(); epsilon.name = "epsilon"; epsilon.type = .float; epsilon.f = eps
            ln.attribute = [axis, epsilon]
            for j in [i, sub, square, variance, addEps, sqrt, div] + tail { removed.insert(j) }
            replacement[i] = [ln]
            if let p = producer[x], graph.node[p].opType == "Add", isDefault(graph.node[p]), graph.node[p].input.count == 2 {
                sums.insert(p)
            }
        }
        guard !replacement.isEmpty else { return ([], 0) }
        var nodes: [Onnx_NodeProto] = []
        for (i, n) in graph.node.enumerated() {
            if let r = replacement[i] {
                nodes += r
            } else if !removed.contains(i) {
                var n = n
                if sums.contains(i) { n.opType = "Sum" }
                nodes.append(n)
            }
        }
        graph.node = nodes
        return (added, replacement.count)
    }
}
