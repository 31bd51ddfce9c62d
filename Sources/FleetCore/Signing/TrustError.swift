/// Why signed metadata or an artifact was refused. Faults are classed the way TUF names attacks,
/// so that a test can assert which defence fired.
public struct TrustError: Error, Equatable, CustomStringConvertible {
    public enum Fault: String, Sendable, Codable {
        case malformed  // not parseable, wrong shape, bad base64
        case duplicateKey  // JSON with a repeated key
        case tooLarge  // over the metadata size limit
        case wrongPayloadType  // an envelope of another kind
        case missingSignature  // no signature from a key of the role
        case badSignature  // signatures present, none valid for the role
        case thresholdNotMet  // some valid, fewer than the threshold
        case expired  // metadata past its expiry
        case rollback  // version or counter lower than one already trusted
        case replay  // same counter, different content
        case wrongDevice  // assignment for another device
        case wrongHardwareClass  // assignment for another hardware class
        case notInCatalog  // artifact not in the signed release catalog
        case mixAndMatch  // catalog and assignment/timestamp do not belong together
        case lengthMismatch  // artifact length differs from the signed length
        case hashMismatch  // artifact sha256 differs from the signed hash
        case unsupported  // a version or key type this build does not know
        case wrongKind  // an agent release for a model slot, or a model for the agent's
    }

    public let fault: Fault
    public let message: String

    public init(_ fault: Fault, _ message: String) {
        self.fault = fault
        self.message = message
    }

    public init(_ metadata: MetadataError, what: String) {
        switch metadata.code {
        case .duplicateKey: fault = .duplicateKey
        case .tooLarge: fault = .tooLarge
        case .malformed, .tooDeep: fault = .malformed
        }
        message = "\(what): \(metadata.message)"
    }

    public var description: String { "\(fault.rawValue): \(message)" }
}
