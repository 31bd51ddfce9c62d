import Testing
@testable import FleetDelta

@Suite struct CodecTests {
    static let cases: [(TensorTransform, Int)] = [1, 2, 4, 8].flatMap { w in
        [TensorTransform.none, .xor, .subInt, .subFloat].map { ($0, w) }
    }

    @Test(arguments: cases)
    func transformsInvert(_ transform: TensorTransform, _ width: Int) {
        var rng = SeededRNG(seed: UInt64(width * 10) + UInt64(transform.rawValue))
        let n = 1_000 * width
        let target = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var base = target
        // Some equal, some near, some far, some across the sign.
        for i in stride(from: 0, to: n, by: width * 3) { base[i] = base[i] &+ 1 }
        for i in stride(from: width - 1, to: n, by: width * 7) { base[i] ^= 0x80 }
        var delta = [UInt8](repeating: 0, count: n)
        target.withUnsafeBytes { t in
            base.withUnsafeBytes { b in
                delta.withUnsafeMutableBytes { d in
                    TensorCodec.forward(transform, width: width, target: t, base: b, into: d)
                }
            }
        }
        base.withUnsafeBytes { b in delta.withUnsafeMutableBytes { d in TensorCodec.inverse(transform, width: width, values: d, base: b) } }
        #expect(delta == target)
    }

    @Test func floatOrderDifferenceIsSmallAcrossZero() {
        // The smallest negative and positive floats are three steps apart (−tiny, −0, +0, +tiny)…
        let a = (-Float.leastNonzeroMagnitude).bitPattern, b = Float.leastNonzeroMagnitude.bitPattern
        let d = TensorCodec.floatKey(b) &- TensorCodec.floatKey(a)
        #expect(TensorCodec.zigzag(d) == 6)
        // …while their XOR has the sign bit set.
        #expect(a ^ b >= 1 << 31)
        // Nudging 1.0 down by one ulp is a difference of -1: zigzag 1.
        let one = Float(1).bitPattern
        #expect(TensorCodec.zigzag(TensorCodec.floatKey(one - 1) &- TensorCodec.floatKey(one)) == 1)
        #expect(TensorCodec.floatKey(TensorCodec.floatKey(a)) == a)
    }

    @Test(arguments: [1, 2, 4, 8])
    func shuffleChunksInvert(_ width: Int) {
        var rng = SeededRNG(seed: 99)
        let elements = 1_000
        let input = (0..<(elements * width)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var shuffled = [UInt8](repeating: 0, count: input.count)
        input.withUnsafeBytes { i in
            shuffled.withUnsafeMutableBytes { o in TensorCodec.shuffle(i, width: width, chunkElements: 300, into: o) }
        }
        if width == 4 {
            // First chunk: byte 0 of elements 0…299, then byte 1 of them, …
            #expect(shuffled[1] == input[4])
            #expect(shuffled[300] == input[1])
        }
        var back = [UInt8](repeating: 0, count: input.count)
        var start = 0
        while start < elements {
            let n = min(300, elements - start)
            let range = (start * width)..<((start + n) * width)
            shuffled.withUnsafeBytes { s in
                back.withUnsafeMutableBytes { o in
                    TensorCodec.unshuffleChunk(
                        UnsafeRawBufferPointer(rebasing: s[range]), width: width,
                        into: UnsafeMutableRawBufferPointer(rebasing: o[range]))
                }
            }
            start += n
        }
        #expect(back == input)
    }

    @Test func planSerializesAndParses() throws {
        var plan = TensorPlan()
        plan.structureLength = 120
        plan.structureFrame = .init(offset: 0, length: 40)
        plan.structurePrefix = [.init(offset: 0, length: 100), .init(offset: 5_000, length: 20)]
        plan.ops = [
            .structure(length: 100),
            .copy(baseOffset: 100, length: 4_900),
            .tensor(
                .init(
                    length: 4_096, elementSize: 4, transform: .subFloat, chunkElements: 1 << 18, baseOffset: 100,
                    coding: .dense(values: .init(offset: 40, length: 300)))),
            .tensor(
                .init(
                    length: 1_024, elementSize: 1, transform: .subInt, chunkElements: 1 << 18, baseOffset: 3_000,
                    coding: .sparse(
                        runs: .init(offset: 340, length: 12), runsLength: 30, values: .init(offset: 352, length: 20), nonzero: 25))),
            .prefixed(length: 2_000, baseOffset: 0, baseLength: 1_000, frame: .init(offset: 372, length: 50)),
            .tensor(
                .init(
                    length: 512, elementSize: 1, transform: .subInt, chunkElements: 1 << 18, baseOffset: 0,
                    coding: .modeled(lanes: [.init(offset: 400, length: 11), .init(offset: 411, length: 11)], lengths: [9, 8]))),
            .structure(length: 20)
        ]
        #expect(try TensorPlan.parse(plan.serialized()) == plan)
        let header = DeltaHeader(
            method: .tensor, baseSize: 5_020, targetSize: plan.ops.reduce(0) { $0 + $1.length },
            baseSha256: String(repeating: "a", count: 64), targetSha256: String(repeating: "b", count: 64),
            decodeBufferBytes: plan.decodeBufferBytes, sectionLengths: [10, 422])
        try plan.validate(header: header, dataLength: 422)

        // Each of these breaks one rule the decoder checks before writing.
        var outside = plan
        outside.ops[1] = .copy(baseOffset: 100, length: 5_000)
        var short = header
        short.targetSize -= 1
        var frameOut = plan
        frameOut.ops[4] = .prefixed(length: 2_000, baseOffset: 0, baseLength: 1_000, frame: .init(offset: 400, length: 50))
        var tooMuchMemory = header
        tooMuchMemory.decodeBufferBytes -= 1
        for (p, h) in [(outside, header), (plan, short), (frameOut, header), (plan, tooMuchMemory)] {
            #expect(deltaErrorCode { try p.validate(header: h, dataLength: 422) } == .corrupt)
        }
        // Cut anywhere, the plan does not parse.
        let bytes = plan.serialized()
        for cut in 0..<bytes.count {
            #expect(deltaErrorCode { _ = try TensorPlan.parse(Array(bytes[0..<cut])) } == .corrupt)
        }
    }
}
