#if canImport(Glibc)
    import Glibc
#endif

/// Why a variant could not be built. `code` is the fault class; `tensor` and `path` say where it
/// happened, `offset` the byte offset in the file when the fault is in its encoding. The output file
/// is never left behind when one of these is thrown.
public struct CompressionError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable, Codable {
        /// The file ends before its structure says it should.
        case truncated
        /// The protobuf or safetensors header does not parse: bad varint, bad wire type, bad JSON, …
        case malformed
        /// A tensor's data length disagrees with its shape and data type.
        case shapeMismatch
        /// An external-data location is absolute or leaves the model's folder.
        case pathEscapes
        /// A data type this builder does not read (or cannot transform as the recipe asks).
        case unsupportedDataType
        /// Tensor data overlaps the header or another tensor.
        case overlap
        /// The model's opset cannot carry the operators the recipe needs.
        case unsupportedOpset
        /// The recipe file or a recipe is invalid, or no recipe has that name.
        case recipe
        /// The evaluator command failed or printed something that is not its JSON result.
        case evaluator
        /// The operating system refused a read, write, rename or allocation.
        case io
        /// The file is neither ONNX nor safetensors, or a variant would not fit the format (2 GiB protobuf limit).
        case unsupportedFormat
    }

    public let code: Code
    public let message: String
    public let tensor: String?
    public let path: String?
    public let offset: Int64?

    public init(_ code: Code, _ message: String, tensor: String? = nil, path: String? = nil, offset: Int64? = nil) {
        self.code = code; self.message = message; self.tensor = tensor; self.path = path; self.offset = offset
    }

    public var description: String {
        var s = code.rawValue
        if let path { s += ": \(path)" }
        if let offset { s += " at byte \(offset)" }
        if let tensor { s += ": tensor '\(tensor)'" }
        return s + ": " + message
    }

    func with(tensor: String? = nil, path: String? = nil) -> CompressionError {
        CompressionError(code, message, tensor: self.tensor ?? tensor, path: self.path ?? path, offset: offset)
    }

    static func errno(_ path: String, _ what: String) -> CompressionError {
        CompressionError(.io, "\(what): \(String(cString: strerror(Glibc.errno)))", path: path)
    }
}
