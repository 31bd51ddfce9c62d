import FleetCore
import Foundation
import Logging

/// Decides, per device, which variant of each model under an active rollout it should run, and
/// signs that decision (the online director role) together with a fresh timestamp. Holds nothing
/// that changes: check-ins run side by side (as they do on several replicas; what they write is
/// conditional in the store), not one at a time.
final class Director: Sendable {
    let store: any FleetStore
    let keys: OnlineKeys
    let config: FleetConfig
    let artifactBaseURL: String?
    let metrics: ControllerMetrics
    let logger: Logger
    let assignmentTTL: Int64 = 7 * 86_400
    let timestampTTL: Int64 = 86_400
    let pollSeconds: Int
    let planner: DeltaPlanner
    let driver: RolloutDriver
    let performance: PerformanceBook
    /// Devices of a class that must have measured a variant before its figures rank it.
    let minMeasuredDevices: Int
    /// Artifacts taken out of service; a device whose update needs one is held, not sent a 410.
    let quarantine: ArtifactQuarantine?

    init(
        store: any FleetStore, keys: OnlineKeys, config: FleetConfig, artifactBaseURL: String?, metrics: ControllerMetrics,
        logger: Logger, pollSeconds: Int, planner: DeltaPlanner, driver: RolloutDriver, performance: PerformanceBook,
        minMeasuredDevices: Int = 3, quarantine: ArtifactQuarantine? = nil
    ) {
        self.store = store; self.keys = keys; self.config = config; self.artifactBaseURL = artifactBaseURL
        self.metrics = metrics; self.logger = logger; self.pollSeconds = pollSeconds; self.planner = planner; self.driver = driver
        self.performance = performance; self.minMeasuredDevices = minMeasuredDevices; self.quarantine = quarantine
    }

    /// Which release of a rollout a device gets; nil: none now (it keeps what it runs).
    /// - Inside its cell's current cohort, while the cell goes forward or is paused: the new release.
    /// - Outside the cohort: nothing changes for a device that runs the model; one that does not
    ///   gets the previous release.
    /// - After an abort, or in a cell a gate rolled back: each device the rollout reached gets what
    ///   it ran before (recorded when it was first sent the new release); the others keep theirs.
    /// - In a wave that has not started: as outside the cohort.
    func releaseFor(_ device: DeviceRecord, rollout: RolloutRecord, wave: Int = 0, now: Int64, persist: Bool = true) async throws -> String?
    {
        let installed = device.installed[rollout.model]
        func rollbackTarget() async throws -> String? {
            guard let reached = try await store.rolloutDevice(rollout: rollout.id, deviceId: device.id) else {
                guard let installed else { return rollout.previousReleaseId }
                // Reached before the controller kept these records: it runs the new release.
                let new = try await store.release(rollout.releaseId)?.catalog.variants.contains { $0.sha256 == installed } ?? false
                return new ? rollout.previousReleaseId : nil
            }
            return reached.priorRelease ?? rollout.previousReleaseId
        }
        if rollout.state == .aborted { return try await rollbackTarget() }
        guard let policy = rollout.policy else { return rollout.releaseId }
        if rollout.state == .active, wave > rollout.wave { return installed == nil ? rollout.previousReleaseId : nil }
        let cell = try await driver.cell(for: device, rollout: rollout, wave: wave, policy: policy, now: now, persist: persist)
        if cell.state.status == .rolledBack || cell.state.status == .aborted { return try await rollbackTarget() }
        if Self.sendsNewRelease(cell, rollout: rollout, device: device) { return rollout.releaseId }
        return installed == nil ? rollout.previousReleaseId : nil
    }

    /// Whether the rollout, read past the cache, still sends its release to this device.
    private func stillSendsNewRelease(_ device: DeviceRecord, rollout: RolloutRecord, wave: Int) async throws -> Bool {
        guard let current = try await store.rollout(rollout.id) else { return false }
        switch current.state {
        case .completed: return true
        case .active: break
        case .aborted, .superseded: return false
        }
        guard current.policy != nil else { return true }
        guard wave <= current.wave else { return false }
        let key = Targeting.cell(hardwareClass: device.hardwareClass, tier: device.tier, rollout: current, wave: wave)
        guard let cell = try await store.freshCell(rollout: rollout.id, key) else { return false }
        return Self.sendsNewRelease(cell, rollout: rollout, device: device)
    }

