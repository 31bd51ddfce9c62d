import Foundation
import Testing
@testable import FleetDelta

/// A small model with every kind of tensor the codec treats differently.
enum Fixture {
    static func baseTensors(seed: UInt64 = 1) -> [TestTensor] {
        var rng = SeededRNG(seed: seed)
        func t(_ name: String, _ dtype: String, _ shape: [Int]) -> TestTensor {
            TestTensor(
                name: name, dtype: dtype, shape: shape,
                data: TensorData.random(dtype: dtype, count: shape.reduce(1, *), using: &rng))
        }
        return [
            t("embeddings.weight", "F32", [64, 32]),
            t("layer.0.weight", "F32", [32, 32]),
            t("layer.0.bias", "F32", [32]),
            t("layer.0.norm", "F16", [32]),
            t("layer.1.weight", "BF16", [32, 32]),
            t("layer.1.qweight", "I8", [32, 32]),
            t("position_ids", "I64", [16])
        ]
    }

    /// A fine-tune: the last layers nudged, the rest untouched.
    static func fineTuned(_ base: [TestTensor], seed: UInt64 = 2) -> [TestTensor] {
        var rng = SeededRNG(seed: seed)
        return base.map { t in
            guard t.name.hasPrefix("layer.1") || t.name == "layer.0.bias" else { return t }
            var n = t
            n.data = TensorData.nudge(t.data, dtype: t.dtype, relative: 1e-3, using: &rng)
            return n
        }
    }
}

/// Encodes and applies in `dir`, returning the report and the decoded bytes.
func roundTrip(
    _ dir: TempDir, base: [UInt8], target: [UInt8], methods: [DeltaMethod] = DeltaMethod.allCases,
    level: Int = 19, tag: String = "x"
) throws -> (DeltaReport, [UInt8]) {
    let b = try dir.write("\(tag).base", base)
    let t = try dir.write("\(tag).target", target)
    let report = try DeltaEncoder.encode(base: b, target: t, output: dir.file("\(tag).delta"), methods: methods, level: level)
    try DeltaDecoder.apply(base: b, patch: dir.file("\(tag).delta"), output: dir.file("\(tag).out"), sync: false)
    return (report, try dir.read("\(tag).out"))
}

/// Runs `body` and returns the DeltaError code it threw (nil if it did not throw one).
func deltaErrorCode(_ body: () throws -> Void) -> DeltaError.Code? {
    do { try body() } catch let e as DeltaError { return e.code } catch { return nil }
    return nil
}
