import Testing
@testable import FleetCore

@Suite struct LabelSelectorTests {
    typealias R = LabelSelector.Requirement

    private func parse(_ text: String) throws -> LabelSelector { try LabelSelector(parsing: text) }

    /// The offset a malformed selector is refused at, or nil when it parses.
    private func errorPosition(_ text: String) -> Int? {
        do { _ = try LabelSelector(parsing: text); return nil } catch { return error.position }
    }

    // MARK: Parsing, every operator

    @Test func emptyAndBlankSelectEverything() throws {
        #expect(try parse("") == .everything)
        #expect(try parse("   ").isEverything)
        #expect(LabelSelector.everything.matches([:]))
        #expect(LabelSelector.everything.description == "")
    }

    @Test func parsesEveryOperator() throws {
        #expect(try parse("region=eu").requirements == [R(key: "region", op: .equals, values: ["eu"])])
        #expect(try parse("region==eu").requirements == [R(key: "region", op: .equals, values: ["eu"])])
        #expect(try parse("region!=eu").requirements == [R(key: "region", op: .notEquals, values: ["eu"])])
        #expect(try parse("region in (eu,us)").requirements == [R(key: "region", op: .isIn, values: ["eu", "us"])])
        #expect(try parse("region notin (us, eu)").requirements == [R(key: "region", op: .notIn, values: ["eu", "us"])])
        #expect(try parse("gpu").requirements == [R(key: "gpu", op: .exists)])
        #expect(try parse("!gpu").requirements == [R(key: "gpu", op: .doesNotExist)])
        #expect(try parse("site=").requirements == [R(key: "site", op: .equals, values: [""])])
    }

    @Test func operatorsAreCanonical() throws {
        let r = try parse("region=eu").requirements[0]
        #expect(r.op == .equals && r.values == ["eu"])
        #expect(try parse("k in (a)") == parse("k=a"))
        #expect(try parse("k notin (a)") == parse("k!=a"))
        #expect(try parse("k in (b,a,b)").requirements[0].values == ["a", "b"])
    }

    @Test func commaSeparatedRequirementsAreAndedAndWhitespaceTolerated() throws {
        let s = try parse("  tier = fast ,  region  in  ( eu-west ,eu-north )  ,!lab,  example.com/rack ")
        #expect(s.requirements.map(\.key) == ["example.com/rack", "lab", "region", "tier"])
        #expect(s.matches(["tier": "fast", "region": "eu-west", "example.com/rack": "r1"]))
        #expect(!s.matches(["tier": "fast", "region": "eu-west", "example.com/rack": "r1", "lab": "yes"]))
        #expect(!s.matches(["tier": "slow", "region": "eu-west", "example.com/rack": "r1"]))
        #expect(!s.matches(["tier": "fast", "region": "us", "example.com/rack": "r1"]))
    }

    @Test func builtInKeysAreAllowedInSelectors() throws {
        let s = try parse("class=x86-avx2,tier in (fast,medium),arch!=armv7l")
        #expect(s.requirements.count == 3)
    }

    @Test func duplicateExactRequirementIsFine() throws {
        #expect(try parse("a=1,a=1,a==1") == parse("a=1"))
        #expect(try parse("a=1,a=1").requirements.count == 1)
    }

    // MARK: Malformed selectors name the position

