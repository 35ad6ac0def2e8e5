import Foundation
import XCTest

@testable import ShardwiseData

/// Text as token ids and the windows a language model trains on.
final class TokenDataTests: XCTestCase {
    var path = ""

    override func setUpWithError() throws {
        path = NSTemporaryDirectory() + "shardwise-tokens-\(getpid()).txt"
        try "abcab\ncé".write(toFile: path, atomically: true, encoding: .utf8)
    }

    override func tearDown() { unlink(path) }

    func testCharacterVocabularyAndWindows() throws {
        let stream = try TokenStream.text(path, tokenizer: .char)
        // Sorted by scalar value, as Python's sorted(set(text)): '\n' 'a' 'b' 'c' 'é'.
        XCTAssertEqual(stream.vocabulary.symbols, [0x0A, 0x61, 0x62, 0x63, 0xE9])
        XCTAssertEqual(stream.tokens(0..<stream.count), [1, 2, 3, 1, 2, 0, 3, 4])
        XCTAssertEqual(stream.vocabulary.decode(stream.tokens(0..<stream.count)), "abcab\ncé")
        // Windows of 3 over the first 6 ids: inputs ids i..<i+3, labels the next id of each.
        let windows = try stream.windows(0..<6, context: 3)
        XCTAssertEqual(windows.count, 3)
        XCTAssertEqual(windows.classes, 5)
        XCTAssertEqual(windows.targetWidth, 3)
        XCTAssertEqual(windows.outputWidth, 15)
        for i in 0..<3 {
            XCTAssertEqual(windows.inputs(of: i), stream.tokens(i..<i + 3).map(Float.init))
            var labels = [Int32](repeating: -1, count: 3)
            windows.copyLabels(i, into: &labels)
            XCTAssertEqual(labels.map(Int.init), stream.tokens(i + 1..<i + 4))
        }
        // A fixed evaluation set: windows every 3 ids of the range.
        let test = try stream.windows(2..<8, context: 2, stride: 2)
        XCTAssertEqual(test.count, 2)
        XCTAssertEqual(test.inputs(of: 1), stream.tokens(4..<6).map(Float.init))
        // Overlapping windows fingerprint their stream once; a shorter range another.
        XCTAssertEqual(windows.fingerprint, try stream.windows(0..<6, context: 3).fingerprint)
        XCTAssertNotEqual(windows.fingerprint, try stream.windows(0..<7, context: 3).fingerprint)
        XCTAssertThrowsError(try stream.windows(0..<3, context: 3)) {
            XCTAssert("\($0)".contains("3 tokens hold no window of 3 + 1 (--context 3)"), "\($0)")
        }
    }

    /// Ids tokenized elsewhere: nanoGPT's raw uint16 and llm.c's header, mapped; bad files refused.
    func testPreTokenizedFiles() throws {
        let ids: [UInt16] = [5, 0, 3, 7, 2, 7, 1]
        let raw = path + ".bin", llmc = path + ".llmc.bin"
        defer { unlink(raw); unlink(llmc) }
        FileManager.default.createFile(atPath: raw, contents: ids.withUnsafeBytes { Data($0) })
        var header = [Int32](repeating: 0, count: 256)
        (header[0], header[1], header[2]) = (20_240_520, 1, Int32(ids.count))
        FileManager.default.createFile(atPath: llmc, contents: header.withUnsafeBytes { Data($0) } + ids.withUnsafeBytes { Data($0) })
        for file in [raw, llmc] {
            let stream = try TokenStream.binary(file)
            XCTAssertEqual(stream.tokens(0..<stream.count), ids.map(Int.init), file)
            XCTAssertEqual(stream.vocabulary.size, 8, "the largest id plus one")
            XCTAssertEqual(stream.vocabulary.description, "8 token ids")
            let windows = try stream.windows(0..<7, context: 2)
            XCTAssertEqual(windows.inputs(of: 3), [7, 2])
            XCTAssertEqual(try TokenStream.binary(file, vocabularySize: 100).vocabulary.size, 100)
            XCTAssertThrowsError(try TokenStream.binary(file, vocabularySize: 7)) {
                XCTAssertEqual("\($0)", "\(file): id 7 at position 3, expected ids below the vocabulary's 7 (--vocabulary-size)")
            }
        }
        XCTAssertEqual(Vocabulary.ids(8).decode([3, 0]), " 3 0")
        XCTAssertEqual(try Vocabulary.ids(8).encode("3 0,7", path: "--prompt"), [3, 0, 7])
        XCTAssertThrowsError(try Vocabulary.ids(8).encode("3 9", path: "--prompt")) { XCTAssert("\($0)".contains("value 1 ('9') is not a token id of 0...7"), "\($0)") }
        // An odd byte count; an llm.c header declaring more ids than the file holds.
        FileManager.default.createFile(atPath: raw, contents: Data([1, 0, 2]))
        XCTAssertThrowsError(try TokenStream.binary(raw)) { XCTAssert("\($0)".contains("3 bytes, an odd count"), "\($0)") }
        header[2] = 1000
        FileManager.default.createFile(atPath: llmc, contents: header.withUnsafeBytes { Data($0) } + ids.withUnsafeBytes { Data($0) })
        XCTAssertThrowsError(try TokenStream.binary(llmc)) { XCTAssert("\($0)".contains("truncated: its header declares 1000 ids"), "\($0)") }
    }

    func testBytesAndGivenVocabularies() throws {
        let bytes = try TokenStream.text(path, tokenizer: .bytes)
        XCTAssertEqual(bytes.vocabulary.size, 256)
        XCTAssertEqual(bytes.count, 9)  // é is two bytes
        XCTAssertEqual(bytes.tokens(7..<9), [0xC3, 0xA9])
        XCTAssertEqual(bytes.vocabulary.decode(bytes.tokens(0..<9)), "abcab\ncé")
        // A model's vocabulary must be the file's own.
        let other = Vocabulary(kind: .char, symbols: [0x61, 0x62])
        XCTAssertThrowsError(try TokenStream.text(path, tokenizer: .char, vocabulary: other)) {
            XCTAssert("\($0)".contains("is not in the model's vocabulary of 2 characters"), "\($0)")
        }
        XCTAssertNil(Vocabulary.characters(of: "ba").problem)
        XCTAssertNotNil(Vocabulary(kind: .char, symbols: [0x62, 0x61]).problem)
        XCTAssertNotNil(Vocabulary(kind: .char, symbols: []).problem)
        let empty = NSTemporaryDirectory() + "shardwise-empty-\(getpid()).txt"
        FileManager.default.createFile(atPath: empty, contents: Data())
        defer { unlink(empty) }
        XCTAssertThrowsError(try TokenStream.text(empty, tokenizer: .char)) { XCTAssert("\($0)".contains("empty file"), "\($0)") }
    }
}
