import Testing
@testable import FleetCore

@Suite struct ByteCountTests {
    @Test(
        arguments: [
            ("0", 0), ("512", 512), ("  512  ", 512), ("512B", 512), ("512 b", 512),
            ("64K", 64_000), ("64k", 64_000), ("64KB", 64_000), ("64 kb", 64_000),
            ("1.5G", 1_500_000_000), ("1.5 GB", 1_500_000_000), ("200MB", 200_000_000), ("200M", 200_000_000),
            ("2T", 2_000_000_000_000), ("2TB", 2_000_000_000_000),
            ("1KiB", 1_024), ("1kib", 1_024), ("4MiB", 4_194_304), ("1.5GiB", 1_610_612_736), ("1TiB", 1_099_511_627_776),
            ("0.5K", 500), ("0G", 0),
            ("9223372036854775807", Int64.max)
        ] as [(String, Int64)])
    func parsesSizes(_ text: String, _ expected: Int64) {
        #expect(ByteCount.parse(text) == expected)
    }

    @Test(arguments: [
        "", "   ", "B", "K", "GiB", "-1", "-5K", "-0.5G", "abc", "12X", "1.5", "1e3", "0x10",
        "1,5G", "1 2 K", "NaNG", "9223372036854775808"
    ])
    func rejectsNonSizes(_ text: String) {
        #expect(ByteCount.parse(text) == nil)
    }

    @Test(
        arguments: [
            (0, "0 B"), (999, "999 B"), (1_000, "1.0 KB"), (1_500, "1.5 KB"), (64_000, "64.0 KB"),
            (1_500_000, "1.5 MB"), (200_000_000, "200.0 MB"), (1_500_000_000, "1.5 GB"), (2_000_000_000_000, "2.0 TB"),
            (5_000_000_000_000_000, "5000.0 TB"), (-1_500, "-1.5 KB"), (-12, "-12 B")
        ] as [(Int64, String)])
    func formatsSizes(_ bytes: Int64, _ expected: String) {
        #expect(ByteCount.format(bytes) == expected)
    }

    @Test(arguments: [0, 1, 999, 1_000, 64_000, 1_500_000, 200_000_000, 1_500_000_000] as [Int64])
    func formatThenParseIsCloseToTheOriginal(_ bytes: Int64) throws {
        let text = ByteCount.format(bytes)
        let parsed = try #require(ByteCount.parse(text))
        #expect(abs(Double(parsed - bytes)) <= Double(bytes) * 0.05)
    }

    /// Was a bug; fixed (cosmetic): rounding happens after the unit is chosen, so 999,950 bytes
    /// print as "1000.0 KB" instead of "1.0 MB".
    @Test func roundingUpMovesToTheNextUnit() {
        #expect(ByteCount.format(999_950) == "1.0 MB")
        #expect(ByteCount.format(999_999_999) == "1.0 GB")
    }

    /// Was a bug; fixed: `Int64(v * factor)` traps when the value does not fit in Int64 ("1e30G",
    /// "99999999999T", "infG"). parse() reads operator input (config files, fleetctl flags) and
    /// must return nil, not crash the process. Exit tests run the call in a child process.
    @Test func parseOfAHugeValueDoesNotCrash() async {
        await #expect(processExitsWith: .success) { _ = ByteCount.parse("99999999999T") }
        await #expect(processExitsWith: .success) { _ = ByteCount.parse("1e30G") }
        await #expect(processExitsWith: .success) { _ = ByteCount.parse("infG") }
    }

    @Test func trimmedStripsASCIIWhiteSpaceOnly() {
        #expect(" \t a b \n\r".trimmed == "a b")
        #expect("".trimmed == "")
        #expect(" \n ".trimmed == "")
        #expect("x".trimmed == "x")
        #expect("\u{00A0}x\u{00A0}".trimmed == "\u{00A0}x\u{00A0}")
    }

    /// Was a bug; fixed: `trimmed` compares Characters with " ", "\t", "\n" and "\r", but "\r\n" is a
    /// single Character (one grapheme cluster), so CR-LF line endings are not stripped. A size in a
    /// file saved with Windows line endings ("512M\r\n") then does not parse.
    @Test func trimmedStripsCRLF() {
        #expect(Character("\r\n") != Character("\n"))  // why
        #expect("512M\r\n".trimmed == "512M")
        #expect("\r\nx".trimmed == "x")
        #expect(ByteCount.parse("512M\r\n") == 512_000_000)
    }
}

@Suite struct NameTests {
    @Test(arguments: ["detector", "Detector-2", "a", "a.b", "a_b", "x86-avx2", "edge-0001", String(repeating: "a", count: 128)])
    func acceptsSafeNames(_ name: String) {
        #expect(Name.isValid(name))
    }

    /// Names become path components and URL segments: nothing that could be read as structure.
    @Test(arguments: [
        "", ".", "..", ".hidden", "-flag", "a/b", "a\\b", "../etc", "a b", "a\nb", "a:b", "a%2fb",
        "caf\u{00E9}", "a\u{0}b", String(repeating: "a", count: 129)
    ])
    func rejectsUnsafeNames(_ name: String) {
        #expect(!Name.isValid(name))
    }
}
