import Foundation
import Testing
@testable import FleetDelta
import FleetCore

/// Packages and bases a device must refuse, each with its typed error, leaving nothing behind.
@Suite struct RejectionTests {
    /// A base, a target and a package of `method` in a fresh directory.
    struct Setup {
        let dir: TempDir
        let base: String
        let target: [UInt8]
        let patch: [UInt8]
        var out: String { dir.file("out.safetensors") }

        init(_ method: DeltaMethod) throws {
            dir = try TempDir()
            let tensors = Fixture.baseTensors()
            let a = SafetensorsWriter.write(tensors, metadata: ["format": "pt"])
            target = SafetensorsWriter.write(Fixture.fineTuned(tensors), metadata: ["format": "pt", "v": "2"])
            base = try dir.write("base.safetensors", a)
            let t = try dir.write("target.safetensors", target)
            _ = try DeltaEncoder.encode(base: base, target: t, output: dir.file("good.delta"), methods: [method], level: 9)
            patch = try dir.read("good.delta")
        }

        /// Applies `bytes` as a package and returns the error code; checks that neither the output
        /// nor a temporary file was left.
        func apply(_ bytes: [UInt8], base: String? = nil) throws -> DeltaError.Code? {
            let p = try dir.write("bad.delta", bytes)
            let before = dir.listing()
            let code = deltaErrorCode { try DeltaDecoder.apply(base: base ?? self.base, patch: p, output: out, sync: false) }
            #expect(!FileManager.default.fileExists(atPath: out))
            #expect(dir.listing() == before)
            return code
        }
    }

    static func rewriteHeader(_ bytes: [UInt8], _ change: (inout DeltaHeader) -> Void) throws -> [UInt8] {
        var h = try DeltaHeader.parse(bytes)
        let old = h.headerLength
        change(&h)
        return h.serialized() + bytes[old...]
    }

    @Test(arguments: DeltaMethod.allCases)
    func baseWithOtherContentIsRefused(_ method: DeltaMethod) throws {
        let s = try Setup(method)
        defer { s.dir.remove() }
        var other = try s.dir.read("base.safetensors")
        other[other.count - 1] ^= 0x01
        let otherPath = try s.dir.write("other.safetensors", other)
        #expect(try s.apply(s.patch, base: otherPath) == .baseMismatch)
        let shorter = try s.dir.write("shorter.safetensors", Array(other.dropLast()))
        #expect(try s.apply(s.patch, base: shorter) == .baseMismatch)
        #expect(try s.apply(s.patch, base: s.dir.file("target.safetensors")) == .baseMismatch)
    }

    @Test(arguments: DeltaMethod.allCases)
    func truncatedPackagesAreRefused(_ method: DeltaMethod) throws {
        let s = try Setup(method)
        defer { s.dir.remove() }
        let h = try DeltaHeader.parse(s.patch)
        var cuts = [0, 1, 7, 8, 20, 111, h.headerLength - 1, h.headerLength, h.headerLength + 1, s.patch.count / 2, s.patch.count - 1]
        for i in 0..<h.sectionLengths.count {
            let start = Int(h.sectionOffset(i))
            cuts += [start + 1, start + Int(h.sectionLengths[i]) / 2]
        }
        for cut in Set(cuts) where cut < s.patch.count {
            #expect(try s.apply(Array(s.patch[0..<cut])) == .truncated, "cut at \(cut) of \(s.patch.count)")
        }
    }

    @Test(arguments: DeltaMethod.allCases)
    func trailingBytesAreRefused(_ method: DeltaMethod) throws {
        let s = try Setup(method)
        defer { s.dir.remove() }
        #expect(try s.apply(s.patch + [0]) == .corrupt)
    }

