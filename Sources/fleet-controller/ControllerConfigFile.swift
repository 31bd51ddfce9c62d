import FleetCore
import Foundation

/// `fleet-controller serve`'s configuration file: every flag of `serve` by its name. The same strict
/// reader as the agent's, so that both files follow one set of rules.
enum ControllerConfigFile {
    static let defaultPath = "/etc/edgefleet/controller.yaml"

    static let schema = ConfigSchema([
        "data": .string, "listen": .string, "keys": .string, "config": .string, "artifact-base-url": .string,
        "poll-seconds": .integer, "measured-devices": .integer, "max-artifact-size": .size, "log-level": .string,
        "evaluator": .string, "scrub-interval": .string, "database": .string, "no-migrate": .flag, "replica": .string,
        "artifact-accel-redirect": .string, "tls-cert": .string, "tls-key": .string, "client-ca": .string,
        "insecure-dev": .flag, "checkin-burst": .integer, "checkins-per-minute": .integer, "view-label": .string,
        "trusted-proxy": .list, "event-loops": .integer
    ])

    static func expand(_ argv: [String]) throws(ConfigFileError) -> [String] {
        try ConfigFileCommandLine.expand(
            argv, subcommand: "serve", schema: schema, defaultPath: defaultPath,
            exists: { FileManager.default.fileExists(atPath: $0) },
            read: { try? String(contentsOfFile: $0, encoding: .utf8) })
    }
}
