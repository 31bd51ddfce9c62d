import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// A device behind a bad link: the agent runs in a network namespace of its own, joined to the
/// controller's side by a veth pair. Where the kernel has netem, `tc netem` adds loss and delay on
/// the link; the connection is also cut in the middle of every transfer. Where netem is missing,
/// a userspace fault injector in the server stands in (delay per 64 KiB and the cuts), and the test
/// says so. Downloads must resume and finish, nothing corrupt may be installed, and the bytes sent
/// must stay under 1.5 times the package.
@Suite("Network faults during a download", .serialized, .ownThread)
struct NetworkFaultTests {
    /// A network namespace and a veth pair; the host side is `hostIP`, the device side `deviceIP`.
    final class Link {
        let ns: String, hostIf: String, hostIP: String, deviceIP: String
        var netem: String?

        static func run(_ args: [String]) -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = args
            let pipe = Pipe()
            p.standardOutput = pipe
            p.standardError = pipe
            guard (try? p.run()) != nil else { return (-1, "cannot run \(args[0])") }
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, out)
        }

        init() throws {
            let tag = String(UInt32.random(in: 0..<0xFFFFFF), radix: 16)
            let net = Int.random(in: 1...250)
            ns = "ef-net-\(tag)"; hostIf = "efh\(tag)"; hostIP = "10.231.\(net).1"; deviceIP = "10.231.\(net).2"
            let deviceIf = "efd\(tag)"
            for cmd in [
                ["ip", "netns", "add", ns],
                ["ip", "link", "add", hostIf, "type", "veth", "peer", "name", deviceIf],
                ["ip", "link", "set", deviceIf, "netns", ns],
                ["ip", "addr", "add", hostIP + "/30", "dev", hostIf],
                ["ip", "link", "set", hostIf, "up"],
                ["ip", "netns", "exec", ns, "ip", "addr", "add", deviceIP + "/30", "dev", deviceIf],
                ["ip", "netns", "exec", ns, "ip", "link", "set", deviceIf, "up"],
                ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]
            ] {
                let (rc, out) = Self.run(cmd)
                if rc != 0 { remove(); throw HarnessError("\(cmd.joined(separator: " ")): \(out)") }
            }
            // Loss and delay both ways, where the kernel has netem.
            let spec = ["loss", "3%", "delay", "20ms", "5ms"]
            let a = Self.run(["tc", "qdisc", "add", "dev", hostIf, "root", "netem"] + spec)
            let b = Self.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", deviceIf, "root", "netem"] + spec)
            netem = a.0 == 0 && b.0 == 0 ? spec.joined(separator: " ") : nil
            if netem == nil {
                print("netem unavailable (\(a.1.trimmingCharacters(in: .whitespacesAndNewlines))): the userspace fault injector stands in")
            }
        }

        func remove() {
            _ = Self.run(["ip", "netns", "del", ns])
            _ = Self.run(["ip", "link", "del", hostIf])
        }

        static func unavailable() -> String? {
            let probe = "ef-probe-\(getpid())"
            let (rc, out) = run(["ip", "netns", "add", probe])
            if rc != 0 { return "cannot create a network namespace: \(out)" }
            _ = run(["ip", "netns", "del", probe])
            return nil
        }
    }

    @Test func cutsLossAndDelayMidTransferResumeAndInstallTheSignedBytes() throws {
        if let why = Link.unavailable() {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("network namespaces expected in CI: \(why)") }
            print("SKIPPED cutsLossAndDelayMidTransferResumeAndInstallTheSignedBytes: \(why)")
            return
        }
        let link = try Link(); defer { link.remove() }
        let s = try AttackScene("v1", listen: link.hostIP); defer { s.cleanup() }
        let w = s.world
        let size = Int((try FileManager.default.attributesOfItem(atPath: w.v2)[.size] as? Int) ?? 0)
        try s.serve(w.r2full)
        try s.putArtifact(w.v2Sha, file: w.v2)
        // Every connection is cut after a third of the package; without netem, 2 ms per 64 KiB of delay.
        let faults: [String: Any] = ["cut_every": size / 3 + 1000, "delay_ms": link.netem == nil ? 2 : 0]
        try JSONSerialization.data(withJSONObject: faults).write(to: URL(fileURLWithPath: s.scenario + "/artifacts.faults"))

        var cycles = 0
        try s.fleet.waitFor("the new model through the bad link", timeout: 300) {
            cycles += 1
            let r = try s.fleet.run(
                "/usr/bin/env",
                ["ip", "netns", "exec", link.ns, TestFleet.bin + "/fleet-agent"]
                    + s.fleet.agentArgs(s.agent, controller: s.url, extra: ["--once"]))
            #expect(r.status == 0 || r.stderr.contains("cycle failed"), "\(r.stderr)")
            let cur = s.fleet.current(s.agent, model: "m")
            // Never anything but the old or the new model, whole.
            #expect((cur.link == w.v1Sha || cur.link == w.v2Sha) && cur.contentSha == cur.link)
            return cur.link == w.v2Sha || cycles >= 8
        }
        #expect(s.fleet.current(s.agent, model: "m").contentSha == w.v2Sha)
        let downloads = s.artifactRequests
        let sent = downloads.compactMap { $0["sent"] as? Int }.reduce(0, +)
        #expect(downloads.count >= 3, "the transfer was never cut: \(downloads)")
        #expect(
            downloads.dropFirst().allSatisfy { ($0["range"] as? String)?.hasPrefix("bytes=") == true }, "a retry started over: \(downloads)"
        )
        print(
            "network faults (\(link.netem.map { "netem " + $0 } ?? "userspace cuts and delay, no netem")): \(downloads.count) connections, \(sent) bytes sent for a \(size)-byte package (\(String(format: "%.3f", Double(sent) / Double(size)))x), \(cycles) agent cycle(s)"
        )
        #expect(Double(sent) < 1.5 * Double(size), "sent \(sent) bytes for a \(size)-byte package")
    }
}
