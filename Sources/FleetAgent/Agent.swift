import Dispatch
import FleetClient
import FleetCore
import FleetDelta
import Logging
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

public struct AgentOptions: Sendable {
    public var controllerURL: String
    public var stateDirectory: String
    public var modelsDirectory: String
    public var factsFile: String?
    public var rootFile: String?
    public var deviceId: String?
    /// nil: the interval the controller asks for in its check-in answers.
    public var pollSeconds: Double?
    public var healthCommand: String?
    public var healthTimeoutSeconds: Double
    public var rateLimitBytesPerSecond: Int64?
    public var once: Bool
    /// Where the local inference service reports runtime metrics; nil: no endpoint.
    public var metricsListen: MetricsListenAddress?
    /// The fleet CA to pin and the device's client certificate and key (mutual TLS).
    public var tls = TLSOptions()
    /// One-time enrollment token, used on the first run against a controller that enforces access.
    public var enrollToken: String? = nil
    /// Restarts in one unfinished install phase after which the install ends (a crash loop).
    public var maxRestarts: Int = 3
    /// The operator's benchmark, run on each staged model before it goes live (JSON on stdout).
    public var benchmarkCommand: String? = nil
    public var benchmarkTimeoutSeconds: Double = 120
    /// Energy counters (microjoules) read around the benchmark; nil: the RAPL domains found.
    public var energyCounters: [String]? = nil
    /// The device's own labels (`--label k=v`, the config file's `labels:`). Sent with its facts;
    /// labels bound by the enrollment token or set by the operator take precedence.
    public var labels: [String: String] = [:]
    /// Seconds a new agent binary (an agent release) has, from the hand-over, to check in and commit.
    public var selfUpdateDeadlineSeconds: Int64 = 300
    /// false: this agent does not install agent releases (it does not advertise the capability).
    public var selfUpdate = true
    /// What `AgentLauncher.start()` found: this process is the new agent on that trial.
    public var onTrial: AgentTrial? = nil

    public init(
        controllerURL: String, stateDirectory: String, modelsDirectory: String, factsFile: String? = nil, rootFile: String? = nil,
        deviceId: String? = nil, pollSeconds: Double? = nil, healthCommand: String? = nil, healthTimeoutSeconds: Double = 30,
        rateLimitBytesPerSecond: Int64? = nil, once: Bool = false, metricsListen: MetricsListenAddress? = nil
    ) {
        self.controllerURL = controllerURL; self.stateDirectory = stateDirectory; self.modelsDirectory = modelsDirectory
        self.factsFile = factsFile; self.rootFile = rootFile; self.deviceId = deviceId; self.pollSeconds = pollSeconds
        self.healthCommand = healthCommand; self.healthTimeoutSeconds = healthTimeoutSeconds
        self.rateLimitBytesPerSecond = rateLimitBytesPerSecond; self.once = once; self.metricsListen = metricsListen
    }
}

public struct AgentError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One device's agent: check in, verify, install, report. `cycle()` is blocking and is run off
/// the cooperative thread pool by `AgentService`.
public final class Agent: @unchecked Sendable {
    public static let version = "0.1.0"
    let options: AgentOptions
    let logger: Logger
    let state: AgentState
    let slots: ModelSlots
    let deviceId: String
    var trust: TrustedState
    /// The timestamp version in trust.json (the one in memory may be ahead by less than an hour).
    var savedTimestampVersion: UInt64 = 0
    /// What frugal check-ins leave out: see `CheckInMemory`.
    var memory = CheckInMemory()
    let installer: Installer
    private let stopFlag = StopFlag()
    private var savedLink: LinkStats?
    private var recovered = false
    /// Runtime metrics from the local inference service, batched into one event per model per cycle.
    public let runtime = RuntimeCollector()
    /// What `GET /v1/status` on the metrics endpoint answers, refreshed after every cycle.
    private let published = Mutex<[UInt8]>([])
    /// SHA-256 of the binary this process runs: the agent's entry in `installed`, sent with its facts.
    let agentSha256: String?
    var capabilities: [String]? { options.selfUpdate && agentSha256 != nil ? [ReleaseKind.selfUpdateCapability] : nil }
    /// Changes when another binary runs: its facts (with sha256 and capabilities) are sent again.
    var agentIdentity: String { Self.version + (agentSha256.map { " " + $0 } ?? "") + (capabilities == nil ? "" : " self-update") }

