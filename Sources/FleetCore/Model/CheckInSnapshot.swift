/// What a per-device timestamp binds: for each model a check-in answer covers, the catalog and the
/// assignment the device must hold once it has read the answer, whether the answer carried them
/// or left them out because the device already held them.
///
/// Its digest is over plain text, one line per model in name order, so that the controller and the
/// agent compute it from digests alone: `edgefleet-snapshot-v1`, `device ID`, then
/// `MODEL CATALOG-SHA256 ASSIGNMENT-SHA256` (the sha256 of each signed payload). Names never hold
/// spaces or line breaks (`Name.isValid`), so no two snapshots share a text.
///
/// Why a snapshot and not a list: an idle answer stays the same size however many models and
/// variants there are, and an attacker who leaves out, swaps or freezes any model's metadata
/// changes the digest the device computes (fault `mixAndMatch`).
public struct CheckInSnapshot: Equatable, Sendable {
    public struct Entry: Equatable, Sendable {
        public var catalog: String
        public var assignment: String
        public init(catalog: String, assignment: String) { self.catalog = catalog; self.assignment = assignment }
    }

    public var deviceId: String
    public var models: [String: Entry]

    public init(deviceId: String, models: [String: Entry]) { self.deviceId = deviceId; self.models = models }

    public var text: String {
        var out = "edgefleet-snapshot-v1\ndevice \(deviceId)\n"
        for (model, e) in models.sorted(by: { $0.key < $1.key }) { out += "\(model) \(e.catalog) \(e.assignment)\n" }
        return out
    }

    public var digest: String { Digest.sha256Hex(Array(text.utf8)) }
}

extension DeviceFacts {
    /// SHA-256 of the canonical encoding (FleetJSON: sorted keys): how a frugal check-in names facts
    /// it does not send again. Compared only with the facts stored for the same device.
    public var digest: String {
        Digest.sha256Hex([UInt8]((try? FleetJSON.encode(self)) ?? Data()))
    }
}
