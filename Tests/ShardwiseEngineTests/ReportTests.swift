import Foundation
import ShardwiseLayers
import ShardwiseApp
import Shardwise
import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif

/// `shardwise scale`'s arithmetic and files, and the SVG charts' structure.
final class ReportTests: XCTestCase {
    func report() -> ScaleReport {
        let split = StepSplit(compute: 0.020, waiting: 0.001, reduction: 0.002)
        let points = [
            ScaleRun.point(mode: "strong", workers: 1, globalBatch: 256, windowRates: [1000, 900, 1100], baselinePerWorker: 1000, gemmCeiling: 1, split: split),
            ScaleRun.point(mode: "strong", workers: 2, globalBatch: 256, windowRates: [1800, 1900, 1700, 2000], baselinePerWorker: 1000, gemmCeiling: 1.8, split: split),
            ScaleRun.point(mode: "weak", workers: 1, globalBatch: 256, windowRates: [950], baselinePerWorker: 950, gemmCeiling: 1, split: split),
            ScaleRun.point(mode: "weak", workers: 2, globalBatch: 512, windowRates: [1900], baselinePerWorker: 950, gemmCeiling: 1.8, split: split),
        ]
        return ScaleReport(
            command: "shardwise scale --synthetic-data", shardwiseVersion: ShardwiseVersion.current, machine: "test machine", policy: "compact",
            blas: "OpenBLAS; kernels Haswell", network: NetworkConfiguration(hiddenSizes: [8], dropoutInput: 0, dropoutHidden: 0),
            shardSize: 64, batchSize: 256, data: "random", points: points)
    }

    func testArithmetic() {
        let points = report().points
        XCTAssertEqual(points[0].samplesPerSecond, 1000)  // median of 900, 1000, 1100
        XCTAssertEqual(points[0].samplesPerSecondMin, 900)
        XCTAssertEqual(points[0].samplesPerSecondMax, 1100)
        XCTAssertEqual(points[1].samplesPerSecond, 1850)  // median of an even count: mean of the middle two
        XCTAssertEqual(points[1].speedup, 1.85, accuracy: 1e-12)
        XCTAssertEqual(points[1].efficiency, 0.925, accuracy: 1e-12)
        XCTAssertEqual(points[3].speedup, 2, accuracy: 1e-12)
        XCTAssertEqual(points[3].efficiency, 1, accuracy: 1e-12)
        XCTAssertEqual(points[1].computeMs, 20, accuracy: 1e-12)
    }

    func testCSVAndJSONAgree() throws {
        let r = report()
        let rows = ScaleRun.csv(r).split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
        let header = rows[0]
        let json = try JSONSerialization.jsonObject(with: JSON.encoder(pretty: false).encode(r)) as! [String: Any]
        let points = json["points"] as! [[String: Any]]
        XCTAssertEqual(rows.count - 1, points.count)
        for (row, point) in zip(rows.dropFirst(), points) {
            for (key, value) in zip(header, row) {
                if let number = point[key] as? Double {
                    XCTAssertEqual(Double(value)!, number, accuracy: 1e-9 * max(1, abs(number)), key)
                } else {
                    XCTAssertEqual("\(point[key]!)", value, key)
                }
            }
        }
    }

    final class SeriesCollector: NSObject, XMLParserDelegate {
        var series: [String] = []
        var texts: [String] = []
        var current: String?
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
            if name == "polyline", let series = attributes["data-name"] { self.series.append(series) }
            if name == "text" { current = "" }
        }
        // Entities arrive as separate pieces: join them until the element ends.
        func parser(_ parser: XMLParser, foundCharacters string: String) { current? += string }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            if name == "text", let text = current { texts.append(text) }
            current = nil
        }
    }

    func parse(_ svg: String) -> SeriesCollector {
        let parser = XMLParser(data: Data(svg.utf8))
        let collector = SeriesCollector()
        parser.delegate = collector
        XCTAssert(parser.parse(), "the SVG is not well-formed XML: \(String(describing: parser.parserError))")
        return collector
    }

    func testScaleSVGHasTheExpectedSeries() {
        let chart = parse(ScaleRun.svg(report()))
        XCTAssertEqual(chart.series, [
            "strong scaling", "ideal (strong)", "weak scaling", "ideal (weak)",
            "strong scaling", "weak scaling", "GEMM ceiling / workers", "ideal",
        ])
        XCTAssert(chart.texts.contains("samples per second"))
        XCTAssert(chart.texts.contains("efficiency (%)"))
        XCTAssert(chart.texts.contains("workers"))
    }

    func testCurvesSVG() {
        let records = (1...5).map { EpochRecord(epoch: $0, trainLoss: 1 / Double($0), testErrorPercent: 5 - Double($0) / 2, samplesPerSecond: 1, seconds: 1) }
        let chart = parse(Curves.svg(title: "t <&> \"q\"", runs: [("dropout 0.2/0.5", records), ("no dropout", records)]))
        XCTAssertEqual(chart.series, ["dropout 0.2/0.5", "no dropout", "dropout 0.2/0.5", "no dropout"])
        XCTAssert(chart.texts.contains("test error (%)"))
        XCTAssert(chart.texts.contains("t <&> \"q\""), "titles are escaped and read back intact")
    }

    func testNiceTicks() {
        XCTAssertEqual(SVGChart.niceTicks(min: 0, max: 9.3), [0, 2, 4, 6, 8, 10])
        let ticks = SVGChart.niceTicks(min: 1.2, max: 1.9)
        XCTAssertEqual(ticks.count, 6)
        for (tick, expected) in zip(ticks, [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]) { XCTAssertEqual(tick, expected, accuracy: 1e-9) }
        XCTAssertEqual(SVGChart.niceTicks(min: 0, max: 9614).last, 10000)
    }
}
