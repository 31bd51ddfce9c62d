import FleetCore
import FleetDelta
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

extension BuildJob {
    /// The report for the variant written to `out` (still under its temporary name). The input's hash
    /// and zstd size come from threads started before the build; they are waited for last.
    func report(
        _ out: AtomicOutputFile, inputSha256: () throws(CompressionError) -> String,
        inputZstd: () throws(CompressionError) -> Int64?
    ) throws(CompressionError) -> VariantReport {
        let changed = qualities.filter(\.changed)
        let changedElements = changed.reduce(0.0) { $0 + Double(elementCount($1.shape) ?? 0) }
        let zeros = changed.reduce(0.0) { $0 + ($1.sparsity ?? 0) * Double(elementCount($1.shape) ?? 0) }
        let snrs = changed.compactMap(\.snrDb)
        let overflow = changed.reduce(0) { $0 + ($1.overflow ?? 0) }
        var inZ: Int64?, outZ: Int64?
        if let level = options.zstdLevel {
            outZ = try Self.zstdSize(out.tempPath, level: level)
            inZ = try inputZstd()
        }
        var notes = self.notes + QualityNotes.forTensors(changed, recipe: recipe, overflow: overflow)
        if changed.isEmpty { notes.append("no tensor qualified for this recipe: the variant has the base's weights") }
        let base = "fp32"
        if recipe.form == "storage-only", recipe.storage != nil {
            notes.append("storage-only: smaller to ship and store, computed in fp32 like the base (not faster)")
        }
        var report = VariantReport(
            tool: VariantBuilder.tool, toolVersion: VariantBuilder.toolVersion, recipe: recipe.name,
            steps: recipe.steps.map(\.description), technique: recipe.technique, dtype: recipe.dtype(base: base),
            input: .init(path: options.input, format: format.rawValue, bytes: inputBytes, zstdBytes: inZ, sha256: try inputSha256()),
            output: .init(path: options.output, format: format.rawValue, bytes: out.written, zstdBytes: outZ, sha256: out.sha256),
            zstdLevel: options.zstdLevel,
            compressionRatio: out.written > 0 ? Double(inputBytes) / Double(out.written) : 0,
            compressedRatio: inZ.flatMap { i in outZ.map { Double(i) / Double(max($0, 1)) } },
            tensorsChanged: changed.count, tensorsKept: qualities.count - changed.count,
            worstRelativeL2: changed.compactMap(\.relativeL2).max(),
            meanSnrDb: snrs.isEmpty ? nil : snrs.reduce(0, +) / Double(snrs.count),
            sparsity: changedElements > 0 ? zeros / changedElements : nil,
            overflow: overflow, tensors: qualities, evaluation: nil, notes: notes)
        report.form = recipe.form
        report.operators = operators.isEmpty ? nil : operators
        return report
    }

    /// The file compressed as one zstd frame, counting bytes only (the map's pages are the page cache's).
    static func zstdSize(_ path: String, level: Int) throws(CompressionError) -> Int64 {
        let f = try ReadableFile(path)
        return try zstdSize(try f.mapped().bytes, level: level, path: path)
    }

    static func zstdSize(_ bytes: UnsafeRawBufferPointer, level: Int, path: String) throws(CompressionError) -> Int64 {
        var n: Int64 = 0
        do {
            let z = try ZstdCompressor()
            try z.compress(bytes, .init(level: level)) { chunk in n += Int64(chunk.count) }
        } catch { throw CompressionError(.io, "zstd: \(error)", path: path) }
        return n
    }

    static func sha256(_ bytes: UnsafeRawBufferPointer) -> String {
        var hasher = StreamingSHA256()
        hasher.update(bytes)
        return hasher.finalizeHex()
    }

    static func sha256(_ path: String) throws(CompressionError) -> String {
        let f = try ReadableFile(path)
        var hasher = StreamingSHA256()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buf.deallocate() }
        var offset: Int64 = 0
        while offset < f.size {
            let n = Int(min(Int64(buf.count), f.size - offset))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
            try f.read(at: offset, into: chunk)
            hasher.update(UnsafeRawBufferPointer(chunk))
            offset += Int64(n)
        }
        return hasher.finalizeHex()
    }
}

/// Plain-language warnings for the report: what an operator must know before shipping the variant.
enum QualityNotes {
    static func forTensors(_ changed: [VariantReport.TensorQuality], recipe: Recipe, overflow: Int) -> [String] {
        var notes: [String] = []
        if recipe.experimental { notes.append("experimental recipe: expect a large loss of accuracy without retraining") }
        if overflow > 0 { notes.append("\(overflow) weights overflowed fp16 and became ±inf") }
        if let f = recipe.structuredPruning {
            notes.append(
                String(
                    format:
                        "structured pruning removed %.0f%% of the FFN neurons without retraining: expect a loss of agreement; this form is meant for a distillation or fine-tuning pipeline",
                    f * 100))
        } else if recipe.steps.contains(where: { if case .prune = $0 { true } else { false } }) {
            notes.append("pruned by magnitude without retraining: check the evaluation before shipping")
        }
        if let worst = changed.max(by: { ($0.relativeL2 ?? 0) < ($1.relativeL2 ?? 0) }), let e = worst.relativeL2, e > 0.1 {
            notes.append(String(format: "tensor '%@' has a relative L2 error of %.3f", worst.name, e))
        }
        return notes
    }

    static func forEvaluation(_ e: VariantReport.Evaluation, recipe: Recipe) -> [String] {
        if e.meanCosine < 0.9 {
            return [String(format: "output agreement is poor: mean cosine %.4f, minimum %.4f", e.meanCosine, e.minCosine)]
        }
        return []
    }
}
