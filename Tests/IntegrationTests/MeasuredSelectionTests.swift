import FleetCore
import Foundation
import Testing
import TestSupport

/// Selection by the fleet's measurements, through real agents whose benchmark commands report
/// different latencies per variant on two hardware classes.
@Suite("Selection by measurement with real agents", .serialized, .ownThread)
struct MeasuredSelectionTests {
    struct Shown: Decodable { var selection: Selection }

    @Test func eachClassMovesToItsFastestVariantAndNeverToOneSlowerThanFP32() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        try fleet.startController(extra: ["--measured-devices", "2"])
        let fp32 = try fleet.makeFile("m-fp32.safetensors", size: 300_000, seed: 100)
        let int8 = try fleet.makeFile("m-int8.safetensors", size: 100_000, seed: 101)
        try fleet.publish(model: "m", version: "1", variants: [("m-fp32", "fp32", fp32)])
        _ = try fleet.fleetctl(["variant", "add", "m", int8, "--name", "m-int8", "--dtype", "int8", "--format", "safetensors"])
        _ = try fleet.fleetctl(["release", "create", "m", "--version", "2", "--keys", fleet.dir + "/keys", "--variants", "m-fp32,m-int8"])

        // int8 is fast on the VNNI class and slow on this ARM class; fp32 takes 3 ms on both.
        func bench(int8Ms: Double) -> String {
            "case \"$EDGEFLEET_MODEL_SHA256\" in \(fleet.sha(int8))) echo '{\"latencyP50Ms\": \(int8Ms), \"latencyP95Ms\": \(int8Ms * 1.5), \"iterations\": 100}';; "
                + "*) echo '{\"latencyP50Ms\": 3.0, \"latencyP95Ms\": 4.5, \"iterations\": 100}';; esac"
        }
        // Each ARM board has an energy counter (microjoules) that a benchmark run advances by 50 J.
        func armBench(_ counter: String) throws -> String {
            try "1000000\n".write(toFile: counter, atomically: true, encoding: .utf8)
            return "echo $(( $(cat \(counter)) + 50000000 )) > \(counter); " + bench(int8Ms: 6.0)
        }
        var agents: [(TestFleet.Agent, String)] = []
        for i in 0..<2 {
            agents.append((fleet.agent("vnni-\(i)", facts: TestFleet.demoFacts("edge-x86-vnni-01.json")), "vnni"))
            agents.append((fleet.agent("arm-\(i)", facts: TestFleet.demoFacts("edge-arm64-01.json")), "arm"))
        }
        for (a, kind) in agents {
            let counter = fleet.dir + "/\(a.name).energy_uj"
            let extra =
                ["--device-id", a.name, "--benchmark-command", kind == "vnni" ? bench(int8Ms: 1.5) : try armBench(counter)]
                + (kind == "arm" ? ["--energy-counter", counter] : [])
            _ = try fleet.start("fleet-agent", fleet.agentArgs(a, extra: extra), log: fleet.dir + "/\(a.name).log")
        }
        try fleet.waitFor("every device on fp32", timeout: 60) {
            agents.allSatisfy { fleet.current($0.0, model: "m").contentSha == fleet.sha(fp32) }
        }

        // m@2 offers int8 too: the class prior (int8 first) sends it everywhere; the benchmarks
        // measure it; the ARM boards, where it is slower than fp32, go back to fp32.
        _ = try fleet.fleetctl(["rollout", "start", "m@2", "--all"])
        try fleet.waitFor("VNNI on int8 and ARM back on fp32 after measuring int8", timeout: 90) {
            let measuredOnArm =
                try fleet.events("arm-0").contains { $0.kind == "benchmark" && $0.sha256 == fleet.sha(int8) }
                && (try fleet.events("arm-1").contains { $0.kind == "benchmark" && $0.sha256 == fleet.sha(int8) })
            return measuredOnArm
                && agents.allSatisfy { a, kind in
                    fleet.current(a, model: "m").contentSha == fleet.sha(kind == "vnni" ? int8 : fp32)
                }
        }
        // Explain cites the figures.
        let arm = try #require(try fleet.fleetctlJSON([Shown].self, ["devices", "explain", "arm-0"]).first?.selection)
        #expect(arm.chosen == "m-fp32")
        let refused = try #require(arm.verdicts.first { $0.variant == "m-int8" })
        #expect(!refused.eligible)
        #expect(refused.reason.contains("measured slower than fp32 on arm64-dotprod: m-int8 p50 6 ms"), "\(refused.reason)")
        #expect(refused.reason.contains("on 2 devices of arm64-dotprod"), "\(refused.reason)")
        let vnni = try #require(try fleet.fleetctlJSON([Shown].self, ["devices", "explain", "vnni-0"]).first?.selection)
        #expect(vnni.chosen == "m-int8")
        #expect(vnni.verdicts.first { $0.chosen }?.reason.hasPrefix("chosen by measurement:") == true)
        #expect(vnni.verdicts.first { $0.chosen }?.reason.contains("m-int8 p50 1.5 ms") == true)

        // The performance table, with energy where the device has a counter.
        let table = try fleet.fleetctlJSON([VariantMeasurement].self, ["variant", "perf", "m"])
        let armInt8 = try #require(table.first { $0.hardwareClass == "arm64-dotprod" && $0.variant == "m-int8" })
        #expect(armInt8.devices == 2 && armInt8.latencyP50Ms == 6)
        #expect(armInt8.joulesPerInference == 0.5 && armInt8.energyDevices == 2)
        let vnniInt8 = try #require(table.first { $0.hardwareClass == "x86-avx512-vnni" && $0.variant == "m-int8" })
        #expect(vnniInt8.joulesPerInference == nil)

        // Never back to int8 on ARM: each ARM board activated int8 once (its measurement), no more.
        let seen = Dictionary(
            uniqueKeysWithValues: try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).map { ($0.id, $0.lastSeen) })
        try fleet.waitFor("three more check-ins from every agent", timeout: 30) {
            try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).allSatisfy { $0.lastSeen >= (seen[$0.id] ?? 0) + 3 }
        }
        for (a, kind) in agents where kind == "arm" {
            let int8Activations = try fleet.events(a.name).filter { $0.kind == "activated" && $0.sha256 == fleet.sha(int8) }.count
            #expect(int8Activations == 1, "\(a.name) activated int8 \(int8Activations) times")
            #expect(fleet.current(a, model: "m").contentSha == fleet.sha(fp32))
        }
    }
}
