import Shardwise
import Foundation

/// A line chart drawn as SVG by Shardwise itself (no browser or Python needed):
/// titled panels with labelled axes and units, "nice" ticks, a legend, and
/// solid or dashed series.
public struct SVGChart {
    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: String
        public var dashed: Bool
        /// Vertical bars (x, low, high), e.g. the spread over seeds.
        public var errorBars: [(x: Double, low: Double, high: Double)]
        /// Listed in the legend (a companion series explained by the panel's title need not be).
        public var inLegend: Bool
        public init(name: String, points: [(x: Double, y: Double)], color: String, dashed: Bool = false, errorBars: [(x: Double, low: Double, high: Double)] = [], inLegend: Bool = true) {
            self.name = name
            self.points = points
            self.color = color
            self.dashed = dashed
            self.errorBars = errorBars
            self.inLegend = inLegend
        }
    }

    public struct Panel {
        public var title: String
        public var xLabel: String
        public var yLabel: String
        public var series: [Series]
        /// Start the y axis at zero (throughput, efficiency) rather than at the data's minimum.
        public var yFromZero: Bool
        /// Where the y axis stops when the data go higher (points above are drawn on the top edge).
        public var yMax: Double?
        /// Logarithmic axes (positive data only): ticks at 1, 2 and 5 times powers of ten.
        public var xLog: Bool
        public var yLog: Bool
        public init(title: String, xLabel: String, yLabel: String, series: [Series], yFromZero: Bool = true, yMax: Double? = nil, xLog: Bool = false, yLog: Bool = false) {
            self.title = title
            self.xLabel = xLabel
            self.yLabel = yLabel
            self.series = series
            self.yFromZero = yFromZero
            self.yMax = yMax
            self.xLog = xLog
            self.yLog = yLog
        }
    }

    public var title: String
    public var subtitle: String
    public var panels: [Panel]

    public init(title: String, subtitle: String = "", panels: [Panel]) {
        self.title = title
        self.subtitle = subtitle
        self.panels = panels
    }

    public static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    static let panelHeight = 320.0
    /// Side-by-side panels share the width; a lone panel gets room for a long title.
    var panelWidth: Double { panels.count == 1 ? 640 : 460 }
    static let margin = (left: 70.0, right: 20.0, top: 40.0, bottom: 55.0)

    public func render() -> String {
        let width = Double(panels.count) * panelWidth
        let height = Self.panelHeight + 60
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(fmt(width / 2))" y="24" text-anchor="middle" font-size="17" font-weight="bold">\(escape(title))</text>
            <text x="\(fmt(width / 2))" y="44" text-anchor="middle" font-size="12" fill="#555">\(escape(subtitle))</text>

            """
        for (i, panel) in panels.enumerated() {
            svg += renderPanel(panel, originX: Double(i) * panelWidth, originY: 50)
        }
        return svg + "</svg>\n"
    }

    func renderPanel(_ panel: Panel, originX: Double, originY: Double) -> String {
        let m = Self.margin
        let plotW = panelWidth - m.left - m.right, plotH = Self.panelHeight - m.top - m.bottom
        let all = panel.series.flatMap(\.points) + panel.series.flatMap { $0.errorBars.flatMap { [(x: $0.x, y: $0.low), (x: $0.x, y: $0.high)] } }
        let xs = all.map(\.x), ys = all.map(\.y)
        // Worker counts and epochs are whole numbers: no ticks between them.
        let integral = xs.allSatisfy { $0 == $0.rounded() }
        let xTicks = panel.xLog ? Self.logTicks(xs) : niceTicks(min: xs.min() ?? 0, max: xs.max() ?? 1).filter { !integral || $0 == $0.rounded() }
        let yTicks = panel.yLog ? Self.logTicks(ys) : niceTicks(min: panel.yFromZero ? min(0, ys.min() ?? 0) : (ys.min() ?? 0), max: min(ys.max() ?? 1, panel.yMax ?? .infinity))
        // Positions are linear in the value, or in its logarithm on a log axis.
        let tx = { (x: Double) in panel.xLog ? log10(max(x, xTicks.first!)) : x }, ty = { (y: Double) in panel.yLog ? log10(max(y, yTicks.first!)) : y }
        let (x0, x1) = (tx(xTicks.first!), tx(xTicks.last!)), (y0, y1) = (ty(yTicks.first!), ty(yTicks.last!))
        let left = originX + m.left, top = originY + m.top
        func px(_ x: Double) -> Double { left + (tx(x) - x0) / max(x1 - x0, 1e-12) * plotW }
        func py(_ y: Double) -> Double { top + plotH - (min(ty(y), y1) - y0) / max(y1 - y0, 1e-12) * plotH }
        var s = "<g class=\"panel\">\n"
        s += "<text x=\"\(fmt(left + plotW / 2))\" y=\"\(fmt(top - 12))\" text-anchor=\"middle\" font-size=\"14\">\(escape(panel.title))</text>\n"
        for t in yTicks {
            s += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(py(t)))\" x2=\"\(fmt(left + plotW))\" y2=\"\(fmt(py(t)))\" stroke=\"#e5e5e5\"/>\n"
            s += "<text x=\"\(fmt(left - 6))\" y=\"\(fmt(py(t) + 4))\" text-anchor=\"end\" font-size=\"11\">\(label(t))</text>\n"
        }
        for t in xTicks {
            s += "<line x1=\"\(fmt(px(t)))\" y1=\"\(fmt(top + plotH))\" x2=\"\(fmt(px(t)))\" y2=\"\(fmt(top + plotH + 5))\" stroke=\"#333\"/>\n"
            s += "<text x=\"\(fmt(px(t)))\" y=\"\(fmt(top + plotH + 18))\" text-anchor=\"middle\" font-size=\"11\">\(label(t))</text>\n"
        }
        s += "<rect x=\"\(fmt(left))\" y=\"\(fmt(top))\" width=\"\(fmt(plotW))\" height=\"\(fmt(plotH))\" fill=\"none\" stroke=\"#333\"/>\n"
        s += "<text x=\"\(fmt(left + plotW / 2))\" y=\"\(fmt(top + plotH + 40))\" text-anchor=\"middle\" font-size=\"12\">\(escape(panel.xLabel))</text>\n"
        s += "<text transform=\"translate(\(fmt(originX + 16)),\(fmt(top + plotH / 2))) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">\(escape(panel.yLabel))</text>\n"
        for series in panel.series where !series.points.isEmpty {
            let path = series.points.map { "\(fmt(px($0.x))),\(fmt(py($0.y)))" }.joined(separator: " ")
            s += "<polyline class=\"series\" data-name=\"\(escape(series.name))\" points=\"\(path)\" fill=\"none\" stroke=\"\(series.color)\" stroke-width=\"2\"\(series.dashed ? " stroke-dasharray=\"6 4\"" : "")/>\n"
            for bar in series.errorBars {
                s += "<line class=\"error-bar\" x1=\"\(fmt(px(bar.x)))\" y1=\"\(fmt(py(bar.low)))\" x2=\"\(fmt(px(bar.x)))\" y2=\"\(fmt(py(bar.high)))\" stroke=\"\(series.color)\" stroke-width=\"1.5\"/>\n"
            }
            if series.points.count <= 16 {
                for p in series.points {
                    s += "<circle cx=\"\(fmt(px(p.x)))\" cy=\"\(fmt(py(p.y)))\" r=\"3\" fill=\"\(series.color)\"/>\n"
                }
            }
        }
        // Legend inside the plot, in the corner its box covers the least of the lines (each
        // segment sampled at 20 points): top right, bottom right, top left, bottom left.
        let listed = panel.series.filter(\.inLegend)
        let longest = Double(listed.map(\.name.count).max() ?? 0)
        let box = (width: max(150, 6 * longest + 40), height: Double(listed.count) * 16 + 4)
        var samples: [(Double, Double)] = []
        for series in panel.series {
            let points = series.points.map { (px($0.x), py($0.y)) }
            samples += points
            for (a, b) in zip(points, points.dropFirst()) {
                samples += (1..<20).map { t in (a.0 + (b.0 - a.0) * Double(t) / 20, a.1 + (b.1 - a.1) * Double(t) / 20) }
            }
        }
        let corners = [
            (left + plotW - box.width, top + 4), (left + plotW - box.width, top + plotH - box.height - 4),
            (left + 8, top + 4), (left + 8, top + plotH - box.height - 4),
        ]
        let covered = corners.map { c in samples.filter { $0.0 >= c.0 && $0.0 <= c.0 + box.width && $0.1 >= c.1 && $0.1 <= c.1 + box.height }.count }
        let corner = corners[covered.firstIndex(of: covered.min()!)!]
        for (i, series) in listed.enumerated() {
            let y = corner.1 + 12 + Double(i) * 16, x = corner.0
            s += "<line x1=\"\(fmt(x))\" y1=\"\(fmt(y - 4))\" x2=\"\(fmt(x + 22))\" y2=\"\(fmt(y - 4))\" stroke=\"\(series.color)\" stroke-width=\"2\"\(series.dashed ? " stroke-dasharray=\"6 4\"" : "")/>\n"
            s += "<text x=\"\(fmt(x + 28))\" y=\"\(fmt(y))\" font-size=\"11\">\(escape(series.name))</text>\n"
        }
        return s + "</g>\n"
    }

    /// 4-8 round tick values (1, 2 or 5 times a power of ten) covering [min, max].
    public static func niceTicks(min lo: Double, max hi: Double) -> [Double] {
        var (a, b) = lo.isFinite && hi.isFinite ? (lo, hi) : (0, 1)  // no finite points: an empty axis
        if b - a < 1e-12 { (a, b) = (a - 1, b + 1) }
        let raw = (b - a) / 5
        let power = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= raw }!
        let start = floor(a / step) * step, end = ceil(b / step) * step
        return stride(from: start, through: end + step / 2, by: step).map { ($0 / step).rounded() * step }
    }

    func niceTicks(min: Double, max: Double) -> [Double] { Self.niceTicks(min: min, max: max) }

    /// Ticks for a log axis: 1, 2 and 5 times powers of ten from below the smallest
    /// positive value to above the largest.
    public static func logTicks(_ values: [Double]) -> [Double] {
        let positive = values.filter { $0 > 0 && $0.isFinite }
        guard let lo = positive.min(), let hi = positive.max() else { return [1, 10] }
        let candidates = (Int(floor(log10(lo)))...Int(ceil(log10(hi)))).flatMap { e in [1.0, 2, 5].map { $0 * pow(10, Double(e)) } }
        let below = candidates.last { $0 <= lo } ?? candidates[0]
        let above = candidates.first { $0 >= hi } ?? candidates.last!
        let ticks = candidates.filter { $0 >= below && $0 <= above }
        return ticks.count >= 2 ? ticks : [below, below * 10]
    }

    func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e7 { return String(Int(v)) }
        return String(format: abs(v) < 0.1 ? "%.3g" : "%.2f", v).replacingOccurrences(of: "0+$", with: "", options: .regularExpression)
    }

    func fmt(_ v: Double) -> String { String(format: "%.1f", v) }

    func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
