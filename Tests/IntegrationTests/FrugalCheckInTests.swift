import FleetCore
import Foundation
import Testing
import TestSupport

/// Frugal check-ins between the real binaries, measured on the wire by the loopback proxy
/// (Support/proxy.py --log-bodies: body bytes both ways and the top-level keys of each body).
@Suite("Frugal check-ins against the real binaries", .serialized, .ownThread)
struct FrugalCheckInTests {
    static let budget = 600

    /// The check-in exchanges the proxy saw.
    func checkIns(_ fleet: TestFleet, _ log: String) -> [[String: Any]] {
        fleet.proxyLog(log).filter { ($0["path"] as? String)?.hasSuffix("/checkin") == true && $0["request_bytes"] != nil }
    }

    func bytes(_ e: [String: Any]) -> (Int, Int) { ((e["request_bytes"] as? Int) ?? -1, (e["response_bytes"] as? Int) ?? -1) }

    func keys(_ e: [String: Any], _ side: String) -> [String] { (e[side + "_keys"] as? [String]) ?? [] }

    /// A controller with one model of `variants` variants, and a device that installed it.
    func installedFleet(variants: Int) throws -> (TestFleet, TestFleet.Agent, String) {
        let fleet = try TestFleet()
        try fleet.startController()
        let dtypes = ["int8", "fp16", "fp32", "int4", "int8", "fp16"]
        var vs: [(String, String, String)] = []
        for i in 0..<variants {
            vs.append(
                (
                    "m-v\(i)", dtypes[i % dtypes.count],
                    try fleet.makeFile("v\(i).safetensors", size: 200_000 + i * 1000, seed: UInt64(40 + i))
                ))
        }
        try fleet.publish(model: "m", version: "1", variants: vs)
        let a = fleet.agent("edge-x86-vnni-01", facts: TestFleet.demoFacts("edge-x86-vnni-01.json"))
        let r = try fleet.runOnce(a)
        #expect(r.status == 0, "\(r.stderr)")
        let sha = try #require(fleet.current(a, model: "m").contentSha)
        // The check-in after an install says what is installed now; from then on the device is idle.
        let reported = try fleet.runOnce(a)
        #expect(reported.status == 0, "\(reported.stderr)")
        return (fleet, a, sha)
    }

    @Test func idleCheckInStaysUnder600BytesBothWays() throws {
        let (fleet, a, sha) = try installedFleet(variants: 5)
        defer { fleet.cleanup() }
        let proxy = try fleet.startProxy(["--log-bodies"])
        let via = "http://127.0.0.1:\(proxy.port)"

        // Before: the request of agents without frugal check-ins, and its answer.
        var facts = try FleetJSON.decode(DeviceFacts.self, from: Data(contentsOf: URL(fileURLWithPath: a.facts)), limit: 1 << 20)
        facts.deviceId = "edge-x86-vnni-01"
        let old = CheckInRequest(facts: facts, installed: ["m": sha], agentVersion: "0.1.0")
        let body = fleet.dir + "/old-checkin.json"
        try FleetJSON.encode(old).write(to: URL(fileURLWithPath: body))
        let c = try fleet.run(
            "/usr/bin/env",
            [
                "curl", "-fsS", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + body,
                "\(via)/v1/devices/edge-x86-vnni-01/checkin"
            ])
        #expect(c.status == 0, "\(c.stderr)")
        let before = try #require(checkIns(fleet, proxy.log).last)

        // After: the real agent, idle, twice.
        for _ in 0..<2 {
            let r = try fleet.runOnce(a, controller: via)
            #expect(r.status == 0, "\(r.stderr)")
        }
        let idle = Array(checkIns(fleet, proxy.log).dropFirst())
        #expect(idle.count == 2, "one check-in per idle cycle: \(idle)")
        let (oldReq, oldResp) = bytes(before)
        for e in idle {
            let (req, resp) = bytes(e)
            print(
                "idle check-in, 5 variants: before \(oldReq) + \(oldResp) = \(oldReq + oldResp) bytes; after \(req) + \(resp) = \(req + resp) bytes (request + answer)"
            )
            #expect(req + resp <= Self.budget, "\(e)")
            #expect(keys(e, "response") == ["pollSeconds", "stamp", "unchanged"], "\(e)")
            #expect(!keys(e, "request").contains("facts") && !keys(e, "request").contains("installed"), "\(e)")
        }
        #expect(!fleet.proxyLog(proxy.log).contains { ($0["path"] as? String)?.hasPrefix("/v1/artifacts/") == true })
        #expect(fleet.current(a, model: "m").contentSha == sha)
        let events = try fleet.events("edge-x86-vnni-01")
        #expect(!events.contains { $0.kind == "rejected" }, "\(events)")
    }