    @Test(
        arguments: [
            ("=eu", 0),  // missing key
            ("!", 1),  // missing key after !
            ("! =x", 2),  // missing key after !
            (",a", 0),  // missing key before a comma
            ("a,,b", 2),  // missing key between commas
            ("a,", 1),  // trailing comma
            ("a=1 ,  ", 4),  // trailing comma, then blanks
            ("k in (a,b", 5),  // unterminated paren: at the '('
            ("k notin (a", 8),  // unterminated paren
            ("k in (", 5),  // unterminated paren, no values
            ("k in ()", 6),  // empty value list
            ("k notin ( )", 10),  // empty value list
            ("k in (a,)", 8),  // trailing comma in a list
            ("k in (,a)", 6),  // missing value in a list
            ("k in (a,,b)", 8),  // missing value in a list
            ("k in (a b)", 8),  // missing comma in a list
            ("k in a", 5),  // no '(' after in
            ("k notin", 7),  // no '(' at the end
            ("k in (a,b))", 10),  // stray ')'
            ("k>3", 1),  // unknown operator
            ("k<3", 1),  // unknown operator
            ("k foo (a)", 2),  // unknown word operator
            ("k gt 3", 2),  // unknown word operator
            ("k!v", 1),  // '!' without '='
            ("k===v", 3),  // a third '='
            ("k=v w", 4),  // two values
            ("k=v)", 3),  // stray ')'
            ("!k=v", 2),  // !k takes no value
            ("!k in (a)", 3),  // !k takes no operator
            ("(a)", 0),  // no key
            ("région=eu", 1),  // bad character in a key
            ("k=é", 2),  // bad character in a value
            ("k=a$b", 3),  // bad character in a value
            ("k in (a,b$)", 9),  // bad character in a list
            ("a$=1", 1),  // bad character after a key
            ("$a", 0),  // bad character instead of a key
            ("-k=v", 0),  // key must start alphanumeric
            ("k=-v", 2),  // value must start alphanumeric
            ("a=1,k-=v", 4),  // key must end alphanumeric
            ("a=1,b in (x,y-)", 12),  // value in a list must end alphanumeric
            ("Example.com/k=v", 0),  // prefix must be lower case
            ("a/b/c", 0)  // two slashes
        ] as [(String, Int)])
    func malformedSelectorNamesThePosition(_ text: String, _ position: Int) {
        #expect(errorPosition(text) == position, "\(text)")
    }

    @Test func overlongKeyAndValueNameTheirStart() {
        let long = String(repeating: "a", count: 64)
        let ok = String(repeating: "a", count: 63)
        #expect(errorPosition("x=1,\(long)=v") == 4)
        #expect(errorPosition("x=1,k=\(long)") == 6)
        #expect(errorPosition("x in (b, \(long))") == 9)
        #expect(errorPosition("\(ok)=\(ok)") == nil)
    }

    // MARK: Canonical text

    @Test(arguments: [
        "", "a", "!a", "a=1", "a!=1", "a in (1,2)", "a notin (1,2)", "b=1,a", "a=1,a!=2,a in (3,4),a notin (5,6),a,!a",
        "x.example.com/rack in (r2, r1, r2)", "site=", "  z == 1 , y ", "k in (a)", "k notin (a)"
    ])
    func canonicalTextParsesBackEqual(_ text: String) throws {
        let s = try parse(text)
        let again = try parse(s.description)
        #expect(again == s)
        #expect(again.description == s.description)
    }

