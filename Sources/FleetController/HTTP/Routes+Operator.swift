import FleetCore
import Foundation
import HTTPTypes
import Hummingbird

/// Routes fleetctl calls: models, variants, releases, rollouts, devices, status.
struct OperatorRoutes: Sendable {
    let director: Director
    let store: any FleetStore
    let artifacts: ArtifactStore
    let config: FleetConfig
    let keys: OnlineKeys
    let policies: PolicyBook
    let driver: RolloutDriver
    let clock: @Sendable () -> Int64

    static let bodyLimit = 64 * 1024

    func register(_ routes: Audiences) {
        routes.viewers.get("/v1/config/hardware-classes") { _, _ in try JSON.response(config.hardwareClasses) }
        routes.viewers.get("/v1/config/bandwidth-tiers") { _, _ in try JSON.response(config.bandwidthTiers) }

        routes.operators.post("/v1/models") { request, _ in
            let body = try await JSON.decode(NewModel.self, request, limit: Self.bodyLimit)
            guard Name.isValid(body.name) else { throw APIError(.badRequest, "invalid-name", "'\(body.name)' is not a valid model name") }
            if let q = body.minQuality, !(0...1).contains(q) {
                throw APIError(.badRequest, "invalid-quality", "minQuality must be between 0 and 1")
            }
            try await store.createModel(ModelRecord(name: body.name, minQuality: body.minQuality, createdAt: clock()))
            return try JSON.response(try await modelInfo(body.name), status: .created)
        }
        routes.viewers.get("/v1/models") { _, _ in
            var out: [ModelInfo] = []
            for m in try await store.models() { out.append(try await modelInfo(m.name)) }
            return try JSON.response(out)
        }
        routes.viewers.get("/v1/models/:model") { _, context in
            try JSON.response(try await modelInfo(try context.parameters.require("model")))
        }
        routes.operators.post("/v1/models/:model/variants") { request, context in
            let model = try context.parameters.require("model")
            guard try await store.model(model) != nil else { throw APIError(.notFound, "unknown-model", "no model \(model)") }
            // A quality report lists every tensor: a large model's is larger than other bodies.
            let body = try await JSON.decode(NewVariant.self, request, limit: 8 << 20)
            let v = body.variant
            guard Name.isValid(v.name), Name.isValid(v.fileName) else {
                throw APIError(.badRequest, "invalid-name", "variant and file names must be plain names without '/' or a leading '.'")
            }
            guard let size = artifacts.size(v.sha256) else {
                throw APIError(.unprocessableContent, "unknown-artifact", "artifact \(v.sha256) has not been uploaded")
            }
            guard size == v.size else {
                throw APIError(.unprocessableContent, "size-mismatch", "artifact \(v.sha256) has \(size) bytes, not \(v.size)")
            }
            let record = VariantRecord(model: model, variant: v, quality: body.quality, createdAt: clock())
            try await store.addVariant(record)
            if let report = body.report { try await store.saveVariantReport(model: model, variant: v.name, report) }
            return try JSON.response(
                VariantInfo(model: model, variant: v, quality: body.quality, createdAt: record.createdAt), status: .created)
        }
        routes.viewers.get("/v1/models/:model/variants") { _, context in
            let model = try context.parameters.require("model")
            guard try await store.model(model) != nil else { throw APIError(.notFound, "unknown-model", "no model \(model)") }
            return try JSON.response(
                try await store.variants(model: model).map {
                    VariantInfo(model: $0.model, variant: $0.variant, quality: $0.quality, createdAt: $0.createdAt)
                })
        }

        routes.operators.post("/v1/releases") { request, _ in
            let body = try await JSON.decode(NewRelease.self, request, limit: MetadataLimits.envelope)
            let release = try await acceptRelease(body.catalog)
            try await director.planDeltas(release: release)
            return try JSON.response(releaseInfo(release), status: .created)
        }
        routes.viewers.get("/v1/releases") { _, _ in try JSON.response(try await store.releases().map(releaseInfo)) }
        routes.viewers.get("/v1/releases/:id/packages") { _, context in
            let id = try context.parameters.require("id")
            guard let r = try await store.release(id) else { throw APIError(.notFound, "unknown-release", "no release \(id)") }
            return try JSON.response(try await packages(r))
        }
        routes.viewers.get("/v1/releases/:id") { _, context in
            let id = try context.parameters.require("id")
            guard let r = try await store.release(id) else { throw APIError(.notFound, "unknown-release", "no release \(id)") }
            return try JSON.response(releaseInfo(r))
        }

        routes.operators.post("/v1/rollouts") { request, context in
            let body = try await JSON.decode(NewRollout.self, request, limit: Self.bodyLimit)
            var policy: RolloutPolicy? = nil
            switch body.strategy {
            case "all": break
            case "staged":
                policy = try stagedPolicy(body)
            default:
                throw APIError(.badRequest, "unknown-strategy", "strategy '\(body.strategy)' is not one of all, staged")
            }
            guard let release = try await store.release(body.release) else {
                throw APIError(.notFound, "unknown-release", "no release \(body.release)")
            }
            let selector = try LabelRequests.selector(body.selector)
            var window: MaintenanceWindow? = nil
            if let text = body.window {
                do { window = try MaintenanceWindow(parsing: text) } catch {
                    throw APIError(.badRequest, "invalid-window", "window: \(error)")
                }
                if let problem = window?.validate() { throw APIError(.badRequest, "invalid-window", "window: \(problem)") }
                if let zone = window?.timezone, !WindowCalendar.isKnownZone(zone) {
                    throw APIError(.badRequest, "invalid-window", "window: unknown time zone '\(zone)'")
                }
            }
            let targeting = try await rolloutTargeting(model: release.model, selector: selector, supersede: body.supersede ?? false)
            let previous = targeting.previous.flatMap { $0.state == .aborted ? $0.previousReleaseId : $0.releaseId }
            if previous == release.id, targeting.previous?.selector == selector {
                throw APIError(.conflict, "already-rolled-out", "\(release.id) is already the release in force for these devices")
            }
            let r = try await store.createRollout(
                RolloutRecord(
                    id: 0, releaseId: release.id, model: release.model, strategy: policy?.name ?? "all", state: .active, createdAt: clock(),
                    policy: policy, previousReleaseId: previous, createdBy: actor(request, context), selector: selector, window: window),
                superseding: targeting.superseded.map(\.id))
            var detail = "\(release.id) with \(policy.map { "policy \($0.name)" } ?? "all devices at once")"
            if !selector.isEverything { detail += " on \(selector)" }
            if let window { detail += ", activating in \(window)" }
            if !targeting.takenOver.isEmpty {
                detail +=
                    "; takes over \(targeting.takenOver.map { "\($0.devices) device(s) of rollout \($0.rollout)" }.joined(separator: ", "))"
            }
            try await store.recordAction(
                rollout: r.id,
                RolloutActionRecord(
                    at: clock(), actor: r.createdBy, action: "started", cell: nil,
                    detail: detail))
            _ = try await director.planDeltas(for: r)
            return try JSON.response(try await rolloutInfo(r), status: .created)
        }
        routes.viewers.get("/v1/rollouts/:rid") { _, context in
            try JSON.response(try await rolloutStatus(try await rolloutRecord(context)()))
        }
        for (verb, event) in [("promote", CellEvent.promote(now: 0)), ("pause", .pause), ("resume", .resume(now: 0)), ("abort", .abort)] {
            routes.operators.post("/v1/rollouts/:rid/\(verb)") { request, context in
                let r = try rolloutRecord(context)
                let rollout = try await r()
                let body = try await JSON.decode(RolloutActionRequest.self, request, limit: Self.bodyLimit)
                let cell = try body.cell.map(Self.cellKey)
                let now = clock()
                let e: CellEvent =
                    switch event {
                    case .promote: .promote(now: now)
                    case .resume: .resume(now: now)
                    default: event
                    }
                if verb == "abort", rollout.policy == nil {
                    guard rollout.state != .aborted else {
                        throw APIError(.conflict, "rollout-not-active", "rollout \(rollout.id) is aborted")
                    }
                    try await store.setRolloutState(rollout.id, .aborted)
                    try await store.recordAction(
                        rollout: rollout.id,
                        RolloutActionRecord(at: now, actor: actor(request, context), action: "abort", cell: nil, detail: nil))
                } else {
                    try await driver.apply(e, name: verb, rollout: rollout, cell: cell, actor: actor(request, context), now: now)
                }
                return try JSON.response(try await rolloutStatus(try await r()))
            }
        }
        registerRecovery(routes)
        registerPolicies(routes)
        routes.viewers.get("/v1/rollouts") { _, _ in
            var out: [RolloutInfo] = []
            // Devices holding a model back are counted once per model, not once per rollout (and
            // not for a superseded one, which shows its release's history).
            var holding: [String: Int] = [:]
            for r in try await store.rollouts() {
                if r.state != .superseded, holding[r.model] == nil { holding[r.model] = try await store.devicesHolding(model: r.model) }
                out.append(try await rolloutInfo(r, held: holding[r.model]))
            }
            return try JSON.response(out)
        }

        routes.viewers.get("/v1/devices") { request, _ in
            let selector = try LabelRequests.selector(request.uri.queryParameters["selector"].map(String.init))
            let assignments = try await store.assignments()
            return try JSON.response(
                try await store.devices().filter { selector.matches($0.selectable) }.map { deviceInfo($0, assignments) })
        }
        registerLabels(routes)
        routes.viewers.get("/v1/devices/:id") { _, context in
            let id = try deviceID(context)
            guard let d = try await store.device(id) else { throw APIError(.notFound, "unknown-device", "no device \(id)") }
            return try JSON.response(deviceInfo(d, try await store.assignments()))
        }
        routes.viewers.get("/v1/devices/:id/explain") { _, context in
            try JSON.response(try await director.explain(deviceId: try deviceID(context)))
        }
        routes.viewers.get("/v1/devices/:id/events") { request, context in
            let id = try deviceID(context)
            guard try await store.device(id) != nil else { throw APIError(.notFound, "unknown-device", "no device \(id)") }
            // ?after=SEQ: the events after SEQ, oldest first (to follow a device); else the latest 200, newest first.
            if let after = request.uri.queryParameters.get("after") {
                guard let seq = UInt64(after) else {
                    throw APIError(.badRequest, "invalid-after", "after must be an event sequence number")
                }
                return try JSON.response(try await store.events(deviceId: id, after: seq, limit: 500))
            }
            return try JSON.response(try await store.events(deviceId: id, limit: 200))
        }
        routes.viewers.get("/v1/status") { request, _ in
            let selector = try LabelRequests.selector(request.uri.queryParameters["selector"].map(String.init))
            return try JSON.response(try await status(selector))
        }
    }

