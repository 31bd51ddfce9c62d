#if canImport(Glibc)
    import Glibc
#endif

/// Whether something accepts TCP connections at HOST:PORT: how a daemon that only owns its
/// listener through a framework learns that it is serving. A wildcard host is probed on loopback.
public enum ListeningProbe {
    public static func accepts(host: String, port: Int) -> Bool {
        let target: String
        switch host {
        case "0.0.0.0", "": target = "127.0.0.1"
        case "::", "[::]": target = "::1"
        default: target = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(target, String(port), &hints, &list) == 0, let first = list else { return false }
        defer { freeaddrinfo(first) }
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let ai = next {
            let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), ai.pointee.ai_protocol)
            if fd >= 0 {
                let ok = connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0
                close(fd)
                if ok { return true }
            }
            next = ai.pointee.ai_next
        }
        return false
    }
}
