/// Why an install failed on a device, as a code that travels in `failed`, `retrying` and
/// `rolled-back` events, so that the controller and tests judge the fault class, not a message.
public enum InstallFault: String, Codable, Sendable, CaseIterable {
    /// Not enough free space for the download or the new slot.
    case noSpace = "no-space"
    /// Writing the download or the slot failed for another reason.
    case writeFailed = "write-failed"
    /// The server refused the download (an HTTP error that is not a cut connection).
    case downloadRefused = "download-refused"
    /// The server sent more bytes than the signed length.
    case tooLarge = "too-large"
    /// The downloaded bytes are not the signed length.
    case lengthMismatch = "length-mismatch"
    /// The downloaded bytes do not hash to the signed sha256.
    case hashMismatch = "hash-mismatch"
    /// The delta package could not be applied to the installed base.
    case deltaFailed = "delta-failed"
    /// The new slot could not be built from the download.
    case stagingFailed = "staging-failed"
    /// Pointing `current` at the new slot failed.
    case activationFailed = "activation-failed"
    /// The health check failed on the new model.
    case healthCheck = "health-check"
    /// The agent kept dying in one install phase; see `InstallStateMachine` `.restarted`.
    case crashLoop = "crash-loop"
    /// Retries of this assignment used up their attempts or their byte budget.
    case retriesExhausted = "retries-exhausted"
    /// A new agent binary exited, crashed or was killed before its first successful check-in.
    case agentExited = "agent-exited"
    /// A new agent binary did not check in before its hand-over deadline.
    case agentDeadline = "agent-deadline"

    /// Faults another attempt at the same assignment may cure (bytes corrupted on the way or on a
    /// server that has since been repaired, space freed). A failed health check, a crash loop or a
    /// server sending more than was signed are verdicts on the release or the server: never retried.
    public var isRetryable: Bool {
        switch self {
        case .noSpace, .writeFailed, .downloadRefused, .lengthMismatch, .hashMismatch, .deltaFailed, .stagingFailed: true
        case .tooLarge, .activationFailed, .healthCheck, .crashLoop, .retriesExhausted, .agentExited, .agentDeadline: false
        }
    }
}
