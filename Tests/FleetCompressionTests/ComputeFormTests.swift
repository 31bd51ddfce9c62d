import Foundation
import Testing
import TestSupport
@testable import FleetCompression
import FleetCore

/// Compute-quantized forms: which operators replace the ones that read the weights, the bytes
/// those operators are given, and that onnxruntime runs the result unchanged.
@Suite(.ownThread) struct ComputeFormTests {
    func build(
        _ dir: TempDir, _ input: String, _ r: Recipe, out: String = "out.onnx", evaluator: String? = nil,
        calibration: ActivationRanges? = nil, calibrator: String? = nil
    ) throws -> VariantReport {
        try VariantBuilder.build(
            .init(
                input: input, output: dir.file(out), recipe: r, zstdLevel: nil, evaluator: evaluator,
                calibration: calibration, calibrator: calibrator))
    }

    func load(_ path: String) throws -> Onnx_ModelProto {
        try Onnx_ModelProto(serializedBytes: Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    func attr(_ n: Onnx_NodeProto, _ name: String) -> Int64? { n.attribute.first { $0.name == name }?.i }

    @Test func int8DynamicReplacesMatMulsAndFusesTheirBias() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let report = try build(dir, input, recipe("int8-dyn", [.int8Dynamic(.onnxruntime)]))
        let m = try load(dir.file("out.onnx"))
        let dq = m.graph.node.filter { $0.opType == "DynamicQuantizeMatMul" }
        #expect(dq.count == 2)
        #expect(dq.allSatisfy { $0.domain == "com.microsoft" })
        // W1 is followed by Add(b1): the bias goes into the operator and the Add is gone.
        let first = try #require(dq.first { $0.input[1] == "W1_quantized" })
        #expect(first.input == ["x", "W1_quantized", "W1_scale", "", "b1"])
        #expect(first.output == ["h1"])
        #expect(!m.graph.node.contains { $0.opType == "Add" })
        #expect(!m.graph.node.contains { $0.opType == "MatMul" || $0.opType == "DequantizeLinear" })
        // The Gemm head has no int8 compute form here: it stays fp32. The embedding table is read
        // through GatherBlockQuantized with 8-bit blocks (64 divides its rows of 64).
        let inits = Dictionary(uniqueKeysWithValues: m.graph.initializer.map { ($0.name, $0) })
        #expect(inits["Whead"]?.dataType == 1)
        #expect(inits["embedding"] == nil)
        #expect(inits["embedding_quantized"]?.dataType == 2 && inits["embedding_quantized"]?.dims == [100, 64])
        #expect(inits["embedding_scale"]?.dims == [100, 1])
        let g = try #require(m.graph.node.first { $0.opType == "GatherBlockQuantized" })
        #expect(attr(g, "bits") == 8 && attr(g, "block_size") == 64)
        #expect(inits["W1_quantized"]?.dataType == 3)
        #expect(inits["W1_quantized"]?.dims == [64, 128])
        #expect(inits["W1_scale"]?.dims == [128])
        #expect(inits["W1"] == nil)
        #expect(m.opsetImport.contains { $0.domain == "com.microsoft" && $0.version == 1 })
        #expect(report.form == "compute")
        #expect(report.operators == ["com.microsoft.DynamicQuantizeMatMul", "com.microsoft.GatherBlockQuantized"])
        #expect(report.dtype == "int8")
        #expect(report.tensorsChanged == 3)
        #expect(dir.entries == ["mlp.onnx", "out.onnx"])
    }

    /// int4 `mixed`: the embedding table (the bytes) in 4-bit GatherBlockQuantized, the MatMuls (the
    /// arithmetic) in int8 DynamicQuantizeMatMul; the variant counts as int4.
    @Test func int4MixedPutsTablesInInt4AndMatMulsInInt8() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let report = try build(dir, input, recipe("int4-mixed", [.int4Mixed(blockSize: 32)]))
        let m = try load(dir.file("out.onnx"))
        let inits = Dictionary(uniqueKeysWithValues: m.graph.initializer.map { ($0.name, $0) })
        let g = try #require(m.graph.node.first { $0.opType == "GatherBlockQuantized" })
        #expect(attr(g, "bits") == 4 && attr(g, "block_size") == 32)
        #expect(inits["embedding_quantized"]?.dataType == 21)  // UINT4
        #expect(m.graph.node.filter { $0.opType == "DynamicQuantizeMatMul" }.count == 2)
        #expect(inits["W1_quantized"]?.dataType == 3 && inits["W1_quantized"]?.dims == [64, 128])
        #expect(!m.graph.node.contains { $0.opType == "MatMul" || $0.opType == "MatMulNBits" })
        #expect(inits["Whead"]?.dataType == 1)
        #expect(m.irVersion >= 10)
        #expect(report.form == "compute")
        #expect(report.dtype == "int4")
        #expect(report.operators == ["com.microsoft.DynamicQuantizeMatMul", "com.microsoft.GatherBlockQuantized"])
        #expect(dir.entries == ["mlp.onnx", "out.onnx"])
    }

