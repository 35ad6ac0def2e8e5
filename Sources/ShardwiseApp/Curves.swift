import Shardwise
/// `curves.svg`: training loss and test error per epoch, with an optional second
/// run (the same network and seed without dropout) on the same axes.
public enum Curves {
    public static func svg(title: String, runs: [(name: String, records: [EpochRecord])]) -> String {
        func series(_ value: (EpochRecord) -> Double) -> [SVGChart.Series] {
            runs.enumerated().map { i, run in
                SVGChart.Series(name: run.name, points: run.records.map { (Double($0.epoch), value($0)) }, color: SVGChart.palette[i % SVGChart.palette.count])
            }
        }
        // Long runs start far above where they end: the test-error axis stops at 3x the
        // lowest error, so the end of the curves, where runs differ, stays readable.
        let errors = runs.flatMap { $0.records.compactMap(\.testErrorPercent) }
        let cut = errors.min().map { 3 * $0 }.flatMap { $0 < (errors.max() ?? 0) ? $0 : nil }
        return SVGChart(
            title: title,
            subtitle: "MNIST test set, evaluated after every epoch" + (cut == nil ? "" : "; the test-error axis stops at 3x the lowest error"),
            panels: [
                .init(title: "Training loss", xLabel: "epoch", yLabel: "cross-entropy (nats per sample)", series: series(\.trainLoss)),
                .init(title: "Test error", xLabel: "epoch", yLabel: "test error (%)", series: series { $0.testErrorPercent ?? .nan }, yFromZero: false, yMax: cut),
            ]
        ).render()
    }
}
