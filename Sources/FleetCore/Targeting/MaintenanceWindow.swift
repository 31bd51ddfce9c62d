/// One occurrence of a maintenance window, in UTC: Unix seconds, [start, end).
public struct ActivationWindow: Codable, Equatable, Hashable, Sendable {
    public var start: Int64
    public var end: Int64

    public init(start: Int64, end: Int64) {
        self.start = start
        self.end = end
    }

    public func contains(_ t: Int64) -> Bool { start <= t && t < end }
}

/// Why a maintenance window text was refused, and where: the selector's error type (a decoded
/// object that is wrong throws a DecodingError instead).
public typealias WindowError = SelectorError

/// When a device may activate: on some weekdays, from a local wall-clock start, for a length.
/// Pure: turning local times into UTC needs a zone's offsets, which the caller passes in
/// (`occurrences(after:count:utcOffset:)`), because FoundationEssentials has no zone database.
public struct MaintenanceWindow: Codable, Equatable, Hashable, Sendable, CustomStringConvertible {
    public enum Weekday: String, Codable, CaseIterable, Sendable {
        case mon, tue, wed, thu, fri, sat, sun

        /// "mon", "Mon", "monday".
        public init?(name: String) {
            let lower = name.lowercased()
            guard let day = Weekday.allCases.first(where: { lower == $0.rawValue || lower == $0.fullName }) else { return nil }
            self = day
        }

        var index: Int { Weekday.allCases.firstIndex(of: self)! }
        var fullName: String {
            switch self {
            case .mon: "monday"
            case .tue: "tuesday"
            case .wed: "wednesday"
            case .thu: "thursday"
            case .fri: "friday"
            case .sat: "saturday"
            case .sun: "sunday"
            }
        }
    }

    public static let minLength: Int64 = 60
    public static let maxLength: Int64 = 7 * 86_400

    /// Empty: every day. Kept sorted Monday first, unique; all seven are stored as empty.
    public var days: [Weekday]
    /// Minutes after local midnight, 0..<1440.
    public var startMinute: Int
    /// Elapsed seconds (so a window across a DST change lasts exactly this long), 60 ... 7 days.
    public var lengthSeconds: Int64
    /// IANA name; nil: the device's own zone.
    public var timezone: String?

    public init(days: [Weekday], startMinute: Int, lengthSeconds: Int64, timezone: String? = nil) {
        let unique = Weekday.allCases.filter(days.contains)
        self.days = unique.count == Weekday.allCases.count ? [] : unique
        self.startMinute = startMinute
        self.lengthSeconds = lengthSeconds
        self.timezone = timezone
    }

    /// "mon-fri 02:00+3h Europe/Berlin", "daily 22:30+90m", "sat,sun 01:00+4h UTC", "02:00+1h30m"
    /// (no days: every day). Day ranges may wrap ("fri-mon").
    public init(parsing text: String) throws(WindowError) {
        var parser = WindowParser(text)
        self = try parser.parse()
    }

    /// A problem that makes the window unusable, or nil.
    public func validate() -> String? {
        if !(0..<1440).contains(startMinute) { return "start \(startMinute) is not a minute of the day (0..<1440)" }
        if !(Self.minLength...Self.maxLength).contains(lengthSeconds) {
            return "length \(lengthSeconds)s is not between 1m and 7d"
        }
        if let timezone, let problem = Self.zoneNameProblem(timezone) { return "time zone '\(timezone)': \(problem)" }
        return nil
    }

    /// Whether any of `windows` contains t; `windows` empty means "no restriction".
    public static func allows(_ windows: [ActivationWindow], at t: Int64) -> Bool {
        windows.isEmpty || windows.contains { $0.contains(t) }
    }

    public var description: String {
        var text = "\(Self.daysText(days)) \(Self.clockText(startMinute))+\(Self.durationText(lengthSeconds))"
        if let timezone { text += " \(timezone)" }
        return text
    }

    // MARK: Occurrences

