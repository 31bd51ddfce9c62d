import FleetClient
import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// What `fleet-agent doctor` checks: the settings `run` would use.
public struct DoctorSettings: Sendable {
    public var controllerURL: String
    public var stateDirectory: String
    public var modelsDirectory: String
    public var rootFile: String?
    public var tls: TLSOptions
    public var healthCommand: String?
    /// The account the service runs as (the unit's `User=`, or doctor's --user) and where that
    /// was read; nil: the directories are checked as the user doctor runs as.
    public var serviceUser: (name: String, source: String)? = nil

    public init(
        controllerURL: String, stateDirectory: String, modelsDirectory: String, rootFile: String?, tls: TLSOptions, healthCommand: String?
    ) {
        self.controllerURL = controllerURL; self.stateDirectory = stateDirectory; self.modelsDirectory = modelsDirectory
        self.rootFile = rootFile; self.tls = tls; self.healthCommand = healthCommand
    }
}

/// The device around the checks, injected so that tests choose the time, the controller's answer
/// and the free space.
public struct DoctorEnvironment: Sendable {
    /// The device's clock, in Unix seconds.
    public var now: @Sendable () -> Int64
    /// GET of a URL with the device's TLS settings.
    public var get: @Sendable (_ url: String, _ tls: TLSOptions) throws -> HTTPResponse
    /// Bytes free for the agent on the filesystem of a path.
    public var freeBytes: @Sendable (String) -> Int64?
    /// Directories searched for a health command without a '/'.
    public var searchPath: [String]
    /// The effective uid doctor runs with (root may check as the service's user).
    public var effectiveUID: uid_t = geteuid()
    /// Accounts by name (the user database).
    public var lookupUser: @Sendable (String) -> ServiceUser? = { ServiceUser.lookup($0) }

    public init(
        now: @escaping @Sendable () -> Int64, get: @escaping @Sendable (String, TLSOptions) throws -> HTTPResponse,
        freeBytes: @escaping @Sendable (String) -> Int64?, searchPath: [String]
    ) {
        self.now = now; self.get = get; self.freeBytes = freeBytes; self.searchPath = searchPath
    }

    public static var device: DoctorEnvironment {
        DoctorEnvironment(
            now: { Clock.wall() },
            get: { url, tls in
                let http = HTTPClient()
                http.tls = tls
                http.connectTimeoutSeconds = 5
                http.userAgent = "edgefleet-agent/\(Agent.version) doctor"
                return try http.request("GET", url, timeoutSeconds: 10)
            },
            freeBytes: { FS.freeBytes($0) },
            searchPath: (getenv("PATH").map { String(cString: $0) } ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(separator: ":").map(
                String.init))
    }
}

/// Checks a device's agent setup and says, for each problem, how to fix it.
public struct AgentDoctor: Sendable {
    /// Skew beyond which expiring metadata and certificates are judged wrongly.
    public static let maxClockSkewSeconds: Int64 = 30
    /// A certificate that ends within this is reported before it breaks the device.
    public static let certificateWarningSeconds: Int64 = 14 * 86400

    let settings: DoctorSettings
    let environment: DoctorEnvironment

    public init(settings: DoctorSettings, environment: DoctorEnvironment = .device) {
        self.settings = settings; self.environment = environment
    }

    public func check() -> [DoctorFinding] {
        var findings: [DoctorFinding] = []
        findings += checkRoot()
        findings += checkCertificates()
        findings += checkController()
        findings += checkDisk()
        let (account, who) = checkingAccount()
        findings.append(who)
        findings.append(
            checkWritable(settings.stateDirectory, ok: .stateWritable, bad: .stateNotWritable, what: "state directory", as: account))
        findings.append(
            checkWritable(settings.modelsDirectory, ok: .modelsWritable, bad: .modelsNotWritable, what: "models directory", as: account))
        findings.append(checkHealthCommand())
        return findings
    }

    // MARK: trust

