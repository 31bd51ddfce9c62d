import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// The Debian packages of `make package`: what they hold, what their maintainer scripts do in a
/// root of their own, their units as systemd reads them, and the agent started from the packaged
/// unit and configuration against a real controller.
@Suite("Debian packages", .ownThread)
struct PackageTests {
    @Test func agentPackageHoldsTheAgentItsUnitAndConfig() throws {
        let deb = try ShippedPackages.get().agent
        #expect(try ShippedPackages.field(deb, "Package") == "edgefleet-agent")
        let depends = try ShippedPackages.field(deb, "Depends")
        #expect(depends.contains("libcurl4") && depends.contains("libzstd1") && depends.contains("libc6"))
        let files = try ShippedPackages.listing(deb)
        #expect(files["/usr/bin/fleet-agent"]?.mode == "-rwxr-xr-x")
        #expect(files["/lib/systemd/system/edgefleet-agent.service"]?.mode == "-rw-r--r--")
        #expect(files["/etc/edgefleet/agent.yaml"]?.mode == "-rw-r-----")
        #expect(files.values.allSatisfy { $0.owner == "root/root" })
        #expect(try ShippedPackages.controlFile(deb, "conffiles").split(separator: "\n") == ["/etc/edgefleet/agent.yaml"])
        for script in ["postinst", "prerm", "postrm"] {
            #expect(try ShippedPackages.controlFile(deb, script).hasPrefix("#!/bin/sh"))
        }
    }

