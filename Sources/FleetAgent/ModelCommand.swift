import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Runs one of the operator's commands about a model (the health check, the benchmark) with
/// `/bin/sh -c`, in its own process group, killed as a group at the timeout. The command sees
/// EDGEFLEET_MODEL, EDGEFLEET_MODEL_SHA256, EDGEFLEET_MODEL_PATH and EDGEFLEET_SLOT.
struct ModelCommand {
    enum Result: Equatable {
        case exited(Int32)
        case signalled(Int32)
        case timedOut
        case cannotStart(String)
    }

    let command: String
    let timeoutSeconds: Double

    /// `stdoutFile`: where the command's standard output goes (created or truncated); nil: inherited.
    func run(model: String, sha256: String, modelPath: String, slot: String, stdoutFile: String? = nil) -> Result {
        var env = ProcessEnvironment.current()
        env["EDGEFLEET_MODEL"] = model
        env["EDGEFLEET_MODEL_SHA256"] = sha256
        env["EDGEFLEET_MODEL_PATH"] = modelPath
        env["EDGEFLEET_SLOT"] = slot
        let envStrings = env.map { "\($0.key)=\($0.value)" }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdoutFile {
            posix_spawn_file_actions_addopen(&actions, 1, stdoutFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        }
        let argv = ["/bin/sh", "-c", command]
        var pid: pid_t = 0
        let rc = withCStrings(argv) { cargv in
            withCStrings(envStrings) { cenv in posix_spawn(&pid, "/bin/sh", &actions, &attr, cargv, cenv) }
        }
        guard rc == 0 else { return .cannotStart(String(cString: strerror(rc))) }
        let deadline = Clock.monotonic() + timeoutSeconds
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { return .cannotStart("waitpid failed") }
            if Clock.monotonic() > deadline {
                kill(-pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return .timedOut
            }
            usleep(10_000)
        }
        return status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
    }
}