    /// The cell sends the new release now, and the device is in its cohort.
    private static func sendsNewRelease(_ cell: StoredCell, rollout: RolloutRecord, device: DeviceRecord) -> Bool {
        cell.state.sendsNewRelease && Cohort.position(rollout: "\(rollout.id)", device: device.id) < cell.cutoff
    }

    /// Before a device is first sent a rollout's release: what it runs now, as its rollback target,
    /// to be recorded with the assignment that sends it (one transaction). nil when recorded
    /// already: only the first time counts; later check-ins until the install finishes change nothing.
    private func reach(_ device: DeviceRecord, rollout: RolloutRecord, now: Int64) async throws -> RolloutReach? {
        if try await store.rolloutDevice(rollout: rollout.id, deviceId: device.id) != nil { return nil }
        guard let installed = device.installed[rollout.model] else {
            return RolloutReach(rollout: rollout.id, priorRelease: nil, priorSha256: nil, at: now)
        }
        var prior = try await store.committedRelease(deviceId: device.id, model: rollout.model, sha256: installed)
        if prior == nil, let a = try await store.assignment(deviceId: device.id, model: rollout.model), a.sha256 == installed {
            prior = a.releaseId
        }
        return RolloutReach(rollout: rollout.id, priorRelease: prior, priorSha256: installed, at: now)
    }

    struct Plan {
        var release: ReleaseRecord
        var selection: Selection
        var variant: CatalogVariant?
        var hardwareClass: HardwareClass?
        var package: PackageRef?
        /// A delta for the chosen pair is being built: the device waits for it.
        var deltaBuilding: Bool
    }

    /// The selection for one device and one release of a rollout; pure apart from the store reads.
    /// `requestDeltas: false` only reads (explain): no delta build is queued.
    func plan(
        facts: DeviceFacts, installed: [String: String], rollout: RolloutRecord, releaseId: String? = nil,
        fullOnly: Bool = false, requestDeltas: Bool = true, tier classified: BandwidthTier?? = nil
    ) async throws -> Plan? {
        // Agent binaries always travel whole.
        let fullOnly = fullOnly || rollout.model == ReleaseKind.agentModel
        guard let release = try await store.release(releaseId ?? rollout.releaseId) else { return nil }
        let model = try await store.model(rollout.model)
        var quality: [String: Double] = [:]
        for v in try await store.variants(model: rollout.model) { quality[v.variant.name] = v.quality }
        let base = installed[rollout.model]
        var deltas: [String: DeltaRecord] = [:]
        var candidates: [Candidate] = []
        // The classes signed into the catalog are the ones the device will check against.
        let hw = HardwareClassifier.classify(facts, classes: release.catalog.hardwareClasses)
        var measured: [String: VariantMeasurement] = [:]
        if let hw { measured = try await performance.measurements(model: rollout.model, hardwareClass: hw.name) }
        for v in release.catalog.variants {
            var c = Candidate(variant: v, quality: quality[v.name], measured: measured[v.sha256])
            if let base, !fullOnly, let d = try await store.delta(base: base, target: v.sha256), d.status == .ready {
                deltas[v.sha256] = d
                c.transferSize = d.packageSize
            }
            candidates.append(c)
        }
        // A check-in passes the tier it classified already.
        let tier = classified ?? TierClassifier.classify(facts, tiers: config.bandwidthTiers)
        var selection = VariantSelector.select(
            facts: facts, hardwareClass: hw, tier: tier, candidates: candidates,
            installedSha256: installed[rollout.model],
            policy: SelectionPolicy(minQuality: model?.minQuality, minMeasuredDevices: minMeasuredDevices))
        if let deviceId = facts.deviceId {
            selection = try await trialSelection(selection, deviceId: deviceId, model: rollout.model, release: release)
        }
        let chosen = selection.chosen.flatMap { name in release.catalog.variants.first { $0.name == name } }
        var package: PackageRef? = nil
        var building = false
        if let chosen, let base, base != chosen.sha256 {
            if let d = deltas[chosen.sha256], let sha = d.packageSha256, let size = d.packageSize {
                package = PackageRef(kind: PackageRef.delta, sha256: sha, size: size, url: artifactURL(sha), baseSha256: base)
            } else if !fullOnly, requestDeltas, planner.enabled {
                try await planner.request(base: base, target: chosen.sha256)
                // A device whose tier has a byte budget waits for the delta; others take the full
                // artifact now rather than wait for a build.
                if tier?.budgetBytes != nil {
                    building = try await store.delta(base: base, target: chosen.sha256)?.status == .building
                }
            }
        }
        return Plan(release: release, selection: selection, variant: chosen, hardwareClass: hw, package: package, deltaBuilding: building)
    }

