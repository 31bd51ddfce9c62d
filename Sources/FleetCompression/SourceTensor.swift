/// One tensor of the input model: its name, type, shape and where its bytes are. Reading is
/// deferred until the builder gets to it.
struct SourceTensor {
    var name: String
    var dtype: TensorDType
    var shape: [Int64]
    var file: ReadableFile
    var offset: Int64
    var length: Int64

    var elements: Int64 { elementCount(shape) ?? 0 }

    /// The stored bytes, in place when the file is mapped (no copy), else read into a temporary buffer.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) throws(CompressionError) -> R {
        if let map = file.map, offset >= 0, length <= Int64(map.size) - offset {
            return body(UnsafeRawBufferPointer(rebasing: map.bytes[Int(offset)..<Int(offset + length)]))
        }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(length), alignment: 64)
        defer { buf.deallocate() }
        try file.read(at: offset, into: buf)
        return body(UnsafeRawBufferPointer(buf))
    }

    /// The tensor's values as fp32 (from fp32, fp16, bf16 or fp64 storage).
    func readFloats() throws(CompressionError) -> [Float] {
        let n = Int(elements)
        switch dtype {
        case .f32:
            // Uninitialized, then filled by pread: no zeroing pass over a tensor that is read anyway.
            var failure: CompressionError?
            let out = [Float](unsafeUninitializedCapacity: n) { buf, count in
                do throws(CompressionError) { try file.read(at: offset, into: UnsafeMutableRawBufferPointer(buf)) } catch {
                    failure = error
                    buf.initialize(repeating: 0)
                }
                count = n
            }
            if let failure { throw failure }
            return out
        case .f16:
            let raw = try file.read(at: offset, count: n * 2)
            return raw.withUnsafeBytes { b in
                (0..<n).map { Float(Float16(bitPattern: b.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) }
            }
        case .bf16:
            let raw = try file.read(at: offset, count: n * 2)
            return raw.withUnsafeBytes { b in
                (0..<n).map { Float(bitPattern: UInt32(b.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) << 16) }
            }
        case .f64:
            let raw = try file.read(at: offset, count: n * 8)
            return raw.withUnsafeBytes { b in (0..<n).map { Float(b.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self)) } }
        default:
            throw CompressionError(.unsupportedDataType, "\(dtype.rawValue) is not a floating-point type", tensor: name, path: file.path)
        }
    }
}
