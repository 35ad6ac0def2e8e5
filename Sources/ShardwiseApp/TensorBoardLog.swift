import Foundation
import Shardwise

/// A training run's TensorBoard events, in its output folder: per step the training loss and
/// learning rate; per epoch the metrics, samples/s, the step-time split and a histogram of each
/// parameter tensor; the configuration as text. Buffered; written at each epoch's end and when
/// the run ends, so a step never waits for the disk.
final class TensorBoardLog {
    let writer: TensorBoardWriter
    /// A log in `folder` (rank 0's output folder), or nil with a warning when it cannot be created.
    init?(folder: String, configuration: RunConfiguration, data: String, console: Console) {
        do { writer = try TensorBoardWriter(folder: folder) } catch {
            console.warn("TensorBoard events not written: \(error)")
            return nil
        }
        let json = (try? JSON.encoder(pretty: true).encode(configuration)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        writer.text("configuration", "Data: \(data)\n\n```json\n\(json)\n```", step: 0)
        try? writer.flush()
    }

    func step(_ p: StepProgress) {
        writer.scalar("train/loss", p.loss, step: p.globalStep)
        writer.scalar("train/learning_rate", p.learningRate, step: p.globalStep)
    }

    /// The epoch's figures, logged at the step it ended.
    func epoch(_ record: EpochRecord, step: Int) {
        writer.scalar("epoch/train_loss", record.trainLoss, step: step)
        writer.scalar("epoch/samples_per_second", record.samplesPerSecond, step: step)
        writer.scalar("epoch/epoch", Double(record.epoch), step: step)
        let figures: [(String, Double?)] = [
            ("test/error_percent", record.testErrorPercent), ("test/rmse", record.testRmse), ("test/mae", record.testMae),
            ("validation/error_percent", record.validationErrorPercent), ("validation/rmse", record.validationRmse),
            ("validation/mae", record.validationMae), ("test/loss", record.testLoss), ("validation/loss", record.validationLoss),
        ]
        for (tag, value) in figures { if let value { writer.scalar(tag, value, step: step) } }
    }

    /// The step-time split and a histogram of each parameter tensor as the epoch ended (a copy
    /// made on the training task: the trainer itself is already in the next epoch), then a flush.
    func snapshot(_ snapshot: EpochSnapshot, layout: ParameterLayout) throws {
        let step = snapshot.globalStep
        writer.scalar("step_ms/compute", 1000 * snapshot.split.compute, step: step)
        writer.scalar("step_ms/waiting", 1000 * snapshot.split.waiting, step: step)
        writer.scalar("step_ms/reduction", 1000 * snapshot.split.reduction, step: step)
        snapshot.parameters.withUnsafeBufferPointer { all in
            for tensor in layout.tensors {
                writer.histogram(tensor.name, UnsafeBufferPointer(rebasing: all[tensor.offset..<tensor.offset + tensor.count]), step: step)
            }
        }
        try flush()
    }

    func flush() throws {
        do { try writer.flush() } catch { throw RunError(error.description) }
    }
}
