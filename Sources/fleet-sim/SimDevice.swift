import FleetCore
import Foundation
import Synchronization

/// What one simulated device remembers between check-ins: the models it runs, its event
/// sequence numbers and the events the controller has not acknowledged yet. Devices that never
/// changed anything keep no entry (a million idle devices cost nothing).
struct SimDevice: Sendable {
    var installed: [String: String] = [:]
    var nextSeq: UInt64 = 1
    var outbox: [StatusEvent] = []
    /// Assignments being installed right now (model -> sha256), so that an answer that arrives
    /// while the install is under way does not start it twice.
    var installing: [String: String] = [:]
    /// What the device holds per model (catalog digest, assignment counter), sent in `holds`.
    var held: [String: HeldMetadata] = [:]
    /// The installed models the last check-in sent: left out while they stay the same.
    var sentInstalled: [String: String]? = nil

    /// The events a real agent reports for one install that goes well, in its order
    /// (`InstallStateMachine`: started → downloaded → verified → activated → committed).
    mutating func recordInstall(_ a: AssignmentSummary, at time: Int64) {
        for kind: EventKind in [.started, .downloaded, .verified, .activated, .committed] {
            outbox.append(StatusEvent(seq: nextSeq, time: time, kind: kind, model: a.model, sha256: a.sha256, release: a.release))
            nextSeq += 1
        }
        installed[a.model] = a.sha256
        installing[a.model] = nil
    }

    mutating func acknowledge(through seq: UInt64) {
        outbox.removeAll { $0.seq <= seq }
    }
}

/// Every simulated device's state, behind one lock: a device is touched once per check-in, so
/// contention stays far below the request rate.
final class DeviceBook: Sendable {
    private let devices = Mutex<[Int: SimDevice]>([:])

    func read(_ index: Int) -> SimDevice { devices.withLock { $0[index] ?? SimDevice() } }

    @discardableResult
    func update<T>(_ index: Int, _ body: (inout SimDevice) -> T) -> T {
        devices.withLock { all in
            var d = all[index] ?? SimDevice()
            let result = body(&d)
            all[index] = d
            return result
        }
    }

    /// What devices run and their next sequence numbers, so that a later run (another process)
    /// goes on as the same fleet: real agents keep both on disk.
    struct Saved: Codable {
        struct Entry: Codable { var i: Int; var installed: [String: String]; var seq: UInt64; var held: [String: HeldMetadata]? }
        var devices: [Entry]
        /// The schedule slot the next run starts at, so that it goes on through the poll interval
        /// instead of playing the same devices again.
        var nextSlot: Int?
    }

    func save(to path: String, nextSlot: Int) throws {
        let entries = devices.withLock { all in
            all.map { Saved.Entry(i: $0.key, installed: $0.value.installed, seq: $0.value.nextSeq, held: $0.value.held) }.sorted {
                $0.i < $1.i
            }
        }
        try JSONEncoder().encode(Saved(devices: entries, nextSlot: nextSlot)).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Loads a file written by `save`; a missing file is an empty fleet. Returns the slot to start at.
    func load(from path: String) throws -> Int {
        guard FileManager.default.fileExists(atPath: path) else { return 0 }
        let saved = try JSONDecoder().decode(Saved.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        devices.withLock { all in
            // What the last check-in sent and held, as fleet-agent keeps them on disk.
            for e in saved.devices {
                all[e.i] = SimDevice(installed: e.installed, nextSeq: e.seq, held: e.held ?? [:], sentInstalled: e.installed)
            }
        }
        return saved.nextSlot ?? 0
    }
}
