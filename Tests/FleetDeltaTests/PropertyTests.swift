import Foundation
import Testing
@testable import FleetDelta

/// decode(encode(a, b), a) == b, byte for byte, over random models and random edits.
/// Seeds: FLEETDELTA_SEED=N runs just that one; every failure message names its seed.
@Suite struct PropertyTests {
    static let dtypes = ["F32", "F16", "BF16", "I8", "U8", "I32", "I64"]

    static var seeds: [UInt64] {
        if let s = ProcessInfo.processInfo.environment["FLEETDELTA_SEED"], let v = UInt64(s) { return [v] }
        return (0..<40).map { 0xEDF1_0000 + UInt64($0) }
    }

    enum Edit: CaseIterable { case unchanged, nudged, replaced, removed, renamed, reshaped, retyped }

    static func randomShape(_ rng: inout SeededRNG) -> [Int] {
        if Int.random(in: 0..<12, using: &rng) == 0 { return [Int.random(in: 262_000...300_000, using: &rng)] }  // crosses a chunk
        let rank = Int.random(in: 1...3, using: &rng)
        return (0..<rank).map { _ in Int.random(in: 1...24, using: &rng) }
    }

    static func randomModel(_ rng: inout SeededRNG) -> [TestTensor] {
        (0..<Int.random(in: 1...8, using: &rng)).map { i in
            let dtype = dtypes.randomElement(using: &rng)!
            let shape = randomShape(&rng)
            return TestTensor(
                name: "t\(i).\(dtype.lowercased())", dtype: dtype, shape: shape,
                data: TensorData.random(dtype: dtype, count: shape.reduce(1, *), using: &rng))
        }
    }

    static func edited(_ base: [TestTensor], _ rng: inout SeededRNG) -> (tensors: [TestTensor], edits: [Edit]) {
        var out: [TestTensor] = []
        var edits: [Edit] = []
        for t in base {
            let edit = Edit.allCases.randomElement(using: &rng)!
            edits.append(edit)
            var n = t
            switch edit {
            case .unchanged: break
            case .nudged:
                n.data = TensorData.nudge(t.data, dtype: t.dtype, relative: Double.random(in: 1e-5...1e-2, using: &rng), using: &rng)
            case .replaced: n.data = TensorData.random(dtype: t.dtype, count: t.elementCount, using: &rng)
            case .removed: continue
            case .renamed: n.name = "renamed." + t.name
            case .reshaped:
                n.shape = [t.elementCount + Int.random(in: 1...40, using: &rng)]
                n.data = t.data + TensorData.random(dtype: t.dtype, count: n.shape[0] - t.elementCount, using: &rng)
            case .retyped:
                n.dtype = dtypes.randomElement(using: &rng)!
                n.data = TensorData.random(dtype: n.dtype, count: t.elementCount, using: &rng)
            }
            out.append(n)
        }
        for i in 0..<Int.random(in: 0...2, using: &rng) {
            let dtype = dtypes.randomElement(using: &rng)!
            let shape = randomShape(&rng)
            out.append(
                TestTensor(
                    name: "added\(i)", dtype: dtype, shape: shape,
                    data: TensorData.random(dtype: dtype, count: shape.reduce(1, *), using: &rng)))
        }
        if Bool.random(using: &rng) { out.shuffle(using: &rng) }
        return (out, edits)
    }

    @Test(arguments: seeds)
    func decodeOfEncodeIsTheTarget(_ seed: UInt64) throws {
        var rng = SeededRNG(seed: seed)
        let dir = try TempDir()
        defer { dir.remove() }
        let base = Self.randomModel(&rng)
        let (target, edits) = Self.edited(base, &rng)
        let onnx = Int.random(in: 0..<4, using: &rng) == 0
        let a: [UInt8], b: [UInt8]
        if onnx {
            a = ONNXWriter.write(base)
            b = ONNXWriter.write(target, producer: Bool.random(using: &rng) ? "edgefleet-tests" : "retrained")
        } else {
            a = SafetensorsWriter.write(base, metadata: ["format": "pt"])
            b = SafetensorsWriter.write(
                target, metadata: Bool.random(using: &rng) ? ["format": "pt"] : ["format": "pt", "epoch": "\(seed % 97)"])
        }
        let what = "seed \(seed) (FLEETDELTA_SEED=\(seed)); \(onnx ? "onnx" : "safetensors"); edits \(edits)"
        // The tensor method must apply to every such pair, and auto must keep the smallest.
        do {
            let (report, out) = try roundTrip(dir, base: a, target: b, methods: [.tensor], level: 3, tag: "tensor")
            #expect(out == b, "tensor: \(Comment(rawValue: what))")
            #expect(report.method == .tensor, "\(Comment(rawValue: what))")
        } catch {
            Issue.record("tensor: \(error); \(what)")
        }
        do {
            let (report, out) = try roundTrip(dir, base: a, target: b, level: 3, tag: "auto")
            #expect(out == b, "auto: \(Comment(rawValue: what))")
            #expect(report.packageSize == report.methods.compactMap(\.size).min(), "\(Comment(rawValue: what))")
        } catch {
            Issue.record("auto: \(error); \(what)")
        }
    }
}