    /// The occurrences whose end is after `now` (earliest start first, so one containing now
    /// comes first), `count` of them, in UTC. `utcOffset(t)` is the zone's offset from UTC in
    /// seconds at the instant t.
    ///
    /// A start that falls in a skipped hour (spring forward) begins at the first instant after the
    /// gap; a start that occurs twice (fall back) begins at the first of the two.
    public func occurrences(after now: Int64, count: Int, utcOffset: (Int64) -> Int) -> [ActivationWindow] {
        guard count > 0 else { return [] }
        var result: [ActivationWindow] = []
        let localNow = now + Int64(utcOffset(now))
        // An occurrence lasts at most 7 days, so one that started 8 local days ago has ended.
        var day = Self.floorDiv(localNow, 86_400) - 8
        while result.count < count {
            if days.isEmpty || days.contains(Self.weekday(ofLocalDay: day)) {
                let start = Self.instant(ofLocal: day * 86_400 + Int64(startMinute) * 60, utcOffset: utcOffset)
                let end = start + lengthSeconds
                if end > now { result.append(ActivationWindow(start: start, end: end)) }
            }
            day += 1
        }
        return result
    }

    /// Weekday of a day counted from 1970-01-01, a Thursday.
    static func weekday(ofLocalDay day: Int64) -> Weekday {
        Weekday.allCases[Int(((day % 7) + 7 + 3) % 7)]
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    /// The UTC instant of a local wall-clock time (seconds since the epoch as if local were UTC).
    static func instant(ofLocal local: Int64, utcOffset: (Int64) -> Int) -> Int64 {
        // The offsets in force a day either side cover both sides of any transition near `local`.
        let before = Int64(utcOffset(local - 86_400)), after = Int64(utcOffset(local + 86_400))
        let valid = [before, after].map { local - $0 }.filter { Int64(utcOffset($0)) == local - $0 }
        if let first = valid.min() { return first }
        // In a gap: at local - after the old offset is still in force, at local - before the new
        // one is. The first instant of the new offset is the first valid time after the gap.
        var lo = local - max(before, after), hi = local - min(before, after)
        let old = utcOffset(lo)
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2
            if utcOffset(mid) == old { lo = mid } else { hi = mid }
        }
        return hi
    }

    // MARK: Text forms

    static func daysText(_ days: [Weekday]) -> String {
        if days.isEmpty { return "daily" }
        var parts: [String] = []
        var i = 0
        let indices = days.map(\.index)
        while i < indices.count {
            var j = i
            while j + 1 < indices.count, indices[j + 1] == indices[j] + 1 { j += 1 }
            if j - i >= 2 {
                parts.append("\(days[i].rawValue)-\(days[j].rawValue)")
            } else {
                parts.append(contentsOf: days[i...j].map(\.rawValue))
            }
            i = j + 1
        }
        return parts.joined(separator: ",")
    }

    static func clockText(_ minute: Int) -> String {
        let h = minute / 60, m = minute % 60
        return (h < 10 ? "0" : "") + "\(h):" + (m < 10 ? "0" : "") + "\(m)"
    }

    static func durationText(_ seconds: Int64) -> String {
        var rest = seconds, text = ""
        for (unit, size) in [("d", Int64(86_400)), ("h", 3_600), ("m", 60), ("s", 1)] where rest >= size {
            text += "\(rest / size)\(unit)"
            rest %= size
        }
        return text.isEmpty ? "0s" : text
    }

    /// Syntax only (FleetCore has no zone database): "UTC", "Europe/Berlin", "Etc/GMT+5",
    /// "America/Port-au-Prince".
    static func zoneNameProblem(_ name: String) -> String? {
        if name.isEmpty || name.count > 64 { return "not a zone name" }
        let ok = name.utf8.allSatisfy { Labels.isAlphanumeric($0) || "_+-/".utf8.contains($0) }
        guard ok, let first = name.utf8.first, Labels.isAlphanumeric(first), !name.hasSuffix("/"),
            !name.contains("//")
        else {
            return "not an IANA zone name (letters, digits, '_', '+', '-', '/')"
        }
        return nil
    }

    // MARK: Codable

    /// `{days: [mon, tue], start: "02:00", length: "3h", timezone: Europe/Berlin}` or the one-line
    /// text form. `days` may also be one string ("mon-fri", "daily") and be left out (every day);
    /// `start` may be minutes (YAML 1.1 reads an unquoted 22:30 as the base-60 number 1350);
    /// `length` may be seconds.
    enum CodingKeys: String, CodingKey, CaseIterable { case days, start, length, timezone }

