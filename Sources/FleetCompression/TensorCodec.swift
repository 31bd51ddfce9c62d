import Foundation

/// How one tensor is stored after a storage step, and the arithmetic that gets it there. int8,
/// binary and ternary are symmetric (w ≈ q · scale, no zero point); int4 is asymmetric per block
/// (w ≈ (q − zero_point) · scale, q and zero point unsigned 4-bit), which at 16 levels measurably
/// beats symmetric. Either way `DequantizeLinear` reproduces ŵ in any ONNX runtime.
struct TensorEncoding: Equatable {
    enum Kind: Equatable {
        case float32  // values changed (pruned) but stored as fp32
        case fp16
        case int8(perChannel: Bool)
        case int4(blockSize: Int)
        /// MatMulNBits' layout of a MatMul weight B [K, N]: transposed to [N, K], int4 blocks along K,
        /// two per byte (low nibble first); scales [N, blocks]; zero points [N, ⌈blocks/2⌉] packed per row.
        case int4NBits(blockSize: Int)
        /// 8-bit blocks along `blockAxis`, asymmetric: UINT8 values, a scale and a UINT8 zero point per block.
        case uint8Blocks(blockSize: Int)
        case binary
        case ternary
    }
    var kind: Kind
    /// Per-channel scales run along this axis (int8, binary, ternary).
    var channelAxis: Int
    /// int4 blocks run along this axis (the reduction axis).
    var blockAxis: Int

    enum Role: String { case values, scale, zeroPoint = "zero_point" }

    struct PartSpec: Equatable {
        var role: Role
        var dtype: TensorDType
        var shape: [Int64]
        var byteCount: Int64 { dtype.byteCount(elements: elementCount(shape) ?? 0) ?? 0 }
    }

    /// The parts the encoding writes for a tensor of `shape`, before any value is computed, so that
    /// writers can lay the file out first and stream the payloads after.
    func parts(shape: [Int64]) -> [PartSpec] {
        switch kind {
        case .float32: return [PartSpec(role: .values, dtype: .f32, shape: shape)]
        case .fp16: return [PartSpec(role: .values, dtype: .f16, shape: shape)]
        case .int8(let perChannel):
            return [
                PartSpec(role: .values, dtype: .i8, shape: shape),
                PartSpec(role: .scale, dtype: .f32, shape: perChannel ? [shape[channelAxis]] : [])
            ]
        case .binary, .ternary:
            return [PartSpec(role: .values, dtype: .i8, shape: shape), PartSpec(role: .scale, dtype: .f32, shape: [shape[channelAxis]])]
        case .int4(let b):
            var s = shape
            s[blockAxis] = (s[blockAxis] + Int64(b) - 1) / Int64(b)
            return [
                PartSpec(role: .values, dtype: .uint4, shape: shape), PartSpec(role: .scale, dtype: .f32, shape: s),
                PartSpec(role: .zeroPoint, dtype: .uint4, shape: s)
            ]
        case .uint8Blocks(let b):
            var s = shape
            s[blockAxis] = (s[blockAxis] + Int64(b) - 1) / Int64(b)
            return [
                PartSpec(role: .values, dtype: .u8, shape: shape), PartSpec(role: .scale, dtype: .f32, shape: s),
                PartSpec(role: .zeroPoint, dtype: .u8, shape: s)
            ]
        case .int4NBits(let b):
            let k = shape[0], n = shape[1], blocks = (k + Int64(b) - 1) / Int64(b)
            return [
                PartSpec(role: .values, dtype: .u8, shape: [n, blocks, Int64(b / 2)]),
                PartSpec(role: .scale, dtype: .f32, shape: [n, blocks]),
                PartSpec(role: .zeroPoint, dtype: .u8, shape: [n, (blocks + 1) / 2])
            ]
        }
    }

    var summary: String {
        switch kind {
        case .float32: "fp32"
        case .fp16: "fp16"
        case .int8(let pc): pc ? "int8 per-channel axis \(channelAxis)" : "int8 per-tensor"
        case .int4(let b): "int4 block \(b) axis \(blockAxis) asymmetric"
        case .int4NBits(let b): "int4 block \(b) along K asymmetric (MatMulNBits layout)"
        case .uint8Blocks(let b): "int8 block \(b) axis \(blockAxis) asymmetric"
        case .binary: "binary per-channel axis \(channelAxis)"
        case .ternary: "ternary per-channel axis \(channelAxis)"
        }
    }
}