    @Test func int8StandardUsesOnlyStandardOperatorsAndSharesTheActivationQuantization() throws {
        let dir = try TempDir()
        var model = ONNXFixture.mlp()
        // A second MatMul reading x: one DynamicQuantizeLinear serves both.
        model.graph.initializer.append(ONNXFixture.tensor("W3", [64, 32], floats(64 * 32, seed: 11)))
        model.graph.node.append(ONNXFixture.node("MatMul", ["x", "W3"], ["side"]))
        model.graph.output.append(ONNXFixture.valueInfo("side", 1, [2, 32]))
        let input = try ONNXFixture.write(model, to: dir, "mlp.onnx")
        let report = try build(dir, input, recipe("int8-std", [.int8Dynamic(.standard)]))
        let m = try load(dir.file("out.onnx"))
        #expect(m.graph.node.allSatisfy { $0.domain.isEmpty })
        #expect(m.graph.initializer.first { $0.name == "embedding" }?.dataType == 1)  // no standard 8-bit gather: fp32
        #expect(!m.opsetImport.contains { $0.domain == "com.microsoft" })
        #expect(m.graph.node.filter { $0.opType == "MatMulInteger" }.count == 3)
        #expect(m.graph.node.filter { $0.opType == "DynamicQuantizeLinear" }.map(\.input) == [["x"], ["h"]])
        #expect(m.graph.node.contains { $0.opType == "Add" })  // the bias Add stays: no fused operator
        #expect(report.operators == ["Cast", "DynamicQuantizeLinear", "MatMulInteger", "Mul"])
    }

    /// x [2, 64] read by three MatMuls with biases, like attention's Q, K and V.
    static func siblings() -> Onnx_ModelProto {
        var m = ONNXFixture.mlp()
        for (i, name) in ["Wk", "Wv"].enumerated() {
            m.graph.initializer.append(ONNXFixture.tensor(name, [64, 128], floats(64 * 128, seed: 20 + UInt64(i))))
            m.graph.initializer.append(ONNXFixture.tensor(name + ".bias", [128], floats(128, seed: 30 + UInt64(i))))
            m.graph.node.append(ONNXFixture.node("MatMul", ["x", name], [name + "_mm"]))
            m.graph.node.append(ONNXFixture.node("Add", [name + "_mm", name + ".bias"], [name + "_out"]))
            m.graph.output.append(ONNXFixture.valueInfo(name + "_out", 1, [2, 128]))
        }
        return m
    }