    public init(from decoder: any Decoder) throws {
        if let single = try? decoder.singleValueContainer(), let text = try? single.decode(String.self) {
            do { try self.init(parsing: text) } catch {
                throw DecodingError.dataCorrupted(
                    .init(
                        codingPath: decoder.codingPath,
                        debugDescription: "window '\(text)': \(error)"))
            }
            return
        }
        let c = try decoder.container(keyedBy: AnyKey.self)
        if let unknown = c.allKeys.first(where: { CodingKeys(stringValue: $0.stringValue) == nil }) {
            throw DecodingError.dataCorruptedError(
                forKey: unknown, in: c,
                debugDescription: "unknown key '\(unknown.stringValue)' (expected days, start, length, timezone)")
        }
        func corrupt(_ key: CodingKeys, _ message: String) -> DecodingError {
            .dataCorruptedError(forKey: AnyKey(key.rawValue), in: c, debugDescription: message)
        }
        var days: [Weekday] = []
        if c.contains(AnyKey("days")) {
            let items: [String]
            if let list = try? c.decode([String].self, forKey: AnyKey("days")) {
                items = list
            } else {
                items = [try c.decode(String.self, forKey: AnyKey("days"))]
            }
            for item in items {
                var p = WindowParser(item)
                do { days += try p.parseDaysOnly() } catch { throw corrupt(.days, "days '\(item)': \(error)") }
            }
        }
        let startMinute: Int
        if let minutes = try? c.decode(Int.self, forKey: AnyKey("start")) {
            startMinute = minutes
        } else {
            let text = try c.decode(String.self, forKey: AnyKey("start"))
            var p = WindowParser(text)
            do { startMinute = try p.parseClockOnly() } catch { throw corrupt(.start, "start '\(text)': \(error)") }
        }
        let length: Int64
        if let seconds = try? c.decode(Int64.self, forKey: AnyKey("length")) {
            length = seconds
        } else {
            let text = try c.decode(String.self, forKey: AnyKey("length"))
            var p = WindowParser(text)
            do { length = try p.parseDurationOnly() } catch { throw corrupt(.length, "length '\(text)': \(error)") }
        }
        let timezone = try c.decodeIfPresent(String.self, forKey: AnyKey("timezone"))
        self.init(days: days, startMinute: startMinute, lengthSeconds: length, timezone: timezone)
        if let problem = validate() {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: problem))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(days, forKey: .days)
        try c.encode(Self.clockText(startMinute), forKey: .start)
        try c.encode(Self.durationText(lengthSeconds), forKey: .length)
        try c.encodeIfPresent(timezone, forKey: .timezone)
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// The one-line window text, by character, so that errors name a character offset.
struct WindowParser {
    typealias Weekday = MaintenanceWindow.Weekday
    let chars: [Character]
    var i = 0

    init(_ text: String) { chars = Array(text) }

    mutating func parse() throws(WindowError) -> MaintenanceWindow {
        skipSpace()
        guard i < chars.count else { throw fail("empty window (expected e.g. \"mon-fri 02:00+3h Europe/Berlin\")") }
        var days: [Weekday] = []
        if !chars[i].isASCII || !chars[i].isNumber {
            days = try self.days()
            guard i < chars.count, isSpace(chars[i]) else { throw fail("expected a space, then the start time (HH:MM)") }
            skipSpace()
        }
        let start = try clock()
        skipSpace()
        guard i < chars.count, chars[i] == "+" else { throw fail("expected '+' and a length after the start time (e.g. 02:00+3h)") }
        i += 1
        skipSpace()
        let length = try duration()
        var timezone: String?
        if i < chars.count {
            guard isSpace(chars[i]) else { throw fail("expected a space, then a time zone") }
            skipSpace()
            if i < chars.count {
                let zoneStart = i
                while i < chars.count, !isSpace(chars[i]) { i += 1 }
                let zone = String(chars[zoneStart..<i])
                if let problem = MaintenanceWindow.zoneNameProblem(zone) {
                    throw WindowError(position: zoneStart, message: "time zone '\(zone)': \(problem)")
                }
                timezone = zone
                skipSpace()
                if i < chars.count { throw fail("unexpected text after the time zone") }
            }
        }
        return MaintenanceWindow(days: days, startMinute: start, lengthSeconds: length, timezone: timezone)
    }

