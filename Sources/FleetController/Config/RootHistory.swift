import FleetCore
import Foundation
import Synchronization

/// The root metadata the controller serves: the one in root.json, then every rotation accepted
/// since, each signed by the threshold of its predecessor. Devices that pinned an older root follow
/// `chain`; release catalogs are checked against `current`.
final class RootHistory: Sendable {
    struct State: Sendable {
        var envelope: Envelope
        var root: RootMetadata
        /// Versions after the first, oldest first.
        var chain: [Envelope]
    }

    private let state: Mutex<State>

    init(envelope: Envelope, root: RootMetadata) {
        state = Mutex(State(envelope: envelope, root: root, chain: []))
    }

    var current: State { state.withLock { $0 } }

    /// Restores rotations stored earlier (at start-up): each must follow the one before. Versions
    /// up to root.json's are kept in the chain for devices that pinned older roots.
    func restore(_ stored: [Envelope], now: Int64) throws(TrustError) {
        try state.withLock { (s: inout State) throws(TrustError) in
            var trusted: RootMetadata? = nil
            for envelope in stored {
                let version = RootHistory.version(of: envelope)
                if version <= s.root.version {
                    s.chain.append(envelope)
                    continue
                }
                let next = try MetadataVerifier.verifyRootUpdate(envelope, trusted: trusted ?? s.root, now: now, checkExpiry: false)
                trusted = next
                s.root = next
                s.envelope = envelope
                s.chain.append(envelope)
            }
        }
    }

    /// Verifies `envelope` as the next root (signed by the current root's threshold and its own),
    /// and that the controller's online keys keep their roles in it. Changes nothing.
    func verifyNext(_ envelope: Envelope, now: Int64, online: [SigningKey]) throws -> RootMetadata {
        let next = try MetadataVerifier.verifyRootUpdate(envelope, trusted: current.root, now: now)
        for key in online where next.roles[key.role.rawValue]?.keyids.contains(key.keyID) != true {
            throw APIError(
                .unprocessableContent, "online-key-not-in-root",
                "the new root drops the controller's \(key.role.rawValue) key; rotate online keys with a restart instead")
        }
        return next
    }

    /// Serves a verified (and stored) next root.
    func adopt(_ envelope: Envelope, root next: RootMetadata) throws {
        try state.withLock { (st: inout State) throws in
            guard st.root.version + 1 == next.version else {
                throw APIError(.conflict, "root-changed", "another rotation was accepted meanwhile; fetch the root and try again")
            }
            st.root = next
            st.envelope = envelope
            st.chain.append(envelope)
        }
    }

    static func version(of envelope: Envelope) -> Int {
        guard let body = envelope.payloadBytes,
            let root = try? FleetJSON.decode(RootMetadata.self, from: Data(body), limit: MetadataLimits.root)
        else { return 0 }
        return root.version
    }
}
