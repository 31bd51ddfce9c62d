import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// The Debian packages as `make package` builds them, made once per test run: the agent package
/// holds the static stripped agent of `make agent` (which `make test` runs first); the controller
/// package holds this build's controller and fleetctl.
enum ShippedPackages {
    static let staticAgent = TestFleet.repoRoot + "/.build/release/fleet-agent"

    struct Built {
        let dir: String
        let agent: String
        let controller: String
    }

    static let built: Result<Built, HarnessError> = Result { try build() }.mapError { $0 as? HarnessError ?? HarnessError("\($0)") }

    static func get() throws -> Built { try built.get() }

    private static func build() throws -> Built {
        try requireFreshStaticAgent()
        let dir = try TestScratch.directory("packages")
        let r = try runTool(
            "/usr/bin/env",
            [
                "bash", TestFleet.repoRoot + "/deploy/debian/build-packages.sh", "--agent", staticAgent,
                "--controller", TestFleet.bin + "/fleet-controller", "--fleetctl", TestFleet.bin + "/fleetctl",
                "--out", dir, "--compress", "none"
            ], timeout: 600)
        guard r.status == 0 else { throw HarnessError("build-packages.sh failed: \(r.stderr)\(r.stdout)") }
        let debs = r.stdout.split(separator: "\n").map(String.init)
        guard let agent = debs.first(where: { $0.contains("/edgefleet-agent_") }),
            let controller = debs.first(where: { $0.contains("/edgefleet-controller_") })
        else {
            throw HarnessError("build-packages.sh named no packages: \(r.stdout)")
        }
        return Built(dir: dir, agent: agent, controller: controller)
    }

    /// The static agent must be built from these sources: a stale one would test old code.
    static func requireFreshStaticAgent() throws {
        let fm = FileManager.default
        guard let built = (try? fm.attributesOfItem(atPath: staticAgent))?[.modificationDate] as? Date else {
            throw HarnessError("\(staticAgent) is missing: run `make agent` (make test does)")
        }
        var newest = Date.distantPast
        for top in ["Sources", "Package.swift"] {
            let path = TestFleet.repoRoot + "/" + top
            let files = (fm.enumerator(atPath: path)?.compactMap { $0 as? String }.map { path + "/" + $0 }) ?? [path]
            for f in files where f.hasSuffix(".swift") || f.hasSuffix(".h") || f.hasSuffix(".modulemap") {
                if let m = (try? fm.attributesOfItem(atPath: f))?[.modificationDate] as? Date, m > newest { newest = m }
            }
        }
        guard built >= newest else { throw HarnessError("\(staticAgent) is older than the sources: run `make agent` (make test does)") }
    }

    /// The package's files unpacked into a new directory.
    static func extract(_ deb: String, into dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let r = try runTool("/usr/bin/env", ["dpkg-deb", "-x", deb, dir])
        guard r.status == 0 else { throw HarnessError("dpkg-deb -x \(deb): \(r.stderr)") }
    }

    static func field(_ deb: String, _ name: String) throws -> String {
        let r = try runTool("/usr/bin/env", ["dpkg-deb", "-f", deb, name])
        guard r.status == 0 else { throw HarnessError("dpkg-deb -f: \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A control-archive member (conffiles, postinst, …).
    static func controlFile(_ deb: String, _ name: String) throws -> String {
        let r = try runTool("/usr/bin/env", ["dpkg-deb", "-I", deb, name])
        guard r.status == 0 else { throw HarnessError("dpkg-deb -I \(name): \(r.stderr)") }
        return r.stdout
    }

    /// path → (mode string, owner/group) of every entry of the data archive.
    static func listing(_ deb: String) throws -> [String: (mode: String, owner: String)] {
        let r = try runTool("/usr/bin/env", ["dpkg-deb", "-c", deb])
        guard r.status == 0 else { throw HarnessError("dpkg-deb -c: \(r.stderr)") }
        var out: [String: (String, String)] = [:]
        for line in r.stdout.split(separator: "\n") {
            let cols = line.split(separator: " ", omittingEmptySubsequences: true)
            guard cols.count >= 6 else { continue }
            var path = String(cols[5])
            if path.hasPrefix(".") { path.removeFirst() }
            if path.count > 1, path.hasSuffix("/") { path.removeLast() }
            out[path] = (String(cols[0]), String(cols[1]))
        }
        return out
    }

    /// A unit file as section → key → values (repeated keys kept in order).
    static func unit(_ path: String) throws -> [String: [String: [String]]] {
        var out: [String: [String: [String]]] = [:]
        var section = ""
        for raw in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") { section = String(line.dropFirst().dropLast()); continue }
            guard let eq = line.firstIndex(of: "=") else { continue }
            out[section, default: [:]][String(line[..<eq]), default: []].append(String(line[line.index(after: eq)...]))
        }
        return out
    }

    static func runTool(_ tool: String, _ args: [String], env: [String: String] = [:], timeout: Double = 120) throws -> CommandResult {
        try TestFleet.runProcess(tool, args, env: env, timeout: timeout)
    }

    /// Whether `tool` is on PATH; in CI a missing tool is a failure, elsewhere the test is skipped.
    static func require(_ tool: String, why: String) -> Bool {
        let found = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            .contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
        if !found, ProcessInfo.processInfo.environment["CI"] == "true" {
            Issue.record("\(tool) is missing in CI (\(why); Makefile DEB_PACKAGES)")
        }
        return found
    }

    /// VmRSS, VmHWM and VmRSS's anonymous and file-backed parts of a process, in bytes.
    static func memory(pid: Int32) -> (rss: Int64, peak: Int64, anon: Int64, file: Int64)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func kb(_ key: String) -> Int64? {
            status.split(separator: "\n").first { $0.hasPrefix(key + ":") }
                .flatMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first }.flatMap { Int64($0) }.map {
                    $0 * 1024
                }
        }
        guard let rss = kb("VmRSS"), let peak = kb("VmHWM"), let anon = kb("RssAnon"), let file = kb("RssFile") else { return nil }
        return (rss, peak, anon, file)
    }
}
