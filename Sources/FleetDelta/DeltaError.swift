import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Why a delta package could not be created or applied. `code` is the fault class callers act on
/// (an agent retries a download after `.truncated`, reports `.baseMismatch`, …); `message` is for
/// people; `path` says which file it was about, when one is.
public struct DeltaError: Error, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Codable {
        /// The base file is not the one the package was made against (sha256 or size).
        case baseMismatch
        /// The package is shorter than its header says.
        case truncated
        /// The package is malformed: bad magic, header checksum, plan, section lengths, or a zstd frame
        /// that does not decode or does not end where it should.
        case corrupt
        /// Decoding finished but the result does not have the target's size or sha256.
        case targetMismatch
        /// A format version, method, flag or limit this decoder does not implement.
        case unsupported
        /// The operating system refused a read, write, rename or allocation.
        case io
        /// The encoder was asked for a method that does not apply to these files.
        case notApplicable
    }

    public let code: Code
    public let message: String
    public let path: String?
    /// For `.io`: the operating system's errno (ENOSPC: the disk is full), when one was given.
    public let systemError: Int32?

    public init(_ code: Code, _ message: String, path: String? = nil, systemError: Int32? = nil) {
        self.code = code
        self.message = message
        self.path = path
        self.systemError = systemError
    }

    public var description: String {
        if let path { return "\(code.rawValue): \(path): \(message)" }
        return "\(code.rawValue): \(message)"
    }

    static func errno(_ path: String, _ what: String) -> DeltaError {
        let e = Glibc.errno
        return DeltaError(.io, "\(what): \(String(cString: strerror(e)))", path: path, systemError: e)
    }
}
