import FleetCore
import Foundation

/// Builds one variant of a model by recipe: reads the model, decides for every tensor whether the
/// recipe applies to it, lays the output file out, then reads, transforms and writes the tensors one
/// at a time (peak memory about the largest tensor a few times over, not the model), measuring each
/// tensor's error on the way. The output appears at its path only when everything, the evaluation
/// included, succeeded.
public enum VariantBuilder {
    public static let tool = "edgefleet-compress"
    public static let toolVersion = "1.0.0"

    public struct Options {
        public var input: String
        public var output: String
        public var recipe: Recipe
        /// zstd level for the report's compressed sizes; nil skips compressing.
        public var zstdLevel: Int?
        /// Output-level evaluation: a command run as `CMD BASE VARIANT` (see `Evaluator`).
        public var evaluator: String?
        /// Activation ranges for recipes that smooth activations; when nil and `calibrator` is set,
        /// the calibrator measures them on the input model (see `Calibrator`).
        public var calibration: ActivationRanges?
        public var calibrator: String?
        public var progress: ((Progress) -> Void)?
        /// The measured plan of a `mixed` recipe (set by the search; candidates are built with one).
        var mixedPlan: MixedPlan?

        public init(
            input: String, output: String, recipe: Recipe, zstdLevel: Int? = 3, evaluator: String? = nil,
            calibration: ActivationRanges? = nil, calibrator: String? = nil, progress: ((Progress) -> Void)? = nil
        ) {
            self.input = input; self.output = output; self.recipe = recipe; self.zstdLevel = zstdLevel
            self.evaluator = evaluator; self.calibration = calibration; self.calibrator = calibrator; self.progress = progress
        }
    }

    public struct Progress: Sendable {
        public var tensor: String
        public var done: Int
        public var total: Int
        public var bytesDone: Int64
        public var bytesTotal: Int64
    }

    public enum Format: String, Sendable { case onnx, safetensors }

    /// ONNX or safetensors, from the extension, else from the first bytes.
    public static func format(of path: String) throws(CompressionError) -> Format {
        if path.hasSuffix(".onnx") { return .onnx }
        if path.hasSuffix(".safetensors") { return .safetensors }
        let f = try ReadableFile(path)
        if f.size >= 9, let head = try? f.read(at: 0, count: 9) {
            let n = head.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            if head[8] == UInt8(ascii: "{"), n > 0, n < UInt64(f.size) { return .safetensors }
        }
        if f.size > 0, let first = try? f.read(at: 0, count: 1), first[0] == 0x08 { return .onnx }  // ir_version, field 1
        throw CompressionError(.unsupportedFormat, "neither ONNX nor safetensors (name it .onnx or .safetensors)", path: path)
    }

    public static func build(_ options: Options) throws(CompressionError) -> VariantReport {
        var options = options
        let format = try format(of: options.input)
        if options.recipe.needsCalibration, options.calibration == nil, format == .onnx, let cmd = options.calibrator {
            options.calibration = try Calibrator.run(command: cmd, model: options.input)
        }
        if let step = options.recipe.mixedStep, format == .onnx, options.mixedPlan == nil {
            options.mixedPlan = try MixedPrecision.search(options, floor: step.minCosine)
        }
        if options.output.hasSuffix(".onnx") != (format == .onnx) || options.output.hasSuffix(".safetensors") != (format == .safetensors) {
            if options.output.hasSuffix(".onnx") || options.output.hasSuffix(".safetensors") {
                throw CompressionError(
                    .unsupportedFormat, "the variant is written in the input's format (\(format.rawValue))", path: options.output)
            }
        }
        let out = try AtomicOutputFile(options.output)
        // The input is mapped once; its sha256 (for lineage) and its zstd size (for the report) are
        // computed from that map on other threads while the variant is built.
        let inputFile = try ReadableFile(options.input)
        let inputMap = try inputFile.mapped()
        let inputPath = options.input
        let inputZstd = options.zstdLevel.map { level in
            Background { () throws(CompressionError) in try BuildJob.zstdSize(inputMap.bytes, level: level, path: inputPath) }
        }
        let inputHash = Background { () throws(CompressionError) in BuildJob.sha256(inputMap.bytes) }
        var job = BuildJob(options: options, format: format)
        switch format {
        case .onnx: try job.buildONNX(out, input: inputFile)
        case .safetensors: try job.buildSafetensors(out)
        }
        try out.sync()
        var report = try job.report(
            out, inputSha256: { () throws(CompressionError) in try inputHash.result() },
            inputZstd: { () throws(CompressionError) in try inputZstd?.result() })
        if let cmd = options.evaluator {
            report.evaluation = try Evaluator.run(command: cmd, base: options.input, variant: out.tempPath, format: format.rawValue)
            if let e = report.evaluation {
                report.notes += QualityNotes.forEvaluation(e, recipe: options.recipe)
            }
        } else {
            report.notes.append("output agreement not evaluated (no evaluator): a model with a quality floor will not choose this variant")
        }
        try out.commit()
        return report
    }
}

/// How one tensor is handled in a build.
struct TensorDecision {
    var source: SourceTensor?
    var name: String
    /// nil: kept as it is, for `reason`.
    var encoding: TensorEncoding?
    var prune: Bool
    var reason: String
    /// Compute forms: the operator that reads the quantized weight directly.
    var site: ComputeSite?
    /// Activation smoothing: row k of a MatMul weight [K, N] is multiplied by rowScales[k] before encoding.
    var rowScales: [Float]?
    /// What the row scales are, for the report: a smoothing, or a folded affine map's γ.
    var rowScalesAre = "smoothed"
    /// Structured pruning: the slices of `axis` that stay (the others are removed, the tensor shrinks).
    var keep: Selection?

    struct Selection: Equatable { var axis: Int; var indices: [Int] }

    /// The shape written: the source's, less the removed slices.
    var shape: [Int64] {
        guard var s = source?.shape else { return [] }
        if let k = keep, k.axis < s.count { s[k.axis] = Int64(k.indices.count) }
        return s
    }
}

/// Where a compute form replaces the operator that reads a weight.
enum ComputeSite: Equatable {
    /// B of MatMul nodes: int8 per output column, activations quantized at run time.
    case matMulInt8(Recipe.OperatorSet)
    /// B of MatMul nodes: com.microsoft MatMulNBits.
    case matMulNBits(blockSize: Int, accuracyLevel: Int)
    /// The table of Gather nodes (axis 0): com.microsoft GatherBlockQuantized, blocks along rows
    /// (bits 4: UINT4 values; bits 8: UINT8 values), asymmetric.
    case gatherBlockQuantized(blockSize: Int, bits: Int)
}

/// A result computed on a thread of its own (the builder's other cores).
final class Background<Value: Sendable>: @unchecked Sendable {
    private var value: Result<Value, CompressionError> = .failure(CompressionError(.io, "not computed"))
    private let done = DispatchSemaphore(value: 0)

    init(_ work: @escaping @Sendable () throws(CompressionError) -> Value) {
        let thread = Thread { [self] in
            value = Result { () throws(CompressionError) in try work() }
            done.signal()
        }
        thread.start()
    }

    /// Waits for the result (once).
    func result() throws(CompressionError) -> Value {
        done.wait()
        return try value.get()
    }
}
