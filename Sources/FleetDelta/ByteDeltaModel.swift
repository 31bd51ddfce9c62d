/// The model for one-byte elements under `.subInt` (zigzag of the wrapping difference), coded in two
/// lanes (element i in lane i % 2, each lane its own range coder). Per element, "changed?" with a
/// context of the base byte's top five bits and whether the lane's previous element changed (these
/// tables are per lane, so that the lanes' decoding chains stay independent); for a changed one, its
/// direction relative to the base value's sign (fast-adapting: a re-quantized row tends to move one
/// way) and its magnitude (unary up to 8, then seven bits), with tables shared by both lanes in
/// element order.
struct ByteDeltaModel {
    private var changed = [[AdaptiveBit]](repeating: [AdaptiveBit](repeating: AdaptiveBit(), count: 64), count: 2)
    private var previousChanged = [0, 0]
    private var direction = [AdaptiveBit](repeating: AdaptiveBit(), count: 2)
    private var magnitude = [AdaptiveBit](repeating: AdaptiveBit(), count: 8)
    private var high = [AdaptiveBit](repeating: AdaptiveBit(), count: 7)
    private var previousDirection = 0

    /// Slowest rates: slow for the frequent flag (measured best on re-quantized int8), fast for the direction.
    static let changedShift: UInt16 = 7
    static let directionShift: UInt16 = 4
    static let magnitudeShift: UInt16 = 5

    @inline(__always)
    private static func put(_ bit: Bool, _ m: inout AdaptiveBit, _ slowest: UInt16, _ rc: inout RangeEncoder) {
        let s = m.shift(slowest: slowest)
        rc.encode(bit, &m.p, shift: s)
    }

    /// Codes `z` (zigzag of the difference) of element `index`, whose base byte is `base`, into `lanes[index % 2]`.
    mutating func encode(_ z: UInt8, base: UInt8, index: Int, _ lanes: inout [RangeEncoder]) {
        let lane = index & 1
        let ctx = Int(base >> 3) | previousChanged[lane] << 5
        Self.put(z != 0, &changed[lane][ctx], Self.changedShift, &lanes[lane])
        previousChanged[lane] = z != 0 ? 1 : 0
        guard z != 0 else { return }
        let negative = z & 1 == 1
        let m = Int((z &- 1) >> 1)  // |d| − 1, 0…127
        let dir = (negative != (base & 0x80 != 0)) ? 1 : 0
        Self.put(dir == 1, &direction[previousDirection], Self.directionShift, &lanes[lane])
        previousDirection = dir
        for k in 0..<8 {
            Self.put(m > k, &magnitude[k], Self.magnitudeShift, &lanes[lane])
            if m == k { return }
        }
        let rest = m - 8  // 0…119
        for b in 0..<7 { Self.put((rest >> (6 - b)) & 1 == 1, &high[b], Self.magnitudeShift, &lanes[lane]) }
    }
}

/// The decoder's copy of the tables both lanes share (direction 0..<2, magnitude 2..<10, high 10..<17).
final class SharedValueTables {
    let probs = UnsafeMutablePointer<UInt16>.allocate(capacity: 17)
    let updates = UnsafeMutablePointer<UInt16>.allocate(capacity: 17)
    var previousDirection = 0
    static let direction = 0, magnitude = 2, high = 10

    init() {
        probs.initialize(repeating: RangeCoding.half, count: 17)
        updates.initialize(repeating: 0, count: 17)
    }

    deinit { probs.deallocate(); updates.deallocate() }
}

/// One range-coded lane of a `modeled` tensor: its stream (read from a zstd frame of the package
/// holding exactly `length` bytes) and its own "changed" tables, as `ByteDeltaModel` keeps them.
final class ModeledLane {
    /// The coder state the hot loop keeps in registers.
    struct State {
        var range: UInt32 = 0xFFFF_FFFF
        var code: UInt32 = 0
        var position = 0
        var count = 0
        /// 32 when the lane's previous element changed, else 0 (the context's high bit).
        var previous = 0
    }