    @Test func canonicalTextIsSortedAndCompact() throws {
        #expect(try parse(" region in (us, eu) , !lab , tier==fast ").description == "!lab,region in (eu,us),tier=fast")
        #expect(try parse("b,a").description == "a,b")
        #expect(
            try parse("k=1,k!=2,k notin (3,4),k in (5,6),k,!k").description
                == "k=1,k!=2,k in (5,6),k notin (3,4),k,!k")
    }

    @Test func initCanonicalizesRequirements() {
        let s = LabelSelector(requirements: [
            R(key: "b", op: .isIn, values: ["y"]), R(key: "a", op: .exists, values: ["ignored"]),
            R(key: "b", op: .equals, values: ["y"])
        ])
        #expect(s.description == "a,b=y")
        #expect(s.requirements.count == 2)
    }

    @Test func codableAsItsCanonicalString() throws {
        let s = try parse("tier=fast, region in (eu,us)")
        let data = try JSONEncoder().encode(["selector": s])
        #expect(String(decoding: data, as: UTF8.self) == #"{"selector":"region in (eu,us),tier=fast"}"#)
        #expect(try JSONDecoder().decode([String: LabelSelector].self, from: data)["selector"] == s)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode([String: LabelSelector].self, from: Data(#"{"selector":"k in ("}"#.utf8))
        }
    }

    // MARK: Matching

    @Test func matchesWithKubernetesSemanticsForAbsentKeys() throws {
        let none: [String: String] = [:]
        let eu = ["region": "eu"], us = ["region": "us"]
        #expect(try parse("region=eu").matches(eu))
        #expect(try !parse("region=eu").matches(us))
        #expect(try !parse("region=eu").matches(none))
        #expect(try parse("region!=eu").matches(none))  // absent: matches
        #expect(try parse("region!=eu").matches(us))
        #expect(try !parse("region!=eu").matches(eu))
        #expect(try parse("region in (eu,us)").matches(us))
        #expect(try !parse("region in (eu,us)").matches(none))
        #expect(try parse("region notin (eu,us)").matches(none))  // absent: matches
        #expect(try parse("region notin (eu,us)").matches(["region": "ap"]))
        #expect(try !parse("region notin (eu,us)").matches(eu))
        #expect(try parse("region").matches(eu))
        #expect(try !parse("region").matches(none))
        #expect(try parse("!region").matches(none))
        #expect(try !parse("!region").matches(eu))
        #expect(try parse("site=").matches(["site": ""]))
        #expect(try !parse("site=").matches(none))
        #expect(try !parse("region=eu,region=us").matches(eu))
    }

    @Test func matchesBuiltInKeysWithoutBuildingTheDictionary() throws {
        let selectors = try ["class=gpu", "tier in (fast,slow),region=eu", "!arch", "arch", "class!=gpu", "tier notin (fast)"]
            .map(parse)
        let labels: [[String: String]] = [[:], ["region": "eu"], ["region": "eu", "tier": "forged"]]
        let cells: [(String?, String?, String?)] = [(nil, nil, nil), ("gpu", "fast", "x86_64"), ("cpu", "slow", nil)]
        for s in selectors {
            for l in labels {
                for (c, t, a) in cells {
                    #expect(
                        s.matches(l, hardwareClass: c, tier: t, arch: a)
                            == s.matches(Labels.selectable(l, hardwareClass: c, tier: t, arch: a)), "\(s) \(l)")
                }
            }
        }
    }

    // MARK: Disjointness

    @Test(
        arguments: [
            ("region=eu", "region=us"),
            ("k", "!k"),
            ("k in (a,b)", "k notin (a,b)"),
            ("k in (a,b)", "k in (c,d)"),
            ("k=a", "k!=a"),
            ("k=a", "!k"),
            ("k in (a,b),j=1", "k=c"),
            ("k=a,k=b", ""),  // one side matches nothing
            ("k in (a,b),k!=b", "k=b,j"),
            ("k in (a,b)", "k!=a,k!=b")
        ] as [(String, String)])
    func provablyDisjoint(_ a: String, _ b: String) throws {
        #expect(try parse(a).provablyDisjoint(from: parse(b)))
        #expect(try parse(b).provablyDisjoint(from: parse(a)))
    }

    @Test(
        arguments: [
            ("", ""),
            ("region=eu", ""),
            ("region=eu", "tier=fast"),  // a device can have both
            ("k!=a", "k!=b"),  // both match k absent
            ("k notin (a,b)", "k notin (c)"),
            ("k", "k!=a"),  // k=b
            ("!k", "k!=a"),
            ("k in (a,b)", "k in (b,c)"),
            ("k in (a,b)", "k notin (a)"),
            ("region=eu", "!tier")
        ] as [(String, String)])
    func notDisjoint(_ a: String, _ b: String) throws {
        #expect(try !parse(a).provablyDisjoint(from: parse(b)))
        #expect(try !parse(b).provablyDisjoint(from: parse(a)))
    }

    /// Random selectors over 2 keys × 3 values, against every label set over those keys with a
    /// fourth value standing for "any other": disjoint means no set matches both, and (the check
    /// being exact) not disjoint means some set does.
    @Test func provablyDisjointAgreesWithEnumeration() {
        var rng = SeededGenerator(seed: 13)
        let keys = ["k", "j"], values = ["a", "b", "c"]
        let states: [String?] = [nil, "a", "b", "c", "other"]
        let labelSets: [[String: String]] = states.flatMap { k in
            states.map { j in
                var l: [String: String] = [:]
                l["k"] = k
                l["j"] = j
                return l
            }
        }
        func randomSelector() -> LabelSelector {
            let n = Int.random(in: 0...3, using: &rng)
            return LabelSelector(
                requirements: (0..<n).map { _ in
                    let op = LabelSelector.Operator.allCases.randomElement(using: &rng)!
                    let count = (op == .equals || op == .notEquals) ? 1 : Int.random(in: 1...3, using: &rng)
                    return R(
                        key: keys.randomElement(using: &rng)!, op: op,
                        values: (0..<count).map { _ in values.randomElement(using: &rng)! })
                })
        }
        var disjointSeen = 0
        for _ in 0..<3000 {
            let a = randomSelector(), b = randomSelector()
            let both = labelSets.contains { a.matches($0) && b.matches($0) }
            let disjoint = a.provablyDisjoint(from: b)
            if disjoint { disjointSeen += 1 }
            #expect(disjoint == !both, "\(a) vs \(b)")
            #expect(disjoint == b.provablyDisjoint(from: a))
        }
        // The sample must exercise both answers.
        #expect(disjointSeen > 100 && disjointSeen < 2900)
    }
}
