import Foundation

/// The form of each int8 MatMul group in a mixed-precision build, by the activation its MatMuls
/// read. Groups not named compute as the recipe's int8 form does.
struct MixedPlan: Equatable, Sendable {
    enum Form: String, Sendable {
        /// The MatMuls read the input n of the per-channel affine map a = n·γ + β that made their
        /// activation; γ goes into the weight rows and β·W into the bias. Exact, and free at run time.
        case folded
        /// A smoothing Mul before the MatMuls (one element-wise operator at run time).
        case smoothed
        /// The MatMuls stay fp32.
        case fp32
    }
    var forms: [String: Form] = [:]
    /// What the measurement found, for the report's notes.
    var summary: String = ""

    func with(_ activation: String, _ form: Form) -> MixedPlan {
        var p = self
        p.forms[activation] = form
        return p
    }
}

/// An activation read by MatMuls that the int8 compute form quantizes, and whether it can be folded.
struct MixedGroup: Equatable {
    var activation: String
    /// The affine map's input, when the activation is `Add(Mul(n, γ), β)` with γ and β fp32 vectors of
    /// the activation's width and every MatMul of the group has its own bias `Add`.
    var normalized: String?
}

extension BuildJob {
    /// The MatMul groups a mixed-precision plan can name, in graph order.
    func mixedGroups(_ graph: Onnx_GraphProto, decisions: [TensorDecision]) -> [MixedGroup] {
        let layout = MixedLayout(graph, decisions: decisions)
        return layout.order.map { MixedGroup(activation: $0, normalized: layout.affine($0)?.input) }
    }

    /// Applies `options.mixedPlan`: rewires folded groups to the affine map's input (γ into the
    /// weight rows, b + β·W as a new bias), smooths the groups the plan smooths, keeps fp32 ones fp32.
    /// Returns the smoothing Muls to insert, the tensors to add, and the biases now read nowhere.
    mutating func applyMixedPlan(
        _ decisions: inout [TensorDecision], graph: inout Onnx_GraphProto, initializers: [ONNXModel.Initializer],
        fresh: (String) -> String
    ) throws(CompressionError) -> (
        smoothing: [(activation: String, name: String, inverse: [Float])], tensors: [Onnx_TensorProto], dropped: Set<String>
    ) {
        guard let plan = options.mixedPlan, let step = recipe.mixedStep else { return ([], [], []) }
        let layout = MixedLayout(graph, decisions: decisions)
        let index = Dictionary(decisions.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        func floats(_ name: String) throws(CompressionError) -> [Float] {
            guard let i = index[name], let s = decisions[i].source else {
                throw CompressionError(.unsupportedDataType, "not an fp32 tensor this builder reads", tensor: name)
            }
            return try s.readFloats()
        }
        var smoothing: [(activation: String, name: String, inverse: [Float])] = []
        var tensors: [Onnx_TensorProto] = []
        var replacedBiases: Set<String> = []
        for a in layout.order {
            guard let form = plan.forms[a], let members = layout.groups[a] else { continue }
            switch form {
            case .fp32:
                for m in members {
                    decisions[m.decision].encoding = nil
                    decisions[m.decision].site = nil
                    decisions[m.decision].reason = "kept: fp32 (mixed precision: the measured agreement needed it)"
                }
            case .smoothed:
                guard let amax = options.calibration?.absmax[a] else {
                    throw CompressionError(.evaluator, "the calibration ranges have no entry for this activation", tensor: a)
                }
                let k = decisions[members[0].decision].shape[0]
                guard amax.count == Int(k) else {
                    throw CompressionError(
                        .shapeMismatch, "the calibration ranges have \(amax.count) channels, the MatMuls read \(k)", tensor: a)
                }
                var weights: [[Float]] = []
                for m in members { weights.append(try floats(decisions[m.decision].name)) }
                let s = SmoothingEstimate(
                    absmax: amax, meanSquares: options.calibration?.meanSquares[a], weights: weights, rows: Int(k)
                ).scales(alpha: step.alpha)
                for m in members { decisions[m.decision].rowScales = s }
                smoothing.append((a, fresh(a + "_smooth_inverse"), s.map { 1 / $0 }))
            case .folded:
                guard let map = layout.affine(a) else {
                    throw CompressionError(.io, "internal: activation is not a foldable affine map", tensor: a)
                }
                let gamma = try floats(map.gamma), beta = try floats(map.beta)
                for m in members {
                    let w = try floats(decisions[m.decision].name), b = try floats(m.bias)
                    let n = b.count
                    var folded = b
                    for r in 0..<gamma.count where beta[r] != 0 {
                        let br = beta[r]
                        for c in 0..<n { folded[c] += br * w[r * n + c] }
                    }
                    decisions[m.decision].rowScales = gamma
                    decisions[m.decision].rowScalesAre = "affine map folded (γ rows, β·W into the bias)"
                    var t = Onnx_TensorProto()
                    t.name = fresh(m.bias + "_folded")
                    t.dataType = TensorDType.f32.onnxCode
                    t.dims = [Int64(n)]
                    t.rawData = Data(TensorCodec.floatBytes(folded))
                    tensors.append(t)
                    graph.node[m.node].input[0] = map.input
                    let add = graph.node[m.biasAdd]
                    graph.node[m.biasAdd].input = add.input.map { $0 == m.bias ? t.name : $0 }
                    replacedBiases.insert(m.bias)
                }
            }
        }
        var stillRead = Set<String>()
        for n in graph.node { for x in n.input { stillRead.insert(x) } }
        let outputs = Set(graph.output.map(\.name))
        let dropped = replacedBiases.filter { !stillRead.contains($0) && !outputs.contains($0) }
        if !plan.summary.isEmpty { notes.append(plan.summary) }
        return (smoothing, tensors, dropped)
    }
}

/// Where the int8 MatMul groups are in a graph: per activation, each MatMul node, its weight's
/// decision and its bias `Add`.
struct MixedLayout {
    struct Member { var node: Int; var decision: Int; var bias: String; var biasAdd: Int }
    struct Affine { var input: String; var gamma: String; var beta: String }

