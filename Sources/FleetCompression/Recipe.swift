import Foundation
import Yams

/// A named pipeline of steps, from fleet/recipes.yaml. Value steps (pruning, activation smoothing)
/// come first and change the fp32 values; at most one storage step (fp16, int8, int4, binary,
/// ternary) comes last and decides how the values are stored and computed. Order matters: prune,
/// then quantize. Storage-only forms keep fp32 arithmetic (weights behind DequantizeLinear or Cast);
/// compute forms replace the operators that read the weights (MatMulInteger, MatMulNBits, …).
public struct Recipe: Equatable, Sendable {
    public enum Granularity: String, Sendable, Codable { case perChannel = "per-channel", perTensor = "per-tensor" }
    /// `ffn-neurons`: structured, whole FFN neurons (rows of the up-projection, columns of the
    /// down-projection, their bias entries) are removed and the matrices get smaller.
    public enum PruneScope: String, Sendable, Codable { case perLayer = "per-layer", global, ffnNeurons = "ffn-neurons" }
    /// Which operators an int8 compute form uses: onnxruntime's fused contrib operator
    /// (com.microsoft DynamicQuantizeMatMul) or standard ONNX (DynamicQuantizeLinear + MatMulInteger).
    public enum OperatorSet: String, Sendable, Codable { case onnxruntime, standard }

    public enum Step: Equatable, Sendable, CustomStringConvertible {
        case prune(sparsity: Double, scope: PruneScope)
        /// SmoothQuant-style: moves activation outliers into the weights of the MatMuls that read them,
        /// from calibration ranges (a per-channel Mul on the activation, the inverse on the weight rows).
        /// `minGain`: smooth an activation only when its MatMuls' estimated output error drops that many times.
        case smooth(alpha: Double, minGain: Double)
        /// Mixed precision guided by measurement (int8 compute): on the calibration inputs, the builder
        /// measures each MatMul group's agreement with the base in its candidate forms and takes, per
        /// group, the free form that measures best (a MatMul reading a per-channel affine map's input,
        /// the map folded into its weight and bias), then the costly ones (a smoothing Mul, alpha
        /// `alpha`; fp32) only where it takes them to reach `minCosine`.
        case mixed(minCosine: Double, alpha: Double)
        /// Spelled-out LayerNorms as one LayerNormalization operator (opset 17, raised when safe), the
        /// residual Add before each as a Sum (see `LayerNormFusion`): fewer operators at run time.
        case fuseLayerNorm
        case fp16
        case int8(Granularity)
        case int4(blockSize: Int)
        /// int8 weights per output channel, activations quantized at run time: MatMuls compute in int8.
        case int8Dynamic(OperatorSet)
        /// int4 block-wise MatMulNBits (com.microsoft) for MatMuls, GatherBlockQuantized for embedding tables.
        case int4MatMulNBits(blockSize: Int, accuracyLevel: Int)
        /// Mixed by where each format pays: embedding tables (most of an encoder's bytes, and only the
        /// gathered rows are ever dequantized) as int4 GatherBlockQuantized; MatMuls (all of its
        /// arithmetic) as int8 DynamicQuantizeMatMul, which runs about twice as fast as MatMulNBits.
        case int4Mixed(blockSize: Int)
        case binary
        case ternary

        public var isStorage: Bool {
            switch self {
            case .prune, .smooth, .mixed, .fuseLayerNorm: false
            default: true
            }
        }

        /// True for the forms whose arithmetic runs in the quantized format.
        public var computes: Bool {
            switch self {
            case .int8Dynamic, .int4MatMulNBits, .int4Mixed: true
            default: false
            }
        }

