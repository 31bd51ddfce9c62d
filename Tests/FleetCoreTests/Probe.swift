import Testing
@testable import FleetCore

@Test func probeExit() async {
    await withKnownIssue("trap") {
        await #expect(processExitsWith: .success) { _ = ByteCount.parse("1e30G") }
    }
}
