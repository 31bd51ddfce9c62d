import Foundation
import Histogram

/// What one run at one offered rate measured, as printed and as `--json` writes it.
struct RunSummary: Codable, Sendable {
    struct Latency: Codable, Sendable {
        var p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double
        init(_ h: Histogram<UInt64>) {
            func ms(_ micros: UInt64) -> Double { (Double(micros) / 1000 * 100).rounded() / 100 }
            p50 = ms(h.valueAtPercentile(50)); p90 = ms(h.valueAtPercentile(90)); p99 = ms(h.valueAtPercentile(99))
            p999 = ms(h.valueAtPercentile(99.9)); max = ms(h.max); mean = (h.mean / 1000 * 100).rounded() / 100
            if h.totalCount == 0 { p50 = 0; p90 = 0; p99 = 0; p999 = 0; max = 0; mean = 0 }
        }
    }

    /// Mean bytes of one check-in: the JSON bodies, and the whole HTTP/1.1 messages (start line,
    /// headers, body) as sent; TCP/IP overhead is not counted.
    struct Bytes: Codable, Sendable {
        var checkIns: Int
        var requestBody: Double, responseBody: Double, requestHTTP: Double, responseHTTP: Double
        init(_ b: Recorder.Bytes) {
            checkIns = b.count
            let n = Double(Swift.max(b.count, 1))
            func r(_ x: Int) -> Double { (Double(x) / n).rounded() }
            requestBody = r(b.requestBody); responseBody = r(b.responseBody); requestHTTP = r(b.requestHTTP);
            responseHTTP = r(b.responseHTTP)
        }
    }

    var url: String
    var devices: Int
    var connections: Int
    var offeredRate: Double
    var durationSeconds: Double
    /// From the first scheduled send to the last answer (at least the duration).
    var elapsedSeconds: Double
    var scheduled: Int
    var ok: Int
    var achievedRate: Double
    var latencyMs: Latency
    var errors: [String: Int]
    var errorCount: Int
    var bytesPerCheckIn: Bytes
    /// Check-ins whose answer asked nothing of the device (no new assignment).
    var bytesPerIdleCheckIn: Bytes
    var installsStarted: Int
    var installsReported: Int
    var eventPosts: Int
    var eventsStored: Int
    var eventLatencyMs: Latency
    var downloads: Int
    var downloadBytes: Int64
    /// How late the generator itself launched a request, at worst: a large figure means this
    /// machine could not keep up with the offered rate (latencies still count from the schedule).
    var maxSchedulerLagMs: Double
    /// The simulator's own CPU time (user + system, every thread) from the first send to the last
    /// answer: its cost per check-in without loading and saving `--state` around the run.
    var cpuSeconds: Double

    init(
        url: String, devices: Int, connections: Int, rate: Double, duration: Double, elapsed: Double, cpuSeconds: Double,
        state s: Recorder.State
    ) {
        self.url = url; self.devices = devices; self.connections = connections; offeredRate = rate; durationSeconds = duration
        self.cpuSeconds = (cpuSeconds * 1000).rounded() / 1000
        elapsedSeconds = (elapsed * 1000).rounded() / 1000
        scheduled = s.scheduled; ok = s.ok
        achievedRate = (Double(s.ok) / Swift.max(elapsed, 0.001) * 10).rounded() / 10
        latencyMs = Latency(s.checkIns)
        errors = s.errors
        errorCount = s.errors.values.reduce(0, +)
        bytesPerCheckIn = Bytes(s.allBytes)
        bytesPerIdleCheckIn = Bytes(s.idleBytes)
        installsStarted = s.installsStarted; installsReported = s.installsReported
        eventPosts = s.eventPosts; eventsStored = s.eventsSent
        eventLatencyMs = Latency(s.events)
        downloads = s.downloads; downloadBytes = s.downloadBytes
        maxSchedulerLagMs = (Double(s.maxLagMicros) / 1000 * 10).rounded() / 10
    }

    var text: String {
        var lines: [String] = []
        let pct = offeredRate > 0 ? achievedRate / offeredRate * 100 : 0
        lines.append(
            "rate        offered \(fmt(offeredRate))/s, achieved \(fmt(achievedRate))/s (\(fmt(pct))%) over \(fmt(elapsedSeconds)) s; \(ok) of \(scheduled) check-ins answered 2xx"
        )
        lines.append(
            "latency     from the scheduled send: p50 \(latencyMs.p50) ms, p90 \(latencyMs.p90) ms, p99 \(latencyMs.p99) ms, p99.9 \(latencyMs.p999) ms, max \(latencyMs.max) ms"
        )
        if errors.isEmpty {
            lines.append("errors      none")
        } else {
            lines.append(
                "errors      \(errorCount): "
                    + errors.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        let b = bytesPerCheckIn, i = bytesPerIdleCheckIn
        lines.append(
            "bytes       per check-in: request body \(Int(b.requestBody)), response body \(Int(b.responseBody)); HTTP messages \(Int(b.requestHTTP)) + \(Int(b.responseHTTP))"
        )
        lines.append(
            "            per idle check-in (\(i.checkIns)): request body \(Int(i.requestBody)), response body \(Int(i.responseBody)); HTTP messages \(Int(i.requestHTTP)) + \(Int(i.responseHTTP))"
        )
        if installsStarted > 0 || eventPosts > 0 {
            lines.append(
                "installs    \(installsStarted) started, \(installsReported) reported committed; \(eventPosts) event posts (\(eventsStored) events), p99 \(eventLatencyMs.p99) ms"
            )
        }
        if downloads > 0 { lines.append("downloads   \(downloads), \(downloadBytes) bytes") }
        lines.append(
            "generator   worst launch lag \(maxSchedulerLagMs) ms, \(connections) connections, \(devices) devices; \(fmt(cpuSeconds)) CPU-s over the run"
        )
        return lines.joined(separator: "\n")
    }
}

/// `--find-max`: every step, and the highest offered rate that held.
struct FindMaxSummary: Codable, Sendable {
    var p99TargetMs: Double
    var maxErrorRate: Double
    var steps: [RunSummary]
    /// The highest offered rate whose step met the target; nil when even the first did not.
    var maxSustainableRate: Double?
    var stoppedBecause: String
}

func fmt(_ x: Double) -> String {
    x >= 100 ? String(Int(x.rounded())) : String((x * 10).rounded() / 10)
}
