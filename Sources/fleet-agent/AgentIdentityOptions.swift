import ArgumentParser
import FleetClient
// FleetCore re-exports FoundationEssentials only: full Foundation would link ICU data into the
// static agent.
import FleetCore

/// How the agent proves who it is, and whom it trusts, over TLS.
struct AgentIdentityOptions: ParsableArguments {
    @Option(help: "The fleet CA certificate (PEM): the controller's https:// certificate must chain to it, and to nothing else.")
    var ca: String?

    @Option(help: "This device's client certificate (PEM), signed by the fleet CA.")
    var cert: String?

    @Option(help: "The private key (PEM) of --cert; keep it readable by the agent only.")
    var key: String?

    @Option(help: "File with the one-time enrollment token from `fleetctl devices enroll-token` (first run; or $EDGEFLEET_ENROLL_TOKEN).")
    var enrollTokenFile: String?

    func validate() throws {
        guard (cert == nil) == (key == nil) else { throw ValidationError("--cert and --key go together") }
        for (flag, file) in [("--ca", ca), ("--cert", cert), ("--key", key), ("--enroll-token-file", enrollTokenFile)] {
            if let file, !FileManager.default.isReadableFile(atPath: file) { throw ValidationError("\(flag) \(file) cannot be read") }
        }
    }

    var tls: TLSOptions { TLSOptions(caFile: ca, certFile: cert, keyFile: key) }

    func enrollToken() throws -> String? {
        if let enrollTokenFile {
            guard let text = try? String(contentsOfFile: enrollTokenFile, encoding: .utf8) else {
                throw ValidationError("--enroll-token-file \(enrollTokenFile) cannot be read")
            }
            let token = text.trimmed
            return token.isEmpty ? nil : token
        }
        return ProcessInfo.processInfo.environment["EDGEFLEET_ENROLL_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
    }
}