    func checkRoot() -> [DoctorFinding] {
        let now = environment.now()
        let trustFile = settings.stateDirectory + "/trust.json"
        if FS.exists(trustFile) {
            guard let bytes = try? FS.read(trustFile, limit: 4 << 20),
                let trust = try? FleetJSON.decode(TrustedState.self, from: Data(bytes), limit: 4 << 20)
            else {
                return [
                    DoctorFinding(
                        .rootInvalid, .problem, "\(trustFile) cannot be read as pinned trust",
                        fix: "move it away and run the agent once with --root ROOT.json to pin the fleet's root again")
                ]
            }
            if trust.root.expiresAt <= now {
                return [
                    DoctorFinding(
                        .rootExpired, .problem, "the pinned root (version \(trust.root.version)) expired at \(trust.root.expiresAt)",
                        fix: "sign a new root with `fleetctl keys rotate` and let the device check in, or check the device's clock")
                ]
            }
            return [DoctorFinding(.rootPinned, .ok, "root version \(trust.root.version) pinned")]
        }
        guard let rootFile = settings.rootFile else {
            return [
                DoctorFinding(
                    .rootMissing, .problem, "no root pinned in \(settings.stateDirectory) and no root file configured",
                    fix: "copy root.json from `fleetctl keys init` to the device and set `root:` in the config file")
            ]
        }
        guard let bytes = try? FS.read(rootFile, limit: MetadataLimits.root * 2) else {
            return [
                DoctorFinding(
                    .rootMissing, .problem, "no root pinned yet and \(rootFile) cannot be read",
                    fix: "copy root.json from `fleetctl keys init` to \(rootFile), readable by the agent's user")
            ]
        }
        do {
            let envelope = try Envelope.parse(Data(bytes))
            let trust = try TrustedState(pinning: envelope, now: now)
            return [DoctorFinding(.rootWillPin, .ok, "\(rootFile) (root version \(trust.root.version)) will be pinned on the first run")]
        } catch {
            return [
                DoctorFinding(
                    .rootInvalid, .problem, "\(rootFile) is not a valid root: \(error)",
                    fix: "copy the fleet's current root.json again (from `fleetctl keys init`)")
            ]
        }
    }

    func checkCertificates() -> [DoctorFinding] {
        let tls = settings.tls
        if tls.caFile == nil, tls.certFile == nil, settings.controllerURL.hasPrefix("http://") {
            return [
                DoctorFinding(
                    .tlsNotConfigured, .warning, "plain HTTP to \(settings.controllerURL): no fleet CA, no device certificate",
                    fix: "serve the controller with TLS and set `ca:`, `cert:` and `key:` (see README, Access)")
            ]
        }
        var findings: [DoctorFinding] = []
        let now = environment.now()
        for (name, file) in [("fleet CA", tls.caFile), ("device certificate", tls.certFile)] {
            guard let file else { continue }
            guard let bytes = try? FS.read(file, limit: 1 << 20) else {
                findings.append(
                    DoctorFinding(
                        .certificateUnreadable, .problem, "the \(name) \(file) cannot be read",
                        fix: "put the file there, readable by the agent's user"))
                continue
            }
            guard let dates = try? CertificateDates.parse(pem: String(decoding: bytes, as: UTF8.self)) else {
                findings.append(
                    DoctorFinding(
                        .certificateInvalid, .problem, "the \(name) \(file) holds no PEM certificate",
                        fix: "replace it with the PEM file from the fleet's PKI (certs/README.md)"))
                continue
            }
            let first = dates[0]
            if first.notAfter <= now {
                findings.append(
                    DoctorFinding(
                        .certificateExpired, .problem, "the \(name) \(file) expired at \(first.notAfter) (now \(now))",
                        fix: "issue a new certificate (certs/README.md) and replace the file"))
            } else if first.notBefore > now {
                findings.append(
                    DoctorFinding(
                        .certificateNotYetValid, .problem, "the \(name) \(file) is valid only from \(first.notBefore) (now \(now))",
                        fix: "check the device's clock (NTP), or reissue the certificate"))
            } else if first.notAfter - now < Self.certificateWarningSeconds {
                findings.append(
                    DoctorFinding(
                        .certificateExpiring, .warning, "the \(name) \(file) expires in \((first.notAfter - now) / 86400) days",
                        fix: "issue a new certificate before it expires"))
            } else {
                findings.append(DoctorFinding(.certificateOK, .ok, "the \(name) \(file) is valid"))
            }
        }
        if let key = tls.keyFile, access(key, R_OK) != 0 {
            findings.append(
                DoctorFinding(
                    .keyUnreadable, .problem, "the device key \(key) cannot be read",
                    fix: "put the key there, owned by and readable only by the agent's user (mode 0600)"))
        }
        return findings
    }

    // MARK: controller

