import Testing
@testable import FleetCore

/// StrictJSON is the parser-differential defence: a signed document must mean one thing to every
/// reader, so duplicate keys, trailing bytes and other laxness are refused before decoding.
@Suite struct StrictJSONTests {
    private func validate(_ text: String, maxBytes: Int = 1 << 20) -> MetadataError.Code? {
        metadataCode { try StrictJSON.validate(Data(text.utf8), maxBytes: maxBytes) }
    }

    private func validate(bytes: [UInt8], maxBytes: Int = 1 << 20) -> MetadataError.Code? {
        metadataCode { try StrictJSON.validate(Data(bytes), maxBytes: maxBytes) }
    }

    private static func nested(_ depth: Int, open: String = "[", close: String = "]", inner: String = "") -> String {
        String(repeating: open, count: depth) + inner + String(repeating: close, count: depth)
    }

    // MARK: Valid documents

    @Test(arguments: [
        "{}", "[]", "0", "-0", "12", "-12.5e+3", "1E-7", "0.0", #""x""#, "true", "false", "null",
        #"  {"a": [1, 2.5, {"b": null}], "c": "\u00e9\n\t\"\\\/", "d": "\ud83d\ude00", "e": true}  "#,
        "\n\r\t[ ]\n",
        #"{"a":1,"A":2}"#,  // keys differ in case: not duplicates
        #"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#,  // the same key in different objects is fine
        #"{"":1," ":2}"#,
        "\"caf\u{00E9} \u{1F600}\""  // raw UTF-8 in a string
    ])
    func acceptsValidDocument(_ text: String) {
        #expect(validate(text) == nil)
    }

    @Test func acceptsRealMetadata() throws {
        let b = Fixture.bundle()
        for env in [b.catalog, b.assignment, b.timestamp, Fixture.rootEnvelope] {
            #expect(metadataCode { try StrictJSON.validate(Data(env.payloadBytes ?? []), maxBytes: 1 << 20) } == nil)
            #expect(metadataCode { try StrictJSON.validate(try! FleetJSON.encode(env), maxBytes: 1 << 20) } == nil)
        }
    }

    // MARK: Duplicate keys

    @Test(arguments: [
        #"{"a":1,"a":2}"#,
        #"{"a":1,"b":2,"a":3}"#,  // not adjacent
        #"{"a":1,"\u0061":2}"#,  // duplicate hidden by an escape
        #"{"\u0061":1,"a":2}"#,
        #"{"\u0041":1,"\u0041":2}"#,
        #"{"a\/b":1,"a/b":2}"#,  // "\/" is "/"
        #"{"\n":1,"\u000a":2}"#,
        #"{"\u00e9":1,"é":2}"#,  // escaped vs raw UTF-8
        #"{"\ud83d\ude00":1,"😀":2}"#,  // surrogate pair vs raw UTF-8
        #"{"outer":{"k":1,"k":2}}"#,  // nested object
        #"[{"ok":1},{"k":true,"k":false}]"#,  // object inside an array
        #"{"a":{"b":{"c":{"d":[{"e":1,"e":1}]}}}}"#,  // deep, same value twice
        #"{"deviceId":"edge-0002","deviceId":"edge-0001"}"#
    ])
    func rejectsDuplicateKey(_ text: String) {
        #expect(validate(text) == .duplicateKey)
    }

