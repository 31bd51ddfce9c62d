/// The int8 kernel, written over raw buffers so that the compiler vectorizes it: the per-channel
/// encoder runs once per weight of every model, and it is most of a build's time.
extension TensorCodec {
    static func encodeInt8(_ values: [Float], original: [Float], shape: [Int64], perChannel: Bool, axis: Int,
                           meter: inout ErrorMeter) -> [[UInt8]] {
        let n = values.count
        let l = perChannel ? AxisLayout(shape: shape, axis: axis) : AxisLayout(shape: [Int64(n)], axis: 0)
        let channels = perChannel ? l.along : 1
        // Per channel: when the channel axis is the last one (MatMul weights), a row holds one value of
        // every channel; otherwise a channel's values come in runs of `inner`.
        var absmax = [Float](repeating: 0, count: channels)
        values.withUnsafeBufferPointer { v in
            absmax.withUnsafeMutableBufferPointer { m in
                if !perChannel {
                    var a: Float = 0
                    for x in v { a = max(a, abs(x)) }
                    m[0] = a
                } else if l.inner == 1 {
                    var row = 0
                    for _ in 0..<l.outer {
                        for c in 0..<l.along { m[c] = max(m[c], abs(v[row + c])) }
                        row += l.along
                    }
                } else {
                    var i = 0
                    for _ in 0..<l.outer {
                        for c in 0..<l.along {
                            var a = m[c]
                            for k in 0..<l.inner { a = max(a, abs(v[i + k])) }
                            m[c] = a
                            i += l.inner
                        }
                    }
                }
            }
        }
        let scales = absmax.map { $0 > 0 ? $0 / 127 : 1 }
        let inverse = scales.map { 1 / $0 }

        var sumSq = 0.0, sumErr = 0.0, maxAbs: Float = 0
        var zeros = 0
        let q = [UInt8](unsafeUninitializedCapacity: n) { out, count in
            values.withUnsafeBufferPointer { v in
                original.withUnsafeBufferPointer { o in
                    scales.withUnsafeBufferPointer { s in
                        inverse.withUnsafeBufferPointer { inv in
                            // One run of `len` elements from `start`: channel `c` for all, or channel k for element k.
                            @inline(__always) func run(_ start: Int, _ len: Int, channel c: Int, perElement: Bool) {
                                var ss: Float = 0, se: Float = 0, mx: Float = 0
                                var z = 0
                                for k in 0..<len {
                                    let ch = perElement ? k : c
                                    let x = v[start + k]
                                    let t = quantized(x * inv[ch])
                                    out[start + k] = UInt8(truncatingIfNeeded: t.bitPattern)
                                    let qf = t - magic
                                    let r = qf * s[ch]
                                    let w = o[start + k]
                                    let d = w - r
                                    ss += w * w
                                    se += d * d
                                    mx = max(mx, abs(d))
                                    z += qf == 0 ? 1 : 0
                                }
                                sumSq += Double(ss); sumErr += Double(se); maxAbs = max(maxAbs, mx); zeros += z
                            }
                            // Channels first..<along of the row starting at `row`, one by one.
                            @inline(__always) func runTail(_ row: Int, from first: Int) {
                                var ss: Float = 0, se: Float = 0, mx: Float = 0
                                var z = 0
                                for c in first..<l.along {
                                    let x = v[row + c]
                                    let t = quantized(x * inv[c])
                                    out[row + c] = UInt8(truncatingIfNeeded: t.bitPattern)
                                    let qf = t - magic
                                    let w = o[row + c], d = w - qf * s[c]
                                    ss += w * w; se += d * d; mx = max(mx, abs(d)); z += qf == 0 ? 1 : 0
                                }
                                sumSq += Double(ss); sumErr += Double(se); maxAbs = max(maxAbs, mx); zeros += z
                            }
                            if !perChannel {
                                var start = 0
                                while start < n { let len = min(4096, n - start); run(start, len, channel: 0, perElement: false); start += len }
                            } else if l.inner == 1 {
                                for r in 0..<l.outer { runTail(r * l.along, from: 0) }
                            } else {
                                var i = 0
                                for _ in 0..<l.outer { for c in 0..<l.along { run(i, l.inner, channel: c, perElement: false); i += l.inner } }
                            }
                        }
                    }
                }
            }
            count = n
        }
        meter.sumSquares += sumSq
        meter.sumErrorSquares += sumErr
        meter.maxAbs = max(meter.maxAbs, Double(maxAbs))
        meter.zeros += Int64(zeros)
        meter.count += Int64(n)
        return [q, floatBytes(scales)]
    }
}

private let magic: Float = 12_582_912

/// x rounded half to even and clamped to [−127, 127], plus 1.5·2^23. Adding 1.5·2^23 makes the FPU
/// round x to an integer in the low mantissa bits, where its low byte is the two's-complement int8:
/// no libm call and no trapping conversion, so the loops around it vectorize.
@inline(__always)
func quantized(_ x: Float) -> Float {
    min(magic + 127, max(magic - 127, x + magic))
}
