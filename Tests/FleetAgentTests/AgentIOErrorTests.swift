import FleetIO
import Glibc
import Testing
@testable import FleetAgent

/// The agent's edge over FleetIO: a full disk is `.noSpace` (the installer reports it as such).
@Suite struct AgentIOErrorTests {
    @Test func fullDiskAndQuotaAreNoSpace() {
        #expect(AgentIOError(FileIOError(.write, path: "/s/x.tmp", systemError: ENOSPC)).code == .noSpace)
        #expect(AgentIOError(FileIOError(.fsync, path: "/s/x.tmp", systemError: EDQUOT)).code == .noSpace)
        #expect(AgentIOError(FileIOError(.create, path: "/s/x.tmp", systemError: ENOENT)).code == .notFound)
        #expect(AgentIOError(FileIOError(.rename, path: "/s/x", systemError: EIO)).code == .io)
    }

    @Test func anAtomicWriteIntoAMissingFolderIsNotFoundAndCreatesNothing() throws {
        let dir = try tempDir(); defer { FS.removeTree(dir) }
        let e = #expect(throws: AgentIOError.self) { try FS.writeAtomically(dir + "/absent/state.json", [1]) }
        #expect(e?.code == .notFound)
        #expect(FS.listDirectory(dir) == [])
    }
}
