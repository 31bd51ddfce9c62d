// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "EdgeFleet",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fleet-controller", targets: ["fleet-controller"]),
        .executable(name: "fleet-agent", targets: ["fleet-agent"]),
        .executable(name: "fleetctl", targets: ["fleetctl"]),
        .executable(name: "fleet-sim", targets: ["fleet-sim"]),
        // For the libFuzzer package in Fuzz/, which depends on this one by path.
        .library(name: "FleetCore", targets: ["FleetCore"]),
        .library(name: "FleetDelta", targets: ["FleetDelta"]),
        .library(name: "FleetCompression", targets: ["FleetCompression"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // fleet-sim only: an open-loop load generator over real HTTP, latency into an HDR histogram.
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // System libraries: the agent needs only glibc, libcurl and libzstd on the device.
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),

        // Pure domain: no I/O, no clocks, no globals.
        .target(name: "FleetCore", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Low-level primitives over glibc alone (no Foundation), shared by the delta codec, the variant
        // builder and the agent: the atomic temp-file-and-rename writer, LEB128, the protobuf wire walker.
        .target(name: "FleetIO"),
        // Delta packages: encode on the controller and in fleetctl, decode (streaming) on the agent.
        .target(name: "FleetDelta", dependencies: ["FleetCore", "FleetIO", "CZstd"]),
        // Variant builder: reads ONNX (protobuf) and safetensors, quantizes and prunes by recipe, measures quality.
        .target(name: "FleetCompression", dependencies: [
            "FleetCore", "FleetDelta", "FleetIO",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "Yams", package: "Yams"),
        ]),
        // sd_notify (READY, WATCHDOG, STOPPING) spoken by both daemons, without libsystemd or Foundation.
        .target(name: "ServiceNotify", dependencies: [
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // The one HTTP client (libcurl) shared by the agent and fleetctl.
        .target(name: "FleetClient", dependencies: ["FleetCore", "CCurl"]),
        .target(name: "FleetAgent", dependencies: [
            "FleetCore", "FleetClient", "FleetDelta", "FleetIO", "CZstd", "ServiceNotify",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // The start shared by the agent and controller executables: configuration file, then arguments.
        .target(name: "FleetCommandLine", dependencies: [
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "FleetController", dependencies: [
            "FleetCore", "FleetDelta", "FleetCompression", "CSQLite", "ServiceNotify",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Yams", package: "Yams"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ]),
        .executableTarget(name: "fleet-controller", dependencies: [
            "FleetController", "FleetCore", "FleetCommandLine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "fleet-agent", dependencies: [
            "FleetAgent", "FleetClient", "FleetCommandLine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "fleetctl", dependencies: [
            "FleetCore", "FleetClient", "FleetDelta", "FleetCompression",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Plays N devices against the controller's device API (bench/scale); not shipped to devices.
        .executableTarget(name: "fleet-sim", dependencies: [
            "FleetCore",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Test helpers shared by the test targets: a PostgreSQL server of a test's own.
        .target(name: "TestSupport", path: "Tests/TestSupport"),

        .testTarget(name: "FleetCoreTests", dependencies: ["FleetCore"]),
        .testTarget(name: "FleetIOTests", dependencies: ["FleetIO"]),
        .testTarget(name: "FleetDeltaTests", dependencies: ["FleetDelta", "FleetCore", "FleetIO"]),
        .testTarget(name: "FleetCompressionTests", dependencies: ["FleetCompression", "FleetCore", "FleetIO", "TestSupport"]),
        .testTarget(name: "FleetAgentTests", dependencies: ["FleetAgent", "FleetCore", "FleetClient", "FleetIO", "ServiceNotify", "TestSupport"]),
        .testTarget(name: "FleetControllerTests", dependencies: [
            "FleetController", "FleetCore", "FleetAgent", "FleetClient", "TestSupport",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
        // The Python helpers are run by path (a tampering proxy, a malicious controller), not built.
        .testTarget(name: "IntegrationTests", dependencies: ["FleetCore", "TestSupport"], exclude: ["Support/proxy.py", "Support/evil_controller.py"]),
    ]
)
