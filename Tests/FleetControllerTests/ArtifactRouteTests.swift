import FleetCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import FleetController

@Suite("Artifact store over HTTP")
struct ArtifactRouteTests {
    let bytes: [UInt8] = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

    @Test func uploadThenServeWithRangeETagAndCaching() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        let data = bytes
        try await f.app().test(.router) { client in
            let up = try await client.execute(uri: "/v1/artifacts", method: .put, body: ByteBuffer(bytes: data))
            #expect(up.status == .created)
            let info = try decode(ArtifactInfo.self, up)
            #expect(info == ArtifactInfo(sha256: Digest.sha256Hex(data), size: Int64(data.count)))

            let full = try await client.execute(uri: "/v1/artifacts/\(info.sha256)", method: .get)
            #expect(full.status == .ok)
            #expect(Array(full.body.readableBytesView) == data)
            #expect(full.headers[.eTag] == "\"\(info.sha256)\"")
            #expect(full.headers[.cacheControl]?.contains("immutable") == true)

            let part = try await client.execute(uri: "/v1/artifacts/\(info.sha256)", method: .get, headers: [.range: "bytes=100-199"])
            #expect(part.status == .partialContent)
            #expect(Array(part.body.readableBytesView) == Array(data[100...199]))
            #expect(part.headers[.contentRange] == "bytes 100-199/5000")

            let tail = try await client.execute(uri: "/v1/artifacts/\(info.sha256)", method: .get, headers: [.range: "bytes=4990-"])
            #expect(Array(tail.body.readableBytesView) == Array(data[4990...]))

            let past = try await client.execute(uri: "/v1/artifacts/\(info.sha256)", method: .get, headers: [.range: "bytes=6000-"])
            #expect(past.status == .rangeNotSatisfiable)
            #expect(past.headers[.contentRange] == "bytes */5000")

            let cached = try await client.execute(
                uri: "/v1/artifacts/\(info.sha256)", method: .get, headers: [.ifNoneMatch: "\"\(info.sha256)\""])
            #expect(cached.status == .notModified)

            let head = try await client.execute(uri: "/v1/artifacts/\(info.sha256)", method: .head)
            #expect(head.status == .ok)
            #expect(head.headers[.contentLength] == "5000")
        }
    }

    @Test func unknownOrMalformedDigestIs404() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        try await f.app().test(.router) { client in
            let unknown = try await client.execute(uri: "/v1/artifacts/" + String(repeating: "a", count: 64), method: .get)
            #expect(unknown.status == .notFound)
            let traversal = try await client.execute(uri: "/v1/artifacts/..%2F..%2Fetc%2Fpasswd", method: .get)
            #expect(traversal.status == .notFound)
        }
    }

    @Test func uploadWithWrongDigestStoresNothing() async throws {
        let f = try ControllerFixture(); defer { f.cleanup() }
        let data = bytes
        try await f.app().test(.router) { client in
            let r = try await client.execute(
                uri: "/v1/artifacts", method: .put,
                headers: [HTTPField.Name("X-Content-SHA256")!: String(repeating: "0", count: 64)],
                body: ByteBuffer(bytes: data))
            #expect(r.status == .unprocessableContent)
            #expect(errorCode(r) == "digest-mismatch")
            let status = try decode(FleetStatus.self, try await client.execute(uri: "/v1/status", method: .get))
            #expect(status.artifacts == 0)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.dir + "/data/artifacts/incoming").isEmpty)
    }

    @Test func rangeParser() {
        #expect(ByteRange.parse("bytes=0-0", size: 10) == 0...0)
        #expect(ByteRange.parse("bytes=-3", size: 10) == 7...9)
        #expect(ByteRange.parse("bytes=5-100", size: 10) == 5...9)
        #expect(ByteRange.parse("bytes=10-", size: 10) == nil)
        #expect(ByteRange.parse("bytes=5-2", size: 10) == nil)
        #expect(ByteRange.parse("items=0-1", size: 10) == nil)
        #expect(ByteRange.parse("bytes=-0", size: 10) == nil)
    }
}