    /// A catalog is accepted only when the release key threshold of root signed it, it names
    /// registered variants with their exact hashes and sizes, and its serial moves forward.
    private func acceptRelease(_ envelope: Envelope) async throws -> ReleaseRecord {
        let store = self.store
        let accepted: ReleaseAcceptance.Accepted
        do {
            accepted = try await ReleaseAcceptance.check(envelope, root: keys.root, now: clock()) { model in
                guard try await store.model(model) != nil else { return nil }
                return .init(
                    registered: Dictionary(
                        try await store.variants(model: model).map { ($0.variant.name, $0.variant) }, uniquingKeysWith: { a, _ in a }),
                    lastSerial: try await store.maxSerial(model: model))
            }
        } catch let r as ReleaseAcceptance.Rejection {
            switch r.code {
            case .trust: throw r.trust ?? TrustError(.malformed, r.message)
            case .invalidVersion: throw APIError(.badRequest, r.code.rawValue, r.message)
            case .unknownModel: throw APIError(.notFound, r.code.rawValue, r.message)
            case .emptyRelease, .unknownVariant, .wrongKind: throw APIError(.unprocessableContent, r.code.rawValue, r.message)
            case .staleSerial: throw APIError(.conflict, r.code.rawValue, r.message)
            }
        }
        let catalog = accepted.catalog
        let record = ReleaseRecord(
            id: "\(catalog.model)@\(catalog.version)", model: catalog.model, version: catalog.version,
            serial: catalog.serial, catalogEnvelope: envelope, catalogSha256: accepted.payloadSha256,
            catalog: catalog, createdAt: clock())
        try await store.createRelease(record)
        return record
    }

