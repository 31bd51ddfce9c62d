import ArgumentParser
import FleetController
import FleetCore

/// TLS, access mode and per-device limits of `serve`.
struct SecurityOptions: ParsableArguments {
    @Option(
        help:
            "PEM server certificate (chain) of the controller; with --tls-key and --client-ca, serves HTTPS with client certificates and enforces access."
    )
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(help: "PEM CA certificate that signs device client certificates (the fleet CA).")
    var clientCa: String?

    @Flag(
        help:
            "Open access for development: no operator tokens, devices need not enroll. Plain HTTP on a loopback address implies it; on any other address it must be given explicitly."
    )
    var insecureDev = false

    @Option(
        help:
            "Address or network (10.0.0.0/8) of a TLS-terminating proxy in front of this controller (nginx from deploy/nginx with --tls-cert): device certificates it verified are taken from its X-Client-Cert header, and access is enforced on plain HTTP. Repeatable. Headers from any other address are ignored."
    )
    var trustedProxy: [String] = []

    @Option(help: "Check-ins a device may make at once before it is rate limited (429).")
    var checkinBurst: Int = 30

    @Option(help: "Check-ins per minute a device may make after its burst.")
    var checkinsPerMinute: Int = 120

    var tls: ControllerTLS? {
        guard let tlsCert, let tlsKey, let clientCa else { return nil }
        return ControllerTLS(certificateFile: tlsCert, privateKeyFile: tlsKey, clientCAFile: clientCa)
    }

    var proxies: TrustedProxies { (try? TrustedProxies(trustedProxy)) ?? .none }

    var access: AccessOptions {
        let secured = tls != nil || !proxies.isEmpty
        var a = AccessOptions(
            mode: secured && !insecureDev ? .enforced : .open, checkInBurst: checkinBurst, checkInsPerMinute: checkinsPerMinute)
        a.trustedProxies = proxies
        return a
    }

    func validate(host: String) throws {
        let given = [tlsCert, tlsKey, clientCa].compactMap { $0 }.count
        guard given == 0 || given == 3 else { throw ValidationError("--tls-cert, --tls-key and --client-ca go together") }
        do { _ = try TrustedProxies(trustedProxy) } catch { throw ValidationError("--trusted-proxy \(error)") }
        if given == 3, !trustedProxy.isEmpty {
            throw ValidationError("--trusted-proxy is for a controller behind a proxy that terminates TLS; it does not go with --tls-cert")
        }
        if !trustedProxy.isEmpty, insecureDev {
            throw ValidationError("--trusted-proxy enforces access; it does not go with --insecure-dev")
        }
        guard checkinBurst >= 1, checkinsPerMinute >= 1 else {
            throw ValidationError("--checkin-burst and --checkins-per-minute must be at least 1")
        }
        let loopback = host == "localhost" || host == "::1" || host.hasPrefix("127.")
        if given == 0, trustedProxy.isEmpty, !loopback, !insecureDev {
            throw ValidationError(
                "plain HTTP on \(host) would open the fleet to the network: give --tls-cert, --tls-key and --client-ca (or --trusted-proxy behind a TLS proxy), or --insecure-dev to accept that"
            )
        }
    }
}
