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
    /// A PostgreSQL URL shared by replicas; nil: the SQLite file in the data directory.
    public var databaseURL: String? = nil
    /// Bring the database's schema up to this build's at start (under the migration lock); false:
    /// refuse to start unless it is there already (`fleet-controller migrate` first).
    public var migrate: Bool = true
    /// How long a replica serves a cached copy of rollouts, cells, models and variants at most when
    /// no change is announced (NOTIFY is not durable).
    public var cacheSeconds: Double = 2
    /// Whether this replica listens for the others' change announcements (tests turn it off to
    /// play a replica that missed them: NOTIFY is not durable).
    var listensForChanges = true
    /// This replica's name in the leader lease and the logs.
    public var replicaName: String = ProcessInfo.processInfo.hostName + ":" + String(getpid())
    /// nginx's internal location for the shared artifact directory (`/_artifacts/`): artifacts are
    /// answered with `X-Accel-Redirect` after the access check instead of their bytes; nil: bytes.
    public var artifactAccelRedirect: String? = nil
    /// A label key the dashboard and `/metrics` break devices down by (its most common values and
    /// "other"); nil: none.
    public var viewLabel: String? = nil

    public init(
        dataDirectory: String, host: String, port: Int, keysDirectory: String, configDirectory: String,
        artifactBaseURL: String? = nil, maxArtifactBytes: Int64 = 8 << 30, pollSeconds: Int = 30, deltas: Bool = true,
        rolloutTickSeconds: Double? = 5
    ) {
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
    static func makeApplication(
        options: ControllerOptions, logger: Logger, clock: @escaping @Sendable () -> Int64 = wallClock,
        metrics: ControllerMetrics = ControllerMetrics(),
        deltaBuilder: (any DeltaBuilding)? = nil
    ) async throws -> (some ApplicationProtocol, RolloutDriver, RouteTable) {
        try FileManager.default.createDirectory(atPath: options.dataDirectory, withIntermediateDirectories: true)
        let config = try FleetConfig.load(directory: options.configDirectory)
        let keys = try OnlineKeys.load(directory: options.keysDirectory, now: clock())
        let store = try await openStore(options: options, logger: logger)
        try keys.history.restore(try await store.rootVersions(), now: clock())
        if options.access.mode == .enforced {
            try await AdminBootstrap.ensureAdmin(store: store, dataDirectory: options.dataDirectory, now: clock(), logger: logger)
        }
        // Work that runs once: on PostgreSQL, on the replica that holds the leader lease; on SQLite
        // (one box), here.
        let fence = options.databaseURL == nil ? LeaseFence.alwaysLeader() : LeaseFence()
        let artifacts = try ArtifactStore(root: options.dataDirectory + "/artifacts")
        let policies = try PolicyBook(directory: options.configDirectory)
        let quarantine = ArtifactQuarantine(artifacts: artifacts, store: store, metrics: metrics, logger: logger, clock: clock)
        let scrubber = ArtifactScrubber(quarantine: quarantine, store: store, intervalSeconds: options.scrubIntervalSeconds, leader: fence)
        let planner = DeltaPlanner(
            store: store, artifacts: artifacts, builder: deltaBuilder, logger: logger, clock: clock, quarantine: quarantine)
        let elector = try options.databaseURL.map { url in
            LeaderElector(
                location: try PostgresLocation(url: url), store: store, fence: fence, replica: options.replicaName, logger: logger
            ) {
                [planner] leading in if leading { try? await planner.resumeClaimed() }
            }
        }
        let driver = RolloutDriver(
            store: store, logger: logger, clock: clock, tickSeconds: options.rolloutTickSeconds, metrics: metrics,
            tickStore: store.fenced(fence), leader: fence, windows: config.maintenanceWindows)
        let performance = PerformanceBook(store: store, clock: clock)
        let director = Director(
            store: store, keys: keys, config: config, artifactBaseURL: options.artifactBaseURL,
            metrics: metrics, logger: logger, pollSeconds: options.pollSeconds, planner: planner, driver: driver,
            performance: performance, minMeasuredDevices: options.minMeasuredDevices, quarantine: quarantine)

        let router = Router(context: FleetRequestContext.self)
        router.add(middleware: ErrorMiddleware())
        // Every route below is registered under the audience that may call it (Audiences).
        let access = options.access.resolved
        let routes = Audiences(
            router: router,
            checker: AccessChecker(
                options: access, store: store,
                checkIns: RateLimiter(burst: options.access.checkInBurst, perMinute: options.access.checkInsPerMinute, clock: clock),
                metrics: metrics, clock: clock))
        // Which replica does the once-only work, for operators and load balancers' checks.
        let replicaName = options.replicaName, database = store.dialect.rawValue
        routes.anyone.get("/healthz") { _, _ in
            try JSON.response([
                "status": "ok", "leader": fence.isLeader ? "true" : "false", "replica": replicaName, "database": database,
                "gateTicks": "\(driver.completedTicks.load(ordering: .relaxed))"
            ])
        }
        let performanceRoutes = PerformanceRoutes(store: store, performance: performance, metrics: metrics, clock: clock)
        let viewLabel = options.viewLabel, labelGauges = LabelViewGauges()
        routes.anyone.get("/metrics") { _, _ in
            metrics.devices.set(Int64(try await store.deviceCount()))
            if let key = viewLabel {
                let devices = try await store.deviceCells().map { (labels: $0.selectable, status: "") }
                labelGauges.record(LabelView.breakdown(key: key, devices: devices), metrics: metrics)
            }
            try await performanceRoutes.recordMetrics()
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
        DeviceRoutes(director: director, store: store, metrics: metrics, clock: clock, quarantine: quarantine).register(routes)
        ArtifactRoutes(
            artifacts: artifacts, metrics: metrics, maxArtifactBytes: options.maxArtifactBytes,
            quarantine: quarantine, scrubber: scrubber, accelRedirect: options.artifactAccelRedirect
        ).register(routes)
        let operatorRoutes = OperatorRoutes(
            director: director, store: store, artifacts: artifacts, config: config, keys: keys,
            policies: policies, driver: driver, clock: clock)
        operatorRoutes.register(routes)
        performanceRoutes.register(routes)
        VariantRoutes(
            store: store,
            builder: VariantBuildService(
                store: store, artifacts: artifacts, recipesFile: options.configDirectory + "/recipes.yaml",
                evaluator: options.evaluator, logger: logger, clock: clock)
        ).register(routes)
        DashboardRoutes(
            store: store, access: store, operatorRoutes: operatorRoutes, performance: performance, quarantine: store, clock: clock,
            viewLabel: options.viewLabel,
            secureCookies: options.tls != nil
        ).register(routes)
        AccessRoutes(
            store: store, keys: keys, options: access,
            enrollments: RateLimiter(burst: options.access.enrollBurst, perMinute: options.access.enrollPerMinute, clock: clock),
            clock: clock
        ).register(routes)
        let server = HTTPServerBuilder.controller(tls: try options.tls?.configuration())
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "edgefleet-controller"),
            services: [
                planner, driver, scrubber, PolicyReloadService(book: policies, logger: logger),
                ServiceManager.notifier(host: options.host, port: options.port, logger: logger),
                SeenFlusher(store: store, logger: logger)
            ] + (elector.map { [$0] } ?? [])
                + (try options.databaseURL.flatMap { options.listensForChanges ? $0 : nil }.map {
                    [StoreCacheListener(location: try PostgresLocation(url: $0), cache: store.cache, logger: logger)]
                } ?? []),
            logger: logger)
        return (app, driver, routes.table)
    }

    /// Runs the controller until SIGTERM or SIGINT, then drains in-flight requests and stops.
    public static func serve(options: ControllerOptions, logger: Logger) async throws {
        let (app, _, _) = try await makeApplication(
            options: options, logger: logger, deltaBuilder: options.deltas ? FleetDeltaBuilder() : nil)
        logger.info(
            "controller listening",
            metadata: [
                "listen": "\(options.host):\(options.port)", "data": "\(options.dataDirectory)",
                "tls": "\(options.tls != nil)", "access": "\(options.access.mode.rawValue)"
            ])
        if options.access.mode == .open {
            logger.warning(
                "INSECURE DEVELOPMENT MODE: no operator tokens, no device identities; anyone who can reach \(options.host):\(options.port) is admin. Serve with --tls-cert, --tls-key and --client-ca for a real fleet."
            )
        }
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }
}

