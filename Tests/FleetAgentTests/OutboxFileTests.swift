import FleetCore
import Foundation
import Logging
import Testing

@testable import FleetAgent

@Suite("Outbox file: append-only, compacted, bounded, torn tail, corruption")
struct OutboxFileTests {
    static func event(_ box: Outbox, _ kind: EventKind = .started, detail: String? = nil) -> StatusEvent {
        box.event(kind: kind, time: 1, model: "m", sha256: String(repeating: "a", count: 64), release: "m@1", detail: detail)
    }

    static func bytes(_ path: String) -> [UInt8] { [UInt8](FileManager.default.contents(atPath: path) ?? Data()) }

    @Test func appendWritesOneRecordAndReopenReadsItBack() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/" + OutboxFile.name
        let file = try OutboxFile.open(path)
        let before = Self.bytes(path)
        let m = RuntimeMetrics(latencyP50Ms: 5, latencyP95Ms: 9, errorRate: 0, requests: 3, crashes: 0)
        try file.append(Self.event(file.outbox, .metrics).with(metrics: m))
        try file.append(Self.event(file.outbox, .committed))
        // The file only grew: what was there is untouched, one line per event.
        let after = Self.bytes(path)
        #expect(Array(after.prefix(before.count)) == before)
        #expect(after.count(where: { $0 == 0x0A }) == 3)  // header + 2 events
        #expect(file.written.records == 2 && file.written.fsyncs == 2 && file.written.rewrites == 0)

        let again = try OutboxFile.open(path)
        #expect(again.outbox == file.outbox)
        #expect(again.outbox.pending.map(\.seq) == [1, 2])
        #expect(again.outbox.pending.first?.metrics == m)
        #expect(again.outbox.nextSeq == 3)
    }

    @Test func acknowledgementIsRecordedAndSurvivesReopen() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/" + OutboxFile.name
        let file = try OutboxFile.open(path)
        for _ in 0..<5 { try file.append(Self.event(file.outbox)) }
        try file.acknowledge(through: 3)
        #expect(file.outbox.pending.map(\.seq) == [4, 5])
        #expect(file.written.fsyncs == 5)  // acknowledgements are not fsynced
        let again = try OutboxFile.open(path)
        #expect(again.outbox.pending.map(\.seq) == [4, 5])
        #expect(again.outbox.nextSeq == 6)
    }

    @Test func compactsWhenAcknowledgedRecordsDominate() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/" + OutboxFile.name
        let file = try OutboxFile.open(path)
        var compactions: [UInt64] = []
        file.onCompaction = { compactions.append($0.nextSeq) }
        for _ in 0..<200 {
            try file.append(Self.event(file.outbox))
            try file.acknowledge(through: file.outbox.nextSeq - 1)
        }
        #expect(!compactions.isEmpty)
        #expect(file.written.rewrites == compactions.count)
        // Never more than the pending events' worth of records plus the slack.
        #expect(file.records <= 2 * file.outbox.pending.count + OutboxFile.slackRecords)
        let again = try OutboxFile.open(path)
        #expect(again.outbox.pending.isEmpty)
        #expect(again.outbox.nextSeq == 201)
    }

    @Test func dropsBeyondCapacityAreCountedAndTheFileStaysBounded() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/" + OutboxFile.name
        let file = try OutboxFile.open(path)
        let long = String(repeating: "x", count: 1000)
        for _ in 0..<(Outbox.capacity + 300) { try file.append(Self.event(file.outbox, .failed, detail: long)) }
        #expect(file.outbox.pending.count == Outbox.capacity)
        #expect(file.outbox.dropped == 300)
        // Rewritten now and then, not per event, and never more than about twice the live records.
        #expect(file.written.rewrites >= 1 && file.written.rewrites <= 10)
        #expect(file.records <= 2 * file.outbox.pending.count + OutboxFile.slackRecords)
        #expect((FS.fileSize(path) ?? 0) == Int64(file.bytes))
        let again = try OutboxFile.open(path)
        #expect(again.outbox == file.outbox)
        #expect(again.outbox.pending.first?.seq == 301)
    }

    @Test func aTornLastRecordIsIgnoredAndCutOff() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/" + OutboxFile.name
        let file = try OutboxFile.open(path)
        for _ in 0..<3 { try file.append(Self.event(file.outbox)) }
        let whole = Self.bytes(path)
        // A crash in the middle of the fourth record's write.
        let torn = OutboxFile.line(.init(e: Self.event(file.outbox)))
        try Data(whole + torn.prefix(torn.count / 2)).write(to: URL(fileURLWithPath: path))
        let again = try OutboxFile.open(path)
        #expect(again.outbox.pending.map(\.seq) == [1, 2, 3])
        #expect(Self.bytes(path) == whole)
        // The next append starts a line of its own and reads back.
        try again.append(Self.event(again.outbox))
        #expect(try OutboxFile.open(path).outbox.pending.map(\.seq) == [1, 2, 3, 4])
    }

    @Test func aCorruptRecordIsATypedErrorWithTheReadableEventsAndASafeNextSeq() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/" + OutboxFile.name
        let file = try OutboxFile.open(path)
        for _ in 0..<4 { try file.append(Self.event(file.outbox)) }
        var content = Self.bytes(path)
        // Flip a byte inside the second event's record (the third line).
        let lines = content.indices.filter { content[$0] == 0x0A }
        content[lines[1] + 20] ^= 0x01
        try Data(content).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: OutboxError.self) { try OutboxFile.open(path) }
        #expect(error?.code == .corrupt)
        let salvaged = try #require(error?.salvaged)
        #expect(salvaged.pending.map(\.seq) == [1, 3, 4])
        // Past every seq the unreadable record could have held.
        #expect(salvaged.nextSeq >= 6)
    }

    @Test func boundedReplayAppliesTheHeaderAndTheSeqFloor() {
        var box = Outbox()
        box.nextSeq = 500
        box.dropped = 7
        let (content, _) = OutboxFile.compacted(box)
        let r = OutboxFile.replay(content, seqFloor: 1)
        #expect(r.outbox.nextSeq == 500 && r.outbox.dropped == 7 && r.corrupt == 0)
        // The header unreadable: the journal's floor numbers on.
        var broken = content
        broken[2] ^= 0x01
        let lost = OutboxFile.replay(broken, seqFloor: 800)
        #expect(lost.corrupt == 1 && lost.outbox.nextSeq > 800)
    }
}