    public init(options: AgentOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        // A label the controller would refuse stops the agent here, named, not at every check-in.
        if case .failure(let e) = Result(catching: { () throws(LabelError) in try Labels.validate(options.labels) }) {
            throw AgentError("labels: \(e.message)")
        }
        state = try AgentState(root: options.stateDirectory)
        try FS.makeDirectories(options.modelsDirectory)
        slots = ModelSlots(root: options.modelsDirectory)
        agentSha256 = options.selfUpdate ? AgentLauncher.runningSha256(stateDirectory: options.stateDirectory) : nil

        let facts = try Self.readFacts(options)
        if let stored = try state.load("identity.json", as: Identity.self) {
            if let wanted = options.deviceId ?? facts?.deviceId, wanted != stored.deviceId {
                throw AgentError("state directory belongs to device \(stored.deviceId), not \(wanted)")
            }
            deviceId = stored.deviceId
        } else {
            deviceId = options.deviceId ?? facts?.deviceId ?? "dev-" + UUID().uuidString.lowercased().prefix(13)
            guard Name.isValid(deviceId) else { throw AgentError("device id '\(deviceId)' is not a valid name") }
            try state.save("identity.json", Identity(deviceId: deviceId))
        }

        // Enrollment pins root: from then on only a root signed by it is followed.
        if let pinned = try state.load("trust.json", as: TrustedState.self) {
            trust = pinned
        } else {
            guard let rootFile = options.rootFile else {
                throw AgentError("no trusted root pinned yet: pass --root ROOT.json (from `fleetctl keys init`) on the first run")
            }
            let env = try Envelope.parse(Data(try FS.read(rootFile, limit: MetadataLimits.root * 2)))
            trust = try TrustedState(pinning: env, now: Clock.wall())
            try state.save("trust.json", trust)
            logger.info("root pinned", metadata: ["device": "\(deviceId)", "root_version": "\(trust.root.version)"])
        }

        savedTimestampVersion = trust.timestampVersion
        // A cache: unreadable means the next check-in is a whole one.
        memory = (try? state.load("checkin.json", as: CheckInMemory.self)) ?? CheckInMemory()

        let stop = stopFlag
        let http = HTTPClient()
        http.userAgent = "edgefleet-agent/\(Self.version)"
        http.tls = options.tls
        let records = try AgentRecords(state: state, logger: logger)
        installer = Installer(
            slots: slots, state: state, http: http,
            health: HealthCheck(command: options.healthCommand, timeoutSeconds: options.healthTimeoutSeconds),
            controllerURL: options.controllerURL, rateLimit: options.rateLimitBytesPerSecond, logger: logger,
            shouldStop: { stop.isSet }, records: records)
        installer.applyDelta = { base, patch, output, expected in
            // One check of the target: the decoder refuses a package that promises another target
            // than the release signed, then hashes what it writes against it.
            _ = try DeltaDecoder.apply(
                base: base, patch: patch, output: output, expecting: .init(sha256: expected.sha256, size: expected.size))
        }
        installer.benchmark = Benchmark(
            command: options.benchmarkCommand, timeoutSeconds: options.benchmarkTimeoutSeconds,
            energyCounters: options.benchmarkCommand == nil ? [] : options.energyCounters ?? Benchmark.discoverEnergyCounters())
        installer.agentDeadlineSeconds = options.selfUpdateDeadlineSeconds
        installer.agentOnTrial = options.onTrial
        if let retry = memory.retry { installer.retryPolicy = retry.clamped() }
        installer.link = try? state.load("link.json", as: LinkStats.self)
        savedLink = installer.link
        publishStatus()
    }

    /// Starts the local metrics endpoint; the caller stops it.
    public func startMetricsEndpoint(_ address: MetricsListenAddress) throws -> MetricsEndpoint {
        let slots = self.slots
        return try MetricsEndpoint(
            listen: address, collector: runtime, knowsModel: { slots.current($0) != nil },
            status: { [self] in self.published.withLock { $0 } })
    }

    struct LocalStatus: Encodable {
        struct Model: Encodable { var sha256: String; var release: String?; var path: String }
        var deviceId: String
        var agentVersion: String
        var agentSha256: String?
        var models: [String: Model]
        var pendingEvents: Int
        var droppedEvents: UInt64
    }

