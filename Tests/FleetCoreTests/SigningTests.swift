import Testing
@testable import FleetCore

@Suite struct EnvelopeSigningTests {
    private let root = Fixture.rootMetadata()

    @Test func signedEnvelopeVerifiesAndYieldsTheExactPayload() throws {
        let catalog = Fixture.catalog()
        let env = try Envelope.sign(catalog, type: PayloadType.catalog, keys: [Fixture.releaseKey])
        let body = try MetadataVerifier.verify(env, type: PayloadType.catalog, role: .release, root: root)
        #expect(body == [UInt8](try FleetJSON.encode(catalog)))
        #expect(try JSONDecoder().decode(ReleaseCatalog.self, from: Data(body)) == catalog)
        #expect(env.signatures.map(\.keyid) == [Fixture.releaseKey.keyID])
        #expect(env.payloadDigest == Digest.sha256Hex(body))
    }

    /// Nothing is re-serialised to check a signature: odd but valid bytes verify as they are.
    @Test func verifiesThePayloadBytesAsReceived() throws {
        let bytes = Array(#"  { "version" : 1 , "catalogs":{}, "expiresAt": 99, "type":"timestamp" }  "#.utf8)
        let env = Fixture.signBytes(bytes, PayloadType.timestamp, [Fixture.timestampKey])
        #expect(try MetadataVerifier.verify(env, type: PayloadType.timestamp, role: .timestamp, root: root) == bytes)
    }

    @Test func preAuthEncodingLayout() {
        let pae = Envelope.preAuthEncoding(type: "application/x", body: Array("hi".utf8))
        #expect(pae == Array("DSSEv1 13 application/x 2 hi".utf8))
        #expect(Envelope.preAuthEncoding(type: "", body: []) == Array("DSSEv1 0  0 ".utf8))
        // Lengths keep the type/body boundary unambiguous.
        #expect(
            Envelope.preAuthEncoding(type: "ab", body: Array("c".utf8))
                != Envelope.preAuthEncoding(type: "a", body: Array("bc".utf8)))
    }

    /// The signature covers the payload type: relabelling a signed document as another kind
    /// invalidates it even when the signing key is trusted for both readings.
    @Test func relabelledPayloadTypeBreaksTheSignature() throws {
        var env = try Envelope.sign(Fixture.catalog(), type: PayloadType.catalog, keys: [Fixture.releaseKey])
        env.payloadType = PayloadType.root
        let fault = trustFault { try MetadataVerifier.verify(env, type: PayloadType.root, role: .release, root: root) }
        #expect(fault == .badSignature)
    }

