import Foundation
import Histogram
import Synchronization

/// Collects what one run measured. Latencies are microseconds from the time a request was
/// SCHEDULED to be sent (not when it was sent), so a stalled server or a queue in front of it
/// shows in the figures instead of silently slowing the generator down (no coordinated omission).
final class Recorder: Sendable {
    struct Bytes: Sendable {
        var count = 0
        var requestBody = 0, responseBody = 0, requestHTTP = 0, responseHTTP = 0

        mutating func add(requestBody: Int, responseBody: Int, requestHTTP: Int, responseHTTP: Int) {
            count += 1
            self.requestBody += requestBody; self.responseBody += responseBody
            self.requestHTTP += requestHTTP; self.responseHTTP += responseHTTP
        }
    }

    struct State: Sendable {
        var checkIns = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var events = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var scheduled = 0
        var ok = 0
        var errors: [String: Int] = [:]
        var allBytes = Bytes()
        var idleBytes = Bytes()
        var eventPosts = 0, eventPostsOK = 0, eventsSent = 0
        var installsStarted = 0, installsReported = 0
        var downloads = 0, downloadBytes: Int64 = 0
        var inFlight = 0
        var maxLagMicros: UInt64 = 0
        var lastCompletion: ContinuousClock.Instant?
    }

    let state = Mutex(State())

    func scheduled(lagMicros: UInt64) {
        state.withLock { s in
            s.scheduled += 1
            s.inFlight += 1
            s.maxLagMicros = max(s.maxLagMicros, lagMicros)
        }
    }

    var inFlight: Int { state.withLock { $0.inFlight } }

    func checkIn(latencyMicros: UInt64, bytes: (Int, Int, Int, Int), idle: Bool, at end: ContinuousClock.Instant) {
        state.withLock { s in
            _ = s.checkIns.record(max(1, latencyMicros))
            s.ok += 1
            s.inFlight -= 1
            s.allBytes.add(requestBody: bytes.0, responseBody: bytes.1, requestHTTP: bytes.2, responseHTTP: bytes.3)
            if idle { s.idleBytes.add(requestBody: bytes.0, responseBody: bytes.1, requestHTTP: bytes.2, responseHTTP: bytes.3) }
            s.lastCompletion = end
        }
    }

    /// A check-in that was sent and failed; `kind` names how.
    func failed(_ kind: String, at end: ContinuousClock.Instant) {
        state.withLock { s in
            s.errors[kind, default: 0] += 1
            s.inFlight -= 1
            s.lastCompletion = end
        }
    }

    /// A check-in never sent because too many were outstanding: it counts against the achieved rate.
    func dropped(_ kind: String) {
        state.withLock { s in
            s.scheduled += 1
            s.errors[kind, default: 0] += 1
        }
    }

    func eventPost(latencyMicros: UInt64?, events: Int, error: String?) {
        state.withLock { s in
            s.eventPosts += 1
            if let latencyMicros { _ = s.events.record(max(1, latencyMicros)) }
            if let error { s.errors["events: " + error, default: 0] += 1 } else { s.eventPostsOK += 1; s.eventsSent += events }
        }
    }

    func install(started: Int = 0, reported: Int = 0) {
        state.withLock { s in
            s.installsStarted += started; s.installsReported += reported
        }
    }

    func download(bytes: Int64) {
        state.withLock { s in
            s.downloads += 1; s.downloadBytes += bytes
        }
    }

    func downloadFailed(_ kind: String) {
        state.withLock { s in s.errors["download: " + kind, default: 0] += 1 }
    }
}
