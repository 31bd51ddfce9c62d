import FleetCore
import Foundation
import SwiftProtobuf

extension BuildJob {
    /// One initializer field of the output graph: copied from the input, or a TensorProto header
    /// followed by a payload that is produced when its turn comes.
    private enum Entry {
        case verbatim(Range<Int>)
        case inline(header: [UInt8], payloadLength: Int64, payload: Payload)

        enum Payload { case source(SourceTensor), part(decision: Int, index: Int), bytes([UInt8]) }

        var size: Int64 {
            switch self {
            case .verbatim(let r): return Int64(r.count)
            case .inline(let h, let n, _):
                return ProtobufWire.fieldSize(field: 5, length: Int64(h.count) + ProtobufWire.fieldSize(field: 9, length: n))
            }
        }
    }

    mutating func buildONNX(_ out: AtomicOutputFile, input: ReadableFile? = nil) throws(CompressionError) {
        let path = options.input
        let onnx = try ONNXModel(path: path, file: input)
        inputBytes = onnx.file.size
        var model = onnx.model
        var graph = onnx.graph
        let facts = ONNXGraphFacts(graph)
        var taken = Set(onnx.initializers.map(\.name)).union(facts.nodeOutputs).union(facts.graphInputs)
        for n in graph.node where !n.name.isEmpty { taken.insert(n.name) }
        func fresh(_ base: String) -> String {
            var name = base, i = 1
            while taken.contains(name) { name = "\(base)_\(i)"; i += 1 }
            taken.insert(name)
            return name
        }

        let computes = recipe.storage?.computes == true
        var decisions = decisions(onnx, facts: facts)
        let mixed = try applyMixedPlan(&decisions, graph: &graph, initializers: onnx.initializers, fresh: fresh)
        let smoothing = try planSmoothing(&decisions, graph: graph, fresh: fresh) + mixed.smoothing
        try planStructuredPruning(&decisions, graph: &graph)
        let fusedNorms = fuseLayerNorms(&graph, decisions: decisions, opset: onnx.defaultOpset, fresh: fresh)
        if fusedNorms.count > 0, onnx.defaultOpset < 17 {
            for i in model.opsetImport.indices where model.opsetImport[i].domain.isEmpty || model.opsetImport[i].domain == "ai.onnx" {
                model.opsetImport[i].version = 17
            }
            notes.append("opset raised from \(onnx.defaultOpset) to 17 for LayerNormalization")
        }

        // Opset: per-channel DequantizeLinear needs 13, block-wise needs 21; DynamicQuantizeLinear 11.
        let opset = onnx.defaultOpset
        let changed = decisions.filter { $0.encoding != nil }
        var needed: Int64 = 1
        var upgradeExtras: [Onnx_TensorProto] = []
        if case .int8Dynamic(.standard) = recipe.storage, changed.contains(where: { $0.site != nil }), opset < 11 {
            throw CompressionError(
                .unsupportedOpset, "int8 compute with standard operators needs opset 11 (DynamicQuantizeLinear), the model has \(opset)",
                path: path)
        }
        for d in changed where d.site == nil {
            switch d.encoding!.kind {
            case .int8(let pc): needed = max(needed, pc ? 13 : 10)
            case .binary, .ternary: needed = max(needed, 13)
            case .int4: needed = max(needed, 21)
            default: break
            }
        }
        var rewrite = ComputeRewrite()
        if needed > opset {
            if needed == 21 {
                upgradeExtras = try ONNXOpsetUpgrade.upgrade(&graph, from: opset, takenNames: &taken)
                notes.append("opset raised from \(opset) to 21 for block-wise int4 DequantizeLinear")
            } else {
                throw CompressionError(
                    .unsupportedOpset, "\(recipe.storage.map { "\($0)" } ?? "") needs opset \(needed), the model has \(opset)", path: path)
            }
            for i in model.opsetImport.indices where model.opsetImport[i].domain.isEmpty || model.opsetImport[i].domain == "ai.onnx" {
                model.opsetImport[i].version = 21
            }
            if model.irVersion < 10 { model.irVersion = 10 }
        }

        // New nodes first (they read only initializers), then the graph's own.
        var newNodes: [Onnx_NodeProto] = []
        var entries: [Entry] = []
        var owner: [Int?] = []  // the decision each entry belongs to
        /// A tensor the rewrite adds (no decision of its own), written inline after the model's own.
        func appendNew(_ t: Onnx_TensorProto) throws(CompressionError) {
            var header = t
            header.clearRawData()
            owner.append(nil)
            entries.append(
                .inline(header: try serialize(header, t.name), payloadLength: Int64(t.rawData.count), payload: .bytes(Array(t.rawData))))
        }
        for (di, d) in decisions.enumerated() {
            let ini = onnx.initializers[di]
            defer { while owner.count < entries.count { owner.append(di) } }
            if mixed.dropped.contains(d.name) { continue }  // a bias replaced by its folded copy, read nowhere else
            guard let enc = d.encoding, let s = d.source else {
                if ini.isExternal, let s = ini.source {
                    var h = ini.header
                    h.externalData = []
                    h.clearDataLocation()
                    entries.append(.inline(header: try serialize(h, s.name), payloadLength: s.length, payload: .source(s)))
                } else {
                    entries.append(.verbatim(ini.messageRange))
                }
                continue
            }
            let specs = enc.parts(shape: d.shape)
            var names: [String] = []
            for (pi, spec) in specs.enumerated() {
                let suffix =
                    spec.role == .scale
                    ? "_scale"
                    : spec.role == .zeroPoint
                        ? "_zero_point"
                        : (enc.kind == .fp16 ? "_fp16" : (enc.kind == .float32 ? "" : "_quantized"))
                let pname = suffix.isEmpty ? s.name : fresh(s.name + suffix)
                names.append(pname)
                var h = Onnx_TensorProto()
                h.name = pname
                h.dataType = spec.dtype.onnxCode
                h.dims = spec.shape
                entries.append(
                    .inline(header: try serialize(h, s.name), payloadLength: spec.byteCount, payload: .part(decision: di, index: pi)))
            }
            if let site = d.site {
                // Compute forms: no node makes the fp32 weight again; its readers are rewritten below.
                rewrite.weights[s.name] = ComputeRewrite.Weight(site: site, parts: names, shape: d.shape)
                continue
            }
            var node = Onnx_NodeProto()
            node.output = [s.name]
            switch enc.kind {
            case .float32, .int4NBits, .uint8Blocks: continue
            case .fp16:
                node.opType = "Cast"
                node.input = [names[0]]
                node.attribute = [intAttribute("to", Int64(TensorDType.f32.onnxCode))]
            case .int8(let pc):
                node.opType = "DequantizeLinear"
                node.input = names
                if pc { node.attribute = [intAttribute("axis", Int64(enc.channelAxis))] }
            case .binary, .ternary:
                node.opType = "DequantizeLinear"
                node.input = names
                node.attribute = [intAttribute("axis", Int64(enc.channelAxis))]
            case .int4(let block):
                node.opType = "DequantizeLinear"
                node.input = names
                node.attribute = [intAttribute("axis", Int64(enc.blockAxis)), intAttribute("block_size", Int64(block))]
            }
            node.name = fresh(s.name + "_" + node.opType)
            newNodes.append(node)
        }
        for (activation, name, inverse) in smoothing {
            var t = Onnx_TensorProto()
            t.name = name
            t.dataType = TensorDType.f32.onnxCode
            t.dims = [Int64(inverse.count)]
            t.rawData = Data(TensorCodec.floatBytes(inverse))
            upgradeExtras.append(t)
            rewrite.smoothing[activation] = name
        }
        for t in upgradeExtras + mixed.tensors + fusedNorms.initializers { try appendNew(t) }
        let replaced = Set(changed.filter { $0.encoding?.kind != .float32 }.map(\.name))
        // A weight that was also listed as a graph input (IR < 4 exporters do that) is now a node output.
        graph.input.removeAll { replaced.contains($0.name) }
        graph.node = newNodes + graph.node
        if !rewrite.isEmpty {
            var floatShapes: [String: [Int64]] = [:]
            for i in onnx.initializers where i.header.dataType == TensorDType.f32.onnxCode { floatShapes[i.name] = i.header.dims }
            for d in decisions where d.keep != nil { floatShapes[d.name] = d.shape }  // structurally pruned biases
            for t in mixed.tensors { floatShapes[t.name] = t.dims }  // biases with a folded affine map
            let (ops, added) = rewrite.apply(
                &graph, floatShapes: floatShapes,
                opset: model.opsetImport.first { $0.domain.isEmpty || $0.domain == "ai.onnx" }?.version ?? opset,
                fresh: fresh)
            operators = (ops + (fusedNorms.count > 0 ? ["LayerNormalization", "Sum"] : [])).sorted()
            for t in added { try appendNew(t) }
            if operators.contains(where: { $0.hasPrefix("com.microsoft.") }),
                !model.opsetImport.contains(where: { $0.domain == "com.microsoft" })
            {
                var ms = Onnx_OperatorSetIdProto()
                ms.domain = "com.microsoft"
                ms.version = 1
                model.opsetImport.append(ms)
            }
            // UINT4 initializers (GatherBlockQuantized tables) are IR 10.
            if rewrite.weights.values.contains(where: { if case .gatherBlockQuantized(_, 4) = $0.site { true } else { false } }),
                model.irVersion < 10
            {
                model.irVersion = 10
            }
            let unused = decisions.filter { $0.site != nil && $0.encoding != nil && rewrite.weights[$0.name] == nil }
            if !unused.isEmpty { throw CompressionError(.io, "internal: compute weights without a reader", tensor: unused[0].name) }
        } else if computes {
            notes.append("no MatMul weight or embedding table qualified for the compute form: the variant computes like its base")
        }

        let modelBytes: [UInt8], graphBytes: [UInt8]
        do {
            modelBytes = try model.serializedBytes()
            graphBytes = try graph.serializedBytes()
        } catch { throw CompressionError(.malformed, "cannot serialize the model: \(error)", path: options.output) }
        let graphLength = Int64(graphBytes.count) + entries.reduce(0) { $0 + $1.size }
        let total = Int64(modelBytes.count) + ProtobufWire.fieldSize(field: 7, length: graphLength)
        guard total < Int64(Int32.max) else {
            throw CompressionError(
                .unsupportedFormat,
                "the variant would be \(total) bytes, past protobuf's 2 GiB limit (external data output is not supported)",
                path: options.output)
        }
        try out.write(modelBytes)
        try out.write(ProtobufWire.lengthPrefix(field: 7, length: graphLength))
        try out.write(graphBytes)

        try prepareGlobalPruning(decisions)
        startProgress(decisions)
        var current: (decision: Int, parts: [[UInt8]])?
        var previous: Int?
        for (ei, entry) in entries.enumerated() {
            if let di = owner[ei], di != previous {
                let d = decisions[di]
                if d.encoding == nil {
                    let ini = onnx.initializers[di]
                    recordKept(
                        d, bytes: d.source?.length ?? Int64(ini.messageRange.count),
                        dtype: d.source?.dtype.rawValue ?? "onnx-\(ini.header.dataType)", shape: ini.header.dims)
                }
                tick(d)
                previous = di
            }
            switch entry {
            case .verbatim(let r):
                try onnx.copyVerbatim(r, to: out)
            case .inline(let header, let n, let payload):
                try out.write(
                    ProtobufWire.lengthPrefix(field: 5, length: Int64(header.count) + ProtobufWire.fieldSize(field: 9, length: n)))
                try out.write(header)
                try out.write(ProtobufWire.lengthPrefix(field: 9, length: n))
                switch payload {
                case .source(let s): try s.file.copy(at: s.offset, count: s.length, to: out)
                case .bytes(let b): try out.write(b)
                case .part(let di, let pi):
                    if current?.decision != di { current = (di, try transform(decisions[di]).map { $0 }) }
                    try out.write(current!.parts[pi])
                }
            }
        }
        guard out.written == total else {
            throw CompressionError(.io, "internal: wrote \(out.written) bytes, planned \(total)", path: options.output)
        }
    }

