import Foundation
import Testing
import TestSupport
@testable import FleetCompression
import FleetCore

/// Mixed precision guided by measurement (`mixed` step): the forms a plan puts in the graph, the
/// search that measures candidate variants on the calibration inputs, and bad calibration input.
@Suite(.ownThread) struct MixedPrecisionTests {
    /// x [2, 64] → a = x·γ + β (a LayerNorm's tail) → Q, K = MatMul(a, Wq|Wk) + bq|bk (siblings);
    /// r = a + Q (the residual reads a unscaled) → Relu → MatMul(·, W2) + b2 → y. γ and β have outlier
    /// channels, as a transformer's norms do.
    static func block(seed: UInt64 = 11) -> Onnx_ModelProto {
        var gamma = floats(64, std: 0.1, seed: seed).map { 1 + $0 }
        var beta = floats(64, std: 0.1, seed: seed + 1)
        gamma[5] = 12
        beta[9] = -6
        var g = Onnx_GraphProto()
        g.name = "block"
        g.initializer = [
            ONNXFixture.tensor("gamma", [64], gamma),
            ONNXFixture.tensor("beta", [64], beta),
            ONNXFixture.tensor("Wq", [64, 64], floats(64 * 64, seed: seed + 2)),
            ONNXFixture.tensor("bq", [64], floats(64, seed: seed + 3)),
            ONNXFixture.tensor("Wk", [64, 64], floats(64 * 64, seed: seed + 4)),
            ONNXFixture.tensor("bk", [64], floats(64, seed: seed + 5)),
            ONNXFixture.tensor("W2", [64, 32], floats(64 * 32, seed: seed + 6)),
            ONNXFixture.tensor("b2", [32], floats(32, seed: seed + 7))
        ]
        g.node = [
            ONNXFixture.node("Mul", ["x", "gamma"], ["scaled"]),
            ONNXFixture.node("Add", ["scaled", "beta"], ["a"]),
            ONNXFixture.node("MatMul", ["a", "Wq"], ["q0"]),
            ONNXFixture.node("Add", ["q0", "bq"], ["q"]),
            ONNXFixture.node("MatMul", ["a", "Wk"], ["k0"]),
            ONNXFixture.node("Add", ["k0", "bk"], ["k"]),
            ONNXFixture.node("Add", ["a", "q"], ["r"]),
            ONNXFixture.node("Relu", ["r"], ["h"]),
            ONNXFixture.node("MatMul", ["h", "W2"], ["y0"]),
            ONNXFixture.node("Add", ["y0", "b2"], ["y"])
        ]
        g.input = [ONNXFixture.valueInfo("x", 1, [2, 64])]
        g.output = [ONNXFixture.valueInfo("y", 1, [2, 32]), ONNXFixture.valueInfo("k", 1, [2, 64])]
        return ONNXFixture.model(g)
    }

    func load(_ path: String) throws -> Onnx_ModelProto {
        try Onnx_ModelProto(serializedBytes: Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    func floatsOf(_ t: Onnx_TensorProto) -> [Float] { t.rawData.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } }

    var mixed: Recipe { recipe("int8-mixed", [.mixed(minCosine: 0.99, alpha: 0.7), .int8Dynamic(.onnxruntime)]) }

    func options(_ dir: TempDir, _ input: String, plan: MixedPlan? = nil, calibration: ActivationRanges? = nil, calibrator: String? = nil)
        -> VariantBuilder.Options
    {
        var o = VariantBuilder.Options(
            input: input, output: dir.file("out.onnx"), recipe: mixed, zstdLevel: nil, calibration: calibration, calibrator: calibrator)
        o.mixedPlan = plan
        return o
    }

    @Test func aFoldedGroupReadsTheMapsInputWithGammaInTheRowsAndBetaInTheBias() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.block(), to: dir, "block.onnx")
        let report = try VariantBuilder.build(options(dir, input, plan: MixedPlan(forms: ["a": .folded])))
        let m = try load(dir.file("out.onnx"))
        // Q and K are joined into one DynamicQuantizeMatMul that reads x, not a.
        let dq = m.graph.node.filter { $0.opType == "DynamicQuantizeMatMul" }
        #expect(dq.count == 2)
        let qk = try #require(dq.first { $0.input[0] == "x" })
        #expect(!dq.contains { $0.input[0] == "a" })
        // The residual still reads a; no Mul was added for the fold.
        #expect(m.graph.node.contains { $0.opType == "Add" && $0.input == ["a", "q"] })
        #expect(m.graph.node.filter { $0.opType == "Mul" }.count == 1)
        // The joined bias is the folded biases: b + β·W, column by column.
        let inits = Dictionary(uniqueKeysWithValues: m.graph.initializer.map { ($0.name, $0) })
        let source = Self.block().graph.initializer
        func src(_ n: String) -> [Float] { floatsOf(source.first { $0.name == n }!) }
        let wq = src("Wq"), beta = src("beta"), bq = src("bq")
        let biasConcat = try #require(m.graph.node.first { $0.opType == "Concat" && $0.output[0] == qk.input[4] })
        let foldedQ = floatsOf(try #require(inits[biasConcat.input[0]]))
        for c in [0, 17, 63] {
            let expected = bq[c] + (0..<64).reduce(Float(0)) { $0 + beta[$1] * wq[$1 * 64 + c] }
            #expect(abs(foldedQ[c] - expected) < 1e-4)
        }
        // The replaced biases are gone from the file; γ went into the weight rows.
        #expect(inits["bq"] == nil && inits["bk"] == nil && inits["b2"] != nil)
        #expect(report.tensors.first { $0.name == "Wq" }?.encoding.hasPrefix("affine map folded") == true)
        #expect(report.tensors.first { $0.name == "W2" }?.encoding.hasPrefix("int8") == true)
    }

