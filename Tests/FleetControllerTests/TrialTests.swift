import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import FleetController

/// `fleetctl variant trial`: a few devices of a class measure other variants through the normal
/// signed path, then go back to what selection gives them.
extension StagedRolloutTests {
    @Test func trialSendsEachVariantToItsDevicesThenReturnsThem() async throws {
        let f = try fixture(); defer { f.cleanup() }
        let clock = TestClock(f.now)
        let (app, _) = try await f.parts(clock: { clock.now })
        try await app.test(.router) { client in
            var devices = Self.fleet().filter { $0.cls == "x86-avx512-vnni" && $0.tier == "fibre" }
            let v = try await client.publish(model: "m", variants: [("m1-int8", "int8", [1, 1]), ("m1-fp32", "fp32", [1, 2])])
            let classes = try decode([HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get))
            let c = ReleaseCatalog(
                model: "m", version: "1", serial: 1, expiresAt: f.now + 86_400 * 30, variants: v, hardwareClasses: classes)
            #expect(
                try await client.json(
                    .post, "/v1/releases", NewRelease(catalog: try Envelope.sign(c, type: PayloadType.catalog, keys: [f.keys[.release]!]))
                ).status == .created)
            // A trial needs a release in force.
            let early = try await client.json(
                .post, "/v1/models/m/trials", NewTrial(hardwareClass: "x86-avx512-vnni", variants: ["m1-fp32"], devices: 2))
            #expect(errorCode(early) == "no-release-in-force")
            #expect(try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1", strategy: "all")).status == .created)
            for i in devices.indices { try await checkIn(client, &devices[i], clock: clock) }
            let int8 = Digest.sha256Hex([1, 1] as [UInt8]), fp32 = Digest.sha256Hex([1, 2] as [UInt8])
            #expect(devices.allSatisfy { $0.installed["m"] == int8 })

            let started = try await client.json(
                .post, "/v1/models/m/trials", NewTrial(hardwareClass: "x86-avx512-vnni", variants: ["m1-fp32"], devices: 2))
            #expect(started.status == .created)
            let trial = try decode(TrialInfo.self, started)
            #expect(trial.devices.count == 2 && trial.state == .running)
            #expect(
                errorCode(
                    try await client.json(
                        .post, "/v1/models/m/trials", NewTrial(hardwareClass: "x86-avx512-vnni", variants: ["nope"], devices: 2)))
                    == "unknown-variant")
            #expect(
                errorCode(
                    try await client.json(
                        .post, "/v1/models/m/trials", NewTrial(hardwareClass: "no-such-class", variants: ["m1-fp32"], devices: 2)))
                    == "no-devices")

            // The trial devices are sent fp32; the others keep int8.
            for i in devices.indices {
                let a = try await checkIn(client, &devices[i], clock: clock)
                if trial.devices.contains(devices[i].id) {
                    #expect(a?.sha256 == fp32, "\(devices[i].id)")
                    // Its benchmark of the staged model.
                    devices[i].seq += 1
                    let report = String(decoding: try FleetJSON.encode(BenchmarkReport(latencyP50Ms: 3, iterations: 10)), as: UTF8.self)
                    try await client.json(
                        .post, "/v1/devices/\(devices[i].id)/events",
                        EventBatch(events: [
                            StatusEvent(
                                seq: devices[i].seq, time: clock.now, kind: "benchmark", model: "m", sha256: fp32, release: "m@1",
                                detail: report)
                        ]))
                } else {
                    #expect(devices[i].installed["m"] == int8)
                }
            }
            // Measured: back to what selection gives them (int8), and the trial is done.
            for i in devices.indices where trial.devices.contains(devices[i].id) {
                let a = try await checkIn(client, &devices[i], clock: clock)
                #expect(a?.sha256 == int8)
            }
            let after = try decode([TrialInfo].self, try await client.execute(uri: "/v1/models/m/trials", method: .get))
            #expect(after.first?.state == .done)
            #expect(after.first?.measured.values.allSatisfy { $0 == ["m1-fp32"] } == true)
            clock.advance(11)  // the performance table is kept for 10 s
            let perf = try decode([VariantMeasurement].self, try await client.execute(uri: "/v1/models/m/perf", method: .get))
            #expect(perf.first { $0.variant == "m1-fp32" }?.devices == 2)
        }
    }
}