    var state = State()
    private let reader: FrameReader
    private var remaining: Int64
    let buffer: UnsafeMutablePointer<UInt8>
    let probs = UnsafeMutablePointer<UInt16>.allocate(capacity: 64)
    let updates = UnsafeMutablePointer<UInt16>.allocate(capacity: 64)
    let shared: SharedValueTables
    static let bufferSize = 64 * 1024

    init(_ reader: FrameReader, length: Int64, shared: SharedValueTables) throws(DeltaError) {
        self.reader = reader
        self.remaining = length
        self.shared = shared
        buffer = .allocate(capacity: Self.bufferSize)
        probs.initialize(repeating: RangeCoding.half, count: 64)
        updates.initialize(repeating: 0, count: 64)
        var s = State()
        try refill(&s)
        guard buffer[0] == 0 else { throw DeltaError(.corrupt, "\(reader.what): range-coded stream does not start with 0") }
        s.position = 1
        for _ in 0..<4 {
            if s.position == s.count { try refill(&s) }
            s.code = s.code << 8 | UInt32(buffer[s.position])
            s.position += 1
        }
        state = s
    }

    deinit {
        buffer.deallocate()
        probs.deallocate()
        updates.deallocate()
    }

    func refill(_ s: inout State) throws(DeltaError) {
        guard remaining > 0 else { throw DeltaError(.corrupt, "\(reader.what): range-coded stream ends early") }
        let n = Int(min(Int64(Self.bufferSize), remaining))
        try reader.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: n))
        remaining -= Int64(n)
        s.position = 0
        s.count = n
    }

    func normalize(_ s: inout State) throws(DeltaError) {
        while s.range < 1 << 24 {
            if s.position == s.count { try refill(&s) }
            s.range <<= 8
            s.code = s.code << 8 | UInt32(buffer[s.position])
            s.position += 1
        }
    }

    /// One bit with shared table entry `i` (directions and magnitudes).
    private func bit(_ s: inout State, _ i: Int, slowest: UInt16) throws(DeltaError) -> Bool {
        let probs = shared.probs, updates = shared.updates
        let u = updates[i]
        let shift = AdaptiveBit.shift(u, slowest: slowest)
        if u < AdaptiveBit.settled { updates[i] = u + 1 }
        let p = probs[i]
        let bound = (s.range >> RangeCoding.probabilityBits) &* UInt32(p)
        let one: Bool
        if s.code < bound {
            s.range = bound
            probs[i] = p &+ ((RangeCoding.one &- p) >> shift)
            one = false
        } else {
            s.code &-= bound
            s.range &-= bound
            probs[i] = p &- (p >> shift)
            one = true
        }
        try normalize(&s)
        return one
    }

    /// Out of line, on `state`: renormalise after a "changed" decision made by the caller's loop,
    /// then decode the rest of that element.
    @inline(never)
    func finishChanged(base: UInt8) throws(DeltaError) -> UInt8 {
        try normalize(&state)
        return try changedValue(&state, base: base)
    }

    @inline(never)
    func normalizeState() throws(DeltaError) { try normalize(&state) }

    /// The rest of a changed element, as `ByteDeltaModel.encode` wrote it.
    private func changedValue(_ s: inout State, base: UInt8) throws(DeltaError) -> UInt8 {
        typealias T = SharedValueTables
        let dir = try bit(&s, T.direction + shared.previousDirection, slowest: ByteDeltaModel.directionShift) ? 1 : 0
        shared.previousDirection = dir
        var m = 0
        while m < 8, try bit(&s, T.magnitude + m, slowest: ByteDeltaModel.magnitudeShift) { m += 1 }
        if m == 8 {
            var rest = 0
            for b in 0..<7 { rest = rest << 1 | (try bit(&s, T.high + b, slowest: ByteDeltaModel.magnitudeShift) ? 1 : 0) }
            m = 8 + rest
            guard m <= 127 else { throw DeltaError(.corrupt, "\(reader.what): range-coded difference out of range") }
        }
        let negative = (dir == 1) != (base & 0x80 != 0)
        guard negative || m < 127 else { throw DeltaError(.corrupt, "\(reader.what): range-coded difference out of range") }
        return UInt8(m) << 1 &+ (negative ? 1 : 2)
    }

    /// The stream must be used up exactly, and its frame end there.
    func finish() throws(DeltaError) {
        guard remaining == 0, state.position == state.count else {
            throw DeltaError(.corrupt, "\(reader.what): range-coded stream longer than its tensor")
        }
        try reader.finish()
    }
}

