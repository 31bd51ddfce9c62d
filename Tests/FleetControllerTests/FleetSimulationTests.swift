import Dispatch
import FleetAgent
import FleetClient
import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
@testable import FleetController

/// 54 devices running the real agent code in-process (3 hardware classes × 2 tiers × 9), each
/// with its own state and models folders, injected facts, its local metrics endpoint, and a fake
/// inference service that reports latency through that endpoint. The controller listens on a
/// loopback port; its clock is manual and gates are evaluated by explicit ticks.
@Suite("A simulated fleet of real agents", .serialized)
struct FleetSimulationTests {
    static let perCell = 9
    static let armClass = "arm64-dotprod"
    static let slowClass = "x86-avx2"

    static let policy = """
        name: sim-canary
        phases:
          - { percent: 10, min_devices: 2, bake: 600 }
          - { percent: 50, min_devices: 1, bake: 600 }
          - { percent: 100 }
        gates:
          min_sample: 2
          max_install_failure_rate: 0.2
          max_health_failure_rate: 0.2
          max_latency_p50_ratio: 1.5
          max_crashes: 0
        on_failure: pause
        device_timeout: 2h
        """

    /// One device: the agent, its metrics endpoint and the inference service in front of it.
    final class SimDevice: @unchecked Sendable {
        let id: String, cls: String, tier: String
        let agent: Agent
        let endpoint: MetricsEndpoint
        let modelsDir: String
        let http = HTTPClient()

        init(id: String, cls: String, tier: String, facts: DeviceFacts, dir: String, controller: String, root: String) throws {
            self.id = id; self.cls = cls; self.tier = tier
            modelsDir = dir + "/models"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            var f = facts
            f.deviceId = id
            try FleetJSON.encode(f).write(to: URL(fileURLWithPath: dir + "/facts.json"))
            // The new model crashes on this kind of board: its health check fails there only.
            let health = cls == FleetSimulationTests.armClass ? "! grep -q CRASHES-ON-ARM \"$EDGEFLEET_MODEL_PATH\"" : nil
            let options = AgentOptions(
                controllerURL: controller, stateDirectory: dir + "/state", modelsDirectory: modelsDir,
                factsFile: dir + "/facts.json", rootFile: root, deviceId: id, healthCommand: health,
                healthTimeoutSeconds: 20)
            var logger = Logger(label: "agent.\(id)")
            logger.logLevel = .error
            agent = try Agent(options: options, logger: logger)
            endpoint = try agent.startMetricsEndpoint(.tcp(host: "127.0.0.1", port: 0))
        }

        /// What the device runs now, read through the `current` link as an inference service would.
        func runningModel() -> String? {
            guard let files = try? FileManager.default.contentsOfDirectory(atPath: modelsDir + "/m/current"), let file = files.first,
                let data = FileManager.default.contents(atPath: modelsDir + "/m/current/" + file)
            else { return nil }
            return String(decoding: data, as: UTF8.self)
        }

