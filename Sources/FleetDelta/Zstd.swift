import CZstd
import FleetCore

/// libzstd, through its stable public API only. Every frame carries its content size and a checksum,
/// so a decoder sees a corrupt frame as an error, not as different bytes. Public for FleetCompression,
/// which measures the compressed size of the variants it builds.
public final class ZstdCompressor {
    private let cctx: OpaquePointer

    public init() throws(DeltaError) {
        guard let c = ZSTD_createCCtx() else { throw DeltaError(.io, "cannot allocate a zstd compression context") }
        cctx = c
    }

    deinit { ZSTD_freeCCtx(cctx) }

    public struct Options {
        var level: Int
        /// Maximum back-reference distance as a power of two; nil: the level's default.
        var windowLog: Int? = nil
        var longDistanceMatching = false

        public init(level: Int, windowLog: Int? = nil, longDistanceMatching: Bool = false) {
            self.level = level; self.windowLog = windowLog; self.longDistanceMatching = longDistanceMatching
        }
    }

    /// Compresses `input` as one frame (with `prefix` referenced, if given) and returns the frame.
    func compress(_ input: UnsafeRawBufferPointer, _ options: Options, prefix: UnsafeRawBufferPointer? = nil) throws(DeltaError) -> [UInt8]
    {
        var out: [UInt8] = []
        out.reserveCapacity(ZSTD_compressBound(input.count) / 2)
        try compress(input, options, prefix: prefix) { chunk in out.append(contentsOf: chunk) }
        return out
    }

    /// Compresses `input` as one frame, handing the output to `sink` in pieces of at most 1 MiB.
    public func compress(
        _ input: UnsafeRawBufferPointer, _ options: Options, prefix: UnsafeRawBufferPointer? = nil,
        sink: (UnsafeRawBufferPointer) throws(DeltaError) -> Void
    ) throws(DeltaError) {
        ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters)
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(options.level)))
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1))
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1))
        if let w = options.windowLog { try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, Int32(w))) }
        if options.longDistanceMatching { try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_enableLongDistanceMatching, 1)) }
        try check(ZSTD_CCtx_setPledgedSrcSize(cctx, UInt64(input.count)))
        if let prefix, prefix.count > 0 { try check(ZSTD_CCtx_refPrefix(cctx, prefix.baseAddress, prefix.count)) }

        let outBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { outBuf.deallocate() }
        var inb = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while true {
            var outb = ZSTD_outBuffer(dst: outBuf.baseAddress, size: outBuf.count, pos: 0)
            let remaining = ZSTD_compressStream2(cctx, &outb, &inb, ZSTD_e_end)
            try check(remaining)
            if outb.pos > 0 { try sink(UnsafeRawBufferPointer(rebasing: outBuf[0..<outb.pos])) }
            if remaining == 0 { break }
        }
    }

    private func check(_ r: Int) throws(DeltaError) {
        if ZSTD_isError(r) != 0 { throw DeltaError(.io, "zstd: \(String(cString: ZSTD_getErrorName(r)))") }
    }
}

/// Decodes one zstd frame that lies at `offset..<offset+length` of a package file, in pieces of the
/// caller's choosing. The frame must end exactly at its end: no more and no less output than the
/// plan says, no trailing bytes.
final class FrameReader {
    private let dctx: OpaquePointer
    private let file: InputFile
    private let start: Int64
    private let length: Int64
    private var fetched: Int64 = 0
    private let inBuf: UnsafeMutableRawBufferPointer
    private var inb: ZSTD_inBuffer
    private var frameEnded = false
    let what: String

    /// `windowLogMax` bounds the window the frame may ask for, and so the decoder's memory.
    init(
        file: InputFile, offset: Int64, length: Int64, prefix: UnsafeRawBufferPointer? = nil, windowLogMax: Int,
        what: String
    ) throws(DeltaError) {
        guard let d = ZSTD_createDCtx() else { throw DeltaError(.io, "cannot allocate a zstd decompression context") }
        dctx = d
        self.file = file
        self.start = offset
        self.length = length
        self.what = what
        inBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: 128 * 1024, alignment: 64)
        inb = ZSTD_inBuffer(src: inBuf.baseAddress, size: 0, pos: 0)
        let w = Int32(max(10, min(windowLogMax, 31)))
        if ZSTD_isError(ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, w)) != 0 {
            throw DeltaError(.unsupported, "\(what): zstd refuses window log \(w)")
        }
        if let prefix, prefix.count > 0, ZSTD_isError(ZSTD_DCtx_refPrefix(d, prefix.baseAddress, prefix.count)) != 0 {
            throw DeltaError(.io, "\(what): zstd refuses the prefix")
        }
    }

    deinit {
        ZSTD_freeDCtx(dctx)
        inBuf.deallocate()
    }

    private func refill() throws(DeltaError) -> Bool {
        guard fetched < length else { return false }
        let n = Int(min(Int64(inBuf.count), length - fetched))
        try file.read(at: start + fetched, into: UnsafeMutableRawBufferPointer(rebasing: inBuf[0..<n]))
        fetched += Int64(n)
        inb = ZSTD_inBuffer(src: inBuf.baseAddress, size: n, pos: 0)
        return true
    }

    /// Fills `buffer` completely with the frame's next bytes.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(DeltaError) {
        var outb = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
        while outb.pos < outb.size {
            if frameEnded { throw DeltaError(.corrupt, "\(what): zstd frame ends early") }
            if inb.pos == inb.size, !(try refill()) {
                // All input consumed; zstd may still hold output to flush.
                let before = outb.pos
                let r = ZSTD_decompressStream(dctx, &outb, &inb)
                try check(r)
                if r == 0 { frameEnded = true; continue }
                if outb.pos == before { throw DeltaError(.corrupt, "\(what): zstd frame is cut short") }
                continue
            }
            let r = ZSTD_decompressStream(dctx, &outb, &inb)
            try check(r)
            if r == 0 { frameEnded = true }
        }
    }

    /// Checks that the frame ends here (checksum verified) and that no bytes follow it.
    func finish() throws(DeltaError) {
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
        defer { scratch.deallocate() }
        while !frameEnded {
            var haveInput = inb.pos < inb.size
            if !haveInput { haveInput = try refill() }
            var outb = ZSTD_outBuffer(dst: scratch, size: 1, pos: 0)
            let r = ZSTD_decompressStream(dctx, &outb, &inb)
            try check(r)
            if outb.pos > 0 { throw DeltaError(.corrupt, "\(what): zstd frame is longer than the plan says") }
            if r == 0 { frameEnded = true; break }
            if !haveInput { throw DeltaError(.corrupt, "\(what): zstd frame is cut short") }
        }
        guard inb.pos == inb.size, fetched == length else {
            throw DeltaError(.corrupt, "\(what): bytes follow the end of the zstd frame")
        }
    }

    private func check(_ r: Int) throws(DeltaError) {
        if ZSTD_isError(r) != 0 { throw DeltaError(.corrupt, "\(what): zstd: \(String(cString: ZSTD_getErrorName(r)))") }
    }
}

extension Int {
    /// The smallest n with 1 << n >= self (at least 10, zstd's smallest window).
    var windowLogCovering: Int {
        var n = 10
        while n < 62 && (1 << n) < self { n += 1 }
        return n
    }
}