    @Test func siblingMatMulsBecomeOneOperatorOverJoinedWeights() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(Self.siblings(), to: dir, "qkv.onnx")
        for (name, step, op) in [
            ("int8-dyn", Recipe.Step.int8Dynamic(.onnxruntime), "DynamicQuantizeMatMul"),
            ("int4-nbits", .int4MatMulNBits(blockSize: 32, accuracyLevel: 4), "MatMulNBits")
        ] {
            let report = try build(dir, input, recipe(name, [step]), out: name + ".onnx")
            let m = try load(dir.file(name + ".onnx"))
            let fused = m.graph.node.filter { $0.opType == op && $0.input[0] == "x" }
            #expect(fused.count == 1, "\(name)")
            let split = try #require(m.graph.node.first { $0.opType == "Split" }, "\(name)")
            #expect(split.input.first == fused.first?.output.first)
            #expect(split.output == ["h1", "Wk_out", "Wv_out"], "\(name)")
            #expect(
                m.graph.initializer.first { $0.name == split.input.last }?.rawData == [128, 128, 128].withUnsafeBytes { Data($0) } as Data?)
            if op == "MatMulNBits" { #expect(attr(fused[0], "N") == 384 && attr(fused[0], "K") == 64) }
            #expect(!m.graph.node.contains { $0.opType == "Add" }, "\(name)")
            #expect(report.operators?.contains("Concat") == true)
            #expect(report.tensorsChanged >= 4, "\(name)")
        }
    }

    @Test func int4MatMulNBitsLaysOutBlobsThatDecodeToTheWeights() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let report = try build(dir, input, recipe("int4-nbits", [.int4MatMulNBits(blockSize: 32, accuracyLevel: 4)]))
        let m = try load(dir.file("out.onnx"))
        let nb = m.graph.node.filter { $0.opType == "MatMulNBits" }
        #expect(nb.count == 2)
        let w1 = try #require(nb.first { $0.input[1] == "W1_quantized" })
        #expect(attr(w1, "K") == 64 && attr(w1, "N") == 128 && attr(w1, "bits") == 4)
        #expect(attr(w1, "block_size") == 32 && attr(w1, "accuracy_level") == 4)
        #expect(w1.input == ["x", "W1_quantized", "W1_scale", "W1_zero_point", "", "b1"])
        let g = try #require(m.graph.node.first { $0.opType == "GatherBlockQuantized" })
        #expect(g.input == ["embedding_quantized", "ids", "embedding_scale", "embedding_zero_point"])
        #expect(attr(g, "quantize_axis") == 1 && attr(g, "gather_axis") == 0 && attr(g, "block_size") == 32)
        #expect(m.irVersion >= 10)
        #expect(m.opsetImport.first { $0.domain.isEmpty }?.version == 14)  // no opset-21 upgrade for compute forms
        let inits = Dictionary(uniqueKeysWithValues: m.graph.initializer.map { ($0.name, $0) })
        #expect(inits["W1_quantized"]?.dims == [128, 2, 16])
        #expect(inits["W1_quantized"]?.dataType == 2)
        #expect(inits["W1_scale"]?.dims == [128, 2])
        #expect(inits["W1_zero_point"]?.dims == [128, 1])
        #expect(inits["embedding_quantized"]?.dataType == 21)
        #expect(inits["embedding_scale"]?.dims == [100, 2])

        // Decode B the way MatMulNBits does: column n, block b, element j of the block = W[b·32 + j, n].
        let w = floats(64 * 128, seed: 7)
        let q = Array(inits["W1_quantized"]!.rawData),
            s = inits["W1_scale"]!.rawData.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let z = Array(inits["W1_zero_point"]!.rawData)
        var worst: Double = 0
        for n in 0..<128 {
            for k in 0..<64 {
                let byte = q[n * 32 + k / 2], nibble = Float(k % 2 == 0 ? byte & 0x0F : byte >> 4)
                let zp = Float((z[n] >> (k / 32 == 0 ? 0 : 4)) & 0x0F)
                let scale = s[n * 2 + k / 32]
                worst = max(worst, Double(abs((nibble - zp) * scale - w[k * 128 + n])))
            }
        }
        // Decoded this way, the largest error is the one the encoder measured: the layout is MatMulNBits'.
        let measured = try #require(report.tensors.first { $0.name == "W1" }?.maxAbsError)
        #expect(abs(worst - measured) < 1e-6)
        #expect(worst < 0.05)
        #expect(report.operators == ["com.microsoft.GatherBlockQuantized", "com.microsoft.MatMulNBits"])
        #expect(report.tensors.first { $0.name == "Whead" }?.changed == false)  // Gemm: kept fp32
    }

    @Test func smoothingInsertsOneMulPerActivationAndScalesTheWeightRows() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        var x = [Float](repeating: 0.5, count: 64)
        x[3] = 40  // an outlier channel
        let ranges = ActivationRanges(absmax: ["x": x], samples: 4)
        let r = try Recipe(name: "int8-smooth", steps: [.smooth(alpha: 0.5, minGain: 1), .int8Dynamic(.onnxruntime)])
        let report = try build(dir, input, r, calibration: ranges)
        let m = try load(dir.file("out.onnx"))
        let mul = try #require(m.graph.node.first { $0.opType == "Mul" && $0.input.first == "x" })
        let mulIndex = m.graph.node.firstIndex { $0.output == mul.output }!
        let reader = m.graph.node.firstIndex { $0.opType == "DynamicQuantizeMatMul" && $0.input[0] == mul.output[0] }
        #expect(reader != nil && reader! > mulIndex)
        let inverse = try #require(m.graph.initializer.first { $0.name == mul.input[1] })
        #expect(inverse.dims == [64])
        let inv = inverse.rawData.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        #expect(inv[3] < inv[0])  // the outlier channel is divided the most
        // h has no calibration range: its MatMul is quantized unsmoothed.
        #expect(!m.graph.node.contains { $0.opType == "Mul" && $0.input.first == "h" })
        #expect(report.tensors.first { $0.name == "W1" }?.encoding.hasPrefix("smoothed") == true)
        #expect(report.tensors.first { $0.name == "W2" }?.encoding.hasPrefix("smoothed") == false)
        #expect(report.notes.contains { $0.contains("smoothed") && $0.contains("before 1 of 2 MatMul groups") })
    }

    @Test func smoothingWithoutCalibrationSaysSo() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let r = try Recipe(name: "int8-smooth", steps: [.smooth(alpha: 0.7, minGain: 1), .int8Dynamic(.onnxruntime)])
        let report = try build(dir, input, r)
        #expect(report.notes.contains { $0.contains("not smoothed") })
        #expect(!(try load(dir.file("out.onnx"))).graph.node.contains { $0.opType == "Mul" })
    }

    @Test func aFailingCalibratorLeavesNoVariant() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let r = try Recipe(name: "int8-smooth", steps: [.smooth(alpha: 0.7, minGain: 1), .int8Dynamic(.onnxruntime)])
        for cmd in [
            "false", "echo nothing", "echo '{\"samples\": 2, \"activations\": {\"x\": [1, -2]}}'",
            "echo '{\"samples\": 0, \"activations\": {}}'"
        ] {
            #expect(compressionErrorCode { _ = try build(dir, input, r, calibrator: cmd) } == .evaluator, "\(cmd)")
            #expect(dir.entries == ["mlp.onnx"], "\(cmd)")
        }
    }

    @Test func computeFormsRefuseSafetensors() throws {
        let dir = try TempDir()
        let input = try dir.write("m.safetensors", SafetensorsFixture.small())
        for step in [Recipe.Step.int8Dynamic(.onnxruntime), .int4MatMulNBits(blockSize: 32, accuracyLevel: 4), .int4Mixed(blockSize: 64)] {
            #expect(compressionErrorCode { _ = try build(dir, input, recipe("c", [step]), out: "out.safetensors") } == .unsupportedFormat)
            #expect(dir.entries == ["m.safetensors"])
        }
    }

    @Test func storageOnlyFormsAreReportedAsSuch() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let report = try build(dir, input, recipe("int8", [.int8(.perChannel)]))
        #expect(report.form == "storage-only")
        #expect(report.operators == nil)
        #expect(report.notes.contains { $0.hasPrefix("storage-only") })
    }

    /// The variants load and run in onnxruntime unchanged, and agree with the base.
    @Test func computeVariantsRunInOnnxruntime() throws {
        guard Venv.available() else { return }
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        // Timing (one round) and the joined form on one int8 and one int4 case: the test stays short.
        let cases: [(String, [Recipe.Step], Double, Bool)] = [
            ("int8-dyn", [.int8Dynamic(.onnxruntime)], 0.995, true),
            ("int8-std", [.int8Dynamic(.standard)], 0.995, false),
            ("int8-smooth", [.smooth(alpha: 0.7, minGain: 1), .int8Dynamic(.onnxruntime)], 0.995, false),
            ("int4-nbits", [.int4MatMulNBits(blockSize: 32, accuracyLevel: 4)], 0.95, true),
            ("int4-nbits-acc0", [.int4MatMulNBits(blockSize: 64, accuracyLevel: 0)], 0.95, false),
            ("int4-mixed", [.smooth(alpha: 0.7, minGain: 1), .int4Mixed(blockSize: 32)], 0.95, false)
        ]
        let joined = try ONNXFixture.write(Self.siblings(), to: dir, "qkv.onnx")
        for (name, steps, floor, full) in cases {
            let r = try build(
                dir, input, try Recipe(name: name, steps: steps), out: name + ".onnx",
                evaluator: full ? Venv.timingEvaluator : Venv.evaluator, calibrator: Venv.calibrator)
            let e = try #require(r.evaluation, "\(name)")
            #expect(e.meanCosine >= floor, "\(name): \(e.meanCosine)")
            guard full else { continue }
            // The joined form too (Concat of initializers, folded by onnxruntime at load).
            let j = try build(dir, joined, try Recipe(name: name, steps: steps), out: name + "-joined.onnx", evaluator: Venv.evaluator)
            #expect((j.evaluation?.meanCosine ?? 0) >= floor, "\(name) joined: \(j.evaluation?.meanCosine ?? 0)")
            let speed = try #require(e.speed, "\(name)")
            #expect(speed.timings.contains { $0.threads == 1 }, "\(name)")
            #expect((speed.variantPeakBytes ?? 0) > 0 && (speed.basePeakBytes ?? 0) > 0, "\(name)")
            #expect(speed.cpu?.architecture.isEmpty == false, "\(name)")
        }
    }
}