/// Decodes a `modeled` tensor: element i is coded in lane i % 2, each lane with its own coder and
/// model, so that the two dependency chains overlap in the CPU.
final class ByteDeltaDecoder {
    let lanes: [ModeledLane]
    /// Index of the next element, for its lane.
    private var index = 0

    init(_ lanes: [ModeledLane]) {
        precondition(lanes.count == 2)
        self.lanes = lanes
    }

    /// Decodes the next `out.count` elements (zigzag differences) against their base bytes.
    /// The common case (an unchanged element) is written out for both lanes with the coder state in
    /// locals; renormalising and changed elements go through the lane, out of line.
    func decode(base: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws(DeltaError) {
        let n = out.count
        guard n > 0 else { return }
        let l0 = lanes[0], l1 = lanes[1]
        let bp = base.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let op = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let slowest = ByteDeltaModel.changedShift
        let settled = AdaptiveBit.settled
        let one = RangeCoding.one
        let bits = RangeCoding.probabilityBits
        let p0 = l0.probs, u0 = l0.updates, p1 = l1.probs, u1 = l1.updates
        var r0 = l0.state.range, c0 = l0.state.code, v0 = l0.state.previous
        var r1 = l1.state.range, c1 = l1.state.code, v1 = l1.state.previous
        var i = 0
        var parity = index & 1
        defer { index += n }
        while i < n {
            let b = bp[i]
            if parity == 0 {
                let ctx = Int(b >> 3) | v0
                let u = u0[ctx]
                var sh = slowest
                if u < settled { sh = AdaptiveBit.shift(u, slowest: slowest); u0[ctx] = u &+ 1 }
                let p = p0[ctx]
                let bound = (r0 >> bits) &* UInt32(p)
                if c0 < bound {
                    r0 = bound
                    p0[ctx] = p &+ ((one &- p) >> sh)
                    v0 = 0
                    op[i] = 0
                    if r0 < 1 << 24 {
                        l0.state.range = r0; l0.state.code = c0
                        try l0.normalizeState()
                        r0 = l0.state.range; c0 = l0.state.code
                    }
                } else {
                    p0[ctx] = p &- (p >> sh)
                    l0.state.range = r0 &- bound; l0.state.code = c0 &- bound; l0.state.previous = 32
                    op[i] = try l0.finishChanged(base: b)
                    r0 = l0.state.range; c0 = l0.state.code; v0 = 32
                }
            } else {
                let ctx = Int(b >> 3) | v1
                let u = u1[ctx]
                var sh = slowest
                if u < settled { sh = AdaptiveBit.shift(u, slowest: slowest); u1[ctx] = u &+ 1 }
                let p = p1[ctx]
                let bound = (r1 >> bits) &* UInt32(p)
                if c1 < bound {
                    r1 = bound
                    p1[ctx] = p &+ ((one &- p) >> sh)
                    v1 = 0
                    op[i] = 0
                    if r1 < 1 << 24 {
                        l1.state.range = r1; l1.state.code = c1
                        try l1.normalizeState()
                        r1 = l1.state.range; c1 = l1.state.code
                    }
                } else {
                    p1[ctx] = p &- (p >> sh)
                    l1.state.range = r1 &- bound; l1.state.code = c1 &- bound; l1.state.previous = 32
                    op[i] = try l1.finishChanged(base: b)
                    r1 = l1.state.range; c1 = l1.state.code; v1 = 32
                }
            }
            parity ^= 1
            i += 1
        }
        l0.state.range = r0; l0.state.code = c0; l0.state.previous = v0
        l1.state.range = r1; l1.state.code = c1; l1.state.previous = v1
    }

    func finish() throws(DeltaError) {
        for lane in lanes { try lane.finish() }
    }
}
