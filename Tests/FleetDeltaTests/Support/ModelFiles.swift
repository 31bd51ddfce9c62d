import FleetCore
import Foundation

/// A tensor as the test writers take it: raw little-endian element bytes.
struct TestTensor: Equatable {
    var name: String
    var dtype: String
    var shape: [Int]
    var data: [UInt8]

    static func elementSize(_ dtype: String) -> Int {
        switch dtype {
        case "F64", "I64", "U64": 8
        case "F32", "I32", "U32": 4
        case "F16", "BF16", "I16", "U16": 2
        default: 1
        }
    }

    var elementCount: Int { shape.reduce(1, *) }
}

/// A minimal safetensors writer: 8-byte header length, JSON header (optionally with __metadata__),
/// padding to 8 bytes, then the tensors in the given order.
enum SafetensorsWriter {
    static func write(_ tensors: [TestTensor], metadata: [String: String]? = nil) -> [UInt8] {
        var entries: [String] = []
        if let metadata {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }
            entries.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for t in tensors {
            entries.append(
                "\"\(t.name)\":{\"dtype\":\"\(t.dtype)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],"
                    + "\"data_offsets\":[\(offset),\(offset + t.data.count)]}")
            offset += t.data.count
        }
        var header = Array("{\(entries.joined(separator: ","))}".utf8)
        while (8 + header.count) % 8 != 0 { header.append(0x20) }
        var out: [UInt8] = []
        var n = UInt64(header.count)
        for _ in 0..<8 { out.append(UInt8(n & 0xFF)); n >>= 8 }
        out += header
        for t in tensors { out += t.data }
        return out
    }
}

/// A minimal ONNX (protobuf) writer: ModelProto { ir_version, producer_name, graph { node, name,
/// initializer* } } with TensorProto { dims (packed), data_type, name, raw_data }.
enum ONNXWriter {
    static func dataType(_ dtype: String) -> UInt64 {
        [
            "F32": 1, "U8": 2, "I8": 3, "U16": 4, "I16": 5, "I32": 6, "I64": 7, "BOOL": 9, "F16": 10, "F64": 11, "U32": 12,
            "U64": 13, "BF16": 16
        ][dtype] ?? 1
    }

    static func write(_ tensors: [TestTensor], producer: String = "edgefleet-tests", packedDims: Bool = true) -> [UInt8] {
        var graph: [UInt8] = []
        // A node: op_type "MatMul", inputs, outputs (field 1 = node, strings inside).
        var node: [UInt8] = []
        node += field(1, bytes: Array("x".utf8))
        node += field(1, bytes: Array((tensors.first?.name ?? "w").utf8))
        node += field(2, bytes: Array("y".utf8))
        node += field(4, bytes: Array("MatMul".utf8))
        graph += field(1, bytes: node)
        graph += field(2, bytes: Array("test-graph".utf8))
        for t in tensors {
            var tp: [UInt8] = []
            if packedDims {
                var dims: [UInt8] = []
                for d in t.shape { dims += varint(UInt64(d)) }
                tp += field(1, bytes: dims)
            } else {
                for d in t.shape { tp += key(1, 0) + varint(UInt64(d)) }
            }
            tp += key(2, 0) + varint(dataType(t.dtype))
            tp += field(8, bytes: Array(t.name.utf8))
            tp += field(9, bytes: t.data)
            graph += field(5, bytes: tp)
        }
        var model: [UInt8] = []
        model += key(1, 0) + varint(8)
        model += field(2, bytes: Array(producer.utf8))
        model += field(7, bytes: graph)
        return model
    }

    static func key(_ field: UInt64, _ wire: UInt64) -> [UInt8] { varint(field << 3 | wire) }
    static func field(_ number: UInt64, bytes: [UInt8]) -> [UInt8] { key(number, 2) + varint(UInt64(bytes.count)) + bytes }
    static func varint(_ v: UInt64) -> [UInt8] {
        var x = v
        var out: [UInt8] = []
        while x >= 0x80 { out.append(UInt8(x & 0x7F) | 0x80); x >>= 7 }
        out.append(UInt8(x))
        return out
    }
}

