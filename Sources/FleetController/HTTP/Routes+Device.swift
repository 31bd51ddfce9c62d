import FleetCore
import Foundation
import Hummingbird

/// Routes the agents call.
struct DeviceRoutes: Sendable {
    let director: Director
    let store: any FleetStore
    let metrics: ControllerMetrics
    let clock: @Sendable () -> Int64
    /// Re-checks a stored artifact that a device could not verify.
    var quarantine: ArtifactQuarantine? = nil

    static let checkInLimit = 256 * 1024
    static let eventsLimit = 1024 * 1024

    func register(_ routes: Audiences) {
        routes.anyone.get("/v1/root") { _, _ in
            try JSON.response(director.keys.rootEnvelope)
        }
        routes.checkIns.post("/v1/devices/:id/checkin") { request, context in
            let id = try deviceID(context)
            let body = try await JSON.decode(CheckInRequest.self, request, limit: Self.checkInLimit)
            for (model, sha) in body.installed {
                guard Name.isValid(model), Digest.isSHA256Hex(sha) else {
                    throw APIError(.badRequest, "invalid-installed", "installed must map model names to sha256 digests")
                }
            }
            for (model, held) in body.holds ?? [:] {
                guard Name.isValid(model), Digest.isSHA256Hex(held.catalog) else {
                    throw APIError(.badRequest, "invalid-holds", "holds must map model names to a catalog sha256 and a counter")
                }
            }
            if let digest = body.factsDigest, !Digest.isSHA256Hex(digest) {
                throw APIError(.badRequest, "invalid-facts-digest", "factsDigest must be a sha256 digest")
            }
            let response = try await director.checkIn(deviceId: id, request: body, now: clock(), row: context.checkInDevice)
            return try JSON.response(response)
        }
        routes.devices.post("/v1/devices/:id/events") { request, context in
            let id = try deviceID(context)
            guard try await store.deviceExists(id) else {
                throw APIError(.notFound, "unknown-device", "device \(id) has not checked in")
            }
            let batch = try await JSON.decode(EventBatch.self, request, limit: Self.eventsLimit)
            guard batch.events.count <= EventBatch.maxEvents else {
                throw APIError(.contentTooLarge, "too-many-events", "at most \(EventBatch.maxEvents) events per batch")
            }
            guard batch.events.allSatisfy({ $0.seq > 0 && $0.kind.rawValue.utf8.count <= 64 && ($0.detail?.utf8.count ?? 0) <= 4096 })
            else {
                throw APIError(.badRequest, "invalid-event", "events need seq > 0, a kind of at most 64 bytes and detail of at most 4 KiB")
            }
            let ingest = try await store.appendEvents(deviceId: id, batch.events, receivedAt: clock())
            if let dropped = batch.droppedEvents { try await store.recordDropped(deviceId: id, total: dropped, at: clock()) }
            metrics.eventsStored.increment(by: Int64(ingest.stored))
            metrics.eventsDuplicate.increment(by: Int64(ingest.duplicates))
            // Bytes that did not verify on a device may be rotten on this side: the stored copy is
            // hashed again (at most once per artifact in ten minutes, off the device's request).
            let suspects = Set(
                batch.events.filter { $0.fault == InstallFault.hashMismatch.rawValue || $0.fault == InstallFault.lengthMismatch.rawValue }
                    .compactMap(\.sha256).filter(Digest.isSHA256Hex))
            if let quarantine, !suspects.isEmpty {
                Task.detached { for sha in suspects.sorted() { _ = try? await quarantine.checkReported(sha) } }
            }
            return try JSON.response(EventAck(ackedThrough: ingest.ackedThrough, stored: ingest.stored, duplicates: ingest.duplicates))
        }
    }
}

func deviceID(_ context: FleetRequestContext) throws -> String {
    let id = try context.parameters.require("id")
    guard Name.isValid(id) else { throw APIError(.badRequest, "invalid-device-id", "device id '\(id)' is not a valid name") }
    return id
}