    /// The duplicate-key defence is there because JSONDecoder silently keeps one of the values;
    /// this pins the reason down so the check is not dropped as redundant.
    @Test func foundationDecoderWouldAcceptDuplicates() throws {
        let data = Data(#"{"a":"first","a":"second"}"#.utf8)
        #expect(throws: Never.self) { try JSONDecoder().decode([String: String].self, from: data) }
        let error = #expect(throws: MetadataError.self) { _ = try FleetJSON.decode([String: String].self, from: data, limit: 1024) }
        #expect(error?.code == .duplicateKey)
    }

    /// Was a bug; fixed: keys are compared as raw bytes, but JSONDecoder compares Swift Strings, which
    /// are equal under Unicode canonical equivalence. "caf\u00e9" and "cafe\u0301" (and "K" and
    /// the KELVIN SIGN "\u212A") pass StrictJSON as distinct keys, then JSONDecoder merges them
    /// into one entry and silently drops a value: the exact parser differential StrictJSON exists
    /// to stop (e.g. two `catalogs` entries in a timestamp, two `attributes`).
    @Test(arguments: [
        #"{"caf\u00e9":"a","cafe\u0301":"b"}"#,
        #"{"K-model":"a","\u212A-model":"b"}"#
    ])
    func rejectsKeysThatAreCanonicallyEquivalent(_ text: String) throws {
        // What the decoder sees: one key, not two.
        let decoded = try JSONDecoder().decode([String: String].self, from: Data(text.utf8))
        #expect(decoded.count == 1)
        #expect(validate(text) == .duplicateKey)
    }

    // MARK: Malformed

    @Test(arguments: [
        // trailing garbage
        "{} x", "{}{}", "[1] ]", "1 2", "true false", #""a" "b""#, "{}\u{0}",
        // bad literals
        "tru", "truex", "True", "nul", "nulll", "fals", "undefined", "NaN", "Infinity", "-Infinity",
        // bad numbers
        "01", "-01", "-", "+1", ".5", "1.", "1.e3", "1e", "1e+", "0x10", "1_000", "--1", "[1.]", "[01]",
        // structure
        "", "   ", "{", "[", "]", "}", "[1,]", "[,1]", "[1 2]", #"{"a":1,}"#, #"{"a" 1}"#, #"{"a":}"#,
        "{1:2}", "{'a':1}", "{a:1}", #"{"a":1 "b":2}"#, #"{,"a":1}"#,
        // strings
        #""abc"#, #""\x""#, #""\u12""#, #""\u12G4""#, #""\U0041""#, #""\"#, "'single'",
        // lone surrogates
        #""\ud800""#, #""\udc00""#, #""\udfff""#, #""\ud800x""#, #""\ud800\u0041""#, #""\ud800\ud800""#,
        #""\ud83d""#, #"{"\ud800":1}"#,
        // a byte-order mark is not JSON white space
        "\u{FEFF}{}"
    ])
    func rejectsMalformed(_ text: String) {
        #expect(validate(text) == .malformed)
    }

    @Test(arguments: [0x00, 0x01, 0x08, 0x09, 0x0A, 0x0D, 0x1F] as [UInt8])
    func rejectsRawControlCharacterInString(_ control: UInt8) {
        let bytes = Array(#"{"a":"x"#.utf8) + [control] + Array(#"y"}"#.utf8)
        #expect(validate(bytes: bytes) == .malformed)
        // The same character escaped is fine.
        let escaped = #"{"a":"x\u00"# + Hex.encode([control]) + #"y"}"#
        #expect(validate(escaped) == nil)
    }

    @Test func rejectsRawControlCharacterInKey() {
        #expect(validate(bytes: Array(#"{"a"#.utf8) + [0x0A] + Array(#"":1}"#.utf8)) == .malformed)
    }

    // MARK: Depth

    @Test func acceptsNestingOf64() {
        #expect(validate(Self.nested(64, inner: "1")) == nil)
        #expect(validate(Self.nested(64)) == nil)
        #expect(validate(Self.nested(64, open: #"{"a":"#, close: "}", inner: "null")) == nil)
    }

    @Test(arguments: [65, 66, 100, 10_000])
    func rejectsNestingOver64(_ depth: Int) {
        #expect(validate(Self.nested(depth, inner: "1")) == .tooDeep)
        #expect(validate(Self.nested(depth, open: #"{"a":"#, close: "}", inner: "1")) == .tooDeep)
    }

    @Test func mixedNestingCountsEveryContainer() {
        // Each "[{" adds two levels: 32 pairs are 64 levels, 33 pairs are 66.
        #expect(validate(Self.nested(32, open: #"[{"k":"#, close: "}]", inner: "0")) == nil)
        #expect(validate(Self.nested(33, open: #"[{"k":"#, close: "}]", inner: "0")) == .tooDeep)
    }

    @Test func rejectsDeepNestingWithoutParsingToTheEnd() {
        // Unbalanced and truncated: depth is refused before the missing closers are noticed,
        // and the parser does not recurse a million levels.
        #expect(validate(String(repeating: "[", count: 1_000_000)) == .tooDeep)
    }

    /// Was a bug; fixed (off by one): depth is checked in `value(depth:)` before the container
    /// increments it, so 65 nested containers pass when the innermost one is empty, while 65
    /// containers holding a scalar are refused. "Nesting over 64" should not depend on that.
    @Test func rejects65NestedEmptyContainers() {
        #expect(validate(Self.nested(65)) == .tooDeep)
        #expect(validate(Self.nested(64, open: #"{"a":"#, close: "}", inner: "{}")) == .tooDeep)
        // 66 are refused either way.
        #expect(validate(Self.nested(66)) == .tooDeep)
    }

    // MARK: Size

    @Test func rejectsDocumentOverTheByteLimit() {
        let doc = #"{"pad":""# + String(repeating: "x", count: 100) + #""}"#
        let size = doc.utf8.count
        #expect(validate(doc, maxBytes: size) == nil)
        #expect(validate(doc, maxBytes: size - 1) == .tooLarge)
        #expect(validate("", maxBytes: 0) == .malformed)
    }

    @Test func sizeIsCheckedBeforeSyntax() {
        // Garbage over the limit is refused as too large: the parser never runs on it.
        #expect(validate(String(repeating: "{", count: 5000), maxBytes: 4096) == .tooLarge)
    }

    // MARK: FleetJSON and TrustError mapping

    @Test func fleetJSONDecodeMapsShapeErrorsToMalformed() {
        struct Doc: Codable { var n: Int }
        #expect(metadataCode { _ = try FleetJSON.decode(Doc.self, from: Data(#"{"n":"x"}"#.utf8), limit: 100) } == .malformed)
        #expect(metadataCode { _ = try FleetJSON.decode(Doc.self, from: Data(#"{}"#.utf8), limit: 100) } == .malformed)
        #expect(metadataCode { _ = try FleetJSON.decode(Doc.self, from: Data(#"{"n":1,"n":2}"#.utf8), limit: 100) } == .duplicateKey)
        #expect(metadataCode { _ = try FleetJSON.decode(Doc.self, from: Data(#"{"n":1}"#.utf8), limit: 3) } == .tooLarge)
        #expect(metadataCode { _ = try FleetJSON.decode(Doc.self, from: Data(Self.nested(70, inner: "1").utf8), limit: 1000) } == .tooDeep)
        #expect((try? FleetJSON.decode(Doc.self, from: Data(#" {"n": 7} "#.utf8), limit: 100))?.n == 7)
    }

    @Test func trustErrorMapsMetadataCodes() {
        #expect(TrustError(MetadataError(.duplicateKey, ""), what: "x").fault == .duplicateKey)
        #expect(TrustError(MetadataError(.tooLarge, ""), what: "x").fault == .tooLarge)
        #expect(TrustError(MetadataError(.malformed, ""), what: "x").fault == .malformed)
        #expect(TrustError(MetadataError(.tooDeep, ""), what: "x").fault == .malformed)
    }

    @Test func fleetJSONEncodesWithSortedKeysAndStableBytes() throws {
        struct Doc: Codable { var b = 1; var a = "x/y" }
        let bytes = try FleetJSON.encode(Doc())
        #expect(String(decoding: bytes, as: UTF8.self) == #"{"a":"x/y","b":1}"#)
        #expect(try FleetJSON.encode(Doc()) == bytes)
    }
}
