import FleetCore
import Foundation
import Logging
import ServiceLifecycle
import ServiceNotify
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif
@testable import FleetAgent

/// sd_notify as systemd's `Type=notify` expects it, received on sockets the tests make: the
/// datagrams themselves, the environment they come from, and the agent's service speaking them.
@Suite("sd_notify")
struct ServiceNotifierTests {
    @Test func readsTheEnvironmentAsSdNotifyDoes() {
        let n = ServiceNotifier(environment: ["NOTIFY_SOCKET": "@sock", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "42"], pid: 42)
        #expect(n.socketPath == "@sock" && n.isActive)
        #expect(n.watchdogInterval == .seconds(4) && n.pingInterval == .seconds(2))
        // The watchdog belongs to another process (a parent that exec'd a helper): not ours to feed.
        #expect(
            ServiceNotifier(environment: ["NOTIFY_SOCKET": "/run/s", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "41"], pid: 42)
                .pingInterval == nil)
        #expect(ServiceNotifier(environment: ["WATCHDOG_USEC": "0", "NOTIFY_SOCKET": "/run/s"]).pingInterval == nil)
        let none = ServiceNotifier(environment: [:])
        #expect(!none.isActive && !none.send("READY=1"))
    }

    @Test(arguments: [false, true])
    func datagramsReachPathAndAbstractSockets(abstract: Bool) throws {
        let socket = try NotifySocket(abstract: abstract)
        let n = ServiceNotifier(socketPath: socket.address, watchdogInterval: .seconds(10))
        n.ready(status: "up")
        n.watchdog()
        n.stopping()
        #expect(socket.receive(timeout: 5) == "READY=1\nSTATUS=up")
        #expect(socket.receive(timeout: 5) == "WATCHDOG=1")
        #expect(socket.receive(timeout: 5) == "STOPPING=1")
    }

    @Test func noWatchdogPingsWithoutAWatchdog() throws {
        let socket = try NotifySocket(abstract: true)
        let n = ServiceNotifier(socketPath: socket.address, watchdogInterval: nil)
        n.watchdog()
        n.ready()
        #expect(socket.receive(timeout: 5) == "READY=1")
    }

    @Test func aSocketThatIsGoneDoesNotStopTheDaemon() {
        #expect(!ServiceNotifier(socketPath: "/nonexistent/edgefleet.sock", watchdogInterval: nil).send("READY=1"))
        #expect(!ServiceNotifier(socketPath: "/" + String(repeating: "x", count: 200), watchdogInterval: nil).send("READY=1"))
    }

    static func agent(dir: String, controller: String) throws -> (Agent, AgentOptions) {
        var keys: [Role: SigningKey] = [:]
        for role in Role.allCases { keys[role] = SigningKey(role: role) }
        let root = RootMetadata(version: 1, expiresAt: Int64(Date().timeIntervalSince1970) + 86_400, roleKeys: keys)
        try FleetJSON.encode(try Envelope.sign(root, type: PayloadType.root, keys: [keys[.root]!])).write(
            to: URL(fileURLWithPath: dir + "/root.json"))
        let facts = DeviceFacts(deviceId: "d1", arch: "x86_64", cpuFlags: [], memoryBytes: 1 << 30, diskFreeBytes: 1 << 30)
        try FleetJSON.encode(facts).write(to: URL(fileURLWithPath: dir + "/facts.json"))
        let options = AgentOptions(
            controllerURL: controller, stateDirectory: dir + "/state", modelsDirectory: dir + "/models",
            factsFile: dir + "/facts.json", rootFile: dir + "/root.json", deviceId: "d1", pollSeconds: 0.05)
        return (try Agent(options: options, logger: Logger(label: "test")), options)
    }

    /// The agent's loop against a controller that is not there: ready once set up, the watchdog fed
    /// while it backs off between failed cycles, stopping on graceful shutdown.
    @Test func agentServiceSpeaksReadyWatchdogAndStopping() async throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let (agent, options) = try Self.agent(dir: dir, controller: "http://127.0.0.1:9")
        let logger = Logger(label: "test")
        let notify = try NotifySocket(abstract: true)
        let notifier = ServiceNotifier(socketPath: notify.address, watchdogInterval: .milliseconds(200))
        let group = ServiceGroup(
            configuration: .init(
                services: [AgentService(agent: agent, options: options, logger: logger, notifier: notifier)],
                logger: logger))
        // Its own thread: pings must not wait for the pool that parallel tests may hold.
        let running = Task(executorPreference: DedicatedExecutor(label: "agent-service")) { try await group.run() }
        try await notify.awaitLine("READY=1", within: 120)
        #expect(await notify.drain(until: { notify.count("WATCHDOG=1") >= 3 }, within: 120))
        await group.triggerGracefulShutdown()
        try await notify.awaitLine("STOPPING=1", within: 30)
        try await running.value
    }

    /// A cycle that hangs (a controller that takes the connection and never answers) stops the
    /// pings once it has run for `hungCycleSeconds`, so systemd's watchdog restarts the agent.
    @Test func aHungCycleStopsFeedingTheWatchdog() async throws {
        let dir = try tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        // Listening, never accepting: connects succeed and nothing is ever answered.
        let listener = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) == 0 && getsockname(listener, $0, &len) == 0 }
        }
        #expect(bound && listen(listener, 8) == 0)
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let (agent, options) = try Self.agent(dir: dir, controller: "http://127.0.0.1:\(port)")
        let logger = Logger(label: "test")
        let notify = try NotifySocket(abstract: true)
        let notifier = ServiceNotifier(socketPath: notify.address, watchdogInterval: .milliseconds(200))
        let service = AgentService(agent: agent, options: options, logger: logger, notifier: notifier, hungCycleSeconds: 0.5)
        let group = ServiceGroup(configuration: .init(services: [service], logger: logger))
        let running = Task(executorPreference: DedicatedExecutor(label: "agent-service")) { try await group.run() }
        try await notify.awaitLine("READY=1", within: 120)
        // The pings go quiet: a second without one comes within the deadline.
        let deadline = Date().addingTimeInterval(20)
        var quiet = false
        while !quiet, Date() < deadline { quiet = await notify.nextMessage(within: 1.0) == nil }
        #expect(quiet, "the watchdog was still fed during a hung cycle")
        #expect(notify.count("WATCHDOG=1") <= 10)
        // The controller goes away (its pending connections are reset): the cycle ends, pings resume.
        close(listener)
        let before = notify.count("WATCHDOG=1")
        #expect(await notify.drain(until: { notify.count("WATCHDOG=1") > before }, within: 120))
        await group.triggerGracefulShutdown()
        try await notify.awaitLine("STOPPING=1", within: 90)
        try await running.value
    }
}
