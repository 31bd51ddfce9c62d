import FleetCore
import Foundation

/// The state of one build: the decisions per tensor, the global pruning threshold, and the per-tensor
/// qualities as they are measured.
struct BuildJob {
    let options: VariantBuilder.Options
    let format: VariantBuilder.Format
    var recipe: Recipe { options.recipe }
    var qualities: [VariantReport.TensorQuality] = []
    var inputBytes: Int64 = 0
    var globalThreshold: Float?
    var notes: [String] = []
    /// The operators the compute form put in the graph.
    var operators: [String] = []
    private var progressDone = 0
    private var progressTotal = 0
    private var bytesDone: Int64 = 0
    private var bytesTotal: Int64 = 0

    init(options: VariantBuilder.Options, format: VariantBuilder.Format) {
        self.options = options
        self.format = format
    }

    var pruneStep: (sparsity: Double, scope: Recipe.PruneScope)? {
        // Magnitude pruning only; structured pruning (ffn-neurons) is planned from the graph.
        for s in recipe.steps { if case .prune(let sp, let scope) = s, scope != .ffnNeurons { return (sp, scope) } }
        return nil
    }

    /// Which tensors the recipe touches. `axes` gives the channel and block axis of a tensor;
    /// `protectedBy` names the protection (embeddings, layernorm, last, a pattern) that keeps it, if any.
    /// `site`: for compute forms, the operator that will read the weight (nil: none that can).
    func decide(
        _ source: SourceTensor?, name: String, axes: (channel: Int, block: Int),
        protectedBy: String?, site: ComputeSite? = nil
    ) -> TensorDecision {
        func keep(_ reason: String) -> TensorDecision {
            TensorDecision(source: source, name: name, encoding: nil, prune: false, reason: reason)
        }
        guard let s = source else { return keep("kept: data not in a form this builder reads") }
        guard s.dtype.isFloat else { return keep("kept: \(s.dtype.rawValue) is not floating point") }
        guard s.dtype == .f32 else { return keep("kept: \(s.dtype.rawValue) (only fp32 weights are transformed)") }
        guard s.shape.count >= 2 else { return keep("kept: fewer than 2 dimensions (bias, norm or scalar)") }
        guard s.elements >= recipe.minElements else { return keep("kept: \(s.elements) elements, below \(recipe.minElements)") }
        if let p = protectedBy { return keep("kept: protected (\(p))") }
        if recipe.storage?.computes == true {
            // A compute form quantizes only what an operator can compute from directly; the rest stays fp32.
            guard let site else {
                return keep("kept: fp32 (not read as a MatMul weight or embedding table that the compute form can take)")
            }
            let enc =
                switch site {
                case .matMulInt8: TensorEncoding(kind: .int8(perChannel: true), channelAxis: 1, blockAxis: 0)
                case .matMulNBits(let b, _): TensorEncoding(kind: .int4NBits(blockSize: b), channelAxis: 1, blockAxis: 0)
                case .gatherBlockQuantized(let b, let bits):
                    TensorEncoding(kind: bits == 8 ? .uint8Blocks(blockSize: b) : .int4(blockSize: b), channelAxis: 0, blockAxis: 1)
                }
            var d = TensorDecision(source: s, name: name, encoding: enc, prune: pruneStep != nil, reason: enc.summary)
            d.site = site
            return d
        }
        let enc: TensorEncoding? =
            switch recipe.storage {
            case .fp16: TensorEncoding(kind: .fp16, channelAxis: axes.channel, blockAxis: axes.block)
            case .int8(let g): TensorEncoding(kind: .int8(perChannel: g == .perChannel), channelAxis: axes.channel, blockAxis: axes.block)
            case .int4(let b): TensorEncoding(kind: .int4(blockSize: b), channelAxis: axes.channel, blockAxis: axes.block)
            case .binary: TensorEncoding(kind: .binary, channelAxis: axes.channel, blockAxis: axes.block)
            case .ternary: TensorEncoding(kind: .ternary, channelAxis: axes.channel, blockAxis: axes.block)
            default: TensorEncoding(kind: .float32, channelAxis: axes.channel, blockAxis: axes.block)
            }
        return TensorDecision(source: s, name: name, encoding: enc, prune: pruneStep != nil, reason: enc!.summary)
    }

    /// Protection by the recipe's `protect` list, given what the format knows about the tensor.
    func protection(name: String, isEmbedding: Bool, isNorm: Bool, isLast: Bool) -> String? {
        for p in recipe.protect {
            switch p {
            case "embeddings": if isEmbedding || name.lowercased().contains("embed") { return "embeddings" }
            case "layernorm": if isNorm || name.lowercased().contains("norm") { return "layernorm" }
            case "last": if isLast { return "last layer" }
            default:
                if let r = try? Regex(p), name.contains(r) { return "pattern \(p)" }
            }
        }
        return nil
    }

