// swift-tools-version: 6.1
// Shardwise: data-parallel neural-network training on many-core CPU servers.
//
// A library first (`import Shardwise`), a command line second. Modules point one way:
//
//   ShardwiseCLI -> ShardwiseApp -> ShardwiseEngine -> ShardwiseIO -> (ShardwiseLayers, ShardwiseTopology, ShardwiseData)
//                                                   -> ShardwiseKernels -> C shims
//
// `Shardwise` is the product users depend on: it re-exports the engine, I/O, layers,
// topology, data and kernels. The application layer (runs, sweeps, scaling runs, reports,
// charts) is the CLI's and not part of the product.
// No unsafeFlags: the package stays usable as a dependency. Hot elementwise kernels
// are written to stay memory-bound at baseline x86-64 (see ShardwiseKernels/Elementwise.swift).
import Foundation
import PackageDescription

/// The git commit being built, for `shardwise --version` ("unknown" outside a git checkout).
/// Read from .git directly (no git process). SwiftPM caches a manifest's evaluation, so the
/// Makefile's builds pass --manifest-cache none to read it afresh.
func gitCommit() -> String {
    let git = Context.packageDirectory + "/.git"
    guard let head = try? String(contentsOfFile: git + "/HEAD", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) else { return "unknown" }
    guard head.hasPrefix("ref: ") else { return String(head.prefix(12)) }
    let ref = String(head.dropFirst(5))
    if let hash = try? String(contentsOfFile: "\(git)/\(ref)", encoding: .utf8) { return String(hash.prefix(12)) }
    let packed = (try? String(contentsOfFile: git + "/packed-refs", encoding: .utf8)) ?? ""
    let line = packed.split(separator: "\n").first { $0.hasSuffix(" " + ref) }
    return line.map { String($0.prefix(12)) } ?? "unknown"
}

// MPI: the shim compiles against Open MPI's headers when installed (`make` installs libopenmpi-dev),
// to stubs that say so at run time otherwise; it opens the library at run time, under a launcher alone.
let package = Package(
    name: "Shardwise",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Shardwise", targets: ["Shardwise"]),
        .executable(name: "shardwise", targets: ["ShardwiseCLI"]),
        // The application layer (measurements, reports), for the Benchmarks package: not the library's API.
        .library(name: "_ShardwiseApp", targets: ["ShardwiseApp"]),
    ],
    dependencies: [
        // The command line's flags, help and errors (the CLI target only).
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        // Model files (`--model FILE`): YAML, the format people write configurations in, with line
        // and column in its errors (the application layer only; the library takes layers in code
        // or in the layer language, which needs no parser but its own).
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        // `swift package generate-documentation --target Shardwise`: the DocC catalog. A plugin, linked into nothing.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", exact: "1.5.0"),
    ],
    targets: [
        // BLAS is loaded with dlopen after the kernel-selection variables are set,
        // so the fast kernels are chosen without the user exporting anything.
        .target(
            name: "CShardwiseBLAS", cSettings: [.define("SHARDWISE_GIT_COMMIT", to: "\"\(gitCommit())\"")],
            linkerSettings: [.linkedLibrary("dl")]),
        .systemLibrary(name: "CShardwiseZlib", path: "Sources/CShardwiseZlib"),
        .target(name: "CShardwiseHwloc", linkerSettings: [.linkedLibrary("hwloc")]),
        // Open MPI is opened with dlopen when a launcher starts the process, never linked: the binary starts without it.
        .target(name: "CShardwiseMPI", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "ShardwiseKernels", dependencies: ["CShardwiseBLAS"]),
        .target(name: "ShardwiseTopology", dependencies: ["CShardwiseHwloc"]),
        .target(name: "ShardwiseData", dependencies: ["ShardwiseKernels", "CShardwiseZlib"]),
        .target(name: "ShardwiseLayers", dependencies: ["ShardwiseKernels", "ShardwiseData"]),
        .target(name: "ShardwiseIO", dependencies: ["ShardwiseKernels", "ShardwiseData", "ShardwiseLayers"]),
        .target(
            name: "ShardwiseEngine",
            dependencies: ["ShardwiseKernels", "ShardwiseLayers", "ShardwiseData", "ShardwiseTopology", "ShardwiseIO", "CShardwiseMPI"]),
        .target(
            name: "Shardwise",
            dependencies: ["ShardwiseKernels", "ShardwiseLayers", "ShardwiseData", "ShardwiseTopology", "ShardwiseIO", "ShardwiseEngine"]),
        .target(name: "ShardwiseApp", dependencies: ["Shardwise", .product(name: "Yams", package: "Yams")]),
        .executableTarget(
            name: "ShardwiseCLI",
            dependencies: [
                "ShardwiseApp",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(name: "ShardwiseKernelsTests", dependencies: ["ShardwiseKernels"]),
        .testTarget(name: "ShardwiseLayersTests", dependencies: ["ShardwiseLayers"]),
        .testTarget(name: "ShardwiseDataTests", dependencies: ["ShardwiseData"]),
        .testTarget(name: "ShardwiseTopologyTests", dependencies: ["ShardwiseTopology"]),
        .testTarget(name: "ShardwiseEngineTests", dependencies: ["Shardwise", "ShardwiseApp"]),
        .testTarget(name: "ShardwiseCLITests", dependencies: ["ShardwiseCLI", "ShardwiseApp"]),
        // The real binary against hostile files, flags and folders, under memory and time limits.
        .testTarget(name: "ShardwiseHostileInputTests", dependencies: ["ShardwiseCLI", "Shardwise"]),
    ],
    swiftLanguageModes: [.v6]
)
