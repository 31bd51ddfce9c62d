import FleetCore
import Foundation

extension BuildJob {
    /// safetensors: quantized values keep the tensor's name (I8, or U8 holding two unsigned int4 per
    /// byte, low nibble first), scales go under NAME_scale (F32) and int4 zero points under
    /// NAME_zero_point (packed like the values); `__metadata__["edgefleet.encoding"]` says per tensor
    /// how to dequantize: w = (q − zero_point) · scale along the given axis, in blocks for int4.
    mutating func buildSafetensors(_ out: AtomicOutputFile) throws(CompressionError) {
        if recipe.storage?.computes == true || recipe.needsCalibration || recipe.structuredPruning != nil {
            throw CompressionError(
                .unsupportedFormat,
                "recipe '\(recipe.name)' rewrites the graph (the operators that read the weights, or their shapes): it needs an ONNX graph, not safetensors",
                path: options.input)
        }
        let st = try SafetensorsModel(path: options.input)
        inputBytes = st.file.size
        let lastName = st.tensors.last { $0.dtype == .f32 && $0.shape.count >= 2 && $0.elements >= recipe.minElements }?.name
        let decisions = st.tensors.map { t in
            decide(
                t, name: t.name, axes: (0, t.shape.count > 1 ? 1 : 0),
                protectedBy: protection(name: t.name, isEmbedding: false, isNorm: false, isLast: t.name == lastName))
        }
        var taken = Set(st.tensors.map(\.name))
        struct Item { var name: String; var dtype: String; var shape: [Int64]; var length: Int64; var decision: Int; var part: Int? }
        var items: [Item] = []
        var encodingMeta: [String: [String: Any]] = [:]
        for (di, d) in decisions.enumerated() {
            let s = d.source!
            guard let enc = d.encoding else {
                items.append(Item(name: s.name, dtype: s.dtype.rawValue, shape: s.shape, length: s.length, decision: di, part: nil))
                continue
            }
            var partNames: [TensorEncoding.Role: String] = [:]
            for (pi, spec) in enc.parts(shape: s.shape).enumerated() {
                var name = s.name
                if spec.role != .values {
                    let base = s.name + "_" + spec.role.rawValue
                    name = base
                    var i = 1
                    while taken.contains(name) { name = "\(base)_\(i)"; i += 1 }
                    taken.insert(name)
                    partNames[spec.role] = name
                }
                // safetensors has no 4-bit type: the packed bytes are U8 [ceil(n/2)].
                let (dtype, shape): (String, [Int64]) = spec.dtype.bits == 4 ? ("U8", [spec.byteCount]) : (spec.dtype.rawValue, spec.shape)
                items.append(Item(name: name, dtype: dtype, shape: shape, length: spec.byteCount, decision: di, part: pi))
            }
            var m: [String: Any] = ["encoding": enc.summary, "shape": s.shape]
            if let scale = partNames[.scale] { m["scale"] = scale }
            if let zp = partNames[.zeroPoint] { m["zero_point"] = zp }
            switch enc.kind {
            case .int8(let pc): m["kind"] = "int8"; if pc { m["axis"] = enc.channelAxis }
            case .binary, .ternary: m["kind"] = enc.kind == .binary ? "binary" : "ternary"; m["axis"] = enc.channelAxis
            case .int4(let b): m["kind"] = "int4"; m["axis"] = enc.blockAxis; m["block_size"] = b
            case .int4NBits(let b): m["kind"] = "int4-nbits"; m["block_size"] = b  // ONNX only; refused above
            case .uint8Blocks(let b): m["kind"] = "int8-blocks"; m["block_size"] = b  // ONNX only; refused above
            case .fp16: m["kind"] = "fp16"
            case .float32: m["kind"] = "fp32"
            }
            if d.prune { m["pruned"] = true }
            encodingMeta[s.name] = m
        }

        var metadata = st.metadata
        metadata["edgefleet.recipe"] = recipe.name
        metadata["edgefleet.tool"] = "\(VariantBuilder.tool) \(VariantBuilder.toolVersion)"
        if let data = try? JSONSerialization.data(withJSONObject: encodingMeta, options: [.sortedKeys]) {
            metadata["edgefleet.encoding"] = String(decoding: data, as: UTF8.self)
        }
        var header = "{\"__metadata__\":" + jsonObject(metadata)
        var offset: Int64 = 0
        for item in items {
            header +=
                ",\(jsonString(item.name)):{\"dtype\":\"\(item.dtype)\",\"shape\":[\(item.shape.map(String.init).joined(separator: ","))],"
                + "\"data_offsets\":[\(offset),\(offset + item.length)]}"
            offset += item.length
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(UInt8(ascii: " ")) }
        var lengthBytes = [UInt8](repeating: 0, count: 8)
        lengthBytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(headerBytes.count).littleEndian, as: UInt64.self) }
        try out.write(lengthBytes)
        try out.write(headerBytes)

        try prepareGlobalPruning(decisions)
        startProgress(decisions)
        var current: (decision: Int, parts: [[UInt8]])?
        var previous: Int?
        for item in items {
            let d = decisions[item.decision]
            if item.decision != previous {
                tick(d)
                previous = item.decision
            }
            guard let part = item.part else {
                let s = d.source!
                try s.file.copy(at: s.offset, count: s.length, to: out)
                recordKept(d, bytes: s.length, dtype: s.dtype.rawValue, shape: s.shape)
                continue
            }
            if current?.decision != item.decision { current = (item.decision, try transform(d)) }
            try out.write(current!.parts[part])
        }
        let total = 8 + Int64(headerBytes.count) + offset
        guard out.written == total else {
            throw CompressionError(.io, "internal: wrote \(out.written) bytes, planned \(total)", path: options.output)
        }
    }

    private func jsonString(_ s: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [s], options: [])) ?? Data("[\"\"]".utf8)
        let text = String(decoding: data, as: UTF8.self)
        return String(text.dropFirst().dropLast())
    }

    private func jsonObject(_ d: [String: String]) -> String {
        "{" + d.keys.sorted().map { "\(jsonString($0)):\(jsonString(d[$0]!))" }.joined(separator: ",") + "}"
    }
}
