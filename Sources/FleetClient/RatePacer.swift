/// A token bucket that holds a download to a rate over any window, not only on average.
///
/// libcurl's own limit (CURLOPT_MAX_RECV_SPEED_LARGE, 7.88) is an average since the transfer
/// started and is consulted only between rounds of its transfer loop, and one round reads up to 100
/// buffers while the socket stays readable: on a fast link (loopback, a LAN) whole megabytes arrive
/// at once, and a stall earns a burst later. The pacer is consulted for every buffer instead, and
/// its credit never exceeds `burst` bytes, so any window of `w` seconds holds at most
/// `rate × w + burst + one buffer`.
///
/// Pure: the caller passes the time in and does the waiting.
struct RatePacer: Sendable {
    let bytesPerSecond: Double
    /// The most credit an idle moment can earn, in bytes.
    let burst: Double
    private var tokens: Double
    private var last: Double?

    /// `burstSeconds` of credit at most: small, so that a window of a second stays near the rate.
    init(bytesPerSecond: Int64, burstSeconds: Double = 0.05) {
        precondition(bytesPerSecond > 0, "a rate limit is positive")
        self.bytesPerSecond = Double(bytesPerSecond)
        burst = Double(bytesPerSecond) * burstSeconds
        tokens = burst
    }

    /// Takes `count` bytes that arrived at `now` (seconds, monotonic); returns the seconds to wait
    /// before reading more. Waiting that long brings the credit back to zero, never above it.
    mutating func take(_ count: Int, at now: Double) -> Double {
        if let last, now > last { tokens = min(burst, tokens + (now - last) * bytesPerSecond) }
        last = max(now, last ?? now)
        tokens -= Double(count)
        return tokens < 0 ? -tokens / bytesPerSecond : 0
    }

    /// The receive buffer to ask libcurl for: a twentieth of a second of data, within libcurl's
    /// bounds (1 KiB to 16 KiB here), so that one buffer is a small part of any window.
    static func bufferSize(bytesPerSecond: Int64) -> Int {
        Int(min(16 << 10, max(1024, bytesPerSecond / 20)))
    }
}