@Suite(.ownThread) struct EvaluatorTests {
    @Test func speedIsParsedAndCheckedWhole() throws {
        let ok = """
            {"samples": 3, "mean_cosine": 0.99, "min_cosine": 0.98, "speed": {"batch": 1, "runs": 10,
             "timings": [{"threads": 1, "baseMedianMs": 3, "baseP95Ms": 4, "variantMedianMs": 1.5, "variantP95Ms": 2, "speedup": 2}],
             "cpu": {"model": "x", "architecture": "x86_64", "cores": 2, "flags": ["avx2"]}}}
            """
        let e = try Evaluator.parse(Data(ok.utf8), command: "c")
        #expect(e.speed?.singleThread?.speedup == 2)
        #expect(e.speed?.cpu?.flags == ["avx2"])
        for bad in [
            #"{"samples": 3, "mean_cosine": 0.99, "min_cosine": 0.98, "speed": {"batch": 1}}"#,
            #"{"samples": 3, "mean_cosine": 0.99, "min_cosine": 0.98, "speed": {"batch": 1, "runs": 1, "timings": [{"threads": 1, "baseMedianMs": 0, "baseP95Ms": 0, "variantMedianMs": 1, "variantP95Ms": 1, "speedup": 0}]}}"#
        ] {
            #expect(compressionErrorCode { _ = try Evaluator.parse(Data(bad.utf8), command: "c") } == .evaluator)
        }
    }

