/// Where a variant trial stands (`TrialInfo.state`). Stored and shown by its raw value.
///
/// The controller alone sets it, so an unknown raw value (from the store or the wire) is an
/// error, never a guessed state.
public enum TrialState: String, Codable, Sendable, CaseIterable {
    /// Some device has variants of the trial left to measure.
    case running
    /// Every device measured every variant (or could not run it).
    case done
}
