import CShardwiseZlib
import ShardwiseKernels

/// What a data set's targets are: class labels or real values.
public enum TrainingTask: String, Codable, Sendable, CaseIterable {
    /// Integer labels `0..<classes`; softmax cross-entropy; error rate.
    case classification
    /// One or more real targets per sample; mean squared error; RMSE and MAE.
    case regression
}

/// Samples for training or evaluation: feature rows and their targets, read in place from
/// a ``Table`` (a mapped file or memory) and converted to floats a row at a time, when used.
///
/// A row's values are `Float(stored) / preprocessing.divisor`, then, with a per-feature
/// normalization, `(value - shift[j]) / scale[j]`. Subsets (validation splits, prefixes) are
/// views: a list of row numbers over the same table, never a copy of the values.
public struct Dataset: Sendable {
    /// Values per sample (row width).
    public let features: Int
    /// Classification or regression.
    public let task: TrainingTask
    /// Classification: labels are in `0..<classes`. Regression: 0.
    public let classes: Int
    /// Regression: targets per sample. Classification: labels per sample, 1 (a token window's T:
    /// the next token of each position).
    public let targetWidth: Int
    /// The feature rows as stored.
    public let inputs: Table
    /// The targets as stored: (rows, 1) integer labels, or (rows, targetWidth) values; nil for
    /// samples to predict, which have none.
    public let targets: Table?
    /// The rows of the tables this data set holds, in order; nil: the first `count` rows.
    let selection: [Int32]?
    /// The number of samples.
    public let count: Int
    /// How stored values become the model's inputs.
    public var preprocessing: Preprocessing
    /// Where the samples came from (a path, or a description), for messages.
    public var source: String
    /// Token windows: how the ids map to text; nil for other data.
    public var vocabulary: Vocabulary?

    /// The model's output width this data asks for: the classes (for each labelled position),
    /// or the targets per sample.
    public var outputWidth: Int { task == .classification ? classes * targetWidth : targetWidth }

    /// A data set over `inputs` and `targets` (whose rows must agree), checking the targets for
    /// the task: integer labels in `0..<classes` (`classes` nil: one more than the largest
    /// label), or finite values. Float features are checked to be finite.
    public init(
        inputs: Table, targets: Table?, task: TrainingTask, classes: Int? = nil, preprocessing: Preprocessing = .none,
        source: String, targetsSource: String? = nil
    ) throws(DataError) {
        let labelsPath = targetsSource ?? source
        guard inputs.rows > 0, inputs.columns > 0 else {
            throw DataError(path: source, problem: "\(inputs.rows) samples of \(inputs.columns) features, expected at least one sample of at least one feature")
        }
        guard inputs.rows < Int(Int32.max) else {
            throw DataError(path: source, problem: "\(inputs.rows) samples, expected fewer than 2^31 (the random streams address samples with 32 bits)")
        }
        var classCount = 0
        if let targets {
            guard targets.rows == inputs.rows else {
                throw DataError(path: labelsPath, problem: "\(targets.rows) targets for \(inputs.rows) samples in \(source); expected one per sample")
            }
            switch task {
            case .classification:
                guard targets.columns == 1 else {
                    throw DataError(path: labelsPath, problem: "\(targets.columns) label columns, expected one class label per sample (or --task regression)")
                }
                var largest = -1.0
                for r in 0..<targets.rows {
                    let v = targets.double(row: r)
                    guard v >= 0, v.rounded() == v, v < 1e6 else {
                        throw DataError(path: labelsPath, problem: "label \(v) at sample \(r) is not a class number (a whole number from 0); for real-valued targets use --task regression")
                    }
                    largest = max(largest, v)
                }
                classCount = classes ?? Int(largest) + 1
                guard Int(largest) < classCount else {
                    throw DataError(path: labelsPath, problem: "label \(Int(largest)) is out of range, expected 0...\(classCount - 1)")
                }
            case .regression:
                for r in 0..<targets.rows {
                    for c in 0..<targets.columns where !targets.double(row: r, column: c).isFinite {
                        throw DataError(path: labelsPath, problem: "target \(targets.double(row: r, column: c)) at sample \(r) is not finite")
                    }
                }
            }
        }
        if !inputs.type.isInteger {
            let row = FloatBuffer(count: inputs.columns)
            for r in 0..<inputs.rows {
                inputs.convert(row: r, into: row.pointer)
                for j in 0..<inputs.columns where !row[j].isFinite {
                    throw DataError(path: source, problem: "feature \(j) of sample \(r) is \(row[j]), expected a finite number")
                }
            }
        }
        self.inputs = inputs
        self.targets = targets
        self.task = task
        self.classes = task == .classification ? classCount : 0
        targetWidth = task == .classification ? 1 : targets?.columns ?? 1
        features = inputs.columns
        selection = nil
        count = inputs.rows
        self.preprocessing = preprocessing
        self.source = source
    }