        public var description: String {
            switch self {
            case .prune(let s, let scope): "prune \(Int((s * 100).rounded()))% \(scope.rawValue)"
            case .smooth(let a, let g): "smooth activations alpha \(a)" + (g > 1 ? " where the estimated error drops \(g)x" : "")
            case .fuseLayerNorm: "LayerNorms fused into LayerNormalization"
            case .mixed(let c, let a): "mixed precision by measurement to mean cosine \(c) (smoothing alpha \(a))"
            case .fp16: "fp16"
            case .int8(let g): "int8 \(g.rawValue) symmetric (storage-only)"
            case .int4(let b): "int4 block \(b) (storage-only)"
            case .int8Dynamic(let ops):
                "int8 compute, dynamic activations (\(ops == .onnxruntime ? "DynamicQuantizeMatMul" : "MatMulInteger"))"
            case .int4MatMulNBits(let b, let acc): "int4 compute, MatMulNBits block \(b) accuracy_level \(acc)"
            case .int4Mixed(let b): "int4 embedding tables block \(b), int8 compute MatMuls (DynamicQuantizeMatMul)"
            case .binary: "binary"
            case .ternary: "ternary"
            }
        }
    }

    public var name: String
    public var description: String?
    public var steps: [Step]
    /// Tensors pruning and quantization leave alone besides the automatic rules: `embeddings`,
    /// `layernorm`, `last` (the last weight layer), or a regular expression on the tensor name.
    public var protect: [String]
    /// Float tensors with fewer elements, or fewer than two dimensions (biases, norms), are kept.
    public var minElements: Int64
    public var experimental: Bool

    public init(
        name: String, description: String? = nil, steps: [Step], protect: [String] = [], minElements: Int64 = 1024,
        experimental: Bool = false
    ) throws(CompressionError) {
        self.name = name; self.description = description; self.steps = steps; self.protect = protect
        self.minElements = minElements; self.experimental = experimental
        try validate()
    }

    func validate() throws(CompressionError) {
        guard !steps.isEmpty else { throw CompressionError(.recipe, "recipe '\(name)' has no steps") }
        for (i, s) in steps.enumerated() {
            if s.isStorage && i != steps.count - 1 {
                throw CompressionError(.recipe, "recipe '\(name)': \(s) must be the last step (prune first, then quantize)")
            }
            switch s {
            case .prune(let sparsity, _) where !(sparsity > 0 && sparsity < 1):
                throw CompressionError(.recipe, "recipe '\(name)': sparsity must be between 0 and 1, got \(sparsity)")
            case .int4(let b) where ![16, 32, 64, 128, 256].contains(b):
                throw CompressionError(.recipe, "recipe '\(name)': int4 block size must be 16, 32, 64, 128 or 256, got \(b)")
            case .int4MatMulNBits(let b, _) where ![16, 32, 64, 128, 256].contains(b),
                .int4Mixed(let b) where ![16, 32, 64, 128, 256].contains(b):
                throw CompressionError(.recipe, "recipe '\(name)': int4 block size must be 16, 32, 64, 128 or 256, got \(b)")
            case .int4MatMulNBits(_, let acc) where ![0, 1, 2, 3, 4].contains(acc):
                throw CompressionError(.recipe, "recipe '\(name)': accuracy_level must be 0 to 4, got \(acc)")
            case .smooth(_, let g) where !(g >= 1 && g.isFinite):
                throw CompressionError(.recipe, "recipe '\(name)': smoothing min_gain must be at least 1, got \(g)")
            case .smooth(let a, _) where !(a > 0 && a < 1):
                throw CompressionError(.recipe, "recipe '\(name)': smoothing alpha must be between 0 and 1, got \(a)")
            case .prune(_, .ffnNeurons) where steps.contains(where: { if case .smooth = $0 { true } else { false } }):
                throw CompressionError(.recipe, "recipe '\(name)': structured pruning (ffn-neurons) does not combine with smoothing")
            case .prune(_, .ffnNeurons)
            where !(storage == nil || storage == .int8Dynamic(.onnxruntime) || storage == .int8Dynamic(.standard)):
                throw CompressionError(
                    .recipe,
                    "recipe '\(name)': structured pruning (ffn-neurons) combines with int8 compute (dynamic) or with no storage step")
            case .mixed(let c, _) where !(c > 0 && c <= 1):
                throw CompressionError(.recipe, "recipe '\(name)': mixed min_cosine must be in (0, 1], got \(c)")
            case .mixed(_, let a) where !(a > 0 && a < 1):
                throw CompressionError(.recipe, "recipe '\(name)': mixed alpha must be between 0 and 1, got \(a)")
            case .mixed where storage != .int8Dynamic(.onnxruntime):
                throw CompressionError(.recipe, "recipe '\(name)': mixed combines with int8 compute (dynamic, ops: onnxruntime)")
            case .mixed where steps.contains(where: { if case .smooth = $0 { true } else if case .prune = $0 { true } else { false } }):
                throw CompressionError(
                    .recipe, "recipe '\(name)': mixed chooses its own smoothing; it combines with no smooth or prune step")
            case .fuseLayerNorm where !steps.contains(where: \.computes):
                throw CompressionError(.recipe, "recipe '\(name)': fuse-layernorm goes with a compute form")
            case .smooth where !steps.contains(where: \.computes):
                throw CompressionError(
                    .recipe,
                    "recipe '\(name)': smooth only helps a compute form (int8 compute: dynamic, int4 compute: matmulnbits or mixed)")
            default: break
            }
        }
        guard minElements >= 0 else { throw CompressionError(.recipe, "recipe '\(name)': min_elements must not be negative") }
        for p in protect where !["embeddings", "layernorm", "last"].contains(p) {
            do { _ = try Regex(p) } catch {
                throw CompressionError(.recipe, "recipe '\(name)': protect '\(p)' is not a regular expression")
            }
        }
    }

