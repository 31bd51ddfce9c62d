import Foundation

/// A helper command run by /bin/sh (`CMD "$@"`): the evaluator and the calibrator. Both pipes are read
/// to the end before waiting, so a chatty command cannot block on a full pipe.
enum ExternalCommand {
    struct Result {
        var status: Int32
        var stdout: Data
        /// Standard error as plain text: terminal colour codes removed, whole (up to the last 64 KiB).
        var stderr: String
        /// The last line of standard output that starts with `{`.
        var jsonLine: String? {
            String(decoding: stdout, as: UTF8.self).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                .last { $0.hasPrefix("{") }
        }
    }

    static func run(_ command: String, arguments: [String], environment: [String: String], what: String) throws(CompressionError) -> Result
    {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command + " \"$@\"", "sh"] + arguments
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let outPipe = Pipe(), errPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { throw CompressionError(.evaluator, "cannot start \(what) '\(command)': \(error)") }
        let errData = PipeCollector(errPipe.fileHandleForReading)
        let outData = outPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: outData, stderr: plain(errData.finish().suffix(65536)))
    }

    /// Text without ANSI escape sequences (onnxruntime colours its log lines) and other control
    /// characters except newlines and tabs, trimmed.
    static func plain(_ data: Data) -> String {
        var out = [UInt8]()
        out.reserveCapacity(data.count)
        let b = [UInt8](data)
        var i = 0
        while i < b.count {
            if b[i] == 0x1B {
                i += 1
                if i < b.count, b[i] == UInt8(ascii: "[") {
                    // CSI: parameters and intermediates up to a final byte in 0x40…0x7E.
                    i += 1
                    while i < b.count, !(0x40...0x7E).contains(b[i]) { i += 1 }
                    i += 1
                } else if i < b.count, b[i] == UInt8(ascii: "]") {
                    // OSC: up to BEL or ESC \.
                    while i < b.count, b[i] != 0x07, b[i] != 0x1B { i += 1 }
                    i += (i < b.count && b[i] == 0x1B) ? 2 : 1
                } else {
                    i += 1
                }
                continue
            }
            if b[i] < 0x20, b[i] != 0x0A, b[i] != 0x09 { i += 1; continue }
            out.append(b[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Drains a pipe on another thread.
final class PipeCollector: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ handle: FileHandle) {
        DispatchQueue.global().async { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }
    func finish() -> Data { done.wait(); return data }
}
