import FleetCore

#if canImport(Glibc)
    import Glibc
#endif

/// The account the agent service runs as (the unit's `User=`), so that `doctor` run as root checks
/// the directories with that account's rights rather than its own.
public struct ServiceUser: Equatable, Sendable {
    public var name: String
    public var uid: uid_t
    public var gid: gid_t
    /// Every group the account is in (its primary group included), as the service gets them.
    public var groups: [gid_t]

    public init(name: String, uid: uid_t, gid: gid_t, groups: [gid_t]) {
        self.name = name; self.uid = uid; self.gid = gid; self.groups = groups
    }

    /// The account of that name from the user database; nil when there is none.
    public static func lookup(_ name: String) -> ServiceUser? {
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwnam_r(name, &pw, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(name, pw.pw_gid, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))
            guard getgrouplist(name, pw.pw_gid, &groups, &count) >= 0 else { return nil }
        }
        return ServiceUser(name: name, uid: pw.pw_uid, gid: pw.pw_gid, groups: Array(groups.prefix(Int(count))))
    }

    /// The name of the account with this uid, or the number when it has none.
    public static func name(of uid: uid_t) -> String {
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwuid_r(uid, &pw, &buffer, buffer.count, &result) == 0, result != nil, let n = pw.pw_name else { return "\(uid)" }
        return String(cString: n)
    }

    /// Where systemd finds the agent's unit, most specific first, and the folder of its drop-ins.
    public static let unitFiles = [
        "/etc/systemd/system/edgefleet-agent.service", "/lib/systemd/system/edgefleet-agent.service",
        "/usr/lib/systemd/system/edgefleet-agent.service"
    ]
    public static let dropInDirectory = "/etc/systemd/system/edgefleet-agent.service.d"

    /// `User=` of the [Service] section of unit files read in order (a later one overrides, as a
    /// drop-in does); nil when none sets it.
    public static func unitUser(_ texts: [String]) -> String? {
        var user: String? = nil
        for text in texts {
            var inService = false
            for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
                let line = raw.trimmingPrefix(while: { $0 == " " || $0 == "\t" })
                if line.hasPrefix("[") {
                    inService = line.hasPrefix("[Service]")
                    continue
                }
                guard inService, line.hasPrefix("User=") else { continue }
                let value = String(line.dropFirst(5)).trimmed
                user = value.isEmpty ? nil : value
            }
        }
        return user
    }

    /// `User=` of the installed unit: the first unit file that exists, then its drop-ins in name order.
    public static func installedUnitUser() -> (user: String, source: String)? {
        guard let unit = unitFiles.first(where: { FS.exists($0) }) else { return nil }
        var files = [unit]
        files += FS.listDirectory(dropInDirectory).filter { $0.hasSuffix(".conf") }.sorted().map { dropInDirectory + "/" + $0 }
        var texts: [String] = []
        var source = unit
        for file in files {
            guard let bytes = try? FS.read(file, limit: 1 << 20) else { continue }
            let text = String(decoding: bytes, as: UTF8.self)
            if unitUser([text]) != nil { source = file }
            texts.append(text)
        }
        return unitUser(texts).map { ($0, source) }
    }

    /// The probe's exit status when the child could not take on the account's identity.
    static let switchFailed: Int32 = 255

    /// Runs a write probe with this account's uid, gid and groups, in a child process (this one
    /// keeps its own): creates and removes `probe` (O_EXCL), or, without one, asks access(W_OK)
    /// of `directory`. 0 when it worked, else the errno. Needs root.
    func probeWrite(create probe: String?, directory: String) -> Int32 {
        let target = probe ?? directory
        return target.withCString { path -> Int32 in
            groups.withUnsafeBufferPointer { list -> Int32 in
                let pid = fork()
                if pid == 0 {
                    // The child calls only async-signal-safe functions, then _exit.
                    guard setgroups(list.count, list.baseAddress) == 0, setgid(gid) == 0, setuid(uid) == 0 else { _exit(Self.switchFailed) }
                    if probe != nil {
                        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                        guard fd >= 0 else { _exit(errno) }
                        close(fd)
                        unlink(path)
                    } else if access(path, W_OK) != 0 {
                        _exit(errno)
                    }
                    _exit(0)
                }
                guard pid > 0 else { return errno }
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 {
                    guard errno == EINTR else { return errno }
                }
                // Exited normally: its status; killed: EINTR stands for "could not tell".
                return status & 0x7f == 0 ? (status >> 8) & 0xff : EINTR
            }
        }
    }
}
