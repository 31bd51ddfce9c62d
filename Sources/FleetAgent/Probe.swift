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
        return DeviceFacts(arch: machine, cpuFlags: cpuFlags(), memoryBytes: memoryBytes(),
                           diskFreeBytes: FS.freeBytes(modelsDirectory) ?? 0, accelerators: accelerators(),
                           kernel: field(uts.release), hostname: field(uts.nodename))
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
