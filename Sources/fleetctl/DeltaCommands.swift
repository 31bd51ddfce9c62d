import ArgumentParser
import FleetCore
import FleetDelta
import Foundation

/// `fleetctl delta …`: delta packages between two model files, locally (no controller).
struct DeltaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delta", abstract: "Create, apply and inspect delta packages between model files (local; no controller).",
        discussion: "The package format is described in docs/DELTA.md.",
        subcommands: [Create.self, Apply.self, Show.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a delta package that turns BASE into TARGET.",
            discussion: """
                auto tries every method that applies and keeps the smallest package: tensor (safetensors and ONNX, \
                per tensor against the base), zstd-patch (zstd with the whole base as prefix, any file) and full \
                (the target compressed). Prints what each method gave; --json prints the report.
                """)
        @OptionGroup var global: LocalOutputOptions
        @Option(help: "The file devices have now.") var base: String
        @Option(help: "The file devices should end up with.") var target: String
        @Option(help: "Where to write the package.") var out: String
        @Option(help: "auto, tensor, zstd-patch or full.") var method: String = "auto"
        @Option(help: "zstd level, 1…22 (tensor deltas are compared at a fast level and refined at this one).") var level: Int = 19

        func validate() throws {
            guard method == "auto" || DeltaMethod(rawValue: method) != nil else {
                throw ValidationError("--method must be auto, tensor, zstd-patch or full, not '\(method)'")
            }
            guard (1...22).contains(level) else { throw ValidationError("--level must be between 1 and 22") }
            for (flag, path) in [("--base", base), ("--target", target)] where !FileManager.default.isReadableFile(atPath: path) {
                throw ValidationError("\(flag): cannot read \(path)")
            }
        }

        func run() throws {
            let methods = method == "auto" ? DeltaMethod.allCases : [DeltaMethod(rawValue: method)!]
            let report: DeltaReport
            do { report = try DeltaEncoder.encode(base: base, target: target, output: out, methods: methods, level: level) } catch {
                throw CLIError("delta create: \(error)")
            }
            try global.emit(report) { Self.table(report, out: out) }
        }

        static func table(_ r: DeltaReport, out: String) -> String {
            let rows = r.methods.map { m -> [String] in
                let size = m.size.map { ByteCount.format($0) } ?? "-"
                let ratio = m.size.map { r.targetSize > 0 ? String(format: "%.2f%%", 100 * Double($0) / Double(r.targetSize)) : "-" } ?? "-"
                return [
                    m.method.rawValue, m.status.rawValue, size, ratio, String(format: "%.2f s", m.seconds),
                    m.level.map { "\($0)" } ?? "-", m.note ?? ""
                ]
            }
            var text = Table.render(["METHOD", "RESULT", "SIZE", "OF-TARGET", "TIME", "LEVEL", "NOTE"], rows)
            if let t = r.tensors {
                let codings = t.codings.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                text +=
                    "tensors (\(t.format)): \(t.unchanged) unchanged, \(t.changed) changed, \(t.reshaped) reshaped, "
                    + "\(t.renamed) renamed, \(t.added) added, \(t.removed) removed; structure \(ByteCount.format(t.structureBytes))"
                    + (codings.isEmpty ? "" : "; codings: \(codings)") + "\n"
            }
            text +=
                "wrote \(out): \(r.method.rawValue), \(r.packageSize) bytes (target \(r.targetSize) bytes, sha256 \(r.targetSha256)) "
                + String(format: "in %.2f s\n", r.seconds)
            return text
        }
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply a delta package to BASE, writing the verified result to OUT.",
            discussion: """
                Refuses a base whose sha256 is not the one the package was made against. The result is written \
                beside OUT under a temporary name and renamed onto OUT only when its size and sha256 match the \
                package's target; on any failure nothing is left.
                """)
        @OptionGroup var global: LocalOutputOptions
        @Option(help: "The file the package was made against.") var base: String
        @Option(help: "The delta package.") var patch: String
        @Option(help: "Where to write the result.") var out: String
        @Flag(help: "Do not fsync the result (faster; for scratch files only).") var noSync = false

        func run() throws {
            let header: DeltaHeader
            do { header = try DeltaDecoder.apply(base: base, patch: patch, output: out, sync: !noSync) } catch {
                throw CLIError("delta apply: \(error)")
            }
            try global.emit(header) {
                "wrote \(out): \(header.targetSize) bytes, sha256 \(header.targetSha256) (verified)\n"
                    + "from base \(header.baseSize) bytes, sha256 \(header.baseSha256), with a \(header.method.rawValue) package of \(header.packageLength) bytes\n"
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a delta package's header (after checking it).")
        @OptionGroup var global: LocalOutputOptions
        @Argument(help: "The delta package.") var patch: String

        func run() throws {
            let h: DeltaHeader
            do { h = try DeltaDecoder.readHeader(patch) } catch { throw CLIError("delta show: \(error)") }
            try global.emit(h) {
                Table.render(
                    ["FIELD", "VALUE"],
                    [
                        ["format", "\(h.formatVersion)"], ["method", h.method.rawValue],
                        ["base", "\(h.baseSize) bytes, sha256 \(h.baseSha256)"],
                        ["target", "\(h.targetSize) bytes, sha256 \(h.targetSha256)"],
                        ["package", "\(h.packageLength) bytes; sections \(h.sectionLengths.map(String.init).joined(separator: ", "))"],
                        ["decode buffers", ByteCount.format(h.decodeBufferBytes)]
                    ])
            }
        }
    }
}

/// `--json` for commands that work on local files only (no --controller).
struct LocalOutputOptions: ParsableArguments {
    @Flag(help: "Print JSON instead of tables.")
    var json = false

    func emit<T: Encodable>(_ value: T, table: () -> String) throws {
        if json {
            print(String(decoding: try FleetJSON.encode(value, pretty: true), as: UTF8.self))
        } else {
            print(table(), terminator: "")
        }
    }
}
