import FleetCore
import Foundation
import Logging
import ServiceLifecycle

/// What one scrub pass did.
struct ScrubReport: Codable, Sendable, Equatable {
    var checked: Int
    var bytes: Int64
    /// Artifacts this pass found corrupt and quarantined.
    var quarantined: [String]
    /// Artifacts it could not read (an I/O error, not a wrong hash): left in place, logged.
    var unreadable: [String]
    var startedAt: Int64
    var finishedAt: Int64
}

/// Re-hashes every stored artifact every `intervalSeconds` and quarantines the corrupt ones: disks
/// rot and operators slip, and an artifact is served for months after its upload was checked.
/// The time of the last pass is kept in the store, so a controller restarted more often than the
/// interval still scrubs.
final class ArtifactScrubber: Service, Sendable {
    static let lastScrubKey = "artifact-scrub-last"

    let quarantine: ArtifactQuarantine
    let store: any FleetStore
    /// nil: no periodic scrub (a pass runs only when asked).
    let intervalSeconds: Double?
    private let passes = AsyncLock()

    /// On replicas, only the leader scrubs (the artifact directory is shared); nil: always.
    let leader: LeaseFence?

    init(quarantine: ArtifactQuarantine, store: any FleetStore, intervalSeconds: Double?, leader: LeaseFence? = nil) {
        self.quarantine = quarantine; self.store = store; self.intervalSeconds = intervalSeconds; self.leader = leader
    }

    private var logger: Logger { quarantine.logger }

    func run() async throws {
        do {
            try await quarantine.refreshGauge()
            if let last = try await store.meta(Self.lastScrubKey).flatMap(Int64.init) { quarantine.metrics.artifactLastScrub.set(last) }
        } catch {
            logger.warning("cannot read the artifact quarantine", metadata: ["error": "\(error)"])
        }
        guard let interval = intervalSeconds, interval > 0 else { return try await gracefulShutdown() }
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            var wait: Double
            do { wait = try await secondsUntilDue(interval: interval) } catch {
                // The store is unwell: the controller's other work goes on; try again later.
                logger.warning("cannot read when the artifact scrub is due", metadata: ["error": "\(error)"])
                wait = min(interval, 60)
            }
            if let leader, !leader.isLeader { wait = max(wait, min(interval, 5)) }  // look again when it may have become the leader
            if wait > 0 {
                let wait = wait
                do {
                    try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
                } catch {
                    return  // the sleep ends early only when the service is stopped or cancelled
                }
                continue  // re-read the due time: a pass asked for meanwhile moves it
            }
            let report = await scrub()
            if !report.quarantined.isEmpty || !report.unreadable.isEmpty {
                logger.error(
                    "artifact scrub found damage",
                    metadata: [
                        "quarantined": "\(report.quarantined.count)",
                        "unreadable": "\(report.unreadable.count)"
                    ])
            }
        }
    }

    private func secondsUntilDue(interval: Double) async throws -> Double {
        let now = quarantine.clock()
        guard let last = try await store.meta(Self.lastScrubKey).flatMap(Int64.init) else {
            // Never scrubbed: count the interval from now, and remember that across restarts.
            try await store.setMeta(Self.lastScrubKey, String(now))
            return interval
        }
        return max(0, Double(last) + interval - Double(now))
    }

    /// One pass over every stored artifact; passes never overlap.
    func scrub() async -> ScrubReport {
        await passes.withLock {
            let started = quarantine.clock()
            var report = ScrubReport(checked: 0, bytes: 0, quarantined: [], unreadable: [], startedAt: started, finishedAt: started)
            for sha in quarantine.artifacts.storedDigests() {
                if Task.isShuttingDownGracefully || Task.isCancelled { break }
                let size = quarantine.artifacts.size(sha) ?? 0
                do {
                    switch try await quarantine.check(sha, by: .scrub) {
                    case .intact: report.checked += 1; report.bytes += size
                    case .corrupt: report.checked += 1; report.bytes += size; report.quarantined.append(sha)
                    case .missing: break  // taken out meanwhile
                    }
                } catch {
                    report.unreadable.append(sha)
                    logger.error("artifact scrub cannot check an artifact", metadata: ["artifact": "\(sha)", "error": "\(error)"])
                }
            }
            report.finishedAt = quarantine.clock()
            quarantine.metrics.artifactScrubs.increment()
            quarantine.metrics.artifactScrubBytes.increment(by: report.bytes)
            quarantine.metrics.artifactLastScrub.set(report.finishedAt)
            do { try await store.setMeta(Self.lastScrubKey, String(report.finishedAt)) } catch {
                logger.warning("cannot record the scrub time", metadata: ["error": "\(error)"])
            }
            logger.info(
                "artifact scrub done",
                metadata: [
                    "checked": "\(report.checked)", "bytes": "\(report.bytes)",
                    "quarantined": "\(report.quarantined.count)"
                ])
            return report
        }
    }
}

/// `--scrub-interval`: seconds, or a number with s, m, h or d; 0 or `off` turns the scrub off.
public enum ScrubInterval {
    public static func seconds(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        if t == "off" { return 0 }
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var number = Substring(t), unit = 1.0
        if let last = t.last, let u = units[last] { number = t.dropLast(); unit = u }
        guard let v = Double(number), v.isFinite, v >= 0 else { return nil }
        return v * unit
    }
}
