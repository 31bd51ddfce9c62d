import FleetCore
#if canImport(Glibc)
import Glibc
#endif

/// Runs the operator's health command against the newly activated model, with a timeout.
/// The command sees EDGEFLEET_MODEL, EDGEFLEET_MODEL_SHA256, EDGEFLEET_MODEL_PATH (the model file
/// through the `current` link) and EDGEFLEET_SLOT.
struct HealthCheck {
    let command: String?
    let timeoutSeconds: Double

    enum Outcome: Equatable { case healthy, unhealthy(String) }

    func run(model: String, sha256: String, modelPath: String, slot: String) -> Outcome {
        guard let command else { return .healthy }
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
        let argv = ["/bin/sh", "-c", command]
        var pid: pid_t = 0
        let rc = withCStrings(argv) { cargv in
            withCStrings(envStrings) { cenv in posix_spawn(&pid, "/bin/sh", nil, &attr, cargv, cenv) }
        }
        guard rc == 0 else { return .unhealthy("cannot start health command: \(String(cString: strerror(rc)))") }
        let deadline = Clock.monotonic() + timeoutSeconds
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { return .unhealthy("waitpid failed") }
            if Clock.monotonic() > deadline {
                kill(-pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return .unhealthy("health command timed out after \(timeoutSeconds) s")
            }
            usleep(10_000)
        }
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        if exited && code == 0 { return .healthy }
        return .unhealthy(exited ? "health command exited with \(code)" : "health command killed by signal \(status & 0x7f)")
    }
}

enum ProcessEnvironment {
    static func current() -> [String: String] {
        var out: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { out[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return out
    }

    static func get(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
}

enum Clock {
    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func wall() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec)
    }
}

func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
