import ArgumentParser
import FleetClient
import FleetCompression
import FleetCore
import Foundation

/// `fleetctl variant build`: compressed variants by recipe, locally (`--input`) or on the controller.
extension VariantCommand {
    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Build compressed variants by recipe (fleet/recipes.yaml) and measure what they cost.",
            discussion: """
                Locally, without a controller:
                  fleetctl variant build --input model.onnx --recipe int8 --out model-int8.onnx --report int8.json
                On the controller, from the model's fp32 variant, registering each result with its report:
                  fleetctl variant build MODEL --recipes fp16,int8,int4-b32

                Quality: every changed tensor's relative L2 error, SNR, max abs error and sparsity, and the \
                evaluator's output agreement (mean/min cosine, top-1) on golden inputs. The evaluator is \
                --evaluate CMD (run as CMD BASE VARIANT, printing a JSON line), else $EDGEFLEET_EVALUATOR, else \
                scripts/evaluate-variant.py under .venv when run from the repository.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name (controller mode).") var model: String?
        @Option(help: "Model file to compress (local mode): .onnx or .safetensors.") var input: String?
        @Option(help: "Recipe name (local mode).") var recipe: String?
        @Option(help: "Where to write the variant (local mode).") var out: String?
        @Option(help: "Also write the quality report as JSON here (local mode).") var report: String?
        @Option(help: "Comma-separated recipe names (controller mode).") var recipes: String?
        @Option(help: "Base variant to build from (controller mode; default: the model's fp32 reference).") var base: String?
        @Option(help: "Recipe file.") var recipesFile: String = "fleet/recipes.yaml"
        @Option(help: "Evaluator command, run as CMD BASE VARIANT.") var evaluate: String?
        @Flag(help: "Skip the output-level evaluation.") var noEvaluate = false
        @Option(help: "Golden inputs (.npz) for the default evaluator (EDGEFLEET_GOLDEN_INPUTS).") var inputs: String?
        @Option(help: "zstd level for the compressed sizes in the report; 0 skips.") var zstdLevel: Int = 3
        @Option(help: "Calibrator command for recipes that smooth activations, run as CMD MODEL.") var calibrate: String?
        @Option(help: "Calibration inputs (.npz) for the default calibrator (EDGEFLEET_CALIBRATION_INPUTS); keep them apart from --inputs.")
        var calibrationInputs: String?

        func validate() throws {
            if input != nil {
                guard model == nil, recipes == nil else {
                    throw ValidationError("--input builds locally: give --recipe and --out, not a model or --recipes")
                }
                guard recipe != nil, out != nil else { throw ValidationError("--input needs --recipe and --out") }
                guard FileManager.default.isReadableFile(atPath: input!) else { throw ValidationError("cannot read \(input!)") }
            } else {
                guard let model, Name.isValid(model) else {
                    throw ValidationError("give --input FILE (local) or a model name (controller)")
                }
                guard let recipes, !recipes.isEmpty else { throw ValidationError("controller mode needs --recipes a,b,c") }
            }
            guard (0...22).contains(zstdLevel) else { throw ValidationError("--zstd-level must be between 0 and 22") }
        }

        func run() throws {
            if let input { try buildLocally(input) } else { try buildOnController() }
        }

        private func buildLocally(_ input: String) throws {
            let book = try cli { try RecipeBook.load(path: recipesFile) }
            let r = try cli { try book.recipe(recipe!) }
            let bar = ProgressBar(label: "\(r.name)")
            var evaluator =
                noEvaluate ? nil : (evaluate ?? ProcessInfo.processInfo.environment["EDGEFLEET_EVALUATOR"] ?? Self.defaultEvaluator())
            if let e = evaluator, let inputs { evaluator = "EDGEFLEET_GOLDEN_INPUTS=\(shellQuote(inputs)) " + e }
            var calibrator =
                r.needsCalibration
                ? (calibrate ?? ProcessInfo.processInfo.environment["EDGEFLEET_CALIBRATOR"] ?? Self.defaultScript("calibrate-variant.py"))
                : nil
            if let c = calibrator, let calibrationInputs {
                calibrator = "EDGEFLEET_CALIBRATION_INPUTS=\(shellQuote(calibrationInputs)) " + c
            }
            let options = VariantBuilder.Options(
                input: input, output: out!, recipe: r, zstdLevel: zstdLevel == 0 ? nil : zstdLevel,
                evaluator: evaluator, calibrator: calibrator,
                progress: { p in bar.update(p.bytesDone, p.bytesTotal) })
            let rep = try cli { try VariantBuilder.build(options) }
            bar.finish()
            if let report {
                let data = try FleetJSON.encode(rep, pretty: true)
                guard FileManager.default.createFile(atPath: report, contents: data) else { throw CLIError("cannot write \(report)") }
            }
            try global.emit(rep) { ReportText.render(rep) }
        }

        private func buildOnController() throws {
            let names = recipes!.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            let built = try calling {
                try global.client().post(
                    "/v1/models/\(model!)/variants/build", VariantBuildRequest(base: base, recipes: names), as: [VariantDetail].self)
            }
            try global.emit(built) {
                built.map { d in "variant \(d.variant.variant.name) registered\n" + (d.report.map(ReportText.summary) ?? "") }.joined(
                    separator: "\n")
            }
        }

        /// scripts/evaluate-variant.py under the repository's .venv, when run from the repository.
        static func defaultEvaluator() -> String? { defaultScript("evaluate-variant.py") }

        /// scripts/NAME under the repository's .venv, when run from the repository.
        static func defaultScript(_ name: String) -> String? {
            let fm = FileManager.default
            let cwd = fm.currentDirectoryPath
            let python = cwd + "/.venv/bin/python", script = cwd + "/scripts/" + name
            guard fm.isExecutableFile(atPath: python), fm.fileExists(atPath: script) else { return nil }
            return "\(shellQuote(python)) \(shellQuote(script))"
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a variant and its quality report.",
            discussion: "fleetctl variant show MODEL VARIANT (from the controller), or fleetctl variant show --file REPORT.json")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name.") var model: String?
        @Argument(help: "Variant name.") var variant: String?
        @Option(help: "A report written by `variant build --report` (no controller).") var file: String?
        @Flag(help: "List every tensor, not only the changed ones.") var allTensors = false

        func validate() throws {
            if file == nil, model == nil || variant == nil { throw ValidationError("give MODEL VARIANT, or --file REPORT.json") }
        }

        func run() throws {
            if let file {
                guard let data = FileManager.default.contents(atPath: file) else { throw CLIError("cannot read \(file)") }
                let rep = try cli { try JSONDecoder().decode(VariantReport.self, from: data) }
                try global.emit(rep) { ReportText.render(rep, allTensors: allTensors) }
                return
            }
            let d = try calling { try global.client().get("/v1/models/\(model!)/variants/\(variant!)", as: VariantDetail.self) }
            try global.emit(d) {
                let v = d.variant.variant
                var text =
                    "variant \(v.name) of \(d.variant.model): \(v.dtype) \(v.format), \(ByteCount.format(v.size)), sha256 \(v.sha256)\n"
                if let l = v.lineage {
                    text +=
                        "derived from \(l.derivedFrom) by \(l.technique)" + (l.recipe.map { " (recipe \($0))" } ?? "")
                        + (l.tool.map { ", \($0) \(l.toolVersion ?? "")" } ?? "") + "\n"
                }
                text += d.variant.quality.map { String(format: "quality (mean cosine): %.5f\n", $0) } ?? "quality: not measured\n"
                return text + (d.report.map { ReportText.render($0, allTensors: allTensors) } ?? "no report\n")
            }
        }
    }
}

/// The report as an operator reads it.
enum ReportText {
    static func summary(_ r: VariantReport) -> String {
        var s = "recipe \(r.recipe) (\(r.steps.joined(separator: ", "))): \(r.dtype), \(r.technique)\n"
        s +=
            "bytes: \(ByteCount.format(r.input.bytes)) -> \(ByteCount.format(r.output.bytes)) (ratio \(String(format: "%.2f", r.compressionRatio)))"
        if let zi = r.input.zstdBytes, let zo = r.output.zstdBytes {
            s +=
                "; zstd-\(r.zstdLevel ?? 0): \(ByteCount.format(zi)) -> \(ByteCount.format(zo)) (ratio \(String(format: "%.2f", r.compressedRatio ?? 0)))"
        }
        if let form = r.form {
            s +=
                "\nform: "
                + (form == "compute"
                    ? "compute (\((r.operators ?? []).joined(separator: ", ")))"
                    : "storage-only (computed in fp32 like the base: smaller, not faster)")
        }
        s += "\ntensors: \(r.tensorsChanged) changed, \(r.tensorsKept) kept"
        if let w = r.worstRelativeL2 { s += String(format: "; worst relative L2 %.4g", w) }
        if let snr = r.meanSnrDb { s += String(format: "; mean SNR %.1f dB", snr) }
        if let sp = r.sparsity, sp > 0.001 { s += String(format: "; sparsity %.1f%%", sp * 100) }
        if r.overflow > 0 { s += "; fp16 overflow \(r.overflow)" }
        s += "\n"
        if let e = r.evaluation {
            s += String(format: "agreement (%d samples): mean cosine %.5f, min cosine %.5f", e.samples, e.meanCosine, e.minCosine)
            if let t = e.top1Agreement { s += String(format: ", top-1 %.2f%%", t * 100) }
            s += "\n"
            if let sp = e.speed { s += speedText(sp) }
        } else {
            s += "agreement: not evaluated\n"
        }
        for n in r.notes { s += "note: \(n)\n" }
        return s
    }

    static func speedText(_ sp: VariantReport.Speed) -> String {
        var s = "speed (batch \(sp.batch), \(sp.runs) runs each"
        if let rt = sp.runtime { s += ", \(rt)" }
        s += "):\n"
        for t in sp.timings {
            s += String(
                format: "  %d thread%@: base %.3f ms (p95 %.3f) -> variant %.3f ms (p95 %.3f): %.2fx %@\n", t.threads,
                t.threads == 1 ? "" : "s",
                t.baseMedianMs, t.baseP95Ms, t.variantMedianMs, t.variantP95Ms, t.speedup, t.speedup >= 1 ? "faster" : "slower")
        }
        if let b = sp.basePeakBytes, let v = sp.variantPeakBytes {
            s += "  peak memory: base \(ByteCount.format(b)), variant \(ByteCount.format(v))\n"
        }
        if let c = sp.cpu { s += "  cpu: \(c.model) (\(c.architecture), \(c.cores) cores; \(c.flags.joined(separator: " ")))\n" }
        return s
    }

    static func render(_ r: VariantReport, allTensors: Bool = false) -> String {
        let rows = r.tensors.filter { allTensors || $0.changed }.map { t -> [String] in
            [
                t.name, t.encoding, ByteCount.format(t.bytesIn), ByteCount.format(t.bytesOut),
                t.relativeL2.map { String(format: "%.4g", $0) } ?? "-", t.snrDb.map { String(format: "%.1f", $0) } ?? "-",
                t.maxAbsError.map { String(format: "%.3g", $0) } ?? "-", t.sparsity.map { String(format: "%.1f%%", $0 * 100) } ?? "-"
            ]
        }
        return summary(r) + Table.render(["TENSOR", "ENCODING", "IN", "OUT", "REL-L2", "SNR-DB", "MAX-ABS", "SPARSITY"], rows)
    }
}

func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

/// Runs `body`, turning a CompressionError into one readable line.
func cli<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as CompressionError { throw CLIError(e.description) } catch let e as CLIError { throw e } catch {
        throw CLIError("\(error)")
    }
}

/// `variant add --report FILE`: a report built locally for the file being added.
enum VariantReportFile {
    static func load(_ path: String, for file: String, sha256: String) throws -> VariantReport {
        guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read \(path)") }
        let report: VariantReport
        do { report = try JSONDecoder().decode(VariantReport.self, from: data) } catch {
            throw CLIError("\(path) is not a variant report: \(error)")
        }
        if let sha = report.output.sha256, sha != sha256 {
            throw CLIError("\(path) describes a file with sha256 \(sha), not \(file) (\(sha256))")
        }
        return report
    }
}

/// `variant add --derived-from BASE --technique distillation|architecture`: the student is evaluated
/// against its teacher (the base variant's file: --teacher-file, or downloaded from the controller
/// and checked against the base's sha256) and registered with its lineage and report.
enum DerivedVariant {
    static func measure(
        api: API, model: String, file: String, dtype: String, derivedFrom: String, technique: String,
        teacherFile: String?, evaluate: String?, inputs: String?
    ) throws -> (Lineage, VariantReport) {
        let variants = try calling { try api.get("/v1/models/\(model)/variants", as: [VariantInfo].self) }
        guard let base = variants.first(where: { $0.variant.name == derivedFrom })?.variant else {
            throw CLIError("model \(model) has no variant \(derivedFrom) to derive from")
        }
        var teacher = teacherFile
        var cleanup: String?
        defer { if let cleanup { try? FileManager.default.removeItem(atPath: cleanup) } }
        if teacher == nil {
            let ext = base.format == "onnx" ? "onnx" : "safetensors"
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("fleetctl-teacher-\(UUID().uuidString).\(ext)").path
            cleanup = tmp
            _ = try calling { try api.http.download(api.base + "/v1/artifacts/\(base.sha256)", to: tmp, maxBytes: base.size) }
            teacher = tmp
        }
        guard try localSHA256(teacher!) == base.sha256 else {
            throw CLIError("the teacher file is not \(derivedFrom) (sha256 differs from \(base.sha256))")
        }
        guard
            var evaluator = evaluate ?? ProcessInfo.processInfo.environment["EDGEFLEET_EVALUATOR"]
                ?? VariantCommand.Build.defaultEvaluator()
        else {
            throw CLIError("no evaluator: pass --evaluate CMD (a derived variant is registered with its measured agreement)")
        }
        if let inputs { evaluator = "EDGEFLEET_GOLDEN_INPUTS=\(shellQuote(inputs)) " + evaluator }
        var report = try cli {
            try DerivedVariantReport.measure(teacher: teacher!, student: file, technique: technique, evaluator: evaluator)
        }
        report.dtype = dtype
        report.input.path = derivedFrom
        let lineage = Lineage(
            derivedFrom: derivedFrom, derivedFromSha256: base.sha256, technique: technique, recipe: nil,
            tool: "fleetctl variant add", toolVersion: VariantBuilder.toolVersion,
            meanCosine: report.evaluation?.meanCosine, minCosine: report.evaluation?.minCosine)
        return (lineage, report)
    }
}