/// The property tests' generator: FleetCore's seeded SplitMix64.
typealias SeededRNG = SeededGenerator

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct TempDir {
    let path: String
    init() throws {
        var template = Array("\(NSTemporaryDirectory())/fleetdelta-tests.XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw CocoaError(.fileWriteUnknown)
        }
        path = String(cString: p)
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func read(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: file(name)))) }

    /// Names in the directory (to check that nothing was left behind).
    func listing() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Element values for the random models: floats near a typical weight scale, integers in range.
enum TensorData {
    static func random(dtype: String, count: Int, using rng: inout SeededRNG) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count * TestTensor.elementSize(dtype))
        for _ in 0..<count {
            switch dtype {
            case "F32":
                let v = Float(gaussian(&rng) * 0.05)
                append(UInt64(v.bitPattern), 4, &out)
            case "F16":
                let v = Float16(gaussian(&rng) * 0.05)
                append(UInt64(v.bitPattern), 2, &out)
            case "BF16":
                let v = Float(gaussian(&rng) * 0.05)
                append(UInt64(v.bitPattern >> 16), 2, &out)
            case "I8": out.append(UInt8(bitPattern: Int8.random(in: -127...127, using: &rng)))
            case "U8": out.append(UInt8.random(in: 0...255, using: &rng))
            case "I32": append(UInt64(UInt32(bitPattern: Int32.random(in: -100_000...100_000, using: &rng))), 4, &out)
            case "I64": append(UInt64(bitPattern: Int64.random(in: -1_000_000...1_000_000, using: &rng)), 8, &out)
            default: out.append(UInt8.random(in: 0...255, using: &rng))
            }
        }
        return out
    }

    /// A small change to every element: relative noise on floats, ±1 on some integers.
    static func nudge(_ data: [UInt8], dtype: String, relative: Double, using rng: inout SeededRNG) -> [UInt8] {
        var out = data
        let w = TestTensor.elementSize(dtype)
        for i in 0..<(data.count / w) {
            switch dtype {
            case "F32":
                let v = Float(bitPattern: UInt32(load(data, i * 4, 4)))
                let n = v * Float(1 + gaussian(&rng) * relative)
                store(UInt64(n.bitPattern), i * 4, 4, &out)
            case "F16":
                let v = Float16(bitPattern: UInt16(load(data, i * 2, 2)))
                let n = Float16(Float(v) * Float(1 + gaussian(&rng) * relative * 10))
                store(UInt64(n.bitPattern), i * 2, 2, &out)
            case "BF16":
                let v = Float(bitPattern: UInt32(load(data, i * 2, 2)) << 16)
                let n = v * Float(1 + gaussian(&rng) * relative * 100)
                store(UInt64(n.bitPattern >> 16), i * 2, 2, &out)
            default:
                if Double.random(in: 0..<1, using: &rng) < 0.1 {
                    let v = load(data, i * w, w)
                    store(Bool.random(using: &rng) ? v &+ 1 : v &- 1, i * w, w, &out)
                }
            }
        }
        return out
    }

    static func gaussian(_ rng: inout SeededRNG) -> Double {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &rng)
        let u2 = Double.random(in: 0..<1, using: &rng)
        return (-2 * Foundation.log(u1)).squareRoot() * cos(2 * .pi * u2)
    }

    static func append(_ v: UInt64, _ width: Int, _ out: inout [UInt8]) {
        for b in 0..<width { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(b)))) }
    }

    static func load(_ data: [UInt8], _ at: Int, _ width: Int) -> UInt64 {
        var v: UInt64 = 0
        for b in 0..<width { v |= UInt64(data[at + b]) << (8 * UInt64(b)) }
        return v
    }

    static func store(_ v: UInt64, _ at: Int, _ width: Int, _ out: inout [UInt8]) {
        for b in 0..<width { out[at + b] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(b))) }
    }
}