    @Test func idleCheckInSizeDoesNotGrowWithTheCatalog() throws {
        var sizes: [Int] = []
        for variants in [1, 6] {
            let (fleet, a, _) = try installedFleet(variants: variants)
            defer { fleet.cleanup() }
            let proxy = try fleet.startProxy(["--log-bodies"])
            let r = try fleet.runOnce(a, controller: "http://127.0.0.1:\(proxy.port)")
            #expect(r.status == 0, "\(r.stderr)")
            let e = try #require(checkIns(fleet, proxy.log).last)
            let (req, resp) = bytes(e)
            print("idle check-in, \(variants) variant(s): \(req) + \(resp) = \(req + resp) bytes")
            sizes.append(req + resp)
        }
        // Only the digits of counters and times may differ.
        #expect(abs(sizes[0] - sizes[1]) <= 4, "\(sizes)")
        #expect(sizes.allSatisfy { $0 <= Self.budget })
    }

    @Test func factsTheControllerDoesNotHoldAreSentAgainInTheSameCycle() throws {
        let (fleet, a, sha) = try installedFleet(variants: 4)
        defer { fleet.cleanup() }
        // Someone checks in as this device with the facts of an arm64 board: the stored facts change.
        var arm = try FleetJSON.decode(
            DeviceFacts.self, from: Data(contentsOf: URL(fileURLWithPath: TestFleet.demoFacts("edge-arm64-01.json"))),
            limit: 1 << 20)
        arm.deviceId = "edge-x86-vnni-01"
        let body = fleet.dir + "/arm-checkin.json"
        try FleetJSON.encode(CheckInRequest(facts: arm, installed: ["m": sha], agentVersion: "0.1.0")).write(to: URL(fileURLWithPath: body))
        let c = try fleet.run(
            "/usr/bin/env",
            [
                "curl", "-fsS", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + body,
                "\(fleet.url)/v1/devices/edge-x86-vnni-01/checkin"
            ])
        #expect(c.status == 0, "\(c.stderr)")

        let proxy = try fleet.startProxy(["--log-bodies"])
        let r = try fleet.runOnce(a, controller: "http://127.0.0.1:\(proxy.port)")
        #expect(r.status == 0, "\(r.stderr)")
        let exchanges = checkIns(fleet, proxy.log)
        #expect(exchanges.count == 2, "\(exchanges)")
        // The digest did not match: a typed signal, then the whole check-in in the same cycle.
        #expect(keys(exchanges[0], "request").contains("factsDigest") && keys(exchanges[0], "response") == ["pollSeconds", "resend"])
        #expect(keys(exchanges[1], "request").contains("facts") && keys(exchanges[1], "request").contains("installed"))
        #expect(!keys(exchanges[1], "response").contains("resend"))
        let device = try #require(try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).first { $0.id == "edge-x86-vnni-01" })
        #expect(device.hardwareClass == "x86-avx512-vnni")
        #expect(device.facts.arch == "x86_64")
        #expect(fleet.current(a, model: "m").contentSha == sha)

        // And the next cycle is idle again.
        let again = try fleet.runOnce(a, controller: "http://127.0.0.1:\(proxy.port)")
        #expect(again.status == 0, "\(again.stderr)")
        let last = try #require(checkIns(fleet, proxy.log).last)
        #expect(checkIns(fleet, proxy.log).count == 3)
        #expect(keys(last, "response") == ["pollSeconds", "stamp", "unchanged"] || keys(last, "response").contains("reassigned"), "\(last)")
        #expect(!keys(last, "request").contains("facts"))
    }
}