    @Test func evaluatorErrorsArriveWholeAndWithoutTerminalCodes() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let long = String(repeating: "x", count: 5000)
        let script = try dir.write("eval.sh", Array("printf '\\033[1;31mERROR\\033[0m start \(long) end-of-message\\n' >&2; exit 3".utf8))
        var caught: CompressionError?
        do {
            _ = try VariantBuilder.build(
                .init(
                    input: input, output: dir.file("out.onnx"), recipe: recipe("int8", [.int8(.perChannel)]),
                    evaluator: "sh '\(script)'"))
        } catch {
            caught = error
        }
        let e = try #require(caught)
        #expect(e.code == .evaluator)
        #expect(!e.message.contains("\u{1B}"))
        #expect(e.message.contains("ERROR start"))
        #expect(e.message.contains("end-of-message"))
        #expect(dir.entries == ["eval.sh", "mlp.onnx"])
    }

    /// A standard BERT export takes token_type_ids, indexing a 2-row table: synthetic inputs must stay
    /// inside every table, and operator inputs lacking it are completed as a tokenizer would.
    @Test func theDefaultEvaluatorRespectsEachInputsVocabulary() throws {
        guard Venv.available() else { return }
        let dir = try TempDir()
        let model = try ONNXFixture.write(ONNXFixture.bertLike(), to: dir, "bert.onnx")
        let r = try VariantBuilder.build(
            .init(
                input: model, output: dir.file("v.onnx"), recipe: recipe("int8", [.int8(.perChannel)]),
                zstdLevel: nil, evaluator: Venv.evaluator))
        #expect((r.evaluation?.meanCosine ?? 0) > 0.99)
        // Operator samples with only input_ids and attention_mask.
        var out = ""
        let npz = dir.file("samples.npz")
        #expect(
            Venv.run(
                [
                    Venv.python, "-c",
                    "import numpy as np, sys; np.savez(sys.argv[1], input_ids=np.array([[5, 900, 17, 0]]), attention_mask=np.array([[1, 1, 1, 0]]))",
                    npz
                ], output: &out) == 0, "\(out)")
        let e = try Evaluator.run(
            command: "EDGEFLEET_GOLDEN_INPUTS='\(npz)' \(Venv.evaluator)", base: model, variant: dir.file("v.onnx"), format: "onnx")
        #expect(e.samples == 1)
    }
}