    public var storage: Step? { steps.last.flatMap { $0.isStorage ? $0 : nil } }

    /// The number format hardware classes list: the storage step's, or the base's when there is none.
    public func dtype(base: String) -> String {
        switch storage {
        case .fp16: "fp16"
        case .int8, .int8Dynamic: "int8"
        case .int4, .int4MatMulNBits, .int4Mixed: "int4"
        case .binary: "binary"
        case .ternary: "ternary"
        default: base
        }
    }

    /// `compute` when the variant's arithmetic runs in its number format, `storage-only` when it is
    /// smaller (or more compressible) but computes in fp32 like its base.
    /// Structured pruning counts as compute: the matrices shrink, and so does the work.
    public var form: String { storage?.computes == true || structuredPruning != nil ? "compute" : "storage-only" }

    /// Whether the recipe reads calibration ranges of activations.
    /// The fraction of FFN neurons a structured pruning step removes.
    public var structuredPruning: Double? {
        for s in steps { if case .prune(let f, .ffnNeurons) = s { return f } }
        return nil
    }

    public var needsCalibration: Bool { mixedStep != nil || steps.contains { if case .smooth = $0 { true } else { false } } }

    /// The `mixed` step's floor and smoothing strength, when the recipe has one.
    public var mixedStep: (minCosine: Double, alpha: Double)? {
        for s in steps { if case .mixed(let c, let a) = s { return (c, a) } }
        return nil
    }

    public var technique: String {
        let prunes = steps.contains { if case .prune = $0 { true } else { false } }
        if prunes && storage != nil { return "combined" }
        return prunes ? "pruning" : "quantization"
    }
}

/// The recipes of fleet/recipes.yaml, by name.
public struct RecipeBook: Sendable {
    public var recipes: [String: Recipe]
    public var names: [String]

    public static func load(path: String) throws(CompressionError) -> RecipeBook {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CompressionError(.recipe, "cannot read the recipe file", path: path)
        }
        do { return try parse(String(decoding: data, as: UTF8.self)) } catch { throw error.with(path: path) }
    }

    public static func parse(_ yaml: String) throws(CompressionError) -> RecipeBook {
        let file: RecipeFile
        do { file = try YAMLDecoder().decode(RecipeFile.self, from: yaml) } catch let e as CompressionError { throw e } catch {
            throw CompressionError(.recipe, "recipes YAML: \(error)")
        }
        var book = RecipeBook(recipes: [:], names: [])
        for entry in file.recipes {
            guard book.recipes[entry.name] == nil else { throw CompressionError(.recipe, "recipe '\(entry.name)' is defined twice") }
            var steps: [Recipe.Step] = []
            for s in entry.steps { steps.append(try s.step(recipe: entry.name)) }
            book.recipes[entry.name] = try Recipe(
                name: entry.name, description: entry.description, steps: steps,
                protect: entry.protect ?? [], minElements: entry.min_elements ?? file.min_elements ?? 1024,
                experimental: entry.experimental ?? false)
            book.names.append(entry.name)
        }
        return book
    }

    public func recipe(_ name: String) throws(CompressionError) -> Recipe {
        guard let r = recipes[name] else {
            throw CompressionError(.recipe, "no recipe '\(name)'; known: \(names.joined(separator: ", "))")
        }
        return r
    }
}

