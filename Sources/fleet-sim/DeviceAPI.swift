import FleetCore
import Foundation

/// The device side of the wire, in one place: what a simulated device sends when it checks in
/// and what it reads from the answer. When the check-in format changes (facts only when they
/// changed, catalog and assignment only when they changed), this is the file to change.
enum DeviceAPI {
    static let agentVersion = "fleet-sim/1"

    static func checkInPath(_ id: String) -> String { "/v1/devices/\(id)/checkin" }
    static func eventsPath(_ id: String) -> String { "/v1/devices/\(id)/events" }

    /// Today's `CheckInRequest`: the full facts and every installed model on every check-in.
    static func checkInBody(device: SimDevice, facts: DeviceFacts) throws -> Data {
        let request = CheckInRequest(facts: facts, installed: device.installed, agentVersion: agentVersion,
                                     phase: device.installing.isEmpty ? nil : InstallPhase.downloading.rawValue)
        return try encoder.encode(request)
    }

    static func eventsBody(_ events: [StatusEvent]) throws -> Data {
        try encoder.encode(EventBatch(events: Array(events.prefix(EventBatch.maxEvents))))
    }

    /// The assignments in a check-in answer that the device does not run yet. The signatures are
    /// not checked: the simulator plays the load of a device, not its trust decisions.
    static func newAssignments(in body: Data, device: SimDevice) throws -> (answer: CheckInSummary, todo: [AssignmentSummary]) {
        let answer = try decoder.decode(CheckInSummary.self, from: body)
        var todo: [AssignmentSummary] = []
        for update in answer.updates {
            guard let bytes = update.assignment.payloadBytes else { throw SimError.badAssignment }
            let a = try decoder.decode(AssignmentSummary.self, from: Data(bytes))
            if device.installed[a.model] != a.sha256 && device.installing[a.model] != a.sha256 { todo.append(a) }
        }
        return (answer, todo)
    }

    static func ack(_ body: Data) throws -> EventAck { try decoder.decode(EventAck.self, from: body) }

    // One JSON setup for the simulator: the project's own.
    static let encoder = FleetJSON.encoder()
    static let decoder = JSONDecoder()
}

/// The parts of a `CheckInResponse` the simulator reads (decoding less keeps the generator cheap).
struct CheckInSummary: Decodable {
    struct Update: Decodable { var model: String; var assignment: Envelope }
    var updates: [Update]
    var pollSeconds: Int?
}

/// The parts of a signed `Assignment` an install report needs.
struct AssignmentSummary: Decodable, Sendable {
    struct Package: Decodable, Sendable { var url: String?; var size: Int64? }
    var model: String
    var release: String
    var sha256: String
    var package: Package
}

struct SimError: Error, CustomStringConvertible {
    enum Code: String { case badAssignment = "bad-assignment" }
    let code: Code
    static let badAssignment = SimError(code: .badAssignment)
    var description: String { code.rawValue }
}
