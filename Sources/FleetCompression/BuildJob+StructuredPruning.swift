import Foundation

/// Structured pruning of feed-forward blocks: whole neurons go (a column of the up-projection
/// [D, F], its bias entry, the row of the down-projection [F, N]), so the MatMuls get smaller and do
/// less work, unlike magnitude pruning, which zeroes weights inside dense matrices.
enum StructuredPruning {
    /// One feed-forward block found in the graph: MatMul(x, up) (+ bias) → element-wise operators
    /// with scalar constants only (GELU, ReLU, …) → MatMul(·, down).
    struct Block: Equatable { var up: String; var bias: String?; var down: String; var width: Int; var region: Set<String> }

    /// Element-wise operators that act on each neuron alone (with scalar constants).
    static let elementwise: Set<String> = [
        "Mul", "Add", "Sub", "Div", "Erf", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "Gelu", "Pow",
        "Sqrt", "Exp", "Neg", "Abs", "Identity", "Cast", "Softplus", "Clip", "HardSigmoid",
        "HardSwish", "Elu", "Selu", "Celu", "Mish"
    ]

    /// The blocks whose up and down weights (and bias) are fp32 initializers read only there.
    /// `shapes`: the initializers' shapes; `scalars`: names of values with at most one element
    /// (initializers and Constant outputs).
    static func blocks(_ graph: Onnx_GraphProto, shapes: [String: [Int64]], scalars: Set<String>) -> [Block] {
        var consumers: [String: [Int]] = [:]
        var readers: [String: Int] = [:]
        for (i, n) in graph.node.enumerated() {
            for x in n.input where !x.isEmpty { consumers[x, default: []].append(i); readers[x, default: 0] += 1 }
        }
        let outputs = Set(graph.output.map(\.name)), inputs = Set(graph.input.map(\.name))
        func isDefault(_ n: Onnx_NodeProto) -> Bool { n.domain.isEmpty || n.domain == "ai.onnx" }
        func ownWeight(_ name: String) -> Bool { readers[name] == 1 && !inputs.contains(name) && !outputs.contains(name) }
        var found: [Block] = []
        for up in graph.node where isDefault(up) && up.opType == "MatMul" && up.input.count == 2 {
            guard let w1 = shapes[up.input[1]], w1.count == 2, ownWeight(up.input[1]) else { continue }
            let width = w1[1]
            var bias: String?
            var region: Set<String> = [up.output[0]]
            var regionNodes: [Int] = []
            var queue = [up.output[0]]
            var down: Int?
            var ok = true
            while ok, let v = queue.popLast() {
                if outputs.contains(v) { ok = false; break }
                for c in consumers[v] ?? [] {
                    let n = graph.node[c]
                    if isDefault(n), n.opType == "MatMul", n.input.count == 2, n.input[0] == v, n.input[1] != v,
                        let w2 = shapes[n.input[1]], w2.count == 2, w2[0] == width, ownWeight(n.input[1])
                    {
                        if down == nil || down == c { down = c } else { ok = false }
                        continue
                    }
                    guard isDefault(n), elementwise.contains(n.opType), !regionNodes.contains(c) else {
                        if !regionNodes.contains(c) { ok = false }
                        continue
                    }
                    // The bias: a [F] initializer added straight to the up-projection's output.
                    if bias == nil, n.opType == "Add", v == up.output[0], n.input.count == 2 {
                        let other = n.input[0] == v ? n.input[1] : n.input[0]
                        if shapes[other] == [width], ownWeight(other) { bias = other }
                    }
                    regionNodes.append(c)
                    for o in n.output where !region.contains(o) { region.insert(o); queue.append(o) }
                }
            }
            guard ok, let d = down, region.contains(graph.node[d].input[0]) else { continue }
            // Every input of the element-wise part is a value of the block, a scalar or the bias.
            let closed = regionNodes.allSatisfy { c in
                graph.node[c].input.allSatisfy { $0.isEmpty || region.contains($0) || scalars.contains($0) || $0 == bias }
            }
            guard closed, width > 1 else { continue }
            found.append(Block(up: up.input[1], bias: bias, down: graph.node[d].input[1], width: Int(width), region: region))
        }
        return found
    }

    /// The neurons to keep: the largest ‖up[:, j]‖ · ‖down[j, :]‖, `fraction` of them removed, the
    /// count kept rounded up to a multiple of 32 when the width is one (blocks and vector kernels).
    static func keep(up: [Float], down: [Float], width: Int, fraction: Double) -> [Int] {
        let rowsUp = up.count / width, colsDown = down.count / width
        var score = [Double](repeating: 0, count: width)
        var upNorm = [Double](repeating: 0, count: width)
        for r in 0..<rowsUp { for j in 0..<width { let v = Double(up[r * width + j]); upNorm[j] += v * v } }
        for j in 0..<width {
            var s = 0.0
            for c in 0..<colsDown { let v = Double(down[j * colsDown + c]); s += v * v }
            score[j] = (upNorm[j] * s).squareRoot()
        }
        var count = max(1, width - Int((Double(width) * fraction).rounded(.down)))
        if width % 32 == 0 { count = min(width, (count + 31) / 32 * 32) }
        let order = (0..<width).sorted { score[$0] != score[$1] ? score[$0] > score[$1] : $0 < $1 }
        return order.prefix(count).sorted()
    }

