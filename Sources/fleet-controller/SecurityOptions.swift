import ArgumentParser
import FleetController
import FleetCore

/// TLS, access mode and per-device limits of `serve`.
struct SecurityOptions: ParsableArguments {
    @Option(help: "PEM server certificate (chain) of the controller; with --tls-key and --client-ca, serves HTTPS with client certificates and enforces access.")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(help: "PEM CA certificate that signs device client certificates (the fleet CA).")
    var clientCa: String?

    @Flag(help: "Open access for development: no operator tokens, devices need not enroll. Plain HTTP on a loopback address implies it; on any other address it must be given explicitly.")
    var insecureDev = false

    @Option(help: "Check-ins a device may make at once before it is rate limited (429).")
    var checkinBurst: Int = 30

    @Option(help: "Check-ins per minute a device may make after its burst.")
    var checkinsPerMinute: Int = 120

    var tls: ControllerTLS? {
        guard let tlsCert, let tlsKey, let clientCa else { return nil }
        return ControllerTLS(certificateFile: tlsCert, privateKeyFile: tlsKey, clientCAFile: clientCa)
    }

    var access: AccessOptions {
        AccessOptions(mode: tls != nil && !insecureDev ? .enforced : .open, checkInBurst: checkinBurst, checkInsPerMinute: checkinsPerMinute)
    }

    func validate(host: String) throws {
        let given = [tlsCert, tlsKey, clientCa].compactMap { $0 }.count
        guard given == 0 || given == 3 else { throw ValidationError("--tls-cert, --tls-key and --client-ca go together") }
        guard checkinBurst >= 1, checkinsPerMinute >= 1 else { throw ValidationError("--checkin-burst and --checkins-per-minute must be at least 1") }
        let loopback = host == "localhost" || host == "::1" || host.hasPrefix("127.")
        if given == 0, !loopback, !insecureDev {
            throw ValidationError("plain HTTP on \(host) would open the fleet to the network: give --tls-cert, --tls-key and --client-ca, or --insecure-dev to accept that")
        }
    }
}