    private func publishStatus() {
        var models: [String: LocalStatus.Model] = [:]
        for (model, sha) in slots.installed() {
            models[model] = .init(
                sha256: sha, release: installer.records.release(ofArtifact: sha), path: "\(options.modelsDirectory)/\(model)/current")
        }
        let s = LocalStatus(
            deviceId: deviceId, agentVersion: Self.version, agentSha256: agentSha256, models: models,
            pendingEvents: installer.outbox.pending.count, droppedEvents: installer.outbox.dropped)
        let bytes = (try? FleetJSON.encode(s)).map { [UInt8]($0) } ?? []
        published.withLock { $0 = bytes }
    }

    /// Each model's runtime figures since the last cycle become one `metrics` event, kept in the
    /// on-disk outbox until the controller acknowledges it.
    func recordRuntimeMetrics() {
        let windows = runtime.drain()
        guard !windows.isEmpty else { return }
        for (model, m) in windows.sorted(by: { $0.key < $1.key }) {
            let sha = slots.current(model)
            do {
                try installer.records.report(
                    .metrics, time: Clock.wall(), model: model, sha256: sha, release: sha.flatMap(installer.records.release(ofArtifact:)),
                    metrics: m)
            } catch {
                logger.warning("runtime metrics not saved", metadata: ["model": "\(model)", "error": "\(error)"])
            }
        }
    }

    public var id: String { deviceId }

    /// Asks a running cycle to stop at the next safe point (downloads are cut and resumed later).
    public func requestStop() { stopFlag.set() }

    static func readFacts(_ options: AgentOptions) throws -> DeviceFacts? {
        guard let file = options.factsFile else { return nil }
        do {
            return try FleetJSON.decode(DeviceFacts.self, from: Data(try FS.read(file, limit: 1 << 20)), limit: 1 << 20)
        } catch {
            throw AgentError("facts file \(file): \(error)")
        }
    }

    func currentFacts() throws -> DeviceFacts {
        var facts: DeviceFacts
        if let fromFile = try Self.readFacts(options) {
            facts = fromFile
        } else {
            facts = Probe.facts(modelsDirectory: options.modelsDirectory)
            // Free space moves with every log line: rounded down to 64 MiB, the facts (and their
            // digest, which spares sending them at each check-in) change only when it really moves.
            facts.diskFreeBytes -= facts.diskFreeBytes % (64 << 20)
        }
        facts.deviceId = deviceId
        if facts.downlinkMbps == nil { facts.downlinkMbps = installer.link?.mbps }
        // The configuration's labels over a facts file's (a simulated device may carry its own).
        let labels = (facts.labels ?? [:]).merging(options.labels) { $1 }
        facts.labels = labels.isEmpty ? nil : labels
        return facts
    }

    public struct CycleResult: Sendable {
        public var ok: Bool
        public var pollSeconds: Double?
        public var message: String
    }

    /// One check-in: resume what was interrupted, check in, verify and install what is assigned,
    /// send status events.
    public func cycle() -> CycleResult {
        // The window closes before anything is installed: its figures belong to what ran during it.
        recordRuntimeMetrics()
        do {
            // After a start, every model's journal gets its recovery (clean-up included); later,
            // only installs a cut connection left unfinished.
            for (model, s) in installer.records.installs.sorted(by: { $0.key < $1.key }) where !recovered || !s.phase.isTerminal {
                _ =
                    recovered
                    ? try installer.resume(model: model) : try installer.recoverAgentAfterStart(model: model, limit: options.maxRestarts)
            }
            recovered = true
            let facts = try currentFacts()
            try enrollIfNeeded(facts: facts)
            let response = try checkIn(facts: facts)
            // A new agent on trial has now checked in: it commits (the alarm that would end it goes).
            try installer.agentCheckedIn()
            if !response.rootChain.isEmpty {
                var next = trust
                try next.rotate(through: response.rootChain, now: Clock.wall())
                if next != trust { trust = next; try saveTrust() }
            }
            try apply(response, facts: facts)
            if let link = installer.link, link != savedLink {
                try? state.save("link.json", link)
                savedLink = link
            }
            flushOutbox()
            return CycleResult(ok: true, pollSeconds: Double(response.pollSeconds), message: "checked in")
        } catch {
            logger.warning("cycle failed", metadata: ["device": "\(deviceId)", "error": "\(error)"])
            flushOutbox()
            return CycleResult(ok: false, pollSeconds: nil, message: "\(error)")
        }
    }

