import FleetCore
import Foundation
import Logging

/// Writes a simulated fleet straight into the store, for scale runs: device `i` is
/// `SimulatedDevice.id(prefix:index:)` with `SimulatedDevice.facts(index:)`, classified by the
/// operator configuration as a check-in would classify it. Rows already there are left as they are.
public enum DeviceSeeder {
    public struct Report: Sendable {
        public var devices: Int
        public var seconds: Double
        public var perCell: [String: Int]
    }

    public static func seed(
        options: ControllerOptions, count: Int, prefix: String, now: Int64 = Int64(Date().timeIntervalSince1970),
        logger: Logger
    ) async throws -> Report {
        let config = try FleetConfig.load(directory: options.configDirectory)
        let store = try await Controller.openStore(options: options, logger: logger)
        defer { Task { await store.db.close() } }
        let started = ContinuousClock.now
        var perCell: [String: Int] = [:]
        let batch = 50_000
        var start = 0
        while start < count {
            var rows: [[any SQLValueConvertible]] = []
            rows.reserveCapacity(min(batch, count - start))
            for i in start..<min(start + batch, count) {
                let facts = SimulatedDevice.storedFacts(prefix: prefix, index: i)
                let cls = HardwareClassifier.classify(facts, classes: config.hardwareClasses)?.name
                let tier = TierClassifier.classify(facts, tiers: config.bandwidthTiers)?.name
                perCell["\(cls ?? "none")/\(tier ?? "none")", default: 0] += 1
                // The columns a check-in keeps beside the facts, for selectors, label views and
                // frugal check-ins (the digest: of the same encoding when the facts are all probed).
                let text = try store.json(facts)
                let digest = facts.probed == facts ? Digest.sha256Hex(Array(text.utf8)) : facts.probed.digest
                rows.append([
                    facts.deviceId!, text, cls, tier, now, now, facts.arch, facts.timezone, try store.json(facts.labels ?? [:]), digest
                ])
            }
            try await store.insertRows(
                table: "devices",
                columns: [
                    "id", "facts", "hardware_class", "tier", "first_seen", "last_seen", "arch", "timezone", "agent_labels", "facts_digest"
                ],
                constants: [
                    "installed": "'{}'", "status": SQLVocabulary.literal(DeviceStatus.idle), "held": "'{}'", "agent_version": "'seeded'"
                ],
                rows: rows)
            start += batch
            logger.info("seeded", metadata: ["devices": "\(min(start, count))", "of": "\(count)"])
        }
        let elapsed = ContinuousClock.now - started
        return Report(
            devices: count, seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, perCell: perCell)
    }
}
