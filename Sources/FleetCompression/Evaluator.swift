import FleetCore
import Foundation

/// Output-level agreement between a base model and a variant, measured by an external command so
/// that operators can plug in their own. The command is run by /bin/sh as `CMD BASE VARIANT` (the two
/// paths appended as arguments; also in EDGEFLEET_BASE and EDGEFLEET_VARIANT, with the format in
/// EDGEFLEET_FORMAT) and must print, as the last line of its standard output, a JSON object:
/// {"samples": N, "mean_cosine": x, "min_cosine": y, "top1_agreement": z (optional), "detail": {…} (optional)}.
/// A non-zero exit, or no such line, is an `.evaluator` error.
public enum Evaluator {
    public static func run(command: String, base: String, variant: String, format: String) throws(CompressionError) -> VariantReport.Evaluation {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command + " \"$@\"", "sh", base, variant]
        var env = ProcessInfo.processInfo.environment
        env["EDGEFLEET_BASE"] = base
        env["EDGEFLEET_VARIANT"] = variant
        env["EDGEFLEET_FORMAT"] = format
        p.environment = env
        let outPipe = Pipe(), errPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { throw CompressionError(.evaluator, "cannot start '\(command)': \(error)") }
        // Read both pipes to the end before waiting, so a chatty evaluator cannot block on a full pipe.
        let errData = ErrorCollector(errPipe.fileHandleForReading)
        let outData = outPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let stderr = String(decoding: errData.finish().suffix(2000), as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw CompressionError(.evaluator, "'\(command)' exited with \(p.terminationStatus): \(stderr)")
        }
        let lines = String(decoding: outData, as: UTF8.self).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let last = lines.last(where: { $0.hasPrefix("{") }) else {
            throw CompressionError(.evaluator, "'\(command)' printed no JSON result line; stderr: \(stderr)")
        }
        return try parse(Data(last.utf8), command: command)
    }

    static func parse(_ data: Data, command: String) throws(CompressionError) -> VariantReport.Evaluation {
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw CompressionError(.evaluator, "result is not a JSON object")
        }
        func number(_ key: String) -> Double? { (obj[key] as? NSNumber)?.doubleValue }
        guard let mean = number("mean_cosine"), let minimum = number("min_cosine"), mean.isFinite, minimum.isFinite,
              (-1.0...1.0001).contains(mean), (-1.0...1.0001).contains(minimum) else {
            throw CompressionError(.evaluator, "result needs mean_cosine and min_cosine between -1 and 1")
        }
        let samples = (obj["samples"] as? NSNumber)?.intValue ?? 0
        guard samples > 0 else { throw CompressionError(.evaluator, "result says it evaluated no samples") }
        var detail: [String: Double]?
        if let d = obj["detail"] as? [String: Any] {
            detail = d.compactMapValues { ($0 as? NSNumber)?.doubleValue }
        }
        return VariantReport.Evaluation(evaluator: command, samples: samples, meanCosine: min(mean, 1), minCosine: min(minimum, 1),
                                        top1Agreement: number("top1_agreement"), detail: detail)
    }
}

/// Drains a pipe on another thread.
private final class ErrorCollector: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ handle: FileHandle) {
        DispatchQueue.global().async { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }
    func finish() -> Data { done.wait(); return data }
}
