import Testing
@testable import FleetDelta

@Suite struct RangeCoderTests {
    /// Codes `z` against `base` as the encoder does (element i in lane i % 2) and returns a decoder
    /// over the two streams, each written as a zstd frame; `tamper` may change a stream first.
    static func coded(_ dir: TempDir, _ z: [UInt8], _ base: [UInt8], tamper: (Int, [UInt8]) -> [UInt8] = { $1 }) throws
        -> (ByteDeltaDecoder, [Int])
    {
        var coders = [RangeEncoder(), RangeEncoder()]
        var model = ByteDeltaModel()
        for i in 0..<z.count { model.encode(z[i], base: base[i], index: i, &coders) }
        let shared = SharedValueTables()
        var lanes: [ModeledLane] = []
        var sizes: [Int] = []
        for k in 0..<2 {
            let stream = tamper(k, coders[k].finish())
            sizes.append(stream.count)
            let frame = try stream.withUnsafeBytes { try ZstdCompressor().compress($0, .init(level: 1)) }
            let file = try InputFile(try dir.write("lane\(k).zst", frame))
            let reader = try FrameReader(file: file, offset: 0, length: Int64(frame.count), windowLogMax: 23, what: "lane \(k)")
            lanes.append(try ModeledLane(reader, length: Int64(stream.count), shared: shared))
        }
        return (ByteDeltaDecoder(lanes), sizes)
    }

    @Test(arguments: [0.0, 0.001, 0.05, 0.5, 1.0])
    func byteDeltaModelRoundTrips(_ changeRate: Double) throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = SeededRNG(seed: UInt64(changeRate * 1000) + 5)
        let n = 100_001
        let base = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
        // zigzag values: mostly 0, some ±1, a few anything (including 255 = −128 and 254 = +127).
        let z: [UInt8] = (0..<n).map { _ in
            guard Double.random(in: 0..<1, using: &rng) < changeRate else { return 0 }
            return Bool.random(using: &rng) ? UInt8.random(in: 1...2, using: &rng) : UInt8.random(in: 1...255, using: &rng)
        }
        let (dec, sizes) = try Self.coded(dir, z, base)
        var back = [UInt8](repeating: 0, count: n)
        // In uneven pieces (odd starts too), as chunks of a tensor arrive.
        var at = 0
        for piece in [1, 999, 40_000, 2, n] where at < n {
            let end = min(n, at + piece)
            try base.withUnsafeBytes { b in
                try back.withUnsafeMutableBytes { o in
                    try dec.decode(
                        base: UnsafeRawBufferPointer(rebasing: b[at..<end]), into: UnsafeMutableRawBufferPointer(rebasing: o[at..<end]))
                }
            }
            at = end
        }
        try dec.finish()
        #expect(back == z)
        if changeRate == 0 { #expect(sizes.reduce(0, +) < 300) }
    }

    @Test(arguments: [0, 1])
    func truncatedOrExtendedStreamsAreCorrupt(_ lane: Int) throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let base = (0..<5_000).map { UInt8($0 & 0xFF) }
        let z = (0..<5_000).map { UInt8($0 % 7 == 0 ? 2 : 0) }
        for (what, change) in [("short", { (s: [UInt8]) in Array(s.dropLast(2)) }), ("long", { (s: [UInt8]) in s + [0, 0, 0] })] {
            var out = [UInt8](repeating: 0, count: 5_000)
            let code = deltaErrorCode {
                let (dec, _) = try Self.coded(dir, z, base, tamper: { k, s in k == lane ? change(s) : s })
                try base.withUnsafeBytes { b in try out.withUnsafeMutableBytes { o in try dec.decode(base: b, into: o) } }
                try dec.finish()
            }
            #expect(code == .corrupt, "\(what) lane \(lane)")
        }
    }
}
