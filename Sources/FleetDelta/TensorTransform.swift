/// How a changed tensor's elements are coded against the base tensor's, element by element.
/// `subInt` and `subFloat` store the difference zigzag-coded, so that a small difference of either
/// sign has zero high bytes; `subFloat` first maps float bits to integers that sort like the floats
/// (negative values have their magnitude bits flipped), so a nudge across zero stays small too.
enum TensorTransform: UInt8, Sendable, Codable {
    /// The target's elements as they are (a new tensor).
    case none = 0
    case xor = 1
    case subInt = 2
    case subFloat = 3

    var usesBase: Bool { self != .none }
}

/// Element-wise transforms and byte-plane shuffles over raw little-endian buffers of elements of
/// 1, 2, 4 or 8 bytes. Buffers need not be aligned.
enum TensorCodec {
    static let supportedWidths: Set<Int> = [1, 2, 4, 8]

    // MARK: element transforms

    /// `out[i] = f(target[i], base[i])`; `base` is ignored for `.none`.
    static func forward(
        _ t: TensorTransform, width: Int, target: UnsafeRawBufferPointer, base: UnsafeRawBufferPointer?,
        into out: UnsafeMutableRawBufferPointer
    ) {
        switch width {
        case 1: forward(t, UInt8.self, target, base, out)
        case 2: forward(t, UInt16.self, target, base, out)
        case 4: forward(t, UInt32.self, target, base, out)
        default: forward(t, UInt64.self, target, base, out)
        }
    }

    /// Reverses `forward` in place: `values[i] = f⁻¹(values[i], base[i])`.
    static func inverse(_ t: TensorTransform, width: Int, values: UnsafeMutableRawBufferPointer, base: UnsafeRawBufferPointer?) {
        switch width {
        case 1: inverse(t, UInt8.self, values, base)
        case 2: inverse(t, UInt16.self, values, base)
        case 4: inverse(t, UInt32.self, values, base)
        default: inverse(t, UInt64.self, values, base)
        }
    }

    @inline(__always)
    static func zigzag<U: FixedWidthInteger & UnsignedInteger>(_ d: U) -> U { (d &<< 1) ^ (0 &- (d &>> (U.bitWidth - 1))) }

    @inline(__always)
    static func unzigzag<U: FixedWidthInteger & UnsignedInteger>(_ z: U) -> U { (z &>> 1) ^ (0 &- (z & 1)) }

    /// Float bits → integer in float order (as two's complement); its own inverse.
    @inline(__always)
    static func floatKey<U: FixedWidthInteger & UnsignedInteger>(_ x: U) -> U { x ^ ((0 &- (x &>> (U.bitWidth - 1))) &>> 1) }

    @inline(__always)
    private static func forward<U: FixedWidthInteger & UnsignedInteger>(
        _ t: TensorTransform, _: U.Type, _ target: UnsafeRawBufferPointer,
        _ base: UnsafeRawBufferPointer?, _ out: UnsafeMutableRawBufferPointer
    ) {
        let n = target.count / MemoryLayout<U>.size
        let s = MemoryLayout<U>.size
        let tp = target.baseAddress!, op = out.baseAddress!
        switch t {
        case .none:
            op.copyMemory(from: tp, byteCount: n * s)
        case .xor:
            let bp = base!.baseAddress!
            for i in 0..<n {
                let v = tp.loadUnaligned(fromByteOffset: i * s, as: U.self) ^ bp.loadUnaligned(fromByteOffset: i * s, as: U.self)
                op.storeBytes(of: v, toByteOffset: i * s, as: U.self)
            }
        case .subInt:
            let bp = base!.baseAddress!
            for i in 0..<n {
                let d = tp.loadUnaligned(fromByteOffset: i * s, as: U.self) &- bp.loadUnaligned(fromByteOffset: i * s, as: U.self)
                op.storeBytes(of: zigzag(d), toByteOffset: i * s, as: U.self)
            }
        case .subFloat:
            let bp = base!.baseAddress!
            for i in 0..<n {
                let d =
                    floatKey(tp.loadUnaligned(fromByteOffset: i * s, as: U.self))
                    &- floatKey(bp.loadUnaligned(fromByteOffset: i * s, as: U.self))
                op.storeBytes(of: zigzag(d), toByteOffset: i * s, as: U.self)
            }
        }
    }

