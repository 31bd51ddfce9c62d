import Foundation

/// What the graph says about each initializer: which operators read it (for the quantization axis
/// and for protecting embeddings and norms) and how late in the graph (for the last layer).
struct ONNXGraphFacts {
    struct Use {
        var opType: String; var input: Int; var node: Int; var transB: Bool
        var domain: String = ""
        var axis: Int64 = 0
        var isDefaultDomain: Bool { domain.isEmpty || domain == "ai.onnx" }
    }
    var uses: [String: [Use]] = [:]
    var nodeOutputs = Set<String>()
    var graphInputs = Set<String>()
    var graphOutputs = Set<String>()

    init(_ graph: Onnx_GraphProto) {
        for (n, node) in graph.node.enumerated() {
            let transB = node.attribute.first { $0.name == "transB" }?.i == 1
            let axis = node.attribute.first { $0.name == "axis" }?.i ?? 0
            for (i, input) in node.input.enumerated() where !input.isEmpty {
                uses[input, default: []].append(
                    Use(opType: node.opType, input: i, node: n, transB: transB, domain: node.domain, axis: axis))
            }
            for o in node.output { nodeOutputs.insert(o) }
        }
        for i in graph.input { graphInputs.insert(i.name) }
        for o in graph.output { graphOutputs.insert(o.name) }
    }

    /// For a compute form: the operator that can read this weight in its quantized form, if every
    /// reader of it is one. MatMul B [K, N] (int8: any K; MatMulNBits: K a multiple of the block) or
    /// a Gather table [rows, D] read along axis 0 with D a multiple of the block (int4; int8 with the
    /// onnxruntime operators). int4 `mixed`: int4 tables, int8 MatMuls.
    func computeSite(_ name: String, shape: [Int64], storage: Recipe.Step?) -> ComputeSite? {
        guard let u = uses[name], !u.isEmpty, shape.count == 2, !graphInputs.contains(name), !graphOutputs.contains(name) else {
            return nil
        }
        let allMatMulB = u.allSatisfy { $0.opType == "MatMul" && $0.isDefaultDomain && $0.input == 1 }
        let allGatherTable = u.allSatisfy { $0.opType == "Gather" && $0.isDefaultDomain && $0.input == 0 && $0.axis == 0 }
        switch storage {
        case .int8Dynamic(let ops) where allMatMulB:
            return .matMulInt8(ops)
        case .int8Dynamic(.onnxruntime) where allGatherTable:
            // 8-bit blocks along each row: the largest block (up to 128) that divides the row.
            guard let b = [128, 64, 32, 16].first(where: { shape[1] % Int64($0) == 0 }) else { return nil }
            return .gatherBlockQuantized(blockSize: b, bits: 8)
        case .int4MatMulNBits(let b, let acc) where allMatMulB && shape[0] % Int64(b) == 0:
            return .matMulNBits(blockSize: b, accuracyLevel: acc)
        case .int4MatMulNBits(let b, _) where allGatherTable && shape[1] % Int64(b) == 0,
            .int4Mixed(let b) where allGatherTable && shape[1] % Int64(b) == 0:
            return .gatherBlockQuantized(blockSize: b, bits: 4)
        case .int4Mixed where allMatMulB:
            return .matMulInt8(.onnxruntime)
        default:
            return nil
        }
    }

    /// The axis per-channel scales run along: the output channels of the operator that reads the weight.
    func channelAxis(_ name: String, rank: Int) -> Int {
        guard let u = uses[name]?.first else { return 0 }
        switch (u.opType, u.input) {
        case ("MatMul", 1): return rank - 1  // B is [K, N]: one scale per output column
        case ("Gemm", 1): return u.transB ? 0 : 1
        case ("ConvTranspose", 1): return rank > 1 ? 1 : 0
        default: return 0  // Conv [O, I, …], Gather rows, …
        }
    }

