import ArgumentParser
import FleetAgent
import FleetClient
import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// `fleet-agent doctor`: the device's setup as `run` would find it, each finding with its fix.
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Check this device's agent setup: config, pinned root, certificates, controller, clock, disk, directories, health command.",
        discussion: "Prints one line per finding (ok, WARN, FAIL) with a fix for each problem; exits 1 when a check fails.")

    @Option(help: "The agent's configuration file (default: \(AgentConfigFile.defaultPath)).")
    var configFile: String?

    @Option(
        help:
            "The account the agent service runs as, whose rights the directory checks use when doctor runs as root (default: User= of the installed edgefleet-agent unit and its drop-ins)."
    )
    var user: String?

    func run() throws {
        let serviceUser = user.map { ($0, "--user") } ?? ServiceUser.installedUnitUser().map { ($0.user, "User= in \($0.source)") }
        let findings = Self.findings(configFile: configFile ?? AgentConfigFile.defaultPath, serviceUser: serviceUser)
        for finding in findings { print(finding) }
        let problems = findings.filter { $0.severity == .problem }.count
        let warnings = findings.filter { $0.severity == .warning }.count
        print(problems == 0 ? "doctor: no problems (\(warnings) warnings)" : "doctor: \(problems) problems, \(warnings) warnings")
        if problems > 0 { throw ExitCode(1) }
    }

    static func findings(configFile path: String, serviceUser: (name: String, source: String)? = nil) -> [DoctorFinding] {
        guard access(path, F_OK) == 0 else {
            return [
                DoctorFinding(
                    .configMissing, .problem, "no configuration file at \(path)",
                    fix: "install the edgefleet-agent package, or write \(path) (see README, Deploy on devices)")
            ]
        }
        let args: [String]
        do {
            args = try AgentConfigFile.arguments(file: path)
        } catch {
            let code = DoctorFinding.Code(rawValue: error.code.rawValue) ?? .configInvalid
            return [
                DoctorFinding(
                    code, .problem, error.description,
                    fix: error.line > 0 ? "correct line \(error.line) of \(path)" : "make \(path) readable")
            ]
        }
        // The certificate, key and token files are checked below, one finding each: `run`'s
        // validation of them would stop at the first.
        let identityFlags: Set<String> = ["--ca", "--cert", "--key", "--enroll-token-file"]
        var checked: [String] = []
        var i = 0
        while i < args.count {
            if identityFlags.contains(args[i]) { i += 2; continue }
            checked.append(args[i]); i += 1
        }
        func value(_ flag: String) -> String? { args.indices.last { args[$0] == flag && $0 + 1 < args.count }.map { args[$0 + 1] } }
        var findings: [DoctorFinding] = []
        do {
            _ = try Run.parse(checked)
            findings.append(DoctorFinding(.configOK, .ok, "\(path) is valid"))
        } catch {
            findings.append(
                DoctorFinding(
                    .configInvalid, .problem, "\(path): \(Run.message(for: error))",
                    fix: "correct \(path): every key is a `fleet-agent run` flag (see `fleet-agent run --help`)"))
        }
        guard let controller = value("--controller"), let state = value("--state"), let models = value("--models") else {
            return findings
        }
        var settings = DoctorSettings(
            controllerURL: controller, stateDirectory: state, modelsDirectory: models, rootFile: value("--root"),
            tls: TLSOptions(caFile: value("--ca"), certFile: value("--cert"), keyFile: value("--key")),
            healthCommand: value("--health-command"))
        settings.serviceUser = serviceUser
        return findings + AgentDoctor(settings: settings).check()
    }
}
