import Foundation
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Training on the user's own files: scikit-learn's real data sets in every format, the same
/// weights from every format and worker count, regression, prediction, and bad files refused
/// with one line naming the file, the place and what was expected.
final class OwnDataTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-own-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    func shardwise(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) { try runShardwise(arguments) }

    /// scikit-learn's data sets exported by Tests/python/export_sklearn.py (Debian's python3-sklearn), or a skip.
    func exportSklearn() throws -> String {
        let out = "\(folder)/sklearn"
        for python in ["/usr/bin/python3", "python3"] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [python, "Tests/python/export_sklearn.py", out]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            if process.terminationStatus == 0 { return out }
        }
        throw XCTSkip("scikit-learn is missing (Debian's python3-sklearn; make test installs it)")
    }

    func summary(_ out: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(out)/summary.json"))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// digits (10 classes), breast cancer (2 classes) and diabetes (regression): every format
    /// (CSV, NPY pair, safetensors, deflated NPZ) gives the same weights, with 1 or 2 workers;
    /// the errors are those of a working model.
    func testSklearnDataSetsInEveryFormatGiveTheSameWeights() throws {
        let sk = try exportSklearn()
        let cases: [(name: String, flags: [String], limit: Double)] = [
            ("digits", ["--layers", "128,128", "--epochs", "20"], 8),
            ("cancer", ["--layers", "64,64", "--epochs", "20"], 10),
            ("diabetes", ["--layers", "64,64", "--epochs", "40", "--lr", "0.01"], 70),
        ]
        for (name, flags, limit) in cases {
            let common = flags + ["--batch-size", "32", "--shard-size", "16", "--normalize", "standard"]
            let formats: [(data: String, test: String, workers: String)] = [
                ("\(sk)/\(name)-train.csv", "\(sk)/\(name)-test.csv", "2"),
                ("\(sk)/\(name)-train-x.npy,\(sk)/\(name)-train-y.npy", "\(sk)/\(name)-test-x.npy,\(sk)/\(name)-test-y.npy", "1"),
                ("\(sk)/\(name)-train.safetensors", "\(sk)/\(name)-test.safetensors", "2"),
                ("\(sk)/\(name)-train-deflated.npz", "\(sk)/\(name)-test.npz", "1"),
            ]
            var hashes: [String] = []
            for (k, format) in formats.enumerated() {
                let out = "\(folder)/\(name)-\(k)"
                let run = try shardwise(["train", "--data", format.data, "--test-data", format.test, "--workers", format.workers, "--out", out] + common)
                XCTAssertEqual(run.status, 0, "\(name) \(format.data): \(run.error)")
                let s = try summary(out)
                hashes.append(s["weights_sha256"] as? String ?? "")
                let figure = (s["final_test_error_percent"] ?? s["final_test_rmse"]) as? Double ?? .infinity
                XCTAssertLessThan(figure, limit, "\(name): \(s["metric"] ?? "?") \(figure)")
                XCTAssertEqual(s["task"] as? String, name == "diabetes" ? "regression" : "classification")
            }
            XCTAssertEqual(Set(hashes).count, 1, "\(name): \(hashes)")
        }
    }

    /// The README's path: a CSV, a model, predictions for rows without the target column that
    /// agree with `eval`; the CSV's parsed copy is reused by the next run.
    func testPredictFromCSVAgreesWithEval() throws {
        let sk = try exportSklearn()
        let out = "\(folder)/digits"
        let train = try shardwise(["train", "--data", "\(sk)/digits-train.csv", "--test-fraction", "0.2", "--layers", "64", "--epochs", "5", "--batch-size", "32", "--shard-size", "16", "--out", out])
        XCTAssertEqual(train.status, 0, train.error)
        XCTAssert(train.output.contains("parsed 1347 rows"), train.output)
        // Rows without the target column: predicted classes; their error against the labels is eval's.
        let csv = try String(contentsOfFile: "\(sk)/digits-test.csv", encoding: .utf8).split(separator: "\n")
        let labels = csv.dropFirst().map { Int($0.split(separator: ",").last!)! }
        try (csv.map { $0.split(separator: ",").dropLast().joined(separator: ",") }.joined(separator: "\n") + "\n")
            .write(toFile: "\(folder)/new.csv", atomically: true, encoding: .utf8)
        let predict = try shardwise(["predict", "--checkpoint", out, "--data", "\(folder)/new.csv", "--out", "\(folder)/p.csv"])
        XCTAssertEqual(predict.status, 0, predict.error)
        let rows = try String(contentsOfFile: "\(folder)/p.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(rows.first, "class," + (0..<10).map { "p\($0)" }.joined(separator: ","))
        XCTAssertEqual(rows.count, labels.count + 1)
        let wrong = zip(rows.dropFirst(), labels).filter { Int($0.0.split(separator: ",")[0])! != $0.1 }.count
        let eval = try shardwise(["eval", "--checkpoint", out, "--data", "\(sk)/digits-test.csv"])
        XCTAssertEqual(eval.status, 0, eval.error)
        XCTAssert(eval.output.contains(String(format: "test error %.2f%% on %d samples", 100 * Double(wrong) / Double(labels.count), labels.count)), eval.output)
        for row in rows.dropFirst() {
            let p = row.split(separator: ",").dropFirst().map { Double($0)! }
            XCTAssertEqual(p.reduce(0, +), 1, accuracy: 1e-5)
        }
        // The second run maps the cached copy instead of parsing.
        let again = try shardwise(["train", "--data", "\(sk)/digits-train.csv", "--test-fraction", "0.2", "--layers", "64", "--epochs", "1", "--batch-size", "32", "--shard-size", "16"])
        XCTAssertEqual(again.status, 0, again.error)
        XCTAssertFalse(again.output.contains("parsed"), again.output)
    }

    // MARK: - Bad data: one line, the file, the place, what was expected; exit status 1.

    func write(_ name: String, _ text: String) -> String {
        let path = "\(folder)/\(name)"
        XCTAssert(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        return path
    }

    func writeNPY(_ name: String, type: ElementType, shape: [Int], body: [UInt8]) -> String {
        let path = "\(folder)/\(name)"
        XCTAssert(FileManager.default.createFile(atPath: path, contents: Data(NPY.encodeHeader(type: type, shape: shape) + body)))
        return path
    }

    func floats(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
    func longs(_ values: [Int64]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    func assertRefused(_ arguments: [String], mentions parts: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try shardwise(["train", "--epochs", "1", "--batch-size", "2", "--shard-size", "1", "--layers", "4", "--cache-dir", "\(folder)/cache"] + arguments)
        XCTAssertEqual(result.status, 1, "\(arguments): \(result.error)", file: file, line: line)
        let lines = result.error.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, result.error, file: file, line: line)
        for part in parts { XCTAssert(result.error.contains(part), "'\(result.error)' lacks '\(part)'", file: file, line: line) }
    }

    func testBadDataIsRefusedWithTheFileAndThePlace() throws {
        let good = write("good.csv", "a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
        try assertRefused(["--data", write("ragged.csv", "a,b,y\n1,2,0\n3,4\n")], mentions: ["ragged.csv: line 3: has 2 fields, the header has 3"])
        try assertRefused(["--data", write("text.csv", "a,b,y\n1,2,0\n3,abc,1\n")], mentions: ["text.csv: line 3: column 2 ('b'): 'abc' is not a number"])
        try assertRefused(["--data", write("nan.csv", "a,b,y\n1,2,0\n3,nan,1\n")], mentions: ["nan.csv: line 3: column 2 ('b'): 'nan' is not a finite number"])
        try assertRefused(["--data", write("empty.csv", "")], mentions: ["empty.csv: empty file"])
        try assertRefused(["--data", write("header.csv", "a,b,y\n")], mentions: ["header.csv: a header and no data rows"])
        try assertRefused(["--data", write("crlf.csv", "\u{FEFF}a,b,y\r\n1,2,0\r\n\r\n3,x,1\r\n")], mentions: ["crlf.csv: line 4: column 2 ('b'): 'x' is not a number"])
        try assertRefused(["--data", good, "--label-column", "z"], mentions: ["good.csv: no column named 'z' (--label-column)"])
        try assertRefused(["--data", good, "--task", "classification", "--test-data", write("range.csv", "a,b,y\n1,2,5\n")], mentions: ["range.csv: labels up to 5, the training data has 2 classes"])
        try assertRefused(["--data", write("half.csv", "a,b,y\n1,2,0.5\n3,4,1\n"), "--task", "classification"], mentions: ["label 0.5 at sample 0 is not a class number"])
        try assertRefused(["--data", good, "--test-data", write("wide.csv", "a,b,c,y\n1,2,3,0\n")], mentions: ["wide.csv: 3 features per sample, the training data", "has 2; expected the same"])
        // NPY: a truncated body, a shape that claims more than is there, NaN features, Fortran order, counts that differ.
        let labels = writeNPY("y.npy", type: .int64, shape: [4], body: longs([0, 1, 0, 1]))
        let truncated = writeNPY("cut.npy", type: .float32, shape: [4, 2], body: Array(floats([1, 2, 3, 4, 5, 6, 7, 8]).prefix(20)))
        try assertRefused(["--data", "\(truncated),\(labels)"], mentions: ["cut.npy: truncated: shape (4, 2) of float32 needs 32 bytes of values, the array has 20"])
        let lying = writeNPY("lie.npy", type: .float32, shape: [400, 2], body: floats([1, 2, 3, 4, 5, 6, 7, 8]))
        try assertRefused(["--data", "\(lying),\(labels)"], mentions: ["lie.npy: truncated: shape (400, 2)"])
        let nan = writeNPY("nan.npy", type: .float32, shape: [4, 2], body: floats([1, 2, 3, .nan, 5, 6, 7, 8]))
        try assertRefused(["--data", "\(nan),\(labels)"], mentions: ["nan.npy: feature 1 of sample 1 is nan, expected a finite number"])
        let infinite = writeNPY("inf.npy", type: .float32, shape: [4, 2], body: floats([1, 2, 3, 4, 5, .infinity, 7, 8]))
        try assertRefused(["--data", "\(infinite),\(labels)"], mentions: ["inf.npy: feature 1 of sample 2 is inf"])
        let three = writeNPY("x3.npy", type: .float32, shape: [3, 2], body: floats([1, 2, 3, 4, 5, 6]))
        try assertRefused(["--data", "\(three),\(labels)"], mentions: ["y.npy: 4 targets for 3 samples in", "expected one per sample"])
        var fortran = NPY.encodeHeader(type: .float32, shape: [4, 2])
        let at = try XCTUnwrap((0..<fortran.count).first { fortran[$0...].starts(with: Array("False".utf8)) })
        fortran.replaceSubrange(at..<at + 5, with: Array("True ".utf8))
        XCTAssert(FileManager.default.createFile(atPath: "\(folder)/f.npy", contents: Data(fortran + floats([1, 2, 3, 4, 5, 6, 7, 8]))))
        try assertRefused(["--data", "\(folder)/f.npy,\(labels)"], mentions: ["f.npy: array stored in Fortran (column-major) order; expected C order"])
        // NPZ without the named array.
        let npz = try makeNPZ()
        try assertRefused(["--data", npz, "--features", "pixels"], mentions: ["no array named 'pixels' (--features); it holds 'x', 'y'"])
    }

    /// `--labels FILE.npy` beside a features NPY trains as the pair `X.npy,Y.npy` does.
    func testLabelsFileBesideAFeaturesNPY() throws {
        let x = writeNPY("fx.npy", type: .uint8, shape: [64, 2, 2], body: (0..<256).map { UInt8($0 % 251) })
        let y = writeNPY("fy.npy", type: .int64, shape: [64], body: longs((0..<64).map { Int64($0 % 3) }))
        let flags = ["train", "--epochs", "2", "--batch-size", "8", "--shard-size", "4", "--layers", "6", "--workers", "1"]
        let pair = try shardwise(flags + ["--data", "\(x),\(y)"])
        let named = try shardwise(flags + ["--data", x, "--labels", y])
        XCTAssertEqual(pair.status, 0, pair.error)
        XCTAssertEqual(named.status, 0, named.error)
        XCTAssert(named.output.contains("classification, 3 classes; inputs scale:255"), named.output)
        XCTAssertEqual(pair.output.split(separator: "\n").last, named.output.split(separator: "\n").last)
    }

    /// A stored NPZ of x (4, 2) float32 and y (4) int64, written with numpy when it is there, else by hand.
    func makeNPZ() throws -> String {
        let path = "\(folder)/a.npz"
        let x = NPY.encodeHeader(type: .float32, shape: [4, 2]) + floats([1, 2, 3, 4, 5, 6, 7, 8])
        let y = NPY.encodeHeader(type: .int64, shape: [4]) + longs([0, 1, 0, 1])
        var archive: [UInt8] = [], directory: [UInt8] = []
        func le(_ v: Int, _ bytes: Int) -> [UInt8] { (0..<bytes).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        for (name, body) in [("x.npy", x), ("y.npy", y)] {
            let offset = archive.count
            let crc = body.withUnsafeBufferPointer { Int(crc32Of($0)) }
            let common = le(20, 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(crc, 4) + le(body.count, 4) + le(body.count, 4) + le(name.utf8.count, 2) + le(0, 2)
            archive += [0x50, 0x4B, 0x03, 0x04] + common + Array(name.utf8) + body
            directory += [0x50, 0x4B, 0x01, 0x02] + le(20, 2) + common + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(offset, 4) + Array(name.utf8)
        }
        let end = [0x50, 0x4B, 0x05, 0x06] + le(0, 2) + le(0, 2) + le(2, 2) + le(2, 2) + le(directory.count, 4) + le(archive.count, 4) + le(0, 2)
        XCTAssert(FileManager.default.createFile(atPath: path, contents: Data(archive + directory + end)))
        return path
    }

    func crc32Of(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }

    /// A hand-made NPZ reads as numpy's: the arrays by name, the same data set.
    func testStoredNPZReads() throws {
        let set = try Dataset.load(binary: try makeNPZ(), request: DataRequest())
        XCTAssertEqual(set.count, 4)
        XCTAssertEqual(set.features, 2)
        XCTAssertEqual(set.task, .classification)
        XCTAssertEqual(set.classes, 2)
        XCTAssertEqual(set.inputs(of: 2), [5, 6])
        XCTAssertEqual((0..<4).map { set.label($0) }, [0, 1, 0, 1])
    }
}
