import FleetCore

/// Where the tensors of a model file are: the encoder's view of safetensors and ONNX files. The
/// decoder never needs it (a package says which bytes come from where).
struct TensorLayout {
    struct Tensor: Equatable {
        var name: String
        /// safetensors spelling (F32, BF16, I8, …) for both formats, so that they can be matched.
        var dtype: String
        var shape: [Int64]
        var offset: Int64
        var length: Int64

        var elementSize: Int { DType.size(dtype) }
        var isFloat: Bool { DType.isFloat(dtype) }
        /// Element size when the tensor's length is a whole number of its elements, else 1.
        var codingWidth: Int { length % Int64(elementSize) == 0 ? elementSize : 1 }
    }

    enum Format: String { case safetensors, onnx }

    var format: Format
    var fileSize: Int64
    /// Sorted by offset, disjoint, none empty.
    var tensors: [Tensor]

    /// The bytes between and around the tensors, in file order.
    var gaps: [TensorPlan.Range] {
        var out: [TensorPlan.Range] = []
        var at: Int64 = 0
        for t in tensors {
            if t.offset > at { out.append(.init(offset: at, length: t.offset - at)) }
            at = t.offset + t.length
        }
        if fileSize > at { out.append(.init(offset: at, length: fileSize - at)) }
        return out
    }

    var tensorBytes: Int64 { tensors.reduce(0) { $0 + $1.length } }

    /// Parses `bytes` as safetensors, else as ONNX; the error says why neither fits.
    static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<TensorLayout, ParseFailure> {
        switch Safetensors.parse(bytes) {
        case .success(let l): return .success(l)
        case .failure(let st):
            switch ONNXWalker.parse(bytes) {
            case .success(let l): return .success(l)
            case .failure(let onnx): return .failure(ParseFailure(message: "not safetensors (\(st.message)), not ONNX (\(onnx.message))"))
            }
        }
    }

    struct ParseFailure: Error { let message: String }

    /// Sorts, drops empty tensors, and checks that tensors lie in the file without overlapping.
    static func checked(format: Format, fileSize: Int64, _ tensors: [Tensor]) -> Result<TensorLayout, ParseFailure> {
        let sorted = tensors.filter { $0.length > 0 }.sorted { $0.offset < $1.offset }
        var at: Int64 = 0
        for t in sorted {
            guard t.offset >= at, t.length <= fileSize - t.offset else {
                return .failure(ParseFailure(message: "tensor '\(t.name)' at \(t.offset)+\(t.length) overlaps another or the end"))
            }
            at = t.offset + t.length
        }
        // A safetensors file may hold no tensors; an ONNX walk that found none found nothing.
        guard !sorted.isEmpty || format == .safetensors else { return .failure(ParseFailure(message: "no tensors")) }
        return .success(TensorLayout(format: format, fileSize: fileSize, tensors: sorted))
    }
}

enum DType {
    static func size(_ dtype: String) -> Int {
        switch dtype {
        case "F64", "I64", "U64": 8
        case "F32", "I32", "U32": 4
        case "F16", "BF16", "I16", "U16": 2
        default: 1
        }
    }

    static func isFloat(_ dtype: String) -> Bool {
        ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ"].contains(dtype)
    }
}

/// safetensors: an 8-byte little-endian header length, a JSON header mapping names to dtype, shape
/// and data_offsets (relative to the end of the header), then the data.
enum Safetensors {
    private struct Entry: Decodable {
        let dtype: String
        let shape: [Int64]
        let data_offsets: [Int64]
    }

    private struct Header: Decodable {
        var entries: [String: Entry] = [:]

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init?(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            for key in c.allKeys where key.stringValue != "__metadata__" {
                entries[key.stringValue] = try c.decode(Entry.self, forKey: key)
            }
        }
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<TensorLayout, TensorLayout.ParseFailure> {
        guard bytes.count >= 10 else { return .failure(.init(message: "too short")) }
        let n = bytes.loadUnaligned(as: UInt64.self).littleEndian
        guard n >= 2, n <= UInt64(bytes.count - 8), n <= 100 << 20 else { return .failure(.init(message: "header length \(n)")) }
        guard bytes[8] == UInt8(ascii: "{") else { return .failure(.init(message: "header is not a JSON object")) }
        let json = Data(bytes[8..<(8 + Int(n))])
        let header: Header
        do { header = try JSONDecoder().decode(Header.self, from: json) } catch {
            return .failure(.init(message: "header JSON: \(error)"))
        }
        let dataStart = 8 + Int64(n)
        var tensors: [TensorLayout.Tensor] = []
        for (name, e) in header.entries {
            guard e.data_offsets.count == 2, e.data_offsets[0] >= 0, e.data_offsets[1] >= e.data_offsets[0] else {
                return .failure(.init(message: "tensor '\(name)' has bad data_offsets"))
            }
            tensors.append(
                .init(
                    name: name, dtype: e.dtype, shape: e.shape, offset: dataStart + e.data_offsets[0],
                    length: e.data_offsets[1] - e.data_offsets[0]))
        }
        return TensorLayout.checked(format: .safetensors, fileSize: Int64(bytes.count), tensors)
    }
}
