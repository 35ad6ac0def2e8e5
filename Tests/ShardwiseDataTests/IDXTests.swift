import ShardwiseData
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The shared MNIST folder, or nil (the test then skips with a message).
func sharedMNIST() throws -> String {
    let candidates = ["../shared/datasets/mnist", "../../shared/datasets/mnist"]
    guard let folder = candidates.first(where: { access("\($0)/train-labels-idx1-ubyte.gz", R_OK) == 0 }) else {
        throw XCTSkip("../shared/datasets/mnist is absent; MNIST tests skipped")
    }
    return folder
}

final class IDXTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-idx-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let path = "\(folder)/\(name)"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    func idx(dimensions: [Int], magicDimensions: Int? = nil, data: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [0, 0, 8, UInt8(magicDimensions ?? dimensions.count)]
        for d in dimensions { bytes += [UInt8(d >> 24 & 255), UInt8(d >> 16 & 255), UInt8(d >> 8 & 255), UInt8(d & 255)] }
        return bytes + data
    }

    func expectError(_ body: () throws -> Void, containing text: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("expected an error containing '\(text)'", file: file, line: line)
        } catch {
            XCTAssert("\(error)".contains(text), "'\(error)' does not contain '\(text)'", file: file, line: line)
        }
    }

    func testRealMNISTLabelCounts() throws {
        let mnist = try MNIST.load(directory: try sharedMNIST())
        XCTAssertEqual(mnist.train.count, 60_000)
        XCTAssertEqual(mnist.test.count, 10_000)
        XCTAssertEqual(mnist.train.features, 784)
        XCTAssertEqual(mnist.train.labelCounts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
        XCTAssertEqual(mnist.test.labelCounts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
        XCTAssert((0..<mnist.train.count).allSatisfy { mnist.train.inputs(of: $0).allSatisfy { $0 >= 0 && $0 <= 1 } })
    }

    func testRawAndCompressedSmallFiles() throws {
        let images = write("img", idx(dimensions: [2, 2, 2], data: [0, 255, 51, 102, 1, 2, 3, 4]))
        let labels = write("lab", idx(dimensions: [2], data: [3, 9]))
        let set = try Dataset(imagesPath: images, labelsPath: labels, classes: 10)
        XCTAssertEqual(set.count, 2)
        XCTAssertEqual(set.features, 4)
        XCTAssertEqual([set.label(0), set.label(1)], [3, 9])
        XCTAssertEqual(set.inputs(of: 0)[1], 1)
        XCTAssertEqual(set.inputs(of: 0)[2], 0.2, accuracy: 1e-7)
        // The same files gzip-compressed read the same.
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-k", images, labels]
        try gzip.run()
        gzip.waitUntilExit()
        let compressed = try Dataset(imagesPath: images + ".gz", labelsPath: labels + ".gz", classes: 10)
        XCTAssertEqual(compressed.fingerprint, set.fingerprint)
    }

    func testWrongMagic() {
        let path = write("bad", idx(dimensions: [2], magicDimensions: 3, data: [1, 2]))
        expectError({ _ = try IDXFile(path: path, expectedDimensions: 1) }, containing: "wrong magic number 0x00000803, expected 0x00000801")
    }

    func testTruncatedRawFile() {
        let path = write("short", idx(dimensions: [3, 2, 2], data: [1, 2, 3, 4, 5]))
        expectError({ _ = try IDXFile(path: path, expectedDimensions: 3) }, containing: "truncated")
        let header = write("header", [0, 0, 8, 3, 0, 0])
        expectError({ _ = try IDXFile(path: header, expectedDimensions: 3) }, containing: "truncated")
    }

    func testTruncatedCompressedFile() throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: "\(try sharedMNIST())/t10k-labels-idx1-ubyte.gz"))
        let path = write("cut.gz", [UInt8](original.prefix(original.count / 2)))
        expectError({ _ = try IDXFile(path: path, expectedDimensions: 1) }, containing: "truncated")
    }

    func testTrailingData() {
        let path = write("long", idx(dimensions: [2], data: [1, 2, 3]))
        expectError({ _ = try IDXFile(path: path, expectedDimensions: 1) }, containing: "more data than the dimensions [2] describe")
    }

    func testCountMismatchAndLabelRange() {
        let images = write("img", idx(dimensions: [2, 1, 1], data: [0, 1]))
        let three = write("lab3", idx(dimensions: [3], data: [1, 2, 3]))
        expectError({ _ = try Dataset(imagesPath: images, labelsPath: three, classes: 10) }, containing: "has 3 labels, but \(images) has 2 images")
        let outOfRange = write("lab", idx(dimensions: [2], data: [1, 12]))
        expectError({ _ = try Dataset(imagesPath: images, labelsPath: outOfRange, classes: 10) }, containing: "label 12 at index 1 is out of range, expected 0...9")
    }

    func testMissingFiles() {
        expectError({ _ = try IDXFile(path: "\(folder)/nothing", expectedDimensions: 1) }, containing: "cannot open")
        expectError({ _ = try MNIST.load(directory: folder) }, containing: "train-images-idx3-ubyte.gz")
    }
}
