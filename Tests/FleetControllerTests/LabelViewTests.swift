import FleetCore
import Foundation
import HummingbirdTesting
import Testing
@testable import FleetController

@Suite("Label view: devices by one label key, bounded")
struct LabelViewTests {
    @Test func topValuesThenOtherThenNone() {
        var devices: [(labels: [String: String], status: String)] = []
        // 12 regions with 12, 11, … 1 devices; 3 devices without a region.
        for (i, n) in (1...12).reversed().enumerated() {
            for j in 0..<n { devices.append((["region": "r\(i)"], j % 2 == 0 ? "committed" : "failed")) }
        }
        for _ in 0..<3 { devices.append(([:], "idle")) }
        let v = LabelView.breakdown(key: "region", devices: devices, top: 10)
        #expect(v.rows.map(\.value) == (0..<10).map { "r\($0)" } + ["other", "(none)"])
        #expect(v.rows.map(\.devices) == [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2 + 1, 3])
        #expect(v.rows.reduce(0) { $0 + $1.devices } == devices.count)
        #expect(v.rows[0].byStatus == ["committed": 6, "failed": 6])
        #expect(v.rows.last?.byStatus == ["idle": 3])
    }

    @Test func metricsAndDashboardBreakDownByTheNamedKey() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        var options = ControllerOptions(
            dataDirectory: f.dir + "/data", host: "127.0.0.1", port: 0, keysDirectory: f.dir + "/keys",
            configDirectory: f.configDir, rolloutTickSeconds: nil)
        options.viewLabel = "region"
        let now = f.now
        let app = try await Controller.makeApplication(options: options, logger: .init(label: "test"), clock: { now }).0
        try await app.test(.router) { client in
            for (id, region) in [("a", "eu-west"), ("b", "eu-west"), ("c", "us-east"), ("d", nil)] {
                var facts = ControllerFixture.vnniFacts
                facts.labels = region.map { ["region": $0] }
                try await client.json(.post, "/v1/devices/\(id)/checkin", CheckInRequest(facts: facts, installed: [:], agentVersion: "t"))
            }
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            func gauge(_ value: String) -> Double? {
                metrics.split(separator: "\n").first { $0.hasPrefix("edgefleet_devices_by_label{") && $0.contains("value=\"\(value)\"") }
                    .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
            }
            #expect(gauge("eu-west") == 2)
            #expect(gauge("us-east") == 1)
            #expect(gauge("(none)") == 1)
            let page = String(buffer: try await client.execute(uri: "/", method: .get).body)
            #expect(page.contains("data-label-value=\"eu-west\" data-devices=\"2\""))
            #expect(page.contains("data-label-value=\"(none)\" data-devices=\"1\""))
        }
    }
}
