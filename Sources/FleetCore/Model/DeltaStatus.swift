/// Where the delta package from one base artifact to one target stands
/// (`ReleasePackages.Delta.status`). Stored and shown by its raw value.
///
/// The controller alone builds deltas, so an unknown raw value (from the store or the wire) is an
/// error, never a guessed status.
public enum DeltaStatus: String, Codable, Sendable, CaseIterable {
    /// Claimed by a replica that is encoding it; devices get the full artifact meanwhile.
    case building
    case ready
    /// Encoding failed (or gave no saving); devices get the full artifact.
    case failed
}
