import FleetCore
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
@testable import FleetClient
@testable import FleetController

/// `--rate-limit` holds over every window of a second, not only on average. The bounds are upper
/// bounds on rate only: a slow machine makes a transfer slower, never faster, so they cannot flake.
@Suite("Download rate limit")
struct DownloadRateLimitTests {
    /// The largest number of bytes received in any window of `seconds`, over (time, bytes so far)
    /// samples taken as each buffer arrived.
    static func maxWindow(_ samples: [(at: Double, total: Int64)], seconds: Double) -> Int64 {
        var best: Int64 = 0
        var j = 0
        for i in samples.indices {
            let before = i == 0 ? 0 : samples[i - 1].total  // the window starts just before buffer i
            if j < i { j = i }
            while j + 1 < samples.count, samples[j + 1].at <= samples[i].at + seconds { j += 1 }
            best = max(best, samples[j].total - before)
        }
        return best
    }

    @Test func pacerHoldsAGreedyReaderToTheRateInEverySecond() {
        let rate: Int64 = 3_000_000
        var pacer = RatePacer(bytesPerSecond: rate)
        let chunk = RatePacer.bufferSize(bytesPerSecond: rate)
        var now = 100.0, total: Int64 = 0
        var samples: [(at: Double, total: Int64)] = []
        // The network delivers instantly: only the pacer's waits let time pass.
        while total < 4 * rate {
            total += Int64(chunk)
            samples.append((now, total))
            now += pacer.take(chunk, at: now)
        }
        let worst = Self.maxWindow(samples, seconds: 1)
        #expect(Double(worst) <= 1.1 * Double(rate), "\(worst) bytes in one second at a limit of \(rate)")
    }

    @Test func aStallEarnsNoBurstAfterwards() {
        let rate: Int64 = 1_000_000
        var pacer = RatePacer(bytesPerSecond: rate)
        var now = 0.0
        now += pacer.take(500_000, at: now)
        now += 10  // the server stalled for ten seconds: an averaging limiter would now allow ~10 MB
        var received: Int64 = 0
        let end = now + 1
        while now < end {
            received += 16_384
            now += pacer.take(16_384, at: now)
        }
        #expect(Double(received) <= 1.1 * Double(rate), "\(received) bytes in the second after a stall")
    }

    @Test func bufferSizeStaysWithinLibcurlsBounds() {
        #expect(RatePacer.bufferSize(bytesPerSecond: 1) == 1024)
        #expect(RatePacer.bufferSize(bytesPerSecond: 100_000) == 5000)
        #expect(RatePacer.bufferSize(bytesPerSecond: 1 << 30) == 16 << 10)
    }

    /// The agent's downloader against the controller over a real loopback socket, where an
    /// unpaced libcurl (7.88, 1 MiB buffers) took 9.6 MB in one second at a limit of 3 MB/s.
    @Test func downloadFromALiveControllerHoldsTheLimitInEverySecond() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        let rate: Int64 = 3_000_000
        let bytes = (0..<9_000_000).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
        let info = try f.placeArtifact(Data(bytes))
        try await f.app().test(.live) { client in
            let port = try #require(client.port)
            let out = f.dir + "/download"
            let (result, samples) = try await onThread { () throws -> (DownloadResult, [(at: Double, total: Int64)]) in
                var samples: [(at: Double, total: Int64)] = []
                let r = try HTTPClient().download(
                    "http://127.0.0.1:\(port)/v1/artifacts/\(info.sha256)", to: out, maxBytes: info.size,
                    rateLimitBytesPerSecond: rate, onReceive: { samples.append((monotonicSeconds(), $0)) })
                return (r, samples)
            }
            #expect(result.fileSize == info.size)
            #expect(Digest.sha256Hex(try Data(contentsOf: URL(fileURLWithPath: out))) == info.sha256)
            for seconds in [1.0, 2.0] {
                let worst = Self.maxWindow(samples, seconds: seconds)
                let ratio = Double(worst) / (Double(rate) * seconds)
                #expect(ratio <= 1.2, "\(worst) bytes in \(seconds) s at a limit of \(rate) B/s (×\(ratio))")
            }
        }
    }
}

/// Runs blocking work (a libcurl transfer) on its own thread, not on the cooperative pool.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

extension ControllerFixture {
    /// Puts an artifact into the store as an upload would leave it: an upload through the test
    /// client is slow on a loaded machine, and not what the tests that use this are about.
    func placeArtifact(_ data: Data) throws -> ArtifactInfo {
        let info = ArtifactInfo(sha256: Digest.sha256Hex(data), size: Int64(data.count))
        let folder = dir + "/data/artifacts/sha256/\(info.sha256.prefix(2))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: folder + "/" + info.sha256))
        return info
    }
}