@Suite("Agent records: one owner of the journal and the outbox")
struct AgentRecordsTests {
    static let logger = Logger(label: "test")

    static func job(_ model: String = "m") -> InstallJob {
        InstallJob(
            model: model, release: "\(model)@1", variant: "v", sha256: String(repeating: "b", count: 64), size: 3, fileName: "m.onnx",
            url: "http://x/a", counter: 1, previousSha256: nil)
    }

    @Test func aCorruptOutboxIsSetAsideWithoutLosingTheJournal() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try AgentState(root: dir + "/state")
        do {
            let records = try AgentRecords(state: state, logger: Self.logger)
            try records.recordInstall(model: "m", InstallState(phase: .committed, job: Self.job()))
            try records.recordCommitted(model: "m", sha256: Self.job().sha256, release: "m@1") { _ in true }
            for _ in 0..<3 { try records.report(.started, time: 1, model: "m") }
        }
        let path = state.root + "/" + OutboxFile.name
        try Data("00000000 not a record\n".utf8).write(to: URL(fileURLWithPath: path))
        let records = try AgentRecords(state: state, logger: Self.logger)
        #expect(records.install("m").phase == .committed)
        #expect(records.release(ofArtifact: Self.job().sha256) == "m@1")
        #expect(FileManager.default.fileExists(atPath: path + ".corrupt"))
        // Numbering goes on: the new event's seq is past any the lost file could have held.
        let e = try records.report(.metrics, time: 2, model: "m")
        #expect(e.seq >= 2)
        #expect(try OutboxFile.open(path).outbox.pending.map(\.seq) == [e.seq])
    }

    @Test func theOutboxOfAnEarlierAgentIsCarriedOver() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try AgentState(root: dir + "/state")
        var old = Outbox()
        for _ in 0..<3 { old.append(kind: .started, time: 1, model: "m") }
        old.acknowledge(through: 1)
        try state.save(AgentRecords.legacyOutboxFile, old)
        let records = try AgentRecords(state: state, logger: Self.logger)
        #expect(records.outbox == old)
        #expect(!FileManager.default.fileExists(atPath: state.root + "/" + AgentRecords.legacyOutboxFile))
        #expect(try records.report(.committed, time: 2).seq == 4)
    }

    @Test func acknowledgeThroughRemovesPendingAndCompactionKeepsASeqFloorInTheJournal() throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try AgentState(root: dir + "/state")
        let records = try AgentRecords(state: state, logger: Self.logger)
        for _ in 0..<300 {
            let e = try records.report(.started, time: 1)
            try records.acknowledge(through: e.seq)
        }
        #expect(records.outbox.pending.isEmpty)
        let floor = try #require(try state.load(AgentRecords.journalFile, as: Journal.self)?.eventSeqFloor)
        #expect(floor > 1 && floor <= 301)
    }
}