        var runningSha: String? {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: modelsDir + "/m/current"))
        }

        /// The inference service's report for the requests it served since the last one.
        func reportInference() throws {
            guard let model = runningModel() else { return }
            let slow = model.contains("SLOW-ON-AVX2") && cls == FleetSimulationTests.slowClass
            let latency = slow ? 20.0 : 10.0
            guard case .tcp(_, let port) = endpoint.address else { return }
            struct Accepted: Decodable { var accepted: Int }
            let r = try http.json(
                "POST", "http://127.0.0.1:\(port)/v1/metrics",
                body: InferenceReport(model: "m", latenciesMs: Array(repeating: latency, count: 20), errors: 0),
                as: Accepted.self)
            #expect(r.accepted == 1)
        }
    }

    static func fleet(dir: String, controller: String, root: String) throws -> [SimDevice] {
        var out: [SimDevice] = []
        for (cls, facts) in StagedRolloutTests.classes {
            for (tier, mbps) in StagedRolloutTests.tiers {
                for i in 0..<perCell {
                    var f = facts
                    f.downlinkMbps = mbps
                    f.metered = false
                    let id = "\(cls)-\(tier)-\(i)"
                    out.append(
                        try SimDevice(
                            id: id, cls: cls, tier: tier, facts: f, dir: "\(dir)/devices/\(id)", controller: controller, root: root))
                }
            }
        }
        return out
    }

    /// Every device: the inference service reports, then the agent runs one cycle (check in,
    /// install what is assigned, send events). Agents block, so they run off the test's executor.
    static func round(_ devices: [SimDevice]) async throws {
        let failures: [String] = await withCheckedContinuation { c in
            DispatchQueue.global().async {
                var failed: [String] = []
                for d in devices {
                    do { try d.reportInference() } catch { failed.append("\(d.id) report: \(error)") }
                    let r = d.agent.cycle()
                    if !r.ok { failed.append("\(d.id) cycle: \(r.message)") }
                }
                c.resume(returning: failed)
            }
        }
        #expect(failures.isEmpty, "\(failures.prefix(3))")
    }

    func rolloutStatus(_ client: some TestClientProtocol, _ id: Int64) async throws -> RolloutStatus {
        try decode(RolloutStatus.self, try await client.execute(uri: "/v1/rollouts/\(id)", method: .get))
    }

    /// Releases m@1, m@2 and m@3, each with an int8 and an fp32 variant: x86-avx2 runs fp32, the
    /// other classes int8. m@2 crashes on ARM boards; m@3 is twice as slow on x86-avx2.
    func publishReleases(_ client: some TestClientProtocol, _ f: ControllerFixture) async throws -> [String: [String: String]] {
        let contents: [(String, String, String)] = [
            ("m1-int8", "int8", "m v1 int8"), ("m1-fp32", "fp32", "m v1 fp32"),
            ("m2-int8", "int8", "m v2 int8 CRASHES-ON-ARM"), ("m2-fp32", "fp32", "m v2 fp32"),
            ("m3-int8", "int8", "m v3 int8"), ("m3-fp32", "fp32", "m v3 fp32 SLOW-ON-AVX2")
        ]
        let v = try await client.publish(model: "m", variants: contents.map { ($0.0, $0.1, Array($0.2.utf8)) })
        let classes = try decode([HardwareClass].self, try await client.execute(uri: "/v1/config/hardware-classes", method: .get))
        var shas: [String: [String: String]] = [:]
        for i in 0..<3 {
            let c = ReleaseCatalog(
                model: "m", version: "\(i + 1)", serial: i + 1, expiresAt: f.now + 86_400 * 30,
                variants: [v[2 * i], v[2 * i + 1]], hardwareClasses: classes)
            let r = try await client.json(
                .post, "/v1/releases", NewRelease(catalog: try Envelope.sign(c, type: PayloadType.catalog, keys: [f.keys[.release]!])))
            #expect(r.status == .created)
            shas["m@\(i + 1)"] = ["int8": v[2 * i].sha256, "fp32": v[2 * i + 1].sha256]
        }
        return shas
    }

    static func dtype(_ cls: String) -> String { cls == slowClass ? "fp32" : "int8" }

    @Test func canaryGatesLatencyGateAndAbortOverRealAgents() async throws {
        let f = try ControllerFixture(
            tiers: """
                tiers:
                  - { name: fibre, metered: false, min_mbps: 50 }
                  - { name: cellular, metered: false }
                """)
        defer { f.cleanup() }
        try Self.policy.write(toFile: f.configDir + "/policies/sim.yaml", atomically: true, encoding: .utf8)
        let clock = TestClock(Int64(Date().timeIntervalSince1970))
        let (app, driver) = try await f.parts(clock: { clock.now })
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let devices = try Self.fleet(dir: f.dir, controller: "http://127.0.0.1:\(port)", root: f.dir + "/keys/root.json")
            defer { for d in devices { d.endpoint.stop() } }
            #expect(devices.count == 54)
            let shas = try await publishReleases(client, f)

            // Everyone gets m@1 at once.
            #expect(try await client.json(.post, "/v1/rollouts", NewRollout(release: "m@1", strategy: "all")).status == .created)
            try await Self.round(devices)
            for d in devices { #expect(d.runningSha == shas["m@1"]![Self.dtype(d.cls)], "\(d.id) runs \(d.runningSha ?? "nothing")") }

            // m@2, staged: the ARM cells must stop after their canaries; the others reach everyone.
            let start = try await client.json(
                .post, "/v1/rollouts", NewRollout(release: "m@2", strategy: "staged", policy: "sim-canary"),
                headers: [HTTPField.Name("X-Fleet-Actor")!: "alice"])
            #expect(start.status == .created)
            let r2 = try decode(RolloutInfo.self, start).id
            for _ in 0..<7 {
                try await Self.round(devices)
                try await driver.tick(now: clock.now)
                clock.advance(700)
            }
            let s2 = try await rolloutStatus(client, r2)
            #expect(s2.cells.count == 6)
            for cell in s2.cells {
                if cell.cell.hasPrefix(Self.armClass) {
                    #expect(cell.status == .paused, "\(cell.cell) is \(cell.status)")
                    #expect(cell.phase == 1)
                    #expect(cell.failedGate?.metric == "health-failure-rate")
                    #expect(cell.failedGate?.observed == 1.0)
                    #expect(cell.failedGate?.threshold == 0.2)
                } else {
                    #expect(cell.status == .completed, "\(cell.cell) is \(cell.status)")
                }
            }
            // Not one ARM device outside its cell's canary cohort ever heard of m@2.
            let arm = devices.filter { $0.cls == Self.armClass }
            var armReached = 0
            for tier in ["fibre", "cellular"] {
                let cell = arm.filter { $0.tier == tier }
                let canary = Cohort.members(of: cell.map(\.id), rollout: "\(r2)", phase: .init(percent: 10, minDevices: 2))
                #expect(canary.count == 2)
                for d in cell {
                    let events = try decode([StatusEvent].self, try await client.execute(uri: "/v1/devices/\(d.id)/events", method: .get))
                    let reached = events.contains { $0.release == "m@2" }
                    if reached { armReached += 1 }
                    #expect(!reached || canary.contains(d.id), "\(d.id) outside the canary got m@2")
                    #expect(!FileManager.default.fileExists(atPath: d.modelsDir + "/m/" + shas["m@2"]!["int8"]!) || canary.contains(d.id))
                    // Canaries rolled back on their own: every ARM device runs m@1.
                    #expect(d.runningSha == shas["m@1"]!["int8"], "\(d.id)")
                }
            }
            #expect(armReached == 4)
            for d in devices where d.cls != Self.armClass {
                #expect(d.runningSha == shas["m@2"]![Self.dtype(d.cls)], "\(d.id) runs \(d.runningSha ?? "nothing")")
            }
            #expect(s2.actions.first?.actor == "alice")
            #expect(s2.actions.contains { $0.action == "paused" && $0.detail?.contains("health-failure-rate") == true })

            // m@3, staged: twice as slow on x86-avx2 against the control cohort still on m@2.
            let before = Dictionary(uniqueKeysWithValues: devices.map { ($0.id, $0.runningSha) })
            let start3 = try await client.json(
                .post, "/v1/rollouts", NewRollout(release: "m@3", strategy: "staged", policy: "sim-canary", supersede: true))
            let r3 = try decode(RolloutInfo.self, start3).id
            for _ in 0..<3 {
                try await Self.round(devices)
                try await driver.tick(now: clock.now)
                clock.advance(700)
            }
            let s3 = try await rolloutStatus(client, r3)
            for cell in s3.cells {
                if cell.cell.hasPrefix(Self.slowClass) {
                    #expect(
                        cell.status == .paused, "\(cell.cell) is \(cell.status): \(String(describing: cell.observation)) \(cell.gates)")
                    #expect(cell.failedGate?.metric == "latency-p50-ratio")
                    #expect(cell.failedGate?.observed == 2.0)
                    #expect(cell.failedGate?.threshold == 1.5)
                } else {
                    #expect(cell.status != .paused && cell.status != .rolledBack, "\(cell.cell) is \(cell.status)")
                }
            }
            let metricsText = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(
                metricsText.contains(
                    "edgefleet_gate_passing{rollout=\"\(r3)\",release=\"m@3\",hardware_class=\"x86-avx2\",tier=\"fibre\",gate=\"latency-p50-ratio\"} 0"
                ))

            // The dashboard, in a real browser, shows the gate states the API reports.
            try await DashboardBrowserCheck.run(port: port, client: client, rollouts: [r2, r3])

            // Abort: every device m@3 reached goes back to exactly what it ran before.
            let abort = try await client.json(
                .post, "/v1/rollouts/\(r3)/abort", RolloutActionRequest(), headers: [HTTPField.Name("X-Fleet-Actor")!: "bob"])
            #expect(abort.status == .ok)
            let updated = devices.filter { d in d.runningSha != before[d.id]! }
            #expect(updated.count >= 8)
            for _ in 0..<2 { try await Self.round(devices) }
            for d in devices { #expect(d.runningSha == before[d.id]!, "\(d.id) runs \(d.runningSha ?? "nothing") after the abort") }
            // ARM canaries of m@3 ran m@1 before it (m@2 had failed there), so that is what they got back.
            for d in updated where d.cls == Self.armClass { #expect(d.runningSha == shas["m@1"]!["int8"]) }
            let s3after = try await rolloutStatus(client, r3)
            #expect(s3after.rollout.state == .aborted)
            #expect(s3after.actions.contains { $0.actor == "bob" && $0.action == "abort" })
        }
    }
}