    /// Maintenance windows are part of the signed assignment: a window widened (or removed) in
    /// transit, with the signature kept, does not verify.
    @Test func widenedActivationWindowBreaksTheAssignmentSignature() throws {
        var a = Assignment(
            deviceId: "d1", hardwareClass: "x86-avx512-vnni", model: "m", release: "m@2", variant: "m-int8",
            sha256: String(repeating: "a", count: 64), size: 10,
            package: PackageRef(kind: PackageRef.full, sha256: String(repeating: "a", count: 64), size: 10, url: "http://x/a"),
            counter: 2, expiresAt: 2_000_000_000, catalogSha256: String(repeating: "b", count: 64))
        a.activation = [ActivationWindow(start: 1_782_950_400, end: 1_782_961_200)]
        let env = try Envelope.sign(a, type: PayloadType.assignment, keys: [Fixture.directorKey])
        #expect(
            try MetadataVerifier.verify(env, type: PayloadType.assignment, role: .director, root: root) == [UInt8](try FleetJSON.encode(a)))
        for forged in [[ActivationWindow(start: 0, end: 4_000_000_000)], nil] {
            var b = a
            b.activation = forged
            var tampered = env
            tampered.payload = Data(try FleetJSON.encode(b)).base64EncodedString()
            #expect(
                trustFault { try MetadataVerifier.verify(tampered, type: PayloadType.assignment, role: .director, root: root) }
                    == .badSignature)
        }
    }

    @Test func envelopeOfAnotherTypeIsRefusedBeforeSignatures() throws {
        let env = try Envelope.sign(Fixture.catalog(), type: PayloadType.catalog, keys: [Fixture.releaseKey])
        for other in [PayloadType.root, PayloadType.assignment, PayloadType.timestamp, "application/json"] {
            #expect(trustFault { try MetadataVerifier.verify(env, type: other, role: .release, root: root) } == .wrongPayloadType)
        }
    }

    @Test func signatureFromAnotherKeyDoesNotVerify() {
        let message = Array("m".utf8)
        let sig = Fixture.releaseKey.sign(message)
        #expect(Fixture.releaseKey.publicKey.verify(signature: sig, message: message))
        #expect(!Fixture.directorKey.publicKey.verify(signature: sig, message: message))
        #expect(!Fixture.releaseKey.publicKey.verify(signature: sig, message: Array("n".utf8)))
        var flipped = sig
        flipped[0] ^= 1
        #expect(!Fixture.releaseKey.publicKey.verify(signature: flipped, message: message))
    }

    @Test func publicKeyOfUnknownTypeNeverVerifies() {
        let message = Array("m".utf8)
        var pk = Fixture.releaseKey.publicKey
        pk.keytype = "rsa"
        #expect(!pk.verify(signature: Fixture.releaseKey.sign(message), message: message))
        var garbage = Fixture.releaseKey.publicKey
        garbage.public = "zz"
        #expect(!garbage.verify(signature: Fixture.releaseKey.sign(message), message: message))
    }

    @Test func addSignatureReplacesTheSameKeysSignature() throws {
        var env = try Envelope.sign(Fixture.catalog(), type: PayloadType.catalog, keys: [Fixture.releaseKey])
        env.addSignature(Fixture.releaseKey)
        env.addSignature(Fixture.releaseKey2)
        #expect(env.signatures.map(\.keyid) == [Fixture.releaseKey.keyID, Fixture.releaseKey2.keyID])
    }

    @Test func keyIDIsTheSHA256OfTheRawPublicKey() {
        let key = Fixture.releaseKey
        #expect(key.keyID == Digest.sha256Hex(Hex.decode(key.publicKey.public)!))
        #expect(Digest.isSHA256Hex(key.keyID))
        #expect(Fixture.key(.release, seed: 2).keyID == key.keyID)  // deterministic
        #expect(Fixture.key(.director, seed: 2).keyID == key.keyID)  // the role is not part of the id
        #expect(Fixture.releaseKey2.keyID != key.keyID)
        #expect(SigningKey(role: .root).keyID != SigningKey(role: .root).keyID)
    }

    @Test func envelopeJSONRoundTrip() throws {
        let env = Fixture.bundle().assignment
        let data = try FleetJSON.encode(env)
        #expect(try Envelope.parse(data) == env)
    }

    @Test func envelopeParseRejectsDuplicateKeys() throws {
        let env = Fixture.bundle().assignment
        let forged = #"{"payload":"e30=","payloadType":"\#(env.payloadType)","payload":"\#(env.payload)","signatures":[]}"#
        #expect(trustFault { try Envelope.parse(Data(forged.utf8)) } == .duplicateKey)
    }

    @Test func envelopeParseRejectsOversizeAndGarbage() {
        let huge = #"{"payloadType":"x","signatures":[],"payload":""# + String(repeating: "A", count: MetadataLimits.envelope) + #""}"#
        #expect(trustFault { try Envelope.parse(Data(huge.utf8)) } == .tooLarge)
        #expect(trustFault { try Envelope.parse(Data("not json".utf8)) } == .malformed)
        #expect(trustFault { try Envelope.parse(Data(#"{"payloadType":"x"}"#.utf8)) } == .malformed)
        #expect(trustFault { try Envelope.parse(Data(#"{"payloadType":"x","payload":1,"signatures":[]}"#.utf8)) } == .malformed)
    }

    @Test func payloadThatIsNotBase64IsMalformed() throws {
        var env = try Envelope.sign(Fixture.catalog(), type: PayloadType.catalog, keys: [Fixture.releaseKey])
        env.payload = "@@not base64@@"
        #expect(env.payloadBytes == nil)
        #expect(trustFault { try MetadataVerifier.verify(env, type: PayloadType.catalog, role: .release, root: root) } == .malformed)
    }
}

@Suite struct KeyFileTests {
    @Test(arguments: Role.allCases)
    func keyFileRoundTrip(_ role: Role) throws {
        let key = SigningKey(role: role)
        let data = try key.fileContents()
        let parsed = try SigningKey.parse(data)
        #expect(parsed.role == role)
        #expect(parsed.keyID == key.keyID)
        #expect(parsed.rawPrivateKey == key.rawPrivateKey)
        let message = Array("payload".utf8)
        #expect(key.publicKey.verify(signature: parsed.sign(message), message: message))
    }