    /// int4 blocks run along the reduction axis: the one next to the channel axis.
    func blockAxis(_ name: String, rank: Int) -> Int {
        let c = channelAxis(name, rank: rank)
        return c == 0 ? (rank > 1 ? 1 : 0) : 0
    }

    func isEmbedding(_ name: String) -> Bool {
        uses[name]?.contains { $0.opType == "Gather" && $0.input == 0 } == true
    }

    func isNorm(_ name: String) -> Bool {
        uses[name]?.contains {
            [
                "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
                "SimplifiedLayerNormalization", "SkipLayerNormalization", "RMSNormalization"
            ].contains($0.opType)
        } == true
    }

    /// The position of the latest node that reads it.
    func lastUse(_ name: String) -> Int { uses[name]?.map(\.node).max() ?? -1 }
}

/// Raising a graph's default-domain opset to 21 (for block-wise int4 DequantizeLinear), when every
/// operator in it means the same at 21 once the few whose inputs moved are adapted.
enum ONNXOpsetUpgrade {
    /// Operators whose meaning changed between opset 13 and 21 in ways this upgrade does not adapt.
    static let refused: Set<String> = [
        "GroupNormalization", "GridSample", "DFT", "Resize", "Pad", "Scan", "Loop", "If",
        "SequenceMap", "Col2Im", "CenterCropPad", "AffineGrid", "STFT"
    ]
    /// Reduce operators that took `axes` as an attribute until opset 18 and as an input from 18.
    static let reduceOps: Set<String> = [
        "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"
    ]

    /// Adapts `graph` in place and returns initializers the adapted nodes need (axes tensors).
    static func upgrade(_ graph: inout Onnx_GraphProto, from opset: Int64, takenNames: inout Set<String>) throws(CompressionError)
        -> [Onnx_TensorProto]
    {
        guard opset >= 13 else {
            throw CompressionError(
                .unsupportedOpset,
                "block-wise int4 needs opset 21; raising it from \(opset) (below 13) is not safe: re-export at opset 13 or later")
        }
        var extra: [Onnx_TensorProto] = []
        for i in graph.node.indices {
            let op = graph.node[i].opType
            let domain = graph.node[i].domain
            guard domain.isEmpty || domain == "ai.onnx" else { continue }
            if refused.contains(op) {
                throw CompressionError(
                    .unsupportedOpset,
                    "block-wise int4 needs opset 21, and operator \(op) (node '\(graph.node[i].name)') changed meaning between \(opset) and 21"
                )
            }
            if graph.node[i].attribute.contains(where: { $0.type == .graph || $0.type == .graphs }) {
                throw CompressionError(
                    .unsupportedOpset, "block-wise int4 needs opset 21; subgraphs (node '\(graph.node[i].name)') are not upgraded")
            }
            if opset < 18, reduceOps.contains(op), let a = graph.node[i].attribute.firstIndex(where: { $0.name == "axes" }) {
                let axes = graph.node[i].attribute[a].ints
                graph.node[i].attribute.remove(at: a)
                var name = "\(graph.node[i].name.isEmpty ? op : graph.node[i].name)_axes"
                while takenNames.contains(name) { name += "_" }
                takenNames.insert(name)
                var t = Onnx_TensorProto()
                t.name = name
                t.dataType = TensorDType.i64.onnxCode
                t.dims = [Int64(axes.count)]
                t.rawData = axes.withUnsafeBytes { Data($0) }
                extra.append(t)
                if graph.node[i].input.count < 2 { graph.node[i].input.append(name) }
            }
            if opset < 18, op == "Split", graph.node[i].input.count < 2 || graph.node[i].input[1].isEmpty,
                !graph.node[i].attribute.contains(where: { $0.name == "num_outputs" })
            {
                var attr = Onnx_AttributeProto()
                attr.name = "num_outputs"
                attr.type = .int
                attr.i = Int64(graph.node[i].output.count)
                graph.node[i].attribute.append(attr)
            }
        }
        return extra
    }
}