    /// Verifies one model's catalog and assignment and installs what they assign. Returns false when
    /// they were rejected (reported as a `rejected` event with the fault).
    @discardableResult
    func handle(
        model: String, catalog: Envelope, assignment: Envelope, timestamp: Envelope?, snapshot: CheckInSnapshot?,
        facts: DeviceFacts
    ) throws -> Bool {
        let verified: VerifiedUpdate
        // What this agent can do is checked against the signed requirements like its hardware.
        var facts = facts
        facts.capabilities = capabilities
        facts.agentSha256 = agentSha256
        do {
            guard let timestamp else { throw TrustError(.missingSignature, "check-in response carries no timestamp") }
            verified = try UpdateVerifier.verify(
                catalog: catalog, assignment: assignment, timestamp: timestamp,
                state: trust, deviceId: deviceId, facts: facts, now: Clock.wall(), snapshot: snapshot)
        } catch let e as TrustError {
            reject(model: model, e)
            return false
        }
        if verified.state != trust {
            let previous = trust
            trust = verified.state
            if needsSaving(trust, over: previous) { try saveTrust() }
        }
        let a = verified.assignment
        // Kept under the model the signatures name, whatever the answer called it.
        memory.held[a.model] = HeldEnvelopes(catalog: catalog, assignment: assignment)
        let isAgent = verified.catalog.releaseKind == .agent
        if isAgent, !options.selfUpdate || agentSha256 == nil { return true }
        let running = isAgent ? agentSha256 : slots.current(a.model)
        if running == a.sha256 { return true }
        // A failed assignment is tried again only when its retry time has come and its caps allow;
        // an operator's retry or a newer release comes as a new assignment (a higher counter).
        let records = installer.records
        if let r = records.retry(a.model), !r.allows(counter: a.counter, now: Clock.wall()) { return true }
        if records.failedCounter(a.model) == a.counter { return true }
        if a.package.kind == PackageRef.delta, isAgent || a.package.baseSha256 != slots.current(a.model) {
            try records.recordDeltaFailed(model: a.model, target: a.sha256)
            try records.report(
                .rejected, time: Clock.wall(), model: a.model, sha256: a.sha256,
                detail: "delta base \(a.package.baseSha256?.prefix(12) ?? "none") is not the installed model")
            return true
        }
        if var s = records.installs[a.model], !s.phase.isTerminal {
            if s.job?.sha256 == a.sha256 {
                // Resumed above; paused again. A staged job waiting for its window takes the newer
                // assignment's windows (the controller renews them as they pass).
                if s.awaitingWindow == true, var job = s.job, job.activation != a.activation || job.counter != a.counter {
                    job.activation = a.activation
                    job.counter = a.counter
                    s.job = job
                    try records.recordInstall(model: a.model, s)
                    _ = try installer.resume(model: a.model)
                }
                return true
            }
            // A newer assignment replaces an unfinished download; the live model was not touched.
            guard !s.phase.touchesLiveModel else { return true }
            records.noteSuperseded(model: a.model)
            if let old = s.job { unlink(state.downloadPath(old.sha256)) }
        }
        let job = InstallJob(
            model: a.model, release: a.release, variant: a.variant, sha256: a.sha256, size: a.size,
            fileName: verified.variant.fileName, url: a.package.url, counter: a.counter,
            previousSha256: running, package: a.package.kind == PackageRef.delta ? a.package : nil,
            activation: a.activation, kind: isAgent ? .agent : nil)
        logger.info("installing", metadata: ["model": "\(a.model)", "variant": "\(a.variant)", "release": "\(a.release)"])
        let outcome = try installer.start(job)
        logger.info("install outcome", metadata: ["model": "\(a.model)", "outcome": "\(outcome)"])
        return true
    }

    func flushOutbox() {
        defer { publishStatus() }
        while !installer.outbox.pending.isEmpty {
            let batch = Array(installer.outbox.pending.prefix(EventBatch.maxEvents))
            do {
                let ack = try installer.http.json(
                    "POST", "\(options.controllerURL)/v1/devices/\(deviceId)/events",
                    body: EventBatch(events: batch, droppedEvents: installer.outbox.dropped), as: EventAck.self)
                try installer.records.acknowledge(through: ack.ackedThrough)
                if ack.ackedThrough < batch.last!.seq { break }
            } catch {
                logger.debug("events not sent; kept for later", metadata: ["error": "\(error)"])
                return
            }
        }
    }
}

