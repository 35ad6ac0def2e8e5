import ArgumentParser
import ShardwiseKernels
import ShardwiseRuntime

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Show the BLAS library and kernels Shardwise runs, and measure their speed.")

    func run() throws {
        let info: BLASInfo
        do { info = try BLAS.load() } catch { throw RunError("\(error)") }
        print("shardwise \(Shardwise.version)")
        print("cpu:        \(info.cpu)")
        print("blas:       \(info.library)")
        print("build:      \(info.build)")
        print("kernels:    \(info.kernels) (\(info.selection))")
        let rate = KernelProbe.gemmGFLOPS(m: 128, n: 1024, k: 1024, seconds: 0.3)
        print(String(format: "sgemm:      %.1f GFLOP/s on one thread (128x1024x1024)", rate))
        if !info.fastKernels {
            print("warning: only slow BLAS kernels are available on this machine; expect low throughput")
        }
    }
}
