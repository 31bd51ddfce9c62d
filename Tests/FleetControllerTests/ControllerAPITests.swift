import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import FleetController

@Suite("Controller API")
struct ControllerAPITests {
    @Test func healthAndMetrics() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let h = try await client.execute(uri: "/healthz", method: .get)
            #expect(h.status == .ok)
            try await client.json(
                .post, "/v1/devices/d1/checkin", CheckInRequest(facts: ControllerFixture.vnniFacts, installed: [:], agentVersion: "t"))
            let m = try await client.execute(uri: "/metrics", method: .get)
            let text = String(buffer: m.body)
            #expect(text.contains("edgefleet_checkins_total 1"))
            #expect(text.contains("edgefleet_devices 1"))
        }
    }

    @Test func unknownRouteIsJSON404() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let r = try await client.execute(uri: "/v1/nothing-here", method: .get)
            #expect(r.status == .notFound)
            #expect(errorCode(r) == "no-route")
        }
    }

    @Test func malformedAndDuplicateKeyBodiesAreRejectedWithoutWrites() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let bad = try await client.raw(.post, "/v1/models", "{\"name\": ")
            #expect(bad.status == .badRequest)
            #expect(errorCode(bad) == "malformed-json")
            let dup = try await client.raw(.post, "/v1/models", "{\"name\": \"a\", \"name\": \"b\"}")
            #expect(dup.status == .badRequest)
            #expect(errorCode(dup) == "duplicate-key")
            let wrongShape = try await client.raw(.post, "/v1/models", "{\"nom\": \"a\"}")
            #expect(wrongShape.status == .badRequest)
            let list = try await client.execute(uri: "/v1/models", method: .get)
            #expect(try decode([ModelInfo].self, list).isEmpty)
        }
    }

    @Test func oversizedCheckInIsRejected() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let huge = "{\"pad\": \"" + String(repeating: "x", count: DeviceRoutes.checkInLimit + 10) + "\"}"
            let r = try await client.raw(.post, "/v1/devices/d1/checkin", huge)
            #expect(r.status == .contentTooLarge)
            let devices = try await client.execute(uri: "/v1/devices", method: .get)
            #expect(try decode([DeviceInfo].self, devices).isEmpty)
        }
    }

    @Test func invalidDeviceIdAndUnknownDevice() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let bad = try await client.json(
                .post, "/v1/devices/..%2Fetc/checkin",
                CheckInRequest(facts: ControllerFixture.vnniFacts, installed: [:], agentVersion: "t"))
            #expect(bad.status == .badRequest)
            let events = try await client.json(
                .post, "/v1/devices/ghost/events", EventBatch(events: [StatusEvent(seq: 1, time: 1, kind: "x")]))
            #expect(events.status == .notFound)
            #expect(errorCode(events) == "unknown-device")
            let explain = try await client.execute(uri: "/v1/devices/ghost/explain", method: .get)
            #expect(explain.status == .notFound)
        }
    }

    @Test func eventsAreStoredExactlyOnce() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            try await client.json(
                .post, "/v1/devices/d1/checkin", CheckInRequest(facts: ControllerFixture.vnniFacts, installed: [:], agentVersion: "t"))
            let first = (1...3).map { StatusEvent(seq: $0, time: 10, kind: "started", model: "m") }
            let a = try decode(EventAck.self, try await client.json(.post, "/v1/devices/d1/events", EventBatch(events: first)))
            #expect(a == EventAck(ackedThrough: 3, stored: 3, duplicates: 0))
            // The reply was "lost": the agent resends everything plus one new event.
            let again = first + [StatusEvent(seq: 4, time: 11, kind: "committed", model: "m")]
            let b = try decode(EventAck.self, try await client.json(.post, "/v1/devices/d1/events", EventBatch(events: again)))
            #expect(b == EventAck(ackedThrough: 4, stored: 1, duplicates: 3))
            let stored = try decode([StatusEvent].self, try await client.execute(uri: "/v1/devices/d1/events", method: .get))
            #expect(stored.map(\.seq) == [4, 3, 2, 1])
            let device = try decode(DeviceInfo.self, try await client.execute(uri: "/v1/devices/d1", method: .get))
            #expect(device.status == .committed)
        }
    }

    @Test func tooManyEventsInOneBatch() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            try await client.json(
                .post, "/v1/devices/d1/checkin", CheckInRequest(facts: ControllerFixture.vnniFacts, installed: [:], agentVersion: "t"))
            let many = (1...UInt64(EventBatch.maxEvents + 1)).map { StatusEvent(seq: $0, time: 1, kind: "k") }
            let r = try await client.json(.post, "/v1/devices/d1/events", EventBatch(events: many))
            #expect(r.status == .contentTooLarge)
            let zero = try await client.json(.post, "/v1/devices/d1/events", EventBatch(events: [StatusEvent(seq: 0, time: 1, kind: "k")]))
            #expect(zero.status == .badRequest)
            #expect(try decode([StatusEvent].self, try await client.execute(uri: "/v1/devices/d1/events", method: .get)).isEmpty)
        }
    }
}