    func checkController() -> [DoctorFinding] {
        let url = settings.controllerURL + "/healthz"
        let before = environment.now()
        let response: HTTPResponse
        do {
            response = try environment.get(url, settings.tls)
        } catch let error as HTTPClientError where error.code == .tls {
            return [
                DoctorFinding(
                    .controllerTLS, .problem, "TLS with \(settings.controllerURL) failed: \(error.message)",
                    fix: "check `ca:` is the fleet CA that signed the controller's certificate and `cert:`/`key:` are this device's")
            ]
        } catch {
            return [
                DoctorFinding(
                    .controllerUnreachable, .problem, "\(settings.controllerURL) cannot be reached: \(error)",
                    fix: "check `controller:` in the config file, the network, DNS and firewall to the controller"),
                DoctorFinding(
                    .clockUnknown, .warning, "the clock cannot be compared without the controller",
                    fix: "fix the controller's reachability first")
            ]
        }
        var findings: [DoctorFinding] = []
        // /healthz needs no credentials; any answer proves the way there (401/403 are access, not reachability).
        if response.status >= 500 {
            findings.append(
                DoctorFinding(
                    .controllerUnhealthy, .problem, "\(url) answered \(response.status)",
                    fix: "look at the controller's log (journalctl -u edgefleet-controller)"))
        } else {
            findings.append(DoctorFinding(.controllerReachable, .ok, "\(settings.controllerURL) answered \(response.status)"))
        }
        guard let date = response.headers["date"].flatMap(CivilTime.parseHTTPDate) else {
            findings.append(
                DoctorFinding(
                    .clockUnknown, .warning, "the controller sent no Date header to compare the clock with",
                    fix: "compare `date -u` with the controller's by hand"))
            return findings
        }
        let after = environment.now()
        // The Date header is whole seconds taken during the request.
        let skew = date < before ? date - before : date > after + 1 ? date - after - 1 : 0
        if abs(skew) > Self.maxClockSkewSeconds {
            findings.append(
                DoctorFinding(
                    .clockSkew, .problem, "the device's clock is \(abs(skew)) s \(skew > 0 ? "behind" : "ahead of") the controller's",
                    fix: "enable time synchronisation (systemd-timesyncd or chrony) against the fleet's NTP servers"))
        } else {
            findings.append(DoctorFinding(.clockOK, .ok, "the clock agrees with the controller's within \(Self.maxClockSkewSeconds) s"))
        }
        return findings
    }

    // MARK: disk

    /// The largest model the controller has assigned (the install journal keeps each model's
    /// latest assignment) must fit where models are written.
    func checkDisk() -> [DoctorFinding] {
        let journalFile = settings.stateDirectory + "/journal.json"
        let journal = (try? FS.read(journalFile, limit: 4 << 20)).flatMap {
            try? FleetJSON.decode(Journal.self, from: Data($0), limit: 4 << 20)
        }
        let jobs = journal?.installs.values.compactMap(\.job) ?? []
        guard let largest = jobs.max(by: { $0.size < $1.size }) else {
            return [DoctorFinding(.diskOK, .ok, "no model assigned yet")]
        }
        guard let free = environment.freeBytes(Self.existingAncestor(settings.modelsDirectory)) else {
            return [
                DoctorFinding(
                    .diskUnknown, .warning, "free space under \(settings.modelsDirectory) cannot be read",
                    fix: "check that the models directory's filesystem is mounted")
            ]
        }
        if free < largest.size {
            return [
                DoctorFinding(
                    .diskSpaceLow, .problem,
                    "\(ByteCount.format(free)) free under \(settings.modelsDirectory), the largest assigned model (\(largest.model), \(largest.variant)) needs \(ByteCount.format(largest.size))",
                    fix: "free space on that filesystem, or move `models:` to a larger one")
            ]
        }
        return [
            DoctorFinding(.diskOK, .ok, "\(ByteCount.format(free)) free for the largest assigned model (\(ByteCount.format(largest.size)))")
        ]
    }

    static func existingAncestor(_ path: String) -> String {
        var p = path
        while !FS.exists(p), p != "/", !p.isEmpty { p = FS.dirname(p) }
        return p.isEmpty ? "/" : p
    }

    // MARK: files