    /// A device in a running trial of this release is sent, in turn, each trial variant it has not
    /// measured yet and that fits it; once it measured them all, selection goes back to normal.
    func trialSelection(_ s: Selection, deviceId: String, model: String, release: ReleaseRecord) async throws -> Selection {
        guard
            let trial = try await store.trials(model: model).last(where: {
                $0.state == .running && $0.release == release.id && $0.devices.contains(deviceId)
            })
        else { return s }
        let measured = try await store.measuredArtifacts(model: model, deviceId: deviceId)
        let shas = Dictionary(release.catalog.variants.map { ($0.name, $0.sha256) }, uniquingKeysWith: { a, _ in a })
        guard
            let next = trial.variants.first(where: { name in
                guard let sha = shas[name], !measured.contains(sha) else { return false }
                return s.verdicts.contains { $0.variant == name && $0.eligible }
            })
        else { return s }
        var out = s
        for i in out.verdicts.indices {
            if out.verdicts[i].variant == next {
                out.verdicts[i].chosen = true
                out.verdicts[i].reason =
                    "chosen for trial \(trial.id) (measuring \(trial.variants.joined(separator: ", ")) on this device): "
                    + out.verdicts[i].reason
            } else if out.verdicts[i].chosen {
                out.verdicts[i].chosen = false
                out.verdicts[i].reason = "selection's choice, after trial \(trial.id): " + out.verdicts[i].reason
            }
        }
        out.chosen = next
        return out
    }

    func artifactURL(_ sha256: String) -> String { "\(artifactBaseURL ?? "")/v1/artifacts/\(sha256)" }

    /// When a release is created: queue the delta each device will want, from what it runs now.
    func planDeltas(release: ReleaseRecord) async throws {
        guard planner.enabled else { return }
        let probe = RolloutRecord(id: 0, releaseId: release.id, model: release.model, strategy: "all", state: .active, createdAt: 0)
        var seen = Set<String>()
        for device in try await store.devices(running: release.model) {
            // One device per (class, tier, what it runs) plans for its kind: a device whose own
            // selection differs has its pair planned when its check-in meets it first.
            guard let base = device.installed[release.model],
                seen.insert("\(device.hardwareClass ?? "")/\(device.tier ?? "")/\(base)").inserted
            else { continue }
            _ = try await plan(facts: device.facts, installed: device.installed, rollout: probe, releaseId: release.id)
        }
    }

    /// At rollout start: the delta each device will want, from what it runs now.
    func planDeltas(for rollout: RolloutRecord) async throws -> Int {
        guard planner.enabled else { return 0 }
        var pairs = Set<String>(), seen = Set<String>()
        let inForce = Targeting.byModel(try await store.activeRollouts())[rollout.model] ?? [rollout]
        for device in try await store.devices(running: rollout.model) {
            // A device that runs nothing of the model gets the whole artifact; one device per
            // (class, tier, what it runs) plans for its kind (the others meet theirs at check-in).
            guard let installed = device.installed[rollout.model],
                seen.insert("\(device.hardwareClass ?? "")/\(device.tier ?? "")/\(installed)").inserted
            else { continue }
            guard let choice = Targeting.choice(for: device, among: inForce), choice.rollout.id == rollout.id,
                let releaseId = try await releaseFor(device, rollout: rollout, wave: choice.wave, now: driver.clock()),
                releaseId == rollout.releaseId,
                let plan = try await plan(facts: device.facts, installed: device.installed, rollout: rollout, releaseId: releaseId),
                let target = plan.variant?.sha256, let base = device.installed[rollout.model], base != target
            else { continue }
            pairs.insert(base + target)
        }
        return pairs.count
    }

