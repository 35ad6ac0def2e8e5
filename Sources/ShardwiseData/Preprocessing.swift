/// How stored feature values become a model's inputs: a divisor for every value (255 for
/// 8-bit images), then optionally a per-feature shift and scale computed on the training
/// samples. A checkpoint stores it, so `eval` and `predict` apply the same.
public struct Preprocessing: Codable, Equatable, Sendable, CustomStringConvertible {
    /// How it was chosen: `none`, `scale:K`, `standard` or `minmax`.
    public var kind: String
    /// Every stored value is divided by this first.
    public var divisor: Float
    /// Per feature: subtracted after the divisor (standard: the mean; minmax: the minimum).
    public var shift: [Float]?
    /// Per feature: divided by after the shift (standard: the deviation; minmax: the range); never 0.
    public var scale: [Float]?
    /// Regression with standard or minmax: per target, the shift and scale that make the
    /// training targets standard (or [0, 1]); the model learns `(target - shift) / scale`, and its
    /// outputs are mapped back (`output * scale + shift`) for metrics and predictions.
    public var targetShift: [Float]?
    public var targetScale: [Float]?

    /// Values used as stored.
    public static let none = Preprocessing(kind: "none", divisor: 1)

    /// A preprocessing of these parts.
    public init(kind: String, divisor: Float, shift: [Float]? = nil, scale: [Float]? = nil) {
        self.kind = kind
        self.divisor = divisor
        self.shift = shift
        self.scale = scale
    }

    public var description: String { kind }

    /// What makes a stored preprocessing unusable (read from a checkpoint or a model file), or nil:
    /// a divisor that is not positive and finite, shifts and scales of different widths, a shift
    /// that is not finite, a scale that is 0 or not finite.
    public var problem: String? {
        let widths = [shift?.count, scale?.count].compactMap { $0 }
        guard divisor.isFinite, divisor > 0, Set(widths).count <= 1, (shift == nil) == (scale == nil) else {
            return "preprocessing \(kind): divisor \(divisor), expected a positive divisor and a shift and scale of one width"
        }
        guard ((shift ?? []) + (targetShift ?? [])).allSatisfy(\.isFinite), ((scale ?? []) + (targetScale ?? [])).allSatisfy({ $0.isFinite && $0 != 0 }) else {
            return "preprocessing \(kind): expected finite shifts and non-zero finite scales"
        }
        return nil
    }

    /// The preprocessing `--normalize` names, computed on `data` where it needs statistics:
    /// `none`, `scale:K` (divide by K), `standard` (zero mean, unit variance per feature) or
    /// `minmax` (each feature onto [0, 1]); for a regression, standard and minmax apply to the
    /// targets too. Statistics are summed in sample order in double precision, so they are the
    /// same for any worker count. A constant feature keeps scale 1.
    public static func fitted(_ name: String, on data: Dataset) throws(DataError) -> Preprocessing {
        if name == "none" { return .none }
        if name.hasPrefix("scale:") {
            guard let k = Float(name.dropFirst(6)), k.isFinite, k > 0 else {
                throw DataError(path: "--normalize", problem: "'\(name)', expected scale:K with K a positive number")
            }
            return Preprocessing(kind: name, divisor: k)
        }
        guard name == "standard" || name == "minmax" else {
            throw DataError(path: "--normalize", problem: "'\(name)', expected none, standard, minmax or scale:K")
        }
        let raw = data.preprocessed(.none)
        var result = Self.statistics(name, width: data.features, count: data.count) { raw.copyInputs($0, into: $1) }
        if data.task == .regression, data.targets != nil {
            let targets = Self.statistics(name, width: data.targetWidth, count: data.count) { raw.copyTargets($0, into: $1) }
            result.targetShift = targets.shift
            result.targetScale = targets.scale
        }
        return result
    }

    /// Standard or minmax statistics of `count` rows of `width` values that `row(i, into)` gives.
    static func statistics(_ name: String, width n: Int, count: Int, row copy: (Int, UnsafeMutablePointer<Float>) -> Void) -> Preprocessing {
        let row = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { row.deallocate() }
        var sum = [Double](repeating: 0, count: n), squares = [Double](repeating: 0, count: n)
        var low = [Float](repeating: .infinity, count: n), high = [Float](repeating: -.infinity, count: n)
        for i in 0..<count {
            copy(i, row)
            for j in 0..<n {
                sum[j] += Double(row[j])
                low[j] = min(low[j], row[j])
                high[j] = max(high[j], row[j])
            }
        }
        if name == "standard" {
            // Two passes (mean, then squared deviations): no cancellation for values far from 0.
            let mean = sum.map { $0 / Double(count) }
            for i in 0..<count {
                copy(i, row)
                for j in 0..<n { squares[j] += (Double(row[j]) - mean[j]) * (Double(row[j]) - mean[j]) }
            }
            let deviation = (0..<n).map { j -> Float in
                let d = Float((squares[j] / Double(count)).squareRoot())
                return d > 0 && d.isFinite ? d : 1
            }
            return Preprocessing(kind: name, divisor: 1, shift: mean.map { Float($0) }, scale: deviation)
        }
        return Preprocessing(kind: name, divisor: 1, shift: low, scale: (0..<n).map { high[$0] > low[$0] ? high[$0] - low[$0] : 1 })
    }
}
