import FleetCore
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import Prometheus

/// Settings of one controller process.
public struct ControllerOptions: Sendable {
    public var dataDirectory: String
    public var host: String
    public var port: Int
    public var keysDirectory: String
    public var configDirectory: String
    public var artifactBaseURL: String?
    public var maxArtifactBytes: Int64
    public var pollSeconds: Int
    /// Build and serve delta packages against what devices run.
    public var deltas: Bool
    /// Seconds between evaluations of staged rollouts' gates; nil: only when asked (tests).
    public var rolloutTickSeconds: Double?
    /// Who may call what, and the per-device limits (open by default: development and router tests).
    public var access = AccessOptions()
    /// Mutual TLS; nil serves plain HTTP.
    public var tls: ControllerTLS? = nil
    /// Devices of a hardware class that must have measured a variant before selection ranks it by
    /// the fleet's figures rather than by the class's format order.
    public var minMeasuredDevices: Int = 3
    /// The command that measures variants built on the controller (`CMD BASE VARIANT`); nil: unmeasured.
    public var evaluator: String? = ProcessInfo.processInfo.environment["EDGEFLEET_EVALUATOR"]
    /// Seconds between scrub passes that hash every stored artifact again; nil or 0: none.
    public var scrubIntervalSeconds: Double? = 6 * 3600
    /// nginx's internal location for the shared artifact directory (`/_artifacts/`): artifacts are
    /// answered with `X-Accel-Redirect` after the access check instead of their bytes; nil: bytes.
    public var artifactAccelRedirect: String? = nil

    public init(dataDirectory: String, host: String, port: Int, keysDirectory: String, configDirectory: String,
                artifactBaseURL: String? = nil, maxArtifactBytes: Int64 = 8 << 30, pollSeconds: Int = 30, deltas: Bool = true,
                rolloutTickSeconds: Double? = 5) {
        self.dataDirectory = dataDirectory; self.host = host; self.port = port; self.keysDirectory = keysDirectory
        self.configDirectory = configDirectory; self.artifactBaseURL = artifactBaseURL
        self.maxArtifactBytes = maxArtifactBytes; self.pollSeconds = pollSeconds; self.deltas = deltas
        self.rolloutTickSeconds = rolloutTickSeconds
    }
}

public enum Controller {
    static func wallClock() -> Int64 { Int64(Date().timeIntervalSince1970) }

