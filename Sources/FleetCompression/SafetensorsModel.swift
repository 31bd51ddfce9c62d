import Foundation

/// A safetensors file opened for the builder: the JSON header parsed and checked (every tensor's
/// offsets inside the data section, in agreement with its shape, no two tensors overlapping), the
/// payloads left on disk.
final class SafetensorsModel {
    let path: String
    let file: ReadableFile
    let headerLength: Int64
    /// In data-offset order.
    let tensors: [SourceTensor]
    let metadata: [String: String]

    /// A header larger than this is refused before it is read (the format's own readers use 100 MB).
    static let maxHeader: Int64 = 100 << 20

    init(path: String) throws(CompressionError) {
        self.path = path
        file = try ReadableFile(path)
        guard file.size >= 8 else {
            throw CompressionError(.truncated, "\(file.size) bytes: shorter than the 8-byte header length", path: path)
        }
        let lenBytes = try file.read(at: 0, count: 8)
        let n = lenBytes.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }
        guard n >= 2, n <= Self.maxHeader else {
            throw CompressionError(.malformed, "header length \(n) is not plausible", path: path, offset: 0)
        }
        guard n <= file.size - 8 else {
            throw CompressionError(
                .truncated, "header of \(n) bytes runs past the end of the \(file.size)-byte file", path: path, offset: 8)
        }
        headerLength = n
        let headerBytes = try file.read(at: 8, count: Int(n))
        let entries: [String: HeaderEntry]
        do { entries = try JSONDecoder().decode([String: HeaderEntry].self, from: Data(headerBytes)) } catch {
            throw CompressionError(.malformed, "header is not a JSON object of tensor entries: \(error)", path: path, offset: 8)
        }
        let dataStart = 8 + n
        let dataSize = file.size - dataStart
        var meta: [String: String] = [:]
        var list: [SourceTensor] = []
        for (name, e) in entries {
            if name == "__metadata__" {
                guard let m = e.metadata else { throw CompressionError(.malformed, "__metadata__ is not an object of strings", path: path) }
                meta = m
                continue
            }
            guard let dtypeName = e.dtype, let shape = e.shape, let offsets = e.data_offsets, offsets.count == 2 else {
                throw CompressionError(.malformed, "entry needs dtype, shape and two data_offsets", tensor: name, path: path)
            }
            guard let dtype = TensorDType(safetensors: dtypeName) else {
                throw CompressionError(.unsupportedDataType, "data type '\(dtypeName)'", tensor: name, path: path)
            }
            guard shape.allSatisfy({ $0 >= 0 }) else {
                throw CompressionError(.malformed, "shape \(shape) has a negative size", tensor: name, path: path)
            }
            let begin = offsets[0], end = offsets[1]
            guard begin >= 0, end >= begin else {
                throw CompressionError(.malformed, "data_offsets \(offsets) are not an ordered pair", tensor: name, path: path)
            }
            guard end <= dataSize else {
                throw CompressionError(.truncated, "data ends at \(end), the data section has \(dataSize) bytes", tensor: name, path: path)
            }
            guard let count = elementCount(shape), let expected = dtype.byteCount(elements: count), expected == end - begin else {
                throw CompressionError(
                    .shapeMismatch, "shape \(shape) of \(dtypeName) disagrees with \(end - begin) bytes of data", tensor: name, path: path)
            }
            list.append(SourceTensor(name: name, dtype: dtype, shape: shape, file: file, offset: dataStart + begin, length: end - begin))
        }
        list.sort { $0.offset != $1.offset ? $0.offset < $1.offset : $0.name < $1.name }
        var previousEnd = dataStart
        var previousName: String?
        for t in list {
            guard t.offset >= previousEnd || t.length == 0 else {
                throw CompressionError(
                    .overlap, "data overlaps \(previousName.map { "tensor '\($0)'" } ?? "the header")", tensor: t.name, path: path,
                    offset: t.offset)
            }
            if t.length > 0 { previousEnd = t.offset + t.length; previousName = t.name }
        }
        tensors = list
        metadata = meta
    }

    /// One value of the header object: a tensor entry, or (for `__metadata__`) a map of strings.
    private struct HeaderEntry: Decodable {
        var dtype: String?
        var shape: [Int64]?
        var data_offsets: [Int64]?
        var metadata: [String: String]?

        init(from decoder: any Decoder) throws {
            if let m = try? decoder.singleValueContainer().decode([String: String].self) {
                metadata = m
                return
            }
            let c = try decoder.container(keyedBy: CodingKeys.self)
            dtype = try c.decode(String.self, forKey: .dtype)
            shape = try c.decode([Int64].self, forKey: .shape)
            data_offsets = try c.decode([Int64].self, forKey: .data_offsets)
        }

        enum CodingKeys: String, CodingKey { case dtype, shape, data_offsets }
    }
}
