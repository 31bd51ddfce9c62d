import Foundation

/// Activation ranges measured by an external command, run as `CMD MODEL` (also in EDGEFLEET_BASE),
/// which must print as the last line of its standard output a JSON object
/// {"samples": N, "activations": {"tensor": [absmax per channel, …], …}, "mean_squares": {…} (optional)}. The default,
/// scripts/calibrate-variant.py, runs the model in onnxruntime on the operator's calibration inputs
/// (EDGEFLEET_CALIBRATION_INPUTS, .npz) or on synthetic inputs that respect each input's vocabulary.
public enum Calibrator {
    public static func run(command: String, model: String) throws(CompressionError) -> ActivationRanges {
        let r = try ExternalCommand.run(command, arguments: [model], environment: ["EDGEFLEET_BASE": model], what: "calibrator")
        guard r.status == 0 else { throw CompressionError(.evaluator, "calibrator '\(command)' exited with \(r.status): \(r.stderr)") }
        guard let line = r.jsonLine else {
            throw CompressionError(.evaluator, "calibrator '\(command)' printed no JSON result line; stderr: \(r.stderr)")
        }
        return try parse(Data(line.utf8))
    }

    /// Agreement of each variant with the base on the calibration inputs, as the calibrator measures
    /// it when run as `CMD --agreement BASE VARIANT…`: the last line of its output is
    /// {"samples": N, "mean_cosine": [one per variant, in order]}.
    public static func agreement(command: String, base: String, variants: [String]) throws(CompressionError) -> [Double] {
        let r = try ExternalCommand.run(
            command, arguments: ["--agreement", base] + variants, environment: ["EDGEFLEET_BASE": base], what: "calibrator")
        guard r.status == 0 else { throw CompressionError(.evaluator, "calibrator '\(command)' exited with \(r.status): \(r.stderr)") }
        guard let line = r.jsonLine, let obj = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
            let list = obj["mean_cosine"] as? [Any]
        else {
            throw CompressionError(.evaluator, "calibrator '\(command)' printed no agreement result line; stderr: \(r.stderr)")
        }
        let values = list.compactMap { ($0 as? NSNumber)?.doubleValue }
        guard values.count == variants.count, values.allSatisfy({ $0.isFinite && (-1.0...1.0001).contains($0) }) else {
            throw CompressionError(.evaluator, "calibrator '\(command)' gave \(list.count) agreements for \(variants.count) variants")
        }
        guard ((obj["samples"] as? NSNumber)?.intValue ?? 0) > 0 else {
            throw CompressionError(.evaluator, "calibrator '\(command)' says it measured no samples")
        }
        return values
    }

    static func parse(_ data: Data) throws(CompressionError) -> ActivationRanges {
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
            let acts = obj["activations"] as? [String: Any]
        else {
            throw CompressionError(.evaluator, "calibration result needs an \"activations\" object")
        }
        var out: [String: [Float]] = [:]
        for (name, v) in acts {
            guard let list = v as? [Any] else { throw CompressionError(.evaluator, "calibration ranges are not a list", tensor: name) }
            let values = list.compactMap { ($0 as? NSNumber)?.floatValue }
            guard values.count == list.count, values.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw CompressionError(.evaluator, "calibration ranges must be finite, non-negative numbers", tensor: name)
            }
            out[name] = values
        }
        var squares: [String: [Float]] = [:]
        for (name, v) in (obj["mean_squares"] as? [String: Any]) ?? [:] {
            let values = (v as? [Any])?.compactMap { ($0 as? NSNumber)?.floatValue } ?? []
            if values.allSatisfy({ $0.isFinite && $0 >= 0 }) { squares[name] = values }
        }
        let samples = (obj["samples"] as? NSNumber)?.intValue ?? 0
        guard samples > 0 else { throw CompressionError(.evaluator, "calibration result says it ran no samples") }
        return ActivationRanges(absmax: out, meanSquares: squares, samples: samples)
    }
}
