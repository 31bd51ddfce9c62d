/// How the controller decides who may call it, and the per-device limits.
public struct AccessOptions: Sendable {
    public enum Mode: String, Sendable {
        /// Development on plain HTTP: callers without a token act as admin, devices need not
        /// enroll (a revoked device is still refused). Logged loudly at start.
        case open
        /// Operators need a token with the right role; devices must enroll and then present the
        /// client certificate they enrolled with (mutual TLS).
        case enforced
    }

    public var mode: Mode
    /// Check-ins a device may make at once, and refilled per minute after.
    public var checkInBurst: Int
    public var checkInsPerMinute: Int
    /// Enrollment attempts per device id, at once and per minute.
    public var enrollBurst: Int
    public var enrollPerMinute: Int
    /// Default and longest life of an enrollment token.
    public var enrollmentTokenSeconds: Int64
    public var enrollmentTokenMaxSeconds: Int64
    /// TLS-terminating proxies whose verified client certificates (X-Client-Cert) are believed;
    /// when there are any, device certificates come from them instead of the controller's own TLS.
    public var trustedProxies: TrustedProxies = .none
    /// How the device's client certificate is found; tests replace it (no TLS socket in router tests).
    var peerCertificates: PeerCertificate.Source = PeerCertificate.fromTLS

    /// The options in force: behind trusted proxies, certificates are read from their headers.
    var resolved: AccessOptions {
        var o = self
        if !trustedProxies.isEmpty { o.peerCertificates = trustedProxies.source }
        return o
    }

    public init(
        mode: Mode = .open, checkInBurst: Int = 30, checkInsPerMinute: Int = 120, enrollBurst: Int = 5, enrollPerMinute: Int = 5,
        enrollmentTokenSeconds: Int64 = 86_400, enrollmentTokenMaxSeconds: Int64 = 30 * 86_400
    ) {
        self.mode = mode; self.checkInBurst = checkInBurst; self.checkInsPerMinute = checkInsPerMinute
        self.enrollBurst = enrollBurst; self.enrollPerMinute = enrollPerMinute
        self.enrollmentTokenSeconds = enrollmentTokenSeconds; self.enrollmentTokenMaxSeconds = enrollmentTokenMaxSeconds
    }
}
