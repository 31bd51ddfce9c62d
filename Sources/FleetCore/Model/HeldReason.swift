/// Why a check-in answer holds a model back (`CheckInResponse.held`, `DeviceInfo.held`). On the
/// wire it is the raw string, so an agent of an older version reads a reason it does not know as
/// text, never as an error.
public enum HeldReason: String, Codable, Sendable, CaseIterable {
    /// The device's cell has not reached it in the staged rollout's phases yet.
    case waitingForPhase = "waiting-for-phase"
    /// The device's wave has not started: an earlier wave runs, or stopped.
    case waitingForWave = "waiting-for-wave"
    /// The release failed on this device for good; an operator's retry or a newer release lifts it.
    case failed
    /// Every eligible variant is over the device's bandwidth tier's byte budget.
    case overBudget = "over-budget"
    /// No variant of the release fits the device's hardware class.
    case noVariantFits = "no-variant-fits"
    /// A delta for the device's pair is being built; a budgeted tier waits for it.
    case deltaBuilding = "delta-building"
    /// The artifact the device needs failed the controller's hash check and is out of service.
    case artifactQuarantined = "artifact-quarantined"
}