    /// The `fuse-layernorm` step: spelled-out LayerNorms as LayerNormalization, when the model's opset
    /// is 17 or can be raised to it.
    mutating func fuseLayerNorms(_ graph: inout Onnx_GraphProto, decisions: [TensorDecision], opset: Int64, fresh: (String) -> String)
        -> (initializers: [Onnx_TensorProto], count: Int)
    {
        guard recipe.steps.contains(.fuseLayerNorm) else { return ([], 0) }
        guard LayerNormFusion.canRaise(graph, from: opset) else {
            notes.append("LayerNorms not fused: opset \(opset) cannot be raised to 17 safely")
            return ([], 0)
        }
        var vectors: [String: Int64] = [:], scalars: [String: Float] = [:]
        for d in decisions {
            guard let s = d.source, s.dtype == .f32 else { continue }
            if s.shape.count == 1 { vectors[d.name] = s.shape[0] }
            if s.elements == 1, let v = try? s.readFloats().first { scalars[d.name] = v }
        }
        let r = LayerNormFusion.apply(&graph, vectors: vectors, scalars: scalars, fresh: fresh)
        if r.fused > 0 { notes.append("\(r.fused) spelled-out LayerNorms fused into LayerNormalization (residual Add before each as Sum)") }
        return (r.initializers, r.fused)
    }

