import FleetCore
import FleetIO
#if canImport(Glibc)
    import Glibc
#endif

/// Builds a `tensor` package body: matches target tensors to base tensors, picks for each changed
/// tensor the smallest of several codings, and codes the structure bytes against the base's.
struct TensorEncoder {
    let base: MappedFile
    let target: MappedFile
    let baseLayout: TensorLayout
    let targetLayout: TensorLayout
    let level: Int
    let compressor: ZstdCompressor

    /// Elements per shuffled chunk: planes of 256 KiB, two zstd blocks each.
    static let chunkElements = 256 * 1024
    /// Candidates are compared at this level (or `level`, if lower): on noise-like deltas zstd's
    /// higher levels gain nothing and cost a lot.
    static let fastLevel = 3
    /// The winner is compressed again at `level` when the fast level shrank it below this fraction of
    /// the tensor (sparse or repetitive data, where higher levels gain and the input is small or
    /// compresses fast), or when the tensor is tiny. Noise-like winners (nudged floats, quantized
    /// weights) stay at the fast level: there zstd's high levels gain ~1% at 50× the time.
    static let refineRatio = 0.25
    static let refineAlways = 64 * 1024

    private(set) var frames: [[UInt8]] = []
    private(set) var dataLength: Int64 = 0
    private(set) var stats = DeltaReport.TensorStats()

    init(base: MappedFile, target: MappedFile, baseLayout: TensorLayout, targetLayout: TensorLayout, level: Int) throws(DeltaError) {
        self.base = base
        self.target = target
        self.baseLayout = baseLayout
        self.targetLayout = targetLayout
        self.level = level
        self.compressor = try ZstdCompressor()
        stats.format = targetLayout.format.rawValue
    }

    private var fast: Int { min(level, Self.fastLevel) }

    private mutating func add(_ frame: [UInt8]) -> TensorPlan.Frame {
        let f = TensorPlan.Frame(offset: dataLength, length: Int64(frame.count))
        frames.append(frame)
        dataLength += Int64(frame.count)
        return f
    }

    private func bytes(_ file: MappedFile, _ offset: Int64, _ length: Int64) -> UnsafeRawBufferPointer {
        file.slice(Int(offset), Int(length))
    }

