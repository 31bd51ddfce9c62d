import ArgumentParser
import FleetClient
import FleetCore
import Foundation

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "Register and list models.",
        subcommands: [Add.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register a model name.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name (letters, digits, '-', '_', '.').") var name: String
        @Option(
            name: [.customLong("min-quality"), .customLong("min-cosine")],
            help: "Quality floor (min_cosine): variants whose measured mean cosine is below it, or unmeasured, are never chosen.")
        var minQuality: Double?

        func validate() throws {
            guard Name.isValid(name) else { throw ValidationError("'\(name)' is not a valid model name") }
            if let q = minQuality, !(0...1).contains(q) { throw ValidationError("--min-quality must be between 0 and 1") }
        }

        func run() throws {
            let m = try calling { try global.client().post("/v1/models", NewModel(name: name, minQuality: minQuality), as: ModelInfo.self) }
            try global.emit(m) { "model \(m.name) registered\n" }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List models.")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            let models = try calling { try global.client().get("/v1/models", as: [ModelInfo].self) }
            try global.emit(models) {
                Table.render(
                    ["MODEL", "VARIANTS", "MIN-QUALITY", "NEXT-SERIAL"],
                    models.map { [$0.name, "\($0.variants)", $0.minQuality.map { "\($0)" } ?? "-", "\($0.nextSerial)"] })
            }
        }
    }
}

