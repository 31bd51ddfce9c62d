import FleetClient
import FleetCore

/// The check-in exchange, frugal side (README, "Check-in protocol"): the agent says what it holds,
/// the controller sends only what changed, and a per-device timestamp binds both.
extension Agent {
    /// Checks in; when the controller asks for the whole check-in (facts it does not know, an
    /// installed model it cannot tell), sends it once more, whole, in the same cycle.
    func checkIn(facts: DeviceFacts) throws -> CheckInResponse {
        let request = checkInRequest(facts: facts, whole: false)
        let first: CheckInResponse
        do { first = try post(request) } catch let e as HTTPClientError where e.code == .status && e.status == 400 {
            // Refused as malformed: what this agent remembers may be what the controller does not take.
            // The next cycle starts whole, claiming nothing; never the same refusal again and again.
            memory = CheckInMemory(retry: memory.retry)
            saveMemory()
            throw e
        }
        guard let reason = first.resend else { return remember(first, request, facts: facts) }
        logger.info("controller asked for the whole check-in", metadata: ["device": "\(deviceId)", "reason": "\(reason.rawValue)"])
        let whole = checkInRequest(facts: facts, whole: true)
        let second = try post(whole)
        if let again = second.resend {
            // Never a loop: the next cycle starts from a whole check-in again.
            forgetFacts()
            throw AgentError("controller asked again for the whole check-in it was just sent (\(again.rawValue))")
        }
        return remember(second, whole, facts: facts)
    }

    /// The controller stored these facts, as far as this agent knows.
    func factsKnown(_ facts: DeviceFacts) -> Bool {
        memory.factsDigest == facts.digest && memory.agentVersion == agentIdentity
    }

    /// The request: facts only when they changed, installed models only when they changed since the
    /// last check-in, and what is held. `whole`: facts and installed models in any case.
    func checkInRequest(facts: DeviceFacts, whole: Bool) -> CheckInRequest {
        var installed = slots.installed()
        // Once agent releases reach it, the agent counts as installed like a model: the rollout
        // sees what it runs. (Other devices' check-ins stay as they were.)
        let agentModel = ReleaseKind.agentModel
        if let agentSha256, options.selfUpdate,
            memory.held[agentModel] != nil || installer.records.installs[agentModel] != nil || installer.agentBinaries.committed() != nil
        {
            installed[agentModel] = agentSha256
        }
        let sendFacts = whole || !factsKnown(facts)
        var holds: [String: HeldMetadata] = [:]
        for (model, h) in memory.held where Name.isValid(model) {
            guard let body = h.assignment.payloadBytes,
                let a = try? FleetJSON.decode(Assignment.self, from: Data(body), limit: MetadataLimits.assignment)
            else { continue }
            holds[model] = HeldMetadata(catalog: h.catalog.payloadDigest, counter: a.counter)
        }
        let fullOnly = installer.records.deltaFailed.keys.sorted()
        var request = CheckInRequest(
            facts: sendFacts ? facts : nil, installed: installed, agentVersion: sendFacts ? Self.version : nil,
            phase: installer.records.installs.values.first { !$0.phase.isTerminal }?.phase.rawValue,
            fullPackages: fullOnly.isEmpty ? nil : fullOnly, factsDigest: sendFacts ? nil : facts.digest,
            holds: holds.isEmpty ? nil : holds, rootVersion: trust.root.version,
            timestampVersion: trust.timestampVersion)
        request.installedSent = whole || memory.reported != installed
        if sendFacts {
            request.agentSha256 = agentSha256
            request.capabilities = capabilities
        }
        return request
    }

    private func post(_ request: CheckInRequest) throws -> CheckInResponse {
        try installer.http.json(
            "POST", "\(options.controllerURL)/v1/devices/\(deviceId)/checkin", body: request,
            as: CheckInResponse.self, maxResponseBytes: MetadataLimits.checkInResponse)
    }

    /// After an answer: the facts and installed models just sent are the stored ones. A controller
    /// that predates frugal check-ins answers with the fleet-wide timestamp and ignores what it does
    /// not know; its agents keep sending whole check-ins.
    private func remember(_ response: CheckInResponse, _ request: CheckInRequest, facts: DeviceFacts) -> CheckInResponse {
        let before = memory
        if response.timestamp == nil {
            if request.facts != nil {
                memory.factsDigest = facts.digest
                memory.agentVersion = agentIdentity
            }
            memory.reported = request.installed
        } else {
            memory.factsDigest = nil
            memory.reported = nil
        }
        if memory != before { saveMemory() }
        return response
    }

    func forgetFacts() {
        memory.factsDigest = nil
        memory.reported = nil
        saveMemory()
    }