    /// Per target variant, the delta packages built; and what the release's assignments send.
    private func packages(_ r: ReleaseRecord) async throws -> ReleasePackages {
        var variants: [ReleasePackages.Variant] = []
        for v in r.catalog.variants {
            let deltas = try await store.deltas(target: v.sha256).map {
                ReleasePackages.Delta(
                    baseSha256: $0.baseSha256, status: $0.status, method: $0.method,
                    packageSha256: $0.packageSha256, size: $0.packageSize, detail: $0.detail)
            }
            variants.append(.init(variant: v.name, sha256: v.sha256, size: v.size, deltas: deltas))
        }
        var sent: Int64 = 0, full: Int64 = 0, devices = 0, viaDelta = 0
        for a in try await store.assignments() where a.releaseId == r.id {
            guard let v = r.catalog.variants.first(where: { $0.sha256 == a.sha256 }) else { continue }
            devices += 1
            full += v.size
            if a.packageSha256 != a.sha256, let body = a.envelope.payloadBytes,
                let assignment = try? JSONDecoder().decode(Assignment.self, from: Data(body))
            {
                sent += assignment.package.size
                viaDelta += 1
            } else {
                sent += v.size
            }
        }
        let history = try await store.releaseHistory(release: r.id)
        return ReleasePackages(
            release: r.id, variants: variants, devices: devices, devicesViaDelta: viaDelta, bytesSent: sent, bytesFull: full,
            received: history.received, receivedViaDelta: history.receivedViaDelta)
    }