    @Test func keyFileHasTheDocumentedShape() throws {
        let data = try Fixture.releaseKey.fileContents()
        let file = try JSONDecoder().decode(SigningKey.File.self, from: data)
        #expect(file.role == .release)
        #expect(file.keytype == "ed25519")
        #expect(file.private == Hex.encode([UInt8](repeating: 2, count: 32)))
    }

    private func keyFile(
        role: String = "release", keytype: String = "ed25519",
        hex: String = String(repeating: "02", count: 32)
    ) -> Data {
        Data(#"{"role":"\#(role)","keytype":"\#(keytype)","private":"\#(hex)"}"#.utf8)
    }

    @Test func acceptsAHandWrittenKeyFile() throws {
        let key = try SigningKey.parse(keyFile(hex: String(repeating: "02", count: 32).uppercased()))
        #expect(key.keyID == Fixture.releaseKey.keyID)
    }

    @Test func rejectsBadKeyFiles() {
        #expect(trustFault { try SigningKey.parse(keyFile(keytype: "rsa")) } == .malformed)
        #expect(trustFault { try SigningKey.parse(keyFile(hex: String(repeating: "02", count: 31))) } == .malformed)
        #expect(trustFault { try SigningKey.parse(keyFile(hex: String(repeating: "02", count: 33))) } == .malformed)
        #expect(trustFault { try SigningKey.parse(keyFile(hex: String(repeating: "zz", count: 32))) } == .malformed)
        #expect(trustFault { try SigningKey.parse(keyFile(hex: "0" + String(repeating: "02", count: 32))) } == .malformed)
        #expect(trustFault { try SigningKey.parse(keyFile(role: "admin")) } == .malformed)
        #expect(trustFault { try SigningKey.parse(Data("{}".utf8)) } == .malformed)
        #expect(trustFault { try SigningKey.parse(Data()) } == .malformed)
        let padded = keyFile().base64EncodedData()  // not JSON
        #expect(trustFault { try SigningKey.parse(padded) } == .malformed)
    }

    @Test func rejectsKeyFileWithDuplicateKeys() {
        let twice =
            #"{"role":"release","keytype":"ed25519","private":"\#(String(repeating: "02", count: 32))","private":"\#(String(repeating: "03", count: 32))"}"#
        #expect(trustFault { try SigningKey.parse(Data(twice.utf8)) } == .malformed)
    }

    @Test func rejectsOversizeKeyFile() {
        let big =
            #"{"role":"release","keytype":"ed25519","private":"\#(String(repeating: "02", count: 32))","pad":""#
            + String(repeating: " ", count: 4096) + #""}"#
        #expect(trustFault { try SigningKey.parse(Data(big.utf8)) } == .malformed)
    }

    @Test(arguments: [0, 31, 33, 64])
    func rejectsRawPrivateKeyOfWrongLength(_ count: Int) {
        #expect(trustFault { try SigningKey(role: .root, rawPrivateKey: [UInt8](repeating: 7, count: count)) } == .malformed)
    }
}

@Suite struct DigestTests {
    @Test func hexRoundTrip() {
        let bytes: [UInt8] = [0, 1, 0x7f, 0x80, 0xab, 0xff]
        #expect(Hex.encode(bytes) == "00017f80abff")
        #expect(Hex.decode("00017f80abff") == bytes)
        #expect(Hex.decode("00017F80ABFF") == bytes)
        #expect(Hex.decode("") == [])
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("0g") == nil)
        #expect(Hex.decode("0 ") == nil)
    }

    @Test func sha256OfKnownInputs() {
        #expect(Digest.sha256Hex([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Digest.sha256Hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func contentAddressesAreLowercaseHexOnly() {
        let good = Digest.sha256Hex(Array("x".utf8))
        #expect(Digest.isSHA256Hex(good))
        #expect(!Digest.isSHA256Hex(good.uppercased()))
        #expect(!Digest.isSHA256Hex(String(good.dropLast())))
        #expect(!Digest.isSHA256Hex(good + "0"))
        #expect(!Digest.isSHA256Hex("../../etc/passwd" + String(repeating: "a", count: 48)))
        #expect(!Digest.isSHA256Hex(""))
    }

    @Test func streamingDigestMatchesOneShot() {
        let data = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var s = StreamingSHA256()
        s.update(data[0..<1])
        s.update(data[1..<4096])
        data[4096...].withUnsafeBytes { s.update($0) }
        #expect(s.count == 10_000)
        #expect(s.finalizeHex() == Digest.sha256Hex(data))
        #expect(StreamingSHA256().finalizeHex() == Digest.sha256Hex([UInt8]()))
    }
}
