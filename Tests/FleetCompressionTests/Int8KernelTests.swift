import Foundation
import SwiftProtobuf
import Testing
@testable import FleetCompression

/// The vector int8 encoder writes exactly the bytes of the scalar definition, whatever the layout,
/// the length (vector tails) or the alignment of its input, so variants stay byte for byte the same.
@Suite struct Int8KernelTests {
    /// The scalar definition: scale = absmax/127 per channel (1 for an all-zero channel), q = x·(1/scale)
    /// rounded half to even and clamped to ±127.
    func reference(_ w: [Float], shape: [Int64], perChannel: Bool, axis: Int) -> (q: [UInt8], scales: [Float]) {
        let l = perChannel ? AxisLayout(shape: shape, axis: axis) : AxisLayout(shape: [Int64(w.count)], axis: 0)
        func channel(_ i: Int) -> Int { perChannel ? (i / l.inner) % l.along : 0 }
        var absmax = [Float](repeating: 0, count: perChannel ? l.along : 1)
        for i in w.indices { absmax[channel(i)] = max(absmax[channel(i)], abs(w[i])) }
        let scales = absmax.map { $0 > 0 ? $0 / 127 : 1 }
        let q = w.indices.map { i -> UInt8 in
            let x = (w[i] * (1 / scales[channel(i)])).rounded(.toNearestOrEven)
            return UInt8(bitPattern: Int8(min(127, max(-127, x))))
        }
        return (q, scales)
    }

    @Test(arguments: [
        ([37, 45] as [Int64], true, 1),  // MatMul-like: channel is the last axis, 45 = 5 vectors + a tail of 5
        ([45, 37], true, 0),  // Gemm transB / Gather rows: runs of 37 per channel
        ([3, 5, 19], true, 1),  // a middle axis
        ([29, 31], false, 0)  // per-tensor
    ])
    func vectorEncoderMatchesTheScalarDefinition(shape: [Int64], perChannel: Bool, axis: Int) {
        let n = Int(shape.reduce(1, *))
        var w = floats(n, std: 0.3, seed: UInt64(n))
        w[3] = 0; w[n - 1] = -0.0
        // An all-zero channel.
        if perChannel, axis == shape.count - 1 { for r in 0..<(n / Int(shape[axis])) { w[r * Int(shape[axis]) + 2] = 0 } }
        w[n / 2] = 40  // one outlier clamps nothing (it sets its channel's scale)
        let expected = reference(w, shape: shape, perChannel: perChannel, axis: axis)
        // The same values at every byte offset mod 4: ONNX raw_data is rarely aligned.
        for shift in 0..<4 {
            var storage = [UInt8](repeating: 0xAB, count: n * 4 + shift)
            storage.withUnsafeMutableBytes { b in
                w.withUnsafeBytes { (b.baseAddress! + shift).copyMemory(from: $0.baseAddress!, byteCount: n * 4) }
            }
            var meter = ErrorMeter()
            let parts = storage.withUnsafeBytes { b in
                let v = UnsafeRawBufferPointer(rebasing: b[shift...])
                return TensorCodec.encodeInt8(v, original: v, shape: shape, perChannel: perChannel, axis: axis, meter: &meter)
            }
            #expect(parts[0] == expected.q, "shift \(shift)")
            #expect(parts[1] == TensorCodec.floatBytes(expected.scales), "shift \(shift)")
            // The meter agrees with a dequantization by hand (sums in another order: close, not equal).
            var check = ErrorMeter()
            let l = perChannel ? AxisLayout(shape: shape, axis: axis) : AxisLayout(shape: [Int64(n)], axis: 0)
            for i in 0..<n {
                let c = perChannel ? (i / l.inner) % l.along : 0
                check.add(w[i], Float(Int8(bitPattern: expected.q[i])) * expected.scales[c])
            }
            #expect(meter.zeros == check.zeros && meter.count == check.count)
            #expect(meter.maxAbs == check.maxAbs)
            #expect(abs(meter.relativeL2 - check.relativeL2) <= 1e-5 * check.relativeL2)
        }
    }

    @Test func roundingTiesGoToEvenAndNaNClampsLikeTheScalarCode() {
        // Scale 1 (absmax 127): x·1 exactly on .5 must round to the even neighbour.
        // NaN once in a vector and once in the tail.
        let w: [Float] = [127, 0.5, 1.5, .nan, 2.5, -0.5, -1.5, -2.5, 126.5, .nan, -127]
        var meter = ErrorMeter()
        let parts = w.withUnsafeBytes { b in
            TensorCodec.encodeInt8(b, original: b, shape: [1, 11], perChannel: false, axis: 0, meter: &meter)
        }
        #expect(parts[0].map { Int8(bitPattern: $0) } == [127, 0, 2, -127, 2, 0, -2, -2, 126, -127, -127])
        #expect(parts[0] == reference(w, shape: [1, 11], perChannel: false, axis: 0).q)
    }

    @Test func anInt8VariantIsTheSameBuildAfterBuild() throws {
        let dir = try TempDir()
        let input = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "mlp.onnx")
        let r = recipe("int8", [.int8(.perChannel)])
        let a = try VariantBuilder.build(.init(input: input, output: dir.file("a.onnx"), recipe: r, zstdLevel: nil))
        let b = try VariantBuilder.build(.init(input: input, output: dir.file("b.onnx"), recipe: r, zstdLevel: 3))
        #expect(a.output.sha256 == b.output.sha256)
        #expect(a.tensors == b.tensors)
        // Every quantized weight is the scalar definition of its fp32 source.
        let model = try Onnx_ModelProto(serializedBytes: Array(try Data(contentsOf: URL(fileURLWithPath: dir.file("a.onnx")))))
        let source = try Onnx_ModelProto(serializedBytes: Array(try Data(contentsOf: URL(fileURLWithPath: input))))
        var checked = 0
        for node in model.graph.node where node.opType == "DequantizeLinear" {
            let name = node.output[0]
            let w = try #require(source.graph.initializer.first { $0.name == name })
            let floats = w.rawData.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            let axis = node.attribute.first { $0.name == "axis" }.map { Int($0.i) } ?? 0
            let expected = reference(floats, shape: w.dims, perChannel: true, axis: axis)
            let q = try #require(model.graph.initializer.first { $0.name == node.input[0] })
            #expect(Array(q.rawData) == expected.q, "\(name)")
            checked += 1
        }
        #expect(checked == 4)
    }
}