// The YAML shape: recipes is a list of {name, description, steps: [{fp16: {}} | {int8: {granularity: …}} | …], protect, …}.
private struct RecipeFile: Decodable {
    var min_elements: Int64?
    var recipes: [Entry]

    struct Entry: Decodable {
        var name: String
        var description: String?
        var steps: [StepEntry]
        var protect: [String]?
        var min_elements: Int64?
        var experimental: Bool?
    }

    struct StepEntry: Decodable {
        var kind: String
        var options: Options

        struct Options: Decodable {
            var granularity: Recipe.Granularity?
            var block_size: Int?
            var sparsity: Double?
            var scope: Recipe.PruneScope?
            /// int8: storage (DequantizeLinear) or dynamic; int4: storage, matmulnbits or mixed.
            var compute: String?
            var ops: Recipe.OperatorSet?
            var accuracy_level: Int?
            var alpha: Double?
            var min_gain: Double?
            var min_cosine: Double?
        }

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            // `- fp16` (a bare name) or `- int8: {granularity: per-tensor}`.
            if let single = try? decoder.singleValueContainer(), let name = try? single.decode(String.self) {
                kind = name
                options = Options()
                return
            }
            let c = try decoder.container(keyedBy: Key.self)
            guard c.allKeys.count == 1, let key = c.allKeys.first else {
                throw CompressionError(.recipe, "a step is one name with its options, e.g. `- int8: {granularity: per-channel}`")
            }
            kind = key.stringValue
            options = (try? c.decodeNil(forKey: key)) == true ? Options() : try c.decode(Options.self, forKey: key)
        }

        func step(recipe: String) throws(CompressionError) -> Recipe.Step {
            switch kind {
            case "fp16": return .fp16
            case "fuse-layernorm": return .fuseLayerNorm
            case "int8":
                switch options.compute ?? "storage" {
                case "storage": return .int8(options.granularity ?? .perChannel)
                case "dynamic":
                    guard (options.granularity ?? .perChannel) == .perChannel else {
                        throw CompressionError(.recipe, "recipe '\(recipe)': int8 compute is per-channel")
                    }
                    return .int8Dynamic(options.ops ?? .onnxruntime)
                default: throw CompressionError(.recipe, "recipe '\(recipe)': int8 compute must be storage or dynamic")
                }
            case "int4":
                switch options.compute ?? "storage" {
                case "storage": return .int4(blockSize: options.block_size ?? 32)
                case "matmulnbits": return .int4MatMulNBits(blockSize: options.block_size ?? 32, accuracyLevel: options.accuracy_level ?? 4)
                case "mixed": return .int4Mixed(blockSize: options.block_size ?? 64)
                default: throw CompressionError(.recipe, "recipe '\(recipe)': int4 compute must be storage, matmulnbits or mixed")
                }
            case "smooth": return .smooth(alpha: options.alpha ?? 0.5, minGain: options.min_gain ?? 1)
            case "mixed":
                guard let c = options.min_cosine else { throw CompressionError(.recipe, "recipe '\(recipe)': mixed needs a min_cosine") }
                return .mixed(minCosine: c, alpha: options.alpha ?? 0.7)
            case "binary": return .binary
            case "ternary": return .ternary
            case "prune":
                guard let s = options.sparsity else { throw CompressionError(.recipe, "recipe '\(recipe)': prune needs a sparsity") }
                return .prune(sparsity: s, scope: options.scope ?? .perLayer)
            default:
                throw CompressionError(
                    .recipe,
                    "recipe '\(recipe)': unknown step '\(kind)' (fp16, int8, int4, binary, ternary, prune, smooth, mixed, fuse-layernorm)")
            }
        }
    }
}
