@testable import FleetClient
import FleetCore
import Foundation
import Testing
import TestSupport
@testable import FleetAgent

/// `fleet-agent doctor`'s checks with the device around them injected: the clock, the
/// controller's answer, free space. Assertions are on finding codes, not on their wording.
@Suite("Agent doctor", .ownThread)
struct DoctorTests {
    /// A self-signed certificate valid from `notBefore` to `notAfter` (30 days).
    static let certificate = """
        -----BEGIN CERTIFICATE-----
        MIIBgDCCASegAwIBAgIUTIxoggEMegDIriT0QwinPBJ8mcowCgYIKoZIzj0EAwIw
        FjEUMBIGA1UEAwwLZG9jdG9yLXRlc3QwHhcNMjYxMjA2MDAwMTE0WhcNMjcwMTA1
        MDAwMTE0WjAWMRQwEgYDVQQDDAtkb2N0b3ItdGVzdDBZMBMGByqGSM49AgEGCCqG
        SM49AwEHA0IABM7/c/cn1YBG0SPkruvPa/gdtncXH4+D5fy6Y66Zj17DYpTT9D4m
        4ddV38w0tlXMfcpYBWZIEN4UAm3enFffilKjUzBRMB0GA1UdDgQWBBR8OhZ/uMOh
        LLz67SyH6SeVzzHoejAfBgNVHSMEGDAWgBR8OhZ/uMOhLLz67SyH6SeVzzHoejAP
        BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIAwy/bAsuQXN7DlvasMd
        zcrWWt/oirF1YnUZ2y9ALP8pAiBOigZ1XrcRoSsJX5JF5NEj4/6Ni5dBZZvN0W12
        Ix+JSw==
        -----END CERTIFICATE-----
        """
    static let notBefore: Int64 = 1_796_515_274
    static let notAfter: Int64 = 1_799_107_274

    struct Device {
        let dir: String
        var settings: DoctorSettings
        func cleanup() { try? FileManager.default.removeItem(atPath: dir) }
    }

    func device(certificate: Bool = true) throws -> Device {
        let dir = try tempDir()
        try FileManager.default.createDirectory(atPath: dir + "/state", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/models", withIntermediateDirectories: true)
        try Self.certificate.write(toFile: dir + "/ca.pem", atomically: true, encoding: .utf8)
        try Self.certificate.write(toFile: dir + "/device.pem", atomically: true, encoding: .utf8)
        try "key".write(toFile: dir + "/device.key", atomically: true, encoding: .utf8)
        var keys: [Role: SigningKey] = [:]
        for role in Role.allCases { keys[role] = SigningKey(role: role) }
        let root = RootMetadata(version: 1, expiresAt: Self.notAfter + 365 * 86400, roleKeys: keys)
        try FleetJSON.encode(try Envelope.sign(root, type: PayloadType.root, keys: [keys[.root]!])).write(
            to: URL(fileURLWithPath: dir + "/root.json"))
        let settings = DoctorSettings(
            controllerURL: "https://ctl.example", stateDirectory: dir + "/state", modelsDirectory: dir + "/models",
            rootFile: dir + "/root.json",
            tls: TLSOptions(caFile: dir + "/ca.pem", certFile: dir + "/device.pem", keyFile: dir + "/device.key"),
            healthCommand: "/bin/sh -c true")
        return Device(dir: dir, settings: settings)
    }

    static func httpDate(_ t: Int64) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return f.string(from: Date(timeIntervalSince1970: TimeInterval(t)))
    }

    /// The device at `now`, a controller whose clock reads `controllerNow`, `free` bytes free.
    func environment(now: Int64, controllerNow: Int64? = nil, reachable: Bool = true, free: Int64 = 1 << 40) -> DoctorEnvironment {
        DoctorEnvironment(
            now: { now },
            get: { url, _ in
                guard reachable else { throw HTTPClientError(.connect, "connection refused") }
                return HTTPResponse(status: 200, headers: ["date": Self.httpDate(controllerNow ?? now)], body: Data("{}".utf8))
            },
            freeBytes: { _ in free },
            searchPath: ["/usr/bin", "/bin"])
    }

    func problems(_ findings: [DoctorFinding]) -> Set<DoctorFinding.Code> {
        Set(findings.filter { $0.severity == .problem }.map(\.code))
    }

