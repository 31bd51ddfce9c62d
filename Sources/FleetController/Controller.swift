import FleetCore
import Foundation
import Hummingbird
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
        let artifacts = try ArtifactStore(root: options.dataDirectory + "/artifacts")
        let policies = try PolicyLoader.load(directory: options.configDirectory)
        let planner = DeltaPlanner(store: store, artifacts: artifacts, builder: deltaBuilder, logger: logger, clock: clock)
        let driver = RolloutDriver(store: store, logger: logger, clock: clock, tickSeconds: options.rolloutTickSeconds, metrics: metrics)
        let director = Director(store: store, keys: keys, config: config, artifactBaseURL: options.artifactBaseURL,
                                metrics: metrics, logger: logger, pollSeconds: options.pollSeconds, planner: planner, driver: driver)

        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: ErrorMiddleware())
        router.get("/healthz") { _, _ in try JSON.response(["status": "ok"]) }
        router.get("/metrics") { _, _ in
            metrics.devices.set(Int64(try await store.devices().count))
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
        DeviceRoutes(director: director, store: store, metrics: metrics, clock: clock).register(router)
        ArtifactRoutes(artifacts: artifacts, metrics: metrics, maxArtifactBytes: options.maxArtifactBytes).register(router)
        OperatorRoutes(director: director, store: store, artifacts: artifacts, config: config, keys: keys, policies: policies,
                       driver: driver, clock: clock).register(router)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "edgefleet-controller"),
            services: [planner, driver],
            logger: logger)
        return (app, driver)
    }

    /// Runs the controller until SIGTERM or SIGINT, then drains in-flight requests and stops.
    public static func serve(options: ControllerOptions, logger: Logger) async throws {
        let (app, _) = try makeApplication(options: options, logger: logger, deltaBuilder: options.deltas ? FleetDeltaBuilder() : nil)
        logger.info("controller listening", metadata: ["listen": "\(options.host):\(options.port)", "data": "\(options.dataDirectory)"])
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }
}

public enum SizeParser {
    public static func parse(_ s: String) -> Int64? { ByteCount.parse(s) }
}
