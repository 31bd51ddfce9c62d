/// What a compressed variant costs: bytes before and after, the error each tensor took, and how
/// closely the variant's outputs agree with its base model's. Written by FleetCompression, stored
/// with the variant by the controller, shown by `fleetctl variant show`.
public struct VariantReport: Codable, Equatable, Sendable {
    public struct FileStats: Codable, Equatable, Sendable {
        public var path: String
        public var format: String  // onnx, safetensors
        public var bytes: Int64
        /// The file as one zstd frame at `zstdLevel`: what a device downloads without a delta.
        public var zstdBytes: Int64?
        public var sha256: String?
        public init(path: String, format: String, bytes: Int64, zstdBytes: Int64? = nil, sha256: String? = nil) {
            self.path = path; self.format = format; self.bytes = bytes; self.zstdBytes = zstdBytes; self.sha256 = sha256
        }
    }

    /// The error one tensor took, measured against the base tensor in fp32.
    public struct TensorQuality: Codable, Equatable, Sendable {
        public var name: String
        public var dtype: String  // the base tensor's
        public var shape: [Int64]
        /// How it is stored in the variant ("int8 per-channel axis 1", "kept: integer", …).
        public var encoding: String
        public var changed: Bool
        public var relativeL2: Double?  // ‖w − ŵ‖ / ‖w‖
        /// 10·log10(‖w‖² / ‖w − ŵ‖²); nil when the tensor is reproduced exactly.
        public var snrDb: Double?
        public var maxAbsError: Double?
        public var sparsity: Double?  // share of exact zeros in the variant's tensor
        public var overflow: Int?  // fp16: finite values that became ±inf
        public var bytesIn: Int64
        public var bytesOut: Int64
        public init(
            name: String, dtype: String, shape: [Int64], encoding: String, changed: Bool, relativeL2: Double? = nil,
            snrDb: Double? = nil, maxAbsError: Double? = nil, sparsity: Double? = nil, overflow: Int? = nil,
            bytesIn: Int64, bytesOut: Int64
        ) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.encoding = encoding; self.changed = changed
            self.relativeL2 = relativeL2; self.snrDb = snrDb; self.maxAbsError = maxAbsError; self.sparsity = sparsity
            self.overflow = overflow; self.bytesIn = bytesIn; self.bytesOut = bytesOut
        }
    }

    /// Output-level agreement of the variant with its base (or a student with its teacher), from the evaluator.
    public struct Evaluation: Codable, Equatable, Sendable {
        public var evaluator: String
        public var samples: Int
        public var meanCosine: Double
        public var minCosine: Double
        public var top1Agreement: Double?
        public var detail: [String: Double]?
        /// Inference speed of the variant next to its base, measured by the evaluator in the same run.
        public var speed: Speed?
        public init(
            evaluator: String, samples: Int, meanCosine: Double, minCosine: Double, top1Agreement: Double?,
            detail: [String: Double]? = nil, speed: Speed? = nil
        ) {
            self.evaluator = evaluator; self.samples = samples; self.meanCosine = meanCosine; self.minCosine = minCosine
            self.top1Agreement = top1Agreement; self.detail = detail; self.speed = speed
        }
    }

    /// Latency of the variant and its base on the machine that evaluated them, timed interleaved in one
    /// run (a shared machine moves absolute times; the ratio holds), and the CPU it was.
    public struct Speed: Codable, Equatable, Sendable {
        /// One thread count: milliseconds per inference over every timed run.
        public struct Timing: Codable, Equatable, Sendable {
            public var threads: Int
            public var baseMedianMs: Double
            public var baseP95Ms: Double
            public var variantMedianMs: Double
            public var variantP95Ms: Double
            /// base median / variant median: above 1, the variant is faster.
            public var speedup: Double
            public init(
                threads: Int, baseMedianMs: Double, baseP95Ms: Double, variantMedianMs: Double, variantP95Ms: Double, speedup: Double
            ) {
                self.threads = threads; self.baseMedianMs = baseMedianMs; self.baseP95Ms = baseP95Ms
                self.variantMedianMs = variantMedianMs; self.variantP95Ms = variantP95Ms; self.speedup = speedup
            }
        }
        public struct CPU: Codable, Equatable, Sendable {
            public var model: String
            public var architecture: String
            public var cores: Int
            /// The instruction-set flags that decide quantized speed (avx2, avx512_vnni, asimddp, …).
            public var flags: [String]
            public init(model: String, architecture: String, cores: Int, flags: [String]) {
                self.model = model; self.architecture = architecture; self.cores = cores; self.flags = flags
            }
        }
        /// Inputs per inference (1: one sample at a time, as a device serves requests).
        public var batch: Int
        /// Timed inferences per model and thread count.
        public var runs: Int
        public var timings: [Timing]
        /// Peak resident memory of a process that loads the model and runs it, in bytes.
        public var basePeakBytes: Int64?
        public var variantPeakBytes: Int64?
        public var runtime: String?
        public var cpu: CPU?
        public init(
            batch: Int, runs: Int, timings: [Timing], basePeakBytes: Int64? = nil, variantPeakBytes: Int64? = nil,
            runtime: String? = nil, cpu: CPU? = nil
        ) {
            self.batch = batch; self.runs = runs; self.timings = timings; self.basePeakBytes = basePeakBytes
            self.variantPeakBytes = variantPeakBytes; self.runtime = runtime; self.cpu = cpu
        }
        /// The one-thread timing, the figure devices with one inference core see.
        public var singleThread: Timing? { timings.first { $0.threads == 1 } }
    }

    public var tool: String
    public var toolVersion: String
    public var recipe: String
    public var steps: [String]
    public var technique: String
    /// Number format of the variant's weights, as hardware classes list them (fp32, fp16, int8, int4, …).
    public var dtype: String
    public var input: FileStats
    public var output: FileStats
    public var zstdLevel: Int?
    /// input bytes / output bytes.
    public var compressionRatio: Double
    /// input zstd bytes / output zstd bytes, when both were measured.
    public var compressedRatio: Double?
    public var tensorsChanged: Int
    public var tensorsKept: Int
    /// Over the changed tensors: the worst relative L2 error and the mean SNR.
    public var worstRelativeL2: Double?
    public var meanSnrDb: Double?
    /// Share of zeros over the changed tensors' elements.
    public var sparsity: Double?
    public var overflow: Int
    public var tensors: [TensorQuality]
    public var evaluation: Evaluation?
    /// Warnings an operator must read (pruning without retraining, overflow, experimental recipe, …).
    public var notes: [String]
    /// `compute` (the variant's arithmetic runs in its number format) or `storage-only` (smaller, but
    /// computed in fp32 like its base); nil in reports written before the distinction.
    public var form: String?
    /// The operators a compute form put in the graph (e.g. com.microsoft.MatMulNBits).
    public var operators: [String]?

    public init(
        tool: String, toolVersion: String, recipe: String, steps: [String], technique: String, dtype: String,
        input: FileStats, output: FileStats, zstdLevel: Int?, compressionRatio: Double, compressedRatio: Double?,
        tensorsChanged: Int, tensorsKept: Int, worstRelativeL2: Double?, meanSnrDb: Double?, sparsity: Double?,
        overflow: Int, tensors: [TensorQuality], evaluation: Evaluation?, notes: [String]
    ) {
        self.tool = tool; self.toolVersion = toolVersion; self.recipe = recipe; self.steps = steps; self.technique = technique
        self.dtype = dtype; self.input = input; self.output = output; self.zstdLevel = zstdLevel
        self.compressionRatio = compressionRatio; self.compressedRatio = compressedRatio
        self.tensorsChanged = tensorsChanged; self.tensorsKept = tensorsKept; self.worstRelativeL2 = worstRelativeL2
        self.meanSnrDb = meanSnrDb; self.sparsity = sparsity; self.overflow = overflow; self.tensors = tensors
        self.evaluation = evaluation; self.notes = notes
    }

    /// The quality the selector compares with a model's floor: the evaluator's mean cosine.
    public var quality: Double? { evaluation?.meanCosine }
}

