// FleetCore uses only what FoundationEssentials provides, so that the agent binary stays small.
#if canImport(FoundationEssentials)
    @_exported import FoundationEssentials
#else
    @_exported import Foundation
#endif

extension StringProtocol {
    /// Without leading and trailing ASCII white space (FoundationEssentials has no trimmingCharacters).
    public var trimmed: String {
        // ASCII white space only, "\r\n" (one Character) included; no-break spaces are content.
        let isSpace: (Character) -> Bool = { $0.isASCII && $0.isWhitespace }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}