    mutating func build() throws(DeltaError) -> TensorPlan {
        var plan = TensorPlan()

        // Structure: the target's non-tensor bytes, against the base's as prefix.
        let baseGaps = baseLayout.gaps
        let targetGaps = targetLayout.gaps
        let structure = concat(target, targetGaps)
        let prefix = concat(base, baseGaps)
        plan.structureLength = Int64(structure.count)
        plan.structurePrefix = baseGaps
        stats.structureBytes = Int64(structure.count)
        if !structure.isEmpty {
            let frame = try structure.withBytes { (s: UnsafeRawBufferPointer) throws(DeltaError) -> [UInt8] in
                try prefix.withBytes { (p: UnsafeRawBufferPointer) throws(DeltaError) -> [UInt8] in
                    try compressor.compress(s, .init(level: level, windowLog: plan.structureWindowLog), prefix: p)
                }
            }
            plan.structureFrame = add(frame)
        } else {
            plan.structurePrefix = []
        }

        var baseByName: [String: TensorLayout.Tensor] = [:]
        for t in baseLayout.tensors { baseByName[t.name] = t }
        let targetNames = Set(targetLayout.tensors.map(\.name))
        var usedBase = Set<String>()

        var ops: [TensorPlan.Op] = []
        var at: Int64 = 0
        func structureOp(_ length: Int64) {
            if case .structure(let l)? = ops.last {
                ops[ops.count - 1] = .structure(length: l + length)
            } else {
                ops.append(.structure(length: length))
            }
        }
        func copyOp(_ offset: Int64, _ length: Int64) {
            if case .copy(let o, let l)? = ops.last, o + l == offset {
                ops[ops.count - 1] = .copy(baseOffset: o, length: l + length)
            } else {
                ops.append(.copy(baseOffset: offset, length: length))
            }
        }

        for t in targetLayout.tensors {
            if t.offset > at { structureOp(t.offset - at) }
            at = t.offset + t.length
            let tb = bytes(target, t.offset, t.length)

            if let b = baseByName[t.name] {
                usedBase.insert(b.name)
                if b.dtype == t.dtype, b.shape == t.shape, b.length == t.length {
                    if memcmp(tb.baseAddress!, bytes(base, b.offset, b.length).baseAddress!, Int(t.length)) == 0 {
                        stats.unchanged += 1
                        copyOp(b.offset, t.length)
                    } else {
                        stats.changed += 1
                        ops.append(try changed(t, b))
                    }
                } else {
                    stats.reshaped += 1
                    ops.append(try reshaped(t, b))
                }
                continue
            }
            // No base tensor of that name: the same bytes under another name, or the one base
            // tensor of the same dtype and shape that the target no longer has.
            let sameSize = baseLayout.tensors.filter { $0.length == t.length }
            if let same = sameSize.first(where: {
                memcmp(tb.baseAddress!, bytes(base, $0.offset, $0.length).baseAddress!, Int(t.length)) == 0
            }) {
                stats.renamed += 1
                usedBase.insert(same.name)
                copyOp(same.offset, t.length)
                continue
            }
            let orphans = sameSize.filter {
                $0.dtype == t.dtype && $0.shape == t.shape && !targetNames.contains($0.name) && !usedBase.contains($0.name)
            }
            if orphans.count == 1 {
                stats.renamed += 1
                usedBase.insert(orphans[0].name)
                ops.append(try changed(t, orphans[0]))
                continue
            }
            stats.added += 1
            ops.append(try added(t))
        }
        if targetLayout.fileSize > at { structureOp(targetLayout.fileSize - at) }
        stats.removed = baseLayout.tensors.filter { !usedBase.contains($0.name) }.count
        plan.ops = ops
        return plan
    }

