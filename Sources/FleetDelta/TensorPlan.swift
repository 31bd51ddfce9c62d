/// The first section of a `tensor` package (zstd-compressed): how to produce the target, in order,
/// from the base and from the zstd frames of the data section. Encoder and decoder share this type
/// and its checks; the format is in docs/DELTA.md.
struct TensorPlan: Equatable {
    /// A zstd frame at `offset..<offset+length` of the data section.
    struct Frame: Equatable {
        var offset: Int64
        var length: Int64
    }

    struct Range: Equatable {
        var offset: Int64
        var length: Int64
    }

    enum Coding: Equatable {
        /// One frame: every element, byte-plane shuffled per chunk.
        case dense(values: Frame)
        /// Two frames: LEB128 counts of zero elements before each non-zero one (`runsLength` bytes
        /// in all), and the `nonzero` non-zero elements, shuffled per chunk.
        case sparse(runs: Frame, runsLength: Int64, values: Frame, nonzero: Int64)
        /// Two frames, each holding `lengths[k]` bytes of range coder output (`ByteDeltaModel`) for
        /// the elements i with i % 2 == k: one-byte elements under `.subInt` only.
        case modeled(lanes: [Frame], lengths: [Int64])
    }

    struct TensorOp: Equatable {
        var length: Int64
        var elementSize: Int
        var transform: TensorTransform
        var chunkElements: Int
        /// Where the base tensor starts (for transforms that use the base).
        var baseOffset: Int64
        var coding: Coding
    }

    enum Op: Equatable {
        /// The next `length` bytes of the structure stream (the non-tensor bytes of the target).
        case structure(length: Int64)
        /// Bytes of the base, as they are.
        case copy(baseOffset: Int64, length: Int64)
        case tensor(TensorOp)
        /// A frame decoded with `base[baseOffset ..< baseOffset+baseLength]` as its zstd prefix
        /// (a tensor whose shape changed).
        case prefixed(length: Int64, baseOffset: Int64, baseLength: Int64, frame: Frame)

        var length: Int64 {
            switch self {
            case .structure(let l), .copy(_, let l), .prefixed(let l, _, _, _): return l
            case .tensor(let t): return t.length
            }
        }
    }

    /// Total length of the structure stream, and its frame (nil when empty).
    var structureLength: Int64 = 0
    var structureFrame: Frame?
    /// Base ranges whose concatenation is the zstd prefix of the structure frame.
    var structurePrefix: [Range] = []
    var ops: [Op] = []

    static let maxPlanBytes = 64 << 20
    static let maxChunkBytes = 16 << 20
    /// The zstd window of dense, sparse and structure frames without a prefix is at most 2^23.
    static let payloadWindowLog = 23

    var structurePrefixLength: Int64 { structurePrefix.reduce(0) { $0 + $1.length } }

    /// Window log the structure frame may use: it must reach back over the whole prefix.
    var structureWindowLog: Int { Int(structurePrefixLength + structureLength).windowLogCovering }

    static func prefixedWindowLog(length: Int64, baseLength: Int64) -> Int { Int(length + baseLength).windowLogCovering }

    /// What the decoder holds at most at once besides constants: the structure prefix and window,
    /// plus the largest need of a single op (chunk buffers and zstd windows, or a prefixed tensor's
    /// base bytes and window). The encoder writes it into the header; the decoder checks it.
    var decodeBufferBytes: Int64 {
        let window = Int64(1) << Self.payloadWindowLog
        let structure = structurePrefixLength + min(structureLength, Int64(1) << min(structureWindowLog, 40))
        var largest: Int64 = 0
        for op in ops {
            switch op {
            case .structure, .copy: break
            case .tensor(let t):
                let chunk = Int64(t.chunkElements * t.elementSize)
                switch t.coding {
                case .dense: largest = max(largest, 3 * chunk + min(t.length, window))
                case .sparse(_, let runsLength, _, let nonzero):
                    largest = max(largest, 4 * chunk + min(runsLength, window) + min(nonzero * Int64(t.elementSize), window))
                case .modeled(_, let lengths):
                    largest = max(largest, 3 * chunk + lengths.reduce(0) { $0 + min($1, window) })
                }
            case .prefixed(let length, _, let baseLength, _):
                largest = max(largest, baseLength + length)
            }
        }
        return structure + largest
    }

    // MARK: bytes

