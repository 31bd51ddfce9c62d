import Foundation
import Testing
@testable import FleetCompression

@Suite struct CodecTests {
    func encoding(_ kind: TensorEncoding.Kind, channel: Int = 0, block: Int = 1) -> TensorEncoding {
        TensorEncoding(kind: kind, channelAxis: channel, blockAxis: block)
    }

    @Test func fp16RoundsToNearestEvenAndCountsOverflow() {
        // 1 + 2^-11 lies exactly between two fp16 values: ties go to the even one (1.0).
        let values: [Float] = [1 + 0x1p-11, 1 + 3 * 0x1p-11, 70000, -1e6, 65504, 0.5]
        let (parts, meter) = TensorCodec.encode(values, original: values, shape: [2, 3], as: encoding(.fp16))
        let halfs = parts[0].withUnsafeBytes { b in
            (0..<6).map { Float(Float16(bitPattern: b.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) }
        }
        #expect(halfs[0] == 1)
        #expect(halfs[1] == 1 + 4 * 0x1p-11)
        #expect(halfs[2].isInfinite && halfs[3].isInfinite)
        #expect(halfs[4] == 65504)
        #expect(meter.overflow == 2)
    }

    @Test func int8PerChannelErrorIsBoundedByHalfAStep() {
        let w = floats(32 * 48, std: 0.2, seed: 3)
        let (parts, meter) = TensorCodec.encode(w, original: w, shape: [32, 48], as: encoding(.int8(perChannel: true), channel: 1))
        #expect(parts[0].count == 32 * 48)
        #expect(parts[1].count == 48 * 4)
        let scales = parts[1].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        // Column c's scale is its absmax / 127, and every value is within half a step.
        for c in 0..<48 {
            let col = (0..<32).map { w[$0 * 48 + c] }
            #expect(abs(scales[c] - col.map(abs).max()! / 127) < 1e-9)
        }
        #expect(meter.maxAbs <= Double(scales.max()!) / 2 + 1e-7)
        #expect(meter.relativeL2 < 0.01)
        #expect(meter.snrDb! > 40)
    }

    @Test func int8PerTensorHasOneScale() {
        let w = floats(64 * 16, seed: 4)
        let (parts, _) = TensorCodec.encode(w, original: w, shape: [64, 16], as: encoding(.int8(perChannel: false)))
        #expect(parts[1].count == 4)
        #expect(encoding(.int8(perChannel: false)).parts(shape: [64, 16])[1].shape == [])
    }

    @Test func int4BlocksPackTwoPerByteWithZeroPoints() {
        // 2 rows × 40 along the block axis, block 32: two blocks per row (the second one short).
        let w = floats(80, std: 0.5, seed: 5)
        let enc = encoding(.int4(blockSize: 32), channel: 0, block: 1)
        let specs = enc.parts(shape: [2, 40])
        #expect(specs.map(\.shape) == [[2, 40], [2, 2], [2, 2]])
        #expect(specs.map(\.dtype) == [.uint4, .f32, .uint4])
        let (parts, meter) = TensorCodec.encode(w, original: w, shape: [2, 40], as: enc)
        #expect(parts.map(\.count) == [40, 16, 2])
        // Dequantize by hand from the stored parts and compare with the meter's view.
        let scales = parts[1].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        func nibble(_ b: [UInt8], _ i: Int) -> Float { Float(i & 1 == 0 ? b[i >> 1] & 0x0F : b[i >> 1] >> 4) }
        var maxErr: Float = 0
        for r in 0..<2 {
            for j in 0..<40 {
                let s = r * 2 + j / 32
                let v = (nibble(parts[0], r * 40 + j) - nibble(parts[2], s)) * scales[s]
                maxErr = max(maxErr, abs(v - w[r * 40 + j]))
            }
        }
        #expect(abs(Double(maxErr) - meter.maxAbs) < 1e-6)
        #expect(meter.relativeL2 < 0.15)
    }

    @Test func int4KeepsZeroExact() {
        var w = floats(64, std: 0.3, seed: 6)
        for i in stride(from: 0, to: 64, by: 3) { w[i] = 0 }
        let (_, meter) = TensorCodec.encode(w, original: w, shape: [1, 64], as: encoding(.int4(blockSize: 32), channel: 0, block: 1))
        #expect(meter.zeros >= 22)
    }

    @Test func ternaryAndBinaryUseThreeAndTwoLevels() {
        let w = floats(16 * 64, seed: 8)
        let (t, tm) = TensorCodec.encode(w, original: w, shape: [16, 64], as: encoding(.ternary))
        #expect(Set(t[0].map { Int8(bitPattern: $0) }) == [-1, 0, 1])
        #expect(tm.sparsity > 0.2)
        let (b, bm) = TensorCodec.encode(w, original: w, shape: [16, 64], as: encoding(.binary))
        #expect(Set(b[0].map { Int8(bitPattern: $0) }) == [-1, 1])
        #expect(bm.zeros == 0)
    }

    @Test func pruningThresholdIsExact() {
        let w = floats(10_000, seed: 9)
        let t = MagnitudePruner.threshold(w, sparsity: 0.5)
        let sorted = w.map(abs).sorted()
        #expect(t == sorted[4999])
        var p = w
        MagnitudePruner.apply(&p, threshold: t)
        #expect(p.filter { $0 == 0 }.count == 5000)
        // The largest half is untouched.
        for i in w.indices where abs(w[i]) > t { #expect(p[i] == w[i]) }
    }

    @Test func meterReportsExactTensorsAsLossless() {
        let w = floats(100, seed: 10)
        var m = ErrorMeter()
        for x in w { m.add(x, x) }
        #expect(m.relativeL2 == 0)
        #expect(m.snrDb == nil)
        #expect(m.maxAbs == 0)
    }
}
