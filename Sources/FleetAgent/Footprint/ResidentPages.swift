#if canImport(Glibc)
    import Glibc
#endif

/// The clean file-backed pages this process has mapped: the code and read-only data of the agent
/// binary and of its shared libraries that start-up and installs touched. Giving them back
/// (`release()`) drops them from this process's page tables and so from its RSS; they stay in the
/// page cache, and a page that is used again comes back with a minor fault, as after the kernel
/// reclaimed it under memory pressure.
///
/// Only mappings that are private, not writable and backed by a file are touched, and in them
/// only the pages that are still the file's (a page a relocation wrote is anonymous: it is kept;
/// dropping it would bring back the file's bytes).
public enum ResidentPages {
    /// What one `release()` gave back.
    public struct Released: Equatable, Sendable {
        /// Bytes of file pages dropped from the page tables.
        public var bytes: Int
        /// Mappings looked at (private, read-only, file-backed).
        public var mappings: Int
    }

    /// One line of /proc/PID/maps that `release()` may touch.
    struct Mapping: Equatable {
        var start: UInt
        var end: UInt
        var path: String
    }

    /// The private, read-only, file-backed mappings of a /proc/PID/maps text.
    static func candidates(maps: String) -> [Mapping] {
        var out: [Mapping] = []
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6, fields[1].count == 4 else { continue }
            let perms = Array(fields[1].utf8)
            // r?-p: readable or not, never writable, private (a shared mapping's pages are the file's
            // own; dropping them is harmless but they are not this process's to release).
            guard perms[1] == UInt8(ascii: "-"), perms[3] == UInt8(ascii: "p") else { continue }
            let path = fields[5].trimmingPrefix(while: { $0 == " " })
            guard path.hasPrefix("/"), !path.hasSuffix(" (deleted)") else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16), start < end
            else { continue }
            out.append(Mapping(start: start, end: end, path: String(path)))
        }
        return out
    }

    /// A pagemap entry: page present (bit 63) and a file page or shared anonymous (bit 61).
    static func isPresentFilePage(_ entry: UInt64) -> Bool { entry >> 63 & 1 == 1 && entry >> 61 & 1 == 1 }

    /// Drops this process's present file pages of its private read-only file mappings (see the
    /// type). Mappings it cannot read the page map of, or that refuse the advice (locked memory),
    /// are left as they are.
    public static func release() -> Released {
        var released = Released(bytes: 0, mappings: 0)
        guard let maps = readAll("/proc/self/maps") else { return released }
        let pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        guard pagemap >= 0 else { return released }
        defer { close(pagemap) }
        let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
        var entries = [UInt64](repeating: 0, count: 512)
        for mapping in candidates(maps: String(decoding: maps, as: UTF8.self)) {
            released.mappings += 1
            var address = mapping.start
            var runStart: UInt? = nil
            func flush(_ end: UInt) {
                guard let s = runStart, end > s else { return }
                if madvise(UnsafeMutableRawPointer(bitPattern: s), Int(end - s), MADV_DONTNEED) == 0 {
                    released.bytes += Int(end - s)
                }
                runStart = nil
            }
            while address < mapping.end {
                let count = min(entries.count, Int((mapping.end - address) / page))
                let wanted = count * 8
                let got = entries.withUnsafeMutableBytes { pread(pagemap, $0.baseAddress, wanted, off_t(address / page * 8)) }
                guard got == wanted else { break }
                for i in 0..<count {
                    let here = address + UInt(i) * page
                    if isPresentFilePage(entries[i]) {
                        if runStart == nil { runStart = here }
                    } else {
                        flush(here)
                    }
                }
                address += UInt(count) * page
            }
            flush(address)
        }
        return released
    }

    /// Gives the free memory at the top of glibc's heaps back to the system (malloc_trim(3)).
    @discardableResult
    public static func trimMalloc() -> Bool { glibcMallocTrim(0) == 1 }

    static func readAll(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return n == 0 ? out : nil }
            out.append(contentsOf: buffer[0..<n])
        }
    }
}

// malloc_trim is declared in <malloc.h>, which the Glibc module does not include.
@_silgen_name("malloc_trim") private func glibcMallocTrim(_ pad: Int) -> Int32
