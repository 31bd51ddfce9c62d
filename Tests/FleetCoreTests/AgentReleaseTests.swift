import Testing
@testable import FleetCore

/// Agent releases: the kind is signed twice (catalog and assignment) and bound to one model name,
/// so an agent binary never reaches a model slot, a model never the agent's, and only agents that
/// say they can update themselves are picked.
@Suite struct AgentReleaseTests {
    typealias F = Fixture

    static let agentBinary = CatalogVariant(
        name: "agent-x86_64-0.2.0", sha256: Digest.sha256Hex(Array("agent".utf8)), size: 20 * F.MB,
        fileName: "fleet-agent", format: ReleaseKind.agentFormat, dtype: "native",
        requires: Requirements(arch: ["x86_64"], capabilities: [ReleaseKind.selfUpdateCapability]))

    static var capableFacts: DeviceFacts {
        var f = F.facts
        f.capabilities = [ReleaseKind.selfUpdateCapability]
        return f
    }

    /// A signed agent release for the fixture device; `edit` changes catalog and assignment before signing.
    static func agentBundle(
        catalog editCatalog: (inout ReleaseCatalog) -> Void = { _ in },
        assignment editAssignment: (inout Assignment) -> Void = { _ in }
    ) -> Fixture.Bundle {
        F.bundle(
            catalog: { c in
                c.model = ReleaseKind.agentModel; c.kind = .agent; c.variants = [agentBinary]
                editCatalog(&c)
            },
            assignment: { a in
                let v = agentBinary
                a.model = ReleaseKind.agentModel; a.release = "\(ReleaseKind.agentModel)@1.2.0"; a.kind = .agent
                a.variant = v.name; a.sha256 = v.sha256; a.size = v.size
                a.package = PackageRef(kind: PackageRef.full, sha256: v.sha256, size: v.size, url: "/v1/artifacts/\(v.sha256)")
                editAssignment(&a)
            })
    }

    @Test func agentReleaseForACapableAgentIsAccepted() throws {
        let result = try F.verify(Self.agentBundle(), state: F.pinnedState(), facts: Self.capableFacts)
        #expect(result.catalog.releaseKind == .agent)
        #expect(result.variant == Self.agentBinary)
    }

    @Test func agentReleaseForAnAgentWithoutTheCapabilityIsRejected() {
        expectRejection(.wrongHardwareClass, Self.agentBundle(), facts: F.facts)
    }

    /// The director cannot turn an agent binary into a model: the assignment must say agent too.
    @Test func agentCatalogWithAModelAssignmentIsRejected() {
        expectRejection(.wrongKind, Self.agentBundle(assignment: { $0.kind = nil }), facts: Self.capableFacts)
        expectRejection(.wrongKind, Self.agentBundle(assignment: { $0.kind = .model }), facts: Self.capableFacts)
    }

    /// An agent-kind catalog under a model's name would install a binary into that model's slot.
    @Test func agentCatalogUnderAModelNameIsRejected() {
        let b = Self.agentBundle(
            catalog: { $0.model = F.model },
            assignment: {
                $0.model = F.model; $0.release = F.release
            })
        expectRejection(.wrongKind, b, facts: Self.capableFacts)
    }

    /// A model catalog under the agent's name would be exec'd as the agent.
    @Test func modelCatalogUnderTheAgentNameIsRejected() {
        expectRejection(.wrongKind, Self.agentBundle(catalog: { $0.kind = nil }, assignment: { $0.kind = nil }), facts: Self.capableFacts)
    }

    /// A model assignment that claims to be an agent's is refused too.
    @Test func modelCatalogWithAnAgentAssignmentIsRejected() {
        expectRejection(.wrongKind, F.bundle(assignment: { $0.kind = .agent }))
    }

    /// Catalogs of models are byte for byte what they were: no `kind` key, no `capabilities`.
    @Test func modelCatalogEncodingIsUnchanged() throws {
        let text = String(decoding: try FleetJSON.encode(F.catalog()), as: UTF8.self)
        #expect(!text.contains("\"kind\"") && !text.contains("capabilities"))
    }

    @Test func selectionPicksTheAgentBinaryOnlyForACapableAgentOfItsArch() {
        let candidates = [Candidate(variant: Self.agentBinary, quality: nil, measured: nil)]
        let capable = VariantSelector.select(facts: Self.capableFacts, hardwareClass: F.avx2Class, tier: nil, candidates: candidates)
        #expect(capable.chosen == Self.agentBinary.name)
        let old = VariantSelector.select(facts: F.facts, hardwareClass: F.avx2Class, tier: nil, candidates: candidates)
        #expect(old.chosen == nil)
        var arm = Self.capableFacts
        arm.arch = "aarch64"
        #expect(VariantSelector.select(facts: arm, hardwareClass: F.avx2Class, tier: nil, candidates: candidates).chosen == nil)
    }

