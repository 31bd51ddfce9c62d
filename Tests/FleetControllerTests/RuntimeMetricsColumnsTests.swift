import FleetCore
import Foundation
import Logging
import TestSupport
import Testing

@testable import FleetController

/// Runtime metrics travel typed (`StatusEvent.metrics`) from current agents and as JSON in
/// `detail` from older ones; the store keeps them in typed columns either way (migration 7).
@Suite("Runtime metrics in typed columns", .ownThread)
struct RuntimeMetricsColumnsTests {
    static let figures = RuntimeMetrics(latencyP50Ms: 5, latencyP95Ms: 9, errorRate: 0.25, requests: 40, crashes: 2)

    @Test(arguments: Backend.allCases)
    func typedAndOlderAgentsFiguresAreStoredAndReadAsNumbers(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        for id in ["typed", "old", "bad"] { try await store.upsertDevice(GateFeedTests.device(id)) }
        let json = String(decoding: try FleetJSON.encode(Self.figures), as: UTF8.self)
        _ = try await store.appendEvents(
            deviceId: "typed", [StatusEvent(seq: 1, time: 1, kind: .metrics, model: "m", release: "m@1", metrics: Self.figures)],
            receivedAt: 10)
        _ = try await store.appendEvents(
            deviceId: "old", [StatusEvent(seq: 1, time: 1, kind: .metrics, model: "m", release: "m@1", detail: json)], receivedAt: 10)
        _ = try await store.appendEvents(
            deviceId: "bad", [StatusEvent(seq: 1, time: 1, kind: .metrics, model: "m", release: "m@1", detail: "{not json")],
            receivedAt: 10)
        let expected = DeviceMetrics(deviceId: "typed", release: "m@1", p50: 5, p95: 9, errorRate: 0.25, crashes: 2)
        let latest = try await store.latestRuntimeMetrics(model: "m", since: 0)
        #expect(latest["typed"] == expected)
        #expect(latest["old"] == DeviceMetrics(deviceId: "old", release: "m@1", p50: 5, p95: 9, errorRate: 0.25, crashes: 2))
        #expect(latest["bad"] == nil)
        // The raw scan and the events API read the same columns.
        #expect(Set(try await store.runtimeMetricsScanningEvents(model: "m", since: 0).map(\.deviceId)) == ["typed", "old"])
        #expect(try await store.events(deviceId: "typed", limit: 1).first?.metrics == Self.figures)
        #expect(try await store.events(deviceId: "old", limit: 1).first?.metrics == Self.figures)
        #expect(try await store.events(deviceId: "bad", limit: 1).first?.metrics == nil)
    }

    @Test(arguments: Backend.allCases)
    func anUnknownEventKindIsStoredAsSentAndChangesNoStatus(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        try await store.upsertDevice(GateFeedTests.device("d"))
        let batch = try JSONDecoder().decode(
            EventBatch.self,
            from: Data(
                #"{"events":[{"seq":1,"time":1,"kind":"committed","model":"m","release":"m@1"},{"seq":2,"time":1,"kind":"quantum-leap"}]}"#
                    .utf8))
        #expect(batch.events.map(\.kind) == [.committed, .other("quantum-leap")])
        let ingest = try await store.appendEvents(deviceId: "d", batch.events, receivedAt: 5)
        #expect(ingest.stored == 2 && ingest.ackedThrough == 2)
        #expect(try await store.events(deviceId: "d", limit: 1).first?.kind == .other("quantum-leap"))
        #expect(try await store.device("d")?.status == .committed)
    }

    /// A database at schema 6 (figures as JSON in `detail`, in events and in the latest table) is
    /// carried over: valid figures into the columns, anything the decoder refused left without.
    @Test(arguments: Backend.allCases)
    func aDatabaseAtSchema6IsCarriedOver(_ backend: Backend) async throws {
        let (old, reopen) = try await backend.database(atSchema: 6)
        let details: [(String, String)] = [
            ("good", #"{"latencyP50Ms":5,"latencyP95Ms":9,"errorRate":0.25,"requests":40,"crashes":2}"#),
            ("partial", #"{"latencyP50Ms":4.5}"#),
            ("nulls", #"{"latencyP50Ms":null,"crashes":1}"#),
            ("text", #"{"latencyP50Ms":"fast"}"#),
            ("fraction", #"{"crashes":1.5}"#),
            ("array", "[1,2]"),
            ("garbage", "{not json"),
            ("huge", #"{"latencyP95Ms":1e400}"#)
        ]
        for (device, detail) in details {
            try await old.execute(
                "INSERT INTO events (device_id, seq, time, kind, model, release, detail, received_at) VALUES (?,1,1,'metrics','m','m@1',?,50)",
                [device, detail])
        }
        try await old.execute(
            "INSERT INTO events (device_id, seq, time, kind, model, release, detail, received_at) VALUES ('x',1,1,'failed','m','m@1','{\"crashes\":1}',50)"
        )
        try await old.execute(
            "INSERT INTO latest_runtime_metrics (model, device_id, seq, release, detail, received_at, rev) SELECT model, device_id, seq, release, detail, received_at, 1 FROM events WHERE kind = 'metrics'"
        )
        await old.close()

        let store = try await reopen()
        defer { Task { await store.db.close() } }
        #expect(try await Migrations.version(store.db) == Migrations.latest)
        let latest = try await store.latestRuntimeMetrics(model: "m", since: 0)
        #expect(latest["good"] == DeviceMetrics(deviceId: "good", release: "m@1", p50: 5, p95: 9, errorRate: 0.25, crashes: 2))
        #expect(latest["partial"] == DeviceMetrics(deviceId: "partial", release: "m@1", p50: 4.5, p95: nil, errorRate: nil, crashes: 0))
        #expect(latest["nulls"] == DeviceMetrics(deviceId: "nulls", release: "m@1", p50: nil, p95: nil, errorRate: nil, crashes: 1))
        for refused in ["text", "fraction", "array", "garbage"] { #expect(latest[refused] == nil, "\(refused)") }
        // The figures as the decoder reads them, wherever the store does.
        for (device, detail) in details where device != "huge" {
            let decoded = try? JSONDecoder().decode(RuntimeMetrics.self, from: Data(detail.utf8))
            #expect(try await store.events(deviceId: device, limit: 1).first?.metrics == decoded, "\(device)")
        }
        #expect(try await store.events(deviceId: "x", limit: 1).first?.metrics == nil)
        #expect(
            Set(try await store.runtimeMetricsScanningEvents(model: "m", since: 0).map(\.deviceId)) == Set(latest.keys))
    }
}