    func serialized() -> [UInt8] {
        var w = ByteWriter()
        w.varint(structureLength)
        if let f = structureFrame { w.u8(1); w.varint(f.offset); w.varint(f.length) } else { w.u8(0) }
        w.varint(Int64(structurePrefix.count))
        for r in structurePrefix { w.varint(r.offset); w.varint(r.length) }
        w.varint(Int64(ops.count))
        for op in ops {
            switch op {
            case .structure(let length):
                w.u8(1); w.varint(length)
            case .copy(let offset, let length):
                w.u8(2); w.varint(offset); w.varint(length)
            case .tensor(let t):
                w.u8(3); w.varint(t.length); w.u8(UInt8(t.elementSize)); w.u8(t.transform.rawValue)
                w.varint(Int64(t.chunkElements)); w.varint(t.baseOffset)
                switch t.coding {
                case .dense(let f):
                    w.u8(0); w.varint(f.offset); w.varint(f.length)
                case .sparse(let runs, let runsLength, let values, let nonzero):
                    w.u8(1); w.varint(runs.offset); w.varint(runs.length); w.varint(runsLength)
                    w.varint(values.offset); w.varint(values.length); w.varint(nonzero)
                case .modeled(let lanes, let lengths):
                    w.u8(2); w.u8(UInt8(lanes.count))
                    for (f, l) in zip(lanes, lengths) { w.varint(f.offset); w.varint(f.length); w.varint(l) }
                }
            case .prefixed(let length, let baseOffset, let baseLength, let f):
                w.u8(4); w.varint(length); w.varint(baseOffset); w.varint(baseLength); w.varint(f.offset); w.varint(f.length)
            }
        }
        return w.data
    }

    static func parse(_ bytes: [UInt8]) throws(DeltaError) -> TensorPlan {
        do {
            return try parseUnchecked(bytes)
        } catch let e where e.code == .truncated {
            throw DeltaError(.corrupt, "plan: \(e.message)")
        }
    }

    private static func parseUnchecked(_ bytes: [UInt8]) throws(DeltaError) -> TensorPlan {
        var r = ByteReader(bytes)
        var plan = TensorPlan()
        plan.structureLength = try r.varint()
        switch try r.u8() {
        case 0: break
        case 1: plan.structureFrame = Frame(offset: try r.varint(), length: try r.varint())
        case let x: throw DeltaError(.corrupt, "plan: structure frame flag \(x)")
        }
        let prefixCount = try r.varint()
        guard prefixCount <= Int64(bytes.count) else { throw DeltaError(.corrupt, "plan: \(prefixCount) prefix ranges") }
        for _ in 0..<prefixCount { plan.structurePrefix.append(Range(offset: try r.varint(), length: try r.varint())) }
        let opCount = try r.varint()
        guard opCount <= Int64(bytes.count) else { throw DeltaError(.corrupt, "plan: \(opCount) ops") }
        for _ in 0..<opCount {
            switch try r.u8() {
            case 1: plan.ops.append(.structure(length: try r.varint()))
            case 2: plan.ops.append(.copy(baseOffset: try r.varint(), length: try r.varint()))
            case 3:
                let length = try r.varint()
                let width = Int(try r.u8())
                let transformCode = try r.u8()
                guard let transform = TensorTransform(rawValue: transformCode) else {
                    throw DeltaError(.unsupported, "plan: tensor transform \(transformCode)")
                }
                let chunk = try r.varint()
                let baseOffset = try r.varint()
                let coding: Coding
                switch try r.u8() {
                case 0: coding = .dense(values: Frame(offset: try r.varint(), length: try r.varint()))
                case 1:
                    let runs = Frame(offset: try r.varint(), length: try r.varint())
                    let runsLength = try r.varint()
                    let values = Frame(offset: try r.varint(), length: try r.varint())
                    coding = .sparse(runs: runs, runsLength: runsLength, values: values, nonzero: try r.varint())
                case 2:
                    let count = Int(try r.u8())
                    guard count == 2 else { throw DeltaError(.unsupported, "plan: modeled coding with \(count) lanes") }
                    var lanes: [Frame] = [], lengths: [Int64] = []
                    for _ in 0..<count {
                        lanes.append(Frame(offset: try r.varint(), length: try r.varint()))
                        lengths.append(try r.varint())
                    }
                    coding = .modeled(lanes: lanes, lengths: lengths)
                case let x: throw DeltaError(.unsupported, "plan: tensor coding \(x)")
                }
                guard chunk > 0, chunk <= Int64(maxChunkBytes) else { throw DeltaError(.corrupt, "plan: chunk of \(chunk) elements") }
                plan.ops.append(
                    .tensor(
                        TensorOp(
                            length: length, elementSize: width, transform: transform, chunkElements: Int(chunk),
                            baseOffset: baseOffset, coding: coding)))
            case 4:
                plan.ops.append(
                    .prefixed(
                        length: try r.varint(), baseOffset: try r.varint(), baseLength: try r.varint(),
                        frame: Frame(offset: try r.varint(), length: try r.varint())))
            case let x: throw DeltaError(.unsupported, "plan: op kind \(x)")
            }
        }
        guard r.atEnd else { throw DeltaError(.corrupt, "plan: \(bytes.count - r.offset) bytes after the last op") }
        return plan
    }

