import Foundation
import XCTest

/// A library first: no module but the executable exits, installs a signal handler or
/// writes to standard output (STYLE.md, habit 10). The program does those at one place each.
final class LibraryBoundaryTests: XCTestCase {
    func testOnlyTheProgramExitsPrintsOrHandlesSignals() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources")
        let forbidden = try NSRegularExpression(
            pattern: #"(^|[^A-Za-z_.])(exit|_exit|abort|print|signal|sigaction|raise)\(|STDOUT_FILENO|FileHandle\.standardOutput|STDERR_FILENO|stdout\b|DispatchSource\.makeSignalSource"#)
        var checked = 0
        var found: [String] = []
        let files = FileManager.default.enumerator(atPath: sources.path)!.compactMap { $0 as? String }
        for file in files where file.hasSuffix(".swift") && !file.hasPrefix("ShardwiseCLI/") {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
                if forbidden.firstMatch(in: code, range: NSRange(code.startIndex..., in: code)) != nil { found.append("\(file):\(n + 1): \(line)") }
            }
            checked += 1
        }
        XCTAssertGreaterThan(checked, 40, "the library's sources were not found under \(sources.path)")
        XCTAssertEqual(found, [], "library code that exits, prints or handles signals:\n" + found.joined(separator: "\n"))
    }
}
