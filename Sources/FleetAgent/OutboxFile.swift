import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Why the outbox file could not be read or written. On `.corrupt`, `salvaged` is the outbox
/// rebuilt from every record that could be read, its next seq moved past any event an unreadable
/// record may have held (so the controller never takes a new event for a stored one).
struct OutboxError: Error, CustomStringConvertible {
    enum Code: String, Sendable { case io, noSpace, corrupt }
    let code: Code
    let path: String
    let message: String
    var salvaged: Outbox?

    init(_ code: Code, _ path: String, _ message: String, salvaged: Outbox? = nil) {
        self.code = code; self.path = path; self.message = message; self.salvaged = salvaged
    }

    init(_ error: AgentIOError) {
        self.init(error.code == .noSpace ? .noSpace : .io, error.path, error.message)
    }

    var description: String { "\(code.rawValue): \(path): \(message)" }
}

/// The outbox on disk, append-only (`outbox.log`): one record per line, `CRC32 JSON\n`.
///
/// - Appending an event writes its one record and fsyncs it: the event is on disk before it can
///   be sent, and the file is never rewritten for it.
/// - An acknowledgement is one record, written without fsync: losing it in a crash only resends
///   events the controller already has, which it counts as duplicates.
/// - The file is compacted (rewritten atomically as a header and the pending events) when
///   acknowledged records dominate it or it passes `compactBytes`.
/// - On load the records are replayed through `Outbox`, so capacity and the dropped count come
///   out as they were. A last record without its newline is a write a crash cut short: ignored
///   and cut off. A complete record that fails its checksum or does not decode is corruption:
///   `OutboxError.corrupt` with what could be salvaged.
final class OutboxFile {
    static let name = "outbox.log"
    /// Above this the file is compacted even when most records are pending.
    static let compactBytes = 1 << 20
    /// Dead records tolerated beyond the live ones before a compaction, so that a device whose
    /// every event is acknowledged at once rewrites the file once per this many events, not per event.
    static let slackRecords = 256
    /// A record is never shorter than this (checksum, space, the shortest JSON, newline): an
    /// unreadable stretch of the file held at most `bytes / minRecordBytes` events.
    static let minRecordBytes = 16

    let path: String
    private(set) var outbox: Outbox
    /// Bytes and records in the file now.
    private(set) var bytes: Int
    private(set) var records: Int
    /// Bytes right after the last compaction (or the open).
    private var compactedBytes: Int
    /// What this process wrote, for the per-event cost the README reports.
    private(set) var written = Cost()
    private var fd: Int32

    struct Cost: Equatable { var bytes = 0, records = 0, fsyncs = 0, rewrites = 0 }

    /// One line of the file.
    struct Record: Codable, Equatable {
        /// First line after a compaction: where the outbox stood.
        struct Header: Codable, Equatable { var nextSeq: UInt64; var dropped: UInt64 }
        var h: Header?
        var e: StatusEvent?
        /// Acknowledged through this seq.
        var a: UInt64?
    }

    private init(path: String, outbox: Outbox, bytes: Int, records: Int, fd: Int32) {
        self.path = path; self.outbox = outbox; self.bytes = bytes; self.records = records; self.fd = fd
        compactedBytes = bytes
    }

    deinit { close(fd) }

