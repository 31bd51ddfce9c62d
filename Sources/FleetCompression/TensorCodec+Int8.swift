/// int8, symmetric: scales from each channel's largest magnitude, then the vector loops of
/// `Int8Kernel`. The quantized bytes are those of the scalar definition (x · (1/scale) rounded half
/// to even, clamped to ±127); only the order in which the error sums are added differs from a scalar loop.
extension TensorCodec {
    static func encodeInt8(
        _ values: [Float], original: [Float], shape: [Int64], perChannel: Bool, axis: Int,
        meter: inout ErrorMeter
    ) -> [[UInt8]] {
        values.withUnsafeBytes { v in
            original.withUnsafeBytes { o in encodeInt8(v, original: o, shape: shape, perChannel: perChannel, axis: axis, meter: &meter) }
        }
    }

    /// `values` and `original` hold fp32 in storage order (the same buffer when nothing was pruned);
    /// they need not be aligned (ONNX raw_data rarely is).
    static func encodeInt8(
        _ values: UnsafeRawBufferPointer, original: UnsafeRawBufferPointer, shape: [Int64], perChannel: Bool,
        axis: Int, meter: inout ErrorMeter
    ) -> [[UInt8]] {
        let n = values.count / 4
        let l = perChannel ? AxisLayout(shape: shape, axis: axis) : AxisLayout(shape: [Int64(n)], axis: 0)
        let absmax = Int8Kernel.absmax(values, l, perChannel: perChannel)
        let scales = absmax.map { $0 > 0 ? $0 / 127 : 1 }
        let inverse = scales.map { 1 / $0 }

        var sums = Int8Kernel.Sums()
        let q = [UInt8](unsafeUninitializedCapacity: n) { out, count in
            scales.withUnsafeBufferPointer { s in
                inverse.withUnsafeBufferPointer { inv in
                    let k = Int8Kernel(x: values.baseAddress, w: original.baseAddress, q: UnsafeMutableRawPointer(out.baseAddress))
                    if !perChannel {
                        var start = 0
                        while start < n {
                            let len = min(4096, n - start); k.run(start, len, scale: s[0], inverse: inv[0], into: &sums); start += len
                        }
                    } else if l.inner == 1 {
                        // MatMul weights: a row holds one value of every channel.
                        for r in 0..<l.outer {
                            k.row(r * l.along, l.along, scales: s.baseAddress!, inverses: inv.baseAddress!, into: &sums)
                        }
                    } else {
                        var i = 0
                        for _ in 0..<l.outer {
                            for c in 0..<l.along { k.run(i, l.inner, scale: s[c], inverse: inv[c], into: &sums); i += l.inner }
                        }
                    }
                }
            }
            count = n
        }
        meter.sumSquares += sums.squares
        meter.sumErrorSquares += sums.errorSquares
        meter.maxAbs = max(meter.maxAbs, Double(sums.maxAbs))
        meter.zeros += Int64(sums.zeros)
        meter.count += Int64(n)
        return [q, floatBytes(scales)]
    }
}
