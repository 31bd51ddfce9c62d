import FleetCore
import Foundation
import Logging

/// Decides, per device, which variant of each model under an active rollout it should run, and
/// signs that decision (the online director role) together with a fresh timestamp.
actor Director {
    let store: any FleetStore
    let keys: OnlineKeys
    let config: FleetConfig
    let artifactBaseURL: String?
    let metrics: ControllerMetrics
    let logger: Logger
    let assignmentTTL: Int64 = 7 * 86_400
    let timestampTTL: Int64 = 86_400
    let pollSeconds: Int

    init(store: any FleetStore, keys: OnlineKeys, config: FleetConfig, artifactBaseURL: String?, metrics: ControllerMetrics,
         logger: Logger, pollSeconds: Int) {
        self.store = store; self.keys = keys; self.config = config; self.artifactBaseURL = artifactBaseURL
        self.metrics = metrics; self.logger = logger; self.pollSeconds = pollSeconds
    }

    struct Plan {
        var release: ReleaseRecord
        var selection: Selection
        var variant: CatalogVariant?
        var hardwareClass: HardwareClass?
    }

    /// The selection for one device and one active rollout; pure apart from the store reads.
    func plan(facts: DeviceFacts, installed: [String: String], rollout: RolloutRecord) async throws -> Plan? {
        guard let release = try await store.release(rollout.releaseId) else { return nil }
        let model = try await store.model(rollout.model)
        var quality: [String: Double] = [:]
        for v in try await store.variants(model: rollout.model) { quality[v.variant.name] = v.quality }
        let candidates = release.catalog.variants.map { Candidate(variant: $0, quality: quality[$0.name]) }
        // The classes signed into the catalog are the ones the device will check against.
        let hw = HardwareClassifier.classify(facts, classes: release.catalog.hardwareClasses)
        let tier = TierClassifier.classify(facts, tiers: config.bandwidthTiers)
        let selection = VariantSelector.select(facts: facts, hardwareClass: hw, tier: tier, candidates: candidates,
                                               installedSha256: installed[rollout.model],
                                               policy: SelectionPolicy(minQuality: model?.minQuality))
        let chosen = selection.chosen.flatMap { name in release.catalog.variants.first { $0.name == name } }
        return Plan(release: release, selection: selection, variant: chosen, hardwareClass: hw)
    }

    func checkIn(deviceId: String, request: CheckInRequest, now: Int64) async throws -> CheckInResponse {
        var facts = request.facts
        facts.deviceId = deviceId
        let hw = HardwareClassifier.classify(facts, classes: config.hardwareClasses)
        let tier = TierClassifier.classify(facts, tiers: config.bandwidthTiers)
        let existing = try await store.device(deviceId)

        var updates: [ModelUpdate] = []
        var held: [String: String] = [:]
        for rollout in try await store.activeRollouts() {
            guard let plan = try await plan(facts: facts, installed: request.installed, rollout: rollout) else { continue }
            guard let variant = plan.variant, let hwClass = plan.hardwareClass else {
                let why = plan.selection.overBudget ? "over-budget" : "no-variant-fits"
                held[rollout.model] = why
                continue
            }
            let envelope = try await assignment(deviceId: deviceId, hardwareClass: hwClass.name, release: plan.release,
                                                variant: variant, now: now)
            updates.append(ModelUpdate(model: rollout.model, catalog: plan.release.catalogEnvelope, assignment: envelope))
        }

        let record = DeviceRecord(
            id: deviceId, facts: facts, hardwareClass: hw?.name, tier: tier?.name, installed: request.installed,
            phase: request.phase, status: existing?.status ?? "idle", statusDetail: existing?.statusDetail, held: held,
            firstSeen: existing?.firstSeen ?? now, lastSeen: now, agentVersion: request.agentVersion)
        try await store.upsertDevice(record)
        metrics.checkIns.increment()
        if existing == nil {
            logger.info("device registered", metadata: ["device": "\(deviceId)", "class": "\(hw?.name ?? "none")", "tier": "\(tier?.name ?? "none")"])
        }
        return CheckInResponse(deviceId: deviceId, hardwareClass: hw?.name, tier: tier?.name, rootChain: keys.rootChain,
                               timestamp: try await timestamp(now: now), updates: updates, held: held, pollSeconds: pollSeconds)
    }

    /// The stored assignment when it still says the same thing and is not near expiry; otherwise a
    /// new one with the next counter.
    private func assignment(deviceId: String, hardwareClass: String, release: ReleaseRecord, variant: CatalogVariant,
                            now: Int64) async throws -> Envelope {
        for _ in 0..<3 {
            let previous = try await store.assignment(deviceId: deviceId, model: release.model)
            if let p = previous, p.releaseId == release.id, p.sha256 == variant.sha256, p.expiresAt - now > assignmentTTL / 2 {
                return p.envelope
            }
            let counter = (previous?.counter ?? 0) + 1
            let url = "\(artifactBaseURL ?? "")/v1/artifacts/\(variant.sha256)"
            let a = Assignment(deviceId: deviceId, hardwareClass: hardwareClass, model: release.model, release: release.id,
                               variant: variant.name, sha256: variant.sha256, size: variant.size,
                               package: PackageRef(kind: "full", sha256: variant.sha256, size: variant.size, url: url),
                               counter: counter, expiresAt: now + assignmentTTL, catalogSha256: release.catalogSha256)
            let env = try Envelope.sign(a, type: PayloadType.assignment, keys: [keys.director])
            let record = AssignmentRecord(deviceId: deviceId, model: release.model, counter: counter, releaseId: release.id,
                                          variant: variant.name, sha256: variant.sha256, envelope: env, expiresAt: a.expiresAt)
            if try await store.replaceAssignment(record, expectedCounter: previous?.counter) {
                metrics.assignmentsSigned.increment()
                return env
            }
        }
        throw StorageError(.conflict, "assignment of \(deviceId) kept changing underneath")
    }

    private struct StoredTimestamp: Codable {
        var version: UInt64
        var expiresAt: Int64
        var catalogs: [String: String]
        var envelope: Envelope
    }

    /// The current timestamp: re-signed when the set of live catalogs changes or half its life is gone.
    func timestamp(now: Int64) async throws -> Envelope? {
        var catalogs: [String: String] = [:]
        for rollout in try await store.activeRollouts() {
            if let r = try await store.release(rollout.releaseId) { catalogs[r.model] = r.catalogSha256 }
        }
        let stored = try await store.meta("timestamp").flatMap { try? JSONDecoder().decode(StoredTimestamp.self, from: Data($0.utf8)) }
        if let s = stored, s.catalogs == catalogs, s.expiresAt - now > timestampTTL / 2 {
            return s.envelope
        }
        let meta = TimestampMetadata(version: (stored?.version ?? 0) + 1, expiresAt: now + timestampTTL, catalogs: catalogs)
        let env = try Envelope.sign(meta, type: PayloadType.timestamp, keys: [keys.timestamp])
        let next = StoredTimestamp(version: meta.version, expiresAt: meta.expiresAt, catalogs: catalogs, envelope: env)
        try await store.setMeta("timestamp", String(decoding: try FleetJSON.encode(next), as: UTF8.self))
        return env
    }

    func explain(deviceId: String) async throws -> [Explanation] {
        guard let device = try await store.device(deviceId) else {
            throw APIError(.notFound, "unknown-device", "no device \(deviceId)")
        }
        var out: [Explanation] = []
        for rollout in try await store.activeRollouts() {
            guard let plan = try await plan(facts: device.facts, installed: device.installed, rollout: rollout) else { continue }
            out.append(Explanation(deviceId: deviceId, model: rollout.model, release: plan.release.id, selection: plan.selection))
        }
        return out
    }
}
