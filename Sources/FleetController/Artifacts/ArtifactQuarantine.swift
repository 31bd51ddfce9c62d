import FleetCore
import Foundation
import Logging
import Synchronization

/// Checks stored artifacts against their names and takes a corrupt one out of service: its bytes
/// are moved into the quarantine folder (never served again: the artifact route answers 410
/// `artifact-quarantined`), the fact is recorded with every delta it touches withdrawn, and the
/// `edgefleet_artifacts_quarantined` gauge says how many are out. Uploading the right bytes again
/// restores the artifact.
struct ArtifactQuarantine: Sendable {
    let artifacts: ArtifactStore
    let store: any ArtifactQuarantineStore
    let metrics: ControllerMetrics
    let logger: Logger
    let clock: @Sendable () -> Int64
    /// Seconds during which further device reports about an artifact do not hash it again.
    var reportRecheckSeconds: Int64 = 600
    private let reported = ReportedChecks()

    /// Hashes the stored artifact again and quarantines it when the bytes are not what its name
    /// says. Returns what the check found.
    @discardableResult
    func check(_ sha256: String, by finder: QuarantinedArtifact.Finder) async throws -> ArtifactIntegrity {
        let integrity = try await Self.offThePool { [artifacts] () throws(ArtifactError) in try artifacts.verify(sha256) }
        metrics.artifactsVerified.increment()
        guard case .corrupt(let actual, let size) = integrity else { return integrity }
        let now = clock()
        guard let moved = try artifacts.moveToQuarantine(sha256, at: now) else { return .missing }
        try await store.quarantine(
            QuarantinedArtifact(
                sha256: sha256, actualSha256: actual, size: size, quarantinedAt: now,
                foundBy: finder, path: moved))
        logger.error(
            "artifact corrupt on disk: quarantined",
            metadata: [
                "artifact": "\(sha256)", "actual": "\(actual)", "bytes": "\(size)", "found_by": "\(finder.rawValue)", "moved_to": "\(moved)"
            ])
        try await refreshGauge()
        return integrity
    }

    /// A device reported that the bytes it downloaded did not verify: checks the stored copy, at
    /// most once per `reportRecheckSeconds` for an artifact however many devices report it (a
    /// fleet that fails at once must not make the controller read a large artifact a thousand
    /// times). nil: checked recently, skipped.
    func checkReported(_ sha256: String) async throws -> ArtifactIntegrity? {
        guard reported.claim(sha256, now: clock(), within: reportRecheckSeconds) else { return nil }
        return try await check(sha256, by: .deviceReport)
    }

    /// Hashing a large artifact takes seconds of one core: on a thread of its own, so that the
    /// cooperative pool (which serves the HTTP routes) keeps all its threads.
    private static func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws(ArtifactError) -> T) async throws(ArtifactError) -> T
    {
        let result: Result<T, ArtifactError> = await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Result { () throws(ArtifactError) in try body() }) }.start()
        }
        return try result.get()
    }

    func list() async throws -> [QuarantinedArtifact] { try await store.quarantinedArtifacts() }

    func record(_ sha256: String) async throws -> QuarantinedArtifact? { try await store.quarantinedArtifact(sha256) }

    /// The artifact was stored again with verified bytes (an upload, a rebuilt delta).
    func restored(_ sha256: String) async throws {
        if try await store.restoreQuarantined(sha256) {
            logger.notice("quarantined artifact stored again: back in service", metadata: ["artifact": "\(sha256)"])
            try await refreshGauge()
        }
    }

    func refreshGauge() async throws {
        metrics.artifactsQuarantined.set(Int64(try await store.quarantinedArtifacts().count))
    }
}

/// When each artifact was last checked because a device reported it.
final class ReportedChecks: Sendable {
    private let last = Mutex<[String: Int64]>([:])

    /// True when no check of `sha256` was claimed within `seconds` before `now` (and claims it).
    func claim(_ sha256: String, now: Int64, within seconds: Int64) -> Bool {
        last.withLock { map in
            if let at = map[sha256], now - at < seconds { return false }
            if map.count > 10_000 { map = map.filter { now - $0.value < seconds } }  // bounded
            map[sha256] = now
            return true
        }
    }
}
