import Foundation

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
    func apply(
        _ graph: inout Onnx_GraphProto, floatShapes: [String: [Int64]], opset: Int64,
        fresh: (String) -> String
    ) -> (operators: [String], initializers: [Onnx_TensorProto]) {
        var consumers: [String: [Int]] = [:]
        for (i, n) in graph.node.enumerated() { for x in n.input where !x.isEmpty { consumers[x, default: []].append(i) } }
        let graphOutputs = Set(graph.output.map(\.name))
        func isDefault(_ n: Onnx_NodeProto) -> Bool { n.domain.isEmpty || n.domain == "ai.onnx" }

        // Pass 1: the MatMuls to replace, the bias each absorbs, and the sibling groups.
        var readers: [Int: Reader] = [:]
        var siblings: [String: [Int]] = [:]  // activation → reader nodes, in graph order
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
            guard
                members.allSatisfy({
                    !readers[$0]!.bias.isEmpty && readers[$0]!.weight.site == first.weight.site
                        && readers[$0]!.weight.shape[0] == first.weight.shape[0]
                })
            else { continue }
            for m in members { groupOf[m] = members }
        }

        var skip = Set(readers.values.compactMap(\.biasAdd))
        var smoothed: [String: String] = [:]
        var quantizedInput: [String: (q: String, scale: String, zeroPoint: String)] = [:]
        var nodes: [Onnx_NodeProto] = []
        var ops = Set<String>()
        var added: [Onnx_TensorProto] = []

        func make(_ op: String, _ inputs: [String], _ outputs: [String], domain: String = "", _ attrs: [(String, Int64)] = [])
            -> Onnx_NodeProto
        {
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
                nodes.append(
                    make(
                        "DynamicQuantizeMatMul", [a, parts[0], parts[1]] + (bias.isEmpty ? [] : ["", bias]), [output],
                        domain: "com.microsoft"))
            case .matMulNBits(let block, let level):
                nodes.append(
                    make(
                        "MatMulNBits", [a] + parts + (bias.isEmpty ? [] : ["", bias]), [output], domain: "com.microsoft",
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
                    if let known = quantizedInput[a] {
                        q = known
                    } else {
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
                case .gatherBlockQuantized(let block, let bits) = w.site
            {
                nodes.append(
                    make(
                        "GatherBlockQuantized", [w.parts[0], node.input[1], w.parts[1], w.parts[2]], node.output, domain: "com.microsoft",
                        [("gather_axis", 0), ("quantize_axis", 1), ("block_size", Int64(block)), ("bits", Int64(bits))]))
            } else {
                nodes.append(node)
            }
        }
        graph.node = nodes
        return (ops.sorted(), added)
    }
}
