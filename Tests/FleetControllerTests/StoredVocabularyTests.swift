import FleetCore
import Foundation
import Testing
@testable import FleetController

/// Device statuses and trial states are stored by their raw values: every word an earlier build
/// wrote reads back as its case, and a word no case has is a `corrupt` error, never a default.
@Suite("Stored vocabulary")
struct StoredVocabularyTests {
    static let facts = DeviceFacts(arch: "x86_64", cpuFlags: ["avx2"], memoryBytes: 1 << 30, diskFreeBytes: 1 << 30)

    func insertDevice(_ store: SQLStore, _ id: String, status: String) async throws {
        try await store.db.execute(
            """
            INSERT INTO devices (id, facts, hardware_class, tier, installed, phase, status, status_detail, held, first_seen, last_seen, agent_version)
            VALUES (?, ?, NULL, NULL, '{}', NULL, ?, NULL, '{}', 1, 1, NULL)
            """, [id, try store.json(Self.facts), status])
    }

    @Test(arguments: Backend.allCases)
    func everyStoredDeviceStatusReadsBackAsItsCase(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        for (i, status) in DeviceStatus.allCases.enumerated() {
            try await insertDevice(store, "dev-\(i)", status: status.rawValue)
            #expect(try await store.device("dev-\(i)")?.status == status)
        }
    }

    @Test(arguments: Backend.allCases)
    func aDeviceStatusNoCaseHasIsACorruptRow(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        try await insertDevice(store, "dev-1", status: "hibernating")
        let error = await #expect(throws: StorageError.self) { _ = try await store.device("dev-1") }
        #expect(error?.code == .corrupt)
    }

    @Test(arguments: Backend.allCases)
    func trialStatesAreStoredByTheirWordsAndAnUnknownOneIsACorruptRow(_ backend: Backend) async throws {
        let (store, _) = try await backend.store()
        defer { Task { await store.db.close() } }
        let trial = try await store.createTrial(
            TrialRecord(
                id: 0, model: "m", release: "m@1", hardwareClass: "x86-avx2", variants: ["int8"], devices: ["dev-1"], state: .running,
                createdAt: 1, createdBy: "operator"))
        #expect(try await store.db.query("SELECT state FROM trials WHERE id = ?", [trial.id]).first?.string("state") == "running")
        try await store.setTrialState(trial.id, TrialState.done.rawValue)
        #expect(try await store.trials(model: "m").map(\.state) == [.done])
        try await store.setTrialState(trial.id, "finished")
        let error = await #expect(throws: StorageError.self) { _ = try await store.trials(model: "m") }
        #expect(error?.code == .corrupt)
    }
}
