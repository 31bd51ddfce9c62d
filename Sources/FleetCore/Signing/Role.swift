/// The four roles of the trust model. root and release are offline keys held by the operator;
/// director and timestamp are online keys held by the controller.
public enum Role: String, Codable, CaseIterable, Sendable {
    case root, release, director, timestamp

    public var isOnline: Bool { self == .director || self == .timestamp }
}

/// The payload types carried by envelopes. A signature over one type never verifies as another,
/// because the type is part of the signed bytes.
public enum PayloadType {
    public static let root = "application/vnd.edgefleet.root+json"
    public static let catalog = "application/vnd.edgefleet.catalog+json"
    public static let assignment = "application/vnd.edgefleet.assignment+json"
    public static let timestamp = "application/vnd.edgefleet.timestamp+json"
}

/// Size limits for signed metadata, checked before parsing.
public enum MetadataLimits {
    public static let root = 64 * 1024
    public static let catalog = 1024 * 1024
    public static let assignment = 16 * 1024
    public static let timestamp = 16 * 1024
    public static let envelope = 2 * 1024 * 1024
    public static let checkInResponse = 8 * 1024 * 1024
}
