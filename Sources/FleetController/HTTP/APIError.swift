import FleetCore
import Foundation
import Hummingbird
import Logging
import NIOCore

/// An error an API client should see: a status, a stable code and a message.
struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    let status: HTTPResponse.Status
    let code: String
    let message: String
    /// Extra response headers, e.g. Retry-After on 429.
    var headers: HTTPFields = [:]
    /// Figures the client may act on, in the body's `counts`.
    var counts: [String: Int]? = nil

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String, headers: HTTPFields = [:], counts: [String: Int]? = nil) {
        self.status = status; self.code = code; self.message = message; self.headers = headers; self.counts = counts
    }

    var description: String { "\(status.code) \(code): \(message)" }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = APIErrorBody(error: .init(code: code, message: message, counts: counts))
        var response = try JSON.response(body, status: status)
        for field in headers { response.headers.append(field) }
        return response
    }

    /// The one place that turns any error into what the client sees.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError: return e
        case let e as AccessError:
            return APIError(e.status, e.code.rawValue, e.message, headers: e.retryAfter.map { [.retryAfter: String($0)] } ?? [:])
        case let e as MetadataError: return APIError(.badRequest, "malformed-json", e.description)
        case let e as TrustError: return APIError(.unprocessableContent, "trust-\(e.fault.rawValue)", e.message)
        case let e as StorageError:
            switch e.code {
            case .conflict: return APIError(.conflict, "conflict", e.message)
            case .notFound: return APIError(.notFound, "not-found", e.message)
            case .corrupt: return APIError(.internalServerError, "storage-corrupt", e.message)
            case .database, .schemaTooNew, .fenced: return APIError(.serviceUnavailable, "storage-\(e.code.rawValue)", e.message)
            }
        case let e as ArtifactError:
            switch e.code {
            case .tooLarge: return APIError(.contentTooLarge, "too-large", e.message)
            case .digestMismatch: return APIError(.unprocessableContent, "digest-mismatch", e.message)
            case .io: return APIError(.init(code: 507, reasonPhrase: "Insufficient Storage"), "artifact-io", e.message)
            }
        case is NIOTooManyBytesError:
            return APIError(.contentTooLarge, "too-large", "request body exceeds the limit")
        case let e as HTTPError:
            switch e.status {
            case .notFound: return APIError(.notFound, "no-route", "no such endpoint")
            case .contentTooLarge: return APIError(.contentTooLarge, "too-large", "request body exceeds the limit")
            case .methodNotAllowed: return APIError(.methodNotAllowed, "method-not-allowed", "method not allowed")
            default: return APIError(e.status, "http", e.body ?? e.status.reasonPhrase)
            }
        default:
            return APIError(.internalServerError, "internal", "internal error")
        }
    }
}

/// Maps every error thrown by a route (and the router's own 404) to a JSON body.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let api = APIError.from(error)
            if api.status.code >= 500 {
                context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            }
            return try api.response(from: request, context: context)
        }
    }
}

/// The controller's JSON in and out, through FleetJSON (sorted keys) and the strict syntax check.
enum JSON {
    static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try FleetJSON.encode(value)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, limit: Int) async throws -> T {
        var request = request
        let buffer = try await request.collectBody(upTo: limit)
        do {
            return try FleetJSON.decode(type, from: Data(buffer.readableBytesView), limit: limit)
        } catch {
            throw APIError(.badRequest, error.code == .duplicateKey ? "duplicate-key" : "malformed-json", error.message)
        }
    }
}