    /// Opens the file, replaying its records; creates it (from `initial`) when there is none.
    /// `seqFloor`: no event of this device ever had a seq at or above it unless the file says so
    /// (kept in the journal at each compaction), used when the header cannot be read.
    static func open(_ path: String, initial: Outbox = Outbox(), seqFloor: UInt64 = 1) throws(OutboxError) -> OutboxFile {
        guard FS.exists(path) else { return try create(path, initial) }
        let content: [UInt8]
        do { content = try FS.read(path, limit: 64 << 20) } catch { throw OutboxError(error) }
        let replay = Self.replay(content, seqFloor: seqFloor)
        if replay.corrupt > 0 {
            throw OutboxError(
                .corrupt, path, "\(replay.corrupt) unreadable record(s) of \(replay.records + replay.corrupt)", salvaged: replay.outbox)
        }
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw OutboxError(.errno(path, "open")) }
        if replay.goodBytes < content.count {
            // A torn last record: cut off, so that the next append starts a line of its own.
            guard ftruncate(fd, off_t(replay.goodBytes)) == 0, fsync(fd) == 0 else {
                let e = OutboxError(.errno(path, "ftruncate"))
                close(fd)
                throw e
            }
        }
        return OutboxFile(path: path, outbox: replay.outbox, bytes: replay.goodBytes, records: replay.records, fd: fd)
    }

    /// Writes a new file holding `outbox` (atomically over any file at `path`) and opens it.
    static func create(_ path: String, _ outbox: Outbox) throws(OutboxError) -> OutboxFile {
        let (content, records) = compacted(outbox)
        do { try FS.writeAtomically(path, content) } catch { throw OutboxError(error) }
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw OutboxError(.errno(path, "open")) }
        return OutboxFile(path: path, outbox: outbox, bytes: content.count, records: records, fd: fd)
    }

    /// Adds an event with the next seq: its record is on disk (fsynced) when this returns. On a
    /// failure nothing is added and the file is as it was.
    func append(_ event: StatusEvent) throws(OutboxError) {
        var next = outbox
        next.append(event)
        try write(Record(e: next.pending.last), sync: true)
        outbox = next
        try compactIfDue()
    }

    /// Records that the controller stored every event up to `seq`.
    func acknowledge(through seq: UInt64) throws(OutboxError) {
        guard outbox.pending.contains(where: { $0.seq <= seq }) else { return }
        try write(Record(a: seq), sync: false)
        outbox.acknowledge(through: seq)
        try compactIfDue()
    }

    /// Dead records (acknowledged or dropped) outnumber the live ones, or the file passed the
    /// size bound and doubled since its last compaction (pending events alone may be near the
    /// bound: the file is not rewritten per event then). Either way the file stays within about
    /// twice its live records.
    var compactionDue: Bool {
        records > 2 * outbox.pending.count + Self.slackRecords || (bytes > Self.compactBytes && bytes > 2 * compactedBytes)
    }

    /// Rewrites the file as a header and the pending events (temporary file, fsync, rename).
    func compact() throws(OutboxError) {
        let (content, count) = Self.compacted(outbox)
        do { try FS.writeAtomically(path, content) } catch { throw OutboxError(error) }
        let fresh = Glibc.open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fresh >= 0 else { throw OutboxError(.errno(path, "open")) }
        close(fd)
        fd = fresh
        bytes = content.count
        compactedBytes = content.count
        records = count
        written.bytes += content.count
        written.fsyncs += 2  // the file and its directory
        written.rewrites += 1
    }

    /// Called by the owner, which keeps a seq floor in the journal before the header changes.
    var onCompaction: ((Outbox) throws -> Void)?

    private func compactIfDue() throws(OutboxError) {
        guard compactionDue else { return }
        if let onCompaction {
            do { try onCompaction(outbox) } catch let e as OutboxError { throw e } catch { throw OutboxError(.io, path, "\(error)") }
        }
        try compact()
    }

    private func write(_ record: Record, sync: Bool) throws(OutboxError) {
        let line = Self.line(record)
        do {
            try FS.writeAll(fd, line, path: path)
        } catch {
            // A part of the line may be in the file: cut it off, so that the file stays whole.
            _ = ftruncate(fd, off_t(bytes))
            throw OutboxError(error)
        }
        if sync {
            guard fsync(fd) == 0 else {
                let e = OutboxError(.errno(path, "fsync"))
                _ = ftruncate(fd, off_t(bytes))
                throw e
            }
            written.fsyncs += 1
        }
        bytes += line.count
        records += 1
        written.bytes += line.count
        written.records += 1
    }

    // MARK: format

    static func line(_ record: Record) -> [UInt8] {
        // FleetJSON escapes control characters, so a record never holds a newline of its own.
        let json = (try? FleetJSON.encode(record)).map { [UInt8]($0) } ?? Array("{}".utf8)
        return Array(hex8(CRC32.checksum(json)).utf8) + [0x20] + json + [0x0A]
    }

    static func compacted(_ outbox: Outbox) -> (bytes: [UInt8], records: Int) {
        var out = line(Record(h: .init(nextSeq: outbox.nextSeq, dropped: outbox.dropped)))
        for e in outbox.pending { out += line(Record(e: e)) }
        return (out, outbox.pending.count + 1)
    }

    struct Replay {
        var outbox: Outbox
        var records: Int
        var corrupt: Int
        /// Bytes up to the end of the last complete line.
        var goodBytes: Int
    }

    /// Replays the records in order. Unreadable complete lines are counted, and each moves the next
    /// seq one further (each held at most one event); without a readable header the floor is used.
    static func replay(_ content: [UInt8], seqFloor: UInt64) -> Replay {
        var outbox = Outbox()
        outbox.nextSeq = max(outbox.nextSeq, seqFloor)
        var records = 0, corrupt = 0, start = 0
        var headerSeen = false
        while let nl = content[start...].firstIndex(of: 0x0A) {
            let lineBytes = content[start..<nl]
            start = nl + 1
            guard let r = decode(lineBytes) else { corrupt += 1; continue }
            records += 1
            if let h = r.h, !headerSeen, records == 1 {
                headerSeen = true
                outbox.nextSeq = max(outbox.nextSeq, h.nextSeq)
                outbox.dropped = h.dropped
            }
            if let e = r.e {
                outbox.append(e)
            }
            if let a = r.a { outbox.acknowledge(through: a) }
        }
        if corrupt > 0 {
            let tail = UInt64((content.count - start) / minRecordBytes)
            outbox.nextSeq += UInt64(corrupt) + tail
        }
        return Replay(outbox: outbox, records: records, corrupt: corrupt, goodBytes: start)
    }

    private static func decode(_ line: ArraySlice<UInt8>) -> Record? {
        guard line.count > 9, line[line.startIndex + 8] == 0x20 else { return nil }
        let json = Array(line[(line.startIndex + 9)...])
        guard let sum = UInt32(String(decoding: line[line.startIndex..<line.startIndex + 8], as: UTF8.self), radix: 16),
            sum == CRC32.checksum(json)
        else { return nil }
        return try? FleetJSON.decode(Record.self, from: Data(json), limit: 1 << 20)
    }

    private static func hex8(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}

/// CRC-32 (IEEE), for the outbox's records: a torn or flipped record is told from a whole one.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { i in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
