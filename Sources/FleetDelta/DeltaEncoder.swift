import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Makes a delta package from a base file to a target file, trying each requested method and keeping
/// the smallest package. Runs where models are plentiful (controller, fleetctl): it maps both files.
public enum DeltaEncoder {
    /// Targets at most this big get every requested method at the full level; above it, zstd-patch
    /// and full are first run at a fast level and redone at `level` only if the estimate says that
    /// could beat the best package so far.
    static let probeThreshold = 8 << 20
    static let probeLevel = 3
    /// How much smaller than the best package the estimate must be for the slow run to be worth it.
    static let requiredGain = 0.02

    public static func encode(
        base: String, target: String, output: String, methods: [DeltaMethod] = DeltaMethod.allCases,
        level: Int = 19
    ) throws(DeltaError) -> DeltaReport {
        guard !methods.isEmpty else { throw DeltaError(.notApplicable, "no method requested") }
        guard (1...22).contains(level) else { throw DeltaError(.unsupported, "zstd level \(level) is not in 1…22") }
        let clock = ContinuousClock()
        let started = clock.now
        let baseMap = try MappedFile(base)
        let targetMap = try MappedFile(target)
        let baseHash = sha256(baseMap.bytes)
        let targetHash = sha256(targetMap.bytes)
        let context = Context(base: baseMap, target: targetMap, baseHash: baseHash, targetHash: targetHash, level: level)

        let ordered = DeltaMethod.allCases.filter(methods.contains)
        var results: [DeltaReport.MethodResult] = []
        var written: [(method: DeltaMethod, path: String, size: Int64)] = []
        var stats: DeltaReport.TensorStats?
        defer { for w in written { unlink(w.path) } }

        for method in ordered {
            let path = "\(output).\(method.rawValue).partial"
            let t0 = clock.now
            var usedLevel = level
            var note: String?
            do throws(DeltaError) {
                switch method {
                case .tensor:
                    stats = try encodeTensor(context, to: path)
                case .zstdPatch, .full:
                    let best = written.map(\.size).min()
                    if ordered.count > 1, let best, targetMap.size > probeThreshold, level > probeLevel {
                        try encodeWhole(method, context, level: probeLevel, to: path)
                        let probe = try fileSize(path)
                        let gain = estimateGain(targetMap.bytes, level: level)
                        let estimate = Int64(Double(probe) * gain)
                        if Double(estimate) >= Double(best) * (1 - requiredGain) {
                            usedLevel = probeLevel
                            note =
                                "level \(probeLevel) gave \(probe) bytes; level \(level) estimated at \(estimate), "
                                + "not \(Int(requiredGain * 100))% below \(best): not run"
                        } else {
                            try encodeWhole(method, context, level: level, to: path)
                        }
                    } else {
                        try encodeWhole(method, context, level: level, to: path)
                    }
                }
                let size = try fileSize(path)
                written.append((method, path, size))
                results.append(
                    .init(method: method, status: .larger, size: size, seconds: seconds(clock.now - t0), level: usedLevel, note: note))
            } catch let e where e.code == .notApplicable {
                unlink(path)
                results.append(
                    .init(method: method, status: .notApplicable, size: nil, seconds: seconds(clock.now - t0), level: nil, note: e.message))
            } catch {
                unlink(path)
                throw error
            }
        }
        guard let best = written.min(by: { $0.size < $1.size }) else {
            throw DeltaError(
                .notApplicable, results.compactMap { r in r.note.map { "\(r.method.rawValue): \($0)" } }.joined(separator: "; "))
        }
        guard rename(best.path, output) == 0 else { throw .errno(output, "rename") }
        written.removeAll { $0.path == best.path }
        for i in results.indices where results[i].method == best.method { results[i].status = .kept }
        return DeltaReport(
            method: best.method, packageSize: best.size, baseSize: Int64(baseMap.size), targetSize: Int64(targetMap.size),
            baseSha256: baseHash, targetSha256: targetHash, seconds: seconds(clock.now - started), methods: results,
            tensors: stats)
    }

    struct Context {
        let base: MappedFile
        let target: MappedFile
        let baseHash: String
        let targetHash: String
        let level: Int

        func header(_ method: DeltaMethod, buffer: Int64, sections: [Int64]) -> DeltaHeader {
            DeltaHeader(
                method: method, baseSize: Int64(base.size), targetSize: Int64(target.size), baseSha256: baseHash,
                targetSha256: targetHash, decodeBufferBytes: buffer, sectionLengths: sections)
        }
    }

    // MARK: methods