    private func concat(_ file: MappedFile, _ ranges: [TensorPlan.Range]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Int(ranges.reduce(0) { $0 + $1.length }))
        for r in ranges { out.append(contentsOf: bytes(file, r.offset, r.length)) }
        return out
    }

    // MARK: codings

    /// A coding of one tensor's bytes, before its frames are added to the data section.
    private struct Candidate {
        enum Kind: String { case dense, sparse, modeled }
        var transform: TensorTransform
        var width: Int
        var coding: Kind
        var streams: [[UInt8]]  // compressed: [values], [runs, values] or [range-coded stream]
        var inputs: [Int]  // uncompressed stream lengths
        var runsLength: Int64 = 0
        var nonzero: Int64 = 0
        var size: Int { streams.reduce(0) { $0 + $1.count } }
        var label: String { "\(transform.label)/\(coding.rawValue)" }
    }

    private mutating func changed(_ t: TensorLayout.Tensor, _ b: TensorLayout.Tensor) throws(DeltaError) -> TensorPlan.Op {
        let width = t.codingWidth
        let tb = bytes(target, t.offset, t.length)
        let bb = bytes(base, b.offset, b.length)
        // Float order only makes sense on whole float elements.
        let floatOrder = t.isFloat && width == t.elementSize
        let transforms: [TensorTransform] = [.xor, floatOrder ? .subFloat : .subInt, .none]
        var best: Candidate?
        for tr in transforms {
            for c in try candidates(tr, width: width, target: tb, base: bb, level: fast) where best == nil || c.size < best!.size {
                best = c
            }
        }
        var winner = best!
        winner = try refine(winner, target: tb, base: bb)
        stats.codings[winner.label, default: 0] += 1
        return .tensor(op(winner, length: t.length, baseOffset: b.offset))
    }

    private mutating func added(_ t: TensorLayout.Tensor) throws(DeltaError) -> TensorPlan.Op {
        let tb = bytes(target, t.offset, t.length)
        var best: Candidate?
        for width in Set([t.codingWidth, 1]) {
            for c in try candidates(.none, width: width, target: tb, base: nil, level: fast) where best == nil || c.size < best!.size {
                best = c
            }
        }
        let winner = try refine(best!, target: tb, base: nil)
        stats.codings[winner.label, default: 0] += 1
        return .tensor(op(winner, length: t.length, baseOffset: 0))
    }

    /// A tensor whose shape or dtype changed: zstd with the base tensor as prefix (rows added or
    /// removed keep their bytes), unless coding it as new is smaller.
    private mutating func reshaped(_ t: TensorLayout.Tensor, _ b: TensorLayout.Tensor) throws(DeltaError) -> TensorPlan.Op {
        let tb = bytes(target, t.offset, t.length)
        let bb = bytes(base, b.offset, b.length)
        let windowLog = TensorPlan.prefixedWindowLog(length: t.length, baseLength: b.length)
        let prefixed = try compressor.compress(
            tb, .init(level: min(level, 9), windowLog: windowLog, longDistanceMatching: true), prefix: bb)
        var best: Candidate?
        for width in Set([t.codingWidth, 1]) {
            for c in try candidates(.none, width: width, target: tb, base: nil, level: fast) where best == nil || c.size < best!.size {
                best = c
            }
        }
        if prefixed.count < best!.size {
            stats.codings["prefixed", default: 0] += 1
            return .prefixed(length: t.length, baseOffset: b.offset, baseLength: b.length, frame: add(prefixed))
        }
        let winner = try refine(best!, target: tb, base: nil)
        stats.codings[winner.label, default: 0] += 1
        return .tensor(op(winner, length: t.length, baseOffset: 0))
    }

    private mutating func op(_ c: Candidate, length: Int64, baseOffset: Int64) -> TensorPlan.TensorOp {
        let coding: TensorPlan.Coding
        switch c.coding {
        case .sparse:
            let runs = add(c.streams[0])
            let values = add(c.streams[1])
            coding = .sparse(runs: runs, runsLength: c.runsLength, values: values, nonzero: c.nonzero)
        case .dense:
            coding = .dense(values: add(c.streams[0]))
        case .modeled:
            coding = .modeled(lanes: c.streams.map { add($0) }, lengths: c.inputs.map(Int64.init))
        }
        return TensorPlan.TensorOp(
            length: length, elementSize: c.width, transform: c.transform, chunkElements: Self.chunkElements,
            baseOffset: c.transform.usesBase ? baseOffset : 0, coding: coding)
    }

    /// Compresses the winner again at the full level when that is cheap or promising (see `refineRatio`).
    private func refine(_ c: Candidate, target: UnsafeRawBufferPointer, base: UnsafeRawBufferPointer?) throws(DeltaError) -> Candidate {
        guard level > fast, c.coding != .modeled else { return c }
        guard target.count <= Self.refineAlways || Double(c.size) <= Self.refineRatio * Double(target.count) else { return c }
        guard
            let again = try candidates(c.transform, width: c.width, target: target, base: base, level: level, only: c.coding == .sparse)
                .first
        else { return c }
        return again.size < c.size ? again : c
    }

    /// The dense coding of `transform`, and the sparse one when at least half the elements are zero.
    /// `only`: just the sparse (true) or dense (false) one.
    private func candidates(
        _ transform: TensorTransform, width: Int, target: UnsafeRawBufferPointer, base: UnsafeRawBufferPointer?,
        level: Int, only: Bool? = nil
    ) throws(DeltaError) -> [Candidate] {
        let n = target.count
        let delta = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 64)
        let shuffled = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 64)
        defer { delta.deallocate(); shuffled.deallocate() }
        TensorCodec.forward(transform, width: width, target: target, base: base, into: delta)
        var out: [Candidate] = []
        if only != true {
            TensorCodec.shuffle(UnsafeRawBufferPointer(delta), width: width, chunkElements: Self.chunkElements, into: shuffled)
            let frame = try compressor.compress(UnsafeRawBufferPointer(shuffled), .init(level: level, windowLog: windowLog(n)))
            out.append(Candidate(transform: transform, width: width, coding: .dense, streams: [frame], inputs: [n]))
        }
        guard transform.usesBase, only != false else { return out }
        if width == 1, transform == .subInt, only == nil, let base {
            out.append(try modeledCandidate(UnsafeRawBufferPointer(delta), base: base))
        }
        let elements = n / width
        let nonzero = countNonzero(UnsafeRawBufferPointer(delta), width: width)
        guard nonzero > 0, only == true || nonzero * 2 <= elements else { return out }
        // Runs of zero elements before each non-zero one, and the non-zero elements packed.
        var runs: [UInt8] = []
        runs.reserveCapacity(nonzero * 2)
        let packed = shuffled  // reused: the dense candidate is compressed already
        var zeros = 0
        var k = 0
        let dp = UnsafeRawBufferPointer(delta)
        for i in 0..<elements {
            if isZero(dp, i, width) { zeros += 1; continue }
            LEB128.append(UInt64(zeros), to: &runs)
            zeros = 0
            (packed.baseAddress! + k * width).copyMemory(from: dp.baseAddress! + i * width, byteCount: width)
            k += 1
        }
        let values = UnsafeMutableRawBufferPointer.allocate(byteCount: k * width, alignment: 64)
        defer { values.deallocate() }
        TensorCodec.shuffle(
            UnsafeRawBufferPointer(rebasing: packed[0..<(k * width)]), width: width, chunkElements: Self.chunkElements, into: values)
        let runsFrame = try runs.withBytes { (r: UnsafeRawBufferPointer) throws(DeltaError) -> [UInt8] in
            try compressor.compress(r, .init(level: level, windowLog: windowLog(runs.count)))
        }
        let valuesFrame = try compressor.compress(UnsafeRawBufferPointer(values), .init(level: level, windowLog: windowLog(k * width)))
        out.append(
            Candidate(
                transform: transform, width: width, coding: .sparse, streams: [runsFrame, valuesFrame], inputs: [runs.count, k * width],
                runsLength: Int64(runs.count), nonzero: Int64(k)))
        return out
    }

    /// One-byte differences through the range coder (`ByteDeltaModel`), element i in lane i % 2,
    /// each lane in a zstd frame for its checksum.
    private func modeledCandidate(_ delta: UnsafeRawBufferPointer, base: UnsafeRawBufferPointer) throws(DeltaError) -> Candidate {
        var coders = [RangeEncoder(), RangeEncoder()]
        var model = ByteDeltaModel()
        for i in 0..<delta.count { model.encode(delta[i], base: base[i], index: i, &coders) }
        var frames: [[UInt8]] = [], lengths: [Int] = []
        for k in 0..<2 {
            let stream = coders[k].finish()
            lengths.append(stream.count)
            frames.append(
                try stream.withBytes { (s: UnsafeRawBufferPointer) throws(DeltaError) -> [UInt8] in
                    try compressor.compress(s, .init(level: 1, windowLog: windowLog(stream.count)))
                })
        }
        return Candidate(transform: .subInt, width: 1, coding: .modeled, streams: frames, inputs: lengths)
    }

    private func windowLog(_ n: Int) -> Int { min(TensorPlan.payloadWindowLog, max(n, 1).windowLogCovering) }

    @inline(__always)
    private func isZero(_ p: UnsafeRawBufferPointer, _ i: Int, _ width: Int) -> Bool {
        switch width {
        case 1: return p[i] == 0
        case 2: return p.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self) == 0
        case 4: return p.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self) == 0
        default: return p.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) == 0
        }
    }

    private func countNonzero(_ p: UnsafeRawBufferPointer, width: Int) -> Int {
        var count = 0
        for i in 0..<(p.count / width) where !isZero(p, i, width) { count += 1 }
        return count
    }
}

extension TensorTransform {
    var label: String {
        switch self {
        case .none: "new"
        case .xor: "xor"
        case .subInt: "sub"
        case .subFloat: "sub-float"
        }
    }
}
