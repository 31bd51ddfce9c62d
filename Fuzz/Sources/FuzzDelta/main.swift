import FleetCore
import FleetDelta
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// Applies the input as a delta package to a fixed base (Corpus/delta-base.safetensors), the way an
/// agent applies what it downloaded. A mutated header would almost always fail its checksum or the
/// base check, so the harness repairs those (base size and sha256, last section length, checksum):
/// the section decoders (zstd frames, tensor plan, range coder) are what is being fuzzed. Errors are
/// the expected outcome; a crash, a hang or unbounded memory is a finding.
func fuzzDelta(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size > 0 else { return 0 }
    var bytes = [UInt8](UnsafeBufferPointer(start: data, count: size))
    // Inputs ending in an even byte are repaired, the others parsed as they are: both paths get fuzzed.
    if size > 0 && data[size - 1] & 1 == 0 { Work.repair(&bytes) }
    Work.write(bytes)
    _ = try? DeltaDecoder.readHeader(Work.patch)
    _ = try? DeltaDecoder.apply(base: Work.base, patch: Work.patch, output: Work.output, sync: false)
    unlink(Work.output)
    return 0
}

enum Work {
    static let dir: String = {
        let d = (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp") + "/edgefleet-fuzz-delta-\(getpid())"
        mkdir(d, 0o700)
        return d
    }()
    static let patch = dir + "/patch"
    static let output = dir + "/out"
    static let base: String = {
        let source =
            ProcessInfo.processInfo.environment["FUZZ_DELTA_BASE"]
            ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Corpus/delta-base.safetensors").path
        let bytes = FileManager.default.contents(atPath: source) ?? Data()
        precondition(!bytes.isEmpty, "no delta base at \(source)")
        let path = dir + "/base"
        FileManager.default.createFile(atPath: path, contents: bytes)
        return path
    }()
    static let baseBytes: [UInt8] = [UInt8](FileManager.default.contents(atPath: base) ?? Data())

    static func write(_ bytes: [UInt8]) {
        let fd = open(patch, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0)
        bytes.withUnsafeBytes { _ = Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    static func putLE(_ v: UInt64, _ bytes: inout [UInt8], at: Int) {
        for i in 0..<8 { bytes[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    /// Layout (DeltaHeader): magic 8, version u16, header length u16, method u8, sections u8, flags u16,
    /// base size i64 @16, target size i64 @24, base sha256 @32, target sha256 @64, buffer i64 @96,
    /// reserved u64 @104, section lengths i64 @112…, sha256 of everything before it.
    static func repair(_ bytes: inout [UInt8]) {
        guard bytes.count >= 112 + 8 + 32, Array(bytes[0..<8]) == DeltaHeader.magic else { return }
        let sections = Int(bytes[13])
        guard (1...8).contains(sections) else { return }
        let headerLength = 112 + 8 * sections + 32
        guard bytes.count >= headerLength else { return }
        bytes[10] = UInt8(headerLength & 0xFF); bytes[11] = UInt8(headerLength >> 8)
        putLE(UInt64(baseBytes.count), &bytes, at: 16)
        bytes.replaceSubrange(32..<64, with: Hex.decode(Digest.sha256Hex(baseBytes))!)
        var others: UInt64 = 0
        for i in 0..<(sections - 1) {
            var v: UInt64 = 0
            for j in 0..<8 { v |= UInt64(bytes[112 + 8 * i + j]) << (8 * UInt64(j)) }
            others &+= v
        }
        let body = UInt64(bytes.count - headerLength)
        if others <= body { putLE(body - others, &bytes, at: 112 + 8 * (sections - 1)) }
        var hasher = StreamingSHA256()
        hasher.update(bytes[0..<(headerLength - 32)])
        bytes.replaceSubrange((headerLength - 32)..<headerLength, with: Hex.decode(hasher.finalizeHex())!)
    }
}

/// libFuzzer's own `main` (linked but unused) refers to this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func llvmFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzDelta(data, size) }

// SwiftPM gives an executable its own `main`, so libFuzzer's is not linked: start its driver here.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzDelta))
