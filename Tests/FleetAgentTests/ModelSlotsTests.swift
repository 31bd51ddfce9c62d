import FleetCore
import Foundation
import Testing
import TestSupport
@testable import FleetAgent

func tempDir() throws -> String {
    try TestScratch.directory("agent")
}

@Suite("Model slots")
struct ModelSlotsTests {
    func makeSource(_ dir: String, _ bytes: [UInt8]) throws -> (String, String) {
        let path = dir + "/download.part"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (path, Digest.sha256Hex(bytes))
    }

    @Test func stageActivateAndRollBack() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let slots = ModelSlots(root: dir + "/models")
        let (src1, sha1) = try makeSource(dir, [1, 2, 3])
        try slots.stage(model: "m", sha256: sha1, fileName: "m.onnx", size: 3, from: src1)
        #expect(slots.current("m") == nil)  // staged is not live
        try slots.point(model: "m", at: sha1)
        #expect(slots.current("m") == sha1)
        #expect(FileManager.default.contents(atPath: dir + "/models/m/current/m.onnx") == Data([1, 2, 3]))

        let (src2, sha2) = try makeSource(dir, [9, 9])
        try slots.stage(model: "m", sha256: sha2, fileName: "m.onnx", size: 2, from: src2)
        try slots.point(model: "m", at: sha2)
        #expect(slots.installed() == ["m": sha2])
        try slots.point(model: "m", at: sha1)  // rollback
        #expect(slots.current("m") == sha1)
        slots.removeSlot(model: "m", sha256: sha2)
        #expect(!FileManager.default.fileExists(atPath: dir + "/models/m/\(sha2)"))
        slots.removeSlot(model: "m", sha256: sha1)  // never removes the live slot
        #expect(slots.current("m") == sha1)
    }

    @Test func stagingIsIdempotentAndLeavesNoStagingFolder() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let slots = ModelSlots(root: dir + "/models")
        let (src, sha) = try makeSource(dir, [4, 5, 6, 7])
        try slots.stage(model: "m", sha256: sha, fileName: "w.safetensors", size: 4, from: src)
        try slots.stage(model: "m", sha256: sha, fileName: "w.safetensors", size: 4, from: src)
        #expect(FS.listDirectory(dir + "/models/m") == [sha])
    }

    @Test func firstInstallRolledBackLeavesNoCurrent() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let slots = ModelSlots(root: dir + "/models")
        let (src, sha) = try makeSource(dir, [1])
        try slots.stage(model: "m", sha256: sha, fileName: "f", size: 1, from: src)
        try slots.point(model: "m", at: sha)
        try slots.point(model: "m", at: nil)
        #expect(slots.current("m") == nil)
        #expect(slots.installed().isEmpty)
    }

    @Test func pruneKeepsCurrentAndPrevious() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let slots = ModelSlots(root: dir + "/models")
        var shas: [String] = []
        for i in 0..<3 {
            let (src, sha) = try makeSource(dir, [UInt8(i), 1])
            try slots.stage(model: "m", sha256: sha, fileName: "f", size: 2, from: src)
            shas.append(sha)
        }
        try slots.point(model: "m", at: shas[2])
        slots.prune(model: "m", keep: [shas[2], shas[1]])
        #expect(Set(FS.listDirectory(dir + "/models/m")) == Set(["current", shas[1], shas[2]]))
    }

    @Test func plantedSymlinksAndTraversingNamesAreRefused() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let slots = ModelSlots(root: dir + "/models")
        let (src, sha) = try makeSource(dir, [1, 2])
        // A symlink planted where the model folder belongs must not be followed.
        try FileManager.default.createDirectory(atPath: dir + "/models", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/elsewhere", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/models/m", withDestinationPath: dir + "/elsewhere")
        #expect(throws: AgentIOError.self) { try slots.stage(model: "m", sha256: sha, fileName: "f", size: 2, from: src) }
        #expect(FS.listDirectory(dir + "/elsewhere").isEmpty)

        // A symlink planted where the slot belongs.
        try FileManager.default.createDirectory(atPath: dir + "/models/n", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/models/n/\(sha)", withDestinationPath: dir + "/elsewhere")
        #expect(throws: AgentIOError.self) { try slots.stage(model: "n", sha256: sha, fileName: "f", size: 2, from: src) }

        #expect(throws: AgentIOError.self) { try slots.stage(model: "../x", sha256: sha, fileName: "f", size: 2, from: src) }
        #expect(throws: AgentIOError.self) { try slots.stage(model: "o", sha256: sha, fileName: "../f", size: 2, from: src) }
        #expect(FS.listDirectory(dir).sorted() == ["download.part", "elsewhere", "models"])
    }

    @Test func currentIgnoresALinkThatIsNotASlot() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/models/m", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/models/m/current", withDestinationPath: "/etc")
        #expect(ModelSlots(root: dir + "/models").current("m") == nil)
    }
}