    init(_ base: Dataset, selection: [Int32]?, count: Int) {
        features = base.features
        task = base.task
        classes = base.classes
        targetWidth = base.targetWidth
        inputs = base.inputs
        targets = base.targets
        self.selection = selection
        self.count = count
        preprocessing = base.preprocessing
        source = base.source
        vocabulary = base.vocabulary
    }

    /// A classification set held in memory: `labels.count` rows of `features` floats, used as they are.
    public init(features: Int, classes: Int, images: [Float], labels: [Int32]) {
        precondition(images.count == features * labels.count, "images and labels disagree")
        self.features = features
        task = .classification
        self.classes = classes
        targetWidth = 1
        inputs = Table(floats: images, columns: features)
        targets = Table(labels: labels)
        selection = nil
        count = labels.count
        preprocessing = .none
        source = "memory"
    }

    /// A regression set held in memory: rows of `features` floats and rows of `targetWidth` targets.
    public init(features: Int, inputs: [Float], targets: [Float], targetWidth: Int) {
        precondition(inputs.count % features == 0 && targets.count % targetWidth == 0 && inputs.count / features == targets.count / targetWidth, "inputs and targets disagree")
        self.features = features
        task = .regression
        classes = 0
        self.targetWidth = targetWidth
        self.inputs = Table(floats: inputs, columns: features)
        self.targets = Table(floats: targets, columns: targetWidth)
        selection = nil
        count = inputs.count / features
        preprocessing = .none
        source = "memory"
    }

    /// The table row of sample `i`.
    @inline(__always)
    public func row(_ i: Int) -> Int { selection.map { Int($0[i]) } ?? i }

    /// Sample `i`'s inputs, preprocessed, into `out[0..<features]`.
    @inline(__always)
    public func copyInputs(_ i: Int, into out: UnsafeMutablePointer<Float>) {
        inputs.convert(row: row(i), divisor: preprocessing.divisor, into: out)
        if let shift = preprocessing.shift, let scale = preprocessing.scale {
            for j in 0..<features { out[j] = (out[j] - shift[j]) / scale[j] }
        }
    }

    /// Sample `i`'s inputs, preprocessed, as an array (for inspection and tests; the hot path uses `copyInputs`).
    public func inputs(of i: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: features) { out, n in
            copyInputs(i, into: out.baseAddress!)
            n = features
        }
    }

    /// Sample `i`'s class label (classification; its first, for labels per position).
    @inline(__always)
    public func label(_ i: Int) -> Int32 { Int32(targets!.double(row: row(i))) }

    /// Sample `i`'s `targetWidth` labels (classification) into `out`.
    @inline(__always)
    public func copyLabels(_ i: Int, into out: UnsafeMutablePointer<Int32>) {
        let r = row(i)
        for c in 0..<targetWidth { out[c] = Int32(targets!.double(row: r, column: c)) }
    }

    /// Sample `i`'s targets (regression) into `out[0..<targetWidth]`, normalized as the
    /// preprocessing says unless `normalized` is false.
    @inline(__always)
    public func copyTargets(_ i: Int, into out: UnsafeMutablePointer<Float>, normalized: Bool = true) {
        targets!.convert(row: row(i), into: out)
        if normalized, let shift = preprocessing.targetShift, let scale = preprocessing.targetScale {
            for j in 0..<targetWidth { out[j] = (out[j] - shift[j]) / scale[j] }
        }
    }

    /// The first `count` samples.
    public func prefix(_ count: Int) -> Dataset {
        let n = min(count, self.count)
        return Dataset(self, selection: selection.map { Array($0.prefix(n)) }, count: n)
    }

    /// The samples at `indices`, in that order.
    public func subset(_ indices: [Int]) -> Dataset {
        Dataset(self, selection: indices.map { Int32(row($0)) }, count: indices.count)
    }

    /// The same samples, preprocessed by `preprocessing`.
    public func preprocessed(_ preprocessing: Preprocessing) -> Dataset {
        var copy = self
        copy.preprocessing = preprocessing
        return copy
    }

    /// Samples per class, in class order (classification).
    public var labelCounts: [Int] {
        var counts = [Int](repeating: 0, count: classes)
        for i in 0..<count { counts[Int(label(i))] += 1 }
        return counts
    }

    /// What identifies these samples: their shape and a CRC-32 of their stored values and
    /// targets, row by row. A checkpoint stores it, so that a run is never resumed on other data.
    public var fingerprint: DataFingerprint {
        var crc: UInt = 0
        func add(_ table: Table) {
            let width = table.columns * table.type.size
            if selection == nil {
                // Rows may overlap (a token stream's windows): the bytes they span, once.
                crc = crc32_z(crc, (table.bytes.base + table.offset).assumingMemoryBound(to: UInt8.self), table.spanBytes(rows: count))
            } else {
                for i in 0..<count {
                    crc = crc32_z(crc, (table.bytes.base + table.offset + row(i) * table.rowStride * table.type.size).assumingMemoryBound(to: UInt8.self), width)
                }
            }
        }
        add(inputs)
        if let targets { add(targets) }
        return DataFingerprint(samples: count, features: features, classes: outputWidth, crc32: UInt32(crc))
    }
}