/// The error a tensor took: accumulated while encoding, one element at a time.
struct ErrorMeter {
    var sumSquares = 0.0
    var sumErrorSquares = 0.0
    var maxAbs = 0.0
    var zeros: Int64 = 0
    var count: Int64 = 0
    var overflow = 0

    @inline(__always) mutating func add(_ w: Float, _ r: Float) {
        let d = Double(w) - Double(r)
        sumSquares += Double(w) * Double(w)
        sumErrorSquares += d * d
        if abs(d) > maxAbs { maxAbs = abs(d) }
        if r == 0 { zeros += 1 }
        count += 1
    }

    var relativeL2: Double { sumSquares > 0 ? (sumErrorSquares / sumSquares).squareRoot() : (sumErrorSquares > 0 ? .infinity : 0) }
    var snrDb: Double? { sumErrorSquares > 0 && sumSquares > 0 ? 10 * log10(sumSquares / sumErrorSquares) : nil }
    var sparsity: Double { count > 0 ? Double(zeros) / Double(count) : 0 }
}

/// The index arithmetic of an axis: elements are (outer, along, inner) with `along` the axis.
struct AxisLayout {
    let outer: Int, along: Int, inner: Int
    init(shape: [Int64], axis: Int) {
        outer = shape[..<axis].reduce(1) { $0 * Int($1) }
        along = Int(shape[axis])
        inner = shape[(axis + 1)...].reduce(1) { $0 * Int($1) }
    }
}

enum TensorCodec {
    /// Encodes `values` (already pruned, if the recipe prunes) and measures the result against `original`.
    static func encode(_ values: [Float], original: [Float], shape: [Int64], as enc: TensorEncoding) -> (
        parts: [[UInt8]], meter: ErrorMeter
    ) {
        var meter = ErrorMeter()
        switch enc.kind {
        case .float32:
            for i in values.indices { meter.add(original[i], values[i]) }
            return ([values.withUnsafeBytes { Array($0) }], meter)
        case .fp16:
            var out = [UInt8](repeating: 0, count: values.count * 2)
            out.withUnsafeMutableBytes { o in
                for i in values.indices {
                    let h = Float16(values[i])
                    if h.isInfinite && values[i].isFinite { meter.overflow += 1 }
                    o.storeBytes(of: h.bitPattern.littleEndian, toByteOffset: i * 2, as: UInt16.self)
                    meter.add(original[i], Float(h))
                }
            }
            return ([out], meter)
        case .int8(let perChannel):
            return (
                encodeInt8(values, original: original, shape: shape, perChannel: perChannel, axis: enc.channelAxis, meter: &meter), meter
            )
        case .binary, .ternary:
            let layout = AxisLayout(shape: shape, axis: enc.channelAxis)
            var sumAbs = [Double](repeating: 0, count: layout.along)
            forEachChannel(values, layout, true) { c, v in sumAbs[c] += Double(abs(v)) }
            let perChannel = Double(layout.outer * layout.inner)
            let meanAbs = sumAbs.map { $0 / max(perChannel, 1) }
            var alpha = meanAbs.map { Float($0) }
            var threshold = [Float](repeating: 0, count: layout.along)
            if enc.kind == .ternary {
                // Ternary weight networks: zero below 0.7·mean|w|, the scale the mean of what is left.
                threshold = meanAbs.map { Float(0.7 * $0) }
                var kept = [Double](repeating: 0, count: layout.along), n = [Double](repeating: 0, count: layout.along)
                forEachChannel(values, layout, true) { c, v in if abs(v) > threshold[c] { kept[c] += Double(abs(v)); n[c] += 1 } }
                alpha = (0..<layout.along).map { n[$0] > 0 ? Float(kept[$0] / n[$0]) : 0 }
            }
            var q = [UInt8](repeating: 0, count: values.count)
            var idx = 0
            forEachChannel(values, layout, true) { c, v in
                let qi: Int8 = enc.kind == .binary ? (v < 0 ? -1 : 1) : (v > threshold[c] ? 1 : (v < -threshold[c] ? -1 : 0))
                q[idx] = UInt8(bitPattern: qi)
                meter.add(original[idx], Float(qi) * alpha[c])
                idx += 1
            }
            return ([q, floatBytes(alpha)], meter)
        case .int4(let block):
            return encodeInt4(values, original: original, shape: shape, axis: enc.blockAxis, block: block, meter: &meter)
        case .int4NBits(let block):
            return encodeInt4NBits(values, original: original, shape: shape, block: block, meter: &meter)
        case .uint8Blocks(let block):
            return encodeUInt8Blocks(values, original: original, shape: shape, axis: enc.blockAxis, block: block, meter: &meter)
        }
    }

