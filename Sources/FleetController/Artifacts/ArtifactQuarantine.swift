import FleetCore
import Foundation
import Logging

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

    /// Hashes the stored artifact again and quarantines it when the bytes are not what its name
    /// says. Returns what the check found.
    @discardableResult
    func check(_ sha256: String, by finder: QuarantinedArtifact.Finder) async throws -> ArtifactIntegrity {
        let integrity = try artifacts.verify(sha256)
        metrics.artifactsVerified.increment()
        guard case .corrupt(let actual, let size) = integrity else { return integrity }
        let now = clock()
        guard let moved = try artifacts.moveToQuarantine(sha256, at: now) else { return .missing }
        try await store.quarantine(QuarantinedArtifact(sha256: sha256, actualSha256: actual, size: size, quarantinedAt: now,
                                                       foundBy: finder, path: moved))
        logger.error("artifact corrupt on disk: quarantined", metadata: [
            "artifact": "\(sha256)", "actual": "\(actual)", "bytes": "\(size)", "found_by": "\(finder.rawValue)", "moved_to": "\(moved)"])
        try await refreshGauge()
        return integrity
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