    @inline(__always)
    private static func inverse<U: FixedWidthInteger & UnsignedInteger>(
        _ t: TensorTransform, _: U.Type, _ values: UnsafeMutableRawBufferPointer,
        _ base: UnsafeRawBufferPointer?
    ) {
        let n = values.count / MemoryLayout<U>.size
        let s = MemoryLayout<U>.size
        let vp = values.baseAddress!
        switch t {
        case .none:
            return
        case .xor:
            let bp = base!.baseAddress!
            for i in 0..<n {
                let v = vp.loadUnaligned(fromByteOffset: i * s, as: U.self) ^ bp.loadUnaligned(fromByteOffset: i * s, as: U.self)
                vp.storeBytes(of: v, toByteOffset: i * s, as: U.self)
            }
        case .subInt:
            let bp = base!.baseAddress!
            for i in 0..<n {
                let v = bp.loadUnaligned(fromByteOffset: i * s, as: U.self) &+ unzigzag(vp.loadUnaligned(fromByteOffset: i * s, as: U.self))
                vp.storeBytes(of: v, toByteOffset: i * s, as: U.self)
            }
        case .subFloat:
            let bp = base!.baseAddress!
            for i in 0..<n {
                let k =
                    floatKey(bp.loadUnaligned(fromByteOffset: i * s, as: U.self))
                    &+ unzigzag(vp.loadUnaligned(fromByteOffset: i * s, as: U.self))
                vp.storeBytes(of: floatKey(k), toByteOffset: i * s, as: U.self)
            }
        }
    }

    // MARK: byte planes

    /// Splits `input` into chunks of `chunkElements` elements and writes each chunk as its byte
    /// planes: all first bytes of the chunk's elements, then all second bytes, … Width 1 is a copy.
    static func shuffle(_ input: UnsafeRawBufferPointer, width: Int, chunkElements: Int, into out: UnsafeMutableRawBufferPointer) {
        let total = input.count / width
        var start = 0
        while start < total {
            let n = min(chunkElements, total - start)
            let src = UnsafeRawBufferPointer(rebasing: input[(start * width)..<((start + n) * width)])
            let dst = UnsafeMutableRawBufferPointer(rebasing: out[(start * width)..<((start + n) * width)])
            shuffleChunk(src, width: width, into: dst)
            start += n
        }
    }

    /// One chunk: `out[p * n + i] = input[i * width + p]`.
    static func shuffleChunk(_ input: UnsafeRawBufferPointer, width: Int, into out: UnsafeMutableRawBufferPointer) {
        switch width {
        case 1: out.baseAddress!.copyMemory(from: input.baseAddress!, byteCount: input.count)
        case 2: shuffleChunk(UInt16.self, input, out)
        case 4: shuffleChunk(UInt32.self, input, out)
        default: shuffleChunk(UInt64.self, input, out)
        }
    }

    /// Reverses `shuffleChunk`: `out[i * width + p] = input[p * n + i]`.
    static func unshuffleChunk(_ input: UnsafeRawBufferPointer, width: Int, into out: UnsafeMutableRawBufferPointer) {
        switch width {
        case 1: out.baseAddress!.copyMemory(from: input.baseAddress!, byteCount: input.count)
        case 2: unshuffleChunk(UInt16.self, input, out)
        case 4: unshuffleChunk(UInt32.self, input, out)
        default: unshuffleChunk(UInt64.self, input, out)
        }
    }

    @inline(__always)
    private static func shuffleChunk<U: FixedWidthInteger & UnsignedInteger>(
        _: U.Type, _ input: UnsafeRawBufferPointer,
        _ out: UnsafeMutableRawBufferPointer
    ) {
        let s = MemoryLayout<U>.size
        let n = input.count / s
        let ip = input.baseAddress!
        let op = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n {
            let v = ip.loadUnaligned(fromByteOffset: i * s, as: U.self)
            for p in 0..<s { op[p * n + i] = UInt8(truncatingIfNeeded: v &>> (8 * p)) }
        }
    }

    @inline(__always)
    private static func unshuffleChunk<U: FixedWidthInteger & UnsignedInteger>(
        _: U.Type, _ input: UnsafeRawBufferPointer,
        _ out: UnsafeMutableRawBufferPointer
    ) {
        let s = MemoryLayout<U>.size
        let n = input.count / s
        let ip = input.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let op = out.baseAddress!
        for i in 0..<n {
            var v: U = 0
            for p in 0..<s { v |= U(ip[p * n + i]) &<< (8 * p) }
            op.storeBytes(of: v, toByteOffset: i * s, as: U.self)
        }
    }
}