    var order: [String] = []
    var groups: [String: [Member]] = [:]
    /// Activations whose every MatMul has a bias Add (the fold needs one to carry β·W).
    private var withBias = Set<String>()
    private var producer: [String: Int] = [:]
    private let graph: Onnx_GraphProto
    private let vectors: [String: Int64]
    private let initializers: Set<String>
    /// The weight's K (rows), by decision.
    private var rows: [Int: Int64] = [:]

    init(_ graph: Onnx_GraphProto, decisions: [TensorDecision]) {
        self.graph = graph
        let index = Dictionary(decisions.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        var vectors: [String: Int64] = [:]
        for d in decisions where d.source?.dtype == .f32 && d.source?.shape.count == 1 { vectors[d.name] = d.source!.shape[0] }
        self.vectors = vectors
        initializers = Set(decisions.map(\.name))
        var consumers: [String: [Int]] = [:]
        var weightReaders: [String: Int] = [:]
        for (i, n) in graph.node.enumerated() {
            for x in n.input where !x.isEmpty { consumers[x, default: []].append(i) }
            for o in n.output { producer[o] = i }
            if n.opType == "MatMul", n.input.count == 2 { weightReaders[n.input[1], default: 0] += 1 }
        }
        let outputs = Set(graph.output.map(\.name))
        var biased: [String: Bool] = [:]
        for (i, n) in graph.node.enumerated()
        where (n.domain.isEmpty || n.domain == "ai.onnx") && n.opType == "MatMul" && n.input.count == 2 {
            guard let di = index[n.input[1]], case .matMulInt8(.onnxruntime) = decisions[di].site, decisions[di].encoding != nil,
                weightReaders[n.input[1]] == 1
            else { continue }
            let a = n.input[0]
            if groups[a] == nil { order.append(a); biased[a] = true }
            var member = Member(node: i, decision: di, bias: "", biasAdd: -1)
            rows[di] = decisions[di].shape.first ?? -1
            let width = decisions[di].shape.last ?? -1
            if !outputs.contains(n.output[0]), let c = consumers[n.output[0]], c.count == 1, graph.node[c[0]].opType == "Add",
                graph.node[c[0]].input.count == 2,
                let bias = graph.node[c[0]].input.first(where: { $0 != n.output[0] && vectors[$0] == width })
            {
                member.bias = bias
                member.biasAdd = c[0]
            } else {
                biased[a] = false
            }
            groups[a, default: []].append(member)
        }
        withBias = Set(biased.filter(\.value).keys)
    }

    /// `a = Add(Mul(n, γ), β)` (either operand order) with γ and β fp32 vectors as wide as `a`'s
    /// channels, n a computed value, and every MatMul of the group with its bias.
    func affine(_ a: String) -> Affine? {
        guard withBias.contains(a), let members = groups[a], let first = members.first, let pa = producer[a] else { return nil }
        let add = graph.node[pa]
        guard add.opType == "Add", add.domain.isEmpty || add.domain == "ai.onnx", add.input.count == 2 else { return nil }
        guard let k = rows[first.decision], let beta = add.input.first(where: { vectors[$0] == k }) else { return nil }
        let scaled = add.input[0] == beta ? add.input[1] : add.input[0]
        guard let pm = producer[scaled] else { return nil }
        let mul = graph.node[pm]
        guard mul.opType == "Mul", mul.domain.isEmpty || mul.domain == "ai.onnx", mul.input.count == 2,
            let gamma = mul.input.first(where: { vectors[$0] == k })
        else { return nil }
        let input = mul.input[0] == gamma ? mul.input[1] : mul.input[0]
        guard !initializers.contains(input) else { return nil }
        return Affine(input: input, gamma: gamma, beta: beta)
    }

}
