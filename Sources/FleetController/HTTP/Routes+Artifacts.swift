import FleetCore
import Foundation
import HTTPTypes
import Hummingbird

/// Content-addressed artifacts: uploaded once, served immutable with Range and ETag, so any HTTP
/// cache or CDN in front of the controller can serve them too.
///
/// Behind nginx (`deploy/nginx/`), `accelRedirect` hands the bytes to nginx: after the access
/// check the controller answers `X-Accel-Redirect: <prefix><ab>/<sha256>` (the artifact's path
/// under the store's `sha256/` folder) and no body, and nginx serves the file from the shared
/// artifact directory with sendfile and Range from an `internal` location.
struct ArtifactRoutes: Sendable {
    let artifacts: ArtifactStore
    let metrics: ControllerMetrics
    let maxArtifactBytes: Int64
    let quarantine: ArtifactQuarantine
    let scrubber: ArtifactScrubber
    /// The internal location nginx serves the artifact directory under (`/_artifacts/`); nil: the
    /// controller sends the bytes itself.
    var accelRedirect: String? = nil

    func register(_ routes: Audiences) {
        routes.operators.put("/v1/artifacts") { request, _ in
            let expected = request.headers[HTTPField.Name("X-Content-SHA256")!]
            if let expected, !Digest.isSHA256Hex(expected) {
                throw APIError(.badRequest, "invalid-digest", "X-Content-SHA256 must be 64 lowercase hex digits")
            }
            if let length = request.headers[.contentLength].flatMap(Int64.init), length > maxArtifactBytes {
                throw APIError(.contentTooLarge, "too-large", "artifact of \(length) bytes exceeds the limit of \(maxArtifactBytes)")
            }
            let info = try await artifacts.ingest(request.body, maxBytes: maxArtifactBytes, expectedSha256: expected)
            metrics.artifactsUploaded.increment()
            try await quarantine.restored(info.sha256)  // the right bytes again: back in service
            return try JSON.response(info, status: .created)
        }
        // Operators: what the scrub took out of service, and a scrub pass now.
        routes.viewers.get("/v1/artifact-quarantine") { _, _ in
            try JSON.response(QuarantineList(artifacts: try await quarantine.list()))
        }
        routes.operators.post("/v1/artifact-quarantine/scrub") { _, _ in
            try JSON.response(await scrubber.scrub())
        }
        routes.artifactReaders.get("/v1/artifacts/:sha") { request, context in
            try await serve(request, context, body: true)
        }
        routes.artifactReaders.head("/v1/artifacts/:sha") { request, context in
            try await serve(request, context, body: false)
        }
    }

    private func serve(_ request: Request, _ context: FleetRequestContext, body: Bool) async throws -> Response {
        let sha = try context.parameters.require("sha")
        guard let path = artifacts.path(sha), let size = artifacts.size(sha) else {
            if Digest.isSHA256Hex(sha), let q = try await quarantine.record(sha) {
                throw APIError(
                    .gone, "artifact-quarantined",
                    "artifact \(sha) was found corrupt on the controller (\(q.foundBy.rawValue)) and is out of service until uploaded again"
                )
            }
            throw APIError(.notFound, "unknown-artifact", "no artifact \(sha)")
        }
        var headers = HTTPFields()
        let etag = "\"\(sha)\""
        headers[.eTag] = etag
        headers[.cacheControl] = "public, max-age=31536000, immutable"
        headers[.acceptRanges] = "bytes"
        headers[.contentType] = "application/octet-stream"
        if let inm = request.headers[.ifNoneMatch], inm.split(separator: ",").contains(where: { $0.trimmed == etag || $0.trimmed == "*" }) {
            return Response(status: .notModified, headers: headers)
        }
        if let prefix = accelRedirect {
            // nginx answers Range, HEAD and the length itself, from the file.
            metrics.artifactRequests.increment()
            headers[.acceptRanges] = nil
            headers[HTTPField.Name("X-Accel-Redirect")!] = Self.accelPath(prefix: prefix, sha256: sha)
            return Response(status: .ok, headers: headers)
        }
        var status = HTTPResponse.Status.ok
        var range: ClosedRange<Int64> = 0...max(size - 1, 0)
        if let header = request.headers[.range], size > 0 {
            guard let r = ByteRange.parse(header, size: size) else {
                headers[.contentRange] = "bytes */\(size)"
                return Response(status: .rangeNotSatisfiable, headers: headers)
            }
            range = r
            status = .partialContent
            headers[.contentRange] = "bytes \(r.lowerBound)-\(r.upperBound)/\(size)"
        }
        let length = size == 0 ? 0 : range.upperBound - range.lowerBound + 1
        headers[.contentLength] = String(length)
        guard body, length > 0 else { return Response(status: status, headers: headers) }
        metrics.artifactRequests.increment()
        let fileBody = try await FileIO().loadFile(path: path, range: Int(range.lowerBound)...Int(range.upperBound), context: context)
        // Counted as each buffer is handed to the connection, so a cut download counts what was sent.
        let served = metrics.artifactBytesServed
        let counted = ResponseBody(contentLength: fileBody.contentLength) { writer in
            try await fileBody.write(CountingBodyWriter(base: writer) { served.increment(by: Int64($0)) })
        }
        return Response(status: status, headers: headers, body: counted)
    }
}

extension ArtifactRoutes {
    /// `<prefix><ab>/<sha256>`: the artifact's place under the store's `sha256/` folder, which the
    /// nginx location aliases. `sha256` has been checked to be hex by the store's lookup.
    static func accelPath(prefix: String, sha256: String) -> String {
        (prefix.hasSuffix("/") ? prefix : prefix + "/") + "\(sha256.prefix(2))/\(sha256)"
    }
}

struct QuarantineList: Codable, Sendable {
    var artifacts: [QuarantinedArtifact]
}

/// Passes a response body through and reports each buffer once the connection took it.
struct CountingBodyWriter: ResponseBodyWriter {
    var base: any ResponseBodyWriter
    let count: @Sendable (Int) -> Void

    mutating func write(_ buffer: ByteBuffer) async throws {
        let n = buffer.readableBytes
        try await base.write(buffer)
        count(n)
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        try await base.finish(trailingHeaders)
    }
}

/// A single HTTP byte range (RFC 9110 §14.1.2); several ranges are served as the whole file.
enum ByteRange {
    static func parse(_ header: String, size: Int64) -> ClosedRange<Int64>? {
        guard header.hasPrefix("bytes="), size > 0 else { return nil }
        let spec = header.dropFirst(6)
        guard !spec.contains(",") else { return 0...(size - 1) }
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let first = parts[0].trimmed, last = parts[1].trimmed
        if first.isEmpty {
            guard let n = Int64(last), n > 0 else { return nil }
            return max(0, size - n)...(size - 1)
        }
        guard let start = Int64(first), start >= 0, start < size else { return nil }
        if last.isEmpty { return start...(size - 1) }
        guard let end = Int64(last), end >= start else { return nil }
        return start...min(end, size - 1)
    }
}
