import FleetCore
import Foundation

/// What the dashboard shows, gathered by its route; rendering it is a pure function.
struct DashboardData: Sendable {
    struct Rollout: Sendable {
        var status: RolloutStatus
        var history: [String: [CellHistoryPoint]]
    }
    var now: Int64
    /// The fleet counted by class, tier and status (not read device by device).
    var devices: [DeviceCount]
    var eventsDropped: [String: UInt64]
    var rollouts: [Rollout]
    /// Per model, what devices measured of each variant per hardware class.
    var performance: [String: [VariantMeasurement]] = [:]
    /// Stored artifacts whose bytes failed their hash check: out of service.
    var quarantined: [QuarantinedArtifact] = []
    /// Devices by the values of the label the operator named (`--view-label`).
    var labelView: LabelView? = nil
    var refreshSeconds: Int = 5
}

/// The controller's web page: server-rendered HTML with inline CSS and SVG, no scripts and no
/// external assets, refreshed by the browser every few seconds. Gate rows carry `data-*`
/// attributes (rollout, cell, metric, state) so that tools can read the page as well as people.
enum Dashboard {
    static func render(_ d: DashboardData) -> String {
        var h = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="refresh" content="\(d.refreshSeconds)">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>EdgeFleet</title>
            <style>\(css)</style></head><body>
            <header><h1>EdgeFleet</h1><span class="muted">controller time \(time(d.now)) UTC · refreshes every \(d.refreshSeconds) s</span></header>
            """
        h += fleet(d)
        if let v = d.labelView { h += labelView(v) }
        h += quarantine(d.quarantined)
        if d.rollouts.isEmpty {
            h +=
                "<section><h2>Rollouts</h2><p class=\"muted\">No rollouts yet: <code>fleetctl rollout start RELEASE --policy canary</code>.</p></section>"
        }
        for r in d.rollouts { h += rollout(r, now: d.now) }
        h += performance(d.performance)
        h += "</body></html>\n"
        return h
    }

    /// The sign-in page: an operator token (any role) becomes a read-only session cookie.
    static func login(message: String?) -> String {
        var h =
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>EdgeFleet: sign in</title><style>\(css)</style></head><body>"
        h += "<header><h1>EdgeFleet</h1></header><section><h2>Sign in to the dashboard</h2>"
        if let message { h += "<p class=\"why\">\(esc(message))</p>" }
        h +=
            "<form method=\"post\" action=\"/login\"><p><label>Operator token <input type=\"password\" name=\"token\" size=\"60\" autocomplete=\"off\"></label></p>"
        h += "<p><button type=\"submit\">Sign in</button></p></form>"
        h +=
            "<p class=\"muted\">Create one with <code>fleetctl tokens create --name NAME --role viewer</code>. The page only reads; the cookie cannot change anything.</p>"
        return h + "</section></body></html>\n"
    }

    // MARK: quarantine

    static func quarantine(_ q: [QuarantinedArtifact]) -> String {
        guard !q.isEmpty else { return "" }
        var h =
            "<section><h2 class=\"why\">Quarantined artifacts (\(q.count))</h2><p class=\"muted\">Their stored bytes failed the hash check: "
        h += "never served (410), no delta built from them; devices that need one are held. Upload the right bytes to restore.</p><ul>"
        for a in q {
            h +=
                "<li data-quarantined=\"\(esc(a.sha256))\"><code>\(esc(String(a.sha256.prefix(16))))…</code> found by \(esc(a.foundBy.rawValue)) "
            h += "at \(time(a.quarantinedAt)) UTC; the bytes hash to <code>\(esc(String(a.actualSha256.prefix(16))))…</code></li>"
        }
        return h + "</ul></section>"
    }

    // MARK: performance

    /// The fleet's performance table: each variant's measured latency, memory and energy per class.
    static func performance(_ perf: [String: [VariantMeasurement]]) -> String {
        guard !perf.isEmpty else { return "" }
        var h = "<section><h2>Measured on the fleet</h2>"
        for (model, rows) in perf.sorted(by: { $0.key < $1.key }) {
            h += "<h3><code>\(esc(model))</code></h3><table class=\"perf\"><thead><tr><th>class</th><th>variant</th><th>devices</th>"
            h += "<th>p50</th><th>p95</th><th>peak memory</th><th>energy / inference</th></tr></thead><tbody>"
            for r in rows.sorted(by: { ($0.hardwareClass, $0.latencyP50Ms ?? .infinity) < ($1.hardwareClass, $1.latencyP50Ms ?? .infinity) }
            ) {
                h +=
                    "<tr data-model=\"\(esc(model))\" data-class=\"\(esc(r.hardwareClass))\" data-variant=\"\(esc(r.variant ?? r.sha256))\" "
                h += "data-p50=\"\(r.latencyP50Ms.map { fmt($0) } ?? "")\" data-devices=\"\(r.devices)\">"
                h +=
                    "<td><code>\(esc(r.hardwareClass))</code></td><td>\(esc(r.variant ?? String(r.sha256.prefix(12))))</td><td>\(r.devices)</td>"
                h += "<td>\(r.latencyP50Ms.map { fmt($0) + " ms" } ?? "–")</td><td>\(r.latencyP95Ms.map { fmt($0) + " ms" } ?? "–")</td>"
                h += "<td>\(r.peakMemoryBytes.map { ByteCount.format($0) } ?? "–")</td>"
                h += "<td>\(r.joulesPerInference.map { fmt($0) + " J (\(r.energyDevices) devices)" } ?? "unavailable")</td></tr>"
            }
            h += "</tbody></table>"
        }
        return h + "</section>"
    }

    // MARK: fleet

    static func fleet(_ d: DashboardData) -> String {
        var classes = Set<String>(), tiers = Set<String>()
        var counts: [String: Int] = [:], byStatus: [String: Int] = [:]
        for group in d.devices {
            let c = group.hardwareClass ?? "none", t = group.tier ?? "none"
            classes.insert(c); tiers.insert(t)
            counts["\(c)\u{0}\(t)", default: 0] += group.devices
            byStatus[group.status.rawValue, default: 0] += group.devices
        }
        let tierList = tiers.sorted()
        let total = d.devices.reduce(0) { $0 + $1.devices }
        var h = "<section id=\"fleet\"><h2>Devices <span class=\"muted\">\(total)</span></h2>"
        h += "<table class=\"matrix\"><thead><tr><th>hardware class \\ tier</th>"
        for t in tierList { h += "<th>\(esc(t))</th>" }
        h += "<th>total</th></tr></thead><tbody>"
        for c in classes.sorted() {
            h += "<tr><th>\(esc(c))</th>"
            var total = 0
            for t in tierList {
                let n = counts["\(c)\u{0}\(t)"] ?? 0
                total += n
                h += "<td data-class=\"\(esc(c))\" data-tier=\"\(esc(t))\">\(n)</td>"
            }
            h += "<td><b>\(total)</b></td></tr>"
        }
        h += "</tbody></table><p>"
        h += byStatus.sorted { $0.key < $1.key }.map { "<span class=\"badge s-\(esc($0.key))\">\(esc($0.key)) \($0.value)</span>" }.joined(
            separator: " ")
        let dropped = d.eventsDropped.values.reduce(0, +)
        if dropped > 0 {
            h += " <span class=\"badge s-failed\">events dropped by \(d.eventsDropped.count) device outboxes: \(dropped)</span>"
        }
        h += "</p></section>"
        return h
    }

    static func labelView(_ v: LabelView) -> String {
        var h = "<section id=\"by-label\"><h2>Devices by <code>\(esc(v.key))</code></h2>"
        h += "<table class=\"cells\"><thead><tr><th>\(esc(v.key))</th><th>devices</th><th>status</th></tr></thead><tbody>"
        for r in v.rows {
            h +=
                "<tr data-label-value=\"\(esc(r.value))\" data-devices=\"\(r.devices)\"><td><code>\(esc(r.value))</code></td><td>\(r.devices)</td><td>"
            h += r.byStatus.sorted { $0.key < $1.key }.map { "<span class=\"badge s-\(esc($0.key))\">\(esc($0.key)) \($0.value)</span>" }
                .joined(separator: " ")
            h += "</td></tr>"
        }
        return h + "</tbody></table></section>"
    }

    // MARK: rollouts

    static func rollout(_ r: DashboardData.Rollout, now: Int64) -> String {
        let s = r.status, info = s.rollout
        var h = "<section class=\"rollout\" data-rollout=\"\(info.id)\" data-state=\"\(esc(info.state.rawValue))\">"
        h +=
            "<h2>Rollout \(info.id): \(esc(info.release)) <span class=\"badge s-\(esc(info.state.rawValue))\">\(esc(info.state.rawValue))</span></h2>"
        h += "<p class=\"muted\">policy \(esc(s.policy?.name ?? info.strategy))"
        if let prev = s.previousRelease { h += " · previous release \(esc(prev))" }
        h +=
            " · started \(time(info.createdAt)) · \(info.committed)/\(info.targeted) assigned devices committed, \(info.failed) failed, \(info.held) held"
        if let sel = info.selector, !sel.isEmpty { h += " · devices <code>\(esc(sel))</code>" }
        if let w = info.window { h += " · window <code>\(esc(w))</code>" }
        h += "</p>"
        if let n = s.waitingForWindow, n > 0 {
            h += "<p class=\"waiting\" data-waiting-for-window=\"\(n)\">\(n) device(s) staged and waiting for their maintenance window</p>"
        }
        if let waves = s.waves {
            h +=
                "<table class=\"cells\"><thead><tr><th>wave</th><th>selector</th><th>status</th><th>devices</th><th>cells</th></tr></thead><tbody>"
            for w in waves {
                h +=
                    "<tr data-wave=\"\(esc(w.name))\" data-status=\"\(esc(w.status.rawValue))\"><td><b>\(esc(w.name))</b></td><td><code>\(esc(w.selector.isEmpty ? "everything" : w.selector))</code></td>"
                h +=
                    "<td><span class=\"badge s-\(esc(w.status.rawValue))\">\(esc(w.status.rawValue))</span></td><td>\(w.devices)</td><td>\(w.cells)</td></tr>"
            }
            h += "</tbody></table>"
        }
        if !s.cells.isEmpty {
            h +=
                "<table class=\"cells\"><thead><tr><th>cell</th><th>phase</th><th>status</th><th>cohort progress</th><th>gates</th></tr></thead><tbody>"
            for c in s.cells { h += cell(c, rollout: info.id) }
            h += "</tbody></table>"
            h += charts(r)
        }
        let recent = s.actions.suffix(12).reversed()
        if !recent.isEmpty {
            h += "<details><summary>Recent actions (\(s.actions.count))</summary><ul class=\"actions\">"
            for a in recent {
                h += "<li><span class=\"muted\">\(time(a.at))</span> <b>\(esc(a.actor))</b> \(esc(a.action))"
                if let c = a.cell { h += " <code>\(esc(c))</code>" }
                if let d = a.detail { h += " — \(esc(d))" }
                h += "</li>"
            }
            h += "</ul></details>"
        }
        return h + "</section>"
    }

    static func cell(_ c: RolloutStatus.Cell, rollout: Int64) -> String {
        let o = c.observation
        var h = "<tr data-cell=\"\(esc(c.cell))\" data-status=\"\(esc(c.status.rawValue))\"><td><code>\(esc(c.cell))</code></td>"
        h += "<td>\(c.phase)/\(c.phases) <span class=\"muted\">(\(Int((c.cohortShare * 100).rounded()))%)</span></td>"
        h += "<td><span class=\"badge s-\(esc(c.status.rawValue))\">\(esc(c.status.rawValue))</span></td>"
        h += "<td>\(progressBar(o))</td><td>"
        let stopped = c.status != .running && c.status != .baking
        for g in c.gates {
            let state = g.passed.map { $0 ? "passing" : "failing" } ?? (stopped ? "unjudged" : "waiting")
            let observed = g.observed.map { fmt($0) } ?? "n/a"
            h += "<div class=\"gate g-\(state)\" data-rollout=\"\(rollout)\" data-cell=\"\(esc(c.cell))\" data-metric=\"\(esc(g.metric))\" "
            h += "data-state=\"\(state)\" data-observed=\"\(g.observed.map { fmt($0) } ?? "")\" data-threshold=\"\(fmt(g.threshold))\">"
            h += "\(esc(g.metric)) <b>\(observed)</b> ≤ \(fmt(g.threshold)) <span class=\"gstate\">\(state)</span></div>"
        }
        if let f = c.failedGate {
            h +=
                "<div class=\"why\">stopped by \(esc(f.metric)): observed \(f.observed.map { fmt($0) } ?? "n/a"), threshold \(fmt(f.threshold))</div>"
        }
        if let b = c.blockedBy {
            h +=
                "<div class=\"why blocked\" data-blocked=\"\(esc(b.joined(separator: ",")))\">blocked: \(esc(b.joined(separator: ", "))) cannot judge "
            h += "(no figures from the new release, or no control cohort and no baseline); promote to override</div>"
        }
        if let n = c.failedNotRetried, n > 0 {
            h +=
                "<div class=\"why\" data-failed-held=\"\(n)\">\(n) device(s) failed and are held until <code>fleetctl rollout retry \(rollout)</code></div>"
        }
        if let a = c.afterStop {
            h +=
                "<div class=\"muted\" data-restored=\"\(a.restored)\" data-reached=\"\(a.reached)\">after the stop: \(a.restored)/\(a.reached) devices off the new release</div>"
        }
        if let r = c.observation?.reference {
            h += "<div class=\"muted\">compared with: \(esc(r.rawValue)) (\(c.observation?.control?.devices ?? 0) devices)</div>"
        }
        return h + "</td></tr>"
    }

    static func progressBar(_ o: CellObservation?) -> String {
        guard let o, o.targeted > 0 else { return "<span class=\"muted\">no devices yet</span>" }
        let w = 220.0, total = Double(o.targeted)
        let parts: [(Int, String)] = [
            (o.committed, "#2e9e5b"), (o.installFailed, "#d64545"), (o.healthFailed, "#e07b39"), (o.timedOut, "#8a6fb3")
        ]
        var x = 0.0
        var svg =
            "<svg class=\"bar\" width=\"\(Int(w))\" height=\"14\" role=\"img\" aria-label=\"\(o.committed) of \(o.targeted) committed\">"
        svg += "<rect width=\"\(Int(w))\" height=\"14\" fill=\"#e6e8eb\"/>"
        for (n, color) in parts where n > 0 {
            let pw = w * Double(n) / total
            svg += "<rect x=\"\(fmt(x))\" width=\"\(fmt(pw))\" height=\"14\" fill=\"\(color)\"/>"
            x += pw
        }
        svg += "</svg>"
        var text = " \(o.committed)/\(o.targeted) committed"
        if o.installFailed > 0 { text += ", \(o.installFailed) install failed" }
        if o.healthFailed > 0 { text += ", \(o.healthFailed) health failed" }
        if o.timedOut > 0 { text += ", \(o.timedOut) timed out" }
        return svg + "<span class=\"small\">\(text)</span>"
    }

    // MARK: charts

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]

    static func charts(_ r: DashboardData.Rollout) -> String {
        let cells = r.history.keys.sorted()
        guard !cells.isEmpty else { return "" }
        var progress: [LineChart.Series] = [], latency: [LineChart.Series] = []
        for (i, c) in cells.enumerated() {
            let points = r.history[c] ?? []
            let color = palette[i % palette.count]
            progress.append(.init(name: c, color: color, dashed: false, points: points.map { (Double($0.at), Double($0.committed)) }))
            let t = points.compactMap { p in p.treatmentP50.map { (Double(p.at), $0) } }
            let k = points.compactMap { p in p.controlP50.map { (Double(p.at), $0) } }
            if !t.isEmpty { latency.append(.init(name: "\(c) new", color: color, dashed: false, points: t)) }
            if !k.isEmpty { latency.append(.init(name: "\(c) control", color: color, dashed: true, points: k)) }
        }
        var h = "<div class=\"charts\">"
        h += LineChart(title: "Devices committed per cell", yLabel: "devices", series: progress).svg()
        if !latency.isEmpty {
            h += LineChart(title: "Inference latency p50 (ms): new release vs control", yLabel: "ms", series: latency).svg()
        }
        return h + "</div>"
    }

    // MARK: helpers

    static func esc(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(ch)
            }
        }
        return out
    }

    static func fmt(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e9 { return String(Int64(v)) }
        return String(format: "%.3f", v)
    }

    /// UTC, "2026-11-29 13:59:43".
    static func time(_ t: Int64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime]
        return f.string(from: Date(timeIntervalSince1970: TimeInterval(t)))
    }

    static let css = """
        body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 24px 40px;color:#1d232a;background:#fafbfc}
        header{display:flex;align-items:baseline;gap:16px;border-bottom:1px solid #dde1e6;margin-bottom:8px}
        h1{font-size:22px;margin:14px 0}h2{font-size:17px;margin:18px 0 6px}
        section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:4px 16px 12px;margin:14px 0}
        table{border-collapse:collapse;margin:6px 0}th,td{border-bottom:1px solid #eceef1;padding:4px 10px;text-align:left;vertical-align:top}
        .matrix td{text-align:right;min-width:60px}.muted{color:#6a737d;font-weight:normal}.small{font-size:12px;color:#444}
        .badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;background:#e6e8eb}
        .s-completed,.s-committed,.s-running{background:#d5f2df}.s-baking{background:#dcebfb}.s-paused{background:#fff1c2}
        .s-rolledBack,.s-aborted,.s-failed,.s-rolled-back,.s-rejected{background:#fbd7d7}.s-installing{background:#dcebfb}
        .gate{font-size:12px;white-space:nowrap}.g-failing{color:#b3261e;font-weight:bold}.g-passing{color:#1e7b45}.g-waiting{color:#6a737d}.g-unjudged{color:#9a6700}.blocked{color:#9a6700;font-weight:bold}
        .gstate{border-radius:8px;padding:0 6px;background:#f1f2f4}.why{font-size:12px;color:#b3261e}
        .charts{display:flex;flex-wrap:wrap;gap:16px}.charts svg{background:#fff;border:1px solid #eceef1}
        .actions{font-size:12px;margin:4px 0}code{font-size:12px}
        """
}

/// A small SVG line chart: time on x, one polyline per series, a legend under it.
struct LineChart {
    struct Series { var name: String; var color: String; var dashed: Bool; var points: [(Double, Double)] }
    var title: String
    var yLabel: String
    var series: [Series]
    var width = 560.0
    var height = 240.0

    func svg() -> String {
        let all = series.flatMap(\.points)
        let left = 48.0, right = 12.0, top = 26.0, bottom = 30.0
        let legendRows = (series.count + 1) / 2
        let total = height + Double(legendRows) * 16
        var s =
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(total))\" role=\"img\" aria-label=\"\(Dashboard.esc(title))\">"
        s += "<text x=\"\(Int(left))\" y=\"16\" font-size=\"13\" font-weight=\"bold\">\(Dashboard.esc(title))</text>"
        guard let minX = all.map(\.0).min(), let maxX = all.map(\.0).max(), let maxY0 = all.map(\.1).max() else {
            return s + "<text x=\"\(Int(left))\" y=\"60\" font-size=\"12\" fill=\"#6a737d\">no data yet</text></svg>"
        }
        let maxY = maxY0 > 0 ? maxY0 * 1.1 : 1
        let spanX = maxX > minX ? maxX - minX : 1
        let pw = width - left - right, ph = height - top - bottom
        func x(_ v: Double) -> Double { left + (v - minX) / spanX * pw }
        func y(_ v: Double) -> Double { top + ph - v / maxY * ph }
        s += "<line x1=\"\(Int(left))\" y1=\"\(Int(top + ph))\" x2=\"\(Int(left + pw))\" y2=\"\(Int(top + ph))\" stroke=\"#999\"/>"
        s += "<line x1=\"\(Int(left))\" y1=\"\(Int(top))\" x2=\"\(Int(left))\" y2=\"\(Int(top + ph))\" stroke=\"#999\"/>"
        for i in 0...4 {
            let v = maxY * Double(i) / 4
            let label = v == v.rounded() ? String(Int64(v)) : String(format: "%.1f", v)
            s += "<text x=\"\(Int(left - 4))\" y=\"\(Int(y(v)) + 4)\" font-size=\"10\" text-anchor=\"end\" fill=\"#555\">\(label)</text>"
            if i > 0 { s += "<line x1=\"\(Int(left))\" y1=\"\(Int(y(v)))\" x2=\"\(Int(left + pw))\" y2=\"\(Int(y(v)))\" stroke=\"#eee\"/>" }
        }
        s +=
            "<text x=\"\(Int(left))\" y=\"\(Int(top + ph + 14))\" font-size=\"10\" fill=\"#555\">\(Dashboard.time(Int64(minX)).suffix(8))</text>"
        s +=
            "<text x=\"\(Int(left + pw))\" y=\"\(Int(top + ph + 14))\" font-size=\"10\" text-anchor=\"end\" fill=\"#555\">\(Dashboard.time(Int64(maxX)).suffix(8))</text>"
        s +=
            "<text x=\"12\" y=\"\(Int(top + ph / 2))\" font-size=\"10\" fill=\"#555\" transform=\"rotate(-90 12 \(Int(top + ph / 2)))\">\(Dashboard.esc(yLabel))</text>"
        for se in series where !se.points.isEmpty {
            let pts = se.points.map { "\(Dashboard.fmt(x($0.0))),\(Dashboard.fmt(y($0.1)))" }.joined(separator: " ")
            s +=
                "<polyline fill=\"none\" stroke=\"\(se.color)\" stroke-width=\"2\"\(se.dashed ? " stroke-dasharray=\"5 3\"" : "") points=\"\(pts)\"/>"
        }
        for (i, se) in series.enumerated() {
            let lx = left + Double(i % 2) * pw / 2, ly = height + Double(i / 2) * 16
            s +=
                "<line x1=\"\(Int(lx))\" y1=\"\(Int(ly - 4))\" x2=\"\(Int(lx + 18))\" y2=\"\(Int(ly - 4))\" stroke=\"\(se.color)\" stroke-width=\"2\"\(se.dashed ? " stroke-dasharray=\"5 3\"" : "")/>"
            s += "<text x=\"\(Int(lx + 24))\" y=\"\(Int(ly))\" font-size=\"11\">\(Dashboard.esc(se.name))</text>"
        }
        return s + "</svg>"
    }
}