    /// How the recipe treats each initializer of the model, in file order.
    func decisions(_ onnx: ONNXModel, facts: ONNXGraphFacts) -> [TensorDecision] {
        // The last weight layer: among tensors the recipe could touch, the one read latest in the graph.
        let lastName = onnx.initializers.filter { ($0.source?.shape.count ?? 0) >= 2 && $0.source?.dtype == .f32 }
            .max { facts.lastUse($0.name) < facts.lastUse($1.name) }?.name
        let computes = recipe.storage?.computes == true
        return onnx.initializers.map { i -> TensorDecision in
            let rank = i.source?.shape.count ?? 0
            // Compute forms read embeddings too (GatherBlockQuantized); only `protect` keeps them.
            let prot = protection(
                name: i.name, isEmbedding: facts.isEmbedding(i.name), isNorm: facts.isNorm(i.name), isLast: i.name == lastName)
            let site = computes ? i.source.flatMap { facts.computeSite(i.name, shape: $0.shape, storage: recipe.storage) } : nil
            return decide(
                i.source, name: i.name, axes: (facts.channelAxis(i.name, rank: rank), facts.blockAxis(i.name, rank: rank)),
                protectedBy: prot, site: site)
        }
    }

    private func serialize(_ t: Onnx_TensorProto, _ tensor: String) throws(CompressionError) -> [UInt8] {
        do { return try t.serializedBytes() } catch { throw CompressionError(.malformed, "cannot serialize: \(error)", tensor: tensor) }
    }

    private func intAttribute(_ name: String, _ value: Int64) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .int
        a.i = value
        return a
    }
}
