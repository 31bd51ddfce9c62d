@testable import FleetCompression
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// The variant builder's readers on arbitrary bytes, as a file in a folder of its own (ONNX
/// external data is looked up beside it). Errors are the expected outcome; a crash, a hang or
/// unbounded memory is a finding.
func fuzzCompressionReaders(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size > 0 else { return 0 }
    for path in [Work.safetensors, Work.onnx] {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0)
        _ = write(fd, data, size)
        close(fd)
    }
    _ = try? SafetensorsModel(path: Work.safetensors)
    _ = try? ONNXModel(path: Work.onnx)
    return 0
}

enum Work {
    static let dir: String = {
        let d = (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp") + "/edgefleet-fuzz-compression-\(getpid())"
        mkdir(d, 0o700)
        // An external-data file for inputs that name one.
        FileManager.default.createFile(atPath: d + "/weights.bin", contents: Data(repeating: 7, count: 4096))
        return d
    }()
    static let safetensors = dir + "/model.safetensors"
    static let onnx = dir + "/model.onnx"
}

/// libFuzzer's own `main` (linked but unused) refers to this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func llvmFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzCompressionReaders(data, size) }

// SwiftPM gives an executable its own `main`, so libFuzzer's is not linked: start its driver here.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzCompressionReaders))