    @Test func releaseAcceptanceRefusesAnAgentReleaseUnderAnotherNameOrWithoutItsRequirements() async throws {
        let root = F.pinnedState().root
        func check(_ c: ReleaseCatalog) async -> ReleaseAcceptance.Rejection.Code? {
            let env = F.sign(c, PayloadType.catalog, [F.releaseKey])
            do {
                _ = try await ReleaseAcceptance.check(env, root: root, now: F.now) { _ in
                    ReleaseAcceptance.ModelState(
                        registered: Dictionary(uniqueKeysWithValues: c.variants.map { ($0.name, $0) }), lastSerial: 0)
                }
                return nil
            } catch let r as ReleaseAcceptance.Rejection { return r.code } catch { return nil }
        }
        var agent = F.catalog()
        agent.model = ReleaseKind.agentModel; agent.kind = .agent; agent.variants = [Self.agentBinary]
        #expect(await check(agent) == nil)
        var renamed = agent
        renamed.model = F.model
        #expect(await check(renamed) == .wrongKind)
        var model = F.catalog()
        model.model = ReleaseKind.agentModel
        #expect(await check(model) == .wrongKind)
        var noCapability = agent
        noCapability.variants[0].requires.capabilities = nil
        #expect(await check(noCapability) == .wrongKind)
    }
}

/// What an agent process does at start and at a hand-over, as a pure plan.
@Suite struct AgentHandoverTests {
    static let old = String(repeating: "a", count: 64)
    static let new = String(repeating: "b", count: 64)
    static let now: Int64 = 1_000
    static func trial(attempts: Int = 0, deadline: Int64 = now + 60, abandoned: InstallFault? = nil) -> AgentTrial {
        AgentTrial(
            model: ReleaseKind.agentModel, release: "fleet-agent@2", counter: 3, previous: old, new: new, deadline: deadline,
            attempts: attempts, abandoned: abandoned)
    }

    @Test func nothingInstalledRunsThePackagedBinary() {
        #expect(AgentHandover.plan(trial: nil, committed: nil, handedOver: nil, now: Self.now) == .init(.keep, .run))
    }

    @Test func aCommittedSlotTakesOverOnce() {
        #expect(
            AgentHandover.plan(trial: nil, committed: Self.old, handedOver: nil, now: Self.now) == .init(.keep, .execCommitted(Self.old)))
        // The exec'd process never hands over again at start: no loop.
        #expect(AgentHandover.plan(trial: nil, committed: Self.old, handedOver: Self.old, now: Self.now) == .init(.keep, .run))
    }

    @Test func aTrialIsHandedOverToOnceWithTheAttemptRecordedFirst() {
        let plan = AgentHandover.plan(trial: Self.trial(), committed: Self.old, handedOver: nil, now: Self.now)
        #expect(plan == .init(.write(Self.trial(attempts: 1)), .execTrial(Self.new, deadline: Self.now + 60)))
        // The new binary, exec'd, knows it is on trial.
        let onTrial = AgentHandover.plan(trial: Self.trial(attempts: 1), committed: Self.old, handedOver: Self.new, now: Self.now)
        #expect(onTrial == .init(.keep, .runOnTrial(Self.trial(attempts: 1))))
    }

    /// Started again after the hand-over (the new agent exited, crashed, was killed): the trial is
    /// given up and the previous binary runs.
    @Test func aRestartAfterTheHandOverGivesTheTrialUp() {
        let plan = AgentHandover.plan(trial: Self.trial(attempts: 1), committed: Self.old, handedOver: nil, now: Self.now + 1)
        #expect(plan == .init(.write(Self.trial(attempts: 1, abandoned: .agentExited)), .execCommitted(Self.old)))
        let packaged = AgentHandover.plan(trial: Self.trial(attempts: 1), committed: nil, handedOver: nil, now: Self.now + 1)
        #expect(packaged == .init(.write(Self.trial(attempts: 1, abandoned: .agentExited)), .run))
    }

    @Test func aTrialPastItsDeadlineIsGivenUpAsSuch() {
        let plan = AgentHandover.plan(trial: Self.trial(attempts: 1), committed: nil, handedOver: nil, now: Self.now + 61)
        #expect(plan.trial == .write(Self.trial(attempts: 1, abandoned: .agentDeadline)))
        // Even one never handed over to.
        #expect(AgentHandover.plan(trial: Self.trial(), committed: nil, handedOver: nil, now: Self.now + 61).next == .run)
    }

    @Test func aGivenUpTrialIsNeverHandedOverToAgain() {
        let t = Self.trial(attempts: 1, abandoned: .agentExited)
        #expect(AgentHandover.plan(trial: t, committed: nil, handedOver: nil, now: Self.now) == .init(.keep, .run))
        #expect(AgentHandover.plan(trial: t, committed: nil, handedOver: Self.new, now: Self.now) == .init(.keep, .run))
    }

    /// The commit was cut after `current` moved: the new agent is the committed one.
    @Test func aCommitCutAfterTheSwitchEndsOnTheNewAgent() {
        let plan = AgentHandover.plan(trial: Self.trial(attempts: 1), committed: Self.new, handedOver: nil, now: Self.now)
        #expect(plan == .init(.remove, .execCommitted(Self.new)))
    }
}
