import Foundation
import Testing
@testable import FleetCompression

/// Inputs the builder must refuse with a typed error naming the tensor, leaving no output behind.
@Suite struct RejectionTests {
    /// Builds `input` with int8 and returns the error; checks that only the inputs remain in `dir`.
    func reject(_ dir: TempDir, _ input: String, _ out: String = "out.onnx") -> CompressionError? {
        let before = dir.entries
        defer { #expect(dir.entries == before, "a failed build left files behind") }
        do {
            _ = try VariantBuilder.build(.init(input: input, output: dir.file(out), recipe: recipe("int8", [.int8(.perChannel)])))
        } catch let e as CompressionError { return e } catch { Issue.record("untyped error \(error)") }
        return nil
    }

    @Test func truncatedProtobuf() throws {
        let dir = try TempDir()
        let good = try ONNXFixture.mlp().serializedBytes() as [UInt8]
        for cut in [good.count - 1, good.count / 2, 7] {
            let p = try dir.write("cut\(cut).onnx", Array(good.prefix(cut)))
            let e = reject(dir, p)
            #expect(e?.code == .truncated || e?.code == .malformed, "cut at \(cut): \(String(describing: e))")
        }
    }

    @Test func malformedProtobuf() throws {
        let dir = try TempDir()
        // Field 7 (graph) claiming more bytes than the file has, a wire type 7, a varint that never ends.
        for (name, bytes) in [
            ("len", [0x3A, 0xFF, 0x01, 0x00]), ("wire", [0x3F, 0x00]), ("varint", [0x08] + [UInt8](repeating: 0xFF, count: 11))
        ] as [(String, [UInt8])] {
            let e = reject(dir, try dir.write("\(name).onnx", bytes))
            #expect(e?.code == .malformed || e?.code == .truncated, "\(name)")
        }
        #expect(reject(dir, try dir.write("nograph.onnx", [0x08, 0x08]))?.code == .malformed)
    }

    @Test func tensorDataDisagreesWithItsShape() throws {
        let dir = try TempDir()
        var m = ONNXFixture.mlp()
        m.graph.initializer[2].dims = [128, 33]
        let e = reject(dir, try ONNXFixture.write(m, to: dir, "m.onnx"))
        #expect(e?.code == .shapeMismatch)
        #expect(e?.tensor == "W2")
    }

    @Test func externalDataLeavingTheModelsFolder() throws {
        let dir = try TempDir()
        try FileManager.default.createDirectory(atPath: dir.file("model"), withIntermediateDirectories: true)
        try dir.write("secret.bin", [UInt8](repeating: 1, count: 64 * 128 * 4))
        try FileManager.default.createSymbolicLink(atPath: dir.file("model/link.bin"), withDestinationPath: dir.file("secret.bin"))
        for location in ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "link.bin"] {
            var m = ONNXFixture.mlp()
            var t = m.graph.initializer[0]
            t.clearRawData()
            t.dataLocation = .external
            var e = Onnx_StringStringEntryProto(); e.key = "location"; e.value = location
            t.externalData = [e]
            m.graph.initializer[0] = t
            let p = try ONNXFixture.write(m, to: dir, "model/m.onnx")
            let err = reject(dir, p, "model/out.onnx")
            #expect(err?.code == .pathEscapes, "\(location)")
            #expect(err?.tensor == "W1")
            #expect(!FileManager.default.fileExists(atPath: dir.file("model/out.onnx")))
        }
    }

    @Test func externalDataShorterThanTheTensor() throws {
        let dir = try TempDir()
        try dir.write("w.bin", [UInt8](repeating: 0, count: 100))
        var m = ONNXFixture.mlp()
        var t = m.graph.initializer[0]
        t.clearRawData()
        t.dataLocation = .external
        var e = Onnx_StringStringEntryProto(); e.key = "location"; e.value = "w.bin"
        t.externalData = [e]
        m.graph.initializer[0] = t
        let err = reject(dir, try ONNXFixture.write(m, to: dir, "m.onnx"))
        #expect(err?.code == .truncated)
        #expect(err?.tensor == "W1")
    }

    @Test func unsupportedDataType() throws {
        let dir = try TempDir()
        var m = ONNXFixture.mlp()
        m.graph.initializer[1].dataType = 99
        let e = reject(dir, try ONNXFixture.write(m, to: dir, "m.onnx"))
        #expect(e?.code == .unsupportedDataType)
        #expect(e?.tensor == "b1")
        let st = try dir.write("m.safetensors", SafetensorsFixture.write([("w", "C64", [2], [UInt8](repeating: 0, count: 16))]))
        let e2 = reject(dir, st, "out.safetensors")
        #expect(e2?.code == .unsupportedDataType)
        #expect(e2?.tensor == "w")
    }

    @Test func safetensorsHeaderOverlappingItsData() throws {
        let dir = try TempDir()
        var file = SafetensorsFixture.small()
        // Move layers.1.weight's offsets back into layers.0.weight's bytes.
        var header = String(decoding: file[8..<(8 + Int(file.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }))], as: UTF8.self)
        let begin = 64 * 96 * 4 + 64 * 4
        header = header.replacingOccurrences(of: "[\(begin),\(begin + 32 * 64 * 4)]", with: "[\(begin - 8),\(begin - 8 + 32 * 64 * 4)]")
        let h = Array(header.utf8)
        file.replaceSubrange(8..<(8 + h.count), with: h)
        let e = reject(dir, try dir.write("m.safetensors", file), "out.safetensors")
        #expect(e?.code == .overlap)
        #expect(e?.tensor == "layers.1.weight" || e?.tensor == "layers.0.bias")
    }

    @Test func safetensorsShapeAndLengthProblems() throws {
        let dir = try TempDir()
        let wrongShape = SafetensorsFixture.write([("w", "F32", [4, 4], [UInt8](repeating: 0, count: 60))])
        let e = reject(dir, try dir.write("a.safetensors", wrongShape), "out.safetensors")
        #expect(e?.code == .shapeMismatch)
        #expect(e?.tensor == "w")
        let good = SafetensorsFixture.small()
        #expect(reject(dir, try dir.write("b.safetensors", Array(good.dropLast(10))), "out.safetensors")?.code == .truncated)
        #expect(
            reject(dir, try dir.write("c.safetensors", [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x7B]), "out.safetensors")?.code == .malformed)
        var badJSON = good
        badJSON[9] = UInt8(ascii: "!")
        #expect(reject(dir, try dir.write("d.safetensors", badJSON), "out.safetensors")?.code == .malformed)
    }

    @Test func outputInAnotherFormatIsRefused() throws {
        let dir = try TempDir()
        let p = try ONNXFixture.write(ONNXFixture.mlp(), to: dir, "m.onnx")
        #expect(reject(dir, p, "out.safetensors")?.code == .unsupportedFormat)
    }
}
