import Testing
@testable import FleetCompression

@Suite struct RecipeTests {
    @Test func theShippedRecipeFileParses() throws {
        let book = try RecipeBook.load(path: Venv.repo + "/fleet/recipes.yaml")
        #expect(try book.recipe("int8").steps == [.int8(.perChannel)])
        #expect(try book.recipe("int4-b32").steps == [.int4(blockSize: 32)])
        #expect(try book.recipe("fp16").steps == [.fp16])
        #expect(try book.recipe("prune30-int8").steps == [.prune(sparsity: 0.3, scope: .perLayer), .int8(.perChannel)])
        #expect(try book.recipe("prune50-global").steps == [.prune(sparsity: 0.5, scope: .global)])
        #expect(try book.recipe("prune50").protect == ["embeddings", "layernorm", "last"])
        #expect(try book.recipe("ternary").experimental)
        #expect(try book.recipe("prune30-int8").technique == "combined")
        #expect(try book.recipe("int4-b64").dtype(base: "fp32") == "int4")
        #expect(try book.recipe("prune50").dtype(base: "fp32") == "fp32")
        #expect(try book.recipe("int8-dyn").steps == [.int8Dynamic(.onnxruntime)])
        #expect(try book.recipe("int8-dyn-std").steps == [.int8Dynamic(.standard)])
        #expect(try book.recipe("int8-dyn-smooth").steps == [.smooth(alpha: 0.7, minGain: 5), .int8Dynamic(.onnxruntime)])
        #expect(try book.recipe("int4-nbits-b32").steps == [.int4MatMulNBits(blockSize: 32, accuracyLevel: 4)])
        #expect(try book.recipe("int4-nbits-b32").form == "compute")
        #expect(try book.recipe("int4-mixed-b64").steps == [.smooth(alpha: 0.7, minGain: 5), .int4Mixed(blockSize: 64)])
        #expect(try book.recipe("int4-mixed-b64").dtype(base: "fp32") == "int4")
        #expect(try book.recipe("fp32-pruned-ffn25").steps == [.prune(sparsity: 0.25, scope: .ffnNeurons)])
        #expect(try book.recipe("fp32-pruned-ffn25").form == "compute")
        #expect(try book.recipe("int8-dyn-pruned-ffn25").steps == [.prune(sparsity: 0.25, scope: .ffnNeurons), .int8Dynamic(.onnxruntime)])
        #expect(try book.recipe("int8").form == "storage-only")
        #expect(try book.recipe("int8-dyn-smooth").needsCalibration)
        #expect(try book.recipe("int8-mixed").steps == [.mixed(minCosine: 0.996, alpha: 0.7), .fuseLayerNorm, .int8Dynamic(.onnxruntime)])
        #expect(try book.recipe("int8-mixed").needsCalibration)
        #expect(try book.recipe("int8-mixed").form == "compute")
        // Names start with their number format.
        for name in book.names where try book.recipe(name).technique == "quantization" {
            let dtype = try book.recipe(name).dtype(base: "fp32")
            if dtype == "int8" || dtype == "int4" { #expect(name.hasPrefix(dtype), "\(name)") }
        }
    }

    @Test func computeStepsParseWithTheirOptions() throws {
        let book = try RecipeBook.parse(
            """
            recipes:
              - name: a
                steps: [{int4: {compute: matmulnbits, block_size: 128, accuracy_level: 0}}]
              - name: b
                steps: [{smooth: {alpha: 0.5}}, {int8: {compute: dynamic, ops: standard}}]
              - name: c
                steps: [{int4: {compute: mixed, block_size: 128}}]
            """)
        #expect(try book.recipe("a").steps == [.int4MatMulNBits(blockSize: 128, accuracyLevel: 0)])
        #expect(try book.recipe("b").steps == [.smooth(alpha: 0.5, minGain: 1), .int8Dynamic(.standard)])
        #expect(try book.recipe("c").steps == [.int4Mixed(blockSize: 128)])
        #expect(try book.recipe("c").form == "compute")
    }

    @Test func quantizingBeforePruningIsRefused() {
        let yaml = """
            recipes:
              - name: backwards
                steps: [int8, {prune: {sparsity: 0.5}}]
            """
        #expect(compressionErrorCode { _ = try RecipeBook.parse(yaml) } == .recipe)
    }

    @Test func badRecipesAreTypedErrors() {
        for yaml in [
            "recipes: [{name: a, steps: [int3]}]",
            "recipes: [{name: a, steps: [{prune: {sparsity: 1.5}}]}]",
            "recipes: [{name: a, steps: [{prune: {}}]}]",
            "recipes: [{name: a, steps: [{int4: {block_size: 33}}]}]",
            "recipes: [{name: a, steps: []}]",
            "recipes: [{name: a, steps: [fp16]}, {name: a, steps: [int8]}]",
            "recipes: [{name: a, steps: [fp16], protect: ['([']}]",
            "recipes: [{name: a, steps: [{int8: {granularity: per-row}}]}]",
            "recipes: [{name: a, steps: [{int8: {compute: sometimes}}]}]",
            "recipes: [{name: a, steps: [{int8: {compute: dynamic, granularity: per-tensor}}]}]",
            "recipes: [{name: a, steps: [{int4: {compute: matmulnbits, accuracy_level: 7}}]}]",
            "recipes: [{name: a, steps: [{int4: {compute: matmulnbits, block_size: 48}}]}]",
            "recipes: [{name: a, steps: [{int4: {compute: mixed, block_size: 24}}]}]",
            "recipes: [{name: a, steps: [{smooth: {alpha: 0.5}}, int8]}]",
            "recipes: [{name: a, steps: [{smooth: {alpha: 1.5}}, {int8: {compute: dynamic}}]}]",
            "recipes: [{name: a, steps: [{smooth: {alpha: 0.5, min_gain: 0.5}}, {int8: {compute: dynamic}}]}]",
            "recipes: [{name: a, steps: [{int8: {compute: dynamic}}, {smooth: {alpha: 0.5}}]}]",
            "recipes: [{name: a, steps: [{mixed: {}}, {int8: {compute: dynamic}}]}]",
            "recipes: [{name: a, steps: [fuse-layernorm, int8]}]",
            "recipes: [{name: a, steps: [{int8: {compute: dynamic}}, fuse-layernorm]}]",
            "recipes: [{name: a, steps: [{mixed: {min_cosine: 1.5}}, {int8: {compute: dynamic}}]}]",
            "recipes: [{name: a, steps: [{mixed: {min_cosine: 0.99, alpha: 1}}, {int8: {compute: dynamic}}]}]",
            "recipes: [{name: a, steps: [{mixed: {min_cosine: 0.99}}, {int8: {compute: dynamic, ops: standard}}]}]",
            "recipes: [{name: a, steps: [{mixed: {min_cosine: 0.99}}, {int4: {compute: matmulnbits}}]}]",
            "recipes: [{name: a, steps: [{smooth: {alpha: 0.5}}, {mixed: {min_cosine: 0.99}}, {int8: {compute: dynamic}}]}]",
            "not yaml: ["
        ] {
            #expect(compressionErrorCode { _ = try RecipeBook.parse(yaml) } == .recipe, "\(yaml)")
        }
        #expect(compressionErrorCode { _ = try RecipeBook.parse("recipes: [{name: a, steps: [fp16]}]").recipe("b") } == .recipe)
    }
}