    /// 8-bit asymmetric blocks along `axis`: each block's scale and zero point cover [min(w, 0), max(w, 0)]
    /// over 255 steps (zero stays exact); w ≈ (q − zero_point) · scale.
    static func encodeUInt8Blocks(
        _ values: [Float], original: [Float], shape: [Int64], axis: Int, block: Int,
        meter: inout ErrorMeter
    ) -> (parts: [[UInt8]], meter: ErrorMeter) {
        let l = AxisLayout(shape: shape, axis: axis)
        let nb = (l.along + block - 1) / block
        let nScales = l.outer * nb * l.inner
        var lo = [Float](repeating: 0, count: nScales), hi = [Float](repeating: 0, count: nScales)
        values.withUnsafeBufferPointer { v in
            var e = 0
            for o in 0..<l.outer {
                for j in 0..<l.along {
                    for i in 0..<l.inner {
                        let s = (o * nb + j / block) * l.inner + i
                        lo[s] = min(lo[s], v[e]); hi[s] = max(hi[s], v[e]); e += 1
                    }
                }
            }
        }
        var scales = [Float](repeating: 1, count: nScales), zeros = [UInt8](repeating: 0, count: nScales)
        for s in 0..<nScales where hi[s] > lo[s] {
            scales[s] = (hi[s] - lo[s]) / 255
            zeros[s] = UInt8(min(255, max(0, (-lo[s] / scales[s]).rounded(.toNearestOrEven))))
        }
        var q = [UInt8](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { v in
            var e = 0
            for o in 0..<l.outer {
                for j in 0..<l.along {
                    for i in 0..<l.inner {
                        let s = (o * nb + j / block) * l.inner + i
                        let zp = Float(zeros[s]), sc = scales[s]
                        let x = min(255, max(0, (v[e] / sc).rounded(.toNearestOrEven) + zp))
                        q[e] = UInt8(x)
                        meter.add(original[e], (x - zp) * sc)
                        e += 1
                    }
                }
            }
        }
        return ([q, floatBytes(scales), zeros], meter)
    }

    /// B [K, N] as MatMulNBits reads it: blocks run along K within each output column n, so the
    /// matrix is transposed to [N, K] and quantized along its rows; with K a multiple of the block,
    /// the packed rows are the [N, blocks, block/2] blobs. Zero points are packed row by row.
    static func encodeInt4NBits(
        _ values: [Float], original: [Float], shape: [Int64], block: Int,
        meter: inout ErrorMeter
    ) -> (parts: [[UInt8]], meter: ErrorMeter) {
        let k = Int(shape[0]), n = Int(shape[1])
        func transposed(_ a: [Float]) -> [Float] {
            var t = [Float](repeating: 0, count: a.count)
            a.withUnsafeBufferPointer { a in
                t.withUnsafeMutableBufferPointer { t in
                    for r in 0..<k { for c in 0..<n { t[c * k + r] = a[r * n + c] } }
                }
            }
            return t
        }
        let (parts, m) = encodeInt4(
            transposed(values), original: transposed(original), shape: [Int64(n), Int64(k)], axis: 1,
            block: block, meter: &meter)
        let blocks = (k + block - 1) / block, rowBytes = (blocks + 1) / 2
        var zeros = [UInt8](repeating: 0, count: n * rowBytes)
        for r in 0..<n {
            for b in 0..<blocks {
                let s = r * blocks + b
                let z = (parts[2][s >> 1] >> (s & 1 == 0 ? 0 : 4)) & 0x0F
                zeros[r * rowBytes + b / 2] |= z << (b & 1 == 0 ? 0 : 4)
            }
        }
        return ([parts[0], parts[1], zeros], m)
    }

    /// Visits elements in storage order with their channel index.
    @inline(__always)
    private static func forEachChannel(_ values: [Float], _ l: AxisLayout, _ perChannel: Bool, _ body: (Int, Float) -> Void) {
        values.withUnsafeBufferPointer { v in
            if !perChannel { for x in v { body(0, x) }; return }
            var i = 0
            for _ in 0..<l.outer { for c in 0..<l.along { for _ in 0..<l.inner { body(c, v[i]); i += 1 } } }
        }
    }

    /// Block-wise asymmetric int4 along `axis`: each block of `block` elements gets a scale and a zero
    /// point covering [min(w, 0), max(w, 0)] (so zero, and pruned weights, stay exact), shrunk by the
    /// factor among a few that gives the least squared error (clipping the extremes a little usually
    /// pays for finer steps for the rest).
    private static func encodeInt4(
        _ values: [Float], original: [Float], shape: [Int64], axis: Int, block: Int,
        meter: inout ErrorMeter
    ) -> (parts: [[UInt8]], meter: ErrorMeter) {
        let l = AxisLayout(shape: shape, axis: axis)
        let nb = (l.along + block - 1) / block
        let nScales = l.outer * nb * l.inner
        let factors: [Float] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7]
        let nf = factors.count
        var lo = [Float](repeating: 0, count: nScales), hi = [Float](repeating: 0, count: nScales)
        values.withUnsafeBufferPointer { v in
            var e = 0
            for o in 0..<l.outer {
                for j in 0..<l.along {
                    for i in 0..<l.inner {
                        let s = (o * nb + j / block) * l.inner + i
                        lo[s] = min(lo[s], v[e]); hi[s] = max(hi[s], v[e]); e += 1
                    }
                }
            }
        }
        // (scale, zero point) of candidate k for entry s.
        @inline(__always) func params(_ s: Int, _ f: Float) -> (Float, Float) {
            let range = (hi[s] - lo[s]) * f
            guard range > 0 else { return (1, 0) }
            let scale = range / 15
            return (scale, min(15, max(0, (-lo[s] * f / scale).rounded(.toNearestOrEven))))
        }
        var err = [Float](repeating: 0, count: nScales * nf)
        values.withUnsafeBufferPointer { v in
            err.withUnsafeMutableBufferPointer { err in
                var e = 0
                for o in 0..<l.outer {
                    for j in 0..<l.along {
                        for i in 0..<l.inner {
                            let s = (o * nb + j / block) * l.inner + i, x = v[e]
                            for k in 0..<nf {
                                let (sc, zp) = params(s, factors[k])
                                let q = min(15, max(0, (x / sc).rounded(.toNearestOrEven) + zp))
                                let d = x - (q - zp) * sc
                                err[s * nf + k] += d * d
                            }
                            e += 1
                        }
                    }
                }
            }
        }
        var scales = [Float](repeating: 1, count: nScales), zeros = [Float](repeating: 0, count: nScales)
        for s in 0..<nScales {
            var best = 0
            for k in 1..<nf where err[s * nf + k] < err[s * nf + best] { best = k }
            (scales[s], zeros[s]) = params(s, factors[best])
        }
        var packed = [UInt8](repeating: 0, count: (values.count + 1) / 2)
        values.withUnsafeBufferPointer { v in
            var e = 0
            for o in 0..<l.outer {
                for j in 0..<l.along {
                    for i in 0..<l.inner {
                        let s = (o * nb + j / block) * l.inner + i
                        let sc = scales[s], zp = zeros[s]
                        let q = min(15, max(0, (v[e] / sc).rounded(.toNearestOrEven) + zp))
                        packed[e >> 1] |= UInt8(q) << (e & 1 == 0 ? 0 : 4)
                        meter.add(original[e], (q - zp) * sc)
                        e += 1
                    }
                }
            }
        }
        var packedZeros = [UInt8](repeating: 0, count: (nScales + 1) / 2)
        for s in 0..<nScales { packedZeros[s >> 1] |= UInt8(zeros[s]) << (s & 1 == 0 ? 0 : 4) }
        return ([packed, floatBytes(scales), packedZeros], meter)
    }

    static func floatBytes(_ f: [Float]) -> [UInt8] { f.withUnsafeBytes { Array($0) } }
}
