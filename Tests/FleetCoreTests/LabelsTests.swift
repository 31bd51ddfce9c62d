import Testing
@testable import FleetCore

@Suite struct LabelsTests {
    private func code(_ body: () throws(LabelError) -> Void) -> LabelError.Code? {
        do { try body(); return nil } catch { return error.code }
    }

    private let name63 = String(repeating: "a", count: 63)
    private let name64 = String(repeating: "a", count: 64)

    // MARK: Keys

    @Test func acceptsKubernetesStyleKeys() {
        for key in [
            "region", "a", "A9", "site-id", "site_id", "site.id", "example.com/region",
            "edge.example.com/rack-1", name63, "a/" + name63
        ] {
            #expect(code { () throws(LabelError) in try Labels.validate(key: key) } == nil, "\(key)")
        }
    }

    @Test func refusesKeysOfBadShape() {
        for key in [
            "", "-region", "region-", ".x", "x_", "re gion", "région", "a=b", "a,b", name64,
            "/name", "example.com/", "a/b/c", "Example.com/x", "-ex.com/x", "ex..com/x", "ex_a.com/x",
            "a/" + name64
        ] {
            #expect(code { () throws(LabelError) in try Labels.validate(key: key) } == .invalidKey, "\(key)")
        }
    }

    @Test func keyPrefixIsBoundedAt253() {
        // Three labels of 63 and one of 61, with 3 dots: 253 characters.
        let label = String(repeating: "b", count: 63)
        let p253 = [label, label, label, String(repeating: "c", count: 61)].joined(separator: ".")
        #expect(p253.count == 253)
        #expect(code { () throws(LabelError) in try Labels.validate(key: p253 + "/k") } == nil)
        #expect(code { () throws(LabelError) in try Labels.validate(key: p253 + "c/k") } == .invalidKey)
    }

    // MARK: Values

    @Test func valueBoundaries() {
        #expect(code { () throws(LabelError) in try Labels.validate(value: "") } == nil)
        #expect(code { () throws(LabelError) in try Labels.validate(value: name63) } == nil)
        #expect(code { () throws(LabelError) in try Labels.validate(value: name64) } == .invalidValue)
        #expect(code { () throws(LabelError) in try Labels.validate(value: "eu-west.1_a") } == nil)
        for bad in ["-eu", "eu-", "eu west", "eu/west", "é", "a=b"] {
            #expect(code { () throws(LabelError) in try Labels.validate(value: bad) } == .invalidValue, "\(bad)")
        }
    }

    // MARK: Label sets

    @Test func reservedKeysCannotBeSet() {
        for key in ["class", "tier", "arch"] {
            #expect(code { () throws(LabelError) in try Labels.validate([key: "x"]) } == .reservedKey)
            #expect(code { () throws(LabelError) in _ = try Labels.parseAssignment("\(key)=x") } == .reservedKey)
        }
        // A prefixed key of the same name is an ordinary label.
        #expect(code { () throws(LabelError) in try Labels.validate(["example.com/class": "x"]) } == nil)
    }

    @Test func atMost32LabelsPerDevice() {
        let labels = { (n: Int) in Dictionary(uniqueKeysWithValues: (0..<n).map { ("k\($0)", "v") }) }
        #expect(Labels.maxPerDevice == 32)
        #expect(code { () throws(LabelError) in try Labels.validate(labels(32)) } == nil)
        #expect(code { () throws(LabelError) in try Labels.validate(labels(33)) } == .tooMany)
    }

    @Test func setValidationChecksEachKeyAndValue() {
        #expect(code { () throws(LabelError) in try Labels.validate(["region": "eu west"]) } == .invalidValue)
        #expect(code { () throws(LabelError) in try Labels.validate(["re gion": "eu"]) } == .invalidKey)
        #expect(code { () throws(LabelError) in try Labels.validate(["region": "eu", "site": ""]) } == nil)
    }

    @Test func parsesAssignments() throws {
        let a = try Labels.parseAssignment("region=eu-west")
        #expect(a.key == "region" && a.value == "eu-west")
        let empty = try Labels.parseAssignment("site=")
        #expect(empty.key == "site" && empty.value == "")
        let prefixed = try Labels.parseAssignment("example.com/rack=r1")
        #expect(prefixed.key == "example.com/rack" && prefixed.value == "r1")
        #expect(code { () throws(LabelError) in _ = try Labels.parseAssignment("region") } == .malformed)
        #expect(code { () throws(LabelError) in _ = try Labels.parseAssignment("=eu") } == .malformed)
        #expect(code { () throws(LabelError) in _ = try Labels.parseAssignment("region=eu=west") } == .invalidValue)
        #expect(code { () throws(LabelError) in _ = try Labels.parseAssignment("re gion=eu") } == .invalidKey)
    }

    // MARK: Precedence

    @Test func operatorOverEnrollmentOverAgent() {
        let agent = ["region": "agent", "site": "agent", "rack": "agent"]
        let enrollment = ["region": "token", "site": "token"]
        let op = ["region": "operator"]
        #expect(
            Labels.effective(agent: agent, enrollment: enrollment, operator: op)
                == ["region": "operator", "site": "token", "rack": "agent"])
    }

    @Test func deviceCannotOverrideAnEnrollmentBoundLabel() {
        let bound = ["customer": "acme"]
        let e = Labels.effective(agent: ["customer": "other", "room": "2"], enrollment: bound, operator: [:])
        #expect(e["customer"] == "acme")
        #expect(e["room"] == "2")
    }

    @Test func reservedKeysFromAnySourceAreLeftOut() {
        let e = Labels.effective(agent: ["class": "gpu", "region": "eu"], enrollment: ["tier": "fast"], operator: ["arch": "x"])
        #expect(e == ["region": "eu"])
    }

    @Test func selectableAddsBuiltInKeysAndLeavesOutNil() {
        let s = Labels.selectable(["region": "eu"], hardwareClass: "x86-avx2", tier: nil, arch: "x86_64")
        #expect(s == ["region": "eu", "class": "x86-avx2", "arch": "x86_64"])
        // A reserved key that slipped into stored labels never shadows or stands in for the built-in.
        let t = Labels.selectable(["tier": "forged", "class": "forged"], hardwareClass: "gpu", tier: nil, arch: nil)
        #expect(t == ["class": "gpu"])
    }
}
