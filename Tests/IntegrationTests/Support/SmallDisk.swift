import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// A small tmpfs in a mount namespace of its own (`unshare -m`, or `unshare -rm` without root), held
/// open by a sleeping process: commands run inside it with `nsenter`, the test reads it through
/// `/proc/PID/root`, and it disappears with its holder. Nothing is mounted on the host.
final class SmallDisk {
    let fleet: TestFleet
    let mountPoint: String
    let holder: Process
    let rootless: Bool
    var pid: Int32 { holder.processIdentifier }
    /// The mount point as the test process sees it.
    var view: String { "/proc/\(pid)/root" + mountPoint }

    /// Why a small disk cannot be had here, or nil.
    static func unavailable() -> String? {
        for tool in ["/usr/bin/unshare", "/usr/bin/nsenter"] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "\(tool) is missing (util-linux)"
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        p.arguments = (getuid() == 0 ? ["-m"] : ["-rm"]) + ["sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"]
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return "cannot run unshare" }
        p.waitUntilExit()
        return p.terminationStatus == 0 ? nil : "unshare \(getuid() == 0 ? "-m" : "-rm") cannot mount a tmpfs here (no mount namespaces)"
    }

    init(_ fleet: TestFleet, bytes: Int) throws {
        self.fleet = fleet
        mountPoint = fleet.dir + "/small-disk"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        rootless = getuid() != 0
        holder = try fleet.start(
            "/usr/bin/unshare",
            (rootless ? ["-rm"] : ["-m"]) + [
                "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o size=\(bytes) tmpfs '\(mountPoint)' && touch '\(mountPoint)/.ready' && exec sleep 3600"
            ],
            log: fleet.dir + "/small-disk.log")
        let ready = "/proc/\(holder.processIdentifier)/root\(mountPoint)/.ready"
        try fleet.waitFor("the small disk") { FileManager.default.fileExists(atPath: ready) }
        unlink(ready)
    }

    /// `nsenter` arguments that put a command inside the disk's mount namespace.
    func enter(_ command: [String]) -> [String] {
        ["-t", "\(pid)", "-m"] + (rootless ? ["-U", "--preserve-credentials"] : []) + ["--"] + command
    }

    @discardableResult
    func run(_ command: [String], env: [String: String] = [:]) throws -> CommandResult {
        try fleet.run("/usr/bin/nsenter", enter(command), env: env)
    }

    func start(_ command: [String], log: String) throws -> Process {
        try fleet.start("/usr/bin/nsenter", enter(command), log: log)
    }

    /// Bytes in use and free on the disk.
    func usage() throws -> (used: Int64, free: Int64) {
        let r = try run(["df", "-B1", "--output=used,avail", mountPoint])
        let fields = r.stdout.split(separator: "\n").last?.split(separator: " ").compactMap { Int64($0) } ?? []
        guard fields.count == 2 else { throw HarnessError("df: \(r.stdout)\(r.stderr)") }
        return (fields[0], fields[1])
    }

    /// Writes zeros into `name` on the disk until it is full.
    func fill(_ name: String = "filler") throws {
        try run(["sh", "-c", "cat /dev/zero > '\(mountPoint)/\(name)' 2>/dev/null; true"])
    }

    func remove(_ name: String = "filler") throws { try run(["rm", "-f", mountPoint + "/" + name]) }
}
