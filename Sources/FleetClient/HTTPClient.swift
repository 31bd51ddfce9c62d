import CCurl
import FleetCore
#if canImport(Glibc)
    import Glibc
#endif

/// Why an HTTP exchange failed, by class, so callers can decide between retry and give up.
public struct HTTPClientError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case connect  // could not reach the server
        case timeout  // connect timeout or transfer stalled
        case transfer  // connection cut or protocol error mid-transfer
        case tooLarge  // the server sent more than was allowed
        case status  // the server answered with an error status
        case io  // local file error (disk full, permissions)
        case cancelled
        case tls
    }
    public let code: Code
    public let message: String
    public let status: Int?
    public let body: Data?
    public var description: String { "\(code.rawValue): \(message)" }

    public init(_ code: Code, _ message: String, status: Int? = nil, body: Data? = nil) {
        self.code = code; self.message = message; self.status = status; self.body = body
    }

    /// Worth another attempt: the network or a server-side hiccup, not a refusal.
    public var isTransient: Bool {
        switch code {
        case .connect, .timeout, .transfer: return true
        case .status: return (status ?? 0) >= 500 || status == 429 || status == 408
        default: return false
        }
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [String: String]  // lower-cased names
    public var body: Data
}

/// TLS settings: `caFile` pins the CA the server's certificate must chain to (instead of the
/// system's), `certFile`/`keyFile` are the client certificate of mutual TLS. Empty: system CAs.
public struct TLSOptions: Sendable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile; self.certFile = certFile; self.keyFile = keyFile
    }
}

public struct DownloadResult: Sendable {
    public var bytesReceived: Int64  // bytes this call wrote
    public var fileSize: Int64  // bytes in the file afterwards
    public var resumedFrom: Int64
    public var seconds: Double
}

private let curlGlobalInit: Bool = {
    curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
}()

/// The one HTTP client of EdgeFleet's device and CLI side: a thin, blocking wrapper over a libcurl
/// easy handle. One instance per thread.
public final class HTTPClient {
    public var connectTimeoutSeconds = 10
    /// A transfer slower than `stallBytesPerSecond` for `stallSeconds` is aborted as stalled.
    public var stallSeconds = 30
    public var stallBytesPerSecond = 1
    public var tls = TLSOptions()
    public var userAgent = "edgefleet"

    /// One easy handle for the client's life: libcurl keeps its connections open between requests.
    private let handle: UnsafeMutableRawPointer?

    public init() {
        _ = curlGlobalInit
        handle = curl_easy_init()
    }

    deinit { curl_easy_cleanup(handle) }

    // MARK: requests with small bodies

