/// Where one wave of a staged rollout stands (`RolloutStatus.Wave.status`). Raw values are the
/// wire vocabulary.
///
/// The controller derives it from its cells and its rollout, so every value comes from this one
/// closed set: an unknown raw value decodes as an error (`DecodingError.dataCorrupted`), never as
/// a guessed status.
public enum WaveStatus: String, Codable, Sendable, CaseIterable {
    /// An earlier wave still runs.
    case pending
    case running
    /// One of its cells paused, rolled back or was aborted.
    case stopped
    case completed
    /// A later wave of a rollout that an operator aborted, or that a newer one superseded, before
    /// the wave began: it shows the rollout's state.
    case aborted, superseded

    /// A wave that had not begun when its rollout left the `active` state shows that state.
    public init(notBegunIn rollout: RolloutState) {
        switch rollout {
        case .active: self = .pending
        case .completed: self = .completed
        case .aborted: self = .aborted
        case .superseded: self = .superseded
        }
    }
}