/// Where a variant came from, signed into the release catalog with it.
public struct Lineage: Codable, Equatable, Sendable {
    /// The variant it was derived from (its teacher, for a distilled student).
    public var derivedFrom: String
    public var derivedFromSha256: String?
    /// quantization, pruning, combined, distillation, architecture.
    public var technique: String
    public var recipe: String?
    public var tool: String?
    public var toolVersion: String?
    /// Mean and minimum cosine against `derivedFrom`, as measured.
    public var meanCosine: Double?
    public var minCosine: Double?

    public init(
        derivedFrom: String, derivedFromSha256: String? = nil, technique: String, recipe: String? = nil,
        tool: String? = nil, toolVersion: String? = nil, meanCosine: Double? = nil, minCosine: Double? = nil
    ) {
        self.derivedFrom = derivedFrom; self.derivedFromSha256 = derivedFromSha256; self.technique = technique
        self.recipe = recipe; self.tool = tool; self.toolVersion = toolVersion; self.meanCosine = meanCosine; self.minCosine = minCosine
    }

    public static let techniques = ["quantization", "pruning", "combined", "distillation", "architecture"]
}

/// `POST /v1/models/{model}/variants/build`: the controller builds these recipes from `base` (default:
/// the model's fp32 reference) and registers each result with its report.
public struct VariantBuildRequest: Codable, Sendable {
    public var base: String?
    public var recipes: [String]
    public init(base: String? = nil, recipes: [String]) { self.base = base; self.recipes = recipes }
}

/// `GET /v1/models/{model}/variants/{name}`: the variant and its quality report, when it has one.
public struct VariantDetail: Codable, Equatable, Sendable {
    public var variant: VariantInfo
    public var report: VariantReport?
    public init(variant: VariantInfo, report: VariantReport?) { self.variant = variant; self.report = report }
}