@Suite("Agent files and queues")
struct AgentFilesTests {
    @Test func atomicWriteReplacesWholeAndLeavesNoTemporary() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        try FS.writeAtomically(dir + "/f.json", Array("one".utf8))
        try FS.writeAtomically(dir + "/f.json", Array("two!".utf8))
        #expect(try FS.read(dir + "/f.json", limit: 100) == Array("two!".utf8))
        #expect(FS.listDirectory(dir) == ["f.json"])
        #expect(throws: AgentIOError.self) { try FS.read(dir + "/f.json", limit: 2) }
    }

    @Test func streamingHashMatchesOneShotDigest() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let bytes = (0..<(3 << 20) + 17).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/x"))
        let (sha, n) = try FS.sha256(dir + "/x")
        #expect(sha == Digest.sha256Hex(bytes))
        #expect(n == Int64(bytes.count))
    }

    @Test func outboxNumbersEventsAndDropsTheOldestWhenFull() {
        var box = Outbox()
        for i in 0..<(Outbox.capacity + 5) { box.append(kind: .other("k\(i)"), time: Int64(i)) }
        #expect(box.pending.count == Outbox.capacity)
        #expect(box.dropped == 5)
        #expect(box.pending.first?.seq == 6)
        #expect(box.nextSeq == UInt64(Outbox.capacity + 6))
        box.acknowledge(through: 10)
        #expect(box.pending.first?.seq == 11)
    }

    @Test func probeParsesX86AndArmCpuinfoAndMeminfo() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512_vnni fma\n"
        #expect(Probe.cpuFlags(cpuinfo: x86) == ["avx2", "avx512_vnni", "fma", "fpu", "sse2"])
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimddp crc32\n"
        #expect(Probe.cpuFlags(cpuinfo: arm) == ["asimd", "asimddp", "crc32", "fp"])
        #expect(Probe.memoryBytes(meminfo: "MemTotal:        1024000 kB\nMemFree: 1 kB\n") == 1_024_000 * 1024)
        #expect(Probe.cpuFlags(cpuinfo: "") == [])
    }

    @Test func healthCheckOutcomes() {
        let ok = HealthCheck(command: "test \"$EDGEFLEET_MODEL\" = m && test \"$EDGEFLEET_MODEL_SHA256\" = abc", timeoutSeconds: 10)
        #expect(ok.run(model: "m", sha256: "abc", modelPath: "/nonexistent", slot: "/nonexistent") == .healthy)
        let bad = HealthCheck(command: "exit 3", timeoutSeconds: 10)
        #expect(bad.run(model: "m", sha256: "abc", modelPath: "", slot: "") == .unhealthy("health command exited with 3"))
        let hang = HealthCheck(command: "sleep 30", timeoutSeconds: 0.3)
        guard case .unhealthy(let why) = hang.run(model: "m", sha256: "abc", modelPath: "", slot: "") else {
            Issue.record("a hanging health command passed"); return
        }
        #expect(why.contains("timed out"))
        #expect(HealthCheck(command: nil, timeoutSeconds: 1).run(model: "m", sha256: "", modelPath: "", slot: "") == .healthy)
    }
}
