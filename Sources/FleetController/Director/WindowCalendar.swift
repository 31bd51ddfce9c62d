import FleetCore
import Foundation

/// Maintenance windows in real time zones: the zone database lives here, on the controller,
/// because FleetCore (and so the agent) has none. The arithmetic is FleetCore's
/// (`MaintenanceWindow.occurrences(after:count:utcOffset:)`); this supplies the offsets.
enum WindowCalendar {
    /// Where the zone a window is evaluated in came from.
    enum ZoneSource: String, Sendable {
        case label  // the device's `timezone` label
        case configured  // the zone the device reports in its facts
        case window  // the window's own zone
        case utc  // none of them named a known zone
    }

    struct ZoneChoice {
        var zone: TimeZone
        var source: ZoneSource
        /// Names that were given but are not zones this controller knows, in precedence order.
        var skipped: [(source: ZoneSource, name: String)]

        /// "label", or "window (unknown label zone 'Mars/Olympus' skipped)".
        var explanation: String {
            if skipped.isEmpty { return source.rawValue }
            let notes = skipped.map { "unknown \($0.source.rawValue) zone '\($0.name)' skipped" }
            return "\(source.rawValue) (\(notes.joined(separator: "; ")))"
        }
    }

    /// The zone a window is evaluated in for a device. Precedence: the device's `timezone` label,
    /// then the device's configured zone (DeviceFacts.timezone), then the window's `timezone`,
    /// then UTC; a name that is not a known zone is skipped to the next. The source says which
    /// was used and which were skipped.
    static func zone(for window: MaintenanceWindow, label: String?, configured: String?) -> (TimeZone, source: String) {
        let choice = choose(for: window, label: label, configured: configured)
        return (choice.zone, choice.explanation)
    }

    static func choose(for window: MaintenanceWindow, label: String?, configured: String?) -> ZoneChoice {
        var skipped: [(source: ZoneSource, name: String)] = []
        for (source, name) in [(ZoneSource.label, label), (.configured, configured), (.window, window.timezone)] {
            guard let name, !name.isEmpty else { continue }
            if let zone = knownZone(name) { return ZoneChoice(zone: zone, source: source, skipped: skipped) }
            skipped.append((source, name))
        }
        return ZoneChoice(zone: TimeZone(identifier: "UTC")!, source: .utc, skipped: skipped)
    }

    /// The occurrences whose end is after `now` (the one containing now first if any), `count`
    /// of them, as UTC intervals. A 02:00 start on a spring-forward day that skips 02:00 starts
    /// at the first valid instant after; on fall-back, at the first 02:00.
    static func occurrences(of window: MaintenanceWindow, in zone: TimeZone, after now: Int64, count: Int) -> [ActivationWindow] {
        window.occurrences(after: now, count: count) { t in
            zone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(t)))
        }
    }

    static func isKnownZone(_ name: String) -> Bool { knownZone(name) != nil }

    /// A name shaped like an IANA zone name (as a window's text allows) that the zone database has.
    static func knownZone(_ name: String) -> TimeZone? {
        guard MaintenanceWindow(days: [], startMinute: 0, lengthSeconds: 3600, timezone: name).validate() == nil,
            let zone = TimeZone(identifier: name)
        else { return nil }
        return zone
    }
}