    mutating func parseDaysOnly() throws(WindowError) -> [Weekday] {
        skipSpace()
        let days = try self.days()
        try expectEnd()
        return days
    }

    mutating func parseClockOnly() throws(WindowError) -> Int {
        skipSpace()
        let minute = try clock()
        try expectEnd()
        return minute
    }

    mutating func parseDurationOnly() throws(WindowError) -> Int64 {
        skipSpace()
        let seconds = try duration()
        try expectEnd()
        return seconds
    }

    /// "daily", or days and ranges separated by commas: "mon-fri", "sat,sun", "fri-mon".
    mutating func days() throws(WindowError) -> [Weekday] {
        let start = i
        if word().lowercased() == "daily" { return [] }
        i = start
        var days: [Weekday] = []
        while true {
            let first = try day()
            if i < chars.count, chars[i] == "-" {
                i += 1
                let last = try day()
                var d = first.index
                while true {
                    days.append(Weekday.allCases[d])
                    if d == last.index { break }
                    d = (d + 1) % 7
                }
            } else {
                days.append(first)
            }
            guard i < chars.count, chars[i] == "," else { return days }
            i += 1
        }
    }

    mutating func day() throws(WindowError) -> Weekday {
        let start = i
        let name = word()
        guard let day = Weekday(name: name) else {
            i = start
            throw fail(name.isEmpty ? "expected a day (mon … sun) or daily" : "unknown day '\(name)' (mon … sun, or daily)")
        }
        return day
    }

    /// "HH:MM", 00:00 … 23:59 (one-digit hour allowed).
    mutating func clock() throws(WindowError) -> Int {
        let start = i
        let hourDigits = digits()
        guard (1...2).contains(hourDigits.count), let hour = Int(hourDigits) else {
            i = start
            throw fail("expected a start time HH:MM")
        }
        guard hour < 24 else { throw WindowError(position: start, message: "hour \(hour) is not 0 … 23") }
        guard i < chars.count, chars[i] == ":" else { throw fail("expected ':' between hours and minutes") }
        i += 1
        let minuteStart = i
        let minuteDigits = digits()
        guard minuteDigits.count == 2, let minute = Int(minuteDigits) else {
            throw WindowError(position: minuteStart, message: "expected two digits of minutes")
        }
        guard minute < 60 else { throw WindowError(position: minuteStart, message: "minute \(minute) is not 0 … 59") }
        return hour * 60 + minute
    }

    /// "3h", "90m", "1h30m", "2d", "45s": 1 minute … 7 days.
    mutating func duration() throws(WindowError) -> Int64 {
        let start = i
        var total: Int64 = 0
        repeat {
            let numberStart = i
            let number = digits()
            guard !number.isEmpty, number.count <= 9, let n = Int64(number) else {
                throw WindowError(position: numberStart, message: "expected a length such as 3h, 90m or 1h30m")
            }
            guard i < chars.count else { throw fail("expected a unit (d, h, m or s) after \(n)") }
            let unit: Int64
            switch chars[i] {
            case "d": unit = 86_400
            case "h": unit = 3_600
            case "m": unit = 60
            case "s": unit = 1
            default: throw fail("expected a unit (d, h, m or s), found '\(chars[i])'")
            }
            i += 1
            total += n * unit
        } while i < chars.count && chars[i].isASCII && chars[i].isNumber
        guard (MaintenanceWindow.minLength...MaintenanceWindow.maxLength).contains(total) else {
            throw WindowError(position: start, message: "length \(MaintenanceWindow.durationText(total)) is not between 1m and 7d")
        }
        return total
    }

    mutating func word() -> String {
        let start = i
        while i < chars.count, chars[i].isASCII, chars[i].isLetter { i += 1 }
        return String(chars[start..<i])
    }

    mutating func digits() -> String {
        let start = i
        while i < chars.count, chars[i].isASCII, chars[i].isNumber { i += 1 }
        return String(chars[start..<i])
    }

    mutating func expectEnd() throws(WindowError) {
        skipSpace()
        if i < chars.count { throw fail("unexpected '\(chars[i])'") }
    }

    func fail(_ message: String) -> WindowError { WindowError(position: i, message: message) }
    mutating func skipSpace() { while i < chars.count, isSpace(chars[i]) { i += 1 } }
    func isSpace(_ c: Character) -> Bool { c.isASCII && c.isWhitespace }
}