extension StatusEvent {
    func with(metrics: RuntimeMetrics) -> StatusEvent {
        var e = self
        e.metrics = metrics
        return e
    }
}

/// The agent's cost per status event, the append-only file against the whole-file rewrite earlier
/// agents did (`AgentState.save` of the outbox per event: temporary file, fsync, rename, directory
/// fsync). Counts are by construction and checked; the time per event is printed, not judged.
/// `strace -c -f -e trace=fsync,write,rename` over one test at a time confirms the counts.
@Suite("Outbox cost per status event")
struct OutboxCostTests {
    static let events = 500
    static let sha = String(repeating: "c", count: 64)

    struct Cost { var bytes = 0, fsyncs = 0, seconds = 0.0 }

    static func report(_ name: String, _ backlog: Bool, _ c: Cost) {
        let n = Double(events)
        print(
            "outbox cost \(name) \(backlog ? "offline (backlog grows)" : "online (acked each event)"): "
                + "\(Int(Double(c.bytes) / n)) bytes, \(Double(c.fsyncs) / n) fsyncs, \(Int(c.seconds / n * 1e6)) µs per event")
    }

    /// Earlier agents: the outbox JSON rewritten whole per event (and per acknowledgement).
    static func wholeFile(backlog: Bool) throws -> Cost {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try AgentState(root: dir + "/state")
        var box = Outbox(), cost = Cost()
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<events {
            box.append(kind: .metrics, time: 1, model: "m", sha256: sha, release: "m@1", metrics: .init(latencyP50Ms: 5, requests: 3))
            try state.save("outbox.json", box)
            cost.bytes += Int(FS.fileSize(state.root + "/outbox.json") ?? 0)
            cost.fsyncs += 2
            if !backlog {
                box.acknowledge(through: box.nextSeq - 1)
                try state.save("outbox.json", box)
                cost.bytes += Int(FS.fileSize(state.root + "/outbox.json") ?? 0)
                cost.fsyncs += 2
            }
        }
        cost.seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return cost
    }

    static func appendOnly(backlog: Bool) throws -> Cost {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let records = try AgentRecords(state: try AgentState(root: dir + "/state"), logger: Logger(label: "test"))
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<events {
            let e = try records.report(
                .metrics, time: 1, model: "m", sha256: sha, release: "m@1", metrics: .init(latencyP50Ms: 5, requests: 3))
            if !backlog { try records.acknowledge(through: e.seq) }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        // Compactions also write the journal's seq floor (one atomic replace: file and directory fsync).
        let c = records.outboxCost
        let journal = Int(FS.fileSize(dir + "/state/" + AgentRecords.journalFile) ?? 0)
        return Cost(bytes: c.bytes + c.rewrites * journal, fsyncs: c.fsyncs + 2 * c.rewrites, seconds: seconds)
    }

    @Test(arguments: [false, true]) func appendOnlyWritesLessAndSyncsOncePerEvent(backlog: Bool) throws {
        let before = try Self.wholeFile(backlog: backlog)
        let after = try Self.appendOnly(backlog: backlog)
        Self.report("whole-file rewrite", backlog, before)
        Self.report("append-only", backlog, after)
        #expect(after.bytes < before.bytes)
        #expect(after.fsyncs < before.fsyncs)
        // At most one fsync per event, plus the rare compaction's.
        #expect(after.fsyncs <= Self.events + Self.events / 16)
    }
}
