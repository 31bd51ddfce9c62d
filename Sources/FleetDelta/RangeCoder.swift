enum RangeCoding {
    /// Probabilities of a 0 bit in units of 2^-15: fine enough for events of a fraction of a percent.
    static let probabilityBits: UInt32 = 15
    static let one: UInt16 = 1 << 15
    static let half: UInt16 = 1 << 14
}

/// An adaptive binary range coder (the classic carry-less-with-cache design, 15-bit probabilities)
/// and the model that codes byte differences of small-integer tensors with it: a zstd frame cannot
/// go below one bit per element, while here an unchanged int8 weight costs a small fraction of a
/// bit, priced by a context (the base value's range, and whether the previous element changed).
struct RangeEncoder {
    private(set) var bytes: [UInt8] = []
    private var low: UInt64 = 0
    private var range: UInt32 = 0xFFFF_FFFF
    private var cache: UInt8 = 0
    private var cacheSize = 1

    @inline(__always)
    mutating func encode(_ bit: Bool, _ prob: inout UInt16, shift: UInt16) {
        let bound = (range >> RangeCoding.probabilityBits) &* UInt32(prob)
        if !bit {
            range = bound
            prob &+= (RangeCoding.one &- prob) >> shift
        } else {
            low &+= UInt64(bound)
            range &-= bound
            prob &-= prob >> shift
        }
        while range < 1 << 24 {
            range <<= 8
            shiftLow()
        }
    }

    private mutating func shiftLow() {
        if low < 0xFF00_0000 || low >= 1 << 32 {
            let carry = UInt8(truncatingIfNeeded: low >> 32)
            var temp = cache
            repeat {
                bytes.append(temp &+ carry)
                temp = 0xFF
                cacheSize -= 1
            } while cacheSize != 0
            cache = UInt8(truncatingIfNeeded: low >> 24)
        }
        cacheSize += 1
        low = (low & 0x00FF_FFFF) << 8
    }

    mutating func finish() -> [UInt8] {
        for _ in 0..<5 { shiftLow() }
        return bytes
    }
}

/// An adaptive bit probability that learns fast at first and then settles: its update rate starts at
/// 1/16 and slows to 1/2^`slowest` after a few hundred updates (exact counts in docs/DELTA.md).
struct AdaptiveBit {
    var p: UInt16 = RangeCoding.half
    var updates: UInt16 = 0

    @inline(__always)
    mutating func shift(slowest: UInt16) -> UInt16 {
        let s = AdaptiveBit.shift(updates, slowest: slowest)
        if updates < AdaptiveBit.settled { updates += 1 }
        return s
    }

    static let settled: UInt16 = 112

    @inline(__always)
    static func shift(_ updates: UInt16, slowest: UInt16) -> UInt16 {
        let s: UInt16 = updates >= settled ? 7 : updates < 16 ? 4 : updates < 48 ? 5 : 6
        return min(s, slowest)
    }
}
