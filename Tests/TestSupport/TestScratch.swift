import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Temporary folders of a test process, all under one root that is removed when the process
/// exits, whatever path a test left by (a failed expectation, a thrown error, a fixture nobody
/// closed, a static built once per run). Only a process killed by a signal leaves its root.
public enum TestScratch {
    /// `<tmp>/edgefleet-tests-<pid>-<random>`, made on first use.
    public static let root: String = {
        let dir = NSTemporaryDirectory() + "edgefleet-tests-\(getpid())-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        atexit { TestScratch.removeRoot() }
        return dir
    }()

    /// A new empty folder under the root, named `<prefix>-<random>`.
    public static func directory(_ prefix: String, permissions: Int = 0o755) throws -> String {
        let dir = root + "/" + prefix + "-" + UUID().uuidString.prefix(12)
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: permissions])
        return dir
    }

    private static func removeRoot() { try? FileManager.default.removeItem(atPath: root) }
}