    /// For global pruning: one magnitude threshold over every tensor that will be pruned, from two
    /// streaming passes (a coarse and a fine histogram).
    mutating func prepareGlobalPruning(_ decisions: [TensorDecision]) throws(CompressionError) {
        guard let step = pruneStep, step.scope == .global else { return }
        let pruned = decisions.filter { $0.prune }
        var h = MagnitudeHistogram()
        for d in pruned { h.addHigh(try d.source!.readFloats()) }
        let k = Int64((Double(h.total) * step.sparsity).rounded(.down))
        guard k > 0 else { globalThreshold = 0; return }
        h.selectBin(k: k - 1)
        for d in pruned { h.addLow(try d.source!.readFloats()) }
        globalThreshold = h.threshold(k: k - 1)
    }

    mutating func startProgress(_ decisions: [TensorDecision]) {
        progressTotal = decisions.count
        bytesTotal = decisions.reduce(0) { $0 + ($1.source?.length ?? 0) }
    }

    mutating func tick(_ d: TensorDecision) {
        progressDone += 1
        bytesDone += d.source?.length ?? 0
        options.progress?(
            VariantBuilder.Progress(tensor: d.name, done: progressDone, total: progressTotal, bytesDone: bytesDone, bytesTotal: bytesTotal))
    }

    /// Reads, prunes and encodes one tensor; records its quality. Returns the payload of each part.
    mutating func transform(_ d: TensorDecision) throws(CompressionError) -> [[UInt8]] {
        guard let s = d.source, let enc = d.encoding else { return [] }
        let parts: [[UInt8]], meter: ErrorMeter
        let shape = d.shape
        if case .int8(let perChannel) = enc.kind, !d.prune, d.rowScales == nil, d.keep == nil, s.dtype == .f32 {
            // The common case, straight from the input's bytes: no fp32 copy of the tensor.
            var m = ErrorMeter()
            parts = try s.withBytes { b in
                TensorCodec.encodeInt8(b, original: b, shape: shape, perChannel: perChannel, axis: enc.channelAxis, meter: &m)
            }
            meter = m
        } else {
            var original = try s.readFloats()
            if let k = d.keep { original = StructuredPruning.select(original, shape: s.shape, keep: k) }
            if let rs = d.rowScales {
                // Smoothing is exact algebra (the activation is divided by the same factors); the error
                // measured is that of the stored, smoothed weight.
                let cols = original.count / max(rs.count, 1)
                original.withUnsafeMutableBufferPointer { w in
                    for r in 0..<rs.count { for c in 0..<cols { w[r * cols + c] *= rs[r] } }
                }
            }
            var values = original
            if d.prune, let step = pruneStep {
                let t = step.scope == .global ? (globalThreshold ?? 0) : MagnitudePruner.threshold(values, sparsity: step.sparsity)
                MagnitudePruner.apply(&values, threshold: t)
            }
            (parts, meter) = TensorCodec.encode(values, original: original, shape: shape, as: enc)
        }
        let specs = enc.parts(shape: shape)
        for (p, spec) in zip(parts, specs) where Int64(p.count) != spec.byteCount {
            throw CompressionError(.io, "internal: \(spec.role) has \(p.count) bytes, planned \(spec.byteCount)", tensor: s.name)
        }
        var encoding = enc.summary
        if d.prune, let step = pruneStep { encoding = "pruned \(step.scope.rawValue), " + encoding }
        if d.rowScales != nil { encoding = d.rowScalesAre + ", " + encoding }
        if let k = d.keep {
            encoding = "structured: kept \(k.indices.count) of \(s.shape[k.axis]) FFN neurons (axis \(k.axis)), " + encoding
        }
        switch d.site {
        case .matMulInt8(let ops): encoding += ops == .onnxruntime ? " → DynamicQuantizeMatMul" : " → MatMulInteger"
        case .matMulNBits(_, let acc): encoding += " → MatMulNBits accuracy_level \(acc)"
        case .gatherBlockQuantized: encoding += " → GatherBlockQuantized"
        case nil: break
        }
        qualities.append(
            VariantReport.TensorQuality(
                name: s.name, dtype: s.dtype.rawValue, shape: shape, encoding: encoding, changed: true,
                relativeL2: meter.relativeL2, snrDb: meter.snrDb, maxAbsError: meter.maxAbs, sparsity: meter.sparsity,
                overflow: enc.kind == .fp16 ? meter.overflow : nil, bytesIn: s.length, bytesOut: parts.reduce(0) { $0 + Int64($1.count) }))
        return parts
    }

    mutating func recordKept(_ d: TensorDecision, bytes: Int64, dtype: String, shape: [Int64]) {
        qualities.append(
            VariantReport.TensorQuality(
                name: d.name, dtype: dtype, shape: shape, encoding: d.reason, changed: false,
                bytesIn: bytes, bytesOut: bytes))
    }
}
