/// Where a rollout stands. Stored and shown by its raw value.
public enum RolloutState: String, Codable, Sendable, CaseIterable {
    /// Sending its release (a staged one: cell by cell, wave by wave).
    case active
    /// Every cell completed: it stays in force, so devices that appear later get its release.
    case completed
    /// Stopped by an operator: the devices it reached are sent what they ran before.
    case aborted
    /// Replaced by a newer rollout of the same model that covers all its devices: out of force.
    case superseded

    /// Whether it still decides what its devices get.
    public var inForce: Bool { self != .superseded }
}
