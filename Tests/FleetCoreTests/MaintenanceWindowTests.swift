import Testing
@testable import FleetCore

@Suite struct MaintenanceWindowTests {
    typealias W = MaintenanceWindow

    private func parse(_ text: String) throws -> W { try W(parsing: text) }

    private func errorPosition(_ text: String) -> Int? {
        do { _ = try W(parsing: text); return nil } catch { return error.position }
    }

    // Europe/Berlin in 2026 written out by hand, so that the arithmetic is tested without a zone
    // database: CEST (+2) from 2026-03-29 01:00 UTC to 2026-10-25 01:00 UTC, CET (+1) around it.
    static func berlin2026(_ t: Int64) -> Int { (1_774_746_000..<1_792_890_000).contains(t) ? 7200 : 3600 }
    static func kolkata(_ t: Int64) -> Int { 19_800 }
    static func utc(_ t: Int64) -> Int { 0 }

    private func starts(_ w: W, after now: Int64, count: Int, _ offset: (Int64) -> Int) -> [Int64] {
        w.occurrences(after: now, count: count, utcOffset: offset).map(\.start)
    }

    // MARK: Parsing

    @Test func parsesTheDocumentedForms() throws {
        #expect(
            try parse("mon-fri 02:00+3h Europe/Berlin")
                == W(days: [.mon, .tue, .wed, .thu, .fri], startMinute: 120, lengthSeconds: 10_800, timezone: "Europe/Berlin"))
        #expect(try parse("daily 22:30+90m") == W(days: [], startMinute: 1350, lengthSeconds: 5400, timezone: nil))
        #expect(try parse("sat,sun 01:00+4h UTC") == W(days: [.sat, .sun], startMinute: 60, lengthSeconds: 14_400, timezone: "UTC"))
    }

    @Test func parsesVariants() throws {
        #expect(try parse("02:00+1h30m") == W(days: [], startMinute: 120, lengthSeconds: 5400))
        #expect(try parse("fri-mon 23:00+2h").days == [.mon, .fri, .sat, .sun])  // a range may wrap
        #expect(try parse("Mon-Sun 0:05 + 7d").days == [])  // all seven: every day
        #expect(try parse("Mon-Sun 0:05 + 7d").startMinute == 5)
        #expect(try parse("monday,wednesday 12:00+45m").days == [.mon, .wed])
        #expect(try parse("  daily   23:59+1m   America/Argentina/Buenos_Aires  ").timezone == "America/Argentina/Buenos_Aires")
        #expect(try parse("daily 00:00+1d2h3m4s").lengthSeconds == 86_400 + 7_200 + 180 + 4)
    }

    @Test(
        arguments: [
            ("", 0),  // empty
            ("moon 02:00+1h", 0),  // unknown day
            ("mon-fry 02:00+3h", 4),  // unknown day in a range
            ("mon,,fri 02:00+1h", 4),  // missing day
            ("mon- 02:00+1h", 4),  // range without an end
            ("mon-fri", 7),  // no start time
            ("mon-fri02:00+1h", 7),  // no space after the days
            ("mon-fri 24:00+3h", 8),  // hour out of range
            ("mon-fri 0200+3h", 8),  // no ':'
            ("mon-fri 02:60+3h", 11),  // minute out of range
            ("mon-fri 02:0+3h", 11),  // one-digit minutes
            ("mon-fri 02:00", 13),  // no length
            ("mon-fri 02:00 3h", 14),  // no '+'
            ("mon-fri 02:00+", 14),  // empty length
            ("mon-fri 02:00+3", 15),  // no unit
            ("mon-fri 02:00+3x", 15),  // unknown unit
            ("mon-fri 02:00+30s", 14),  // shorter than a minute
            ("mon-fri 02:00+8d", 14),  // longer than 7 days
            ("daily 02:00+3hUTC", 14),  // no space before the zone
            ("mon-fri 02:00+3h Europe/Ber$lin", 17),  // bad zone name
            ("mon-fri 02:00+3h /Berlin", 17),  // bad zone name
            ("mon-fri 02:00+3h Europe/Berlin extra", 31)  // trailing text
        ] as [(String, Int)])
    func malformedWindowNamesThePosition(_ text: String, _ position: Int) {
        #expect(errorPosition(text) == position, "\(text)")
    }

    @Test(arguments: [
        "mon-fri 02:00+3h Europe/Berlin", "daily 22:30+90m", "sat,sun 01:00+4h UTC", "fri-mon 23:00+2h",
        "mon,wed,fri 0:00+7d", "02:00+1h30m", "tue-thu,sun 12:34+1d1s Etc/GMT+5"
    ])
    func canonicalTextParsesBackEqual(_ text: String) throws {
        let w = try parse(text)
        #expect(try parse(w.description) == w)
        #expect(try parse(w.description).description == w.description)
    }

    @Test func canonicalText() throws {
        #expect(try parse("daily 22:30+90m").description == "daily 22:30+1h30m")
        #expect(try parse("fri-mon 23:00+2h").description == "mon,fri-sun 23:00+2h")
        #expect(try parse("sun,sat 1:00+240m UTC").description == "sat,sun 01:00+4h UTC")
        #expect(try parse("mon-fri 02:00+3h Europe/Berlin").description == "mon-fri 02:00+3h Europe/Berlin")
    }

    @Test func validateNamesProblems() {
        #expect(W(days: [], startMinute: 0, lengthSeconds: 60).validate() == nil)
        #expect(W(days: [], startMinute: 1439, lengthSeconds: 7 * 86_400, timezone: "Europe/Berlin").validate() == nil)
        #expect(W(days: [], startMinute: 1440, lengthSeconds: 3600).validate() != nil)
        #expect(W(days: [], startMinute: -1, lengthSeconds: 3600).validate() != nil)
        #expect(W(days: [], startMinute: 0, lengthSeconds: 59).validate() != nil)
        #expect(W(days: [], startMinute: 0, lengthSeconds: 7 * 86_400 + 1).validate() != nil)
        #expect(W(days: [], startMinute: 0, lengthSeconds: 3600, timezone: "Europe Berlin").validate() != nil)
        #expect(W(days: [.fri, .mon, .fri], startMinute: 0, lengthSeconds: 60).days == [.mon, .fri])
    }

    // MARK: Codable

    @Test func decodesTheObjectAndTheOneLineForms() throws {
        let object = #"{"days": ["mon", "tue"], "start": "02:00", "length": "3h", "timezone": "Europe/Berlin"}"#
        #expect(try JSONDecoder().decode(W.self, from: Data(object.utf8)) == parse("mon,tue 02:00+3h Europe/Berlin"))
        let line = #""mon-fri 02:00+3h Europe/Berlin""#
        #expect(try JSONDecoder().decode(W.self, from: Data(line.utf8)) == parse("mon-fri 02:00+3h Europe/Berlin"))
        // YAML 1.1 reads an unquoted 22:30 as 1350 (base 60): minutes. Length may be seconds, days one string.
        let numbers = #"{"days": "sat-sun", "start": 1350, "length": 5400}"#
        #expect(try JSONDecoder().decode(W.self, from: Data(numbers.utf8)) == parse("sat,sun 22:30+90m"))
        #expect(try JSONDecoder().decode(W.self, from: Data(#"{"start": "1:00", "length": "1h"}"#.utf8)) == parse("daily 01:00+1h"))
    }

    @Test(arguments: [
        #"{"days": ["mon"], "start": "02:00", "length": "3h", "timezon": "UTC"}"#,  // unknown key
        #"{"days": ["moon"], "start": "02:00", "length": "3h"}"#,
        #"{"start": "25:00", "length": "3h"}"#,
        #"{"start": "02:00", "length": "3 hours"}"#,
        #"{"start": 1440, "length": "3h"}"#,
        #"{"start": "02:00", "length": 30}"#,
        #"{"start": "02:00"}"#,
        #"{"start": "02:00", "length": "1h", "timezone": "Europe Berlin"}"#,
        #""mon-fri 02:00""#
    ])
    func refusesBadObjects(_ json: String) {
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(W.self, from: Data(json.utf8)) }
    }

    @Test func encodesTheObjectFormAndDecodesItBack() throws {
        for text in ["mon-fri 02:00+3h Europe/Berlin", "daily 22:30+90m"] {
            let w = try parse(text)
            #expect(try JSONDecoder().decode(W.self, from: JSONEncoder().encode(w)) == w)
        }
        let json = String(decoding: try JSONEncoder().encode(parse("sat 01:00+4h")), as: UTF8.self)
        #expect(json.contains(#""start":"01:00""#) && json.contains(#""length":"4h""#) && json.contains(#""days":["sat"]"#))
    }

    // MARK: Allows

    @Test func allowsInsideAnyWindowAndEverywhereWithoutWindows() {
        let a = ActivationWindow(start: 100, end: 200), b = ActivationWindow(start: 300, end: 400)
        #expect(W.allows([], at: 0))
        #expect(W.allows([a, b], at: 100))
        #expect(W.allows([a, b], at: 199))
        #expect(!W.allows([a, b], at: 200))  // [start, end)
        #expect(!W.allows([a, b], at: 99))
        #expect(!W.allows([a, b], at: 250))
        #expect(W.allows([a, b], at: 350))
    }

    // MARK: Occurrences (injected offsets)

    @Test func springForwardStartsAtTheFirstInstantAfterTheGap() throws {
        // Fri 2026-03-27 12:00 UTC; Sunday the 29th skips 02:00-03:00 local.
        let w = try parse("daily 02:00+1h")
        #expect(
            starts(w, after: 1_774_612_800, count: 3, Self.berlin2026)
                == [1_774_659_600, 1_774_746_000, 1_774_828_800])  // 01:00Z, 01:00Z (03:00 CEST), 00:00Z
        #expect(starts(try parse("daily 02:30+1h"), after: 1_774_612_800, count: 3, Self.berlin2026)[1] == 1_774_746_000)
    }

    @Test func fallBackStartsAtTheFirstOfTheRepeatedTimes() throws {
        // Sat 2026-10-24 12:00 UTC; Sunday the 25th has 02:00-03:00 local twice.
        let w = try parse("daily 02:00+1h")
        #expect(starts(w, after: 1_792_843_200, count: 2, Self.berlin2026) == [1_792_886_400, 1_792_976_400])
    }

    @Test func lengthIsElapsedTimeAcrossTheChange() throws {
        let w = try parse("sat 22:00+8h")
        let o = w.occurrences(after: 1_774_612_800, count: 1, utcOffset: Self.berlin2026)
        #expect(o == [ActivationWindow(start: 1_774_659_600 + 20 * 3600, end: 1_774_659_600 + 28 * 3600)])
    }

    @Test func halfHourOffset() throws {
        // 02:00 IST is 20:30 UTC the day before; now (21:00 UTC) is inside it.
        let o = try parse("daily 02:00+1h").occurrences(after: 1_780_261_200, count: 2, utcOffset: Self.kolkata)
        #expect(
            o == [
                ActivationWindow(start: 1_780_259_400, end: 1_780_263_000),
                ActivationWindow(start: 1_780_345_800, end: 1_780_349_400)
            ])
    }

    @Test func windowSpanningMidnightContainingNowComesFirst() throws {
        // Sat 2026-12-05 01:00 UTC is inside Friday's 23:00+3h.
        let now: Int64 = 1_796_432_400
        let o = try parse("fri 23:00+3h").occurrences(after: now, count: 2, utcOffset: Self.utc)
        #expect(
            o == [
                ActivationWindow(start: 1_796_425_200, end: 1_796_436_000),
                ActivationWindow(start: 1_796_425_200 + 7 * 86_400, end: 1_796_436_000 + 7 * 86_400)
            ])
        #expect(o[0].contains(now))
        #expect(W.allows(o, at: now))
        #expect(!W.allows(o, at: 1_796_436_000))
    }

    @Test func daysFilterSkipsTheWeekend() throws {
        let o = try parse("mon-fri 22:30+4h").occurrences(after: 1_796_432_400, count: 2, utcOffset: Self.utc)
        #expect(o.map(\.start) == [1_796_423_400, 1_796_682_600])  // Fri 22:30 (still open), then Mon 22:30
    }

    @Test func everyOccurrenceIsOnAnAllowedDayAndEndsAfterNow() throws {
        let w = try parse("tue,thu,sat 03:15+2h")
        let now: Int64 = 1_796_083_200  // Tue 2026-12-01 00:00 UTC
        let o = w.occurrences(after: now, count: 9, utcOffset: Self.utc)
        #expect(o.count == 9)
        #expect(o.allSatisfy { $0.end > now && $0.end - $0.start == 7200 })
        #expect(o.map { W.weekday(ofLocalDay: W.floorDiv($0.start, 86_400)) } == [.tue, .thu, .sat, .tue, .thu, .sat, .tue, .thu, .sat])
        #expect(zip(o, o.dropFirst()).allSatisfy { $0.start < $1.start })
        #expect(w.occurrences(after: now, count: 0, utcOffset: Self.utc).isEmpty)
    }

    @Test func weekdayArithmeticBeforeTheEpoch() {
        #expect(W.weekday(ofLocalDay: 0) == .thu)  // 1970-01-01
        #expect(W.weekday(ofLocalDay: -1) == .wed)
        #expect(W.weekday(ofLocalDay: -7) == .thu)
        #expect(W.floorDiv(-1, 86_400) == -1)
        #expect(W.floorDiv(86_399, 86_400) == 0)
    }
}