    /// The controller as an application: every route, and the delta planner and rollout driver as
    /// services. Tests drive it with `app.test(.router)` and tick the driver with their own clock.
    static func makeApplication(options: ControllerOptions, logger: Logger, clock: @escaping @Sendable () -> Int64 = wallClock,
                                metrics: ControllerMetrics = ControllerMetrics(),
                                deltaBuilder: (any DeltaBuilding)? = nil) throws -> (some ApplicationProtocol, RolloutDriver) {
        try FileManager.default.createDirectory(atPath: options.dataDirectory, withIntermediateDirectories: true)
        let config = try FleetConfig.load(directory: options.configDirectory)
        let keys = try OnlineKeys.load(directory: options.keysDirectory, now: clock())
        let store = try SQLiteStore(path: options.dataDirectory + "/fleet.sqlite")
        try store.migrateQuarantine()
        try keys.history.restore(try store.rootVersionsSync(), now: clock())
        if options.access.mode == .enforced {
            try AdminBootstrap.ensureAdmin(store: store, dataDirectory: options.dataDirectory, now: clock(), logger: logger)
        }
        let artifacts = try ArtifactStore(root: options.dataDirectory + "/artifacts")
        let policies = try PolicyBook(directory: options.configDirectory)
        let quarantine = ArtifactQuarantine(artifacts: artifacts, store: store, metrics: metrics, logger: logger, clock: clock)
        let scrubber = ArtifactScrubber(quarantine: quarantine, store: store, intervalSeconds: options.scrubIntervalSeconds)
        let planner = DeltaPlanner(store: store, artifacts: artifacts, builder: deltaBuilder, logger: logger, clock: clock, quarantine: quarantine)
        let driver = RolloutDriver(store: store, logger: logger, clock: clock, tickSeconds: options.rolloutTickSeconds, metrics: metrics)
        let performance = PerformanceBook(store: store, clock: clock)
        let director = Director(store: store, keys: keys, config: config, artifactBaseURL: options.artifactBaseURL,
                                metrics: metrics, logger: logger, pollSeconds: options.pollSeconds, planner: planner, driver: driver,
                                performance: performance, minMeasuredDevices: options.minMeasuredDevices, quarantine: quarantine)

        let router = Router(context: FleetRequestContext.self)
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: AccessMiddleware(options: options.access, store: store,
                                                checkIns: RateLimiter(burst: options.access.checkInBurst, perMinute: options.access.checkInsPerMinute, clock: clock),
                                                metrics: metrics, clock: clock))
        router.get("/healthz") { _, _ in try JSON.response(["status": "ok"]) }
        let performanceRoutes = PerformanceRoutes(store: store, performance: performance, metrics: metrics, clock: clock)
        router.get("/metrics") { _, _ in
            metrics.devices.set(Int64(try await store.devices().count))
            try await performanceRoutes.recordMetrics()
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
        DeviceRoutes(director: director, store: store, metrics: metrics, clock: clock, quarantine: quarantine).register(router)
        ArtifactRoutes(artifacts: artifacts, metrics: metrics, maxArtifactBytes: options.maxArtifactBytes,
                       quarantine: quarantine, scrubber: scrubber, accelRedirect: options.artifactAccelRedirect).register(router)
        let operatorRoutes = OperatorRoutes(director: director, store: store, artifacts: artifacts, config: config, keys: keys,
                                            policies: policies, driver: driver, clock: clock)
        operatorRoutes.register(router)
        performanceRoutes.register(router)
        VariantRoutes(store: store, builder: VariantBuildService(
            store: store, artifacts: artifacts, recipesFile: options.configDirectory + "/recipes.yaml",
            evaluator: options.evaluator, logger: logger, clock: clock)).register(router)
        DashboardRoutes(store: store, access: store, operatorRoutes: operatorRoutes, performance: performance, quarantine: store, clock: clock,
                        secureCookies: options.tls != nil).register(router)
        AccessRoutes(store: store, keys: keys, options: options.access,
                     enrollments: RateLimiter(burst: options.access.enrollBurst, perMinute: options.access.enrollPerMinute, clock: clock),
                     clock: clock).register(router)
        let server: HTTPServerBuilder = try options.tls.map { try .tls(.http1(), tlsConfiguration: try $0.configuration()) } ?? .http1()
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "edgefleet-controller"),
            services: [planner, driver, scrubber, PolicyReloadService(book: policies, logger: logger)],
            logger: logger)
        return (app, driver)
    }

    /// Runs the controller until SIGTERM or SIGINT, then drains in-flight requests and stops.
    public static func serve(options: ControllerOptions, logger: Logger) async throws {
        let (app, _) = try makeApplication(options: options, logger: logger, deltaBuilder: options.deltas ? FleetDeltaBuilder() : nil)
        logger.info("controller listening", metadata: ["listen": "\(options.host):\(options.port)", "data": "\(options.dataDirectory)",
                                                       "tls": "\(options.tls != nil)", "access": "\(options.access.mode.rawValue)"])
        if options.access.mode == .open {
            logger.warning("INSECURE DEVELOPMENT MODE: no operator tokens, no device identities; anyone who can reach \(options.host):\(options.port) is admin. Serve with --tls-cert, --tls-key and --client-ca for a real fleet.")
        }
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }
}

public enum SizeParser {
    public static func parse(_ s: String) -> Int64? { ByteCount.parse(s) }
}
