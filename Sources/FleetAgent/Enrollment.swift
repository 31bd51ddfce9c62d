import FleetClient
import FleetCore

/// What the agent keeps after enrolling: that it did, with which token, and what the controller said.
struct EnrollmentRecord: Codable, Equatable {
    var deviceId: String
    var status: DeviceAccess
    var at: Int64
    /// SHA-256 of the token used: a different token (after a revocation) means enroll again.
    var tokenSha256: String?
}

extension Agent {
    /// On the first cycle with an enrollment token (and again when given a new one): registers
    /// this device's identity (its client certificate, over mutual TLS) and first facts. The
    /// controller spends the token; from then on the device is known only by its certificate.
    /// A device enrolled already under the same certificate goes on.
    func enrollIfNeeded(facts: DeviceFacts) throws {
        guard let token = options.enrollToken else { return }
        let tokenSha = Digest.sha256Hex(Array(token.utf8))
        if let record = try state.load("enrollment.json", as: EnrollmentRecord.self),
            record.tokenSha256 == nil || record.tokenSha256 == tokenSha
        {
            return
        }
        let request = EnrollmentRequest(deviceId: deviceId, token: token, facts: facts, agentVersion: Self.version)
        let status: DeviceAccess
        do {
            let identity = try installer.http.json(
                "POST", "\(options.controllerURL)/v1/enroll", body: request, as: DeviceIdentityInfo.self,
                maxResponseBytes: 1 << 20)
            status = identity.status
        } catch let e as HTTPClientError
            where e.status == 409 && e.body.map(APIErrorBody.message(from:))?.hasPrefix("already-enrolled") == true
        {
            status = .accepted
        } catch let e as HTTPClientError where e.code == .status && !e.isTransient {
            // Refused (a spent or expired token, say): the check-in that follows tells whether
            // this certificate is enrolled anyway (a device whose state was wiped) or not.
            logger.error(
                "enrollment refused",
                metadata: ["device": "\(deviceId)", "error": "\(e.body.map(APIErrorBody.message(from:)) ?? e.message)"])
            return
        }
        try state.save("enrollment.json", EnrollmentRecord(deviceId: deviceId, status: status, at: Clock.wall(), tokenSha256: tokenSha))
        logger.notice("enrolled", metadata: ["device": "\(deviceId)", "status": "\(status.rawValue)"])
    }
}
