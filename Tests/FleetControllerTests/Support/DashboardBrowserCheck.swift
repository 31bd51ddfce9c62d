import Dispatch
import FleetCore
import Foundation
import HummingbirdTesting
import Testing

/// Opens the dashboard in Debian's chromium (headless), takes a screenshot and reads the rendered
/// DOM back: the gate states on the page must be the ones the API reports.
enum DashboardBrowserCheck {
    static let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
    /// Where the screenshot is kept after the run, for people to look at.
    static var screenshotPath: String { ControllerFixture.repoRoot + "/.build/test-artifacts/dashboard.png" }

    static func run(port: Int, client: some TestClientProtocol, rollouts: [Int64]) async throws {
        guard let browser = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            if ProcessInfo.processInfo.environment["CI"] != nil {
                Issue.record("chromium is not installed: `make deps` installs it, and CI must run this check")
            } else {
                print("SKIPPED: dashboard browser check: chromium is not installed (apt-get install chromium)")
            }
            return
        }
        let work = NSTemporaryDirectory() + "edgefleet-browser-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let url = "http://127.0.0.1:\(port)/"

        let dom = try await browse(browser, work: work, ["--dump-dom", url])
        let png = work + "/dashboard.png"
        _ = try await browse(browser, work: work, ["--screenshot=\(png)", "--window-size=1400,2400", url])
        let image = try #require(FileManager.default.contents(atPath: png), "chromium wrote no screenshot")
        #expect(image.starts(with: [0x89, 0x50, 0x4E, 0x47]), "the screenshot is not a PNG")
        #expect(image.count > 20_000, "a screenshot of \(image.count) bytes is too small to show the page")
        try? FileManager.default.createDirectory(
            atPath: (screenshotPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: screenshotPath)
        try? FileManager.default.copyItem(atPath: png, toPath: screenshotPath)

        #expect(dom.contains("<svg"), "the page has no charts")
        let onPage = gates(in: dom).filter { rollouts.contains($0.rollout) }
        var fromAPI: [Gate] = []
        for id in rollouts {
            let s = try decode(RolloutStatus.self, try await client.execute(uri: "/v1/rollouts/\(id)", method: .get))
            for c in s.cells {
                for g in c.gates {
                    let live = c.status == .running || c.status == .baking
                    fromAPI.append(
                        Gate(
                            rollout: id, cell: c.cell, metric: g.metric,
                            state: g.passed.map { $0 ? "passing" : "failing" } ?? (live ? "waiting" : "unjudged")))
                }
            }
        }
        #expect(!fromAPI.isEmpty)
        #expect(fromAPI.contains { $0.state == "failing" })
        #expect(
            Set(onPage) == Set(fromAPI),
            "page: \(Set(onPage).subtracting(fromAPI).sorted().prefix(4)) API: \(Set(fromAPI).subtracting(onPage).sorted().prefix(4))")
        #expect(onPage.count == fromAPI.count)
    }

    struct Gate: Hashable, Comparable, CustomStringConvertible {
        var rollout: Int64, cell: String, metric: String, state: String
        static func < (a: Gate, b: Gate) -> Bool { a.description < b.description }
        var description: String { "\(rollout) \(cell) \(metric) \(state)" }
    }

    /// The gate elements of the rendered page, from their data attributes.
    static func gates(in dom: String) -> [Gate] {
        let pattern = /data-rollout="(\d+)" data-cell="([^"]*)" data-metric="([^"]*)" data-state="([a-z]+)"/
        return dom.matches(of: pattern).compactMap { m in
            Int64(m.1).map { Gate(rollout: $0, cell: String(m.2), metric: String(m.3), state: String(m.4)) }
        }
    }

    /// Runs chromium headless with a private profile; returns what it printed. Killed after 90 s.
    static func browse(_ browser: String, work: String, _ args: [String]) async throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: browser)
        p.arguments =
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--hide-scrollbars", "--user-data-dir=\(work)/profile"
            ] + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        let data: Data = await withCheckedContinuation { c in
            DispatchQueue.global().async {
                let timer = DispatchWorkItem { if p.isRunning { p.terminate() } }
                DispatchQueue.global().asyncAfter(deadline: .now() + 90, execute: timer)
                let d = out.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                timer.cancel()
                c.resume(returning: d)
            }
        }
        #expect(p.terminationStatus == 0, "chromium \(args.first ?? "") exited with \(p.terminationStatus)")
        return String(decoding: data, as: UTF8.self)
    }
}