/// The identity of a data set: samples, shape and a CRC-32 of its values and labels.
public struct DataFingerprint: Codable, Sendable, Equatable, CustomStringConvertible {
    /// Rows.
    public var samples: Int
    /// Values per row.
    public var features: Int
    /// Label classes (regression: targets per row).
    public var classes: Int
    /// CRC-32 of the stored values then the targets.
    public var crc32: UInt32

    /// A fingerprint of these figures.
    public init(samples: Int, features: Int, classes: Int, crc32: UInt32) {
        self.samples = samples
        self.features = features
        self.classes = classes
        self.crc32 = crc32
    }

    /// "60000 samples of 784 values, 10 classes, CRC-32 1a2b3c4d".
    public var description: String {
        "\(samples) samples of \(features) values, \(classes) classes, CRC-32 \(String(crc32, radix: 16))"
    }
}

extension Dataset {
    /// Holds out `count` samples for validation: the first `count` of a permutation drawn from
    /// (seed, validation split), so the same samples for a seed whatever the worker count.
    /// Both parts keep the original order.
    public func splitValidation(count: Int, seed: UInt64) -> (train: Dataset, validation: Dataset) {
        let (kept, held) = split(holdingOut: count, seed: seed, purpose: .validationSplit)
        return (kept, held)
    }

    /// Holds out `count` samples: the first `count` of a permutation drawn from (seed,
    /// purpose). Both parts keep the original order.
    public func split(holdingOut count: Int, seed: UInt64, purpose: RandomPurpose) -> (kept: Dataset, held: Dataset) {
        partition(RandomAddress(seed: seed, purpose: purpose).permutation(self.count).prefix(count))
    }

    /// The samples not in `chosen`, and those in it, both in the original order.
    func partition(_ chosen: ArraySlice<Int32>) -> (kept: Dataset, held: Dataset) {
        var held = [Bool](repeating: false, count: count)
        for i in chosen { held[Int(i)] = true }
        return (subset(held.indices.filter { !held[$0] }), subset(held.indices.filter { held[$0] }))
    }

    /// A seeded subset of `count` samples, in the original order: the first `count` of a
    /// permutation drawn from (seed, train subset), so a smaller subset lies inside a larger.
    public func seededSubset(_ count: Int, seed: UInt64) -> Dataset {
        split(holdingOut: count, seed: seed, purpose: .trainSubset).held
    }

    /// Cross-validation: fold `fold` of `folds` held out, the others kept, both in the original
    /// order. Folds are consecutive runs of one permutation drawn from (seed, folds), their
    /// sizes differing by at most one: disjoint, together every sample, and the same for a
    /// seed whatever runs them.
    public func fold(_ fold: Int, of folds: Int, seed: UInt64) -> (kept: Dataset, held: Dataset) {
        precondition(folds > 1 && fold >= 0 && fold < folds && folds <= count, "fold \(fold) of \(folds) over \(count) samples")
        let order = RandomAddress(seed: seed, purpose: .folds).permutation(count)
        return partition(order[fold * count / folds..<(fold + 1) * count / folds])
    }
}
