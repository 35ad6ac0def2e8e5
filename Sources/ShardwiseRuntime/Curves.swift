/// `curves.svg`: training loss and test error per epoch, with an optional second
/// run (the same network and seed without dropout) on the same axes.
public enum Curves {
    public static func svg(title: String, runs: [(name: String, records: [EpochRecord])]) -> String {
        func series(_ value: (EpochRecord) -> Double) -> [SVGChart.Series] {
            runs.enumerated().map { i, run in
                SVGChart.Series(name: run.name, points: run.records.map { (Double($0.epoch), value($0)) }, color: SVGChart.palette[i % SVGChart.palette.count])
            }
        }
        return SVGChart(
            title: title, subtitle: "MNIST test set, evaluated after every epoch",
            panels: [
                .init(title: "Training loss", xLabel: "epoch", yLabel: "cross-entropy (nats per sample)", series: series(\.trainLoss)),
                .init(title: "Test error", xLabel: "epoch", yLabel: "test error (%)", series: series(\.testErrorPercent), yFromZero: false),
            ]
        ).render()
    }
}
