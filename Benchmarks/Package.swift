// swift-tools-version: 6.1
// Benchmarks live in their own package so the benchmark plugin does not slow every build.
// Run: make bench   (or: cd Benchmarks && swift package --allow-writing-to-package-directory benchmark)
import PackageDescription

let package = Package(
    name: "ShardwiseBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Shardwise", path: "../"),
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "Kernels",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Shardwise", package: "Shardwise"),
                .product(name: "_ShardwiseApp", package: "Shardwise"),
            ],
            path: "Benchmarks/Kernels",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ],
    swiftLanguageModes: [.v6]
)