    @Test func aHealthyDeviceHasNoProblems() throws {
        let d = try device(); defer { d.cleanup() }
        let findings = AgentDoctor(settings: d.settings, environment: environment(now: Self.notBefore + 86400)).check()
        #expect(problems(findings).isEmpty, "\(findings)")
        #expect(
            Set(findings.map(\.code)).isSuperset(of: [
                .rootWillPin, .certificateOK, .controllerReachable, .clockOK, .diskOK,
                .stateWritable, .modelsWritable, .healthCommandFound
            ]))
    }

    @Test func certificateDatesAreJudgedAgainstTheDeviceClock() throws {
        let d = try device(); defer { d.cleanup() }
        func codes(at now: Int64) -> Set<DoctorFinding.Code> {
            Set(AgentDoctor(settings: d.settings, environment: environment(now: now)).checkCertificates().map(\.code))
        }
        #expect(codes(at: Self.notAfter + 1) == [.certificateExpired])
        #expect(codes(at: Self.notBefore - 3600) == [.certificateNotYetValid])
        #expect(codes(at: Self.notAfter - 86400) == [.certificateExpiring])
        #expect(codes(at: Self.notBefore + 3600) == [.certificateOK])
        #expect(try CertificateDates.parse(pem: Self.certificate) == [CertificateDates(notBefore: Self.notBefore, notAfter: Self.notAfter)])
    }

    @Test func clockSkewAgainstTheControllersDateHeader() throws {
        let d = try device(); defer { d.cleanup() }
        let now = Self.notBefore + 86400
        func codes(_ controllerNow: Int64) -> Set<DoctorFinding.Code> {
            Set(
                AgentDoctor(settings: d.settings, environment: environment(now: now, controllerNow: controllerNow)).checkController().map(
                    \.code))
        }
        #expect(codes(now + 600) == [.controllerReachable, .clockSkew])
        #expect(codes(now - 600) == [.controllerReachable, .clockSkew])
        #expect(codes(now + 5) == [.controllerReachable, .clockOK])
        #expect(CivilTime.parseHTTPDate("Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
    }

    @Test func diskTooSmallForTheLargestAssignedModel() throws {
        let d = try device(); defer { d.cleanup() }
        var journal = Journal()
        for (model, size) in [("small", Int64(1_000)), ("large", Int64(5_000_000))] {
            let job = InstallJob(
                model: model, release: "\(model)@1", variant: "fp16", sha256: String(repeating: "a", count: 64), size: size,
                fileName: "m.onnx", url: "http://x", counter: 1, previousSha256: nil)
            journal.installs[model] = InstallState(phase: .committed, job: job)
        }
        try FleetJSON.encode(journal).write(to: URL(fileURLWithPath: d.settings.stateDirectory + "/journal.json"))
        let now = Self.notBefore + 86400
        #expect(
            AgentDoctor(settings: d.settings, environment: environment(now: now, free: 4_000_000)).checkDisk().map(\.code) == [
                .diskSpaceLow
            ])
        #expect(AgentDoctor(settings: d.settings, environment: environment(now: now, free: 6_000_000)).checkDisk().map(\.code) == [.diskOK])
    }

    @Test func aBrokenDeviceReportsEachProblem() throws {
        var d = try device(); defer { d.cleanup() }
        try "not a directory".write(toFile: d.dir + "/state-file", atomically: true, encoding: .utf8)
        d.settings.stateDirectory = d.dir + "/state-file"  // a file where the state directory should be
        d.settings.modelsDirectory = d.dir + "/state-file/models"  // under a file: cannot be made
        d.settings.rootFile = d.dir + "/no-root.json"
        d.settings.tls.keyFile = d.dir + "/no.key"
        d.settings.healthCommand = "/opt/vendor/check-model --fast"
        let findings = AgentDoctor(settings: d.settings, environment: environment(now: Self.notAfter + 10, reachable: false)).check()
        #expect(
            problems(findings) == [
                .rootMissing, .certificateExpired, .keyUnreadable, .controllerUnreachable,
                .stateNotWritable, .modelsNotWritable, .healthCommandMissing
            ])
        #expect(findings.filter { $0.severity == .problem }.allSatisfy { !$0.fix.isEmpty })
    }

    @Test func pinnedRootThatExpiredOrIsCorrupt() throws {
        let d = try device(); defer { d.cleanup() }
        let env = try Envelope.parse(Data(contentsOf: URL(fileURLWithPath: d.settings.rootFile!)))
        let trust = try TrustedState(pinning: env, now: Self.notBefore)
        try FleetJSON.encode(trust).write(to: URL(fileURLWithPath: d.settings.stateDirectory + "/trust.json"))
        let doctor = { (now: Int64) in AgentDoctor(settings: d.settings, environment: environment(now: now)).checkRoot().map(\.code) }
        #expect(doctor(Self.notBefore) == [.rootPinned])
        #expect(doctor(Self.notAfter + 366 * 86400) == [.rootExpired])
        try "{".write(toFile: d.settings.stateDirectory + "/trust.json", atomically: true, encoding: .utf8)
        #expect(doctor(Self.notBefore) == [.rootInvalid])
    }

    /// Doctor as root for a service that runs as another account: the directories are probed with
    /// that account's rights (root could write anywhere), and the finding says whose.
    @Test func rootChecksTheDirectoriesAsTheServiceUser() throws {
        var d = try device(); defer { d.cleanup() }
        let now = Self.notBefore + 86400
        d.settings.serviceUser = ("nobody", "--user")
        d.settings.modelsDirectory = d.settings.stateDirectory + "/models"  // to be created under state
        var env = environment(now: now)
        guard geteuid() == 0 else {
            // Not root: no switching; said plainly, with the service's account named.
            env.lookupUser = { _ in ServiceUser(name: "nobody", uid: 65534, gid: 65534, groups: [65534]) }
            let findings = AgentDoctor(settings: d.settings, environment: env).check()
            #expect(findings.contains { $0.code == .checkedAsOtherUser && $0.severity == .warning })
            return
        }
        let nobody = try #require(ServiceUser.lookup("nobody"))
        #expect(chmod(d.dir, 0o755) == 0)
        let asNobody = AgentDoctor(settings: d.settings, environment: env).check()
        #expect(asNobody.contains { $0.code == .checkedAsServiceUser && $0.severity == .ok })
        #expect(problems(asNobody) == [.stateNotWritable, .modelsNotWritable], "\(asNobody)")
        // The same directories are writable for root itself: without a service user they pass.
        var asRoot = d.settings
        asRoot.serviceUser = nil
        let mine = AgentDoctor(settings: asRoot, environment: env).check()
        #expect(problems(mine).isEmpty && mine.contains { $0.code == .checkedAsDoctorUser }, "\(mine)")
        // Given to the account, the state directory takes its files and the models one can be made.
        #expect(chown(d.settings.stateDirectory, nobody.uid, nobody.gid) == 0)
        let owned = AgentDoctor(settings: d.settings, environment: env).check()
        #expect(problems(owned).isEmpty, "\(owned)")
        #expect(Set(owned.map(\.code)).isSuperset(of: [.stateWritable, .modelsWritable]))
        // The probe left nothing behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: d.settings.stateDirectory).isEmpty)
    }

    @Test func aServiceUserThatDoesNotExistOrCannotBeTakenOn() throws {
        var d = try device(); defer { d.cleanup() }
        var env = environment(now: Self.notBefore + 86400)
        d.settings.serviceUser = ("edgefleet", "User= in /lib/systemd/system/edgefleet-agent.service")
        env.lookupUser = { _ in nil }
        #expect(problems(AgentDoctor(settings: d.settings, environment: env).check()) == [.serviceUserUnknown])
        // Doctor as an ordinary user for a service that runs as another: checked as itself, warned.
        env.lookupUser = { name in ServiceUser(name: name, uid: 998, gid: 998, groups: [998]) }
        env.effectiveUID = geteuid() == 0 ? 1000 : geteuid()
        let other = AgentDoctor(settings: d.settings, environment: env).check()
        #expect(other.contains { $0.code == .checkedAsOtherUser && $0.severity == .warning })
        // Doctor as the service's own account: no switch, no warning.
        env.lookupUser = { name in ServiceUser(name: name, uid: geteuid(), gid: getegid(), groups: [getegid()]) }
        env.effectiveUID = geteuid()
        let same = AgentDoctor(settings: d.settings, environment: env).check()
        #expect(same.contains { $0.code == .checkedAsServiceUser } && problems(same).isEmpty, "\(same)")
    }

    @Test func theUnitsUserWithItsDropIns() {
        let unit = "[Unit]\nUser=not-this\n[Service]\nType=notify\nUser=edgefleet\nGroup=edgefleet\n"
        #expect(ServiceUser.unitUser([unit]) == "edgefleet")
        #expect(ServiceUser.unitUser([unit, "[Service]\nUser=edge-ops\n"]) == "edge-ops")
        // An empty assignment resets it, as systemd does: the service then runs as root.
        #expect(ServiceUser.unitUser([unit, "[Service]\nUser=\n"]) == nil)
        #expect(ServiceUser.unitUser(["[Service]\nExecStart=/usr/bin/fleet-agent run\n"]) == nil)
    }
}
