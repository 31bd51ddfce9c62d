import Hummingbird

/// Why a caller was refused: who it is (401), what it may do (403), or how often it may ask (429).
/// Mapped to HTTP in `APIError.from`, the one place errors become responses.
struct AccessError: Error, CustomStringConvertible {
    enum Code: String {
        // 401: no usable credential
        case unauthenticated = "unauthenticated"
        case invalidToken = "invalid-token"
        case tokenExpired = "token-expired"
        case tokenRevoked = "token-revoked"
        case clientCertificateRequired = "client-certificate-required"
        // 403: known, but not allowed
        case insufficientRole = "insufficient-role"
        case unknownDevice = "unknown-device-identity"
        case identityMismatch = "identity-mismatch"
        case devicePending = "device-pending"
        case deviceRevoked = "device-revoked"
        // enrollment
        case enrollmentTokenInvalid = "enrollment-token-invalid"
        case enrollmentTokenUsed = "enrollment-token-used"
        case enrollmentTokenExpired = "enrollment-token-expired"
        case enrollmentTokenWrongDevice = "enrollment-token-wrong-device"
        case alreadyEnrolled = "already-enrolled"
        // 429
        case rateLimited = "rate-limited"
    }

    let code: Code
    let message: String
    /// Seconds until a rate-limited caller may try again.
    var retryAfter: Int? = nil

    init(_ code: Code, _ message: String, retryAfter: Int? = nil) {
        self.code = code; self.message = message; self.retryAfter = retryAfter
    }

    var description: String { "\(code.rawValue): \(message)" }

    var status: HTTPResponse.Status {
        switch code {
        case .unauthenticated, .invalidToken, .tokenExpired, .tokenRevoked, .clientCertificateRequired: .unauthorized
        case .insufficientRole, .unknownDevice, .identityMismatch, .devicePending, .deviceRevoked: .forbidden
        case .enrollmentTokenInvalid, .enrollmentTokenUsed, .enrollmentTokenExpired, .enrollmentTokenWrongDevice: .forbidden
        case .alreadyEnrolled: .conflict
        case .rateLimited: .tooManyRequests
        }
    }
}