    @Test func smoothedAndFp32GroupsTakeTheirForms() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.block(), to: dir, "block.onnx")
        var h = [Float](repeating: 1, count: 64)
        h[3] = 50
        let ranges = ActivationRanges(absmax: ["h": h], samples: 2)
        let report = try VariantBuilder.build(
            options(dir, input, plan: MixedPlan(forms: ["h": .smoothed, "a": .fp32]), calibration: ranges))
        let m = try load(dir.file("out.onnx"))
        // a's MatMuls stay fp32 MatMuls on the original weights; h gets its smoothing Mul.
        #expect(m.graph.node.filter { $0.opType == "MatMul" }.map(\.input) == [["a", "Wq"], ["a", "Wk"]])
        let mul = try #require(m.graph.node.first { $0.opType == "Mul" && $0.input[0] == "h" })
        #expect(m.graph.node.contains { $0.opType == "DynamicQuantizeMatMul" && $0.input[0] == mul.output[0] })
        #expect(report.tensors.first { $0.name == "Wq" }?.changed == false)
        #expect(report.tensors.first { $0.name == "W2" }?.encoding.hasPrefix("smoothed") == true)
    }

    @Test func calibrationRangesOfTheWrongWidthAreRefusedByTensorAndNothingIsWritten() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.block(), to: dir, "block.onnx")
        let ranges = ActivationRanges(absmax: ["h": [1, 2, 3]], samples: 2)
        var caught: CompressionError?
        do { _ = try VariantBuilder.build(options(dir, input, calibration: ranges, calibrator: "false")) } catch { caught = error }
        #expect(caught?.code == .shapeMismatch)
        #expect(caught?.tensor == "h")
        // A plan that smooths an activation the ranges do not cover: refused by tensor as well.
        do {
            _ = try VariantBuilder.build(options(dir, input, plan: MixedPlan(forms: ["a": .smoothed]), calibration: ranges))
            Issue.record("built without ranges for a")
        } catch {
            #expect((error as? CompressionError)?.tensor == "a")
        }
        #expect(dir.entries == ["block.onnx"])
    }

    @Test func aCalibratorThatCannotMeasureAgreementLeavesNoVariant() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.block(), to: dir, "block.onnx")
        let ranges = ActivationRanges(absmax: [:], samples: 2)
        for cmd in [
            "exit 3; :", "echo '{\"samples\": 2, \"mean_cosine\": [0.9, 0.9]}'; :", "echo '{\"samples\": 0, \"mean_cosine\": [0.9]}'; :",
            "echo '{\"samples\": 2, \"mean_cosine\": [1.5]}'; :", "echo nothing; :"
        ] {
            #expect(
                compressionErrorCode { _ = try VariantBuilder.build(options(dir, input, calibration: ranges, calibrator: cmd)) }
                    == .evaluator, "\(cmd)")
            #expect(dir.entries == ["block.onnx"], "\(cmd)")
        }
    }

    @Test func withoutACalibratorTheBuildSaysItDidNotMeasure() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.block(), to: dir, "block.onnx")
        let report = try VariantBuilder.build(options(dir, input))
        #expect(report.notes.contains { $0.hasPrefix("mixed precision not measured") })
        #expect(try load(dir.file("out.onnx")).graph.node.filter { $0.opType == "DynamicQuantizeMatMul" }.count == 2)
    }

    /// The search with a scripted calibrator: the folded candidate of `a` measures best, so it is
    /// kept; the floor is then met and nothing costly is added.
    @Test func theSearchKeepsTheFoldsThatMeasureBetterAndStopsAtTheFloor() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.block(), to: dir, "block.onnx")
        // Measured in order: all int8 (0.98), then a folded (0.995, above the floor of 0.99).
        let script = try dir.write(
            "cal.sh",
            Array(
                """
                [ "$1" = --agreement ] || { echo '{"samples": 2, "activations": {}}'; exit 0; }
                n=$(cat '\(dir.file("count"))' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '\(dir.file("count"))'
                if [ $n -eq 1 ]; then v=0.98; else v=0.995; fi
                echo "{\\"samples\\": 2, \\"mean_cosine\\": [$v]}"
                """.utf8))
        let ranges = ActivationRanges(absmax: [:], samples: 2)
        let report = try VariantBuilder.build(options(dir, input, calibration: ranges, calibrator: "sh '\(script)'"))
        let note = try #require(report.notes.first { $0.hasPrefix("mixed precision measured") })
        #expect(note.contains("1 of 2 MatMul groups folded"))
        #expect(note.contains("met") && !note.contains("NOT met"))
        let m = try load(dir.file("out.onnx"))
        #expect(m.graph.node.contains { $0.opType == "DynamicQuantizeMatMul" && $0.input[0] == "x" })
        #expect(!m.graph.node.contains { $0.opType == "MatMul" })
        #expect(dir.entries == ["block.onnx", "cal.sh", "count", "out.onnx"])
        #expect(try String(contentsOfFile: dir.file("count"), encoding: .utf8).hasPrefix("2"))
    }

    /// Below the floor the search adds costly forms, best measured first, and says when the floor
    /// stays out of reach.
    @Test func belowTheFloorTheSearchAddsCostlyFormsAndSaysSo() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.block(), to: dir, "block.onnx")
        // Every measurement: 0.9 for the first candidate, more for later ones (one per variant).
        let script = try dir.write(
            "cal.sh",
            Array(
                """
                [ "$1" = --agreement ] || { echo '{"samples": 2, "activations": {}}'; exit 0; }
                shift 2
                n=$(cat '\(dir.file("count"))' 2>/dev/null || echo 0)
                out=""; for v in "$@"; do n=$((n + 1)); out="$out${out:+, }0.9$n"; done
                echo $n > '\(dir.file("count"))'
                echo "{\\"samples\\": 2, \\"mean_cosine\\": [$out]}"
                """.utf8))
        let ranges = ActivationRanges(absmax: [:], samples: 2)
        var o = options(dir, input, calibration: ranges, calibrator: "sh '\(script)'")
        o.recipe = recipe("int8-mixed", [.mixed(minCosine: 1, alpha: 0.7), .int8Dynamic(.onnxruntime)])
        let report = try VariantBuilder.build(o)
        let note = try #require(report.notes.first { $0.hasPrefix("mixed precision measured") })
        #expect(note.contains("NOT met"))
        // a's fold measured better and was kept; no ranges, nothing to smooth; h measured better in fp32.
        #expect(note.contains("1 of 2 MatMul groups folded"))
        #expect(note.contains("smoothed 0") && note.contains("fp32 1 (h)"))
        let m = try load(dir.file("out.onnx"))
        #expect(m.graph.node.filter { $0.opType == "MatMul" }.map(\.input) == [["h", "W2"]])
        #expect(m.graph.node.contains { $0.opType == "DynamicQuantizeMatMul" && $0.input[0] == "x" })
    }

    /// The variant a real search chooses runs in onnxruntime and agrees with the base.
    @Test func aMeasuredVariantRunsInOnnxruntime() throws {
        guard Venv.available() else { return }
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.block(), to: dir, "block.onnx")
        var o = options(dir, input, calibrator: Venv.calibrator)
        o.evaluator = Venv.evaluator
        let report = try VariantBuilder.build(o)
        #expect(report.notes.contains { $0.hasPrefix("mixed precision measured") })
        #expect((report.evaluation?.meanCosine ?? 0) >= 0.99)
        #expect(report.form == "compute")
    }
}
