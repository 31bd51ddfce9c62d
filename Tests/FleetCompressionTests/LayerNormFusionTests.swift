import Foundation
import Testing
import TestSupport
@testable import FleetCompression
import FleetCore

/// `fuse-layernorm`: spelled-out LayerNorms become one LayerNormalization operator and the residual
/// Add before each a Sum; the variant still runs in onnxruntime and agrees with its base.
@Suite(.ownThread) struct LayerNormFusionTests {
    /// s = x + r → ReduceMean, Sub, Mul(d, d), ReduceMean, Add ε, Sqrt, Div → Mul γ, Add β → a →
    /// MatMul(a, W) + b → y.
    static func norm(opset: Int64 = 14) -> Onnx_ModelProto {
        var gamma = floats(64, std: 0.1, seed: 21).map { 1 + $0 }
        gamma[4] = 9
        var g = Onnx_GraphProto()
        g.name = "norm"
        g.initializer = [
            ONNXFixture.tensor("gamma", [64], gamma),
            ONNXFixture.tensor("beta", [64], floats(64, std: 0.5, seed: 22)),
            ONNXFixture.tensor("eps", [1], [1e-12]),
            ONNXFixture.tensor("W", [64, 64], floats(64 * 64, seed: 23)),
            ONNXFixture.tensor("b", [64], floats(64, seed: 24))
        ]
        g.node = [
            ONNXFixture.node("Add", ["x", "r"], ["s"]),
            ONNXFixture.node("ReduceMean", ["s"], ["mean"], intLists: ["axes": [-1]]),
            ONNXFixture.node("Sub", ["s", "mean"], ["d"]),
            ONNXFixture.node("Mul", ["d", "d"], ["sq"]),
            ONNXFixture.node("ReduceMean", ["sq"], ["var"], intLists: ["axes": [-1]]),
            ONNXFixture.node("Add", ["var", "eps"], ["vare"]),
            ONNXFixture.node("Sqrt", ["vare"], ["std"]),
            ONNXFixture.node("Div", ["d", "std"], ["n"]),
            ONNXFixture.node("Mul", ["n", "gamma"], ["scaled"]),
            ONNXFixture.node("Add", ["scaled", "beta"], ["a"]),
            ONNXFixture.node("MatMul", ["a", "W"], ["y0"]),
            ONNXFixture.node("Add", ["y0", "b"], ["y"])
        ]
        g.input = [ONNXFixture.valueInfo("x", 1, [2, 64]), ONNXFixture.valueInfo("r", 1, [2, 64])]
        g.output = [ONNXFixture.valueInfo("y", 1, [2, 64])]
        return ONNXFixture.model(g, opset: opset)
    }

    func load(_ path: String) throws -> Onnx_ModelProto {
        try Onnx_ModelProto(serializedBytes: Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    var fused: Recipe { recipe("int8-ln", [.fuseLayerNorm, .int8Dynamic(.onnxruntime)]) }

    @Test func aSpelledOutNormBecomesOneOperatorAndItsResidualAddASum() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.norm(), to: dir, "norm.onnx")
        let report = try VariantBuilder.build(.init(input: input, output: dir.file("out.onnx"), recipe: fused, zstdLevel: nil))
        let m = try load(dir.file("out.onnx"))
        let ln = try #require(m.graph.node.first { $0.opType == "LayerNormalization" })
        #expect(ln.input == ["s", "gamma", "beta"] && ln.output == ["a"])
        #expect(ln.attribute.first { $0.name == "epsilon" }?.f == 1e-12)
        #expect(m.graph.node.first { $0.output == ["s"] }?.opType == "Sum")
        #expect(!m.graph.node.contains { ["ReduceMean", "Sqrt", "Div", "Sub"].contains($0.opType) })
        #expect(m.opsetImport.first { $0.domain.isEmpty }?.version == 17)
        #expect(report.operators?.contains("LayerNormalization") == true)
        #expect(report.notes.contains { $0.hasPrefix("1 spelled-out LayerNorms fused") })
    }

    @Test func aNormWhoseNormalizedValueIsReadElsewhereKeepsItsScaleAndShift() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.norm(), to: dir, "norm.onnx")
        var o = VariantBuilder.Options(
            input: input, output: dir.file("out.onnx"),
            recipe: recipe("int8-mixed", [.mixed(minCosine: 0.99, alpha: 0.7), .fuseLayerNorm, .int8Dynamic(.onnxruntime)]),
            zstdLevel: nil)
        o.mixedPlan = MixedPlan(forms: ["a": .folded])
        _ = try VariantBuilder.build(o)
        let m = try load(dir.file("out.onnx"))
        let ln = try #require(m.graph.node.first { $0.opType == "LayerNormalization" })
        #expect(ln.output == ["n"])
        let unit = try #require(m.graph.initializer.first { $0.name == ln.input[1] })
        #expect(unit.rawData.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } == [Float](repeating: 1, count: 64))
        #expect(m.graph.node.contains { $0.opType == "Mul" && $0.input == ["n", "gamma"] })
        #expect(m.graph.node.contains { $0.opType == "DynamicQuantizeMatMul" && $0.input[0] == "n" })
    }

    @Test func belowOpset13TheNormsStaySpelledOut() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.norm(opset: 12), to: dir, "norm.onnx")
        let report = try VariantBuilder.build(.init(input: input, output: dir.file("out.onnx"), recipe: fused, zstdLevel: nil))
        let m = try load(dir.file("out.onnx"))
        #expect(!m.graph.node.contains { $0.opType == "LayerNormalization" })
        #expect(m.opsetImport.first { $0.domain.isEmpty }?.version == 12)
        #expect(report.notes.contains { $0.hasPrefix("LayerNorms not fused") })
    }

    @Test func theFusedVariantRunsInOnnxruntimeAndAgrees() throws {
        guard Venv.available() else { return }
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.norm(), to: dir, "norm.onnx")
        let report = try VariantBuilder.build(
            .init(input: input, output: dir.file("out.onnx"), recipe: fused, zstdLevel: nil, evaluator: Venv.evaluator))
        #expect((report.evaluation?.meanCosine ?? 0) >= 0.99)
    }
}
