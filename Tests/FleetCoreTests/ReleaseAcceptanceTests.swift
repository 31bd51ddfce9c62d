import Foundation
import Testing
@testable import FleetCore

@Suite("Release acceptance: what the controller refuses to serve")
struct ReleaseAcceptanceTests {
    let root = Fixture.rootMetadata()

    func registered(_ c: ReleaseCatalog) -> ReleaseAcceptance.ModelState {
        .init(registered: Dictionary(uniqueKeysWithValues: c.variants.map { ($0.name, $0) }), lastSerial: c.serial - 1)
    }

    func outcome(_ env: Envelope, state: ReleaseAcceptance.ModelState?) async -> ReleaseAcceptance.Rejection.Code? {
        do {
            _ = try await ReleaseAcceptance.check(env, root: root, now: Fixture.now) { _ in state }
            return nil
        } catch let r as ReleaseAcceptance.Rejection {
            return r.code
        } catch {
            Issue.record("untyped error \(error)")
            return nil
        }
    }

    @Test func aSignedCatalogOfRegisteredVariantsIsAcceptedAndDecodedOnce() async throws {
        let c = Fixture.catalog()
        let env = try Envelope.sign(c, type: PayloadType.catalog, keys: [Fixture.releaseKey])
        let accepted = try await ReleaseAcceptance.check(env, root: root, now: Fixture.now) { _ in registered(c) }
        #expect(accepted.catalog == c)
        #expect(accepted.payloadSha256 == env.payloadDigest)
    }

    @Test func eachRefusalHasItsCode() async throws {
        let c = Fixture.catalog()
        let good = try Envelope.sign(c, type: PayloadType.catalog, keys: [Fixture.releaseKey])
        // Signed by the director key: a trust fault, named.
        let wrongKey = try Envelope.sign(c, type: PayloadType.catalog, keys: [Fixture.directorKey])
        do {
            _ = try await ReleaseAcceptance.check(wrongKey, root: root, now: Fixture.now) { _ in registered(c) }
            Issue.record("accepted a catalog without a release signature")
        } catch let r as ReleaseAcceptance.Rejection {
            #expect(r.code == .trust && r.trust?.fault == .missingSignature)
        }
        let expired = try Envelope.sign(Fixture.catalog(expiresAt: Fixture.now - 1), type: PayloadType.catalog, keys: [Fixture.releaseKey])
        #expect(await outcome(expired, state: registered(c)) == .trust)
        var badVersion = c
        badVersion.version = "../1"
        #expect(
            await outcome(try Envelope.sign(badVersion, type: PayloadType.catalog, keys: [Fixture.releaseKey]), state: registered(c))
                == .invalidVersion)
        #expect(await outcome(good, state: nil) == .unknownModel)
        var empty = c
        empty.variants = []
        #expect(
            await outcome(try Envelope.sign(empty, type: PayloadType.catalog, keys: [Fixture.releaseKey]), state: registered(c))
                == .emptyRelease)
        var otherSize = registered(c)
        otherSize.registered[c.variants[0].name]?.size += 1
        #expect(await outcome(good, state: otherSize) == .unknownVariant)
        var stale = registered(c)
        stale.lastSerial = c.serial
        #expect(await outcome(good, state: stale) == .staleSerial)
    }
}
