import Synchronization

/// Token buckets per key (a device id): `burst` requests at once, refilled at `perMinute`. The
/// clock is the controller's injected clock in seconds. At most `maxKeys` buckets are kept; when
/// full, the fullest (idlest) buckets are dropped, which only ever lets a caller through earlier.
final class RateLimiter: Sendable {
    struct Bucket { var tokens: Double; var at: Int64 }

    let burst: Double
    let perSecond: Double
    let maxKeys: Int
    private let clock: @Sendable () -> Int64
    private let buckets = Mutex<[String: Bucket]>([:])

    init(burst: Int, perMinute: Int, maxKeys: Int = 100_000, clock: @escaping @Sendable () -> Int64) {
        self.burst = Double(max(burst, 1)); self.perSecond = Double(max(perMinute, 1)) / 60
        self.maxKeys = maxKeys; self.clock = clock
    }

    /// nil when allowed; otherwise the seconds to wait.
    func take(_ key: String) -> Int? {
        let now = clock()
        return buckets.withLock { b in
            var bucket = b[key] ?? Bucket(tokens: burst, at: now)
            bucket.tokens = min(burst, bucket.tokens + Double(max(now - bucket.at, 0)) * perSecond)
            bucket.at = now
            guard bucket.tokens >= 1 else {
                b[key] = bucket
                return max(1, Int(((1 - bucket.tokens) / perSecond).rounded(.up)))
            }
            bucket.tokens -= 1
            if b[key] == nil, b.count >= maxKeys {
                for k in b.sorted(by: { $0.value.tokens > $1.value.tokens }).prefix(maxKeys / 10 + 1).map(\.key) { b[k] = nil }
            }
            b[key] = bucket
            return nil
        }
    }
}
