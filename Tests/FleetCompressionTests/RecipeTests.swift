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
            "not yaml: [",
        ] {
            #expect(compressionErrorCode { _ = try RecipeBook.parse(yaml) } == .recipe, "\(yaml)")
        }
        #expect(compressionErrorCode { _ = try RecipeBook.parse("recipes: [{name: a, steps: [fp16]}]").recipe("b") } == .recipe)
    }
}
