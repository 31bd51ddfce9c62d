import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Reads the device's hardware facts from the running system.
enum Probe {
    static func facts(modelsDirectory: String) -> DeviceFacts {
        var uts = utsname()
        uname(&uts)
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
        }
        let machine = field(uts.machine)
        var facts = DeviceFacts(
            arch: machine, cpuFlags: cpuFlags(), memoryBytes: memoryBytes(),
            diskFreeBytes: FS.freeBytes(modelsDirectory) ?? 0, accelerators: accelerators(),
            kernel: field(uts.release), hostname: field(uts.nodename))
        facts.timezone = timezone()
        return facts
    }

    /// The configured IANA zone: $TZ (a plain name), else /etc/timezone, else the zoneinfo path
    /// /etc/localtime links to; nil when none names one.
    static func timezone(env: String? = ProcessEnvironment.get("TZ"), etcTimezone: String? = nil, localtimeLink: String? = nil) -> String? {
        // A name the controller would take as a `timezone` label; anything else is not reported.
        func plausible(_ s: String) -> String? {
            let t = s.trimmed.hasPrefix(":") ? String(s.trimmed.dropFirst()) : s.trimmed
            guard case .success = Result(catching: { () throws(LabelError) in try Labels.validate(zone: t) }) else { return nil }
            return t
        }
        if let env, let z = plausible(env) { return z }
        let file = etcTimezone ?? (try? FS.read("/etc/timezone", limit: 256)).map { String(decoding: $0, as: UTF8.self) }
        if let file, let z = plausible(file) { return z }
        if let link = localtimeLink ?? FS.readLink("/etc/localtime") {
            let parts = link.split(separator: "/", omittingEmptySubsequences: true)
            if let i = parts.lastIndex(of: "zoneinfo"), i + 1 < parts.count {
                return plausible(parts[(i + 1)...].joined(separator: "/"))
            }
        }
        return nil
    }

    /// "flags" on x86, "Features" on ARM.
    static func cpuFlags(cpuinfo: String? = nil) -> [String] {
        let text = cpuinfo ?? (try? FS.read("/proc/cpuinfo", limit: 8 << 20)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmed
            if key == "flags" || key == "Features" {
                return parts[1].split(separator: " ").map(String.init).sorted()
            }
        }
        return []
    }

    static func memoryBytes(meminfo: String? = nil) -> Int64 {
        let text = meminfo ?? (try? FS.read("/proc/meminfo", limit: 1 << 20)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let number = line.dropFirst("MemTotal:".count).trimmed.split(separator: " ").first.flatMap { Int64($0) } ?? 0
            return number * 1024
        }
        return 0
    }

    /// Accelerator device nodes: Linux accel (NPUs), Coral Edge TPU, DRM render nodes, NVIDIA.
    static func accelerators(dev: String = "/dev") -> [String] {
        let prefixes = ["accel", "apex_", "renderD", "nvidia", "davinci", "hailo"]
        var out: [String] = []
        for name in FS.listDirectory(dev) where prefixes.contains(where: { name.hasPrefix($0) }) {
            out.append(dev + "/" + name)
        }
        for name in FS.listDirectory(dev + "/accel") { out.append(dev + "/accel/" + name) }
        for name in FS.listDirectory(dev + "/dri") where name.hasPrefix("renderD") { out.append(dev + "/dri/" + name) }
        return out.sorted()
    }
}
