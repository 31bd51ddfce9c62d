import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import FleetController

/// `POST /v1/models/{m}/variants/build` and `GET /v1/models/{m}/variants/{v}`: variants built on the
/// controller from the fp32 reference, registered with lineage and their report.
@Suite("Variant builds")
struct VariantBuildRouteTests {
    /// A two-layer model as safetensors (fp32 weights, a bias, an integer tensor).
    static var model: [UInt8] {
        func floats(_ n: Int, _ seed: UInt32) -> [UInt8] {
            var x = seed
            let f: [Float] = (0..<n).map { _ in
                x = x &* 1_664_525 &+ 1_013_904_223; return Float(Int32(bitPattern: x)) / Float(Int32.max) * 0.1
            }
            return f.withUnsafeBytes { Array($0) }
        }
        let tensors: [(String, String, [Int], [UInt8])] = [
            ("l0.weight", "F32", [64, 64], floats(64 * 64, 1)), ("l0.bias", "F32", [64], floats(64, 2)),
            ("l1.weight", "F32", [32, 64], floats(32 * 64, 3)), ("steps", "I64", [1], [UInt8](repeating: 0, count: 8))
        ]
        var offset = 0
        var entries: [String] = []
        for (n, d, s, b) in tensors {
            entries.append(
                "\"\(n)\":{\"dtype\":\"\(d)\",\"shape\":[\(s.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + b.count)]}"
            )
            offset += b.count
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var out = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
        for t in tensors { out += t.3 }
        return out
    }

    @Test func buildsRegistersAndReportsEachRecipe() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            try await client.json(.post, "/v1/models", NewModel(name: "m", minQuality: 0.99))
            let up = try await client.execute(uri: "/v1/artifacts", method: .put, body: ByteBuffer(bytes: Self.model))
            let art = try decode(ArtifactInfo.self, up)
            let base = CatalogVariant(
                name: "m-fp32", sha256: art.sha256, size: art.size, fileName: "m.safetensors", format: "safetensors", dtype: "fp32")
            #expect(try await client.json(.post, "/v1/models/m/variants", NewVariant(variant: base)).status == .created)

            let r = try await client.json(.post, "/v1/models/m/variants/build", VariantBuildRequest(recipes: ["int8", "fp16"]))
            #expect(r.status == .created)
            let built = try decode([VariantDetail].self, r)
            #expect(built.map(\.variant.variant.name) == ["m-fp32-int8", "m-fp32-fp16"])
            #expect(built.map(\.variant.variant.dtype) == ["int8", "fp16"])
            let int8 = built[0]
            #expect(int8.variant.variant.lineage?.derivedFrom == "m-fp32")
            #expect(int8.variant.variant.lineage?.derivedFromSha256 == art.sha256)
            #expect(int8.variant.variant.lineage?.recipe == "int8")
            #expect(int8.variant.variant.lineage?.technique == "quantization")
            #expect(int8.report?.tensorsChanged == 2)
            #expect(int8.report?.output.sha256 == int8.variant.variant.sha256)
            // No evaluator configured here: the quality stays unmeasured, and the floor keeps it from devices.
            #expect(int8.variant.quality == nil)
            #expect(!Candidate(variant: int8.variant.variant).isReference)

            // The artifact is stored and the report comes back with the variant.
            let art8 = try await client.execute(uri: "/v1/artifacts/\(int8.variant.variant.sha256)", method: .get)
            #expect(art8.status == .ok)
            #expect(Int64(art8.body.readableBytes) == int8.variant.variant.size)
            let shown = try decode(VariantDetail.self, try await client.execute(uri: "/v1/models/m/variants/m-fp32-int8", method: .get))
            #expect(shown.report == int8.report)
            let ref = try decode(VariantDetail.self, try await client.execute(uri: "/v1/models/m/variants/m-fp32", method: .get))
            #expect(ref.report == nil)

            // Building the same recipe again is a conflict; unknown recipes and bases are refused before any work.
            #expect(try await client.json(.post, "/v1/models/m/variants/build", VariantBuildRequest(recipes: ["int8"])).status == .conflict)
            let unknown = try await client.json(.post, "/v1/models/m/variants/build", VariantBuildRequest(recipes: ["int3"]))
            #expect(errorCode(unknown) == "unknown-recipe")
            let noBase = try await client.json(
                .post, "/v1/models/m/variants/build", VariantBuildRequest(base: "nope", recipes: ["int4-b32"]))
            #expect(errorCode(noBase) == "unknown-variant")
            let variants = try decode([VariantInfo].self, try await client.execute(uri: "/v1/models/m/variants", method: .get))
            #expect(variants.count == 3)
        }
    }

    @Test func aReportUploadedWithAVariantIsStored() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            try await client.json(.post, "/v1/models", NewModel(name: "m"))
            let art = try decode(
                ArtifactInfo.self, try await client.execute(uri: "/v1/artifacts", method: .put, body: ByteBuffer(bytes: Self.model)))
            let v = CatalogVariant(
                name: "student", sha256: art.sha256, size: art.size, fileName: "s.safetensors", format: "safetensors",
                dtype: "fp32", lineage: Lineage(derivedFrom: "teacher", technique: "distillation", meanCosine: 0.97))
            let eval = VariantReport.Evaluation(evaluator: "x", samples: 8, meanCosine: 0.97, minCosine: 0.9, top1Agreement: 0.8)
            let report = VariantReport(
                tool: "t", toolVersion: "1", recipe: "distillation", steps: ["distillation"], technique: "distillation",
                dtype: "fp32", input: .init(path: "teacher", format: "safetensors", bytes: 100),
                output: .init(path: "s", format: "safetensors", bytes: 50), zstdLevel: nil, compressionRatio: 2,
                compressedRatio: nil, tensorsChanged: 0, tensorsKept: 0, worstRelativeL2: nil, meanSnrDb: nil,
                sparsity: nil, overflow: 0, tensors: [], evaluation: eval, notes: [])
            #expect(
                try await client.json(.post, "/v1/models/m/variants", NewVariant(variant: v, quality: 0.97, report: report)).status
                    == .created)
            let shown = try decode(VariantDetail.self, try await client.execute(uri: "/v1/models/m/variants/student", method: .get))
            #expect(shown.report == report)
            #expect(shown.variant.variant.lineage?.technique == "distillation")
            #expect(shown.variant.quality == 0.97)
        }
    }
}
