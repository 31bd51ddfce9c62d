import FleetCore
import Foundation
import Testing

/// The states and statuses the controller stores and shows travel by their raw values: these are
/// the words the wire and the stored rows already hold, so a renamed case cannot change either.
@Suite("Wire vocabulary of states and statuses")
struct WireVocabularyTests {
    static var wire: [(type: String, words: [String], decodes: (Data) throws -> String)] {
        [
            (
                "DeviceStatus", ["idle", "installing", "committed", "failed", "retrying", "rejected", "rolled-back"],
                roundTrip(DeviceStatus.self)
            ),
            ("RolloutState", ["active", "completed", "aborted", "superseded"], roundTrip(RolloutState.self)),
            ("CellState.Status", ["running", "baking", "paused", "rolledBack", "completed", "aborted"], roundTrip(CellState.Status.self)),
            ("WaveStatus", ["pending", "running", "stopped", "completed", "aborted", "superseded"], roundTrip(WaveStatus.self)),
            ("TrialState", ["running", "done"], roundTrip(TrialState.self)),
            ("DeltaStatus", ["building", "ready", "failed"], roundTrip(DeltaStatus.self))
        ]
    }

    /// Decodes a JSON string as `T` and encodes the value again.
    static func roundTrip<T: Codable & CaseIterable & RawRepresentable>(_: T.Type) -> (Data) throws -> String where T.RawValue == String {
        { data in String(decoding: try JSONEncoder().encode(try JSONDecoder().decode(T.self, from: data)), as: UTF8.self) }
    }

    static func allRawValues<T: CaseIterable & RawRepresentable>(_: T.Type) -> [String] where T.RawValue == String {
        T.allCases.map(\.rawValue)
    }

    @Test func everyCaseHasTheWordTheWireHolds() {
        #expect(Self.allRawValues(DeviceStatus.self) == Self.wire[0].words)
        #expect(Self.allRawValues(RolloutState.self) == Self.wire[1].words)
        #expect(Self.allRawValues(CellState.Status.self) == Self.wire[2].words)
        #expect(Self.allRawValues(WaveStatus.self) == Self.wire[3].words)
        #expect(Self.allRawValues(TrialState.self) == Self.wire[4].words)
        #expect(Self.allRawValues(DeltaStatus.self) == Self.wire[5].words)
    }

    @Test func everyWordDecodesAndEncodesBackByteForByte() throws {
        for (type, words, decodes) in Self.wire {
            for word in words {
                let json = "\"\(word)\""
                #expect(try decodes(Data(json.utf8)) == json, "\(type) \(word)")
            }
        }
    }

    @Test func aWordNoCaseHasIsADecodingErrorNotADefault() {
        for (type, _, decodes) in Self.wire {
            for word in ["unknown", "", "Committed", "rolled_back"] {
                let error = #expect(throws: DecodingError.self, "\(type) '\(word)'") { _ = try decodes(Data("\"\(word)\"".utf8)) }
                guard case .dataCorrupted = error else {
                    Issue.record("\(type) '\(word)': \(String(describing: error))")
                    continue
                }
            }
        }
    }

    @Test func aViewWithAnUnknownStatusDoesNotDecode() {
        let json = #"{"name":"eu","selector":"site=eu","status":"halted","devices":3,"cells":1}"#
        #expect(throws: DecodingError.self) { _ = try JSONDecoder().decode(RolloutStatus.Wave.self, from: Data(json.utf8)) }
    }

    @Test func viewsEncodeTheirStatesAsTheWordsTheyCarriedAsStrings() throws {
        let wave = RolloutStatus.Wave(name: "eu", selector: "site=eu", status: .stopped, devices: 3, cells: 1)
        let trial = TrialInfo(
            id: 1, model: "m", release: "m@1", hardwareClass: "x86-avx2", variants: ["int8"], devices: ["d"], state: .done,
            measured: [:])
        let delta = ReleasePackages.Delta(baseSha256: "a", status: .ready, method: nil, packageSha256: nil, size: nil, detail: nil)
        let rollout = RolloutInfo(
            id: 1, release: "m@1", model: "m", strategy: "all", state: .superseded, createdAt: 1, targeted: 0, committed: 0, failed: 0,
            held: 0)
        let device = DeviceInfo(
            id: "d", hardwareClass: nil, tier: nil, facts: DeviceFacts(arch: "x86_64", cpuFlags: [], memoryBytes: 1, diskFreeBytes: 1),
            installed: [:], phase: nil, status: .rolledBack, statusDetail: nil, assigned: [:], held: [:], firstSeen: 1, lastSeen: 1,
            agentVersion: nil)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        func text(_ v: some Encodable) throws -> String { String(decoding: try encoder.encode(v), as: UTF8.self) }
        #expect(try text(wave) == #"{"cells":1,"devices":3,"name":"eu","selector":"site=eu","status":"stopped"}"#)
        #expect(try text(trial).contains(#""state":"done""#))
        #expect(try text(delta) == #"{"baseSha256":"a","status":"ready"}"#)
        #expect(try text(rollout).contains(#""state":"superseded""#))
        #expect(try text(device).contains(#""status":"rolled-back""#))
        #expect(try JSONDecoder().decode(DeviceInfo.self, from: try encoder.encode(device)) == device)
    }

    @Test func aWaveNotBegunShowsItsRolloutsState() {
        #expect(WaveStatus(notBegunIn: .active) == .pending)
        #expect(WaveStatus(notBegunIn: .completed) == .completed)
        #expect(WaveStatus(notBegunIn: .aborted) == .aborted)
        #expect(WaveStatus(notBegunIn: .superseded) == .superseded)
    }
}
