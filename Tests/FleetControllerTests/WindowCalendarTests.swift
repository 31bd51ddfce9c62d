import FleetCore
import Foundation
import Testing
@testable import FleetController

/// Maintenance windows in real zones from the zone database, across both DST changes of 2026.
/// Every `now` is passed in; expected instants are UTC written out by hand.
@Suite("Maintenance window calendar")
struct WindowCalendarTests {
    private func zone(_ name: String) throws -> TimeZone { try #require(TimeZone(identifier: name)) }

    private func starts(_ text: String, _ zoneName: String, after now: Int64, count: Int) throws -> [Int64] {
        let w = try MaintenanceWindow(parsing: text)
        return WindowCalendar.occurrences(of: w, in: try zone(zoneName), after: now, count: count).map(\.start)
    }

    // MARK: Which zone

    @Test func labelThenConfiguredThenWindowThenUTC() throws {
        let w = try MaintenanceWindow(parsing: "daily 02:00+1h America/New_York")
        let byLabel = WindowCalendar.zone(for: w, label: "Asia/Kolkata", configured: "Europe/Berlin")
        #expect(byLabel.0.identifier == "Asia/Kolkata" && byLabel.source == "label")
        let byConfigured = WindowCalendar.zone(for: w, label: nil, configured: "Europe/Berlin")
        #expect(byConfigured.0.identifier == "Europe/Berlin" && byConfigured.source == "configured")
        let byWindow = WindowCalendar.zone(for: w, label: nil, configured: nil)
        #expect(byWindow.0.identifier == "America/New_York" && byWindow.source == "window")
        let none = WindowCalendar.zone(for: try MaintenanceWindow(parsing: "daily 02:00+1h"), label: nil, configured: nil)
        #expect(none.0.secondsFromGMT(for: Date(timeIntervalSince1970: 1_780_000_000)) == 0)
        #expect(none.source == "utc")
    }

    @Test func unknownZonesAreSkippedAndSaidSo() throws {
        let w = try MaintenanceWindow(parsing: "daily 02:00+1h Europe/Berlin")
        let choice = WindowCalendar.choose(for: w, label: "Mars/Olympus", configured: "Not A Zone")
        #expect(choice.source == .window)
        #expect(choice.skipped.map(\.source) == [.label, .configured])
        let (tz, source) = WindowCalendar.zone(for: w, label: "Mars/Olympus", configured: nil)
        #expect(tz.identifier == "Europe/Berlin")
        #expect(source.hasPrefix("window") && source.contains("Mars/Olympus"))
        let allUnknown = WindowCalendar.choose(
            for: try MaintenanceWindow(parsing: "daily 02:00+1h Moon/Base"),
            label: "", configured: "Mars/Olympus")
        #expect(allUnknown.source == .utc && allUnknown.skipped.map(\.source) == [.configured, .window])
    }

    @Test func knownZones() {
        for name in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "America/Argentina/Buenos_Aires"] {
            #expect(WindowCalendar.isKnownZone(name), "\(name)")
        }
        for name in ["", "Mars/Olympus", "Europe/Berlin ", "../etc/passwd", "Europe/"] {
            #expect(!WindowCalendar.isKnownZone(name), "\(name)")
        }
    }

    // MARK: Europe/Berlin, 2026