    private func modelInfo(_ name: String) async throws -> ModelInfo {
        guard let m = try await store.model(name) else { throw APIError(.notFound, "unknown-model", "no model \(name)") }
        return ModelInfo(
            name: m.name, minQuality: m.minQuality, createdAt: m.createdAt,
            nextSerial: try await store.maxSerial(model: name) + 1, variants: try await store.variants(model: name).count)
    }

    private func releaseInfo(_ r: ReleaseRecord) -> ReleaseInfo {
        ReleaseInfo(
            id: r.id, model: r.model, version: r.version, serial: r.serial, catalogSha256: r.catalogSha256,
            createdAt: r.createdAt, variants: r.catalog.variants)
    }

    /// Who asked: the operator token's name, or in open development mode the X-Fleet-Actor header fleetctl sends.
    func actor(_ request: Request, _ context: FleetRequestContext) -> String {
        if case .token(let t)? = context.principal { return t.name }
        let a = request.headers[HTTPField.Name("X-Fleet-Actor")!] ?? "operator"
        return Name.isValid(a) ? a : "operator"
    }

    func rolloutRecord(_ context: FleetRequestContext) throws -> @Sendable () async throws -> RolloutRecord {
        guard let id = Int64(try context.parameters.require("rid")) else {
            throw APIError(.badRequest, "invalid-rollout", "rollout ids are numbers")
        }
        let store = self.store
        return {
            guard let r = try await store.rollout(id) else { throw APIError(.notFound, "unknown-rollout", "no rollout \(id)") }
            return r
        }
    }