    public func request(
        _ method: String, _ url: String, headers: [String: String] = [:], body: Data? = nil,
        maxResponseBytes: Int = 16 << 20, timeoutSeconds: Int = 60
    ) throws(HTTPClientError) -> HTTPResponse {
        let sink = BufferSink(limit: maxResponseBytes)
        let status: Int
        let hdrs: [String: String]
        do throws(HTTPClientError) {
            (status, hdrs) = try perform(url: url, method: method, headers: headers, timeoutSeconds: timeoutSeconds) { h in
                if let body {
                    body.withUnsafeBytes { raw in
                        _ = ef_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(raw.count))
                        _ = ef_setopt_ptr(
                            h, CURLOPT_COPYPOSTFIELDS,
                            UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!))
                    }
                }
                return sink
            }
        } catch {
            // A server that sends more than allowed (or never stops) is cut off: say so, not "write error".
            if sink.overLimit {
                throw HTTPClientError(.tooLarge, "\(method) \(url): the answer is longer than the limit of \(maxResponseBytes) bytes")
            }
            throw error
        }
        return HTTPResponse(status: status, headers: hdrs, body: sink.data)
    }

    /// Sends a JSON body and decodes a JSON answer; a non-2xx status is an error carrying the body.
    public func json<Out: Decodable>(
        _ method: String, _ url: String, body: (some Encodable)?, headers: [String: String] = [:],
        as: Out.Type, maxResponseBytes: Int = 16 << 20
    ) throws -> Out {
        var h = headers
        h["Accept"] = "application/json"
        var data: Data? = nil
        if let body {
            data = try FleetJSON.encode(body)
            h["Content-Type"] = "application/json"
        }
        let response = try request(method, url, headers: h, body: data, maxResponseBytes: maxResponseBytes)
        try Self.check(response, url: url)
        return try FleetJSON.decode(Out.self, from: response.body, limit: maxResponseBytes)
    }

    public static func check(_ response: HTTPResponse, url: String) throws(HTTPClientError) {
        guard (200..<300).contains(response.status) else {
            throw HTTPClientError(
                .status, "\(url) answered \(response.status): \(APIErrorBody.message(from: response.body))",
                status: response.status, body: response.body)
        }
    }

    // MARK: streaming

    /// Uploads a file with a streaming body (never read whole), reporting progress.
    public func upload(
        file path: String, to url: String, method: String = "PUT", headers: [String: String] = [:],
        progress: ((Int64, Int64) -> Void)? = nil
    ) throws(HTTPClientError) -> HTTPResponse {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HTTPClientError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw HTTPClientError(.io, "cannot stat \(path)") }
        let source = FileSource(fd: fd)
        let sink = BufferSink(limit: 16 << 20)
        let progressBox = ProgressBox(callback: progress)
        // No `Expect: 100-continue`: it costs a round trip (or curl's one-second wait) per upload.
        let (status, hdrs) = try perform(
            url: url, method: method, headers: headers.merging(["Expect": ""]) { a, _ in a }, timeoutSeconds: 0
        ) { h in
            _ = ef_setopt_long(h, CURLOPT_UPLOAD, 1)
            _ = ef_setopt_off(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(st.st_size))
            _ = ef_setopt_read(h, fileReadCallback)
            _ = ef_setopt_ptr(h, CURLOPT_READDATA, Unmanaged.passUnretained(source).toOpaque())
            if progress != nil {
                _ = ef_setopt_long(h, CURLOPT_NOPROGRESS, 0)
                _ = ef_setopt_xferinfo(h, progressCallback)
                _ = ef_setopt_ptr(h, CURLOPT_XFERINFODATA, Unmanaged.passUnretained(progressBox).toOpaque())
            }
            return sink
        }
        if source.failed { throw HTTPClientError(.io, "read error on \(path)") }
        return HTTPResponse(status: status, headers: hdrs, body: sink.data)
    }

    /// Downloads into `path`, continuing from the bytes already there with an HTTP Range request.
    /// Never lets the file grow past `maxBytes` (a server that does not stop is cut off).
    /// `rateLimitBytesPerSecond` holds over any window of a second or more (within about 10%), not
    /// only on average. `onReceive` is called on this thread after each buffer is written, with
    /// the bytes this call has written so far.
    public func download(
        _ url: String, to path: String, maxBytes: Int64, rateLimitBytesPerSecond: Int64? = nil,
        shouldCancel: (@Sendable () -> Bool)? = nil,
        onReceive: ((Int64) -> Void)? = nil
    ) throws(HTTPClientError) -> DownloadResult {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HTTPClientError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw HTTPClientError(.io, "cannot stat \(path)") }
        var existing = Int64(st.st_size)
        if existing > maxBytes {
            // More than the signed length is never right: start over.
            guard ftruncate(fd, 0) == 0 else { throw HTTPClientError(.io, "cannot truncate \(path)") }
            existing = 0
        }
        if existing == maxBytes {
            return DownloadResult(bytesReceived: 0, fileSize: existing, resumedFrom: existing, seconds: 0)
        }
        let sink = FileSink(fd: fd, offset: existing, limit: maxBytes)
        sink.onReceive = onReceive
        sink.shouldCancel = shouldCancel
        if let rate = rateLimitBytesPerSecond, rate > 0 { sink.pacer = RatePacer(bytesPerSecond: rate) }
        let progressBox = ProgressBox(callback: nil, cancel: shouldCancel)
        let start = monotonicSeconds()
        let status: Int
        let responseHeaders: [String: String]
        do throws(HTTPClientError) {
            (status, responseHeaders) = try perform(url: url, method: "GET", headers: [:], timeoutSeconds: 0) { h in
                if existing > 0 { _ = ef_setopt_off(h, CURLOPT_RESUME_FROM_LARGE, curl_off_t(existing)) }
                // The pacer in the sink limits the rate (libcurl's limiter lets bursts through, see
                // RatePacer); small buffers keep each step of it small.
                if let rate = rateLimitBytesPerSecond, rate > 0 {
                    _ = ef_setopt_long(h, CURLOPT_BUFFERSIZE, RatePacer.bufferSize(bytesPerSecond: rate))
                }
                _ = ef_setopt_long(h, CURLOPT_NOPROGRESS, 0)
                _ = ef_setopt_xferinfo(h, progressCallback)
                _ = ef_setopt_ptr(h, CURLOPT_XFERINFODATA, Unmanaged.passUnretained(progressBox).toOpaque())
                sink.handle = h
                return sink
            }
        } catch {
            if sink.overLimit { throw HTTPClientError(.tooLarge, "\(url) sent more than the signed \(maxBytes) bytes") }
            if let e = sink.ioError { throw HTTPClientError(.io, e) }
            throw error
        }
        if status == 416, existing > 0 {
            // "bytes */SIZE": the file was already whole, or it is longer than this artifact.
            if responseHeaders["content-range"] == "bytes */\(existing)" {
                return DownloadResult(bytesReceived: 0, fileSize: existing, resumedFrom: existing, seconds: 0)
            }
            _ = ftruncate(fd, 0)
            throw HTTPClientError(.transfer, "range not satisfiable; partial download discarded")
        }
        guard status == 200 || status == 206 else {
            if existing == 0 { unlink(path) }  // leave no empty file behind an error answer
            throw HTTPClientError(.status, "\(url) answered \(status)", status: status)
        }
        _ = fsync(fd)
        return DownloadResult(
            bytesReceived: sink.written, fileSize: sink.offset, resumedFrom: sink.restartedAtZero ? 0 : existing,
            seconds: monotonicSeconds() - start)
    }

    // MARK: plumbing

    private func perform(
        url: String, method: String, headers: [String: String], timeoutSeconds: Int,
        configure: (UnsafeMutableRawPointer) -> ResponseSink
    ) throws(HTTPClientError) -> (Int, [String: String]) {
        guard let h = handle else { throw HTTPClientError(.io, "curl_easy_init failed") }
        curl_easy_reset(h)
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        let headerBox = HeaderBox()
        var list: UnsafeMutablePointer<curl_slist>? = nil
        for (k, v) in headers { list = curl_slist_append(list, "\(k): \(v)") }
        defer { curl_slist_free_all(list) }

        _ = ef_setopt_str(h, CURLOPT_URL, url)
        _ = ef_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = ef_setopt_long(h, CURLOPT_BUFFERSIZE, 1 << 20)
        _ = ef_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        _ = ef_setopt_str(h, CURLOPT_USERAGENT, userAgent)
        _ = ef_setopt_long(h, CURLOPT_CONNECTTIMEOUT, connectTimeoutSeconds)
        _ = ef_setopt_long(h, CURLOPT_LOW_SPEED_TIME, stallSeconds)
        _ = ef_setopt_long(h, CURLOPT_LOW_SPEED_LIMIT, stallBytesPerSecond)
        if timeoutSeconds > 0 { _ = ef_setopt_long(h, CURLOPT_TIMEOUT, timeoutSeconds) }
        _ = ef_setopt_long(h, CURLOPT_PROTOCOLS, Int(CURLPROTO_HTTP | CURLPROTO_HTTPS))
        if let ca = tls.caFile {
            // Pinned: only this CA, not the system's as well.
            _ = ef_setopt_str(h, CURLOPT_CAINFO, ca)
            _ = ef_setopt_ptr(h, CURLOPT_CAPATH, nil)
        }
        if let cert = tls.certFile { _ = ef_setopt_str(h, CURLOPT_SSLCERT, cert) }
        if let key = tls.keyFile { _ = ef_setopt_str(h, CURLOPT_SSLKEY, key) }
        if method == "HEAD" {
            _ = ef_setopt_long(h, CURLOPT_NOBODY, 1)
        } else if method != "GET" && method != "PUT" {
            _ = ef_setopt_str(h, CURLOPT_CUSTOMREQUEST, method)
        }
        if method == "POST" { _ = ef_setopt_long(h, CURLOPT_POST, 1) }
        _ = ef_setopt_ptr(h, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(list))
        _ = ef_setopt_header(h, headerCallback)
        _ = ef_setopt_ptr(h, CURLOPT_HEADERDATA, Unmanaged.passUnretained(headerBox).toOpaque())
        let sink = configure(h)
        _ = ef_setopt_write(h, writeCallback)
        _ = ef_setopt_ptr(h, CURLOPT_WRITEDATA, Unmanaged.passUnretained(sink).toOpaque())

        let rc = errorBuffer.withUnsafeMutableBufferPointer { buf -> CURLcode in
            _ = ef_setopt_ptr(h, CURLOPT_ERRORBUFFER, buf.baseAddress)
            return curl_easy_perform(h)
        }
        var status = 0
        _ = ef_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        guard rc == CURLE_OK else {
            let detail = String(cString: errorBuffer.withUnsafeBufferPointer { $0.baseAddress! })
            let text = detail.isEmpty ? String(cString: curl_easy_strerror(rc)) : detail
            throw Self.classify(rc, "\(method) \(url): \(text)")
        }
        return (status, headerBox.headers)
    }

    static func classify(_ rc: CURLcode, _ message: String) -> HTTPClientError {
        switch rc {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY: return HTTPClientError(.connect, message)
        case CURLE_OPERATION_TIMEDOUT: return HTTPClientError(.timeout, message)
        case CURLE_ABORTED_BY_CALLBACK: return HTTPClientError(.cancelled, message)
        case CURLE_WRITE_ERROR: return HTTPClientError(.io, message)
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CACERT_BADFILE:
            return HTTPClientError(.tls, message)
        default: return HTTPClientError(.transfer, message)
        }
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

// MARK: - libcurl callbacks

class ResponseSink {
    func write(_ buffer: UnsafeRawBufferPointer) -> Bool { true }
}

final class BufferSink: ResponseSink {
    var data = Data()
    let limit: Int
    private(set) var overLimit = false
    init(limit: Int) { self.limit = limit }
    override func write(_ buffer: UnsafeRawBufferPointer) -> Bool {
        guard data.count + buffer.count <= limit else { overLimit = true; return false }
        data.append(contentsOf: buffer)
        return true
    }
}

final class FileSink: ResponseSink {
    let fd: Int32
    var offset: Int64
    let limit: Int64
    var written: Int64 = 0
    var overLimit = false
    var ioError: String?
    var checkedStatus = false
    var restartedAtZero = false
    var handle: UnsafeMutableRawPointer?
    var pacer: RatePacer?
    var shouldCancel: (@Sendable () -> Bool)?
    var onReceive: ((Int64) -> Void)?

    init(fd: Int32, offset: Int64, limit: Int64) { self.fd = fd; self.offset = offset; self.limit = limit }

    override func write(_ buffer: UnsafeRawBufferPointer) -> Bool {
        let ok = store(buffer)
        if ok, let onReceive { onReceive(written) }
        // Waiting here stops libcurl reading the socket, so TCP holds the sender back too.
        if ok, pacer != nil { pace(buffer.count) }
        return ok
    }

    private func pace(_ count: Int) {
        var wait = pacer!.take(count, at: monotonicSeconds())
        while wait > 0 {
            // In slices, so that a stop request is seen (the progress callback then aborts).
            if let shouldCancel, shouldCancel() { return }
            let slice = min(wait, 0.1)
            var ts = timespec(tv_sec: Int(slice), tv_nsec: Int((slice - Double(Int(slice))) * 1e9))
            var left = timespec()
            while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
            wait -= slice
        }
    }

    private func store(_ buffer: UnsafeRawBufferPointer) -> Bool {
        if !checkedStatus, let handle {
            checkedStatus = true
            var status = 0
            _ = ef_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            if status == 200, offset > 0 {
                // The server ignored the Range: the body is the whole file again.
                guard ftruncate(fd, 0) == 0 else { ioError = "cannot truncate"; return false }
                offset = 0
                restartedAtZero = true
            } else if status != 200 && status != 206 {
                return true  // error page: not written into the download
            }
        }
        guard offset + Int64(buffer.count) <= limit else { overLimit = true; return false }
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + Int64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                ioError = "write failed: \(String(cString: strerror(errno)))"
                return false
            }
            done += n
        }
        offset += Int64(buffer.count)
        written += Int64(buffer.count)
        return true
    }
}