    // MARK: checks

    /// Everything that can be checked before a byte is written: lengths add up to the target's,
    /// base ranges lie inside the base, frames inside the data section, buffers within the header's bound.
    func validate(header: DeltaHeader, dataLength: Int64) throws(DeltaError) {
        func frameOK(_ f: Frame, _ what: String) throws(DeltaError) {
            guard f.length > 0, f.offset <= dataLength, f.length <= dataLength - f.offset else {
                throw DeltaError(.corrupt, "plan: \(what) frame \(f.offset)+\(f.length) outside the data section of \(dataLength) bytes")
            }
        }
        func baseOK(_ offset: Int64, _ length: Int64, _ what: String) throws(DeltaError) {
            guard offset <= header.baseSize, length <= header.baseSize - offset else {
                throw DeltaError(.corrupt, "plan: \(what) range \(offset)+\(length) outside the base of \(header.baseSize) bytes")
            }
        }
        var total: Int64 = 0
        var structure: Int64 = 0
        for r in structurePrefix { try baseOK(r.offset, r.length, "structure prefix") }
        if let f = structureFrame { try frameOK(f, "structure") }
        guard (structureFrame == nil) == (structureLength == 0) else {
            throw DeltaError(.corrupt, "plan: structure frame and length disagree")
        }
        for op in ops {
            switch op {
            case .structure(let l): structure += l
            case .copy(let offset, let length): try baseOK(offset, length, "copy")
            case .tensor(let t):
                guard TensorCodec.supportedWidths.contains(t.elementSize) else {
                    throw DeltaError(.unsupported, "plan: element size \(t.elementSize)")
                }
                guard t.length > 0, t.length % Int64(t.elementSize) == 0 else {
                    throw DeltaError(.corrupt, "plan: tensor of \(t.length) bytes with \(t.elementSize)-byte elements")
                }
                guard t.chunkElements * t.elementSize <= Self.maxChunkBytes else { throw DeltaError(.unsupported, "plan: chunk too large") }
                if t.transform.usesBase { try baseOK(t.baseOffset, t.length, "tensor base") }
                switch t.coding {
                case .dense(let f): try frameOK(f, "tensor")
                case .sparse(let runs, let runsLength, let values, let nonzero):
                    try frameOK(runs, "runs"); try frameOK(values, "values")
                    let elements = t.length / Int64(t.elementSize)
                    guard t.transform.usesBase, nonzero > 0, nonzero <= elements, runsLength >= nonzero, runsLength <= 10 * nonzero else {
                        throw DeltaError(.corrupt, "plan: sparse tensor with \(nonzero) non-zero elements and \(runsLength) run bytes")
                    }
                case .modeled(let lanes, let lengths):
                    for f in lanes { try frameOK(f, "modeled") }
                    guard t.elementSize == 1, t.transform == .subInt, lanes.count == 2, lengths.allSatisfy({ $0 >= 5 }) else {
                        throw DeltaError(.corrupt, "plan: modeled coding of \(t.elementSize)-byte elements under \(t.transform)")
                    }
                }
            case .prefixed(let length, let baseOffset, let baseLength, let f):
                guard length > 0 else { throw DeltaError(.corrupt, "plan: empty prefixed tensor") }
                try baseOK(baseOffset, baseLength, "prefix"); try frameOK(f, "prefixed")
            }
            let (sum, overflow) = total.addingReportingOverflow(op.length)
            guard !overflow, op.length >= 0 else { throw DeltaError(.corrupt, "plan: lengths overflow") }
            total = sum
        }
        guard structure == structureLength else {
            throw DeltaError(.corrupt, "plan: structure ops take \(structure) bytes of a \(structureLength)-byte stream")
        }
        guard total == header.targetSize else {
            throw DeltaError(.corrupt, "plan: ops produce \(total) bytes, the header says \(header.targetSize)")
        }
        guard decodeBufferBytes <= header.decodeBufferBytes else {
            throw DeltaError(.corrupt, "plan needs \(decodeBufferBytes) bytes of buffers, the header allows \(header.decodeBufferBytes)")
        }
    }
}