    /// Read from the rollout's cells, its members and its release's assignments; never every
    /// device's whole row (a fleet of a million answers in seconds).
    func rolloutStatus(_ r: RolloutRecord) async throws -> RolloutStatus {
        let stored = try await store.cells(rollout: r.id)
        let membership = Targeting.members(of: r, devices: try await store.deviceCells(), inForce: try await store.activeRollouts())
        var cellOf: [String: CellKey] = [:]
        for (key, ds) in membership { for d in ds { cellOf[d.id] = key } }
        var failed: [CellKey: Int] = [:]
        for f in try await store.failures(release: r.releaseId) { if let k = cellOf[f.deviceId] { failed[k, default: 0] += 1 } }
        // Rollback progress is read apart from the frozen record of the stop.
        var afterStop: [CellKey: CellAfterStop] = [:]
        if stored.values.contains(where: { $0.state.status == .rolledBack || $0.state.status == .aborted }) {
            let reached = try await store.rolloutDevices(rollout: r.id)
            let installed = try await store.installed(model: r.model)
            let newShas = Set(try await store.release(r.releaseId)?.catalog.variants.map(\.sha256) ?? [])
            for (device, _) in reached {
                guard let k = cellOf[device], let c = stored[k], c.state.status == .rolledBack || c.state.status == .aborted else {
                    continue
                }
                var a = afterStop[k] ?? CellAfterStop(reached: 0, restored: 0)
                a.reached += 1
                if !newShas.contains(installed[device] ?? "") { a.restored += 1 }
                afterStop[k] = a
            }
        }
        let cells = stored.sorted { $0.key < $1.key }.map { key, c in
            RolloutStatus.Cell(
                cell: key.description, status: c.state.status, phase: c.state.phase + 1,
                phases: r.policy?.forCell(key).phases.count ?? 1, cohortShare: min(c.cutoff, 1), observation: c.observation,
                gates: c.state.gates, failedGate: c.state.failedGate, blockedBy: c.state.blockedBy,
                failedNotRetried: failed[key] ?? 0, afterStop: afterStop[key])
        }
        let actions = try await store.actions(rollout: r.id).map {
            RolloutStatus.Action(at: $0.at, actor: $0.actor, action: $0.action, cell: $0.cell, detail: $0.detail)
        }
        let progress = try await store.releaseProgress(release: r.releaseId, model: r.model)
        let info = try await rolloutInfo(r, progress: progress)
        var waves: [RolloutStatus.Wave]? = nil
        if let policyWaves = r.policy?.waves {
            waves = policyWaves.enumerated().map { i, w in
                let mine = stored.filter { $0.key.wave == w.name }
                let devices = membership.filter { $0.key.wave == w.name }.values.reduce(0) { $0 + $1.count }
                let status: WaveStatus
                if mine.values.contains(where: { [.paused, .rolledBack, .aborted].contains($0.state.status) }) {
                    status = .stopped
                } else if i < r.wave || r.state == .completed {
                    status = .completed
                } else if i > r.wave {
                    status = WaveStatus(notBegunIn: r.state)
                } else {
                    status = !mine.isEmpty && mine.values.allSatisfy { $0.state.status == .completed } ? .completed : .running
                }
                return RolloutStatus.Wave(
                    name: w.name, selector: w.selector.description, status: status, devices: devices, cells: mine.count)
            }
        }
        let now = clock()
        let waiting = progress.notRunningWindows.filter { windows in
            guard let windows else { return false }
            return !MaintenanceWindow.allows(windows, at: now)
        }.count
        return RolloutStatus(
            rollout: info, policy: r.policy, previousRelease: r.previousReleaseId, cells: cells, actions: actions,
            waves: waves, waitingForWindow: waiting)
    }

    struct RolloutTargeting {
        /// The rollout the new one follows (its control release and rollback target): the newest in
        /// force whose selector may share devices with the new one.
        var previous: RolloutRecord?
        /// In-force rollouts the new one covers whole: they end (superseded).
        var superseded: [RolloutRecord]
        /// Active rollouts the new one takes devices from (`supersede`), with how many.
        var takenOver: [(rollout: Int64, devices: Int)]
    }

    /// How a new rollout on `selector` sits among the model's rollouts in force. An active rollout
    /// that shares devices with it refuses it (409 `rollout-overlap`, with the devices in common
    /// counted) unless `supersede`; a completed or aborted one simply gives up the devices in common.
    func rolloutTargeting(model: String, selector: LabelSelector, supersede: Bool) async throws -> RolloutTargeting {
        let inForce = try await store.activeRollouts()
        let sameModel = inForce.filter { $0.model == model }.sorted { $0.id > $1.id }
        let devices = sameModel.isEmpty ? [] : try await store.deviceCells()
        var out = RolloutTargeting(previous: nil, superseded: [], takenOver: [])
        var overlaps: [(RolloutRecord, Int)] = []
        for r in sameModel {
            if out.previous == nil, !r.selector.provablyDisjoint(from: selector) { out.previous = r }
            // A rollout whose every device the new one picks ends: one on the same selector, or any
            // under a selector that picks everything.
            if selector.isEverything || r.selector == selector {
                out.superseded.append(r)
            }
            // Only a staged rollout still under way is protected: one of all devices at once has
            // nothing left to stage.
            guard r.state == .active, r.policy != nil, !r.selector.provablyDisjoint(from: selector) else { continue }
            // One whose every cell a gate rolled back (or an operator aborted) is over already.
            let cells = try await store.cells(rollout: r.id).values
            if !cells.isEmpty, cells.allSatisfy({ $0.state.status == .rolledBack || $0.state.status == .aborted }) { continue }
            let common = Targeting.members(of: r, devices: devices, inForce: inForce).values.reduce(0) { n, ds in
                n + ds.filter { selector.matches($0.selectable) }.count
            }
            if common > 0 || selector.isEverything || r.selector == selector { overlaps.append((r, common)) }
        }
        if !overlaps.isEmpty, !supersede {
            let total = overlaps.reduce(0) { $0 + $1.1 }
            let list = overlaps.map {
                "rollout \($0.0.id) (\($0.0.releaseId)\($0.0.selector.isEverything ? "" : " on \($0.0.selector)")): \($0.1) device(s)"
            }
            throw APIError(
                .conflict, "rollout-overlap",
                "the new rollout shares devices with active rollouts of \(model): \(list.joined(separator: "; ")); "
                    + "narrow the selector or pass --supersede to take them over",
                counts: ["devicesInCommon": total, "rollouts": overlaps.count])
        }
        out.takenOver = overlaps.filter { o in !out.superseded.contains { $0.id == o.0.id } }.map { ($0.0.id, $0.1) }
        return out
    }