final class FileSource {
    let fd: Int32
    var failed = false
    init(fd: Int32) { self.fd = fd }
}

final class HeaderBox {
    var headers: [String: String] = [:]
}

final class ProgressBox {
    let callback: ((Int64, Int64) -> Void)?
    let cancel: (@Sendable () -> Bool)?
    init(callback: ((Int64, Int64) -> Void)?, cancel: (@Sendable () -> Bool)? = nil) { self.callback = callback; self.cancel = cancel }
}

private let writeCallback: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = {
    ptr, size, count, ctx in
    guard let ptr, let ctx else { return 0 }
    let sink = Unmanaged<ResponseSink>.fromOpaque(ctx).takeUnretainedValue()
    let n = size * count
    return sink.write(UnsafeRawBufferPointer(start: ptr, count: n)) ? n : 0
}

private let headerCallback: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = {
    ptr, size, count, ctx in
    guard let ptr, let ctx else { return 0 }
    let n = size * count
    let box = Unmanaged<HeaderBox>.fromOpaque(ctx).takeUnretainedValue()
    let line = String(decoding: UnsafeRawBufferPointer(start: ptr, count: n), as: UTF8.self)
    if line.hasPrefix("HTTP/") { box.headers = [:] }  // a new response (after 100-continue)
    if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmed
        box.headers[name] = value
    }
    return n
}

private let fileReadCallback: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = {
    ptr, size, count, ctx in
    guard let ptr, let ctx else { return Int(CURL_READFUNC_ABORT) }
    let source = Unmanaged<FileSource>.fromOpaque(ctx).takeUnretainedValue()
    while true {
        let n = read(source.fd, ptr, size * count)
        if n < 0 && errno == EINTR { continue }
        if n < 0 { source.failed = true; return Int(CURL_READFUNC_ABORT) }
        return n
    }
}

private let progressCallback: @convention(c) (UnsafeMutableRawPointer?, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> Int32 = {
    ctx, dlTotal, dlNow, ulTotal, ulNow in
    guard let ctx else { return 0 }
    let box = Unmanaged<ProgressBox>.fromOpaque(ctx).takeUnretainedValue()
    if let cancel = box.cancel, cancel() { return 1 }
    if ulTotal > 0 { box.callback?(Int64(ulNow), Int64(ulTotal)) } else if dlTotal > 0 { box.callback?(Int64(dlNow), Int64(dlTotal)) }
    return 0
}
