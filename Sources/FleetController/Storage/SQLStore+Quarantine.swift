import FleetCore
import Foundation

/// A stored artifact whose bytes no longer hash to its name, moved out of the store.
struct QuarantinedArtifact: Codable, Sendable, Equatable {
    enum Finder: String, Codable, Sendable {
        /// The periodic re-hash of every stored artifact.
        case scrub
        /// The check before a delta is built from (or to) the artifact.
        case deltaBuild = "delta-build"
        /// A check asked for because a device reported that the bytes it got did not verify.
        case deviceReport = "device-report"
    }

    var sha256: String
    /// What the bytes hash to now.
    var actualSha256: String
    var size: Int64
    var quarantinedAt: Int64
    var foundBy: Finder
    /// Where the bytes were moved, for an operator to inspect.
    var path: String

    /// How the detail of a delta withdrawn for a quarantined input begins.
    static let deltaDetailPrefix = "quarantined:"
}

/// The record of quarantined artifacts. Kept apart from `FleetStore`: only the artifact routes,
/// the scrub and the delta planner need it.
protocol ArtifactQuarantineStore: Sendable {
    /// Records the artifact as quarantined and withdraws every delta it touches: a delta whose
    /// package it is goes (it is rebuilt from intact inputs when asked for again); a delta from or
    /// to it is marked failed, so that none is served or built from it.
    func quarantine(_ artifact: QuarantinedArtifact) async throws
    func quarantinedArtifact(_ sha256: String) async throws -> QuarantinedArtifact?
    func quarantinedArtifacts() async throws -> [QuarantinedArtifact]
    /// The artifact is whole in the store again (uploaded anew): forgets its quarantine and the
    /// deltas it failed, so that they can be built again. True when it was quarantined.
    func restoreQuarantined(_ sha256: String) async throws -> Bool
}

/// The quarantine table next to the fleet tables in the same database.
extension SQLStore: ArtifactQuarantineStore {
    func quarantine(_ a: QuarantinedArtifact) async throws {
        try await write(announcing: [.quarantine]) { tx in
            try await tx.execute(
                """
                INSERT INTO artifact_quarantine (sha256, actual_sha256, size, quarantined_at, found_by, path) VALUES (?,?,?,?,?,?)
                ON CONFLICT(sha256) DO UPDATE SET actual_sha256=excluded.actual_sha256, size=excluded.size,
                  quarantined_at=excluded.quarantined_at, found_by=excluded.found_by, path=excluded.path
                """, [a.sha256, a.actualSha256, a.size, a.quarantinedAt, a.foundBy.rawValue, a.path])
            try await tx.execute("DELETE FROM deltas WHERE package_sha256 = ?", [a.sha256])
            try await tx.execute(
                """
                UPDATE deltas SET status = 'failed', detail = ? WHERE base_sha256 = ? OR target_sha256 = ?
                """, ["\(QuarantinedArtifact.deltaDetailPrefix) artifact \(a.sha256) is corrupt on the controller", a.sha256, a.sha256])
        }
    }

    private static func quarantineRow(_ r: SQLRow) throws -> QuarantinedArtifact {
        guard let finder = QuarantinedArtifact.Finder(rawValue: try r.string("found_by")) else {
            throw StorageError(.corrupt, "quarantine record with an unknown finder")
        }
        return QuarantinedArtifact(
            sha256: try r.string("sha256"), actualSha256: try r.string("actual_sha256"), size: try r.int("size"),
            quarantinedAt: try r.int("quarantined_at"), foundBy: finder, path: try r.string("path"))
    }

    private static let quarantineColumns = "sha256, actual_sha256, size, quarantined_at, found_by, path"

    /// Asked at every check-in that is sent an artifact: kept in the replica's cache.
    func quarantinedArtifact(_ sha256: String) async throws -> QuarantinedArtifact? {
        try await cache.value(.quarantine, sha256) {
            try await db.query("SELECT \(Self.quarantineColumns) FROM artifact_quarantine WHERE sha256 = ?", [sha256]).first.map(
                Self.quarantineRow)
        }
    }

    func quarantinedArtifacts() async throws -> [QuarantinedArtifact] {
        try await db.query("SELECT \(Self.quarantineColumns) FROM artifact_quarantine ORDER BY quarantined_at, sha256", []).map(
            Self.quarantineRow)
    }

    func restoreQuarantined(_ sha256: String) async throws -> Bool {
        try await write(announcing: [.quarantine]) { tx in
            let removed = try await tx.query("DELETE FROM artifact_quarantine WHERE sha256 = ? RETURNING sha256", [sha256])
            guard !removed.isEmpty else { return false }
            try await tx.execute(
                """
                DELETE FROM deltas WHERE status = 'failed' AND detail LIKE ? AND (base_sha256 = ? OR target_sha256 = ?)
                """, [QuarantinedArtifact.deltaDetailPrefix + "%", sha256, sha256])
            return true
        }
    }
}
