import FleetCore

/// The validity period of each certificate in a PEM file, read from the DER without a TLS
/// library: Certificate → TBSCertificate → [version] serial signature issuer validity.
struct CertificateDates: Equatable {
    var notBefore: Int64
    var notAfter: Int64

    enum Failure: Error { case noCertificate, malformed }

    static func parse(pem: String) throws(Failure) -> [CertificateDates] {
        var out: [CertificateDates] = []
        var inside = false
        var base64 = ""
        for raw in pem.split(separator: "\n") {
            let line = raw.trimmed
            if line == "-----BEGIN CERTIFICATE-----" { inside = true; base64 = ""; continue }
            if line == "-----END CERTIFICATE-----" {
                inside = false
                guard let der = Data(base64Encoded: base64) else { throw .malformed }
                out.append(try parse(der: [UInt8](der)))
                continue
            }
            if inside { base64 += line }
        }
        if out.isEmpty { throw .noCertificate }
        return out
    }

    static func parse(der: [UInt8]) throws(Failure) -> CertificateDates {
        var r = DERReader(bytes: der[...])
        var cert = try r.child(tag: 0x30)
        var tbs = try cert.child(tag: 0x30)
        if tbs.peek == 0xA0 { _ = try tbs.element() }  // version
        _ = try tbs.child(tag: 0x02)  // serial
        _ = try tbs.child(tag: 0x30)  // signature algorithm
        _ = try tbs.child(tag: 0x30)  // issuer
        var validity = try tbs.child(tag: 0x30)
        return CertificateDates(notBefore: try validity.time(), notAfter: try validity.time())
    }
}

private struct DERReader {
    var bytes: ArraySlice<UInt8>
    var peek: UInt8? { bytes.first }

    mutating func element() throws(CertificateDates.Failure) -> (UInt8, ArraySlice<UInt8>) {
        guard bytes.count >= 2 else { throw .malformed }
        let tag = bytes[bytes.startIndex]
        var i = bytes.startIndex + 1
        var length = Int(bytes[i]); i += 1
        if length & 0x80 != 0 {
            let n = length & 0x7F
            guard n >= 1, n <= 4, i + n <= bytes.endIndex else { throw .malformed }
            length = 0
            for _ in 0..<n { length = length << 8 | Int(bytes[i]); i += 1 }
        }
        guard length >= 0, i + length <= bytes.endIndex else { throw .malformed }
        let content = bytes[i..<(i + length)]
        bytes = bytes[(i + length)...]
        return (tag, content)
    }

    mutating func child(tag: UInt8) throws(CertificateDates.Failure) -> DERReader {
        let (t, content) = try element()
        guard t == tag else { throw .malformed }
        return DERReader(bytes: content)
    }

    /// UTCTime (YYMMDDHHMMSSZ; years 50–99 are 19xx) or GeneralizedTime (YYYYMMDDHHMMSSZ).
    mutating func time() throws(CertificateDates.Failure) -> Int64 {
        let (tag, content) = try element()
        let text = String(decoding: content, as: UTF8.self)
        guard text.hasSuffix("Z") else { throw .malformed }
        let digits = Array(text.dropLast())
        guard digits.allSatisfy(\.isNumber) else { throw .malformed }
        func num(_ from: Int, _ count: Int) -> Int { Int(String(digits[from..<(from + count)]))! }
        var year: Int, at: Int
        switch (tag, digits.count) {
        case (0x17, 12): year = num(0, 2); year += year < 50 ? 2000 : 1900; at = 2
        case (0x18, 14): year = num(0, 4); at = 4
        default: throw .malformed
        }
        let month = num(at, 2), day = num(at + 2, 2), hour = num(at + 4, 2), minute = num(at + 6, 2), second = num(at + 8, 2)
        guard (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { throw .malformed }
        return CivilTime.unixSeconds(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
    }
}

/// Calendar arithmetic without Foundation's Calendar (which would pull in ICU).
enum CivilTime {
    static func unixSeconds(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) -> Int64 {
        // Howard Hinnant's days_from_civil.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        return Int64(days) * 86400 + Int64(hour * 3600 + minute * 60 + second)
    }

    /// An HTTP date (RFC 9110 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`).
    static func parseHTTPDate(_ text: String) -> Int64? {
        let parts = text.split(separator: " ")
        guard parts.count == 6, parts[5] == "GMT", let day = Int(parts[1]), let year = Int(parts[3]) else { return nil }
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        guard let m = months.firstIndex(of: String(parts[2])) else { return nil }
        let hms = parts[4].split(separator: ":").compactMap { Int($0) }
        guard hms.count == 3 else { return nil }
        return unixSeconds(year: year, month: m + 1, day: day, hour: hms[0], minute: hms[1], second: hms[2])
    }
}
