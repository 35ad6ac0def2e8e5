import Foundation
import XCTest

/// A library first: no module but the executable exits, installs a signal handler or
/// writes to standard output (STYLE.md, habit 10). The program does those at one place each.
final class LibraryBoundaryTests: XCTestCase {
    /// The lines (comments cut) of the files under Sources/ that `include` takes which match
    /// `pattern`, as "file:line: text", and how many files were read.
    func scan(_ include: (String) -> Bool, _ pattern: String) throws -> (checked: Int, found: [String], sources: String) {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources")
        let forbidden = try NSRegularExpression(pattern: pattern)
        var checked = 0
        var found: [String] = []
        let files = FileManager.default.enumerator(atPath: sources.path)!.compactMap { $0 as? String }
        for file in files where include(file) {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
                if forbidden.firstMatch(in: code, range: NSRange(code.startIndex..., in: code)) != nil { found.append("\(file):\(n + 1): \(line)") }
            }
            checked += 1
        }
        return (checked, found, sources.path)
    }

    func testOnlyTheProgramExitsPrintsOrHandlesSignals() throws {
        let result = try scan(
            { $0.hasSuffix(".swift") && !$0.hasPrefix("ShardwiseCLI/") },
            #"(^|[^A-Za-z_.])(exit|_exit|abort|print|signal|sigaction|raise)\(|STDOUT_FILENO|FileHandle\.standardOutput|STDERR_FILENO|stdout\b|DispatchSource\.makeSignalSource"#)
        XCTAssertGreaterThan(result.checked, 40, "the library's sources were not found under \(result.sources)")
        XCTAssertEqual(result.found, [], "library code that exits, prints or handles signals:\n" + result.found.joined(separator: "\n"))
    }

    /// The C shims under the Swift modules hold to the same: they report through return values
    /// and error buffers (`snprintf` into the caller's), never `fprintf` + `abort`. Ending an MPI
    /// job (`MPI_Abort`) is a function the program calls, not something a shim decides.
    func testTheCShimsNeitherPrintNorEndTheProcess() throws {
        let result = try scan(
            { $0.hasPrefix("C") && ($0.hasSuffix(".c") || $0.hasSuffix(".h")) },
            #"(^|[^A-Za-z_])(printf|fprintf|vfprintf|puts|fputs|putchar|perror|write|abort|exit|_exit|quick_exit|signal|sigaction|raise|assert)\(|\bstdout\b|\bstderr\b|STDOUT_FILENO|STDERR_FILENO"#)
        XCTAssertGreaterThanOrEqual(result.checked, 7, "the C shims were not found under \(result.sources)")
        XCTAssertEqual(result.found, [], "C shim code that prints or ends the process:\n" + result.found.joined(separator: "\n"))
    }
}
