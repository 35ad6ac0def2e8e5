import ArgumentParser
import Shardwise
import ShardwiseApp

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Show the BLAS library and kernels Shardwise runs, and measure their speed.")

    @Flag(help: "Also compare the BLAS and the portable kernels product by product at the reference network's shapes (shard of 64 rows).")
    var shapes = false

    func run() throws {
        let info: BLASInfo
        do { info = try BLAS.load() } catch { throw RunError("\(error)") }
        print("shardwise \(ShardwiseVersion.current)")
        print("cpu:        \(info.cpu)")
        print("blas:       \(info.library)")
        print("build:      \(info.build)")
        print("kernels:    \(info.kernels) (\(info.selection))")
        let reference = try Network(RunConfiguration.reference().network)
        let rate = try KernelProbe.TrainingGEMMs(network: reference, rows: 128).gflops(seconds: 0.5)
        print(String(format: "sgemm:      %.1f GFLOP/s on one thread (the reference network's products at batch 128)", rate))
        do { try MatrixKernels.select(.portable) } catch { throw RunError(error.description) }
        let portable = try KernelProbe.TrainingGEMMs(network: reference, rows: 128).gflops(seconds: 0.5)
        try? MatrixKernels.select(.blas)
        print(String(format: "portable:   %.1f GFLOP/s on one thread with the %@ kernels (%.0f%% of the BLAS; instruction sets here: %@); --kernels portable uses them", portable, MatrixKernels.portableISA, 100 * portable / rate, MatrixKernels.availableISAs.joined(separator: ", ")))
        print("training:   portable \(MatrixKernels.portableISA) kernels by default (the same weights on any CPU); --kernels blas for this BLAS")
        if shapes {
            print("product (A B: m x n x k)    BLAS GFLOP/s  portable GFLOP/s  portable / BLAS")
            let probe = try KernelProbe.TrainingGEMMs(network: reference, rows: 64)
            do {
                for row in try probe.comparison(seconds: 0.3) {
                    print(String(format: "%-26@ %12.1f %17.1f %15.2f", row.shape, row.blas, row.portable, row.portable / row.blas))
                }
            } catch { throw RunError(error.description) }
        }
        if !info.fastKernels {
            print("warning: only slow BLAS kernels are available on this machine; expect low throughput")
        }
    }
}
