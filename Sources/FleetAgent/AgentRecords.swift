import FleetCore
import Logging
#if canImport(Glibc)
    import Glibc
#endif

/// The agent's install journal (`journal.json`) and telemetry outbox (`outbox.log`), owned here
/// alone: loaded once, changed through methods that say what happened, persisted by this type.
/// Callers never name a file.
///
/// The journal is replaced atomically whenever an install step or a decision about the next
/// attempt is recorded; the outbox is appended to (`OutboxFile`). A corrupt outbox is set aside
/// (`outbox.log.corrupt`) and what could be read is kept: the journal, and with it the installed
/// model, is never touched by it.
final class AgentRecords {
    static let journalFile = "journal.json"
    /// The outbox as earlier agents kept it (rewritten whole per event): read once, then replaced.
    static let legacyOutboxFile = "outbox.json"

    private(set) var journal: Journal
    private let state: AgentState
    private let file: OutboxFile
    private let logger: Logger

    var outbox: Outbox { file.outbox }
    /// What the outbox file cost so far in this process.
    var outboxCost: OutboxFile.Cost { file.written }

    init(state: AgentState, logger: Logger) throws {
        self.state = state
        self.logger = logger
        journal = try state.load(Self.journalFile, as: Journal.self) ?? Journal()
        file = try Self.openOutbox(state: state, seqFloor: journal.eventSeqFloor ?? 1, logger: logger)
        file.onCompaction = { [unowned self] outbox in
            // Before the header changes: numbering must go on past it even if it is lost.
            self.journal.eventSeqFloor = outbox.nextSeq
            try self.saveJournal()
        }
    }

    /// The outbox file, made from an earlier agent's `outbox.json` the first time; a corrupt one
    /// is set aside and replaced by what could be read of it.
    private static func openOutbox(state: AgentState, seqFloor: UInt64, logger: Logger) throws -> OutboxFile {
        let path = state.root + "/" + OutboxFile.name
        let legacy = state.root + "/" + legacyOutboxFile
        var initial = Outbox()
        initial.nextSeq = seqFloor
        if !FS.exists(path), FS.exists(legacy) {
            do {
                initial = try state.load(legacyOutboxFile, as: Outbox.self) ?? initial
            } catch {
                logger.error("outbox.json unreadable; its events are lost", metadata: ["error": "\(error)"])
            }
        }
        let opened: OutboxFile
        do {
            opened = try OutboxFile.open(path, initial: initial, seqFloor: seqFloor)
        } catch {
            guard error.code == .corrupt else { throw error }
            let salvaged = error.salvaged ?? initial
            logger.error(
                "outbox file corrupt; set aside, the readable events kept",
                metadata: [
                    "error": "\(error)", "kept": "\(salvaged.pending.count)", "next_seq": "\(salvaged.nextSeq)",
                    "set_aside": "\(path).corrupt"
                ])
            if rename(path, path + ".corrupt") != 0 { throw OutboxError(.errno(path, "rename")) }
            opened = try OutboxFile.create(path, salvaged)
        }
        unlink(legacy)
        return opened
    }

    // MARK: journal

    func install(_ model: String) -> InstallState { journal.installs[model] ?? .idle }
    var installs: [String: InstallState] { journal.installs }
    func retry(_ model: String) -> RetryRecord? { journal.retries?[model] }
    func failedCounter(_ model: String) -> UInt64? { journal.failedCounters[model] }
    /// The models whose delta failed, by the target it was for.
    var deltaFailed: [String: String] { journal.deltaFailed }
    func release(ofArtifact sha256: String) -> String? { journal.releaseOf?[sha256] }

    /// An install step: journaled before its action runs. A job that ended for good (rolled back,
    /// or failed with no retry planned) is marked so that the same assignment is not started again.
    func recordInstall(model: String, _ s: InstallState) throws {
        journal.installs[model] = s
        if let job = s.job, s.phase == .rolledBack || (s.phase == .failed && s.retryAt == nil) {
            var r =
                journal.retries?[model].flatMap { $0.counter == job.counter ? $0 : nil }
                ?? RetryRecord(counter: job.counter, sha256: job.sha256, attempts: 1)
            r.gaveUp = true
            r.nextAttemptAt = nil
            r.lastFault = r.lastFault ?? s.fault
            journal.retries = (journal.retries ?? [:]).merging([model: r]) { $1 }
        }
        try saveJournal()
    }

    /// A newer assignment replaces an unfinished install that has not touched the live model; the
    /// new job's first step, journaled right after, takes its place.
    func noteSuperseded(model: String) { journal.installs[model] = .idle }

    /// A failed attempt's record, journaled with the install step the failure leads to.
    func noteAttempt(model: String, _ r: RetryRecord) {
        journal.retries = (journal.retries ?? [:]).merging([model: r]) { $1 }
    }

    /// A delta to `target` failed during an install: the next check-in asks for the full
    /// artifact. Journaled with the install step the failure leads to.
    func noteDeltaFailed(model: String, target: String) { journal.deltaFailed[model] = target }

    /// A delta to `target` cannot be applied here (found before any install step): journaled now.
    func recordDeltaFailed(model: String, target: String) throws {
        journal.deltaFailed[model] = target
        try saveJournal()
    }

    /// A model committed: its delta marker goes (journaled with the committed step that follows).
    func clearDeltaFailed(model: String) { journal.deltaFailed[model] = nil }

    /// A model committed `sha256` of `release`: runtime metrics name that release from now on;
    /// entries of artifacts no longer in a slot go.
    func recordCommitted(model: String, sha256: String, release: String, stillInstalled: (String) -> Bool) throws {
        var known = (journal.releaseOf ?? [:]).filter { stillInstalled($0.key) }
        known[sha256] = release
        journal.releaseOf = known
        try saveJournal()
    }

    private func saveJournal() throws { try state.save(Self.journalFile, journal) }

    // MARK: outbox

    /// Adds a status event (numbered here) to the outbox; it is on disk when this returns.
    @discardableResult
    func report(
        _ kind: EventKind, time: Int64, model: String? = nil, sha256: String? = nil, release: String? = nil, detail: String? = nil,
        fault: InstallFault? = nil, retryAt: Int64? = nil, metrics: RuntimeMetrics? = nil
    ) throws(OutboxError) -> StatusEvent {
        let e = outbox.event(
            kind: kind, time: time, model: model, sha256: sha256, release: release, detail: detail, fault: fault, retryAt: retryAt,
            metrics: metrics)
        try file.append(e)
        return e
    }

    /// The controller stored every event through `seq`.
    func acknowledge(through seq: UInt64) throws(OutboxError) {
        try file.acknowledge(through: seq)
    }
}
