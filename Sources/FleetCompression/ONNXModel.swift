import Foundation
import SwiftProtobuf
#if canImport(Glibc)
    import Glibc
#endif

/// An ONNX model opened for the builder: the ModelProto and GraphProto decoded by swift-protobuf
/// *without* their initializers' payloads, and for every initializer where its bytes are (inline
/// `raw_data`, packed `float_data`/`double_data`, or an external-data file). Payloads stay on disk
/// until the builder reads them one at a time.
final class ONNXModel {
    struct Initializer {
        /// The TensorProto without raw_data, float_data and double_data.
        var header: Onnx_TensorProto
        /// The whole serialized TensorProto in the input file, for copying unchanged.
        var messageRange: Range<Int>
        /// Where the values are, when this builder can read them; nil for data it passes through
        /// untouched (strings, int32_data-encoded values, …).
        var source: SourceTensor?
        var isExternal: Bool
        var name: String { header.name }
    }

    let path: String
    let file: ReadableFile
    private let map: MappedBytes
    /// The model without its graph.
    var model: Onnx_ModelProto
    /// The graph without its initializers.
    var graph: Onnx_GraphProto
    var initializers: [Initializer]

    /// `file`: the model already opened (its map is shared with whoever else reads it).
    init(path: String, file opened: ReadableFile? = nil) throws(CompressionError) {
        self.path = path
        let file: ReadableFile
        if let opened { file = opened } else { file = try ReadableFile(path) }
        let map = try file.mapped()
        self.file = file
        self.map = map
        let b = map.bytes
        var restOfModel: [UInt8] = []
        var graphRange: Range<Int>?
        do {
            try ProtobufWire.forEachField(b, 0, b.count, what: "ModelProto") { (f) throws(CompressionError) in
                if f.number == 7 && f.wire == 2 {
                    guard graphRange == nil else {
                        throw CompressionError(.malformed, "ModelProto has two graphs", offset: Int64(f.keyStart))
                    }
                    graphRange = f.valueStart..<f.valueEnd
                } else {
                    restOfModel.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[f.keyStart..<f.valueEnd]))
                }
            }
        } catch { throw error.with(path: path) }
        guard let graphRange else { throw CompressionError(.malformed, "no graph (ModelProto field 7): not an ONNX model", path: path) }
        do { model = try Onnx_ModelProto(serializedBytes: restOfModel) } catch {
            throw CompressionError(.malformed, "ModelProto does not decode: \(error)", path: path)
        }

        var restOfGraph: [UInt8] = []
        var found: [Initializer] = []
        let modelDir = AtomicOutputFile.dirname(path)
        var externalFiles: [String: ReadableFile] = [:]
        do {
            try ProtobufWire.forEachField(b, graphRange.lowerBound, graphRange.upperBound, what: "GraphProto") {
                (f) throws(CompressionError) in
                if f.number == 5 && f.wire == 2 {
                    found.append(try Self.initializer(b, f, file: file, modelDir: modelDir, externalFiles: &externalFiles))
                } else {
                    restOfGraph.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[f.keyStart..<f.valueEnd]))
                }
            }
        } catch { throw error.with(path: path) }
        do { graph = try Onnx_GraphProto(serializedBytes: restOfGraph) } catch {
            throw CompressionError(.malformed, "GraphProto does not decode: \(error)", path: path)
        }
        initializers = found
        var seen = Set<String>()
        for i in initializers where !seen.insert(i.name).inserted {
            throw CompressionError(.malformed, "two initializers have this name", tensor: i.name, path: path)
        }
    }

    /// The opset version of the default ONNX domain.
    var defaultOpset: Int64 {
        model.opsetImport.first { $0.domain.isEmpty || $0.domain == "ai.onnx" }?.version ?? 0
    }

    private static func initializer(
        _ b: UnsafeRawBufferPointer, _ f: ProtobufWire.Field, file: ReadableFile, modelDir: String,
        externalFiles: inout [String: ReadableFile]
    ) throws(CompressionError) -> Initializer {
        var headerBytes: [UInt8] = []
        var payload: (field: UInt64, range: Range<Int>)?
        var payloadFields = 0
        try ProtobufWire.forEachField(b, f.valueStart, f.valueEnd, what: "TensorProto") { (t) throws(CompressionError) in
            switch (t.number, t.wire) {
            case (9, 2), (4, 2), (10, 2):
                payload = (t.number, t.valueStart..<t.valueEnd)
                payloadFields += 1
            default:
                headerBytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[t.keyStart..<t.valueEnd]))
            }
        }
        let header: Onnx_TensorProto
        do { header = try Onnx_TensorProto(serializedBytes: headerBytes) } catch {
            throw CompressionError(.malformed, "TensorProto does not decode: \(error)", offset: Int64(f.valueStart))
        }
        let name = header.name
        guard !name.isEmpty else { throw CompressionError(.malformed, "an initializer has no name", offset: Int64(f.valueStart)) }
        guard payloadFields <= 1 else { throw CompressionError(.malformed, "data is given in more than one field", tensor: name) }
        guard header.dims.allSatisfy({ $0 >= 0 }), let count = elementCount(header.dims) else {
            throw CompressionError(.shapeMismatch, "shape \(header.dims) has a negative dimension or too many elements", tensor: name)
        }
        // UNDEFINED, and codes past the last type onnx.proto defines, are not data types at all.
        guard header.dataType > 0, header.dataType <= 25 else {
            throw CompressionError(.unsupportedDataType, "data type \(header.dataType) is not an ONNX data type", tensor: name)
        }
        let range = f.keyStart..<f.valueEnd
        let dtype = TensorDType(onnx: header.dataType)
        let isExternal = header.dataLocation == .external

        if isExternal {
            guard payload == nil else { throw CompressionError(.malformed, "external tensor also has inline data", tensor: name) }
            guard let dtype else {
                throw CompressionError(.unsupportedDataType, "external data of type \(header.dataType) is not supported", tensor: name)
            }
            let ext = try external(header, dtype: dtype, count: count, modelDir: modelDir, files: &externalFiles)
            return Initializer(header: header, messageRange: range, source: ext, isExternal: true)
        }
        guard let payload, let dtype else {
            return Initializer(header: header, messageRange: range, source: nil, isExternal: false)
        }
        let length = Int64(payload.range.count)
        switch payload.field {
        case 4 where dtype != .f32, 10 where dtype != .f64:
            throw CompressionError(
                .malformed, "\(payload.field == 4 ? "float_data" : "double_data") for a \(dtype.rawValue) tensor", tensor: name)
        default: break
        }
        guard let expected = dtype.byteCount(elements: count), expected == length else {
            throw CompressionError(
                .shapeMismatch,
                "shape \(header.dims) of \(dtype.rawValue) needs \(dtype.byteCount(elements: count) ?? -1) bytes, the data has \(length)",
                tensor: name, offset: Int64(payload.range.lowerBound))
        }
        let source = SourceTensor(
            name: name, dtype: dtype, shape: header.dims, file: file, offset: Int64(payload.range.lowerBound), length: length)
        return Initializer(header: header, messageRange: range, source: source, isExternal: false)
    }

    /// Resolves external data: the location must be a relative path that stays inside the model's folder
    /// (after symlinks), and offset + length must lie inside that file and match the shape.
    private static func external(
        _ h: Onnx_TensorProto, dtype: TensorDType, count: Int64, modelDir: String,
        files: inout [String: ReadableFile]
    ) throws(CompressionError) -> SourceTensor {
        let name = h.name
        var location: String?, offset: Int64 = 0, length: Int64?
        for e in h.externalData {
            switch e.key {
            case "location": location = e.value
            case "offset":
                guard let v = Int64(e.value), v >= 0 else {
                    throw CompressionError(.malformed, "external offset '\(e.value)'", tensor: name)
                }
                offset = v
            case "length":
                guard let v = Int64(e.value), v >= 0 else {
                    throw CompressionError(.malformed, "external length '\(e.value)'", tensor: name)
                }
                length = v
            default: break
            }
        }
        guard let location, !location.isEmpty else { throw CompressionError(.malformed, "external data without a location", tensor: name) }
        let parts = location.split(separator: "/", omittingEmptySubsequences: false)
        guard !location.hasPrefix("/"), !location.contains("\\"), !parts.contains("..") else {
            throw CompressionError(
                .pathEscapes, "external-data location '\(location)' leaves the model's folder", tensor: name, path: location)
        }
        let full = modelDir + "/" + location
        // A symlink inside the folder may still point out of it.
        guard let realDir = realpath(modelDir), let realFile = realpath(full) else {
            throw CompressionError(.io, "external-data file '\(location)' cannot be opened", tensor: name, path: full)
        }
        guard realFile.hasPrefix(realDir == "/" ? "/" : realDir + "/") else {
            throw CompressionError(
                .pathEscapes, "external-data location '\(location)' resolves outside the model's folder", tensor: name, path: realFile)
        }
        let file: ReadableFile
        if let f = files[realFile] { file = f } else { file = try ReadableFile(realFile); files[realFile] = file }
        guard let expected = dtype.byteCount(elements: count) else {
            throw CompressionError(.shapeMismatch, "shape \(h.dims) is too large", tensor: name)
        }
        if let length, length != expected {
            throw CompressionError(
                .shapeMismatch, "shape \(h.dims) of \(dtype.rawValue) needs \(expected) bytes, external length is \(length)", tensor: name,
                path: full)
        }
        guard offset <= file.size, expected <= file.size - offset else {
            throw CompressionError(
                .truncated, "external data \(offset)+\(expected) runs past the end of \(location) (\(file.size) bytes)", tensor: name,
                path: full)
        }
        return SourceTensor(name: name, dtype: dtype, shape: h.dims, file: file, offset: offset, length: expected)
    }

    /// Copies the file's bytes in `range` (a whole initializer field) to `out`.
    func copyVerbatim(_ range: Range<Int>, to out: AtomicOutputFile) throws(CompressionError) {
        try file.copy(at: Int64(range.lowerBound), count: Int64(range.count), to: out)
    }
}

private func realpath(_ path: String) -> String? {
    guard let p = Glibc.realpath(path, nil) else { return nil }
    defer { free(p) }
    return String(cString: p)
}
