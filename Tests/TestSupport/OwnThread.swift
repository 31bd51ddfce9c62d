import Foundation
import Testing

/// For suites of blocking tests (real processes, `usleep` polling, waits on pipes): each test runs
/// on a thread of its own instead of one of the cooperative pool's, which has as many threads as
/// the machine has cores (two here). A blocking test held one of them for its whole run, and two
/// held every async test, in-process server and `Task.sleep` in the run still for as long — the
/// kind of stall that let a deadline pass with the awaited message sitting in its socket. At most
/// `BlockingTestSlots.limit` such tests run at once (the pool's width used to bound them, by
/// accident); the others wait for a slot without holding a thread.
public struct OwnThread: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        await BlockingTestSlots.shared.acquire()
        do {
            try await withTaskExecutorPreference(DedicatedExecutor(label: "test." + test.name)) { try await function() }
        } catch {
            await BlockingTestSlots.shared.release()
            throw error
        }
        await BlockingTestSlots.shared.release()
    }
}

extension Trait where Self == OwnThread {
    /// Run each test of this suite on a thread of its own (see `OwnThread`).
    public static var ownThread: OwnThread { OwnThread() }
}

/// A counting semaphore for `OwnThread`: waiting for a slot suspends, it never blocks a thread.
public actor BlockingTestSlots {
    public static let shared = BlockingTestSlots(limit: max(2, ProcessInfo.processInfo.activeProcessorCount))

    public let limit: Int
    private var inUse = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    public init(limit: Int) { self.limit = limit }

    public func acquire() async {
        if inUse < limit {
            inUse += 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    public func release() {
        if waiting.isEmpty {
            inUse -= 1
        } else {
            waiting.removeFirst().resume()  // the slot passes straight to the next test
        }
    }
}
