import CShardwiseZlib
import ShardwiseKernels

/// A labelled image set held in memory: images as floats in [0, 1], row-major (count, features).
public struct Dataset: Sendable {
    /// Values per sample (row width).
    public var features: Int
    /// Labels are in `0..<classes`.
    public var classes: Int
    /// (count, features), row-major.
    public var images: [Float]
    /// One class index per sample.
    public var labels: [Int32]

    /// The number of samples.
    public var count: Int { labels.count }

    /// A data set of `labels.count` rows of `features` values each.
    public init(features: Int, classes: Int, images: [Float], labels: [Int32]) {
        precondition(images.count == features * labels.count, "images and labels disagree")
        self.features = features
        self.classes = classes
        self.images = images
        self.labels = labels
    }

    /// The first `count` samples.
    public func prefix(_ count: Int) -> Dataset {
        let n = min(count, self.count)
        return Dataset(
            features: features, classes: classes, images: Array(images[0..<n * features]),
            labels: Array(labels[0..<n]))
    }

    /// The samples at `indices`, in that order.
    public func subset(_ indices: [Int]) -> Dataset {
        var images = [Float]()
        images.reserveCapacity(indices.count * features)
        for i in indices { images += self.images[i * features..<(i + 1) * features] }
        return Dataset(features: features, classes: classes, images: images, labels: indices.map { labels[$0] })
    }

    /// Samples per class, in class order.
    public var labelCounts: [Int] {
        var counts = [Int](repeating: 0, count: classes)
        for label in labels { counts[Int(label)] += 1 }
        return counts
    }

    /// Reads an IDX image file (count, rows, columns) and an IDX label file (count),
    /// checking that the counts agree and every label is below `classes`; with `features`,
    /// that each image has that many pixels, before its pixels are read.
    public init(imagesPath: String, labelsPath: String, classes: Int, features expected: Int? = nil) throws(DataError) {
        let images = try IDXFile(path: imagesPath, expectedDimensions: 3) { (d) throws(DataError) in
            guard d[0] > 0, d[1] > 0, d[2] > 0 else {
                throw DataError(path: imagesPath, problem: "empty image set (dimensions \(d)), expected at least one image")
            }
            if let expected, d[1] * d[2] != expected {
                throw DataError(path: imagesPath, problem: "images of \(d[1])x\(d[2]) = \(d[1] * d[2]) pixels, expected \(expected)")
            }
            // The bytes, then 4 bytes a pixel as floats: refused before reading when they cannot fit.
            let budget = MemoryBudget.current()
            if let bytes = CheckedSize.product(d + [5]), bytes > budget.bytes {
                throw DataError(path: imagesPath, problem: "\(d[0]) images of \(d[1])x\(d[2]) need \(MemoryBudget.format(bytes)) as bytes and floats, more than the \(budget) available")
            }
        }
        let count = images.dimensions[0]
        let labels = try IDXFile(path: labelsPath, expectedDimensions: 1) { (d) throws(DataError) in
            guard d[0] == count else {
                throw DataError(
                    path: labelsPath, problem: "has \(d[0]) labels, but \(imagesPath) has \(count) images; expected the same count")
            }
        }
        if let index = labels.bytes.firstIndex(where: { Int($0) >= classes }) {
            throw DataError(
                path: labelsPath,
                problem: "label \(labels.bytes[index]) at index \(index) is out of range, expected 0...\(classes - 1)")
        }
        self.features = images.dimensions[1] * images.dimensions[2]
        self.classes = classes
        self.images = [Float](unsafeUninitializedCapacity: images.bytes.count) { out, initialized in
            images.bytes.withUnsafeBufferPointer { bytes in
                for i in 0..<bytes.count { out[i] = Float(bytes[i]) / 255 }
            }
            initialized = images.bytes.count
        }
        self.labels = labels.bytes.map { Int32($0) }
    }

    /// What identifies these samples: their shape and a CRC-32 of their values and labels.
    /// A checkpoint stores it, so that a run is never resumed on other data.
    public var fingerprint: DataFingerprint {
        var crc = images.withUnsafeBytes { UInt32(crc32_z(0, $0.baseAddress?.assumingMemoryBound(to: UInt8.self), $0.count)) }
        crc = labels.withUnsafeBytes { UInt32(crc32_z(UInt(crc), $0.baseAddress?.assumingMemoryBound(to: UInt8.self), $0.count)) }
        return DataFingerprint(samples: count, features: features, classes: classes, crc32: crc)
    }
}

/// The identity of a data set: samples, shape and a CRC-32 of its float values and labels.
public struct DataFingerprint: Codable, Sendable, Equatable, CustomStringConvertible {
    /// Rows.
    public var samples: Int
    /// Values per row.
    public var features: Int
    /// Label classes.
    public var classes: Int
    /// CRC-32 of the values (as little-endian floats) then the labels (as Int32).
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
        let order = RandomAddress(seed: seed, purpose: .validationSplit).permutation(self.count)
        var held = [Bool](repeating: false, count: self.count)
        for i in order.prefix(count) { held[Int(i)] = true }
        return (subset(held.indices.filter { !held[$0] }), subset(held.indices.filter { held[$0] }))
    }
}
