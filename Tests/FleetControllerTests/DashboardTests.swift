import FleetCore
import Foundation
import HummingbirdTesting
import NIOCore
import Testing
@testable import FleetController

@Suite("Dashboard rendering and rollout history")
struct DashboardTests {
    static func status(release: String, cell: String, gates: [GateResult]) -> RolloutStatus {
        let info = RolloutInfo(
            id: 7, release: release, model: "m", strategy: "canary", state: .active, createdAt: 1_800_000_000,
            targeted: 3, committed: 2, failed: 1, held: 0)
        let o = CellObservation(targeted: 3, committed: 2, installFailed: 0, healthFailed: 1)
        return RolloutStatus(
            rollout: info, policy: nil, previousRelease: "m@1",
            cells: [
                .init(
                    cell: cell, status: .paused, phase: 1, phases: 3, cohortShare: 0.1, observation: o,
                    gates: gates, failedGate: gates.first { $0.passed == false })
            ],
            actions: [.init(at: 1_800_000_100, actor: "<b>mallory</b>", action: "pause", cell: nil, detail: "\"quoted\" & more")])
    }

    @Test func everythingFromTheStoreIsEscaped() {
        let gates = [GateResult(metric: "health-failure-rate", threshold: 0.2, observed: 0.5, passed: false)]
        let html = Dashboard.render(
            DashboardData(
                now: 1_800_000_200, devices: [], eventsDropped: [:],
                rollouts: [
                    .init(status: Self.status(release: "m@<script>alert(1)</script>", cell: "x86\"/fibre", gates: gates), history: [:])
                ]))
        #expect(!html.contains("<script>"))
        #expect(html.contains("m@&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(!html.contains("<b>mallory</b>"))
        #expect(html.contains("&lt;b&gt;mallory&lt;/b&gt;"))
        #expect(html.contains("&quot;quoted&quot; &amp; more"))
        #expect(html.contains(#"data-cell="x86&quot;/fibre""#))
        #expect(!html.contains("<script"), "the page runs no scripts")
        #expect(!html.contains("http://") && !html.contains("https://"), "no external assets")
    }

    @Test func gatesCarryTheirStateThresholdAndObservedValue() {
        let gates = [
            GateResult(metric: "health-failure-rate", threshold: 0.2, observed: 0.5, passed: false),
            GateResult(metric: "latency-p95-ratio", threshold: 1.5, observed: nil, passed: nil),
            GateResult(metric: "crashes", threshold: 0, observed: 0, passed: true)
        ]
        let html = Dashboard.render(
            DashboardData(
                now: 0, devices: [], eventsDropped: [:],
                rollouts: [
                    .init(status: Self.status(release: "m@2", cell: "arm64-dotprod/fibre", gates: gates), history: [:])
                ]))
        let found = DashboardBrowserCheck.gates(in: html)
        #expect(
            found == [
                .init(rollout: 7, cell: "arm64-dotprod/fibre", metric: "health-failure-rate", state: "failing"),
                // The cell stopped: a gate that never judged is shown as unjudged, not as waiting.
                .init(rollout: 7, cell: "arm64-dotprod/fibre", metric: "latency-p95-ratio", state: "unjudged"),
                .init(rollout: 7, cell: "arm64-dotprod/fibre", metric: "crashes", state: "passing")
            ])
        #expect(html.contains(#"data-observed="0.500" data-threshold="0.200""#))
        #expect(html.contains("stopped by health-failure-rate: observed 0.500, threshold 0.200"))
        #expect(html.contains("2/3 committed, 1 health failed"))
    }

    @Test func timesAreShownInUTC() {
        #expect(Dashboard.time(1_800_000_000) == "2027-01-15 08:00:00")
        #expect(Dashboard.time(0) == "1970-01-01 00:00:00")
    }

    @Test func chartsDrawOneLinePerCellAndSeries() {
        let points = (0..<5).map { i in
            CellHistoryPoint(
                at: 1_800_000_000 + Int64(i) * 60, phase: 0, status: .running, targeted: 4, committed: i,
                failed: 0, treatmentP50: 20, controlP50: 10, treatmentP95: nil, controlP95: nil)
        }
        let html = Dashboard.render(
            DashboardData(
                now: 0, devices: [], eventsDropped: [:],
                rollouts: [
                    .init(
                        status: Self.status(release: "m@2", cell: "a/b", gates: []),
                        history: ["a/b": points, "c/d": Array(points.prefix(2))])
                ]))
        // Progress: one line per cell; latency: new and control per cell.
        #expect(html.components(separatedBy: "<polyline").count - 1 == 6)
        #expect(html.contains("a/b control"))
    }

    @Test func historyGetsAPointPerChangeAndStaysBounded() async throws {
        let dir = NSTemporaryDirectory() + "ef-hist-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await SQLStore.sqlite(path: dir + "/s.sqlite")
        let key = CellKey(hardwareClass: "c", tier: "t")
        for i in 0..<(SQLStore.historyPointsPerCell + 25) {
            try await store.appendHistory(
                rollout: 1, cell: key,
                CellHistoryPoint(
                    at: Int64(i), phase: 0, status: .running, targeted: 1,
                    committed: i, failed: 0))
        }
        let h = try await store.history(rollout: 1)["c/t"] ?? []
        #expect(h.count == SQLStore.historyPointsPerCell)
        #expect(h.first?.at == 25)
        #expect(h.last?.committed == SQLStore.historyPointsPerCell + 24)
    }

    @Test func droppedEventCountsAreKeptPerDevice() async throws {
        let dir = NSTemporaryDirectory() + "ef-drop-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await SQLStore.sqlite(path: dir + "/s.sqlite")
        try await store.recordDropped(deviceId: "d1", total: 12, at: 1)
        try await store.recordDropped(deviceId: "d1", total: 30, at: 2)
        try await store.recordDropped(deviceId: "d2", total: 0, at: 2)
        #expect(try await store.eventsDropped() == ["d1": 30])
    }
}

@Suite("Dashboard sign-in when access is enforced")
struct DashboardSignInTests {
    @Test func aTokenBecomesAReadOnlySessionCookie() async throws {
        let a = try AccessFixture(); defer { a.cleanup() }
        try await a.app().test(.router) { client in
            // Without a token: no page.
            #expect(try await client.execute(uri: "/", method: .get).status == .unauthorized)
            #expect(try await client.execute(uri: "/login", method: .get).status == .ok)
            let viewer = try await client.token(try a.adminToken, name: "wall-screen", role: .viewer).token
            let bad = try await client.execute(
                uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: "token=efop_not-a-token"))
            #expect(bad.status == .unauthorized)
            #expect(bad.headers[.setCookie] == nil)
            let ok = try await client.execute(
                uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: "token=\(viewer)"))
            #expect(ok.status == .seeOther)
            let setCookie = try #require(ok.headers[.setCookie])
            #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict"))
            let cookie = String(setCookie.split(separator: ";")[0])
            let page = try await client.execute(uri: "/", method: .get, headers: [.cookie: cookie])
            #expect(page.status == .ok)
            #expect(String(buffer: page.body).contains("<h1>EdgeFleet</h1>"))
            // The cookie of an admin token still cannot change anything: writes need the header.
            let adminCookie = "\(Secret.cookieName)=\(try a.adminToken)"
            let write = try await client.json(.post, "/v1/models", NewModel(name: "sneaky"), headers: [.cookie: adminCookie])
            #expect(write.status == .unauthorized)
            #expect(try await client.execute(uri: "/v1/models/sneaky", method: .get, headers: [.cookie: adminCookie]).status == .notFound)
        }
    }
}
