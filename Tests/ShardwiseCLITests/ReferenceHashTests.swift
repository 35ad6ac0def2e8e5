import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The README promises the exact weights every user gets from the default build on any x86-64
/// CPU. This holds the default kernels' arithmetic to it: one epoch of the reference recipe on
/// the full MNIST training set must end with the hash the README prints for it. A change that
/// alters the default bits fails here and must update the README (both its hashes) on purpose.
final class ReferenceHashTests: XCTestCase {
    /// `shardwise train --epochs 1` with every other setting the reference recipe's (portable kernels).
    static let oneEpochHash = "5a742096ce2f0b3840ff5ffff1eab07b3deed4879f29f9b8ce6b60d696c63112"

    func testOneEpochOfTheReferenceRecipeGivesTheREADMEsWeights() throws {
        let data = try sharedMNIST()
        let out = NSTemporaryDirectory() + "reference-hash-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runShardwise(["train", "--data", data, "--epochs", "1", "--out", out])
        XCTAssertEqual(result.status, 0, result.error)
        let last = result.output.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssert(result.output.contains("portable"), "the default kernels are the portable ones: \(result.output.prefix(400))")
        XCTAssert(last.hasSuffix("weights sha256 \(Self.oneEpochHash)"), "the default bits changed: '\(last)'; if on purpose, update README.md's hashes and this test")
        // The README states this hash beside the full recipe's.
        let readme = try String(contentsOfFile: "README.md", encoding: .utf8)
        XCTAssert(readme.contains(Self.oneEpochHash), "README.md does not state the one-epoch hash \(Self.oneEpochHash)")
    }
}
