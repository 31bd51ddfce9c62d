import FleetCore
import Foundation
import Testing
import TestSupport

/// fleet-sim against a real controller: simulated devices register by checking in, install the
/// released model and report it as agents do, and then check in idle.
@Suite("fleet-sim against a real controller", .serialized, .ownThread)
struct FleetSimTests {
    /// The parts of fleet-sim's --json summary the test reads.
    struct Summary: Decodable {
        struct Bytes: Decodable { var checkIns: Int; var requestBody: Double; var responseBody: Double }
        struct Latency: Decodable { var p50: Double; var p99: Double }
        var scheduled: Int
        var ok: Int
        var errors: [String: Int]
        var installsStarted: Int
        var installsReported: Int
        var latencyMs: Latency
        var bytesPerIdleCheckIn: Bytes
    }

    @Test func simulatedDevicesRegisterInstallReportAndThenCheckInIdle() throws {
        let fleet = try TestFleet()
        defer { fleet.cleanup() }
        let sim = TestFleet.bin + "/fleet-sim"
        guard FileManager.default.isExecutableFile(atPath: sim) else { throw HarnessError("\(sim) is missing: run `swift build` first") }
        try fleet.startController()
        let v1 = try fleet.makeFile("m-v1.safetensors", size: 20_000, seed: 5)
        let int4 = try fleet.makeFile("m-v1-int4.safetensors", size: 12_000, seed: 6)
        try fleet.publish(
            model: "m", version: "1",
            variants: [
                ("m-v1", "int8", v1), ("m-v1-fp32", "fp32", try fleet.makeFile("f.safetensors", size: 30_000, seed: 7)),
                ("m-v1-int4", "int4", int4)
            ])
        let state = fleet.dir + "/sim-state.json"
        func play(_ extra: [String]) throws -> Summary {
            let r = try fleet.run(
                sim,
                [
                    "--url", fleet.url, "--devices", "40", "--id-prefix", "t-", "--state", state, "--json",
                    "--connections", "4"
                ] + extra, timeout: 120)
            guard r.status == 0 else { throw HarnessError("fleet-sim failed: \(r.stderr)") }
            return try JSONDecoder().decode(Summary.self, from: Data(r.stdout.utf8))
        }

        // 40 slots over 40 devices: each device checks in once, is assigned the release, installs it.
        let first = try play(["--rate", "20", "--duration", "2"])
        #expect(first.errors.isEmpty, "\(first.errors)")
        #expect(first.scheduled == 40 && first.ok == 40)
        #expect(first.installsStarted == 40 && first.installsReported == 40)
        let events = try fleet.events("t-0000007")
        #expect(events.map(\.kind) == ["started", "downloaded", "verified", "activated", "committed"])
        #expect(events.map(\.seq) == [1, 2, 3, 4, 5])
        // The controller classes each device as the simulator drew it.
        let devices = try fleet.fleetctlJSON([DeviceInfo].self, ["devices", "list"]).filter { $0.id.hasPrefix("t-") }
        #expect(devices.count == 40)
        for d in devices {
            let i = try #require(SimulatedDevice.index(of: d.id, prefix: "t-"))
            #expect(
                d.hardwareClass == SimulatedDevice.profile(index: i).rawValue && d.tier == SimulatedDevice.link(index: i).rawValue,
                "\(d.id)")
        }

        // A second process plays the same fleet (--state), going on through the schedule where the
        // first stopped: nothing new to install, every check-in idle.
        let second = try play(["--rate", "20", "--duration", "2"])
        #expect(second.errors.isEmpty, "\(second.errors)")
        #expect(second.ok == 40 && second.installsStarted == 0)
        #expect(second.bytesPerIdleCheckIn.checkIns == 40)
        #expect(second.bytesPerIdleCheckIn.requestBody > 0 && second.bytesPerIdleCheckIn.responseBody > 0)
        // The frugal exchange: an idle check-in's two bodies together stay within 600 bytes.
        #expect(
            second.bytesPerIdleCheckIn.requestBody + second.bytesPerIdleCheckIn.responseBody <= 600,
            "idle check-in: request \(second.bytesPerIdleCheckIn.requestBody) B + answer \(second.bytesPerIdleCheckIn.responseBody) B")
        print(
            "fleet-sim idle check-in: request body \(second.bytesPerIdleCheckIn.requestBody) B, answer body \(second.bytesPerIdleCheckIn.responseBody) B"
        )
        #expect(try fleet.events("t-0000007").count == 5)
    }
}
