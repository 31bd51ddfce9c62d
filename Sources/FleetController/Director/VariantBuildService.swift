import FleetCompression
import FleetCore
import Foundation
import Logging

/// Builds compressed variants on the controller: from a model's base variant (its fp32 reference
/// unless named), one per recipe of the configuration's recipes.yaml, each stored as an artifact and
/// registered with its lineage and quality report. The evaluator, when configured, measures output
/// agreement; without one a variant's quality stays unmeasured, and a model with a quality floor
/// will not choose it.
struct VariantBuildService: Sendable {
    let store: any FleetStore
    let artifacts: ArtifactStore
    let recipesFile: String
    /// A command run as `CMD BASE VARIANT` (see FleetCompression.Evaluator); from $EDGEFLEET_EVALUATOR.
    let evaluator: String?
    let logger: Logger
    let clock: @Sendable () -> Int64

    struct Failure: Error {
        let error: CompressionError
        let recipe: String
    }

    func build(model: String, _ request: VariantBuildRequest) async throws -> [VariantDetail] {
        guard try await store.model(model) != nil else { throw APIError(.notFound, "unknown-model", "no model \(model)") }
        guard !request.recipes.isEmpty else { throw APIError(.badRequest, "no-recipes", "name at least one recipe") }
        let variants = try await store.variants(model: model)
        let base: VariantRecord
        if let name = request.base {
            guard let v = variants.first(where: { $0.variant.name == name }) else {
                throw APIError(.notFound, "unknown-variant", "model \(model) has no variant \(name)")
            }
            base = v
        } else {
            guard let v = variants.first(where: { Candidate(variant: $0.variant).isReference }) else {
                throw APIError(.unprocessableContent, "no-reference", "model \(model) has no fp32 reference variant; name one with base")
            }
            base = v
        }
        guard let basePath = artifacts.path(base.variant.sha256), FileManager.default.fileExists(atPath: basePath) else {
            throw APIError(.unprocessableContent, "unknown-artifact", "the artifact of \(base.variant.name) is missing")
        }
        let book: RecipeBook
        do { book = try RecipeBook.load(path: recipesFile) } catch { throw APIError(.unprocessableContent, "recipe", "\(error)") }
        var recipes: [Recipe] = []
        for name in request.recipes {
            do { recipes.append(try book.recipe(name)) } catch { throw APIError(.badRequest, "unknown-recipe", error.description) }
            let variantName = "\(base.variant.name)-\(name)"
            guard Name.isValid(variantName) else {
                throw APIError(.badRequest, "invalid-name", "'\(variantName)' is not a valid variant name")
            }
            if variants.contains(where: { $0.variant.name == variantName }) {
                throw APIError(.conflict, "conflict", "variant \(variantName) of \(model) already exists")
            }
        }

        var out: [VariantDetail] = []
        for r in recipes {
            let ext = base.variant.format == "onnx" ? "onnx" : "safetensors"
            let name = "\(base.variant.name)-\(r.name)"
            // The base artifact has no extension; the builder reads it by its registered format.
            let work = artifacts.root + "/incoming/build-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: work) }
            let input = work + "/base.\(ext)"
            try FileManager.default.createSymbolicLink(atPath: input, withDestinationPath: basePath)
            let output = work + "/\(name).\(ext)"
            logger.info("building variant", metadata: ["model": "\(model)", "variant": "\(name)", "recipe": "\(r.name)"])
            let report = try await runBlocking { () throws -> VariantReport in
                do {
                    return try VariantBuilder.build(.init(input: input, output: output, recipe: r, zstdLevel: 3, evaluator: evaluator))
                } catch let e as CompressionError {
                    throw APIError(.unprocessableContent, "variant-build-\(e.code.rawValue)", "recipe \(r.name): \(e.description)")
                }
            }
            let info = try artifacts.adopt(file: output)
            let lineage = Lineage(
                derivedFrom: base.variant.name, derivedFromSha256: base.variant.sha256, technique: r.technique,
                recipe: r.name, tool: VariantBuilder.tool, toolVersion: VariantBuilder.toolVersion,
                meanCosine: report.evaluation?.meanCosine, minCosine: report.evaluation?.minCosine)
            let v = CatalogVariant(
                name: name, sha256: info.sha256, size: info.size, fileName: "\(name).\(ext)", format: base.variant.format,
                dtype: report.dtype, requires: base.variant.requires, attributes: base.variant.attributes, lineage: lineage)
            let record = VariantRecord(model: model, variant: v, quality: report.quality, createdAt: clock())
            try await store.addVariant(record)
            try await store.saveVariantReport(model: model, variant: name, report)
            out.append(
                VariantDetail(
                    variant: VariantInfo(model: model, variant: v, quality: report.quality, createdAt: record.createdAt),
                    report: report))
        }
        return out
    }

    /// Runs CPU- and disk-bound work off the cooperative thread pool.
    private func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
            }
        }
    }
}