    @Test func berlinSpringForward() throws {
        // Sunday 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC). A 02:00 or 02:30 start
        // begins at the first valid instant after: 03:00 CEST.
        #expect(
            try starts("daily 02:00+1h", "Europe/Berlin", after: 1_774_612_800, count: 3)
                == [1_774_659_600, 1_774_746_000, 1_774_828_800])
        #expect(try starts("sun 02:30+1h", "Europe/Berlin", after: 1_774_612_800, count: 1) == [1_774_746_000])
        // 01:00 is unaffected: 00:00 UTC on the 29th.
        #expect(try starts("sun 01:00+1h", "Europe/Berlin", after: 1_774_612_800, count: 1) == [1_774_746_000 - 3600])
    }

    @Test func berlinFallBack() throws {
        // Sunday 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:00 happens at 00:00 and 01:00 UTC.
        #expect(
            try starts("daily 02:00+1h", "Europe/Berlin", after: 1_792_843_200, count: 2)
                == [1_792_886_400, 1_792_976_400])
    }

    @Test func berlinWindowLastsItsLengthAcrossTheChange() throws {
        let w = try MaintenanceWindow(parsing: "sat 22:00+8h Europe/Berlin")
        let o = WindowCalendar.occurrences(of: w, in: try zone("Europe/Berlin"), after: 1_774_612_800, count: 1)
        #expect(o == [ActivationWindow(start: 1_774_731_600, end: 1_774_760_400)])  // 21:00Z to 05:00Z (07:00 CEST)
    }

    // MARK: America/New_York, 2026

    @Test func newYorkSpringForward() throws {
        // Sunday 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        #expect(
            try starts("daily 02:00+1h", "America/New_York", after: 1_772_798_400, count: 3)
                == [1_772_866_800, 1_772_953_200, 1_773_036_000])
    }

    @Test func newYorkFallBack() throws {
        // Sunday 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens at 05:30 and 06:30 UTC.
        #expect(
            try starts("daily 01:30+1h", "America/New_York", after: 1_793_361_600, count: 3)
                == [1_793_424_600, 1_793_511_000, 1_793_601_000])
    }

    // MARK: Offsets that are not whole hours

    @Test func kolkataHalfHour() throws {
        // 02:00 IST (+5:30) is 20:30 UTC the day before; 21:00 UTC is inside it.
        let w = try MaintenanceWindow(parsing: "daily 02:00+1h")
        let now: Int64 = 1_780_261_200
        let o = WindowCalendar.occurrences(of: w, in: try zone("Asia/Kolkata"), after: now, count: 2)
        #expect(o.map(\.start) == [1_780_259_400, 1_780_345_800])
        #expect(MaintenanceWindow.allows(o, at: now))
        #expect(!MaintenanceWindow.allows(o, at: 1_780_263_000))
    }

    @Test
    func lordHoweHalfHourDST() throws {
        // Lord Howe shifts by 30 minutes: +10:30 standard, +11 summer.
        let lordHowe = try zone("Australia/Lord_Howe")
        #expect(lordHowe.secondsFromGMT(for: Date(timeIntervalSince1970: 1_780_000_000)) == 37_800)
        // Sunday 2026-10-04: 02:00 jumps to 02:30; a 02:00 start begins at 02:30 (15:30 UTC the 3rd).
        #expect(
            try starts("daily 02:00+1h", "Australia/Lord_Howe", after: 1_790_899_200, count: 3)
                == [1_790_955_000, 1_791_041_400, 1_791_126_000])
        // Sunday 2026-04-05: 02:00 goes back to 01:30; 01:45 happens twice, the first at 14:45 UTC the 4th.
        #expect(
            try starts("daily 01:45+1h", "Australia/Lord_Howe", after: 1_775_174_400, count: 3)
                == [1_775_227_500, 1_775_313_900, 1_775_402_100])
    }

    // MARK: Days and midnight

    @Test func windowSpanningMidnightWithDaysFilter() throws {
        // Sat 2026-12-05 01:00 UTC: inside Friday's window, which began before midnight.
        let now: Int64 = 1_796_432_400
        let w = try MaintenanceWindow(parsing: "mon-fri 22:30+4h UTC")
        let o = WindowCalendar.occurrences(of: w, in: try zone("UTC"), after: now, count: 3)
        #expect(o.map(\.start) == [1_796_423_400, 1_796_682_600, 1_796_682_600 + 86_400])
        #expect(o[0].contains(now))
        #expect(!MaintenanceWindow.allows(o, at: now + 2 * 3600))  // Sat 03:00: Friday's has closed
    }

    @Test func sameWindowInTwoZones() throws {
        // "daily 02:00+3h" at 2026-06-01 00:00 UTC: open in Berlin (02:00 CEST = 00:00Z), not in New York.
        let w = try MaintenanceWindow(parsing: "daily 02:00+3h")
        let now: Int64 = 1_780_272_000
        let berlin = WindowCalendar.occurrences(of: w, in: try zone("Europe/Berlin"), after: now, count: 1)
        let newYork = WindowCalendar.occurrences(of: w, in: try zone("America/New_York"), after: now, count: 1)
        #expect(MaintenanceWindow.allows(berlin, at: now))
        #expect(!MaintenanceWindow.allows(newYork, at: now))
        #expect(newYork.first?.start == now + 6 * 3600)  // 02:00 EDT = 06:00Z
    }
}
