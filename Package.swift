// swift-tools-version: 6.1
// Shardwise: data-parallel neural-network training on many-core CPU servers.
//
// Modules point one way: CLI -> runtime -> (layers, datasets) -> kernels -> C shims.
// No unsafeFlags: the package stays usable as a dependency. Hot elementwise kernels
// are written to stay memory-bound at baseline x86-64 (see ShardwiseKernels/Elementwise.swift).
import Foundation
import PackageDescription

// MPI is part of the build when Open MPI's headers are installed (`make` installs
// libopenmpi-dev); otherwise the MPI shim compiles to stubs that say so at run time.
let mpiHeaders = ["/usr/include/x86_64-linux-gnu/openmpi/mpi.h", "/usr/include/aarch64-linux-gnu/openmpi/mpi.h", "/usr/include/mpi.h"]
let haveMPI = mpiHeaders.contains { FileManager.default.fileExists(atPath: $0) }

let package = Package(
    name: "Shardwise",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "shardwise", targets: ["ShardwiseCLI"]),
        .library(name: "ShardwiseRuntime", targets: ["ShardwiseRuntime"]),
        .library(name: "ShardwiseKernels", targets: ["ShardwiseKernels"]),
        .library(name: "ShardwiseLayers", targets: ["ShardwiseLayers"]),
        .library(name: "ShardwiseData", targets: ["ShardwiseData"]),
        .library(name: "ShardwiseTopology", targets: ["ShardwiseTopology"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
    ],
    targets: [
        // BLAS is loaded with dlopen after the kernel-selection variables are set,
        // so the fast kernels are chosen without the user exporting anything.
        .target(name: "CShardwiseBLAS", linkerSettings: [.linkedLibrary("dl")]),
        .systemLibrary(name: "CShardwiseZlib", path: "Sources/CShardwiseZlib"),
        .target(name: "CShardwiseHwloc", linkerSettings: [.linkedLibrary("hwloc")]),
        .target(name: "CShardwiseMPI", linkerSettings: haveMPI ? [.linkedLibrary("mpi")] : []),
        .target(name: "ShardwiseTopology", dependencies: ["CShardwiseHwloc"]),
        .target(name: "ShardwiseKernels", dependencies: ["CShardwiseBLAS"]),
        .target(name: "ShardwiseLayers", dependencies: ["ShardwiseKernels"]),
        .target(name: "ShardwiseData", dependencies: ["CShardwiseZlib"]),
        .target(
            name: "ShardwiseRuntime",
            dependencies: ["ShardwiseKernels", "ShardwiseLayers", "ShardwiseData", "ShardwiseTopology", "CShardwiseMPI"]),
        .executableTarget(
            name: "ShardwiseCLI",
            dependencies: [
                "ShardwiseRuntime", "ShardwiseTopology",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(name: "ShardwiseKernelsTests", dependencies: ["ShardwiseKernels"]),
        .testTarget(name: "ShardwiseLayersTests", dependencies: ["ShardwiseLayers"]),
        .testTarget(name: "ShardwiseDataTests", dependencies: ["ShardwiseData"]),
        .testTarget(name: "ShardwiseTopologyTests", dependencies: ["ShardwiseTopology"]),
        .testTarget(name: "ShardwiseRuntimeTests", dependencies: ["ShardwiseRuntime"]),
        .testTarget(name: "ShardwiseCLITests", dependencies: ["ShardwiseCLI", "ShardwiseRuntime"]),
    ],
    swiftLanguageModes: [.v6]
)
