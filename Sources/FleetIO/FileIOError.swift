#if canImport(Glibc)
    import Glibc
#endif

/// Why a file operation failed: which operation, on which path, and the operating system's errno.
/// Each module translates it into its own error type at its edge, so callers keep their typed faults.
public struct FileIOError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Operation: String, Sendable {
        case create, write, fsync, close, rename
        case openDirectory = "open directory"
        case syncDirectory = "fsync directory"
    }

    public let operation: Operation
    public let path: String
    public let systemError: Int32

    public init(_ operation: Operation, path: String, systemError: Int32) {
        self.operation = operation
        self.path = path
        self.systemError = systemError
    }

    /// The disk (or the writer's quota) is full: callers report this as "no space", not as a generic I/O fault.
    public var isNoSpace: Bool { systemError == ENOSPC || systemError == EDQUOT }

    /// Failed after the rename: the new contents are in place, only their durability is in doubt.
    public var isAfterRename: Bool { operation == .openDirectory || operation == .syncDirectory }

    /// "operation: strerror", the shape the modules' own errno messages have.
    public var message: String { "\(operation.rawValue): \(String(cString: strerror(systemError)))" }

    public var description: String { "\(path): \(message)" }

    static func errno(_ operation: Operation, _ path: String) -> FileIOError {
        FileIOError(operation, path: path, systemError: Glibc.errno)
    }
}
