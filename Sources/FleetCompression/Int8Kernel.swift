private let magic: Float = 12_582_912

/// x rounded half to even and clamped to [−127, 127], plus 1.5·2^23. Adding 1.5·2^23 makes the FPU
/// round x to an integer in the low mantissa bits, where its low byte is the two's-complement int8:
/// no libm call and no trapping conversion, so the loops around it vectorize.
@inline(__always)
func quantized(_ x: Float) -> Float {
    min(magic + 127, max(magic - 127, x + magic))
}

/// The int8 encoder's vector loops, over raw (possibly unaligned) buffers: it runs once per weight
/// of every model and is most of a build's time. Every vector operation is the scalar one lane by
/// lane (no fused multiply-add, the NaN-ignoring max/min of `Swift.max`/`Swift.min`), so the bytes
/// do not depend on the vector width.
struct Int8Kernel {
    typealias V = SIMD8<Float>
    static let width = 8

    /// Error sums of a run: lanes in Float, added up in Double per run.
    struct Sums {
        var squares = 0.0, errorSquares = 0.0
        var maxAbs: Float = 0
        var zeros = 0
    }

    let x: UnsafeRawPointer?
    let w: UnsafeRawPointer?
    let q: UnsafeMutableRawPointer?

    @inline(__always) static func abs(_ v: V) -> V {
        unsafeBitCast(bits(v) & SIMD8<UInt32>(repeating: 0x7FFF_FFFF), to: V.self)
    }

    @inline(__always) static func bits(_ v: V) -> SIMD8<UInt32> {
        unsafeBitCast(v, to: SIMD8<UInt32>.self)
    }

    /// `Swift.max(a, b)`: b where b >= a, else a (a NaN b is ignored).
    @inline(__always) static func maxLanes(_ a: V, _ b: V) -> V { a.replacing(with: b, where: b .>= a) }

    /// Per-channel (or, with one channel, per-tensor) largest magnitude.
    static func absmax(_ values: UnsafeRawBufferPointer, _ l: AxisLayout, perChannel: Bool) -> [Float] {
        let x = values.baseAddress
        @inline(__always) func load(_ i: Int) -> Float { x!.loadUnaligned(fromByteOffset: i * 4, as: Float.self) }
        @inline(__always) func loadV(_ i: Int) -> V { x!.loadUnaligned(fromByteOffset: i * 4, as: V.self) }
        /// Largest magnitude of `len` elements from `start`.
        @inline(__always) func span(_ start: Int, _ len: Int, from a0: Float) -> Float {
            var acc = V(repeating: 0), k = 0
            while k + width <= len { acc = maxLanes(acc, abs(loadV(start + k))); k += width }
            var a = a0
            for lane in 0..<width { a = max(a, acc[lane]) }
            while k < len { a = max(a, Swift.abs(load(start + k))); k += 1 }
            return a
        }
        let n = values.count / 4
        if !perChannel { return [n > 0 ? span(0, n, from: 0) : 0] }
        var m = [Float](repeating: 0, count: l.along)
        m.withUnsafeMutableBufferPointer { m in
            if l.inner == 1 {
                let mp = UnsafeMutableRawPointer(m.baseAddress!)
                var row = 0
                for _ in 0..<l.outer {
                    var c = 0
                    while c + width <= l.along {
                        let cur = mp.loadUnaligned(fromByteOffset: c * 4, as: V.self)
                        mp.storeBytes(of: maxLanes(cur, abs(loadV(row + c))), toByteOffset: c * 4, as: V.self)
                        c += width
                    }
                    while c < l.along { m[c] = max(m[c], Swift.abs(load(row + c))); c += 1 }
                    row += l.along
                }
            } else {
                var i = 0
                for _ in 0..<l.outer {
                    for c in 0..<l.along { m[c] = span(i, l.inner, from: m[c]); i += l.inner }
                }
            }
        }
        return m
    }

