import FleetCore
import FleetIO

/// Runs a validated `TensorPlan`: copies from the base, decodes tensor frames chunk by chunk against
/// base chunks read with pread, and interleaves the structure stream. It holds one chunk of each kind
/// at a time (and, for a prefixed tensor, that base tensor), never a whole model.
struct TensorDecoder {
    let header: DeltaHeader
    let plan: TensorPlan
    let package: InputFile
    let base: InputFile
    let out: OutputFile
    let dataOffset: Int64

    init(header: DeltaHeader, plan: TensorPlan, package: InputFile, base: InputFile, out: OutputFile) {
        self.header = header
        self.plan = plan
        self.package = package
        self.base = base
        self.out = out
        self.dataOffset = header.sectionOffset(1)
    }

    private func reader(
        _ f: TensorPlan.Frame, prefix: UnsafeRawBufferPointer? = nil, windowLog: Int = TensorPlan.payloadWindowLog,
        what: String
    ) throws(DeltaError) -> FrameReader {
        try FrameReader(file: package, offset: dataOffset + f.offset, length: f.length, prefix: prefix, windowLogMax: windowLog, what: what)
    }

    mutating func run() throws(DeltaError) {
        // The structure stream's prefix: the base's own non-tensor bytes, gathered once.
        let prefixLength = Int(plan.structurePrefixLength)
        let prefix = UnsafeMutableRawBufferPointer.allocate(byteCount: max(prefixLength, 1), alignment: 64)
        defer { prefix.deallocate() }
        var at = 0
        for r in plan.structurePrefix {
            try base.read(at: r.offset, into: UnsafeMutableRawBufferPointer(rebasing: prefix[at..<(at + Int(r.length))]))
            at += Int(r.length)
        }
        let structure = try plan.structureFrame.map { (f: TensorPlan.Frame) throws(DeltaError) in
            try reader(
                f, prefix: UnsafeRawBufferPointer(rebasing: prefix[0..<prefixLength]), windowLog: plan.structureWindowLog,
                what: "structure frame")
        }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { scratch.deallocate() }

        for (index, op) in plan.ops.enumerated() {
            switch op {
            case .structure(let length):
                try DeltaDecoder.copy(structure!, length: length, to: out)
            case .copy(let offset, let length):
                var done: Int64 = 0
                while done < length {
                    let n = Int(min(Int64(scratch.count), length - done))
                    let chunk = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n])
                    try base.read(at: offset + done, into: chunk)
                    try out.write(UnsafeRawBufferPointer(chunk))
                    done += Int64(n)
                }
            case .tensor(let t):
                try decodeTensor(t, index: index)
            case .prefixed(let length, let baseOffset, let baseLength, let frame):
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: max(Int(baseLength), 1), alignment: 64)
                defer { buf.deallocate() }
                let baseBytes = UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(baseLength)])
                try base.read(at: baseOffset, into: baseBytes)
                let r = try reader(
                    frame, prefix: UnsafeRawBufferPointer(baseBytes),
                    windowLog: TensorPlan.prefixedWindowLog(length: length, baseLength: baseLength), what: "op \(index) frame")
                try DeltaDecoder.copy(r, length: length, to: out)
                try r.finish()
            }
        }
        try structure?.finish()
    }

    private func decodeTensor(_ t: TensorPlan.TensorOp, index: Int) throws(DeltaError) {
        let w = t.elementSize
        let elements = Int(t.length) / w
        let chunkBytes = min(t.chunkElements, elements) * w
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 64)
        let values = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 64)
        let baseChunk = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 64)
        defer { raw.deallocate(); values.deallocate(); baseChunk.deallocate() }

        var sparse: SparseSource?
        var dense: FrameReader?
        var rangeDecoder: ByteDeltaDecoder?
        switch t.coding {
        case .dense(let f):
            dense = try reader(f, what: "op \(index) tensor frame")
        case .sparse(let runs, let runsLength, let v, let nonzero):
            sparse = try SparseSource(
                runs: try reader(runs, what: "op \(index) runs frame"), runsLength: runsLength,
                values: try reader(v, what: "op \(index) values frame"), nonzero: nonzero,
                width: w, chunkElements: t.chunkElements, elements: Int64(elements))
        case .modeled(let lanes, let lengths):
            var decoders: [ModeledLane] = []
            let shared = SharedValueTables()
            for (k, (f, l)) in zip(lanes, lengths).enumerated() {
                decoders.append(try ModeledLane(try reader(f, what: "op \(index) lane \(k) frame"), length: l, shared: shared))
            }
            rangeDecoder = ByteDeltaDecoder(decoders)
        }

        var start = 0
        while start < elements {
            let n = min(t.chunkElements, elements - start)
            let bytes = n * w
            let valueChunk = UnsafeMutableRawBufferPointer(rebasing: values[0..<bytes])
            let b = UnsafeMutableRawBufferPointer(rebasing: baseChunk[0..<bytes])
            if t.transform.usesBase { try base.read(at: t.baseOffset + Int64(start * w), into: b) }
            if let dense {
                let rawChunk = UnsafeMutableRawBufferPointer(rebasing: raw[0..<bytes])
                try dense.read(into: rawChunk)
                TensorCodec.unshuffleChunk(UnsafeRawBufferPointer(rawChunk), width: w, into: valueChunk)
            } else if let sparse {
                try sparse.fill(valueChunk, elements: n, scratch: raw)
            } else if let rangeDecoder {
                try rangeDecoder.decode(base: UnsafeRawBufferPointer(b), into: valueChunk)
            }
            if t.transform.usesBase {
                TensorCodec.inverse(t.transform, width: w, values: valueChunk, base: UnsafeRawBufferPointer(b))
            }
            try out.write(UnsafeRawBufferPointer(valueChunk))
            start += n
        }
        try rangeDecoder?.finish()
        try dense?.finish()
        try sparse?.finish()
    }
}