    /// One check-in. A frugal one (the agent sends `timestampVersion`) is answered with what changed
    /// since what the agent says it holds, and a per-device timestamp whose snapshot binds every
    /// model the answer covers, sent or left out; see README, "Check-in protocol".
    /// `row`: the device's row as the access guard read it (`.some(nil)`: none); nil: read here.
    func checkIn(deviceId: String, request original: CheckInRequest, now: Int64, row: DeviceRecord?? = nil) async throws
        -> CheckInResponse
    {
        let existing: DeviceRecord?
        if let row { existing = row } else { existing = try await store.device(deviceId) }
        var request = original
        if request.isFrugal, let reason = restore(&request, deviceId: deviceId, existing: existing) {
            logger.debug("frugal check-in sent again whole", metadata: ["device": "\(deviceId)", "reason": "\(reason.rawValue)"])
            return CheckInResponse(
                deviceId: deviceId, hardwareClass: nil, tier: nil, rootChain: [], timestamp: nil, updates: [],
                held: [:], pollSeconds: pollSeconds, resend: reason, compact: true)
        }
        guard var facts = request.facts else {
            throw APIError(.badRequest, "missing-facts", "a check-in without facts must send timestampVersion and factsDigest")
        }
        facts.deviceId = deviceId
        if original.facts != nil {
            // What the running agent is and can do comes with the facts and is kept inside them.
            facts.agentSha256 = original.agentSha256
            facts.capabilities = original.capabilities
        }
        // Checked when they arrive; facts restored from the store were checked then.
        if let labels = original.facts?.labels { try LabelRequests.validate(labels) }
        let hw = HardwareClassifier.classify(facts, classes: config.hardwareClasses)
        let tier = TierClassifier.classify(facts, tiers: config.bandwidthTiers)

        var updates: [ModelUpdate] = []
        var held: [String: String] = [:]
        var reassigned: [String: Envelope] = [:]
        var unchanged: [String] = []
        var snapshot = CheckInSnapshot(deviceId: deviceId, models: [:])
        var newAssignment = false
        // Releases that failed here for good: not sent again until an operator retries them. Read
        // only when a release is about to be sent (a held or idle device needs none).
        var failed: Set<String>? = nil
        let record = DeviceRecord(
            id: deviceId, facts: facts, hardwareClass: hw?.name, tier: tier?.name, installed: request.installed,
            phase: request.phase, status: existing?.status ?? .idle, statusDetail: existing?.statusDetail, held: [:],
            firstSeen: existing?.firstSeen ?? now, lastSeen: now, agentVersion: request.agentVersion ?? existing?.agentVersion,
            enrolledLabels: existing?.enrolledLabels ?? [:], operatorLabels: existing?.operatorLabels ?? [:],
            // The stored digest still names these facts when they are the stored ones.
            factsDigest: existing.flatMap { $0.facts == facts ? $0.factsDigest : nil })
        // Per model, the newest rollout in force that picks this device; none: it keeps what it runs.
        // Read once for the whole check-in (the timestamp below covers the same rollouts).
        let inForce = try await store.activeRollouts()
        for (_, rollouts) in Targeting.byModel(inForce).sorted(by: { $0.key < $1.key }) {
            guard let choice = Targeting.choice(for: record, among: rollouts) else { continue }
            let rollout = choice.rollout
            let fullOnly = request.fullPackages?.contains(rollout.model) ?? false
            guard let releaseId = try await releaseFor(record, rollout: rollout, wave: choice.wave, now: now) else {
                held[rollout.model] =
                    (rollout.state == .active && choice.wave > rollout.wave ? HeldReason.waitingForWave : .waitingForPhase).rawValue
                continue
            }
            if failed == nil {
                failed = Set(try await store.failures(deviceId: deviceId).map { "\($0.model)\u{0}\($0.release)" })
            }
            if failed?.contains("\(rollout.model)\u{0}\(releaseId)") == true {
                held[rollout.model] = HeldReason.failed.rawValue
                continue
            }
            // An agent binary goes whole (no deltas of executables) and only to an agent that
            // says it installs agent releases: any other would take it for a model.
            let agentRelease = rollout.model == ReleaseKind.agentModel
            if agentRelease, !facts.supportsSelfUpdate {
                held[rollout.model] = HeldReason.noVariantFits.rawValue
                continue
            }
            guard
                let plan = try await plan(
                    facts: facts, installed: request.installed, rollout: rollout, releaseId: releaseId,
                    fullOnly: fullOnly, tier: .some(tier))
            else { continue }
            guard plan.release.catalog.releaseKind.allows(model: rollout.model) else { continue }
            guard let variant = plan.variant, let hwClass = plan.hardwareClass else {
                held[rollout.model] = (plan.selection.overBudget ? HeldReason.overBudget : .noVariantFits).rawValue
                continue
            }
            if plan.deltaBuilding {
                held[rollout.model] = HeldReason.deltaBuilding.rawValue
                continue
            }
            if let quarantine, try await quarantine.record(plan.package?.sha256 ?? variant.sha256) != nil {
                held[rollout.model] = HeldReason.artifactQuarantined.rawValue
                continue
            }
            var reaching: RolloutReach? = nil
            if releaseId == rollout.releaseId, request.installed[rollout.model] != variant.sha256 {
                // About to send the new release: decided on the rollout and cell as stored now, not
                // on this replica's cached copy (another replica may have paused it a moment ago).
                guard try await stillSendsNewRelease(record, rollout: rollout, wave: choice.wave) else {
                    held[rollout.model] = HeldReason.waitingForPhase.rawValue
                    continue
                }
                reaching = try await reach(record, rollout: rollout, now: now)
            }
            let window = Targeting.window(
                rollout: rollout, wave: choice.wave, selectable: record.selectable, fleet: config.maintenanceWindows)
            let activation = Targeting.activation(window, timezoneLabel: record.timezoneLabel, configured: facts.timezone, now: now)
            let (envelope, counter) = try await assignment(
                deviceId: deviceId, hardwareClass: hwClass.name, release: plan.release,
                variant: variant, package: plan.package,
                installed: request.installed[rollout.model], activation: activation, reaching: reaching, now: now)
            // Only what changed since what the agent holds; the snapshot covers the model either way.
            let holds = request.isFrugal ? request.holds?[rollout.model] : nil
            let sameCatalog = holds?.catalog == plan.release.catalogSha256
            if sameCatalog && holds?.counter == counter {
                unchanged.append(rollout.model)
            } else if sameCatalog {
                reassigned[rollout.model] = envelope
                newAssignment = true
            } else {
                updates.append(ModelUpdate(model: rollout.model, catalog: plan.release.catalogEnvelope, assignment: envelope))
                newAssignment = true
            }
            snapshot.models[rollout.model] = .init(catalog: plan.release.catalogSha256, assignment: envelope.payloadDigest)
        }

        var stored = record
        stored.held = held
        var seenAgain = existing
        seenAgain?.lastSeen = now
        var heldAgain = stored
        heldAgain.held = existing?.held ?? [:]
        if let existing, seenAgain == stored {
            // Nothing but the time seen changed (an idle device's check-in): that alone is
            // written in batches, not one write per check-in.
            if existing.lastSeen < now { try await store.touchDevice(deviceId, lastSeen: now) }
        } else if existing != nil, seenAgain == heldAgain {
            // Only why models are held back changed (a phase that does not reach the device yet,
            // a window it waits for): as idle, written in batches.
            try await store.touchDevice(deviceId, lastSeen: now, held: held)
        } else {
            try await store.upsertDevice(stored)
        }
        metrics.checkIns.increment()
        if existing == nil {
            logger.info(
                "device registered",
                metadata: ["device": "\(deviceId)", "class": "\(hw?.name ?? "none")", "tier": "\(tier?.name ?? "none")"])
        }
        guard let trustedTimestamp = request.timestampVersion else {
            return CheckInResponse(
                deviceId: deviceId, hardwareClass: hw?.name, tier: tier?.name, rootChain: keys.rootChain,
                timestamp: try await timestamp(now: now, inForce: inForce), updates: updates, held: held, pollSeconds: pollSeconds,
                retry: tier?.retry ?? .default)
        }
        let stamp =
            snapshot.models.isEmpty
            ? nil
            : try deviceTimestamp(snapshot, trustedVersion: trustedTimestamp, now: now)
        return CheckInResponse(
            deviceId: deviceId, hardwareClass: hw?.name, tier: tier?.name,
            rootChain: rootChain(after: request.rootVersion), timestamp: nil, updates: updates, held: held,
            pollSeconds: pollSeconds, retry: newAssignment ? (tier?.retry ?? RetryPolicy.default) : nil,
            reassigned: reassigned, unchanged: unchanged.sorted(), stamp: stamp, compact: true)
    }