    @Test func controllerPackageHoldsControllerFleetctlUnitConfigAndNginxTemplate() throws {
        let deb = try ShippedPackages.get().controller
        #expect(try ShippedPackages.field(deb, "Package") == "edgefleet-controller")
        let files = try ShippedPackages.listing(deb)
        for bin in ["/usr/bin/fleet-controller", "/usr/bin/fleetctl"] { #expect(files[bin]?.mode == "-rwxr-xr-x", "\(bin)") }
        #expect(files["/lib/systemd/system/edgefleet-controller.service"]?.mode == "-rw-r--r--")
        #expect(files["/etc/edgefleet/controller.yaml"]?.mode == "-rw-r-----")
        #expect(
            files["/usr/share/edgefleet/nginx/edgefleet.conf"] != nil && files["/usr/share/edgefleet/nginx/render.sh"]?.mode == "-rwxr-xr-x"
        )
        let conffiles = Set(try ShippedPackages.controlFile(deb, "conffiles").split(separator: "\n").map(String.init))
        #expect(
            conffiles.isSuperset(of: [
                "/etc/edgefleet/controller.yaml", "/etc/edgefleet/fleet/hardware-classes.yaml",
                "/etc/edgefleet/fleet/bandwidth-tiers.yaml"
            ]))
        #expect(conffiles.allSatisfy { $0.hasPrefix("/etc/") })
    }

    @Test(arguments: ["agent", "controller"])
    func unitIsHardenedAndSpeaksNotify(which: String) throws {
        let built = try ShippedPackages.get()
        let root = built.dir + "/unit-" + which
        try ShippedPackages.extract(which == "agent" ? built.agent : built.controller, into: root)
        let unit = try ShippedPackages.unit("\(root)/lib/systemd/system/edgefleet-\(which).service")
        let service = unit["Service"] ?? [:]
        func one(_ key: String) -> String? { service[key]?.last }
        #expect(one("Type") == "notify")
        #expect(one("NotifyAccess") == "main")
        #expect(Int(one("WatchdogSec") ?? "") ?? 0 > 0)
        #expect(one("Restart") == "on-failure")
        for (key, value) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes")] {
            #expect(one(key) == value, "\(key)")
        }
        // An empty capability set: the key is there and empty.
        #expect(service["CapabilityBoundingSet"] == [""])
        #expect(one("User") == (which == "agent" ? "edgefleet" : "edgefleet-controller"))
        let writable = Set((service["ReadWritePaths"] ?? []).flatMap { $0.split(separator: " ").map(String.init) })
        if which == "agent" {
            #expect(writable == ["/var/lib/edgefleet/state", "/var/lib/edgefleet/models"])
            #expect(one("ExecStart") == "/usr/bin/fleet-agent run --config-file /etc/edgefleet/agent.yaml")
        } else {
            #expect(writable == ["/var/lib/edgefleet-controller"])
            #expect(one("ExecStart") == "/usr/bin/fleet-controller serve --config-file /etc/edgefleet/controller.yaml")
        }
    }

    /// `systemd-analyze verify` reads the unit as systemd would (unknown keys, bad values, a missing
    /// ExecStart binary), in the package's own root: no systemd needs to run.
    @Test(arguments: ["agent", "controller"])
    func unitPassesSystemdAnalyze(which: String) throws {
        guard ShippedPackages.require("systemd-analyze", why: "verifies the packaged units") else { return }
        let built = try ShippedPackages.get()
        let root = built.dir + "/verify-" + which
        try ShippedPackages.extract(which == "agent" ? built.agent : built.controller, into: root)
        // The targets the unit names (multi-user.target, network-online.target, …) from the system.
        let units = root + "/lib/systemd/system"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/lib/systemd/system")) ?? [] where name.hasSuffix(".target") {
            try? FileManager.default.copyItem(atPath: "/lib/systemd/system/" + name, toPath: units + "/" + name)
        }
        let name = "edgefleet-\(which).service"
        let verify = try ShippedPackages.runTool("/usr/bin/env", ["systemd-analyze", "verify", "--root=" + root, name])
        #expect(verify.status == 0 && verify.stderr.isEmpty, "\(verify.stderr)\(verify.stdout)")
        // And an unknown key is caught: the check can fail.
        let broken = root + "/lib/systemd/system/broken.service"
        try (try String(contentsOfFile: units + "/" + name, encoding: .utf8)).replacingOccurrences(
            of: "WatchdogSec=", with: "WatchdogSecs="
        )
        .write(toFile: broken, atomically: true, encoding: .utf8)
        let bad = try ShippedPackages.runTool("/usr/bin/env", ["systemd-analyze", "verify", "--root=" + root, "broken.service"])
        #expect(bad.stderr.contains("WatchdogSecs"))
        // The exposure systemd computes from the hardening settings.
        let security = try ShippedPackages.runTool("/usr/bin/env", ["systemd-analyze", "security", "--offline=yes", units + "/" + name])
        let exposure = security.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") }
            .flatMap { $0.split(separator: ":").last?.split(separator: " ").first }.flatMap { Double($0) }
        #expect(exposure != nil && exposure! <= 3.0, "\(security.stdout)\(security.stderr)")
    }

    /// postinst makes the system user and the directories, purge takes them away, in a root of
    /// its own (`dpkg --root --force-script-chrootless`: the scripts honour $DPKG_ROOT).
    @Test func maintainerScriptsMakeTheUserAndDirectoriesAndPurgeRemovesThem() throws {
        guard getuid() == 0 else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("the package install test needs root in CI") }
            return
        }
        let built = try ShippedPackages.get()
        let root = built.dir + "/dpkg-root-" + UUID().uuidString.prefix(6)
        let fm = FileManager.default
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"] {
            try fm.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true)
        }
        fm.createFile(atPath: root + "/var/lib/dpkg/status", contents: nil)
        for f in ["passwd", "group", "shadow", "gshadow"] { try fm.copyItem(atPath: "/etc/" + f, toPath: root + "/etc/" + f) }
        let hostPasswd = try String(contentsOfFile: "/etc/passwd", encoding: .utf8)
        func dpkg(_ args: [String]) throws {
            let r = try ShippedPackages.runTool(
                "/usr/bin/env",
                [
                    "dpkg", "--root=" + root, "--force-script-chrootless", "--force-depends",
                    "--log=/dev/null"
                ] + args)
            #expect(r.status == 0, "dpkg \(args): \(r.stderr)")
        }
        func entry(_ file: String, _ name: String) -> [String]? {
            ((try? String(contentsOfFile: root + "/etc/" + file, encoding: .utf8)) ?? "").split(separator: "\n")
                .map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) }.first { $0.first == name }
        }
        func owner(_ path: String) -> (uid: Int, gid: Int, mode: Int)? {
            guard let a = try? fm.attributesOfItem(atPath: root + path) else { return nil }
            return (
                (a[.ownerAccountID] as? NSNumber)?.intValue ?? -1, (a[.groupOwnerAccountID] as? NSNumber)?.intValue ?? -1,
                (a[.posixPermissions] as? NSNumber)?.intValue ?? -1
            )
        }

        try dpkg(["-i", built.agent, built.controller])
        for (user, home, dirs) in [
            ("edgefleet", "/var/lib/edgefleet", ["/var/lib/edgefleet", "/var/lib/edgefleet/state", "/var/lib/edgefleet/models"]),
            ("edgefleet-controller", "/var/lib/edgefleet-controller", ["/var/lib/edgefleet-controller"])
        ] {
            let pw = try #require(entry("passwd", user), "postinst made no user \(user)")
            let uid = Int(pw[2]) ?? -1, gid = Int(pw[3]) ?? -1
            #expect(uid > 0 && uid < 1000, "a system user")
            #expect(pw[5] == home && pw[6] == "/usr/sbin/nologin")
            #expect(entry("group", user)?[2] == String(gid))
            for d in dirs {
                let o = owner(d)
                #expect(o?.uid == uid && o?.gid == gid && o?.mode == 0o750, "\(d): \(String(describing: o))")
            }
        }
        let agentGid = Int(entry("group", "edgefleet")?[2] ?? "") ?? -2
        #expect(owner("/etc/edgefleet/agent.yaml").map { $0.uid == 0 && $0.gid == agentGid && $0.mode == 0o640 } == true)
        // Installing again (an upgrade to the same version) keeps one user.
        try dpkg(["-i", built.agent])
        #expect((try String(contentsOfFile: root + "/etc/passwd", encoding: .utf8)).components(separatedBy: "\nedgefleet:").count == 2)

        try dpkg(["--purge", "edgefleet-agent", "edgefleet-controller"])
        #expect(entry("passwd", "edgefleet") == nil && entry("group", "edgefleet") == nil && entry("passwd", "edgefleet-controller") == nil)
        for gone in ["/var/lib/edgefleet", "/var/lib/edgefleet-controller", "/etc/edgefleet/agent.yaml", "/usr/bin/fleet-agent"] {
            #expect(!fm.fileExists(atPath: root + gone), "\(gone) is still there after purge")
        }
        // The machine's own users were never touched.
        #expect(try String(contentsOfFile: "/etc/passwd", encoding: .utf8) == hostPasswd)
    }

    /// The binary as it ships: small, stripped, and without Foundation's ICU data.
    @Test func packagedAgentIsSmallAndCarriesNoFoundationOrICU() throws {
        let built = try ShippedPackages.get()
        let root = built.dir + "/footprint"
        try ShippedPackages.extract(built.agent, into: root)
        let bin = root + "/usr/bin/fleet-agent"
        let size = ((try FileManager.default.attributesOfItem(atPath: bin))[.size] as? NSNumber)?.int64Value ?? 0
        print("footprint: packaged fleet-agent is \(size) bytes (\(String(format: "%.1f", Double(size) / 1e6)) MB)")
        #expect(size > 1_000_000 && size <= 25_000_000, "\(size) bytes")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: bin))
        for marker in ["icudt", "FoundationInternationalization", "_FoundationICU", "libFoundation.so"] {
            #expect(bytes.range(of: Data(marker.utf8)) == nil, "\(marker) is in the agent binary")
        }
        guard ShippedPackages.require("readelf", why: "reads the agent's sections and libraries") else { return }
        let dynamic = try ShippedPackages.runTool("/usr/bin/env", ["readelf", "-d", bin]).stdout
        #expect(!dynamic.contains("libswiftCore") && !dynamic.contains("Foundation"), "\(dynamic)")
        let sections = try ShippedPackages.runTool("/usr/bin/env", ["readelf", "-S", bin]).stdout
        #expect(!sections.contains(".symtab"), "not stripped")
    }
}