    /// One element (a vector tail): writes its byte and adds its error to `sums`.
    @inline(__always) func one(_ i: Int, _ scale: Float, _ inverse: Float, _ sums: inout (ss: Float, se: Float, mx: Float, z: Int)) {
        let xv = x!.loadUnaligned(fromByteOffset: i * 4, as: Float.self)
        let t = quantized(xv * inverse)
        q!.storeBytes(of: UInt8(truncatingIfNeeded: t.bitPattern), toByteOffset: i, as: UInt8.self)
        let qf = t - magic
        let wv = w!.loadUnaligned(fromByteOffset: i * 4, as: Float.self)
        let d = wv - qf * scale
        sums.ss += wv * wv; sums.se += d * d; sums.mx = max(sums.mx, Swift.abs(d)); sums.z += qf == 0 ? 1 : 0
    }

    /// `len` elements from `start`; the (scale, 1/scale) of element k (or of the vector at k) come from the closures.
    @inline(__always) func span(
        _ start: Int, _ len: Int, into sums: inout Sums, vectorScale: (Int) -> (V, V), scalarScale: (Int) -> (Float, Float)
    ) {
        let lo = V(repeating: magic - 127), hi = V(repeating: magic + 127), mg = V(repeating: magic)
        var ss = V(repeating: 0), se = V(repeating: 0), mx = V(repeating: 0)
        var z = SIMD8<Int32>(repeating: 0)
        var k = 0
        while k + Self.width <= len {
            let i = start + k
            let (s, inv) = vectorScale(k)
            let xv = x!.loadUnaligned(fromByteOffset: i * 4, as: V.self)
            // quantized(): max(lo, v) then min(hi, ·), as Swift.max/min order their operands.
            let v = xv * inv + mg
            var t = lo.replacing(with: v, where: v .>= lo)
            t = hi.replacing(with: t, where: t .< hi)
            q!.storeBytes(of: SIMD8<UInt8>(truncatingIfNeeded: Self.bits(t)), toByteOffset: i, as: SIMD8<UInt8>.self)
            let qf = t - mg
            let wv = w!.loadUnaligned(fromByteOffset: i * 4, as: V.self)
            let d = wv - qf * s
            ss += wv * wv
            se += d * d
            mx = Self.maxLanes(mx, Self.abs(d))
            z &+= SIMD8<Int32>(repeating: 0).replacing(with: 1, where: qf .== 0)
            k += Self.width
        }
        var tail: (ss: Float, se: Float, mx: Float, z: Int) = (0, 0, 0, 0)
        while k < len { let (s, inv) = scalarScale(k); one(start + k, s, inv, &tail); k += 1 }
        var mxs = tail.mx
        for lane in 0..<Self.width { mxs = max(mxs, mx[lane]) }
        sums.squares += Double(ss.sum() + tail.ss)
        sums.errorSquares += Double(se.sum() + tail.se)
        sums.maxAbs = max(sums.maxAbs, mxs)
        sums.zeros += Int(z.wrappedSum()) + tail.z
    }

    /// A run of one channel (or of a per-tensor weight).
    func run(_ start: Int, _ len: Int, scale: Float, inverse: Float, into sums: inout Sums) {
        let sv = V(repeating: scale), iv = V(repeating: inverse)
        span(start, len, into: &sums, vectorScale: { _ in (sv, iv) }, scalarScale: { _ in (scale, inverse) })
    }

    /// A row whose element k belongs to channel k.
    func row(_ start: Int, _ len: Int, scales: UnsafePointer<Float>, inverses: UnsafePointer<Float>, into sums: inout Sums) {
        let s = UnsafeRawPointer(scales), inv = UnsafeRawPointer(inverses)
        span(
            start, len, into: &sums,
            vectorScale: { k in (s.loadUnaligned(fromByteOffset: k * 4, as: V.self), inv.loadUnaligned(fromByteOffset: k * 4, as: V.self))
            },
            scalarScale: { k in (scales[k], inverses[k]) })
    }
}
