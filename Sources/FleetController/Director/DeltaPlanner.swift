import FleetCore
import Foundation
import Logging
import ServiceLifecycle

/// Makes a delta package from one artifact file to another.
protocol DeltaBuilding: Sendable {
    /// Writes the package to `output` and returns the method it used.
    func build(base: String, target: String, output: String) throws -> String
}

/// Builds delta packages in the background, one at a time (they are CPU-bound), for the
/// (installed base, target) pairs the director asks for: at rollout start from the census of what
/// devices run, and on demand for a pair a check-in meets first.
final class DeltaPlanner: Service, Sendable {
    let store: any FleetStore
    let artifacts: ArtifactStore
    let builder: (any DeltaBuilding)?
    let logger: Logger
    let clock: @Sendable () -> Int64
    /// Hashes base and target again before each build; nil: trusts the store (router tests).
    let quarantine: ArtifactQuarantine?
    private let queue: AsyncStream<(String, String)>
    private let continuation: AsyncStream<(String, String)>.Continuation

    init(
        store: any FleetStore, artifacts: ArtifactStore, builder: (any DeltaBuilding)?, logger: Logger,
        clock: @escaping @Sendable () -> Int64,
        quarantine: ArtifactQuarantine? = nil
    ) {
        self.store = store; self.artifacts = artifacts; self.builder = builder; self.logger = logger; self.clock = clock
        self.quarantine = quarantine
        (queue, continuation) = AsyncStream.makeStream(of: (String, String).self)
    }

    var enabled: Bool { builder != nil }

    /// Queues a build unless the pair was built, is building, or failed before.
    func request(base: String, target: String) async throws {
        guard enabled, base != target, artifacts.size(base) != nil, artifacts.size(target) != nil else { return }
        if try await store.claimDelta(base: base, target: target, at: clock()) {
            continuation.yield((base, target))
        }
    }

    func run() async throws {
        try await resumeClaimed()  // cut by a restart
        for await (base, target) in queue.cancelOnGracefulShutdown() {
            await build(base: base, target: target)
        }
    }

    /// Queues every pair claimed but not finished: at start, and on a replica that becomes the
    /// leader (the replica that claimed them may have died mid-build). A pair another live replica
    /// is still building is built twice at worst, to the same content-addressed package.
    func resumeClaimed() async throws {
        guard enabled else { return }
        for (base, target) in try await store.buildingDeltas() { continuation.yield((base, target)) }
    }

    /// Builds one claimed pair and records the outcome (the service loop calls it; tests too).
    func build(base: String, target: String) async {
        guard let builder, let basePath = artifacts.path(base), let targetPath = artifacts.path(target),
            let targetSize = artifacts.size(target)
        else { return }
        let output = "\(artifacts.root)/incoming/delta-\(UUID().uuidString)"
        defer { unlink(output) }
        var record = DeltaRecord(baseSha256: base, targetSha256: target, status: .failed, createdAt: clock())
        let start = Date()
        do {
            // A delta made from rotten bytes would be served as if it were good: check both first.
            if let quarantine {
                for (role, sha) in [("base", base), ("target", target)] {
                    switch try await quarantine.check(sha, by: .deltaBuild) {
                    case .intact: continue
                    case .corrupt: throw DeltaInputError(sha256: sha, role: role, quarantined: true)
                    case .missing: throw DeltaInputError(sha256: sha, role: role, quarantined: false)
                    }
                }
            }
            record.method = try builder.build(base: basePath, target: targetPath, output: output)
            let info = try artifacts.adopt(file: output)
            try await quarantine?.restored(info.sha256)  // a package quarantined before, made anew
            record.packageSha256 = info.sha256
            record.packageSize = info.size
            if info.size >= targetSize {
                record.detail = "not smaller than the full artifact (\(info.size) ≥ \(targetSize) bytes)"
            } else {
                record.status = .ready
            }
        } catch let e as DeltaInputError {
            // Quarantining already failed the record; a missing input leaves it failed here.
            record.detail = e.description
        } catch {
            record.detail = "\(error)"
        }
        logger.info(
            "delta built",
            metadata: [
                "base": "\(base.prefix(12))", "target": "\(target.prefix(12))", "status": "\(record.status.rawValue)",
                "method": "\(record.method ?? "-")", "bytes": "\(record.packageSize ?? 0)",
                "seconds": "\(Int(Date().timeIntervalSince(start)))", "detail": "\(record.detail ?? "")"
            ])
        try? await store.finishDelta(record)
    }
}

/// A delta's input is not whole in the store: the delta is not built.
struct DeltaInputError: Error, CustomStringConvertible {
    let sha256: String
    let role: String
    let quarantined: Bool
    var description: String {
        "\(QuarantinedArtifact.deltaDetailPrefix) \(role) artifact \(sha256) is "
            + (quarantined ? "corrupt on the controller" : "no longer in the store")
    }
}