/// The two streams of a sparse tensor, read in step: zero-run lengths (LEB128) and non-zero
/// elements (byte-plane shuffled per chunk of `chunkElements` values).
private final class SparseSource {
    let runs: FrameReader
    let values: FrameReader
    let width: Int
    let chunkElements: Int
    let elements: Int64
    let nonzero: Int64

    private var runsLeft: Int64
    private let runBuf: UnsafeMutableRawBufferPointer
    private var runPos = 0
    private var runCount = 0

    private let valueBuf: UnsafeMutableRawBufferPointer
    private var valuePos = 0
    private var valueCount = 0
    private var valuesRead: Int64 = 0

    /// Zeros still to emit before the next non-zero element; nil: read the next run.
    private var pendingZeros: Int64?

    init(runs: FrameReader, runsLength: Int64, values: FrameReader, nonzero: Int64, width: Int, chunkElements: Int, elements: Int64)
        throws(DeltaError)
    {
        self.runs = runs
        self.values = values
        self.width = width
        self.chunkElements = chunkElements
        self.elements = elements
        self.nonzero = nonzero
        self.runsLeft = runsLength
        runBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 64)
        valueBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(min(Int64(chunkElements), nonzero)) * width, alignment: 64)
    }

    deinit { runBuf.deallocate(); valueBuf.deallocate() }

    private func runByte() throws(DeltaError) -> UInt8 {
        if runPos == runCount {
            guard runsLeft > 0 else { throw DeltaError(.corrupt, "\(runs.what): runs end early") }
            let n = Int(min(Int64(runBuf.count), runsLeft))
            try runs.read(into: UnsafeMutableRawBufferPointer(rebasing: runBuf[0..<n]))
            runsLeft -= Int64(n)
            runPos = 0
            runCount = n
        }
        defer { runPos += 1 }
        return runBuf[runPos]
    }

    private func nextRun() throws(DeltaError) -> Int64 {
        guard let v = try LEB128.read(maxBits: 63, runByte) else { throw DeltaError(.corrupt, "\(runs.what): run length too long") }
        guard v < UInt64(elements) else { throw DeltaError(.corrupt, "\(runs.what): run of \(v) zeros in \(elements) elements") }
        return Int64(v)
    }

    /// Copies the next non-zero element to `dst`.
    private func nextValue(to dst: UnsafeMutableRawPointer, scratch: UnsafeMutableRawBufferPointer) throws(DeltaError) {
        if valuePos == valueCount {
            let n = Int(min(Int64(chunkElements), nonzero - valuesRead))
            guard n > 0 else { throw DeltaError(.corrupt, "\(values.what): more runs than non-zero values") }
            let shuffled = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<(n * width)])
            try values.read(into: shuffled)
            TensorCodec.unshuffleChunk(
                UnsafeRawBufferPointer(shuffled), width: width,
                into: UnsafeMutableRawBufferPointer(rebasing: valueBuf[0..<(n * width)]))
            valuesRead += Int64(n)
            valuePos = 0
            valueCount = n
        }
        dst.copyMemory(from: valueBuf.baseAddress! + valuePos * width, byteCount: width)
        valuePos += 1
    }

    /// Writes the next `elements` elements of the delta (zeros and non-zero values) into `chunk`.
    func fill(_ chunk: UnsafeMutableRawBufferPointer, elements count: Int, scratch: UnsafeMutableRawBufferPointer) throws(DeltaError) {
        chunk.initializeMemory(as: UInt8.self, repeating: 0)
        var i = 0
        while i < count {
            if pendingZeros == nil {
                if valuesRead == nonzero && valuePos == valueCount { break }  // only zeros remain
                pendingZeros = try nextRun()
            }
            let zeros = pendingZeros!
            if zeros >= Int64(count - i) {
                pendingZeros = zeros - Int64(count - i)
                i = count
                break
            }
            i += Int(zeros)
            try nextValue(to: chunk.baseAddress! + i * width, scratch: scratch)
            pendingZeros = nil
            i += 1
        }
    }

    func finish() throws(DeltaError) {
        guard pendingZeros == nil || pendingZeros == 0, valuesRead == nonzero, valuePos == valueCount, runsLeft == 0, runPos == runCount
        else {
            throw DeltaError(.corrupt, "\(runs.what): runs and values do not end together")
        }
        try runs.finish()
        try values.finish()
    }
}
