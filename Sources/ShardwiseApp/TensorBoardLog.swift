import Foundation
import Shardwise

/// A training run's TensorBoard events, in its output folder: per step the training loss and
/// learning rate; per epoch the metrics, samples/s, the step-time split and a histogram of each
/// parameter tensor; the configuration as text. Buffered; written at each epoch's end and when
/// the run ends, so a step never waits for the disk.
final class TensorBoardLog {
    let writer: TensorBoardWriter
    /// Steps taken in this process (the timing's sums start with it).
    var steps = 0

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
        steps += 1
        writer.scalar("train/loss", p.loss, step: p.globalStep)
        writer.scalar("train/learning_rate", p.learningRate, step: p.globalStep)
    }

    func epoch(_ record: EpochRecord, trainer: Trainer) throws {
        let step = trainer.state.globalStep
        writer.scalar("epoch/train_loss", record.trainLoss, step: step)
        writer.scalar("epoch/samples_per_second", record.samplesPerSecond, step: step)
        writer.scalar("epoch/epoch", Double(record.epoch), step: step)
        let figures: [(String, Double?)] = [
            ("test/error_percent", record.testErrorPercent), ("test/rmse", record.testRmse), ("test/mae", record.testMae),
            ("validation/error_percent", record.validationErrorPercent), ("validation/rmse", record.validationRmse),
            ("validation/mae", record.validationMae),
        ]
        for (tag, value) in figures { if let value { writer.scalar(tag, value, step: step) } }
        let split = trainer.timing.meanSplit(steps: max(steps, 1))
        writer.scalar("step_ms/compute", 1000 * split.compute, step: step)
        writer.scalar("step_ms/waiting", 1000 * split.waiting, step: step)
        writer.scalar("step_ms/reduction", 1000 * split.reduction, step: step)
        for tensor in trainer.network.layout.tensors {
            writer.histogram(tensor.name, UnsafeBufferPointer(start: trainer.parameters.pointer + tensor.offset, count: tensor.count), step: step)
        }
        try flush()
    }

    func flush() throws {
        do { try writer.flush() } catch { throw RunError(error.description) }
    }
}
