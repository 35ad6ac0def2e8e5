import ShardwiseKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How text becomes token ids for a language model: its characters, or its bytes.
///
/// `char`: one id per distinct character (Unicode scalar) of the text, in ascending order of
/// scalar value, as nanoGPT's `sorted(set(text))`; the checkpoint stores the list, so `generate`
/// and evaluation map ids back to the same characters. `bytes`: the 256 byte values of any file.
/// `uint16`: ids tokenized elsewhere (nanoGPT's `train.bin`, llm.c's `.bin`), `idCount` of them,
/// with no text: `generate` reads and writes the numbers.
public struct Vocabulary: Codable, Sendable, Equatable, CustomStringConvertible {
    /// The two tokenizers.
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case char, bytes, uint16
    }

    /// Which tokenizer.
    public let kind: Kind
    /// `char`: the characters' scalar values in id order; `bytes`: empty.
    public let symbols: [UInt32]
    /// `uint16`: the ids are `0..<idCount`; nil otherwise.
    public var idCount: Int?

    /// The 256 byte values.
    public static let bytes = Vocabulary(kind: .bytes, symbols: [])

    /// A vocabulary of `kind` over `symbols` (char: distinct scalar values in ascending order).
    public init(kind: Kind, symbols: [UInt32]) {
        self.kind = kind
        self.symbols = symbols
    }

    /// Pre-tokenized ids `0..<count`.
    public static func ids(_ count: Int) -> Vocabulary {
        var vocabulary = Vocabulary(kind: .uint16, symbols: [])
        vocabulary.idCount = count
        return vocabulary
    }

    /// The distinct characters of `text`, ascending.
    public static func characters(of text: String) -> Vocabulary {
        var seen = Set<UInt32>()
        for scalar in text.unicodeScalars { seen.insert(scalar.value) }
        return Vocabulary(kind: .char, symbols: seen.sorted())
    }

    /// V: the ids are `0..<size`.
    public var size: Int {
        switch kind {
        case .char: symbols.count
        case .bytes: 256
        case .uint16: idCount ?? 0
        }
    }

    /// "65 characters", "256 byte values" or "50257 token ids".
    public var description: String {
        switch kind {
        case .char: "\(symbols.count) characters"
        case .bytes: "256 byte values"
        case .uint16: "\(size) token ids"
        }
    }

    /// What makes a stored vocabulary unusable (a checkpoint's), or nil.
    public var problem: String? {
        switch kind {
        case .bytes: return symbols.isEmpty ? nil : "a byte vocabulary lists no characters, found \(symbols.count)"
        case .uint16:
            guard symbols.isEmpty, let n = idCount, (1...Self.maxSize).contains(n) else { return "pre-tokenized ids: \(idCount.map(String.init) ?? "no") id count, expected 1...\(Self.maxSize)" }
            return nil
        case .char:
            guard !symbols.isEmpty, symbols.count <= Self.maxSize else { return "\(symbols.count) characters, expected 1...\(Self.maxSize)" }
            guard zip(symbols, symbols.dropFirst()).allSatisfy({ $0 < $1 }), symbols.allSatisfy({ Unicode.Scalar($0) != nil }) else {
                return "characters not distinct scalar values in ascending order"
            }
            return nil
        }
    }

    /// Ids are stored as 16-bit values.
    public static let maxSize = 1 << 16

    /// The ids of `text` (`path` names it in errors): a character outside the vocabulary is refused by position.
    public func encode(_ text: String, path: String) throws(DataError) -> [UInt16] {
        switch kind {
        case .bytes:
            return text.utf8.map { UInt16($0) }
        case .uint16:
            // Numbers separated by spaces or commas.
            var ids: [UInt16] = []
            for (k, word) in text.split(whereSeparator: { $0 == " " || $0 == "," || $0.isNewline }).enumerated() {
                guard let id = Int(word), (0..<size).contains(id) else {
                    throw DataError(path: path, problem: "value \(k) ('\(word.prefix(20))') is not a token id of 0...\(size - 1)")
                }
                ids.append(UInt16(id))
            }
            return ids
        case .char:
            var ids: [UInt16] = []
            ids.reserveCapacity(text.utf8.count)
            var index: [UInt32: UInt16] = [:]
            for (i, s) in symbols.enumerated() { index[s] = UInt16(i) }
            for (position, scalar) in text.unicodeScalars.enumerated() {
                guard let id = index[scalar.value] else {
                    throw DataError(path: path, problem: "character \(position) (\(scalar.escaped(asASCII: true))) is not in the model's vocabulary of \(description)")
                }
                ids.append(id)
            }
            return ids
        }
    }

    /// The text of `ids` (bytes: decoded as UTF-8, invalid sequences as U+FFFD).
    public func decode(_ ids: [Int]) -> String {
        switch kind {
        case .bytes:
            return String(decoding: ids.map { UInt8(truncatingIfNeeded: $0) }, as: UTF8.self)
        case .uint16:
            return ids.map { " \($0)" }.joined()
        case .char:
            var text = String.UnicodeScalarView()
            for id in ids where id >= 0 && id < symbols.count { text.append(Unicode.Scalar(symbols[id])!) }
            return String(text)
        }
    }
}