extension Controller {
    /// The store named by the options: PostgreSQL at `databaseURL`, else the data directory's
    /// SQLite file.
    static func openStore(options: ControllerOptions, logger: Logger) async throws -> SQLStore {
        if let url = options.databaseURL {
            return try await SQLStore.postgres(
                try PostgresLocation(url: url), migrate: options.migrate, logger: logger,
                cache: StoreCache(maxAge: .milliseconds(Int64(options.cacheSeconds * 1000))))
        }
        return try await SQLStore.sqlite(
            path: options.dataDirectory + "/fleet.sqlite", cache: StoreCache(maxAge: .milliseconds(Int64(options.cacheSeconds * 1000))))
    }

    /// `fleet-controller migrate`: brings the schema up to this build's and says what it did.
    public static func migrate(databaseURL: String?, dataDirectory: String, logger: Logger) async throws -> String {
        let db: any SQLDatabase
        if let url = databaseURL {
            db = try await PostgresDatabase.connect(try PostgresLocation(url: url), logger: logger)
        } else {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
            db = try SQLiteDatabase(path: dataDirectory + "/fleet.sqlite")
        }
        defer { Task { await db.close() } }
        let outcome = try await Migrations.run(db)
        if outcome.applied.isEmpty { return "schema at version \(outcome.to): nothing to do" }
        return "schema \(outcome.from) → \(outcome.to): applied " + outcome.applied.joined(separator: "; ")
    }
}

public enum SizeParser {
    public static func parse(_ s: String) -> Int64? { ByteCount.parse(s) }
}
