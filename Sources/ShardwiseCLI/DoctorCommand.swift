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
        print("shardwise \(ShardwiseVersion.current)")
        print("cpu:        \(BLAS.cpuDescription)")
        let reference = try Network(RunConfiguration.reference().network)
        var rate: Double?
        do {
            let info = try BLAS.load()
            print("blas:       \(info.library)")
            print("build:      \(info.build)")
            print("kernels:    \(info.kernels) (\(info.selection))")
            try MatrixKernels.select(.blas)
            let measured = try KernelProbe.TrainingGEMMs(network: reference, rows: 128).gflops(seconds: 0.5)
            print(String(format: "sgemm:      %.1f GFLOP/s on one thread (the reference network's products at batch 128)", measured))
            rate = measured
        } catch {
            print("blas:       none (\(error)); the portable kernels need none, --kernels blas needs one")
        }
        do { try MatrixKernels.select(.portable) } catch { throw RunError(error.description) }
        let portable = try KernelProbe.TrainingGEMMs(network: reference, rows: 128).gflops(seconds: 0.5)
        let share = rate.map { String(format: "%.0f%% of the BLAS; ", 100 * portable / $0) } ?? ""
        print(String(format: "portable:   %.1f GFLOP/s on one thread with the %@ kernels (%@instruction sets here: %@); --kernels portable uses them", portable, MatrixKernels.portableISA, share, MatrixKernels.availableISAs.joined(separator: ", ")))
        print("training:   portable \(MatrixKernels.portableISA) kernels by default (the same weights on any CPU)" + (rate == nil ? "" : "; --kernels blas for this BLAS"))
        guard let info = BLAS.ifPresent else { return }
        try? MatrixKernels.select(.blas)
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
