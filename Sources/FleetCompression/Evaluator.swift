import FleetCore
import Foundation

/// Output-level agreement between a base model and a variant, measured by an external command so
/// that operators can plug in their own. The command is run by /bin/sh as `CMD BASE VARIANT` (the two
/// paths appended as arguments; also in EDGEFLEET_BASE and EDGEFLEET_VARIANT, with the format in
/// EDGEFLEET_FORMAT) and must print, as the last line of its standard output, a JSON object:
/// {"samples": N, "mean_cosine": x, "min_cosine": y, "top1_agreement": z (optional), "detail": {…} (optional)}.
/// A non-zero exit, or no such line, is an `.evaluator` error.
public enum Evaluator {
    public static func run(command: String, base: String, variant: String, format: String) throws(CompressionError)
        -> VariantReport.Evaluation
    {
        let r = try ExternalCommand.run(
            command, arguments: [base, variant],
            environment: ["EDGEFLEET_BASE": base, "EDGEFLEET_VARIANT": variant, "EDGEFLEET_FORMAT": format],
            what: "evaluator")
        guard r.status == 0 else {
            throw CompressionError(.evaluator, "'\(command)' exited with \(r.status): \(r.stderr)")
        }
        guard let last = r.jsonLine else {
            throw CompressionError(.evaluator, "'\(command)' printed no JSON result line; stderr: \(r.stderr)")
        }
        return try parse(Data(last.utf8), command: command)
    }

    static func parse(_ data: Data, command: String) throws(CompressionError) -> VariantReport.Evaluation {
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw CompressionError(.evaluator, "result is not a JSON object")
        }
        func number(_ key: String) -> Double? { (obj[key] as? NSNumber)?.doubleValue }
        guard let mean = number("mean_cosine"), let minimum = number("min_cosine"), mean.isFinite, minimum.isFinite,
            (-1.0...1.0001).contains(mean), (-1.0...1.0001).contains(minimum)
        else {
            throw CompressionError(.evaluator, "result needs mean_cosine and min_cosine between -1 and 1")
        }
        let samples = (obj["samples"] as? NSNumber)?.intValue ?? 0
        guard samples > 0 else { throw CompressionError(.evaluator, "result says it evaluated no samples") }
        var detail: [String: Double]?
        if let d = obj["detail"] as? [String: Any] {
            detail = d.compactMapValues { ($0 as? NSNumber)?.doubleValue }
        }
        // Speed is optional (an operator's evaluator may not time); when present it must decode whole.
        var speed: VariantReport.Speed?
        if let sp = obj["speed"] {
            guard JSONSerialization.isValidJSONObject(sp), let d = try? JSONSerialization.data(withJSONObject: sp),
                let decoded = try? JSONDecoder().decode(VariantReport.Speed.self, from: d)
            else {
                throw CompressionError(.evaluator, "result's \"speed\" is not {batch, runs, timings: [{threads, baseMedianMs, …}], …}")
            }
            guard decoded.timings.allSatisfy({ [$0.baseMedianMs, $0.variantMedianMs, $0.speedup].allSatisfy { $0.isFinite && $0 > 0 } })
            else {
                throw CompressionError(.evaluator, "result's speed has a time that is not a positive number")
            }
            speed = decoded
        }
        return VariantReport.Evaluation(
            evaluator: command, samples: samples, meanCosine: min(mean, 1), minCosine: min(minimum, 1),
            top1Agreement: number("top1_agreement"), detail: detail, speed: speed)
    }
}