/// A stream of token ids (16-bit, in memory), and the windows a language model trains on.
public struct TokenStream: Sendable {
    /// How the ids map to text.
    public let vocabulary: Vocabulary
    /// The ids, as 16-bit values from byte `offset`.
    public let ids: TableBytes
    public var offset = 0
    /// How many ids.
    public let count: Int
    /// The file, for messages.
    public let source: String

    /// The text file at `path` as ids of `vocabulary` (nil: a character vocabulary built from
    /// the file, or the byte values). Read once into memory: its bytes and 2 bytes an id must
    /// fit in the memory available.
    public static func text(_ path: String, tokenizer: Vocabulary.Kind, vocabulary given: Vocabulary? = nil) throws(DataError) -> TokenStream {
        if tokenizer == .uint16 { return try binary(path, vocabularySize: given?.idCount) }
        let (fd, size) = try RegularFile.open(path)
        defer { close(fd) }
        guard size > 0 else { throw DataError(path: path, problem: "empty file (0 bytes), expected text to train on") }
        let budget = MemoryBudget.current()
        if let need = CheckedSize.product([size, 3]), need > budget.bytes {
            throw DataError(path: path, problem: "\(MemoryBudget.format(size)) of text need \(MemoryBudget.format(need)) as bytes and ids, more than the \(budget) available")
        }
        var bytes = [UInt8](repeating: 0, count: size)
        var read = 0
        while read < size {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + read, size - read, off_t(read)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw DataError(path: path, problem: "cannot be read (\(n < 0 ? String(cString: strerror(errno)) : "ended early"))") }
            read += n
        }
        let ids: [UInt16]
        let vocabulary: Vocabulary
        switch tokenizer {
        case .bytes, .uint16:  // uint16 returned above
            vocabulary = .bytes
            ids = bytes.map { UInt16($0) }
        case .char:
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw DataError(path: path, problem: "not UTF-8 text, expected text for --tokenizer char (or --tokenizer bytes for any file)")
            }
            vocabulary = given ?? Vocabulary.characters(of: text)
            guard vocabulary.size <= Vocabulary.maxSize else {
                throw DataError(path: path, problem: "\(vocabulary.size) distinct characters, expected at most \(Vocabulary.maxSize) (ids are 16-bit)")
            }
            ids = try vocabulary.encode(text, path: path)
        }
        if let given, given != vocabulary {
            throw DataError(path: path, problem: "tokenized with \(vocabulary), the model's vocabulary is \(given)")
        }
        let storage = TableBytes(allocating: ids.count * 2)
        ids.withUnsafeBytes { storage.mutableBase!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return TokenStream(vocabulary: vocabulary, ids: storage, count: ids.count, source: path)
    }

    /// A file of ids tokenized elsewhere, mapped (a corpus larger than memory trains): llm.c's
    /// `.bin` (a header of 256 int32, magic 20240520, version 1, the id count; then the ids), or
    /// nanoGPT's raw little-endian uint16 `train.bin`. The ids are `0..<vocabularySize`, or up to
    /// the largest id found when it is nil; an id outside is refused by position.
    public static func binary(_ path: String, vocabularySize: Int? = nil) throws(DataError) -> TokenStream {
        let bytes = try TableBytes(mapping: path)
        var offset = 0, count = bytes.count / 2
        if bytes.count >= 1024, bytes.base.loadUnaligned(as: Int32.self) == 20_240_520 {
            let version = bytes.base.loadUnaligned(fromByteOffset: 4, as: Int32.self), declared = Int(bytes.base.loadUnaligned(fromByteOffset: 8, as: Int32.self))
            guard version == 1 else { throw DataError(path: path, problem: "llm.c token file of version \(version), expected 1 (16-bit ids)") }
            guard declared >= 0, 1024 + 2 * declared <= bytes.count else {
                throw DataError(path: path, problem: "truncated: its header declares \(declared) ids (\(2 * declared) bytes after 1024), the file has \(bytes.count - 1024)")
            }
            (offset, count) = (1024, declared)
        } else if bytes.count % 2 != 0 {
            throw DataError(path: path, problem: "\(bytes.count) bytes, an odd count: expected 16-bit ids (nanoGPT's .bin) or an llm.c header")
        }
        let p = (bytes.base + offset).assumingMemoryBound(to: UInt16.self)
        var largest = 0
        for i in 0..<count { largest = max(largest, Int(UInt16(littleEndian: p[i]))) }
        if let vocabularySize, largest >= vocabularySize {
            let at = (0..<count).first { Int(p[$0]) >= vocabularySize }!
            throw DataError(path: path, problem: "id \(p[at]) at position \(at), expected ids below the vocabulary's \(vocabularySize) (--vocabulary-size)")
        }
        var stream = TokenStream(vocabulary: .ids(vocabularySize ?? largest + 1), ids: bytes, count: count, source: path)
        stream.offset = offset
        return stream
    }

    /// `count` ids drawn uniformly from `0..<vocabularySize` by the synthetic stream of `seed`
    /// (benchmarks of a language model's step on random tokens).
    public static func random(count: Int, vocabularySize: Int, seed: UInt64) -> TokenStream {
        let stream = RandomAddress(seed: seed, purpose: .synthetic)
        let storage = TableBytes(allocating: count * 2)
        let ids = storage.mutableBase!.bindMemory(to: UInt16.self, capacity: count)
        for i in 0..<count { ids[i] = UInt16(stream.integer(i, below: vocabularySize)) }
        return TokenStream(vocabulary: .ids(vocabularySize), ids: storage, count: count, source: "random tokens")
    }

    /// The ids `range`, for tests and generation.
    public func tokens(_ range: Range<Int>) -> [Int] {
        range.map { Int(ids.base.loadUnaligned(fromByteOffset: offset + 2 * $0, as: UInt16.self)) }
    }

    /// The training samples of ids `range`: every window of `context` + 1 consecutive ids, its
    /// first `context` the inputs and each position's next id its label (a classification of
    /// `vocabulary.size` classes at `context` positions). With `stride`, only the windows
    /// starting every `stride` ids (a fixed set for evaluation: `stride` = `context` covers the
    /// range once).
    public func windows(_ range: Range<Int>, context: Int, stride: Int = 1) throws(DataError) -> Dataset {
        guard context > 0, range.count > context else {
            throw DataError(path: source, problem: "\(range.count) tokens hold no window of \(context) + 1 (--context \(context)); expected more text or a shorter context")
        }
        let windows = range.count - context
        guard windows < Int(Int32.max) else {
            throw DataError(path: source, problem: "\(windows) windows, expected fewer than 2^31 (the random streams address samples with 32 bits)")
        }
        let inputs = try Table(windowsOf: range.count - 1, columns: context, type: .uint16, bytes: ids, offset: offset + 2 * range.lowerBound, path: source)
        let targets = try Table(windowsOf: range.count - 1, columns: context, type: .uint16, bytes: ids, offset: offset + 2 * (range.lowerBound + 1), path: source)
        let all = Dataset(windows: inputs, targets: targets, classes: vocabulary.size, source: source)
        return stride == 1 ? all : all.subset(Array(Swift.stride(from: 0, to: windows, by: stride)))
    }
}

extension Dataset {
    /// Windows of a token stream: `inputs` and `targets` are the same stream's windows, one id apart.
    init(windows inputs: Table, targets: Table, classes: Int, source: String) {
        features = inputs.columns
        task = .classification
        self.classes = classes
        targetWidth = targets.columns
        self.inputs = inputs
        self.targets = targets
        selection = nil
        count = inputs.rows
        preprocessing = .none
        self.source = source
    }
}
