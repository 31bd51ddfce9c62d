import FleetCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
    import Glibc
#endif

/// The agent's rate limit and the controller's artifact scrub, through the real binaries.
@Suite("Rate limit and artifact scrub with real binaries", .serialized, .ownThread)
struct ArtifactIntegrityTests {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// `fleet-agent fetch --rate-limit` against a plain HTTP server (python's), watched from outside
    /// through the output file's size. Each sample is bracketed by the clock before and after the
    /// stat, so an estimate over [before(i), after(j)] can only understate the rate: a slow
    /// machine cannot make this fail, only a download faster than the limit.
    @Test func fetchHoldsTheRateLimitOverEverySecond() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        let serve = fleet.dir + "/www"
        try FileManager.default.createDirectory(atPath: serve, withIntermediateDirectories: true)
        let size = 9_000_000, rate = 3_000_000.0
        let file = try fleet.makeFile("www/model.bin", size: size, seed: 7)
        let port = try TestFleet.freePort()
        _ = try fleet.start(
            "/usr/bin/env", ["python3", "-m", "http.server", "\(port)", "--bind", "127.0.0.1", "--directory", serve],
            log: fleet.dir + "/http.log")
        let url = "http://127.0.0.1:\(port)/model.bin"
        try fleet.waitFor("http server") { (try? fleet.run("/usr/bin/env", ["curl", "-fsI", url], timeout: 5).status) == 0 }

        let out = fleet.dir + "/fetched.bin"
        let fetch = try fleet.start("fleet-agent", ["fetch", url, "--out", out, "--rate-limit", "3000000"], log: fleet.dir + "/fetch.log")
        var samples: [(before: Double, after: Double, bytes: Double)] = []
        let deadline = Self.now() + 60
        while Self.now() < deadline {
            let running = fetch.isRunning
            let before = Self.now()
            var st = stat()
            let bytes = stat(out, &st) == 0 ? Double(st.st_size) : 0
            samples.append((before, Self.now(), bytes))
            if !running { break }
            usleep(20_000)
        }
        fetch.waitUntilExit()
        #expect(fetch.terminationStatus == 0, "\(fleet.log("fetch.log"))")
        #expect(fleet.sha(out) == fleet.sha(file))

        var worst = 0.0
        for i in samples.indices {
            // The first sample at least a second after sample i: a window of a second or a little more.
            guard let j = samples[i...].firstIndex(where: { $0.after - samples[i].before >= 1.0 }) else { break }
            worst = max(worst, (samples[j].bytes - samples[i].bytes) / (samples[j].after - samples[i].before))
        }
        #expect(worst > 0)
        #expect(worst <= 1.2 * rate, "\(Int(worst)) B/s over a second at a limit of \(Int(rate)) B/s")
    }

    /// A byte flipped in a stored artifact: the controller's periodic scrub (`--scrub-interval`)
    /// takes it out of service, the artifact route refuses it, and /metrics says so.
    @Test func periodicScrubQuarantinesARottenArtifact() throws {
        let fleet = try TestFleet(); defer { fleet.cleanup() }
        let r = try fleet.run("fleetctl", ["keys", "init", "--dir", fleet.dir + "/keys"])
        try #require(r.status == 0, "\(r.stderr)")
        fleet.controller = try fleet.start(
            "fleet-controller",
            [
                "serve", "--data", fleet.dir + "/controller", "--listen", "127.0.0.1:\(fleet.port)", "--keys", fleet.dir + "/keys/online",
                "--config", TestFleet.repoRoot + "/fleet", "--scrub-interval", "1"
            ], log: fleet.dir + "/controller.log")
        try fleet.waitFor("controller health") {
            (try? fleet.run("/usr/bin/env", ["curl", "-fs", fleet.url + "/healthz"], timeout: 5).status) == 0
        }

        let file = try fleet.makeFile("model.bin", size: 1_000_000, seed: 9)
        let up = try fleet.run("/usr/bin/env", ["curl", "-fsS", "-T", file, fleet.url + "/v1/artifacts"])
        try #require(up.status == 0, "\(up.stderr)")
        let sha = fleet.sha(file)
        let stored = fleet.artifactPath(sha)
        func status() throws -> String {
            try fleet.run(
                "/usr/bin/env", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", fleet.url + "/v1/artifacts/" + sha], timeout: 10
            ).stdout
        }
        #expect(try status() == "200")

        let fd = open(stored, O_RDWR)
        try #require(fd >= 0)
        var b: UInt8 = 0
        _ = pread(fd, &b, 1, 500_000); b ^= 1; _ = pwrite(fd, &b, 1, 500_000)
        close(fd)

        try fleet.waitFor("the scrub to quarantine the artifact", timeout: 20) { try status() == "410" }
        #expect(!FileManager.default.fileExists(atPath: stored))
        let quarantined = try FileManager.default.contentsOfDirectory(atPath: fleet.dir + "/controller/artifacts/quarantine")
        #expect(quarantined.count == 1 && quarantined[0].hasPrefix(sha))
        let metrics = try fleet.run("/usr/bin/env", ["curl", "-fsS", fleet.url + "/metrics"]).stdout
        let gauge = metrics.split(separator: "\n").first { $0.hasPrefix("edgefleet_artifacts_quarantined ") }
        #expect(gauge.flatMap { Double($0.split(separator: " ")[1]) } == 1)
        let list = try fleet.run("/usr/bin/env", ["curl", "-fsS", fleet.url + "/v1/artifact-quarantine"]).stdout
        #expect(list.contains(sha))
    }
}