struct VariantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "variant", abstract: "Build, upload, list and show model variants.",
        subcommands: [Add.self, List.self, Build.self, Show.self, Perf.self, Trial.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Upload a variant file and register it under a model.",
            discussion: """
                --requires takes KEY=VALUE and may repeat: arch=x86_64|aarch64, cpu=avx512_vnni (all listed flags), \
                memory=2GiB (minimum), accelerator=/dev/apex_ (any of). Example: --requires cpu=asimddp --requires arch=aarch64
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name.") var model: String
        @Argument(help: "Variant file (ONNX or safetensors).") var file: String
        @Option(help: "Variant name, unique within the model.") var name: String
        @Option(help: "File format: onnx or safetensors (default: from the file extension).") var format: String?
        @Option(help: "Number format of the weights: fp32, fp16, int8, int4, …") var dtype: String = "fp32"
        @Option(help: "What a device needs to run it (repeatable KEY=VALUE).") var requires: [String] = []
        @Option(help: "Free-form attribute signed into the catalog (repeatable KEY=VALUE).") var attr: [String] = []
        @Option(help: "Measured quality (mean cosine against the base model), 0…1.") var quality: Double?
        @Option(help: "The variant this one was derived from (a distilled student's teacher); it is evaluated against it.") var derivedFrom:
            String?
        @Option(help: "How it was derived: distillation, architecture, quantization, pruning or combined.") var technique: String?
        @Option(help: "A local copy of the --derived-from variant's file (default: downloaded from the controller).") var teacherFile:
            String?
        @Option(help: "Evaluator command for --derived-from, run as CMD TEACHER VARIANT.") var evaluate: String?
        @Option(help: "Golden inputs (.npz) for the default evaluator.") var inputs: String?
        @Option(
            help: "A report written by `variant build --report` for this file: stored with the variant, its mean cosine is the quality.")
        var report: String?

        func validate() throws {
            guard Name.isValid(model) else { throw ValidationError("'\(model)' is not a valid model name") }
            guard Name.isValid(name) else { throw ValidationError("'\(name)' is not a valid variant name") }
            guard FileManager.default.isReadableFile(atPath: file) else { throw ValidationError("cannot read \(file)") }
            guard resolvedFormat != nil else { throw ValidationError("cannot tell the format of \(file); pass --format onnx|safetensors") }
            _ = try parsedRequirements()
            _ = try parsedAttributes()
            if let q = quality, !(0...1).contains(q) { throw ValidationError("--quality must be between 0 and 1") }
            if report != nil {
                guard quality == nil, derivedFrom == nil else {
                    throw ValidationError("--report carries the measured quality: leave out --quality and --derived-from")
                }
                guard FileManager.default.isReadableFile(atPath: report!) else { throw ValidationError("cannot read \(report!)") }
            }
            if derivedFrom != nil {
                guard let technique, Lineage.techniques.contains(technique) else {
                    throw ValidationError("--derived-from needs --technique \(Lineage.techniques.joined(separator: "|"))")
                }
                guard quality == nil else { throw ValidationError("--quality is measured for a derived variant; leave it out") }
            } else if technique != nil {
                throw ValidationError("--technique needs --derived-from")
            }
        }

        var resolvedFormat: String? {
            if let format { return ["onnx", "safetensors"].contains(format) ? format : nil }
            if file.hasSuffix(".onnx") { return "onnx" }
            if file.hasSuffix(".safetensors") { return "safetensors" }
            return nil
        }

        func parsedRequirements() throws -> Requirements {
            var r = Requirements()
            for item in requires {
                guard let eq = item.firstIndex(of: "=") else { throw ValidationError("--requires '\(item)' is not KEY=VALUE") }
                let key = String(item[..<eq]), value = String(item[item.index(after: eq)...])
                let list = value.split(separator: value.contains("|") ? "|" : ",").map(String.init)
                switch key {
                case "arch": r.arch = (r.arch ?? []) + list
                case "cpu": r.cpuFlags = (r.cpuFlags ?? []) + list
                case "memory":
                    guard let bytes = ByteCount.parse(value) else { throw ValidationError("--requires memory='\(value)' is not a size") }
                    r.minMemoryBytes = bytes
                case "accelerator": r.accelerators = (r.accelerators ?? []) + list
                default: throw ValidationError("--requires key '\(key)' is not one of arch, cpu, memory, accelerator")
                }
            }
            return r
        }

        func parsedAttributes() throws -> [String: String] {
            var out: [String: String] = [:]
            for item in attr {
                guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                    throw ValidationError("--attr '\(item)' is not KEY=VALUE")
                }
                out[String(item[..<eq])] = String(item[item.index(after: eq)...])
            }
            return out
        }

        func run() throws {
            let api = global.client()
            let derived = try derivedFrom.map {
                try DerivedVariant.measure(
                    api: api, model: model, file: file, dtype: dtype, derivedFrom: $0, technique: technique!,
                    teacherFile: teacherFile, evaluate: evaluate, inputs: inputs)
            }
            let sha = try localSHA256(file)
            let built = try report.map { try VariantReportFile.load($0, for: file, sha256: sha) }
            let bar = ProgressBar(label: "uploading \((file as NSString).lastPathComponent)")
            let uploaded = try calling { () throws -> ArtifactInfo in
                let r = try api.http.upload(
                    file: file, to: api.base + "/v1/artifacts", headers: api.actor.merging(["X-Content-SHA256": sha]) { $1 },
                    progress: { done, total in bar.update(done, total) })
                bar.finish()
                try HTTPClient.check(r, url: api.base + "/v1/artifacts")
                return try FleetJSON.decode(ArtifactInfo.self, from: r.body, limit: 4096)
            }
            guard uploaded.sha256 == sha else { throw CLIError("controller stored \(uploaded.sha256), expected \(sha)") }
            let fileName = (file as NSString).lastPathComponent
            let variant = CatalogVariant(
                name: name, sha256: sha, size: uploaded.size, fileName: fileName, format: resolvedFormat!,
                dtype: dtype, requires: try parsedRequirements(), attributes: try parsedAttributes(),
                lineage: derived?.0)
            let body = NewVariant(variant: variant, quality: derived?.1.quality ?? built?.quality ?? quality, report: derived?.1 ?? built)
            let info = try calling { try api.post("/v1/models/\(model)/variants", body, as: VariantInfo.self) }
            try global.emit(info) { "variant \(name) of \(model): \(ByteCount.format(uploaded.size)), sha256 \(sha)\n" }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the variants of a model.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name.") var model: String
        func run() throws {
            let list = try calling { try global.client().get("/v1/models/\(model)/variants", as: [VariantInfo].self) }
            try global.emit(list) {
                Table.render(
                    ["VARIANT", "DTYPE", "FORMAT", "SIZE", "QUALITY", "SHA256"],
                    list.map {
                        [
                            $0.variant.name, $0.variant.dtype, $0.variant.format, ByteCount.format($0.variant.size),
                            $0.quality.map { String(format: "%.4f", $0) } ?? "-", String($0.variant.sha256.prefix(16))
                        ]
                    })
            }
        }
    }
}

func localSHA256(_ path: String) throws -> String {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw CLIError("cannot read \(path)") }
    defer { try? handle.close() }
    var hasher = StreamingSHA256()
    while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(chunk) }
    return hasher.finalizeHex()
}

/// A one-line progress bar on standard error, drawn only on a terminal.
final class ProgressBar {
    let label: String
    let enabled = isatty(STDERR_FILENO) != 0
    var lastPercent = -1
    init(label: String) { self.label = label }

    func update(_ done: Int64, _ total: Int64) {
        guard enabled, total > 0 else { return }
        let percent = Int(done * 100 / total)
        guard percent != lastPercent else { return }
        lastPercent = percent
        let width = 30
        let filled = width * percent / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(percent)% \(ByteCount.format(done))/\(ByteCount.format(total))".utf8))
    }

    func finish() { if enabled && lastPercent >= 0 { FileHandle.standardError.write(Data("\n".utf8)) } }
}
