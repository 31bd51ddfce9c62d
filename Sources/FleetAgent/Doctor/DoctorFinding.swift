/// One thing `fleet-agent doctor` found about a device's setup, with what to do about it.
public struct DoctorFinding: Equatable, Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable, Comparable {
        case ok, warning, problem
        public static func < (a: Severity, b: Severity) -> Bool { a.order < b.order }
        private var order: Int { self == .ok ? 0 : self == .warning ? 1 : 2 }
    }

    /// Stable names for scripts and tests; the message is for people.
    public enum Code: String, Sendable, CaseIterable {
        case configOK = "config-ok", configMissing = "config-missing", configUnreadable = "config-unreadable"
        case configSyntax = "config-syntax", configUnsupported = "config-unsupported", configDuplicateKey = "config-duplicate-key"
        case configUnknownKey = "config-unknown-key", configBadValue = "config-bad-value", configInvalid = "config-invalid"
        case rootPinned = "root-pinned", rootWillPin = "root-will-pin", rootMissing = "root-missing"
        case rootInvalid = "root-invalid", rootExpired = "root-expired"
        case certificateOK = "cert-ok", certificateUnreadable = "cert-unreadable", certificateInvalid = "cert-invalid"
        case certificateExpired = "cert-expired", certificateNotYetValid = "cert-not-yet-valid", certificateExpiring = "cert-expiring"
        case keyUnreadable = "key-unreadable", tlsNotConfigured = "tls-not-configured"
        case controllerReachable = "controller-reachable", controllerUnreachable = "controller-unreachable"
        case controllerUnhealthy = "controller-unhealthy", controllerTLS = "controller-tls"
        case clockOK = "clock-ok", clockSkew = "clock-skew", clockUnknown = "clock-unknown"
        case diskOK = "disk-ok", diskSpaceLow = "disk-space-low", diskUnknown = "disk-unknown"
        case stateWritable = "state-writable", stateNotWritable = "state-not-writable"
        case modelsWritable = "models-writable", modelsNotWritable = "models-not-writable"
        case checkedAsServiceUser = "checked-as-service-user", checkedAsDoctorUser = "checked-as-doctor-user"
        case checkedAsOtherUser = "checked-as-other-user", serviceUserUnknown = "service-user-unknown"
        case healthCommandFound = "health-command-found", healthCommandMissing = "health-command-missing"
        case healthCommandNone = "health-command-none"
    }

    public var code: Code
    public var severity: Severity
    public var message: String
    /// What to do; empty when nothing needs doing.
    public var fix: String

    public init(_ code: Code, _ severity: Severity, _ message: String, fix: String = "") {
        self.code = code; self.severity = severity; self.message = message; self.fix = fix
    }

    public var description: String {
        let mark = severity == .ok ? "ok  " : severity == .warning ? "WARN" : "FAIL"
        return "\(mark)  \(code.rawValue): \(message)" + (fix.isEmpty ? "" : "\n      fix: \(fix)")
    }
}
