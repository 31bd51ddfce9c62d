import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Runs the operator's health command against the newly activated model, with a timeout
/// (EDGEFLEET_MODEL_PATH is the model file through the `current` link).
struct HealthCheck {
    let command: String?
    let timeoutSeconds: Double

    enum Outcome: Equatable { case healthy, unhealthy(String) }

    func run(model: String, sha256: String, modelPath: String, slot: String) -> Outcome {
        guard let command else { return .healthy }
        switch ModelCommand(command: command, timeoutSeconds: timeoutSeconds).run(
            model: model, sha256: sha256, modelPath: modelPath, slot: slot)
        {
        case .exited(0): return .healthy
        case .exited(let code): return .unhealthy("health command exited with \(code)")
        case .signalled(let sig): return .unhealthy("health command killed by signal \(sig)")
        case .timedOut: return .unhealthy("health command timed out after \(timeoutSeconds) s")
        case .cannotStart(let why): return .unhealthy("cannot start health command: \(why)")
        }
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
        return Int64(ts.tv_sec) + skew
    }

    /// Test hook: seconds added to the wall clock (a test that needs the agent to live at another
    /// hour, e.g. inside a maintenance window). Debug builds only; 0 in a release agent.
    #if DEBUG
        static let skew: Int64 = ProcessEnvironment.get("EDGEFLEET_TEST_CLOCK_SKEW").flatMap { Int64($0) } ?? 0
    #else
        static let skew: Int64 = 0
    #endif
}

func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
