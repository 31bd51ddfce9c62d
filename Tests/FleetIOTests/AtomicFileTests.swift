import Foundation
import Glibc
import Testing
@testable import FleetIO

/// A directory of the test's own, removed on every path.
private func withTemporaryDirectory(_ body: (String) throws -> Void) throws {
    var template = Array((NSTemporaryDirectory() + "/fleetio-XXXXXX").utf8CString)
    guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { throw FileIOError.errno(.create, "mkdtemp") }
    let dir = String(cString: p)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try body(dir)
}

private func contents(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { [UInt8]($0) } }

private func entries(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }

/// A write(2) that accepts `budget` bytes and then fails with `error`, as a full disk does.
private func failingWriter(after budget: Int, error: Int32 = ENOSPC) -> (Int32, UnsafeRawPointer, Int) -> Int {
    var left = budget
    return { fd, p, n in
        guard left > 0 else { errno = error; return -1 }
        let accepted = Glibc.write(fd, p, min(n, left))
        if accepted > 0 { left -= accepted }
        return accepted
    }
}

@Suite("Atomic file replacement")
struct AtomicFileTests {
    @Test func commitReplacesTheTargetWholeAndLeavesNoTemporary() throws {
        try withTemporaryDirectory { dir in
            try AtomicFile.write(Array("old".utf8), to: dir + "/model")
            let file = try AtomicFile(replacing: dir + "/model", temporary: .unique(tag: "t"), bufferSize: 4)
            try file.write(Array("new contents, longer than the buffer".utf8))
            #expect(contents(dir + "/model") == Array("old".utf8))  // not visible before the commit
            try file.commit()
            #expect(contents(dir + "/model") == Array("new contents, longer than the buffer".utf8))
            #expect(entries(dir) == ["model"])
        }
    }

    @Test func aFullDiskMidWriteLeavesTheOldTargetAndSaysNoSpace() throws {
        try withTemporaryDirectory { dir in
            try AtomicFile.write(Array("old".utf8), to: dir + "/model")
            let file = try AtomicFile(
                replacing: dir + "/model", temporary: .unique(tag: ""), permissions: 0o644, bufferSize: 8,
                writer: failingWriter(after: 10))
            let payload = [UInt8](repeating: 7, count: 100)
            let error = #expect(throws: FileIOError.self) {
                try file.write(payload)
                try file.commit()
            }
            #expect(error?.isNoSpace == true)
            #expect(error?.operation == .write)
            #expect(error?.isAfterRename == false)
            file.abort()
            #expect(contents(dir + "/model") == Array("old".utf8))
            #expect(entries(dir) == ["model"])
        }
    }

    @Test func aFailedFinalFlushRemovesTheTemporaryAtCommit() throws {
        try withTemporaryDirectory { dir in
            // Everything fits the buffer, so the failure surfaces only at commit.
            let file = try AtomicFile(
                replacing: dir + "/state.json", temporary: .fixed(suffix: ".tmp"), permissions: 0o600,
                bufferSize: 1 << 10, writer: failingWriter(after: 0, error: EIO))
            try file.write(Array("{}".utf8))
            let error = #expect(throws: FileIOError.self) { try file.commit() }
            #expect(error?.isNoSpace == false)
            #expect(error?.systemError == EIO)
            #expect(!FileManager.default.fileExists(atPath: dir + "/state.json"))
            #expect(entries(dir) == [])
        }
    }

    /// A directory that cannot be fsynced after the rename: the new contents are in place either
    /// way; `.required` says so with an after-rename error, `.bestEffort` does not fail.
    @Test func aDirectorySyncFailureAfterTheRenameIsAnErrorOnlyWhenRequired() throws {
        try withTemporaryDirectory { dir in
            func failingSync(_ path: String) throws(FileIOError) { throw FileIOError(.syncDirectory, path: path, systemError: EIO) }
            for policy in [AtomicFile.DirectorySync.required, .bestEffort] {
                let file = try AtomicFile(
                    replacing: dir + "/model", temporary: .unique(tag: ""), permissions: 0o644, bufferSize: 16,
                    writer: { fd, p, n in Glibc.write(fd, p, n) }, directorySyncer: failingSync)
                try file.write(Array("\(policy)".utf8))
                if policy == .required {
                    let error = #expect(throws: FileIOError.self) { try file.commit(directory: policy) }
                    #expect(error?.isAfterRename == true)
                    #expect(error?.systemError == EIO)
                } else {
                    try file.commit(directory: policy)
                }
                #expect(contents(dir + "/model") == Array("\(policy)".utf8))
                #expect(entries(dir) == ["model"])
            }
        }
    }

    @Test func droppingWithoutCommitLeavesTheTargetAsItWas() throws {
        try withTemporaryDirectory { dir in
            try AtomicFile.write(Array("old".utf8), to: dir + "/model")
            do {
                let file = try AtomicFile(replacing: dir + "/model")
                try file.write(Array("half".utf8))
                try file.sync()
            }
            #expect(contents(dir + "/model") == Array("old".utf8))
            #expect(entries(dir) == ["model"])
        }
    }

    @Test func aFixedTemporaryLeftByACrashIsOverwritten() throws {
        try withTemporaryDirectory { dir in
            try AtomicFile.write(Array("{}".utf8), to: dir + "/journal.json", temporary: .fixed(suffix: ".tmp"), permissions: 0o600)
            try AtomicFile.write(Array("stale and long".utf8), to: dir + "/journal.json.tmp", permissions: 0o600)  // a crash's leftover
            try AtomicFile.write(Array("[]".utf8), to: dir + "/journal.json", temporary: .fixed(suffix: ".tmp"), permissions: 0o600)
            #expect(contents(dir + "/journal.json") == Array("[]".utf8))
            #expect(entries(dir) == ["journal.json"])
            var st = stat()
            let found = stat(dir + "/journal.json", &st) == 0
            #expect(found)
            #expect(st.st_mode & 0o777 == 0o600)
        }
    }

    @Test func uniqueTemporariesDoNotCollide() throws {
        try withTemporaryDirectory { dir in
            let a = try AtomicFile(replacing: dir + "/out", temporary: .unique(tag: "delta"))
            let b = try AtomicFile(replacing: dir + "/out", temporary: .unique(tag: "delta"))
            #expect(a.tempPath != b.tempPath)
            #expect(a.tempPath.hasPrefix(dir + "/.out.delta-"))
            try a.write(Array("a".utf8)); try a.commit()
            b.abort()
            #expect(contents(dir + "/out") == Array("a".utf8))
            #expect(entries(dir) == ["out"])
        }
    }

    @Test func aMissingDirectoryIsACreateFault() throws {
        try withTemporaryDirectory { dir in
            let error = #expect(throws: FileIOError.self) { try AtomicFile.write([1], to: dir + "/absent/x") }
            #expect(error?.operation == .create)
            #expect(error?.systemError == ENOENT)
        }
    }

    @Test func directoryOfAPath() {
        #expect(AtomicFile.directory(of: "/a/b/c") == "/a/b")
        #expect(AtomicFile.directory(of: "/c") == "/")
        #expect(AtomicFile.directory(of: "c") == ".")
    }
}
