// swift-tools-version:6.1
// libFuzzer targets for EdgeFleet's parsers of untrusted bytes. A package of its own, depending on
// the main one by path, so that fuzzing flags never reach the main build. `make fuzz` builds it
// with `-sanitize=fuzzer` (and testable imports, for the internal tensor-layout readers) and runs
// each target for a bounded time over the seeds in Corpus/.
import PackageDescription

let package = Package(
    name: "EdgeFleetFuzz",
    dependencies: [.package(name: "EdgeFleet", path: "..")],
    targets: [
        // Signed-metadata envelopes, every metadata type and the check-in answer, as an agent reads them.
        .executableTarget(name: "FuzzMetadata", dependencies: [.product(name: "FleetCore", package: "EdgeFleet")]),
        // Delta packages applied to a fixed base, with the header checksum and base fields repaired so
        // that mutations reach the section decoders.
        .executableTarget(name: "FuzzDelta", dependencies: [
            .product(name: "FleetDelta", package: "EdgeFleet"), .product(name: "FleetCore", package: "EdgeFleet"),
        ]),
        // The safetensors reader and the ONNX walker that find tensors in a model file.
        .executableTarget(name: "FuzzTensorLayout", dependencies: [.product(name: "FleetDelta", package: "EdgeFleet")]),
        // The variant builder's ONNX (protobuf, external data) and safetensors readers.
        .executableTarget(name: "FuzzCompressionReaders", dependencies: [.product(name: "FleetCompression", package: "EdgeFleet")]),
    ]
)
