@testable import FleetDelta
import Foundation

/// The safetensors reader and the ONNX walker (protobuf) on arbitrary bytes: every tensor they
/// report must lie inside the input. Errors are the expected outcome; a crash or a hang is a finding.
func fuzzTensorLayout(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size > 0 else { return 0 }
    let buffer = UnsafeRawBufferPointer(start: data, count: size)
    for result in [TensorLayout.parse(buffer), ONNXWalker.parse(buffer)] {
        if case .success(let layout) = result {
            for t in layout.tensors {
                precondition(t.offset >= 0 && t.length >= 0 && t.offset + t.length <= Int64(size), "tensor \(t.name) outside the input")
            }
        }
    }
    return 0
}

/// libFuzzer's own `main` (linked but unused) refers to this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func llvmFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzTensorLayout(data, size) }

// SwiftPM gives an executable its own `main`, so libFuzzer's is not linked: start its driver here.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzTensorLayout))
