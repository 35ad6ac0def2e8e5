import Shardwise
/// `curves.svg`: training loss and test error (or RMSE) per epoch, with an optional second
/// run (the same network and seed without dropout) on the same axes. A language model's: the
/// training and test loss per token on one panel (overfitting is the gap between them), the
/// test error per token on the other.
public enum Curves {
    public static func svg(title: String, runs: [(name: String, records: [EpochRecord])], languageModel: Bool = false) -> String {
        func series(_ value: (EpochRecord) -> Double, suffix: String = "", dashed: Bool = false) -> [SVGChart.Series] {
            runs.enumerated().map { i, run in
                SVGChart.Series(
                    name: run.name + suffix, points: run.records.map { (Double($0.epoch), value($0)) },
                    color: SVGChart.palette[i % SVGChart.palette.count], dashed: dashed)
            }
        }
        if languageModel {
            return SVGChart(
                title: title,
                subtitle: "Training loss: the mean over the epoch's steps, dropout on; test: the held-out tail, after every epoch",
                panels: [
                    .init(title: "Loss per token (solid: training, dashed: test)", xLabel: "epoch", yLabel: "cross-entropy (nats per token)",
                          series: series(\.trainLoss, suffix: ", training") + series({ $0.testLoss ?? .nan }, suffix: ", test", dashed: true), yFromZero: false),
                    .init(title: "Test error per token", xLabel: "epoch", yLabel: "next tokens mispredicted (%)", series: series { $0.testErrorPercent ?? .nan }, yFromZero: false),
                ]
            ).render()
        }
        // Long runs start far above where they end: the test-error axis stops at 3x the
        // lowest error, so the end of the curves, where runs differ, stays readable.
        let regression = runs.contains { $0.records.contains { $0.testRmse != nil } }
        let metric: (EpochRecord) -> Double? = regression ? { $0.testRmse } : { $0.testErrorPercent }
        let errors = runs.flatMap { $0.records.compactMap(metric) }
        let cut = errors.min().map { 3 * $0 }.flatMap { $0 < (errors.max() ?? 0) ? $0 : nil }
        let name = regression ? "test RMSE" : "test error"
        return SVGChart(
            title: title,
            subtitle: "Test set, evaluated after every epoch" + (cut == nil ? "" : "; the \(name) axis stops at 3x the lowest"),
            panels: [
                .init(title: "Training loss", xLabel: "epoch", yLabel: regression ? "mean squared error per sample" : "cross-entropy (nats per sample)", series: series(\.trainLoss)),
                .init(title: regression ? "Test RMSE" : "Test error", xLabel: "epoch", yLabel: regression ? "test RMSE" : "test error (%)", series: series { metric($0) ?? .nan }, yFromZero: false, yMax: cut),
            ]
        ).render()
    }
}
