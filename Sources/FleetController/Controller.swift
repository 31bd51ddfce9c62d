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

    public init(dataDirectory: String, host: String, port: Int, keysDirectory: String, configDirectory: String,
                artifactBaseURL: String? = nil, maxArtifactBytes: Int64 = 8 << 30, pollSeconds: Int = 30, deltas: Bool = true) {
        self.dataDirectory = dataDirectory; self.host = host; self.port = port; self.keysDirectory = keysDirectory
        self.configDirectory = configDirectory; self.artifactBaseURL = artifactBaseURL
        self.maxArtifactBytes = maxArtifactBytes; self.pollSeconds = pollSeconds; self.deltas = deltas
    }
}

public enum Controller {
    static func wallClock() -> Int64 { Int64(Date().timeIntervalSince1970) }

    /// The controller as an application: every route, and the delta planner as a service.
    /// Tests drive it with `app.test(.router)`.
    static func makeApplication(options: ControllerOptions, logger: Logger, clock: @escaping @Sendable () -> Int64 = wallClock,
                                metrics: ControllerMetrics = ControllerMetrics(),
                                deltaBuilder: (any DeltaBuilding)? = nil) throws -> some ApplicationProtocol {
        try FileManager.default.createDirectory(atPath: options.dataDirectory, withIntermediateDirectories: true)
        let config = try FleetConfig.load(directory: options.configDirectory)
        let keys = try OnlineKeys.load(directory: options.keysDirectory, now: clock())
        let store = try SQLiteStore(path: options.dataDirectory + "/fleet.sqlite")
        let artifacts = try ArtifactStore(root: options.dataDirectory + "/artifacts")
        let planner = DeltaPlanner(store: store, artifacts: artifacts, builder: deltaBuilder, logger: logger, clock: clock)
        let director = Director(store: store, keys: keys, config: config, artifactBaseURL: options.artifactBaseURL,
                                metrics: metrics, logger: logger, pollSeconds: options.pollSeconds, planner: planner)

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
        OperatorRoutes(director: director, store: store, artifacts: artifacts, config: config, keys: keys, clock: clock).register(router)
        return Application(
            router: router,
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "edgefleet-controller"),
            services: [planner],
            logger: logger)
    }

    /// Runs the controller until SIGTERM or SIGINT, then drains in-flight requests and stops.
    public static func serve(options: ControllerOptions, logger: Logger) async throws {
        let app = try makeApplication(options: options, logger: logger, deltaBuilder: options.deltas ? FleetDeltaBuilder() : nil)
        logger.info("controller listening", metadata: ["listen": "\(options.host):\(options.port)", "data": "\(options.dataDirectory)"])
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }
}

public enum SizeParser {
    public static func parse(_ s: String) -> Int64? { ByteCount.parse(s) }
}
