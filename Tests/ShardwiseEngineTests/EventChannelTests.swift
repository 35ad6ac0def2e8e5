import XCTest

@testable import ShardwiseEngine

/// The channel a training task's events reach their consumer through, used from two threads at
/// once many times: every event arrives once, in order, then the end, or the error once. In
/// `make test` it also runs under ThreadSanitizer, which must see the channel's lock: with the
/// standard library's `Mutex` (taken inside uninstrumented code) it reported a race here.
final class EventChannelTests: XCTestCase {
    func testEveryEventArrivesOnceInOrderThenTheEndOrTheError() async throws {
        struct Failure: Error {}
        for round in 0..<400 {
            let channel = EventChannel()
            let count = round % 6, fails = round % 5 == 0
            let producer = Task.detached {
                for k in 0..<count { channel.send(.checkpoint(path: "", globalStep: k, kind: .scheduled)) }
                channel.finish(throwing: fails ? Failure() : nil)
            }
            var received: [Int] = [], failed = false
            do {
                while let event = try await channel.receive() {
                    if case .checkpoint(_, let step, _) = event { received.append(step) }
                }
            } catch is Failure { failed = true }
            await producer.value
            XCTAssertEqual(received, Array(0..<count), "round \(round)")
            XCTAssertEqual(failed, fails, "round \(round)")
            if fails {
                let after = try await channel.receive()
                XCTAssertNil(after, "the error is thrown once, round \(round)")
            }
        }
    }
}