    /// Fills in what a frugal check-in left out, from what this controller stored: the facts (when
    /// the digest is theirs) and the installed models (what the last check-in said). nil when it
    /// could; otherwise why the agent must send the check-in again with facts and installed.
    private func restore(_ request: inout CheckInRequest, deviceId: String, existing: DeviceRecord?) -> ResendReason? {
        if request.facts == nil {
            guard let existing else { return .unknownFacts }
            var facts = existing.facts
            facts.deviceId = deviceId
            let digest = facts == existing.facts ? existing.probedFactsDigest : facts.probed.digest
            guard request.factsDigest == digest else { return .factsMismatch }
            request.facts = facts
        }
        if !request.installedSent {
            guard let existing else { return .unknownInstalled }
            request.installed = existing.installed
            request.installedSent = true
        }
        return nil
    }

    /// The root versions after `version`; all of them for an agent that does not say.
    func rootChain(after version: Int?) -> [Envelope] {
        guard let version else { return keys.rootChain }
        return keys.rootChain.filter { env in
            let root = env.payloadBytes.flatMap { try? FleetJSON.decode(RootMetadata.self, from: Data($0), limit: MetadataLimits.root) }
            return (root?.version ?? Int.max) > version
        }
    }

    /// A per-device timestamp: binds `snapshot`, expires like the fleet-wide one. Its version is the
    /// signing time, and at least one above what the device trusts, so it moves forward for this
    /// device even if replicas' clocks differ; a device that overstates its version only delays
    /// itself. Signed at each check-in (one Ed25519 signature, as Uptane's per-vehicle director
    /// metadata), so nothing per device is stored for it.
    func deviceTimestamp(_ snapshot: CheckInSnapshot, trustedVersion: UInt64, now: Int64) throws -> CompactEnvelope {
        let next = trustedVersion == .max ? trustedVersion : trustedVersion + 1
        let meta = TimestampMetadata(
            version: max(UInt64(max(now, 0)), next), expiresAt: now + timestampTTL, catalogs: [:],
            snapshot: snapshot.digest)
        return try CompactEnvelope.sign(meta, type: PayloadType.timestamp, keys: [keys.timestamp])
    }

