// swift-tools-version: 6.1
// An application of Shardwise as a user writes one: it depends on the `Shardwise`
// product alone, defines layers of its own and trains a model on MNIST.
import PackageDescription

let package = Package(
    name: "TrainMNIST",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "Shardwise", path: "../..")],
    targets: [
        .target(name: "CustomLayers", dependencies: [.product(name: "Shardwise", package: "Shardwise")]),
        .executableTarget(name: "TrainMNIST", dependencies: ["CustomLayers", .product(name: "Shardwise", package: "Shardwise")]),
        .testTarget(name: "CustomLayersTests", dependencies: ["CustomLayers", .product(name: "Shardwise", package: "Shardwise")]),
    ],
    swiftLanguageModes: [.v6]
)