    /// Whom the directory checks run as, and the finding that says so: the service's account when
    /// doctor runs as it or as root (root switches to it for the probes), else doctor's own user,
    /// with a warning when that is not the service's.
    func checkingAccount() -> (ServiceUser?, DoctorFinding) {
        let me = environment.effectiveUID
        let myName = ServiceUser.name(of: me)
        guard let (name, source) = settings.serviceUser else {
            return (
                nil,
                DoctorFinding(
                    .checkedAsDoctorUser, .ok,
                    "directories checked as \(myName) (uid \(me)), the user doctor runs as: no service user is known (no User= in the unit, no --user)"
                )
            )
        }
        guard let account = environment.lookupUser(name) else {
            return (
                nil,
                DoctorFinding(
                    .serviceUserUnknown, .problem, "the service user \(name) (\(source)) does not exist; directories checked as \(myName)",
                    fix:
                        "create the account (the package's postinst makes `edgefleet`), or correct User= with `systemctl edit edgefleet-agent`"
                )
            )
        }
        if account.uid == me {
            return (
                nil, DoctorFinding(.checkedAsServiceUser, .ok, "directories checked as the service user \(name) (uid \(me), \(source))")
            )
        }
        if me == 0 {
            return (
                account,
                DoctorFinding(
                    .checkedAsServiceUser, .ok,
                    "directories checked as the service user \(name) (uid \(account.uid), \(source)), not as root")
            )
        }
        return (
            nil,
            DoctorFinding(
                .checkedAsOtherUser, .warning,
                "the service runs as \(name) (\(source)) but directories were checked as \(myName) (uid \(me))",
                fix: "run doctor as root (sudo fleet-agent doctor) to check them as \(name)")
        )
    }

    /// A directory the agent writes must exist and take a new file, or be creatable; checked as
    /// `account` when one is given (see `checkingAccount`).
    func checkWritable(_ dir: String, ok: DoctorFinding.Code, bad: DoctorFinding.Code, what: String, as account: ServiceUser? = nil)
        -> DoctorFinding
    {
        let fix = "create \(dir) owned by the agent's user (the package uses /var/lib/edgefleet), and list it in the unit's ReadWritePaths"
        let by = account.map { " by \($0.name)" } ?? ""
        func failure(_ code: Int32) -> String {
            code == ServiceUser.switchFailed ? "doctor could not act as \(account?.name ?? "")" : String(cString: strerror(code))
        }
        if FS.exists(dir) {
            guard FS.isDirectoryNoFollow(dir) else {
                return DoctorFinding(bad, .problem, "the \(what) \(dir) is not a directory", fix: fix)
            }
            let probe = dir + "/.doctor-\(getpid())"
            let result: Int32
            if let account {
                result = account.probeWrite(create: probe, directory: dir)
            } else {
                let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                result = fd >= 0 ? 0 : errno
                if fd >= 0 {
                    close(fd)
                    unlink(probe)
                }
            }
            guard result == 0 else {
                return DoctorFinding(bad, .problem, "the \(what) \(dir) is not writable\(by): \(failure(result))", fix: fix)
            }
            return DoctorFinding(ok, .ok, "the \(what) \(dir) is writable\(by)")
        }
        let parent = Self.existingAncestor(dir)
        let writable =
            FS.isDirectoryNoFollow(parent)
            && (account.map { $0.probeWrite(create: nil, directory: parent) == 0 } ?? (access(parent, W_OK) == 0))
        guard writable else {
            return DoctorFinding(bad, .problem, "the \(what) \(dir) does not exist and cannot be created\(by) under \(parent)", fix: fix)
        }
        return DoctorFinding(ok, .ok, "the \(what) \(dir) will be created\(by)")
    }

    func checkHealthCommand() -> DoctorFinding {
        guard let command = settings.healthCommand?.trimmed, !command.isEmpty else {
            return DoctorFinding(.healthCommandNone, .ok, "no health command: a new model is live once it is activated")
        }
        var program = String(command.prefix { $0 != " " })
        if let q = program.first, q == "'" || q == "\"" { program = String(command.dropFirst().prefix { $0 != q }) }
        let builtins: Set<String> = ["true", "false", "test", "[", "exit", "cd", "command", "exec", "env"]
        if builtins.contains(program) { return DoctorFinding(.healthCommandFound, .ok, "health command uses the shell's \(program)") }
        let candidates = program.contains("/") ? [program] : environment.searchPath.map { $0 + "/" + program }
        if let found = candidates.first(where: { access($0, X_OK) == 0 && !FS.isDirectoryNoFollow($0) }) {
            return DoctorFinding(.healthCommandFound, .ok, "health command \(found) is present")
        }
        return DoctorFinding(
            .healthCommandMissing, .problem,
            "the health command's program '\(program)' is not an executable file" + (program.contains("/") ? "" : " on PATH"),
            fix: "install it, or correct `health-command:` in the config file")
    }
}
