import FleetCore
import Synchronization

/// Devices broken down by the values of one label key the operator names (`--view-label`), with
/// bounded cardinality: the most common values, then "other" and "(none)".
struct LabelView: Sendable, Equatable {
    struct Row: Sendable, Equatable {
        var value: String
        var devices: Int
        var byStatus: [String: Int]
    }
    var key: String
    var rows: [Row]

    static let topValues = 10
    static let other = "other"
    static let none = "(none)"

    /// `labels` per device with its status; the `topValues` most common values by count (ties by
    /// value), the rest folded into "other", devices without the key into "(none)".
    static func breakdown(key: String, devices: [(labels: [String: String], status: String)], top: Int = topValues) -> LabelView {
        var counts: [String: Row] = [:]
        for d in devices {
            let v = d.labels[key] ?? none
            counts[v, default: Row(value: v, devices: 0, byStatus: [:])].devices += 1
            counts[v]!.byStatus[d.status, default: 0] += 1
        }
        let named = counts.values.filter { $0.value != none }.sorted { ($1.devices, $0.value) < ($0.devices, $1.value) }
        var rows = Array(named.prefix(top))
        let rest = named.dropFirst(top)
        if !rest.isEmpty {
            var o = Row(value: other, devices: 0, byStatus: [:])
            for r in rest {
                o.devices += r.devices
                o.byStatus.merge(r.byStatus, uniquingKeysWith: +)
            }
            rows.append(o)
        }
        if let n = counts[none] { rows.append(n) }
        return LabelView(key: key, rows: rows)
    }
}

/// The label view's gauges: values that fell out of the view are set to 0, not left at their last count.
final class LabelViewGauges: Sendable {
    private let shown = Mutex<Set<String>>([])

    func record(_ view: LabelView, metrics: ControllerMetrics) {
        let values = Set(view.rows.map(\.value))
        let gone = shown.withLock { old in
            let g = old.subtracting(values)
            old = values
            return g
        }
        let help = "Devices by the value of the label the controller's --view-label names (top values, other, (none))"
        for v in gone {
            metrics.registry.makeGauge(name: "edgefleet_devices_by_label", labels: [("key", view.key), ("value", v)], help: help).set(
                Int64(0))
        }
        for r in view.rows {
            metrics.registry.makeGauge(name: "edgefleet_devices_by_label", labels: [("key", view.key), ("value", r.value)], help: help)
                .set(Int64(r.devices))
        }
    }
}