    /// A flipped byte anywhere in the header: refused as corrupt (checksum), or as unsupported
    /// where the version field is read before the checksum.
    @Test func everyHeaderByteIsProtected() throws {
        let s = try Setup(.tensor)
        defer { s.dir.remove() }
        let h = try DeltaHeader.parse(s.patch)
        for i in 0..<h.headerLength {
            var bad = s.patch
            bad[i] ^= 0x10
            let code = try s.apply(bad)
            if i == 8 || i == 9 { #expect(code == .unsupported, "byte \(i)") } else { #expect(code == .corrupt, "byte \(i)") }
        }
    }

    /// A flipped byte in any body section: the plan's or the payloads' zstd checksums catch it.
    @Test(arguments: DeltaMethod.allCases)
    func corruptedSectionsAreRefused(_ method: DeltaMethod) throws {
        let s = try Setup(method)
        defer { s.dir.remove() }
        let h = try DeltaHeader.parse(s.patch)
        for section in 0..<h.sectionLengths.count {
            let start = Int(h.sectionOffset(section)), length = Int(h.sectionLengths[section])
            let positions = Set(
                [0, 1, 4, 5, 6, length / 3, length / 2, 2 * length / 3, length - 5, length - 1].filter { $0 >= 0 && $0 < length })
            for p in positions {
                var bad = s.patch
                bad[start + p] ^= 0x5A
                #expect(try s.apply(bad) == .corrupt, "section \(section) byte \(p) of \(length)")
            }
        }
    }

    /// Exhaustive over a whole small package: no single flipped byte yields a file, and none crashes.
    @Test func noSingleByteCorruptionIsAccepted() throws {
        let s = try Setup(.tensor)
        defer { s.dir.remove() }
        let accepted: Set<DeltaError.Code> = [.corrupt, .unsupported, .targetMismatch]
        for i in 0..<s.patch.count {
            var bad = s.patch
            bad[i] = ~bad[i]
            let code = try s.apply(bad)
            #expect(code.map(accepted.contains) == true, "byte \(i): \(String(describing: code))")
        }
    }

    /// A package whose header names another target: decodes, then the hash check deletes the result.
    @Test(arguments: DeltaMethod.allCases)
    func resultWithTheWrongHashIsDeleted(_ method: DeltaMethod) throws {
        let s = try Setup(method)
        defer { s.dir.remove() }
        let bad = try Self.rewriteHeader(s.patch) { $0.targetSha256 = String(repeating: "0", count: 64) }
        #expect(try s.apply(bad) == .targetMismatch)
    }

    @Test(arguments: DeltaMethod.allCases)
    func wrongTargetSizeIsRefused(_ method: DeltaMethod) throws {
        let s = try Setup(method)
        defer { s.dir.remove() }
        for delta in [-1, 1] as [Int64] {
            let bad = try Self.rewriteHeader(s.patch) { $0.targetSize += delta }
            let code = try s.apply(bad)
            #expect(code == .corrupt || code == .targetMismatch, "size \(delta): \(String(describing: code))")
        }
    }

    @Test func unknownVersionMethodAndFlagsAreUnsupported() throws {
        let s = try Setup(.tensor)
        defer { s.dir.remove() }
        var version = s.patch
        version[8] = 2
        #expect(try s.apply(version) == .unsupported)
        #expect(deltaErrorCode { _ = try DeltaDecoder.readHeader(s.dir.file("bad.delta")) } == .unsupported)

        // Method and flags are checked after the checksum, so re-sign the header with them changed.
        for (offset, value) in [(12, UInt8(9)), (12, UInt8(0)), (14, UInt8(1))] {
            var bytes = s.patch
            bytes[offset] = value
            let h = Array(bytes[0..<(DeltaHeader.fixedLength + 16)])
            var hasher = StreamingSHA256Shim()
            let sum = hasher.digest(h)
            bytes.replaceSubrange((DeltaHeader.fixedLength + 16)..<(DeltaHeader.fixedLength + 48), with: sum)
            #expect(try s.apply(bytes) == .unsupported, "offset \(offset) = \(value)")
        }
    }

    /// A package that promises another target than the caller was promised (a release's signed
    /// hash and size) is refused before anything is written; the promised one decodes.
    @Test(arguments: DeltaMethod.allCases)
    func aPackageForAnotherTargetIsRefusedBeforeDecoding(_ method: DeltaMethod) throws {
        let s = try Setup(method)
        defer { s.dir.remove() }
        let p = try s.dir.write("good.delta", s.patch)
        let signed = DeltaDecoder.ExpectedTarget(sha256: Digest.sha256Hex(s.target), size: Int64(s.target.count))
        let before = s.dir.listing()
        for wrong in [
            DeltaDecoder.ExpectedTarget(sha256: String(repeating: "0", count: 64), size: signed.size),
            DeltaDecoder.ExpectedTarget(sha256: signed.sha256, size: signed.size + 1)
        ] {
            let code = deltaErrorCode { try DeltaDecoder.apply(base: s.base, patch: p, output: s.out, expecting: wrong, sync: false) }
            #expect(code == .targetMismatch)
            #expect(s.dir.listing() == before)
        }
        try DeltaDecoder.apply(base: s.base, patch: p, output: s.out, expecting: signed, sync: false)
        #expect(try s.dir.read("out.safetensors") == s.target)
    }

    @Test func aFailedApplyKeepsTheExistingOutput() throws {
        let s = try Setup(.tensor)
        defer { s.dir.remove() }
        let old = try s.dir.write("out.safetensors", Array("the model the device runs now".utf8))
        var bad = s.patch
        bad[bad.count - 3] ^= 0xFF
        let p = try s.dir.write("bad.delta", bad)
        #expect(deltaErrorCode { try DeltaDecoder.apply(base: s.base, patch: p, output: old, sync: false) } == .corrupt)
        #expect(try s.dir.read("out.safetensors") == Array("the model the device runs now".utf8))
        // And a good package replaces it.
        let good = try s.dir.write("good2.delta", s.patch)
        try DeltaDecoder.apply(base: s.base, patch: good, output: old)
        #expect(try s.dir.read("out.safetensors") == s.target)
    }

    @Test func notAPackageIsCorrupt() throws {
        let s = try Setup(.full)
        defer { s.dir.remove() }
        #expect(try s.apply(Array(repeating: 0x41, count: 400)) == .corrupt)
        #expect(try s.apply(s.target) == .corrupt)
    }

    @Test func missingFilesAreIOErrors() throws {
        let s = try Setup(.full)
        defer { s.dir.remove() }
        let p = try s.dir.write("p.delta", s.patch)
        #expect(deltaErrorCode { try DeltaDecoder.apply(base: s.dir.file("nope"), patch: p, output: s.out) } == .io)
        #expect(deltaErrorCode { try DeltaDecoder.apply(base: s.base, patch: s.dir.file("nope"), output: s.out) } == .io)
        #expect(deltaErrorCode { try DeltaDecoder.apply(base: s.base, patch: p, output: s.dir.file("no/such/dir/out")) } == .io)
    }
}

/// SHA-256 bytes through FleetCore's hasher (the header checksum), for re-signing test headers.
struct StreamingSHA256Shim {
    mutating func digest(_ bytes: [UInt8]) -> [UInt8] {
        var h = StreamingSHA256()
        h.update(bytes)
        return Hex.decode(h.finalizeHex())!
    }
}
