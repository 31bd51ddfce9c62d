import Foundation
import Testing
import TestSupport
@testable import FleetCompression

/// Structured pruning (`prune: {scope: ffn-neurons}`): whole feed-forward neurons leave the graph and
/// the matrices shrink.
@Suite(.ownThread) struct StructuredPruningTests {
    /// x [2, 64] → MatMul W1 [64, 128] + b1 → Relu → MatMul W2 [128, 32] + b2 → y; the odd neurons'
    /// down-projection rows are zero, so removing half the neurons (those) changes nothing.
    static func ffn(deadOdd: Bool = true) -> Onnx_ModelProto {
        var w2 = floats(128 * 32, seed: 5)
        if deadOdd { for j in stride(from: 1, to: 128, by: 2) { for c in 0..<32 { w2[j * 32 + c] = 0 } } }
        var g = Onnx_GraphProto()
        g.name = "ffn"
        g.initializer = [
            ONNXFixture.tensor("W1", [64, 128], floats(64 * 128, seed: 1)),
            ONNXFixture.tensor("b1", [128], floats(128, seed: 2)),
            ONNXFixture.tensor("W2", [128, 32], w2),
            ONNXFixture.tensor("b2", [32], floats(32, seed: 3))
        ]
        g.node = [
            ONNXFixture.node("MatMul", ["x", "W1"], ["h0"]),
            ONNXFixture.node("Add", ["h0", "b1"], ["h1"]),
            ONNXFixture.node("Relu", ["h1"], ["h"]),
            ONNXFixture.node("MatMul", ["h", "W2"], ["z"]),
            ONNXFixture.node("Add", ["z", "b2"], ["y"])
        ]
        g.input = [ONNXFixture.valueInfo("x", 1, [2, 64])]
        g.output = [ONNXFixture.valueInfo("y", 1, [2, 32])]
        g.valueInfo = [ONNXFixture.valueInfo("h", 1, [2, 128])]
        var m = ONNXFixture.mlp()
        m.graph = g
        return m
    }

    func values(_ t: Onnx_TensorProto) -> [Float] { t.rawData.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } }

    @Test func removesWholeNeuronsAndShrinksTheMatrices() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.ffn(), to: dir, "ffn.onnx")
        let r = try Recipe(name: "fp32-pruned-ffn50", steps: [.prune(sparsity: 0.5, scope: .ffnNeurons)])
        let report = try VariantBuilder.build(.init(input: input, output: dir.file("out.onnx"), recipe: r, zstdLevel: nil))
        let m = try Onnx_ModelProto(serializedBytes: try dir.read("out.onnx"))
        let t = Dictionary(uniqueKeysWithValues: m.graph.initializer.map { ($0.name, $0) })
        #expect(t["W1"]?.dims == [64, 64] && t["b1"]?.dims == [64] && t["W2"]?.dims == [64, 32])
        #expect(t["b2"]?.dims == [32])
        // The even neurons stay (the odd ones contribute nothing): column j of W1 is old column 2j.
        let w1 = floats(64 * 128, seed: 1), newW1 = values(try #require(t["W1"]))
        #expect(newW1[0 * 64 + 3] == w1[0 * 128 + 6] && newW1[63 * 64 + 63] == w1[63 * 128 + 126])
        #expect(values(try #require(t["b1"]))[5] == floats(128, seed: 2)[10])
        #expect(m.graph.valueInfo.isEmpty)  // h's recorded shape [2, 128] no longer holds
        #expect(report.dtype == "fp32" && report.technique == "pruning" && report.form == "compute")
        #expect(report.tensorsChanged == 3)
        #expect(report.tensors.first { $0.name == "W2" }?.encoding.hasPrefix("structured: kept 64 of 128") == true)
        #expect(report.notes.contains { $0.contains("64 of 128 neurons removed in 1 feed-forward blocks") })
        #expect(report.notes.contains { $0.contains("without retraining") })
        #expect(report.output.bytes < report.input.bytes * 6 / 10)
    }

    @Test func aBlockWhoseHiddenValueIsReadElsewhereStaysWhole() throws {
        // mlp(): the hidden value also feeds a Gemm head, so no neuron can go.
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let r = try Recipe(name: "p", steps: [.prune(sparsity: 0.5, scope: .ffnNeurons)])
        let report = try VariantBuilder.build(.init(input: input, output: dir.file("out.onnx"), recipe: r, zstdLevel: nil))
        #expect(report.tensorsChanged == 0)
        #expect(report.notes.contains { $0.contains("no feed-forward block") })
    }

    @Test func combinationsItCannotHonourAreRefused() throws {
        for steps: [Recipe.Step] in [
            [.prune(sparsity: 0.5, scope: .ffnNeurons), .int4MatMulNBits(blockSize: 32, accuracyLevel: 4)],
            [.prune(sparsity: 0.5, scope: .ffnNeurons), .smooth(alpha: 0.5, minGain: 1), .int8Dynamic(.onnxruntime)],
            [.prune(sparsity: 1.5, scope: .ffnNeurons)]
        ] {
            #expect(compressionErrorCode { _ = try Recipe(name: "x", steps: steps) } == .recipe, "\(steps)")
        }
        let dir = try TempDir()
        let input = try dir.write("m.safetensors", SafetensorsFixture.small())
        let r = try Recipe(name: "p", steps: [.prune(sparsity: 0.5, scope: .ffnNeurons)])
        #expect(
            compressionErrorCode { _ = try VariantBuilder.build(.init(input: input, output: dir.file("o.safetensors"), recipe: r)) }
                == .unsupportedFormat)
        #expect(dir.entries == ["m.safetensors"])
    }

    /// The pruned variants run in onnxruntime, alone and under int8 compute (the bias is still fused).
    @Test func prunedVariantsRunInOnnxruntime() throws {
        guard Venv.available() else { return }
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.ffn(), to: dir, "ffn.onnx")
        let exact = try VariantBuilder.build(
            .init(
                input: input, output: dir.file("p.onnx"), recipe: try Recipe(name: "p", steps: [.prune(sparsity: 0.5, scope: .ffnNeurons)]),
                zstdLevel: nil, evaluator: Venv.evaluator))
        #expect((exact.evaluation?.meanCosine ?? 0) > 0.9999)
        let q = try VariantBuilder.build(
            .init(
                input: input, output: dir.file("q.onnx"),
                recipe: try Recipe(name: "q", steps: [.prune(sparsity: 0.5, scope: .ffnNeurons), .int8Dynamic(.onnxruntime)]),
                zstdLevel: nil, evaluator: Venv.evaluator))
        #expect((q.evaluation?.meanCosine ?? 0) > 0.99)
        let m = try Onnx_ModelProto(serializedBytes: try dir.read("q.onnx"))
        #expect(m.graph.node.first { $0.opType == "DynamicQuantizeMatMul" && $0.input[1] == "W1_quantized" }?.input.last == "b1")
    }
}