    /// The slices of `keep.axis` listed in `keep.indices`, of a rank-1 or rank-2 tensor.
    static func select(_ values: [Float], shape: [Int64], keep: TensorDecision.Selection) -> [Float] {
        if shape.count == 1 { return keep.indices.map { values[$0] } }
        let rows = Int(shape[0]), cols = Int(shape[1])
        var out: [Float] = []
        out.reserveCapacity(keep.axis == 0 ? keep.indices.count * cols : rows * keep.indices.count)
        if keep.axis == 0 {
            for r in keep.indices { out.append(contentsOf: values[(r * cols)..<((r + 1) * cols)]) }
        } else {
            for r in 0..<rows { for c in keep.indices { out.append(values[r * cols + c]) } }
        }
        return out
    }
}

extension BuildJob {
    /// Plans `prune: {scope: ffn-neurons}`: finds the feed-forward blocks, picks the neurons to keep,
    /// and marks the up weight (axis 1), its bias and the down weight (axis 0) to shrink. Shapes
    /// recorded in the graph for the block's intermediate values are dropped (they change).
    mutating func planStructuredPruning(_ decisions: inout [TensorDecision], graph: inout Onnx_GraphProto) throws(CompressionError) {
        guard let fraction = recipe.structuredPruning else { return }
        if recipe.storage == nil {
            // Nothing else changes: only the blocks' tensors are rewritten.
            for i in decisions.indices where decisions[i].encoding != nil {
                decisions[i].encoding = nil
                decisions[i].reason = "kept: fp32 (not part of a feed-forward block)"
            }
        }
        let index = Dictionary(decisions.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        var shapes: [String: [Int64]] = [:], scalars = Set<String>()
        for d in decisions {
            guard let s = d.source else { continue }
            if s.dtype == .f32 { shapes[d.name] = s.shape }
            if s.elements <= 1 { scalars.insert(d.name) }
        }
        for n in graph.node where n.opType == "Constant" && (n.domain.isEmpty || n.domain == "ai.onnx") {
            if let v = n.attribute.first(where: { $0.name == "value" }), v.t.dims.reduce(1, *) <= 1 { scalars.formUnion(n.output) }
            if n.attribute.contains(where: { ["value_float", "value_int"].contains($0.name) }) { scalars.formUnion(n.output) }
        }
        var pruned = 0, removed = 0, total = 0, skipped = 0
        var dropShapes = Set<String>()
        for b in StructuredPruning.blocks(graph, shapes: shapes, scalars: scalars) {
            let names = [b.up, b.down] + (b.bias.map { [$0] } ?? [])
            // A protected tensor (recipe `protect`) keeps its block whole.
            guard let ui = index[b.up], let di = index[b.down], names.allSatisfy({ index[$0] != nil }),
                !names.contains(where: { decisions[index[$0]!].reason.hasPrefix("kept: protected") })
            else { skipped += 1; continue }
            let keep = StructuredPruning.keep(
                up: try decisions[ui].source!.readFloats(), down: try decisions[di].source!.readFloats(),
                width: b.width, fraction: fraction)
            guard keep.count < b.width else { skipped += 1; continue }
            for (name, axis) in [(b.up, 1), (b.down, 0)] + (b.bias.map { [($0, 0)] } ?? []) {
                let i = index[name]!
                decisions[i].keep = .init(axis: axis, indices: keep)
                if decisions[i].encoding == nil {
                    decisions[i].encoding = TensorEncoding(kind: .float32, channelAxis: 0, blockAxis: 0)
                    decisions[i].reason = "structured pruning"
                }
            }
            dropShapes.formUnion(b.region)
            pruned += 1; removed += b.width - keep.count; total += b.width
        }
        graph.valueInfo.removeAll { dropShapes.contains($0.name) }
        var note =
            "structured pruning: \(removed) of \(total) neurons removed in \(pruned) feed-forward blocks (by ‖up column‖·‖down row‖; matrices reshaped)"
        if pruned == 0 {
            note =
                "structured pruning: no feed-forward block (MatMul → element-wise → MatMul with weights read only there) found: nothing removed"
        }
        if skipped > 0 { note += "; \(skipped) blocks left whole (protected or nothing to remove)" }
        notes.append(note)
    }
}
