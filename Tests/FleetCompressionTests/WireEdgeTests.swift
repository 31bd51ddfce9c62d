import Testing
@testable import FleetCompression
import FleetIO

/// The builder's edge over FleetIO: a protobuf fault past the end of the file is a cut file
/// (`.truncated`), past the end of an enclosing field a malformed one.
@Suite struct WireEdgeTests {
    @Test func pastTheEndOfTheFileIsTruncatedOfAFieldMalformed() {
        let e = ProtobufWireError(.pastEnd, offset: 3, field: 7)
        #expect(CompressionError(e, what: "model", walkedToEnd: true).code == .truncated)
        #expect(CompressionError(e, what: "model", walkedToEnd: false).code == .malformed)
        #expect(CompressionError(e, what: "model", walkedToEnd: true).offset == 3)
        #expect(CompressionError(ProtobufWireError(.overlongVarint, offset: 0), what: "model", walkedToEnd: true).code == .malformed)
    }
}
