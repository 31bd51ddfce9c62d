import Foundation
import SwiftProtobuf
import Testing
import TestSupport
@testable import FleetCompression
import FleetCore

/// Variants of small generated graphs: what the output file contains, and that onnxruntime runs it.
@Suite(.ownThread) struct BuildTests {
    func build(_ dir: TempDir, _ input: String, _ r: Recipe, out: String = "out.onnx", evaluate: Bool = false) throws -> VariantReport {
        try VariantBuilder.build(
            .init(
                input: input, output: dir.file(out), recipe: r, zstdLevel: 3,
                evaluator: evaluate ? Venv.evaluator : nil))
    }

    func load(_ path: String) throws -> Onnx_ModelProto {
        try Onnx_ModelProto(serializedBytes: Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    @Test func int8WritesDequantizeLinearPerOutputChannel() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let report = try build(dir, input, recipe("int8", [.int8(.perChannel)]))
        let m = try load(dir.file("out.onnx"))
        let dq = m.graph.node.filter { $0.opType == "DequantizeLinear" }
        #expect(Set(dq.flatMap(\.output)) == ["W1", "W2", "Whead", "embedding"])
        func axis(_ name: String) -> Int64? { dq.first { $0.output == [name] }?.attribute.first { $0.name == "axis" }?.i }
        #expect(axis("W1") == 1)  // MatMul B [K, N]: per output column
        #expect(axis("Whead") == 0)  // Gemm transB: B is [N, K]
        #expect(axis("embedding") == 0)  // Gather rows
        let inits = Dictionary(uniqueKeysWithValues: m.graph.initializer.map { ($0.name, $0) })
        #expect(inits["W1_quantized"]?.dataType == 3)
        #expect(inits["W1_scale"]?.dims == [128])
        #expect(inits["b1"]?.dataType == 1)  // bias left alone
        #expect(inits["ids"]?.dataType == 7)  // integer left alone
        #expect(inits["W1"] == nil)
        #expect(report.tensorsChanged == 4)
        #expect(report.tensorsKept == 2)
        #expect(report.dtype == "int8")
        #expect(report.output.bytes < report.input.bytes / 3)
        #expect(report.output.zstdBytes != nil)
        #expect(dir.entries == ["mlp.onnx", "out.onnx"])
        let kept = report.tensors.first { $0.name == "b1" }
        #expect(kept?.changed == false)
        #expect(kept?.encoding.contains("fewer than 2 dimensions") == true)
    }

    @Test func int4RaisesTheOpsetAndAdaptsReduceMean() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(opset: 14), to: dir, "mlp.onnx")
        let report = try build(dir, input, recipe("int4", [.int4(blockSize: 32)]))
        let m = try load(dir.file("out.onnx"))
        #expect(m.opsetImport.first?.version == 21)
        #expect(m.irVersion >= 10)
        let reduce = m.graph.node.first { $0.opType == "ReduceMean" }!
        #expect(reduce.attribute.contains { $0.name == "axes" } == false)
        #expect(reduce.input.count == 2)
        let dq = m.graph.node.first { $0.output == ["W1"] }!
        #expect(dq.input.count == 3)
        #expect(dq.attribute.first { $0.name == "block_size" }?.i == 32)
        #expect(dq.attribute.first { $0.name == "axis" }?.i == 0)
        #expect(m.graph.initializer.first { $0.name == "W1_quantized" }?.dataType == 21)
        #expect(report.notes.contains { $0.contains("opset raised") })
    }

    @Test func int8RefusesAnOpsetWithoutPerChannelDequantize() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(opset: 11), to: dir, "mlp.onnx")
        #expect(compressionErrorCode { _ = try build(dir, input, recipe("int8", [.int8(.perChannel)])) } == .unsupportedOpset)
        #expect(compressionErrorCode { _ = try build(dir, input, recipe("int4", [.int4(blockSize: 32)])) } == .unsupportedOpset)
        #expect(dir.entries == ["mlp.onnx"])
        // Per-tensor needs only opset 10.
        _ = try build(dir, input, recipe("int8pt", [.int8(.perTensor)]))
    }

    @Test func protectedAndSmallTensorsAreKept() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let report = try build(
            dir, input, recipe("p", [.prune(sparsity: 0.5, scope: .perLayer)], protect: ["embeddings", "last", "^W2$"], minElements: 4096))
        let byName = Dictionary(uniqueKeysWithValues: report.tensors.map { ($0.name, $0) })
        #expect(byName["embedding"]?.changed == false)  // read by Gather
        #expect(byName["Whead"]?.changed == false)  // the last weight read in the graph (and < 4096 elements)
        #expect(byName["W2"]?.encoding.contains("pattern") == true)
        #expect(byName["W1"]?.changed == true)
        #expect(abs((byName["W1"]?.sparsity ?? 0) - 0.5) < 0.001)
        let m = try load(dir.file("out.onnx"))
        #expect(m.graph.node.count == ONNXFixture.mlp().graph.node.count)  // pruning adds no node
    }

    @Test func globalPruningHitsTheTargetOverAllPrunedTensors() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let report = try build(dir, input, recipe("g", [.prune(sparsity: 0.4, scope: .global)]))
        #expect(abs((report.sparsity ?? 0) - 0.4) < 0.001)
    }

    @Test func externalDataIsReadAndWrittenInline() throws {
        let dir = try TempDir()
        var m = ONNXFixture.mlp()
        let w1 = m.graph.initializer[0]
        try dir.write("weights.bin", [UInt8](repeating: 0, count: 16) + Array(w1.rawData))
        var ext = w1
        ext.clearRawData()
        ext.dataLocation = .external
        ext.externalData = [kv("location", "weights.bin"), kv("offset", "16"), kv("length", "\(w1.rawData.count)")]
        m.graph.initializer[0] = ext
        let input = try ONNXFixture.write(m, to: dir, "ext.onnx")
        let report = try build(dir, input, recipe("fp16", [.fp16]))
        #expect(report.tensors.first { $0.name == "W1" }?.changed == true)
        let out = try load(dir.file("out.onnx"))
        #expect(out.graph.initializer.allSatisfy { $0.dataLocation == .default && $0.externalData.isEmpty })
        #expect(out.graph.initializer.first { $0.name == "W1_fp16" }?.rawData.count == 64 * 128 * 2)
    }

    @Test func weightsInFloatDataAreReadLikeRawData() throws {
        let dir = try TempDir()
        var m = ONNXFixture.mlp()
        let raw = m.graph.initializer[0].rawData
        m.graph.initializer[0].clearRawData()
        m.graph.initializer[0].floatData = raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let a = try build(dir, try ONNXFixture.write(m, to: dir, "floatdata.onnx"), recipe("int8", [.int8(.perChannel)]), out: "a.onnx")
        let b = try build(
            dir, try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "raw.onnx"), recipe("int8", [.int8(.perChannel)]), out: "b.onnx")
        #expect(a.tensors.first { $0.name == "W1" } == b.tensors.first { $0.name == "W1" })
        let qa = try load(dir.file("a.onnx")).graph.initializer.first { $0.name == "W1_quantized" }
        let qb = try load(dir.file("b.onnx")).graph.initializer.first { $0.name == "W1_quantized" }
        #expect(qa != nil && qa?.rawData == qb?.rawData)
    }

    @Test func safetensorsVariantsKeepNamesAndDescribeTheirEncoding() throws {
        let dir = try TempDir()
        let input = try dir.write("m.safetensors", SafetensorsFixture.small())
        let report = try build(dir, input, recipe("int4", [.int4(blockSize: 32)]), out: "out.safetensors")
        let st = try SafetensorsModel(path: dir.file("out.safetensors"))
        let names = Set(st.tensors.map(\.name))
        #expect(
            names == [
                "layers.0.weight", "layers.0.weight_scale", "layers.0.weight_zero_point", "layers.0.bias",
                "layers.1.weight", "layers.1.weight_scale", "layers.1.weight_zero_point", "steps"
            ])
        let packed = try #require(st.tensors.first { $0.name == "layers.0.weight" })
        #expect(packed.length == Int64(64 * 96 / 2))
        #expect(packed.dtype == .u8)
        #expect(st.metadata["format"] == "pt")
        #expect(st.metadata["edgefleet.recipe"] == "int4")
        let enc = try JSONSerialization.jsonObject(with: Data(st.metadata["edgefleet.encoding"]!.utf8)) as! [String: [String: Any]]
        #expect(enc["layers.0.weight"]?["block_size"] as? Int == 32)
        #expect(report.tensorsChanged == 2)
        // The bias and the integer tensor come through byte for byte.
        let a = try SafetensorsModel(path: input)
        for name in ["layers.0.bias", "steps"] {
            let x = a.tensors.first { $0.name == name }!, y = st.tensors.first { $0.name == name }!
            #expect(try x.file.read(at: x.offset, count: Int(x.length)) == y.file.read(at: y.offset, count: Int(y.length)))
        }
    }

    @Test func everyRecipeOfTheShippedFileRunsInOnnxruntime() throws {
        guard Venv.available() else { return }
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let book = try RecipeBook.load(path: Venv.repo + "/fleet/recipes.yaml")
        for name in book.names {
            let report = try build(dir, input, try book.recipe(name), out: "\(name).onnx", evaluate: true)
            let e = try #require(report.evaluation, "\(name)")
            #expect(e.samples == 2, "\(name)")
            #expect(e.meanCosine > 0.3, "\(name): \(e.meanCosine)")
            if name == "fp16" { #expect(e.meanCosine > 0.99999) }
            if name == "int8" { #expect(e.meanCosine > 0.999) }
        }
    }

    @Test func aFailingEvaluatorLeavesNoVariant() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        for cmd in [
            "false", "echo not-json", "echo '{\"samples\": 0, \"mean_cosine\": 1, \"min_cosine\": 1}'",
            "echo '{\"samples\": 3, \"mean_cosine\": 7, \"min_cosine\": 1}'"
        ] {
            let code = compressionErrorCode {
                _ = try VariantBuilder.build(
                    .init(input: input, output: dir.file("out.onnx"), recipe: recipe("int8", [.int8(.perChannel)]), evaluator: cmd))
            }
            #expect(code == .evaluator, "\(cmd)")
            #expect(dir.entries == ["mlp.onnx"], "\(cmd)")
        }
        // A custom evaluator is run as CMD BASE VARIANT, with the format in the environment.
        let script = try dir.write(
            "eval.sh",
            Array(
                """
                test "$EDGEFLEET_FORMAT" = onnx && test "$1" = "$EDGEFLEET_BASE" && test -s "$1" && test -s "$2" || exit 9
                echo progress on stdout that is not the result
                echo '{"samples": 4, "mean_cosine": 0.5, "min_cosine": 0.25, "top1_agreement": 1}'
                """.utf8))
        let r = try VariantBuilder.build(
            .init(
                input: input, output: dir.file("out.onnx"), recipe: recipe("int8", [.int8(.perChannel)]),
                evaluator: "sh '\(script)'"))
        #expect(
            r.evaluation
                == VariantReport.Evaluation(
                    evaluator: r.evaluation!.evaluator, samples: 4, meanCosine: 0.5, minCosine: 0.25, top1Agreement: 1))
        #expect(r.notes.contains { $0.contains("poor") })
    }

    @Test func aDistilledStudentIsMeasuredAgainstItsTeacher() throws {
        guard Venv.available() else { return }
        let dir = try TempDir()
        let teacher = try ONNXFixture.write(ONNXFixture.mlp(seed: 7), to: dir, "teacher.onnx")
        let same = try ONNXFixture.write(ONNXFixture.mlp(seed: 7), to: dir, "same.onnx")
        let other = try ONNXFixture.write(ONNXFixture.mlp(seed: 99), to: dir, "student.onnx")
        let r = try DerivedVariantReport.measure(teacher: teacher, student: same, technique: "distillation", evaluator: Venv.evaluator)
        #expect(r.technique == "distillation")
        #expect((r.evaluation?.meanCosine ?? 0) > 0.99999)
        #expect(r.tensors.isEmpty)
        let s = try DerivedVariantReport.measure(teacher: teacher, student: other, technique: "architecture", evaluator: Venv.evaluator)
        #expect((s.evaluation?.meanCosine ?? 1) < 0.99)
        #expect(
            compressionErrorCode {
                _ = try DerivedVariantReport.measure(teacher: teacher, student: other, technique: "magic", evaluator: "true")
            } == .recipe)
    }

    private func kv(_ k: String, _ v: String) -> Onnx_StringStringEntryProto {
        var e = Onnx_StringStringEntryProto(); e.key = k; e.value = v; return e
    }
}
