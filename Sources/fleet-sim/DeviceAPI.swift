import FleetCore
import Foundation

/// The device side of the wire, in one place: what a simulated device sends when it checks in
/// and what it reads from the answer. When the check-in format changes (facts only when they
/// changed, catalog and assignment only when they changed), this is the file to change.
enum DeviceAPI {
    static let agentVersion = "fleet-sim/1"

    static func checkInPath(_ id: String) -> String { "/v1/devices/\(id)/checkin" }
    static func eventsPath(_ id: String) -> String { "/v1/devices/\(id)/events" }

    /// A frugal check-in, as fleet-agent sends it: the facts' digest instead of the facts, the
    /// installed models only when they changed since the last check-in, what it holds per model.
    /// `full`: the facts and everything, after the controller asked for them again.
    static func checkInBody(device: SimDevice, facts: DeviceFacts, full: Bool = false) throws -> Data {
        var request = CheckInRequest(
            facts: full ? facts : nil, installed: device.installed, agentVersion: full ? agentVersion : nil,
            phase: device.installing.isEmpty ? nil : InstallPhase.downloading.rawValue,
            factsDigest: full ? nil : facts.digest, holds: device.held.isEmpty ? nil : device.held,
            timestampVersion: 0)
        request.installedSent = full || device.sentInstalled != device.installed
        return try encoder.encode(request)
    }

    static func eventsBody(_ events: [StatusEvent]) throws -> Data {
        try encoder.encode(EventBatch(events: Array(events.prefix(EventBatch.maxEvents))))
    }

    /// The assignments in a check-in answer that the device does not run yet, and what the device
    /// holds afterwards. The signatures are not checked: the simulator plays the load of a device,
    /// not its trust decisions.
    static func newAssignments(in body: Data, device: SimDevice) throws -> (
        answer: CheckInSummary, todo: [AssignmentSummary], held: [String: HeldMetadata]
    ) {
        let answer = try decoder.decode(CheckInSummary.self, from: body)
        var todo: [AssignmentSummary] = []
        var held = device.held
        func take(_ model: String, _ assignment: Envelope, catalog: String?) throws {
            guard let bytes = assignment.payloadBytes else { throw SimError.badAssignment }
            let a = try decoder.decode(AssignmentSummary.self, from: Data(bytes))
            if let catalog = catalog ?? held[model]?.catalog { held[model] = HeldMetadata(catalog: catalog, counter: a.counter) }
            if device.installed[a.model] != a.sha256 && device.installing[a.model] != a.sha256 { todo.append(a) }
        }
        for update in answer.updates ?? [] { try take(update.model, update.assignment, catalog: update.catalog.payloadDigest) }
        for (model, assignment) in (answer.reassigned ?? [:]).sorted(by: { $0.key < $1.key }) { try take(model, assignment, catalog: nil) }
        return (answer, todo, held)
    }

    static func ack(_ body: Data) throws -> EventAck { try decoder.decode(EventAck.self, from: body) }

    // One JSON setup for the simulator: the project's own.
    static let encoder = FleetJSON.encoder()
    static let decoder = JSONDecoder()
}

/// The parts of a `CheckInResponse` the simulator reads (decoding less keeps the generator cheap).
/// A frugal answer carries only what changed: new catalogs with their assignments (`updates`), new
/// assignments alone (`reassigned`), or nothing but the timestamp; `resend` asks for the facts.
struct CheckInSummary: Decodable {
    struct Update: Decodable { var model: String; var catalog: Envelope; var assignment: Envelope }
    var updates: [Update]?
    var reassigned: [String: Envelope]?
    var resend: String?
    var pollSeconds: Int?
}

/// The parts of a signed `Assignment` an install report needs.
struct AssignmentSummary: Decodable, Sendable {
    struct Package: Decodable, Sendable { var url: String?; var size: Int64? }
    var model: String
    var release: String
    var sha256: String
    var counter: UInt64
    var package: Package
}

struct SimError: Error, CustomStringConvertible {
    enum Code: String { case badAssignment = "bad-assignment" }
    let code: Code
    static let badAssignment = SimError(code: .badAssignment)
    var description: String { code.rawValue }
}
