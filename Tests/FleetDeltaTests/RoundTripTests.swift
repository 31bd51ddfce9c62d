import Foundation
import Testing
@testable import FleetDelta

@Suite struct RoundTripTests {
    @Test(arguments: DeltaMethod.allCases)
    func safetensorsFineTuneRoundTrips(_ method: DeltaMethod) throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let base = Fixture.baseTensors()
        let a = SafetensorsWriter.write(base, metadata: ["format": "pt"])
        let b = SafetensorsWriter.write(Fixture.fineTuned(base), metadata: ["format": "pt"])
        let (report, out) = try roundTrip(dir, base: a, target: b, methods: [method])
        #expect(out == b)
        #expect(report.method == method)
        #expect(report.methods.map(\.status) == [.kept])
        #expect(report.packageSize == Int64(try dir.read("x.delta").count))
    }

    @Test(arguments: DeltaMethod.allCases)
    func onnxFineTuneRoundTrips(_ method: DeltaMethod) throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let base = Fixture.baseTensors()
        let a = ONNXWriter.write(base)
        let b = ONNXWriter.write(Fixture.fineTuned(base), producer: "edgefleet-tests v2", packedDims: false)
        let (report, out) = try roundTrip(dir, base: a, target: b, methods: [method])
        #expect(out == b)
        #expect(report.method == method)
        if method == .tensor {
            let stats = try #require(report.tensors)
            #expect(stats.format == "onnx")
            #expect(stats.changed == 3)
            #expect(stats.unchanged == 4)
        }
    }

    @Test func onnxWalkerFindsInitializersWithRawData() throws {
        let tensors = Fixture.baseTensors()
        let bytes = ONNXWriter.write(tensors, packedDims: false)
        let layout = try bytes.withUnsafeBytes { try ONNXWalker.parse($0).get() }
        #expect(layout.format == .onnx)
        #expect(layout.tensors.map(\.name) == tensors.map(\.name))
        #expect(layout.tensors.map(\.dtype) == tensors.map(\.dtype))
        #expect(layout.tensors.map(\.shape) == tensors.map { $0.shape.map(Int64.init) })
        for (found, t) in zip(layout.tensors, tensors) {
            #expect(Array(bytes[Int(found.offset)..<Int(found.offset + found.length)]) == t.data)
        }
    }

    @Test func safetensorsLayoutMatchesTheWriter() throws {
        let tensors = Fixture.baseTensors()
        let bytes = SafetensorsWriter.write(tensors, metadata: ["k": "v"])
        let layout = try bytes.withUnsafeBytes { try TensorLayout.parse($0).get() }
        #expect(layout.format == .safetensors)
        #expect(Set(layout.tensors.map(\.name)) == Set(tensors.map(\.name)))
        #expect(layout.gaps.count == 1)
        #expect(layout.gaps[0].offset == 0)
    }

    @Test(arguments: DeltaMethod.allCases)
    func arbitraryBytesRoundTripOrAreNotApplicable(_ method: DeltaMethod) throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = SeededRNG(seed: 7)
        let a = (0..<50_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var b = a
        b.insert(contentsOf: Array("a new chunk of text in the middle".utf8), at: 20_000)
        b.removeSubrange(40_000..<40_100)
        if method == .tensor {
            let code = deltaErrorCode { _ = try roundTrip(dir, base: a, target: b, methods: [.tensor]) }
            #expect(code == .notApplicable)
            #expect(!FileManager.default.fileExists(atPath: dir.file("x.delta")))
            return
        }
        let (report, out) = try roundTrip(dir, base: a, target: b, methods: [method])
        #expect(out == b)
        if method == .zstdPatch { #expect(report.packageSize < 1_000) }
    }

    @Test func autoTriesEveryMethodAndKeepsTheSmallest() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let base = Fixture.baseTensors()
        let a = SafetensorsWriter.write(base)
        let b = SafetensorsWriter.write(Fixture.fineTuned(base))
        let (report, out) = try roundTrip(dir, base: a, target: b)
        #expect(out == b)
        #expect(report.methods.map(\.method) == [.tensor, .zstdPatch, .full])
        let sizes = report.methods.compactMap(\.size)
        #expect(sizes.count == 3)
        #expect(report.packageSize == sizes.min())
        #expect(report.methods.filter { $0.status == .kept }.map(\.method) == [report.method])
        #expect(report.method == .tensor)
        // Only the package is left: no per-method temporary files.
        #expect(dir.listing() == ["x.base", "x.delta", "x.out", "x.target"])
    }

    @Test func metadataOnlyChangeReferencesEveryTensor() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let base = Fixture.baseTensors()
        let a = SafetensorsWriter.write(base, metadata: ["format": "pt"])
        let b = SafetensorsWriter.write(base, metadata: ["format": "pt", "finetuned_on": "customer-data-2026-11"])
        let (report, out) = try roundTrip(dir, base: a, target: b, methods: [.tensor])
        #expect(out == b)
        let stats = try #require(report.tensors)
        #expect(stats.unchanged == base.count)
        #expect(stats.changed == 0)
        #expect(report.packageSize < 400)
    }

    @Test func renamedAndReorderedTensorsAreCopiedFromTheBase() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let base = Fixture.baseTensors()
        var target = base.reversed().map { $0 }
        target[0].name = "renamed." + target[0].name
        let a = SafetensorsWriter.write(base)
        let b = SafetensorsWriter.write(target)
        let (report, out) = try roundTrip(dir, base: a, target: b, methods: [.tensor])
        #expect(out == b)
        let stats = try #require(report.tensors)
        #expect(stats.renamed == 1)
        #expect(stats.unchanged == base.count - 1)
        #expect(report.packageSize < 600)
    }

    @Test func rowsAppendedToATensorAreCodedAgainstTheOldRows() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = SeededRNG(seed: 11)
        let base = Fixture.baseTensors()
        var target = base
        // Vocabulary grows: 64 → 72 rows of the embedding.
        target[0].shape = [72, 32]
        target[0].data += TensorData.random(dtype: "F32", count: 8 * 32, using: &rng)
        let a = SafetensorsWriter.write(base)
        let b = SafetensorsWriter.write(target)
        let (report, out) = try roundTrip(dir, base: a, target: b, methods: [.tensor])
        #expect(out == b)
        let stats = try #require(report.tensors)
        #expect(stats.reshaped == 1)
        #expect(stats.codings["prefixed"] == 1)
        #expect(report.packageSize < 8 * 32 * 4 + 1_000)
    }

    @Test func sparseInt8ChangesUseTheRangeCoder() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = SeededRNG(seed: 12)
        let q = TestTensor(name: "q", dtype: "I8", shape: [256, 256], data: TensorData.random(dtype: "I8", count: 65_536, using: &rng))
        var q2 = q
        for _ in 0..<300 {
            let i = Int.random(in: 0..<q2.data.count, using: &rng)
            q2.data[i] = q2.data[i] &+ (Bool.random(using: &rng) ? 1 : 255)
        }
        let (report, out) = try roundTrip(
            dir, base: SafetensorsWriter.write([q]), target: SafetensorsWriter.write([q2]), methods: [.tensor])
        #expect(out == SafetensorsWriter.write([q2]))
        // 300 changes of ±1 in 65,536 elements: about 2.5 bits each, not one bit per element.
        #expect(report.tensors?.codings == ["sub/modeled": 1])
        #expect(report.packageSize < 800)
    }

    @Test func sparseWideIntegerChangesUseTheSparseCoding() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = SeededRNG(seed: 15)
        let ids = TestTensor(name: "ids", dtype: "I32", shape: [50_000], data: TensorData.random(dtype: "I32", count: 50_000, using: &rng))
        var ids2 = ids
        for _ in 0..<200 {
            let i = Int.random(in: 0..<50_000, using: &rng) * 4
            ids2.data[i] = ids2.data[i] &+ 1
        }
        let a = SafetensorsWriter.write([ids]), b = SafetensorsWriter.write([ids2])
        let (report, out) = try roundTrip(dir, base: a, target: b, methods: [.tensor])
        #expect(out == b)
        #expect(report.tensors?.codings.keys.contains { $0.hasSuffix("/sparse") } == true)
        #expect(report.packageSize < 1_500)
    }

    @Test func nudgedFloatsCodeInLessThanHalfTheirSize() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = SeededRNG(seed: 13)
        let w = TestTensor(name: "w", dtype: "F32", shape: [512, 256], data: TensorData.random(dtype: "F32", count: 131_072, using: &rng))
        var w2 = w
        w2.data = TensorData.nudge(w.data, dtype: "F32", relative: 1e-4, using: &rng)
        let a = SafetensorsWriter.write([w]), b = SafetensorsWriter.write([w2])
        let (report, out) = try roundTrip(dir, base: a, target: b, methods: [.tensor, .zstdPatch])
        #expect(out == b)
        #expect(report.method == .tensor)
        #expect(report.packageSize < Int64(w.data.count) / 2)
        let patch = try #require(report.methods.first { $0.method == .zstdPatch }?.size)
        #expect(report.packageSize < patch * 3 / 4)
    }

    /// The decoder's declared buffers stay far below a large tensor: it works chunk by chunk.
    @Test func decodeBuffersDoNotGrowWithTheTensor() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = SeededRNG(seed: 14)
        let count = 4_000_000
        let w = TestTensor(name: "big", dtype: "F32", shape: [count], data: TensorData.random(dtype: "F32", count: count, using: &rng))
        var w2 = w
        for i in stride(from: 0, to: w2.data.count, by: 4096) { w2.data[i] ^= 1 }
        let a = SafetensorsWriter.write([w]), b = SafetensorsWriter.write([w2])
        let (_, out) = try roundTrip(dir, base: a, target: b, methods: [.tensor], level: 3)
        #expect(out == b)
        let header = try DeltaDecoder.readHeader(dir.file("x.delta"))
        #expect(header.method == .tensor)
        #expect(header.decodeBufferBytes < Int64(w.data.count) * 3 / 4)
    }

    @Test(arguments: DeltaMethod.allCases)
    func emptyAndTinyFiles(_ method: DeltaMethod) throws {
        let dir = try TempDir()
        defer { dir.remove() }
        for (i, pair) in [([UInt8](), [UInt8]()), ([1, 2, 3], []), ([], [1, 2, 3]), ([9], [9])].enumerated() {
            if method == .tensor {
                #expect(
                    deltaErrorCode { _ = try roundTrip(dir, base: pair.0, target: pair.1, methods: [method], tag: "t\(i)") }
                        == .notApplicable)
                continue
            }
            let (_, out) = try roundTrip(dir, base: pair.0, target: pair.1, methods: [method], tag: "t\(i)")
            #expect(out == pair.1)
        }
    }

    @Test func headerReadBackIsWhatTheEncoderWrote() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let base = Fixture.baseTensors()
        let a = SafetensorsWriter.write(base), b = SafetensorsWriter.write(Fixture.fineTuned(base))
        let (report, _) = try roundTrip(dir, base: a, target: b, methods: [.tensor])
        let h = try DeltaDecoder.readHeader(dir.file("x.delta"))
        #expect(h.method == .tensor)
        #expect(h.baseSha256 == report.baseSha256)
        #expect(h.targetSha256 == report.targetSha256)
        #expect(h.baseSize == Int64(a.count))
        #expect(h.targetSize == Int64(b.count))
        #expect(h.packageLength == report.packageSize)
        #expect(h.sectionLengths.count == 2)
        #expect(try DeltaHeader.parse(h.serialized()) == h)
    }
}