    /// The stored assignment when it still says the same thing and is not near expiry; otherwise a
    /// new one with the next counter. `reaching`: the rollout's first send to the device, recorded
    /// in the new assignment's transaction (or alone when the stored one is sent again).
    private func assignment(
        deviceId: String, hardwareClass: String, release: ReleaseRecord, variant: CatalogVariant,
        package delta: PackageRef?, installed: String?, activation: [ActivationWindow]?, reaching: RolloutReach? = nil,
        now: Int64
    ) async throws -> (Envelope, UInt64) {
        let package =
            delta ?? PackageRef(kind: PackageRef.full, sha256: variant.sha256, size: variant.size, url: artifactURL(variant.sha256))
        for _ in 0..<3 {
            let previous = try await store.assignment(deviceId: deviceId, model: release.model)
            // Once the device runs the target, how it got there no longer matters.
            if let p = previous, p.releaseId == release.id, p.sha256 == variant.sha256,
                p.packageSha256 == package.sha256 || installed == variant.sha256, p.expiresAt - now > assignmentTTL / 2,
                p.activation == activation || installed == variant.sha256
            {
                if let r = reaching {
                    try await store.recordRolloutDevice(
                        rollout: r.rollout, deviceId: deviceId, priorRelease: r.priorRelease, priorSha256: r.priorSha256, at: r.at)
                }
                return (p.envelope, p.counter)
            }
            let counter = (previous?.counter ?? 0) + 1
            var a = Assignment(
                deviceId: deviceId, hardwareClass: hardwareClass, model: release.model, release: release.id,
                variant: variant.name, sha256: variant.sha256, size: variant.size, package: package,
                counter: counter, expiresAt: now + assignmentTTL, catalogSha256: release.catalogSha256)
            a.activation = activation
            a.kind = release.catalog.kind
            let env = try Envelope.sign(a, type: PayloadType.assignment, keys: [keys.director])
            let record = AssignmentRecord(
                deviceId: deviceId, model: release.model, counter: counter, releaseId: release.id,
                variant: variant.name, sha256: variant.sha256, packageSha256: package.sha256,
                envelope: env, expiresAt: a.expiresAt, activation: activation)
            if try await store.replaceAssignment(record, expectedCounter: previous?.counter, reaching: reaching) {
                metrics.assignmentsSigned.increment()
                return (env, counter)
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
    /// `inForce`: the rollouts in force, when the caller read them already.
    func timestamp(now: Int64, inForce: [RolloutRecord]? = nil) async throws -> Envelope? {
        // Every release in force: a staged rollout keeps its control cohort on the previous one.
        var catalogs: [String: String] = [:]
        let rollouts: [RolloutRecord]
        if let inForce { rollouts = inForce } else { rollouts = try await store.activeRollouts() }
        for rollout in rollouts {
            // Rollback targets too: a device goes back to what it ran, which may predate the previous release.
            let prior = try await store.priorReleases(rollout: rollout.id)
            for id in [rollout.releaseId, rollout.previousReleaseId].compactMap({ $0 }) + prior.sorted() {
                if let r = try await store.release(id) { catalogs[r.id] = r.catalogSha256 }
            }
        }
        let stored = try await store.meta("timestamp").flatMap { try? JSONDecoder().decode(StoredTimestamp.self, from: Data($0.utf8)) }
        if let s = stored, s.catalogs == catalogs, s.expiresAt - now > timestampTTL / 2 {
            return s.envelope
        }
        // Versions count seconds, on the same scale as per-device timestamps, so that a device that
        // meets both forms (an agent downgraded, an old answer replayed) compares them meaningfully.
        let meta = TimestampMetadata(
            version: max((stored?.version ?? 0) + 1, UInt64(max(now, 0))), expiresAt: now + timestampTTL,
            catalogs: catalogs)
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
        for (_, rollouts) in Targeting.byModel(try await store.activeRollouts()).sorted(by: { $0.key < $1.key }) {
            guard let choice = Targeting.choice(for: device, among: rollouts) else { continue }
            let rollout = choice.rollout
            // Explaining changes nothing: no cell is opened, no delta is queued.
            guard let releaseId = try await releaseFor(device, rollout: rollout, wave: choice.wave, now: driver.clock(), persist: false),
                let plan = try await plan(
                    facts: device.facts, installed: device.installed, rollout: rollout, releaseId: releaseId,
                    requestDeltas: false)
            else { continue }
            out.append(Explanation(deviceId: deviceId, model: rollout.model, release: plan.release.id, selection: plan.selection))
        }
        return out
    }
}