    /// Progress of a rollout. A superseded one keeps the counts of what it did, from the release's history.
    /// `progress` and `held` (devices holding the model back): when the caller has read them already.
    func rolloutInfo(_ r: RolloutRecord, progress: ReleaseProgress? = nil, held: Int? = nil) async throws -> RolloutInfo {
        guard r.state == .superseded else {
            let p: ReleaseProgress
            if let progress { p = progress } else { p = try await store.releaseProgress(release: r.releaseId, model: r.model) }
            let holding: Int
            if let held { holding = held } else { holding = try await store.devicesHolding(model: r.model) }
            return RolloutInfo(
                id: r.id, release: r.releaseId, model: r.model, strategy: r.strategy, state: r.state, createdAt: r.createdAt,
                targeted: p.targeted, committed: p.committed, failed: p.failed, held: holding,
                selector: r.selector.description, window: r.window?.description)
        }
        let h = try await store.releaseHistory(release: r.releaseId)
        return RolloutInfo(
            id: r.id, release: r.releaseId, model: r.model, strategy: r.strategy, state: r.state, createdAt: r.createdAt,
            targeted: h.targeted, committed: h.received, failed: h.failed, held: 0,
            selector: r.selector.description, window: r.window?.description)
    }

    func deviceInfo(_ d: DeviceRecord, _ assignments: [AssignmentRecord]) -> DeviceInfo {
        var assigned: [String: String] = [:]
        for a in assignments where a.deviceId == d.id { assigned[a.model] = a.variant }
        return DeviceInfo(
            id: d.id, hardwareClass: d.hardwareClass, tier: d.tier, facts: d.facts, installed: d.installed, phase: d.phase,
            status: d.status, statusDetail: d.statusDetail, assigned: assigned, held: d.held,
            firstSeen: d.firstSeen, lastSeen: d.lastSeen, agentVersion: d.agentVersion,
            labels: d.labels.nilIfEmpty, labelSources: Self.labelSources(d).nilIfEmpty)
    }

    /// Counted without reading any device's row whole: by the database for the whole fleet, over
    /// the replica's copy of the device cells (labels, class, tier) and the statuses otherwise.
    private func status(_ selector: LabelSelector) async throws -> FleetStatus {
        var groups: [DeviceCount] = []
        if selector.isEverything {
            groups = try await store.deviceCounts()
        } else {
            for (d, status) in try await store.deviceCellsWithStatus() where selector.matches(d.selectable) {
                groups.append(DeviceCount(hardwareClass: d.hardwareClass, tier: d.tier, status: status, devices: 1))
            }
        }
        var byClass: [String: Int] = [:], byTier: [String: Int] = [:], byStatus: [String: Int] = [:], total = 0
        for g in groups {
            byClass[g.hardwareClass ?? "none", default: 0] += g.devices
            byTier[g.tier ?? "none", default: 0] += g.devices
            byStatus[g.status.rawValue, default: 0] += g.devices
            total += g.devices
        }
        let stats = artifacts.stats()
        return FleetStatus(
            devices: total, byClass: byClass, byTier: byTier, byStatus: byStatus,
            models: try await store.models().count, releases: try await store.releases().count,
            activeRollouts: try await store.activeRollouts().count, artifacts: stats.count, artifactBytes: stats.bytes)
    }
}