    private static func encodeTensor(_ c: Context, to path: String) throws(DeltaError) -> DeltaReport.TensorStats {
        let baseLayout: TensorLayout
        let targetLayout: TensorLayout
        switch TensorLayout.parse(c.base.bytes) {
        case .success(let l): baseLayout = l
        case .failure(let f): throw DeltaError(.notApplicable, "base: \(f.message)")
        }
        switch TensorLayout.parse(c.target.bytes) {
        case .success(let l): targetLayout = l
        case .failure(let f): throw DeltaError(.notApplicable, "target: \(f.message)")
        }
        // Mostly structure (an ONNX graph whose weights are not raw_data): not worth it, and the
        // decoder would hold the whole structure prefix.
        let limit: Int64 = 64 << 20
        for (name, l) in [("base", baseLayout), ("target", targetLayout)] where l.fileSize - l.tensorBytes > limit {
            throw DeltaError(.notApplicable, "\(name) has \(l.fileSize - l.tensorBytes) bytes outside tensors")
        }
        var encoder = try TensorEncoder(base: c.base, target: c.target, baseLayout: baseLayout, targetLayout: targetLayout, level: c.level)
        let plan = try encoder.build()
        let planBytes = plan.serialized()
        let planFrame = try planBytes.withBytes { (p: UnsafeRawBufferPointer) throws(DeltaError) -> [UInt8] in
            try ZstdCompressor().compress(p, .init(level: 19))
        }
        let header = c.header(.tensor, buffer: plan.decodeBufferBytes, sections: [Int64(planFrame.count), encoder.dataLength])
        let w = try PackageWriter(path)
        try w.write(header.serialized())
        try w.write(planFrame)
        for f in encoder.frames { try w.write(f) }
        try w.close()
        return encoder.stats
    }

    /// zstd-patch (the whole base as prefix, a window over base and target) or full.
    private static func encodeWhole(_ method: DeltaMethod, _ c: Context, level: Int, to path: String) throws(DeltaError) {
        let options: ZstdCompressor.Options
        let prefix: UnsafeRawBufferPointer?
        let buffer: Int64
        switch method {
        case .zstdPatch:
            let windowLog = (c.base.size + c.target.size).windowLogCovering
            guard windowLog <= 31 else { throw DeltaError(.notApplicable, "base and target together exceed zstd's 2 GiB window") }
            options = .init(level: level, windowLog: windowLog, longDistanceMatching: true)
            prefix = c.base.bytes
            buffer = Int64(c.base.size) + Int64(min(c.target.size, 1 << windowLog))
        default:
            let windowLog = min(TensorPlan.payloadWindowLog, max(c.target.size, 1).windowLogCovering)
            options = .init(level: level, windowLog: windowLog)
            prefix = nil
            buffer = Int64(min(c.target.size, 1 << windowLog))
        }
        let w = try PackageWriter(path)
        let placeholder = c.header(method, buffer: buffer, sections: [0])
        try w.write(placeholder.serialized())
        var length: Int64 = 0
        try ZstdCompressor().compress(c.target.bytes, options, prefix: prefix) { (chunk: UnsafeRawBufferPointer) throws(DeltaError) in
            try w.write(chunk)
            length += Int64(chunk.count)
        }
        try w.rewriteHeader(c.header(method, buffer: buffer, sections: [length]).serialized())
        try w.close()
    }

    // MARK: helpers

    /// Estimated size at `level` relative to `probeLevel`, from three 256 KiB samples of the target
    /// compressed alone (no prefix): what the slow level gains on this kind of data.
    static func estimateGain(_ bytes: UnsafeRawBufferPointer, level: Int) -> Double {
        let sample = 256 * 1024
        guard bytes.count >= 4 * sample, let z = try? ZstdCompressor() else { return 1 }
        var fastTotal = 0, slowTotal = 0
        for quarter in 1...3 {
            let start = bytes.count / 4 * quarter
            let s = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + sample)])
            guard let f = try? z.compress(s, .init(level: probeLevel)), let h = try? z.compress(s, .init(level: level)) else { return 1 }
            fastTotal += f.count
            slowTotal += h.count
        }
        return min(1, Double(slowTotal) / Double(max(fastTotal, 1)))
    }

    static func sha256(_ bytes: UnsafeRawBufferPointer) -> String {
        var h = StreamingSHA256()
        var at = 0
        while at < bytes.count {
            let n = min(1 << 24, bytes.count - at)
            h.update(UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]))
            at += n
        }
        return h.finalizeHex()
    }

    private static func fileSize(_ path: String) throws(DeltaError) -> Int64 {
        var st = stat()
        guard stat(path, &st) == 0 else { throw .errno(path, "stat") }
        return Int64(st.st_size)
    }

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}

/// Writes a package file front to back (and its header again once the section lengths are known).
final class PackageWriter {
    let path: String
    private var fd: Int32

    init(_ path: String) throws(DeltaError) {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .errno(path, "create") }
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    func write(_ bytes: [UInt8]) throws(DeltaError) {
        try bytes.withBytes { (b: UnsafeRawBufferPointer) throws(DeltaError) in try write(b) }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(DeltaError) {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 { if Glibc.errno == EINTR { continue }; throw .errno(path, "write") }
            done += n
        }
    }

    func rewriteHeader(_ header: [UInt8]) throws(DeltaError) {
        let n = header.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard n == header.count else { throw .errno(path, "write header") }
    }

    func close() throws(DeltaError) {
        let r = Glibc.close(fd)
        fd = -1
        guard r == 0 else { throw .errno(path, "close") }
    }
}