    func saveMemory() {
        do { try state.save("checkin.json", memory) } catch {
            // A cache: the next check-in is a whole one when it cannot be read.
            logger.warning("check-in memory not saved", metadata: ["error": "\(error)"])
        }
    }

    /// Verifies and installs what the answer assigns. Catalogs and assignments it leaves out are the
    /// ones held; with a per-device timestamp, everything is checked against its snapshot of them.
    func apply(_ response: CheckInResponse, facts: DeviceFacts) throws {
        if let retry = response.retry {
            installer.retryPolicy = retry.clamped()
            if memory.retry != retry { memory.retry = retry; saveMemory() }
        }
        var models: [(model: String, catalog: Envelope, assignment: Envelope)] = response.updates.map {
            ($0.model, $0.catalog, $0.assignment)
        }
        var missing: [String] = []
        // Only a per-device timestamp may leave metadata out: it binds what is left out. (A
        // fleet-wide one names catalogs only, so an answer stripped down to it could freeze an assignment.)
        let stamped = response.stamp != nil
        for (model, assignment) in response.reassigned.sorted(by: { $0.key < $1.key }) {
            if stamped, let h = memory.held[model] { models.append((model, h.catalog, assignment)) } else { missing.append(model) }
        }
        for model in response.unchanged {
            if stamped, let h = memory.held[model] { models.append((model, h.catalog, h.assignment)) } else { missing.append(model) }
        }
        let before = memory.held
        var rejected = !missing.isEmpty
        for model in missing {
            reject(
                model: model,
                TrustError(
                    .mixAndMatch,
                    stamped
                        ? "the answer leaves out metadata this device does not hold"
                        : "the answer leaves out metadata without a per-device timestamp"))
        }
        let timestamp: Envelope?
        let snapshot: CheckInSnapshot?
        if let stamp = response.stamp {
            timestamp = stamp.envelope(type: PayloadType.timestamp, role: .timestamp, root: trust.root)
            var entries: [String: CheckInSnapshot.Entry] = [:]
            for m in models { entries[m.model] = .init(catalog: m.catalog.payloadDigest, assignment: m.assignment.payloadDigest) }
            snapshot = CheckInSnapshot(deviceId: deviceId, models: entries)
        } else {
            timestamp = response.timestamp
            snapshot = nil
        }
        if models.isEmpty, missing.isEmpty, let timestamp, snapshot != nil {
            // Nothing to install, yet the timestamp must bind exactly nothing: an answer stripped of
            // every model under a genuine timestamp stops here.
            do {
                let next = try UpdateVerifier.verifyAlone(timestamp: timestamp, state: trust, deviceId: deviceId, now: Clock.wall())
                if next != trust {
                    let previous = trust
                    trust = next
                    if needsSaving(trust, over: previous) { try saveTrust() }
                }
            } catch let e as TrustError {
                reject(model: nil, e)
                rejected = true
            }
        }
        for m in models
        where
            !(try handle(
                model: m.model, catalog: m.catalog, assignment: m.assignment, timestamp: timestamp,
                snapshot: snapshot, facts: facts))
        {
            rejected = true
        }
        // After a rejected answer nothing is claimed as held: the next check-in gets everything
        // again, and a controller that lost track of this device is not trusted to have it right.
        if rejected { memory.held = [:] }
        if memory.held != before { saveMemory() }
    }

    func reject(model: String?, _ e: TrustError) {
        logger.error("update rejected", metadata: ["model": "\(model ?? "none")", "fault": "\(e.fault.rawValue)", "error": "\(e.message)"])
        do {
            try installer.records.report(.rejected, time: Clock.wall(), model: model, detail: "\(e.fault.rawValue): \(e.message)")
        } catch {
            logger.warning("rejection not recorded in the outbox", metadata: ["error": "\(error)"])
        }
    }

    /// A per-device timestamp changes at every check-in: trust.json is rewritten for it at most once
    /// an hour (flash wear on the device), at once for anything else. The window it leaves after a
    /// restart admits only this device's own recent timestamps, which bind what it held then.
    func needsSaving(_ next: TrustedState, over previous: TrustedState) -> Bool {
        guard next.timestampDigest != nil else { return true }
        var freshnessOnly = next
        freshnessOnly.timestampVersion = previous.timestampVersion
        freshnessOnly.timestampDigest = previous.timestampDigest
        return freshnessOnly != previous || next.timestampVersion >= savedTimestampVersion &+ 3600
    }

    func saveTrust() throws {
        try state.save("trust.json", trust)
        savedTimestampVersion = trust.timestampVersion
    }
}
