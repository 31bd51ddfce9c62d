import FleetCore
import Logging
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

/// Performs `AgentHandover` plans: first thing in `fleet-agent run` (exec the committed or the
/// trial binary, or give a trial up), and when an install activates a new agent binary. Exec
/// keeps the process id, so a service manager's `Type=notify` and watchdog follow the new agent.
public struct AgentLauncher {
    let binaries: AgentBinaries
    let logger: Logger
    /// The sha256 the previous process handed over to, if this one was exec'd by an agent.
    let handedOver: String?
    #if DEBUG
        let crashPoint = ProcessEnvironment.get("EDGEFLEET_CRASH_POINT")
    #else
        let crashPoint: String? = nil
    #endif

    public init(stateDirectory: String, logger: Logger) {
        binaries = AgentBinaries(stateDirectory: stateDirectory)
        self.logger = logger
        handedOver = ProcessEnvironment.get(AgentBinaries.handoverVariable).flatMap { Digest.isSHA256Hex($0) ? $0 : nil }
    }

    /// Hands over to the committed or trial binary when there is one (and does not return), gives
    /// up a trial whose binary did not make it, or returns: with the trial this process is on.
    public func start() -> AgentTrial? {
        let trial: AgentTrial?
        do { trial = try binaries.trial() } catch {
            // Written atomically: unreadable means tampered with or a broken disk; the packaged
            // binary runs and the install's recovery gives the trial up.
            logger.error("agent trial record unreadable", metadata: ["error": "\(error)"])
            return nil
        }
        let plan = AgentHandover.plan(trial: trial, committed: binaries.committed(), handedOver: handedOver, now: Clock.wall())
        return perform(plan)
    }

    /// Writes the plan's trial record, then runs it. Returns only when this process goes on.
    @discardableResult
    func perform(_ plan: AgentHandover.Plan) -> AgentTrial? {
        do {
            switch plan.trial {
            case .keep: break
            case .remove: try binaries.removeTrial()
            case .write(let t):
                try binaries.save(t)
                if let fault = t.abandoned {
                    logger.error(
                        "new agent given up; back to the previous one",
                        metadata: [
                            "sha256": "\(t.new.prefix(12))", "fault": "\(fault.rawValue)", "release": "\(t.release)"
                        ])
                    crash(at: "handover:abandoned")
                }
            }
        } catch {
            // Without the record on disk the hand-over must not happen: a restart could not tell.
            logger.error("agent trial record not written", metadata: ["error": "\(error)"])
            return nil
        }
        switch plan.next {
        case .run:
            return nil
        case .runOnTrial(let t):
            logger.info("new agent on trial", metadata: ["sha256": "\(t.new.prefix(12))", "deadline": "\(t.deadline)"])
            crash(at: "handover:started")
            return t
        case .execCommitted(let sha):
            guard let path = binaries.binary(sha) else { return nil }
            let e = Self.exec(path, handingOverTo: sha, alarmAt: nil)
            logger.error("cannot start the committed agent; the packaged one runs", metadata: ["path": "\(path)", "error": "\(e)"])
            return nil
        case .execTrial(let sha, let deadline):
            crash(at: "handover:attempt")
            logger.info(
                "handing over to the new agent", metadata: ["sha256": "\(sha.prefix(12))", "deadline_in_s": "\(deadline - Clock.wall())"])
            let e = binaries.binary(sha).map { Self.exec($0, handingOverTo: sha, alarmAt: deadline) } ?? "slot missing"
            logger.error("cannot start the new agent", metadata: ["sha256": "\(sha.prefix(12))", "error": "\(e)"])
            // The restart after this one gives the trial up (it was handed over to once).
            if var t = try? binaries.trial(), t.new == sha {
                t.abandoned = .agentExited
                try? binaries.save(t)
            }
            return nil
        }
    }

    func crash(at point: String) {
        if crashPoint == point {
            logger.warning("injected crash", metadata: ["point": "\(point)"])
            kill(getpid(), SIGKILL)
        }
    }

    /// Replaces this process with `path`: same arguments and environment, plus the hand-over
    /// marker. Every descriptor beyond stdio closes on exec (listening sockets must not outlive
    /// this agent), the signal mask and the runtime's dispositions are reset (exec keeps them),
    /// and with `alarmAt` an alarm kills the new agent if it has not committed by then (exec keeps
    /// alarms too; a service manager restarts it and the trial is given up). Returns only on failure.
    static func exec(_ path: String, handingOverTo sha: String, alarmAt deadline: Int64?) -> String {
        var args = CommandLine.arguments
        if args.isEmpty { args = [path] } else { args[0] = path }
        var env = ProcessEnvironment.current()
        env[AgentBinaries.handoverVariable] = sha
        let envList = env.map { "\($0.key)=\($0.value)" }
        for name in FS.listDirectory("/proc/self/fd") {
            if let fd = Int32(name), fd > 2 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGALRM] { signal(s, SIG_DFL) }
        if let deadline { alarm(UInt32(max(1, deadline - Clock.wall()))) }
        let cArgs = args.map { strdup($0) } + [nil]
        let cEnv = envList.map { strdup($0) } + [nil]
        execve(path, cArgs, cEnv)
        let e = String(cString: strerror(errno))
        alarm(0)
        for p in cArgs + cEnv { free(p) }
        return e
    }

    /// This process's binary, hashed once (tests make many agents in one process).
    private static let hashed = Mutex<[String: String]>([:])

    /// SHA-256 of the binary this process runs: a slot's is its name (verified when it was
    /// staged); another's (the packaged binary) is hashed once per file, cached by inode and mtime.
    static func runningSha256(stateDirectory: String) -> String? {
        let binaries = AgentBinaries(stateDirectory: stateDirectory)
        guard let exe = FS.readLink("/proc/self/exe") else { return nil }
        let slots = binaries.slots.root + "/" + binaries.model + "/"
        if exe.hasPrefix(slots) {
            let rest = exe.dropFirst(slots.count).split(separator: "/")
            if rest.count == 2, Digest.isSHA256Hex(String(rest[0])) { return String(rest[0]) }
        }
        var st = stat()
        guard stat("/proc/self/exe", &st) == 0 else { return nil }
        let key = "\(st.st_dev):\(st.st_ino):\(st.st_size):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        if let sha = hashed.withLock({ $0[key] }) { return sha }
        let cacheFile = binaries.root + "/exe-sha256.json"
        var cache =
            (try? FS.read(cacheFile, limit: 1 << 16)).flatMap {
                try? FleetJSON.decode([String: String].self, from: Data($0), limit: 1 << 16)
            } ?? [:]
        if let sha = cache[key] { hashed.withLock { $0[key] = sha }; return sha }
        guard let sha = try? FS.sha256("/proc/self/exe").0 else { return nil }
        hashed.withLock { $0[key] = sha }
        if cache.count >= 4 { cache = [:] }
        cache[key] = sha
        if (try? FS.makeDirectories(binaries.root)) != nil, let bytes = try? FleetJSON.encode(cache) {
            try? FS.writeAtomically(cacheFile, [UInt8](bytes))
        }
        return sha
    }
}
