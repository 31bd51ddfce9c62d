import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// kill -9 at every file-changing system call an install makes: the agent runs under
/// `strace -f -e inject=SYSCALL:signal=KILL:when=N` for every N up to the number of times the
/// install calls SYSCALL, then restarts. Every time the device must run exactly the old or exactly
/// the new model, and after the restart the new one.
@Suite("Crash at every system call of an install", .serialized, .ownThread)
struct CrashInjectionTests {
    static let syscalls = [
        "write", "pwrite64", "rename", "renameat", "renameat2", "fsync", "fdatasync", "link", "linkat",
        "symlink", "symlinkat", "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir"
    ]

    static var strace: String? {
        ["/usr/bin/strace", "/bin/strace"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// A small release 3 (every key of the fleet signs it, as the real controller would).
    static func smallRelease(_ s: AttackScene) throws -> CheckInResponse {
        let w = s.world
        let file = try s.fleet.makeFile("v3.safetensors", size: 96 * 1024, seed: 77)
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        let sha = Digest.sha256Hex(data)
        let u = try #require(w.r2full.updates.first)
        var cat = try AttackWorld.payload(u.catalog, as: ReleaseCatalog.self)
        cat.version = "3"; cat.serial += 1
        cat.variants = [
            CatalogVariant(
                name: "m-v3", sha256: sha, size: Int64(data.count), fileName: "model.safetensors",
                format: "safetensors", dtype: "int8")
        ]
        let catalog = try Envelope.sign(cat, type: PayloadType.catalog, keys: [w.release])
        var ts = try AttackWorld.payload(try #require(w.r2full.timestamp), as: TimestampMetadata.self)
        ts.version += 1
        ts.catalogs = ["m@3": catalog.payloadDigest]
        var a = try AttackWorld.payload(u.assignment, as: Assignment.self)
        a.release = "m@3"; a.variant = "m-v3"; a.sha256 = sha; a.size = Int64(data.count); a.counter += 100
        a.catalogSha256 = catalog.payloadDigest
        a.package = PackageRef(kind: PackageRef.full, sha256: sha, size: Int64(data.count), url: "/v1/artifacts/\(sha)")
        try s.putArtifact(sha, data)
        return AttackWorld.response(
            timestamp: try Envelope.sign(ts, type: PayloadType.timestamp, keys: [w.timestamp]), catalog: catalog,
            assignment: try Envelope.sign(a, type: PayloadType.assignment, keys: [w.director]))
    }

    @Test func killAtEverySystemCallEndsInOldOrNew() throws {
        guard let strace = Self.strace else {
            if ProcessInfo.processInfo.environment["CI"] == "true" {
                Issue.record("strace is missing in CI (Makefile DEB_PACKAGES has it)")
            }
            print("SKIPPED killAtEverySystemCallEndsInOldOrNew: strace is not installed")
            return
        }
        let s = try AttackScene("v1"); defer { s.cleanup() }
        let response = try Self.smallRelease(s)
        try s.serve(response)
        let old = s.world.v1Sha
        let new = try #require(response.updates.first.map { try AttackWorld.payload($0.assignment, as: Assignment.self).sha256 })
        let template = s.fleet.dir + "/device"
        let args = s.fleet.agentArgs(s.agent, controller: s.url, extra: ["--once"])
        let bin = TestFleet.bin + "/fleet-agent"

        // A clean install under strace: how often each system call is made (per thread, the way
        // strace counts for `when=`).
        let probe = s.fleet.dir + "/probe"
        _ = try s.fleet.run("/bin/cp", ["-a", template, probe])
        let trace = s.fleet.dir + "/trace.log"
        let clean = try s.fleet.run(
            strace,
            ["-f", "-qq", "-o", trace, "-e", "trace=" + Self.syscalls.joined(separator: ",")]
                + [bin] + args.map { $0.replacingOccurrences(of: template, with: probe) })
        #expect(clean.status == 0, "\(clean.stderr)")
        let counts = Self.countPerThread(try String(contentsOfFile: trace, encoding: .utf8))
        #expect(DeviceSnapshot.walk(probeCurrent: probe + "/models/m/current") == new, "the clean run did not install release 3")
        #expect(["rename", "renameat", "renameat2"].reduce(0) { $0 + (counts[$1] ?? 0) } > 0, "no rename seen: \(counts)")

        var tried = 0, killed = 0
        var outcomes: [String: Int] = [:]
        for (call, n) in counts.sorted(by: { $0.key < $1.key }) {
            for k in 1...n {
                let dir = s.fleet.dir + "/crash-\(call)-\(k)"
                _ = try s.fleet.run("/bin/cp", ["-a", template, dir])
                defer { try? FileManager.default.removeItem(atPath: dir) }
                let agent = TestFleet.Agent(name: "crash", state: dir + "/state", models: dir + "/models", facts: s.agent.facts)
                tried += 1
                let r = try s.fleet.run(
                    strace,
                    [
                        "-f", "-qq", "-o", "/dev/null", "-e", "trace=\(call)",
                        "-e", "inject=\(call):signal=KILL:when=\(k)", bin
                    ]
                        + s.fleet.agentArgs(agent, controller: s.url, extra: ["--once"]))
                if r.status != 0 { killed += 1 }
                let after = s.fleet.current(agent, model: "m")
                #expect(
                    (after.link == old || after.link == new) && after.contentSha == after.link,
                    "after a kill at \(call) #\(k) current is \(after.link ?? "missing") with content \(after.contentSha ?? "unreadable")")
                outcomes[after.link == new ? "new" : "old", default: 0] += 1

                let restarted = try s.fleet.runOnce(agent, controller: s.url)
                #expect(restarted.status == 0, "restart after \(call) #\(k): \(restarted.stderr)")
                let end = s.fleet.current(agent, model: "m")
                #expect(
                    end.link == new && end.contentSha == new,
                    "after a kill at \(call) #\(k) and a restart the device runs \(end.link ?? "nothing")")
                let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/models/m")) ?? []
                #expect(Set(leftovers).isSubset(of: ["current", old, new]), "leftovers after \(call) #\(k): \(leftovers)")
            }
        }
        print(
            "crash points tried: \(tried) (system calls per thread: \(counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))); agent killed at \(killed); device found on old \(outcomes["old"] ?? 0), on new \(outcomes["new"] ?? 0)"
        )
        #expect(killed > 0)
    }

    /// The highest invocation count of each system call in any one thread of an `strace -f -o` log.
    static func countPerThread(_ log: String) -> [String: Int] {
        var perThread: [String: [String: Int]] = [:]
        for line in log.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, let paren = parts[1].firstIndex(of: "(") else { continue }
            var name = String(parts[1][..<paren]).trimmingCharacters(in: .whitespaces)
            if name.hasPrefix("<... ") { name = String(name.dropFirst(5)) }
            guard syscalls.contains(name), !parts[1].contains("resumed>") else { continue }
            perThread[String(parts[0]), default: [:]][name, default: 0] += 1
        }
        var out: [String: Int] = [:]
        for (_, calls) in perThread { for (c, n) in calls { out[c] = max(out[c] ?? 0, n) } }
        return out
    }
}

extension DeviceSnapshot {
    /// The slot a `current` symlink names, if it names one.
    static func walk(probeCurrent path: String) -> String? { try? FileManager.default.destinationOfSymbolicLink(atPath: path) }
}