/// The agent's long-lived loop: poll with jitter, back off on errors, stop cleanly on SIGTERM.
/// Under systemd (`Type=notify`) it says READY=1 once the agent is set up, pings the watchdog while
/// cycles run and between them, and says STOPPING=1 on shutdown; a cycle stuck for longer than
/// `hungCycleSeconds` stops the pings, so the service manager restarts the agent.
public struct AgentService: Service {
    let agent: Agent
    let options: AgentOptions
    let logger: Logger
    let notifier: AgentNotifier
    /// Longest a cycle may run with the watchdog still fed: a download of a large model at a low
    /// rate limit, the benchmark and the health check (a download cut here resumes after the restart).
    let hungCycleSeconds: Double

    public init(agent: Agent, options: AgentOptions, logger: Logger, notifier: AgentNotifier? = nil, hungCycleSeconds: Double? = nil) {
        self.agent = agent; self.options = options; self.logger = logger; self.notifier = notifier ?? .process
        self.hungCycleSeconds = hungCycleSeconds ?? 3600 + options.healthTimeoutSeconds + options.benchmarkTimeoutSeconds
    }

    public func run() async throws {
        var failures = 0
        let endpoint = try options.metricsListen.map { try agent.startMetricsEndpoint($0) }
        if let endpoint { logger.info("metrics endpoint listening", metadata: ["listen": "\(endpoint.address)"]) }
        defer { endpoint?.stop() }
        notifier.ready(status: "device \(agent.id), controller \(options.controllerURL)")
        try await withGracefulShutdownHandler {
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                let result = await runCycleFeedingWatchdog()
                if options.once {
                    if !result.ok { throw AgentError(result.message) }
                    return
                }
                let delay: Double
                if result.ok {
                    failures = 0
                    let poll = options.pollSeconds ?? result.pollSeconds ?? 30
                    delay = poll * Double.random(in: 0.8...1.2)
                } else {
                    failures += 1
                    delay = min(300, (options.pollSeconds ?? 5) * pow2(failures)) * Double.random(in: 0.5...1.0)
                }
                try? await cancelWhenGracefulShutdown { try await sleepFeedingWatchdog(.milliseconds(Int(delay * 1000))) }
            }
        } onGracefulShutdown: {
            notifier.stopping()
            agent.requestStop()
        }
        logger.info("agent stopped", metadata: ["device": "\(agent.id)"])
    }

    /// One cycle off the cooperative pool, with WATCHDOG=1 at the manager's pace until it ends or
    /// has run for `hungCycleSeconds`.
    private func runCycleFeedingWatchdog() async -> Agent.CycleResult {
        let agent = self.agent, notifier = self.notifier
        notifier.watchdog()
        return await withTaskGroup(of: Agent.CycleResult?.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Agent.CycleResult, Never>) in
                    DispatchQueue.global().async { c.resume(returning: agent.cycle()) }
                }
            }
            if let interval = notifier.pingInterval {
                let limit = ContinuousClock.now + .milliseconds(Int64(hungCycleSeconds * 1000))
                group.addTask {
                    while ContinuousClock.now < limit {
                        do { try await Task.sleep(for: interval) } catch { return nil }
                        notifier.watchdog()
                    }
                    return nil
                }
            }
            var result: Agent.CycleResult? = nil
            for await r in group where r != nil {
                result = r
                group.cancelAll()
            }
            return result!
        }
    }

    /// Sleeps in steps of the watchdog's ping interval, pinging after each.
    private func sleepFeedingWatchdog(_ duration: Duration) async throws {
        guard let interval = notifier.pingInterval else { return try await Task.sleep(for: duration) }
        let end = ContinuousClock.now + duration
        while ContinuousClock.now < end {
            try await Task.sleep(for: min(interval, end - ContinuousClock.now))
            notifier.watchdog()
        }
    }

    private func pow2(_ n: Int) -> Double { Double(1 << min(n, 10)) }
}

final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

/// The agent's own file and download code, callable alone (benchmarks, field debugging).
public enum AgentTools {
    /// SHA-256 and length of a file, with the same streaming code the install uses to verify.
    public static func hash(_ path: String) throws -> (String, Int64) { try FS.sha256(path) }

    /// Downloads with the install's resumable libcurl path.
    public static func fetch(_ url: String, to path: String, maxBytes: Int64, rateLimit: Int64?) throws -> DownloadResult {
        try HTTPClient().download(url, to: path, maxBytes: maxBytes, rateLimitBytesPerSecond: rateLimit)
    }
}
