import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The parsed-CSV cache under the real executable: a CSV replaced in place with the same size
/// and modification time, or renamed over, is parsed again; runs that start while the CSV is
/// being replaced each train on the data they read; the cache never ends holding one file's
/// arrays under another's key.
final class CSVCacheTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-csvcache-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    /// A CSV of `rows` rows of three features and a 0/1 label, each cell written with three
    /// decimals, so two tables of one row count have the same size.
    func table(rows: Int, seed: UInt64) -> String {
        var state = seed
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(state >> 33)
        }
        var lines = ["a,b,c,y"]
        for _ in 0..<rows {
            lines.append((0..<3).map { _ in String(format: "0.%03d", next() % 1000) }.joined(separator: ",") + ",\(next() % 2)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    struct Run {
        var parsed: Bool
        var samples: Int
        var hash: String
    }

    /// Starts one epoch on `data` with the cache in `cache`.
    func start(_ data: String, cache: String) throws -> (process: Process, output: Pipe, error: Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: shardwiseExecutable)
        process.arguments = ["train", "--data", data, "--epochs", "1", "--batch-size", "4", "--shard-size", "2",
                             "--layers", "4", "--workers", "1", "--cache-dir", cache]
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        return (process, output, error)
    }

    /// A started run's end: whether it parsed, how many training samples it used, the weights' hash.
    func finish(_ run: (process: Process, output: Pipe, error: Pipe)) -> Run {
        let output = String(decoding: run.output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let error = String(decoding: run.error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        run.process.waitUntilExit()
        XCTAssertEqual(run.process.terminationStatus, 0, error)
        let samples = output.firstMatch(of: /(\d+) training \/ 0 test samples/).map { Int($0.1)! } ?? -1
        let hash = output.firstMatch(of: /weights sha256 ([0-9a-f]{64})/).map { String($0.1) } ?? "none"
        return Run(parsed: output.contains(": parsed "), samples: samples, hash: hash)
    }

    func train(_ data: String, cache: String) throws -> Run { finish(try start(data, cache: cache)) }

    /// The weights a run gets on `text` with a cache of its own (never shared).
    func reference(_ text: String, name: String) throws -> String {
        let path = "\(folder)/reference-\(name).csv"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        let run = try train(path, cache: "\(folder)/cache-\(name)")
        XCTAssert(run.parsed)
        return run.hash
    }

    func modificationTime(_ path: String) -> timespec {
        var info = stat()
        XCTAssertEqual(stat(path, &info), 0)
        return info.st_mtim
    }

    /// Sets `path`'s access and modification times to `time` (what `touch -r` does).
    func setModificationTime(_ path: String, _ time: timespec) {
        var times = [time, time]
        XCTAssertEqual(utimensat(AT_FDCWD, path, &times, 0), 0)
    }

    func testReplacedCSVWithTheSameSizeAndTimeIsParsedAgain() throws {
        let a = table(rows: 300, seed: 1), b = table(rows: 300, seed: 2)
        XCTAssertEqual(a.utf8.count, b.utf8.count)
        let (hashA, hashB) = (try reference(a, name: "a"), try reference(b, name: "b"))
        XCTAssertNotEqual(hashA, hashB)
        let data = "\(folder)/d.csv", cache = "\(folder)/cache"
        try a.write(toFile: data, atomically: false, encoding: .utf8)
        let first = try train(data, cache: cache)
        XCTAssert(first.parsed)
        XCTAssertEqual(first.hash, hashA)
        XCTAssertFalse(try train(data, cache: cache).parsed, "the unchanged file is read from the cache")

        // Rewritten in place (same inode), same size, modification time put back.
        let time = modificationTime(data)
        try b.write(toFile: data, atomically: false, encoding: .utf8)
        setModificationTime(data, time)
        let rewritten = try train(data, cache: cache)
        XCTAssert(rewritten.parsed, "a changed file is parsed again")
        XCTAssertEqual(rewritten.hash, hashB)
        let cached = try train(data, cache: cache)
        XCTAssertFalse(cached.parsed)
        XCTAssertEqual(cached.hash, hashB, "the cache holds the new file's arrays")

        // Renamed over (a new inode), same size and time.
        try a.write(toFile: "\(folder)/next.csv", atomically: false, encoding: .utf8)
        setModificationTime("\(folder)/next.csv", time)
        XCTAssertEqual(rename("\(folder)/next.csv", data), 0)
        let renamed = try train(data, cache: cache)
        XCTAssert(renamed.parsed)
        XCTAssertEqual(renamed.hash, hashA)
    }

    /// Two runs start while the CSV is replaced between them (300 rows, then 200, and back):
    /// each trains on the table it read, whole (its sample count and weights are that table's),
    /// and a run after them trains on the file as it is then, from the cache they left.
    func testConcurrentRunsWhileTheCSVIsReplaced() throws {
        let tables = [table(rows: 300, seed: 3), table(rows: 200, seed: 4)]
        let expected = [300: try reference(tables[0], name: "300"), 200: try reference(tables[1], name: "200")]
        let data = "\(folder)/d.csv", cache = "\(folder)/cache"
        try tables[0].write(toFile: data, atomically: false, encoding: .utf8)
        for round in 0..<4 {
            let next = tables[(round + 1) % 2]
            let first = try start(data, cache: cache)
            // Replaced (written aside, renamed over) while the first run starts, then the second.
            try next.write(toFile: "\(folder)/next.csv", atomically: false, encoding: .utf8)
            XCTAssertEqual(rename("\(folder)/next.csv", data), 0)
            let second = try start(data, cache: cache)
            for run in [finish(first), finish(second)] {
                XCTAssertEqual(run.hash, expected[run.samples], "round \(round): \(run.samples) samples trained to another table's weights")
            }
            let after = try train(data, cache: cache)
            XCTAssertEqual(after.samples, next == tables[0] ? 300 : 200, "round \(round)")
            XCTAssertEqual(after.hash, expected[after.samples], "round \(round): the cache left stale arrays")
        }
    }
}
