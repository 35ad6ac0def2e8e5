import Foundation
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Hostile and broken inputs, each run through the real binary in a child process under a
/// 2 GB address-space limit and a time limit. Every case must end with a non-zero status
/// below 128 (no trap, no kill), a first line on standard error that starts with "error:"
/// and names the file or flag, no backtrace, nothing written outside its own folder, and the
/// previous run's checkpoint still loadable.
final class HostileInputTests: XCTestCase {
    /// One hostile input: what it prepares in its folder, the arguments, and what the error must say.
    struct Case {
        var name: String
        var arguments: [String]
        var mentions: [String]
        var prepare: (_ folder: String) throws -> Void = { _ in }
    }

    nonisolated(unsafe) static var root = ""

    /// The sandbox: synthetic MNIST in `data/`, a finished run in `good/` (its checkpoint is the
    /// "previous result" every case must leave intact).
    override class func setUp() {
        super.setUp()
        root = NSTemporaryDirectory() + "shardwise-hostile-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        do {
            try writeSyntheticMNIST(to: "\(root)/data")
            try writeSyntheticMNIST(to: "\(root)/full", train: 60_000)  // MNIST's size, for batches of 60,000
            let trained = try runLimited(
                ["train", "--data", "data", "--epochs", "1", "--layers", "32", "--batch-size", "128", "--workers", "1", "--out", "good"], in: root)
            precondition(trained.status == 0, "the sandbox's run failed: \(trained.error)")
        } catch {
            preconditionFailure("cannot build the sandbox: \(error)")
        }
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
        super.tearDown()
    }

    var checkpoint: String { (try? Checkpoint.newest(in: "\(Self.root)/good")) ?? "\(Self.root)/good/missing" }

    // MARK: Helpers that build a case's files.

    /// A copy of the sandbox's data in `folder/data`, with `file` replaced by `bytes`.
    static func data(_ folder: String, replacing file: String, with bytes: [UInt8]) throws {
        try linkData(folder)
        let path = "\(folder)/data/\(file)"
        try FileManager.default.removeItem(atPath: path)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// `folder/data` holding links to the sandbox's four files.
    static func linkData(_ folder: String) throws {
        try FileManager.default.createDirectory(atPath: "\(folder)/data", withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: "\(root)/data") {
            try FileManager.default.createSymbolicLink(atPath: "\(folder)/data/\(name)", withDestinationPath: "\(root)/data/\(name)")
        }
    }

    static func trainImages() -> [UInt8] {
        Array(FileManager.default.contents(atPath: "\(root)/data/train-images-idx3-ubyte")!)
    }

    /// `bytes` with the big-endian UInt32 at `offset` set to `value`.
    static func setting(_ bytes: [UInt8], at offset: Int, to value: UInt32) -> [UInt8] {
        var out = bytes
        for i in 0..<4 { out[offset + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(i))) }
        return out
    }

    /// A copy of the good run's newest checkpoint in `folder/ckpt`.
    static func copyCheckpoint(_ folder: String) throws -> String {
        let source = try Checkpoint.newest(in: "\(root)/good")
        try FileManager.default.copyItem(atPath: source, toPath: "\(folder)/ckpt")
        return "\(folder)/ckpt"
    }

    static func gzip(_ bytes: [UInt8], to path: String) throws {
        let raw = path + ".raw"
        try Data(bytes).write(to: URL(fileURLWithPath: raw))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "gzip -c -1 '\(raw)' > '\(path)' && rm '\(raw)'"]
        try process.run()
        process.waitUntilExit()
    }

    static func fifo(_ path: String) { mkfifo(path, 0o644) }

    // MARK: The cases.

    static let images = "train-images-idx3-ubyte"
    static let labels = "train-labels-idx1-ubyte"
    // One worker: the same virtual memory (thread stacks) under `ulimit -v` on any machine.
    static let train = ["train", "--data", "data", "--epochs", "1", "--layers", "32", "--batch-size", "128", "--workers", "1"]
    static let shared = ["train", "--data", "../data", "--epochs", "1", "--layers", "32", "--batch-size", "128", "--workers", "1"]

    /// IDX files mutated at every header boundary and size field.
    static var idxCases: [Case] {
        var cases: [Case] = []
        for cut in [0, 2, 4, 8, 12, 16, 16 + 784 * 3 + 5] {
            cases.append(Case(name: "images truncated at byte \(cut)", arguments: train, mentions: [images, "truncated"]) {
                try data($0, replacing: images, with: Array(trainImages().prefix(cut)))
            })
        }
        for (field, offset) in [("count", 4), ("rows", 8), ("columns", 12)] {
            for value: UInt32 in [0, 0xffff_ffff, 0x8000_0000, 0x7fff_ffff] {
                cases.append(Case(name: "images \(field) = \(value)", arguments: train, mentions: [images]) {
                    try data($0, replacing: images, with: setting(trainImages(), at: offset, to: value))
                })
            }
        }
        cases += [
            Case(name: "16-byte images file claiming 65536 x 256 x 256", arguments: train, mentions: [images]) {
                try data($0, replacing: images, with: idxHeader(dimensions: [65_536, 256, 256]))
            },
            Case(name: "16-byte images file claiming 5,000,000 images of 28x28 (3.9 GB)", arguments: train, mentions: [images, "available"]) {
                try data($0, replacing: images, with: idxHeader(dimensions: [5_000_000, 28, 28]))
            },
            // Within the memory bound: read in pieces, so it fails at the first missing byte having allocated ~1 MB.
            Case(name: "16-byte images file claiming 300,000 images of 28x28 (235 MB)", arguments: train, mentions: [images, "truncated"]) {
                try data($0, replacing: images, with: idxHeader(dimensions: [300_000, 28, 28]))
            },
            Case(name: "4 GB of images (bytes and floats) under a 2 GB limit", arguments: train, mentions: [images, "available"]) {
                try data($0, replacing: images, with: idxHeader(dimensions: [5_000_000, 28, 28]) + trainImages().dropFirst(16))
            },
            Case(name: "gzip stream claiming 235 MB that ends after 10 MB", arguments: train, mentions: [images, "truncated"]) {
                try linkData($0)
                try FileManager.default.removeItem(atPath: "\($0)/data/\(images)")
                try gzip(idxHeader(dimensions: [300_000, 28, 28]) + [UInt8](repeating: 0, count: 10_000_000), to: "\($0)/data/\(images).gz")
            },
            Case(name: "corrupted gzip stream", arguments: train, mentions: [images, "corrupted"]) {
                try linkData($0)
                try FileManager.default.removeItem(atPath: "\($0)/data/\(images)")
                try gzip(trainImages(), to: "\($0)/data/\(images).gz")
                var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: "\($0)/data/\(images).gz")))
                for i in stride(from: 200, to: bytes.count - 20, by: 97) { bytes[i] ^= 0x5a }
                try Data(bytes).write(to: URL(fileURLWithPath: "\($0)/data/\(images).gz"))
            },
            Case(name: "wrong magic number", arguments: train, mentions: [images, "magic"]) {
                try data($0, replacing: images, with: setting(trainImages(), at: 0, to: 0x0000_0801))
            },
            Case(name: "trailing bytes after the data", arguments: train, mentions: [images, "more data"]) {
                try data($0, replacing: images, with: trainImages() + [1, 2, 3])
            },
            Case(name: "labels disagree with the images' count", arguments: train, mentions: [labels, "labels"]) {
                try data($0, replacing: labels, with: idxHeader(dimensions: [511]) + [UInt8](repeating: 1, count: 511))
            },
            Case(name: "label out of range", arguments: train, mentions: [labels, "out of range"]) {
                try data($0, replacing: labels, with: idxHeader(dimensions: [512]) + [UInt8](repeating: 200, count: 512))
            },
            Case(name: "images are a FIFO", arguments: train, mentions: [images, "regular file"]) {
                try linkData($0)
                try FileManager.default.removeItem(atPath: "\($0)/data/\(images)")
                fifo("\($0)/data/\(images)")
            },
            Case(name: "images are /dev/zero", arguments: train, mentions: [images, "regular file"]) {
                try linkData($0)
                try FileManager.default.removeItem(atPath: "\($0)/data/\(images)")
                try FileManager.default.createSymbolicLink(atPath: "\($0)/data/\(images)", withDestinationPath: "/dev/zero")
            },
            Case(name: "images are a folder", arguments: train, mentions: [images, "regular file"]) {
                try linkData($0)
                try FileManager.default.removeItem(atPath: "\($0)/data/\(images)")
                try FileManager.default.createDirectory(atPath: "\($0)/data/\(images)", withIntermediateDirectories: false)
            },
        ]
        return cases
    }

    static var stateCases: [Case] {
        func state(_ name: String, mentions: [String], _ edit: @escaping (inout [String: Any]) -> Void) -> Case {
            Case(name: name, arguments: ["eval", "--checkpoint", "ckpt", "--data", "../data"], mentions: ["state.json"] + mentions) {
                try editState(try copyCheckpoint($0), edit)
            }
        }
        func network(_ edit: @escaping (inout [String: Any]) -> Void) -> (inout [String: Any]) -> Void {
            { object in
                var configuration = object["configuration"] as! [String: Any]
                var network = configuration["network"] as! [String: Any]
                edit(&network)
                configuration["network"] = network
                object["configuration"] = configuration
            }
        }
        return [
            state("a newer format version", mentions: ["9.0.0"]) { $0["version"] = "9.0.0" },
            state("an unparsable version", mentions: ["banana"]) { $0["version"] = "banana" },
            Case(name: "network with 5 outputs", arguments: ["eval", "--checkpoint", "ckpt", "--data", "../data"], mentions: ["ckpt", "[5, 32]"]) {
                try editState(try copyCheckpoint($0), network { $0["output_size"] = 5 })
            },
            state("network with a 0-wide layer", mentions: ["0"], network { $0["hidden_sizes"] = [0] }),
            state("network with a 4e9-wide layer", mentions: ["4000000000"], network { $0["hidden_sizes"] = [4_000_000_000, 4_000_000_000] }),
            state("network with 2^62 inputs", mentions: ["inputs"], network { $0["input_size"] = 1 << 62 }),
            state("batch size 0", mentions: ["batchSize"]) { var c = $0["configuration"] as! [String: Any]; c["batch_size"] = 0; $0["configuration"] = c },
            state("learning rate 1e39", mentions: ["learningRate"]) {
                var c = $0["configuration"] as! [String: Any]
                var o = c["optimizer"] as! [String: Any]
                o["learning_rate"] = 1e39
                c["optimizer"] = o
                $0["configuration"] = c
            },
            state("no configuration", mentions: ["not a training state"]) { $0["configuration"] = nil },
            state("epoch -5", mentions: ["epoch -5"]) { $0["epoch"] = -5 },
            state("epoch 2^62", mentions: ["epoch"]) { $0["epoch"] = 1 << 62 },
            state("step -1 in the epoch", mentions: ["step -1"]) { $0["step_in_epoch"] = -1 },
            state("epoch records missing", mentions: ["records"]) { $0["records"] = [Any]() },
            state("negative epoch seconds", mentions: ["seconds -1"]) { $0["epoch_seconds"] = -1 },
            Case(name: "state.json not JSON", arguments: ["eval", "--checkpoint", "ckpt", "--data", "../data"], mentions: ["state.json"]) {
                let folder = try copyCheckpoint($0)
                try Data("{{{".utf8).write(to: URL(fileURLWithPath: "\(folder)/state.json"))
                try resealCheckpoint(folder)
            },
            Case(name: "state.json truncated (checksum)", arguments: ["eval", "--checkpoint", "ckpt", "--data", "../data"], mentions: ["state.json", "checksum"]) {
                let folder = try copyCheckpoint($0)
                let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/state.json"))
                try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: "\(folder)/state.json"))
            },
            Case(name: "SHA256SUMS missing", arguments: ["eval", "--checkpoint", "ckpt", "--data", "../data"], mentions: ["SHA256SUMS"]) {
                try FileManager.default.removeItem(atPath: "\(try copyCheckpoint($0))/SHA256SUMS")
            },
            Case(name: "SHA256SUMS of 10 MB", arguments: ["eval", "--checkpoint", "ckpt", "--data", "../data"], mentions: ["SHA256SUMS"]) {
                try Data(count: 10_000_000).write(to: URL(fileURLWithPath: "\(try copyCheckpoint($0))/SHA256SUMS"))
            },
            Case(name: "model.safetensors is a FIFO", arguments: ["eval", "--checkpoint", "ckpt", "--data", "../data"], mentions: ["model.safetensors", "regular file"]) {
                let folder = try copyCheckpoint($0)
                try FileManager.default.removeItem(atPath: "\(folder)/model.safetensors")
                fifo("\(folder)/model.safetensors")
            },
        ]
    }

    /// Flags whose values pass as Double but break as Float, sizes that overflow, memory no machine has.
    static var flagCases: [Case] {
        [
            Case(name: "layers of 4e9", arguments: shared + ["--layers", "4000000000,4000000000"], mentions: ["--layers"]),
            Case(name: "layers needing 6.8 GB", arguments: shared + ["--layers", "20000,20000"], mentions: ["memory", "--layers"]),
            Case(name: "batch 60000 in shards of 1 (~700 GB)", arguments: ["train", "--data", "../full", "--epochs", "1", "--batch-size", "60000", "--shard-size", "1", "--workers", "1"],
                 mentions: ["memory", "GB", "--batch-size 60000 / --shard-size 1"]),
            Case(name: "a shard per sample of a huge batch", arguments: shared + ["--layers", "4096,4096", "--batch-size", "512", "--shard-size", "1"], mentions: ["memory", "--batch-size"]),
            Case(name: "40,000 workers", arguments: shared.dropLast(2) + ["--workers", "40000", "--oversubscribe"], mentions: ["--workers"]),
            Case(name: "max-norm 1e-46 (0 as a Float)", arguments: shared + ["--max-norm", "1e-46"], mentions: ["--max-norm"]),
            Case(name: "learning rate 1e39 (infinite as a Float)", arguments: shared + ["--lr", "1e39"], mentions: ["--lr"]),
            Case(name: "weight decay inf", arguments: shared + ["--weight-decay", "inf"], mentions: ["--weight-decay"]),
            Case(name: "learning rate nan", arguments: shared + ["--lr", "nan"], mentions: ["--lr"]),
            Case(name: "dropout 0.99999999999 (1 as a Float)", arguments: shared + ["--dropout-hidden", "0.99999999999"], mentions: ["--dropout-hidden"]),
            Case(name: "momentum 1", arguments: shared + ["--momentum", "1"], mentions: ["--momentum"]),
            Case(name: "RMSprop alpha nan (named as --alpha, not --beta2)", arguments: shared + ["--optimizer", "rmsprop", "--alpha", "nan"], mentions: ["--alpha", "nan"]),
            Case(name: "mpi-timeout inf", arguments: shared + ["--mpi-timeout", "inf"], mentions: ["--mpi-timeout"]),
            Case(name: "an exchange pattern that does not exist", arguments: shared + ["--exchange", "ring"], mentions: ["--exchange"]),
            Case(name: "validation set as large as the data", arguments: shared + ["--validation", "512"], mentions: ["--validation"]),
            Case(name: "batch of 2^31 samples", arguments: shared + ["--batch-size", "2147483648", "--shard-size", "1"], mentions: ["--batch-size"]),
            Case(name: "checkpoint every 0 steps", arguments: shared + ["--checkpoint-every", "0"], mentions: ["--checkpoint-every"]),
            Case(name: "10^11 Monte Carlo passes", arguments: ["eval", "--checkpoint", "../good", "--data", "../data", "--mc-dropout", "100000000000"], mentions: ["--mc-dropout"]),
            Case(name: "scaling to 40,000 workers", arguments: ["scale", "--workers", "1,40000", "--synthetic-data"], mentions: ["--workers"]),
            Case(name: "scaling with a worker count given twice", arguments: ["scale", "--workers", "1,2,1", "--synthetic-data"], mentions: ["--workers", "gives 1 more than once"]),
            Case(name: "scaling with random data of 1.2 TB", arguments: ["scale", "--batch-size", "100000000", "--synthetic-data", "--workers", "1"], mentions: ["--batch-size"]),
            Case(name: "evaluate every 0 epochs", arguments: shared + ["--evaluate-every", "0"], mentions: ["--evaluate-every"]),
            Case(name: "sweep sizes with a zero", arguments: sweep + ["--train-samples", "0,100"], mentions: ["--train-samples"]),
            Case(name: "sweep size larger than the data", arguments: sweep + ["--train-samples", "200,100000"], mentions: ["--train-samples", "100000", "available"]),
            Case(name: "sweep size below the batch", arguments: sweep + ["--train-samples", "100"], mentions: ["--batch-size", "128"]),
            Case(name: "one fold", arguments: sweep + ["--folds", "1"], mentions: ["--folds"]),
            Case(name: "more folds than pairs of samples", arguments: sweep + ["--folds", "400"], mentions: ["--folds", "400"]),
            Case(name: "0 trials side by side", arguments: sweep + ["--parallel-trials", "0"], mentions: ["--parallel-trials"]),
            Case(name: "100,000 trials side by side", arguments: sweepOwnWorkers + ["--parallel-trials", "100000"], mentions: ["--parallel-trials", "usable cores"]),
            Case(name: "workers given to trials side by side", arguments: sweep + ["--parallel-trials", "2"], mentions: ["--workers", "--parallel-trials"]),
            Case(name: "seeds-above without a count", arguments: sweep + ["--seeds-above", "5000"], mentions: ["--seeds-above"]),
            Case(name: "target error nan", arguments: sweep + ["--target-error", "nan"], mentions: ["--target-error"]),
        ]
    }

    /// A sweep of two one-epoch trials into its own folder.
    static let sweep = ["sweep", "--data", "../data", "--epochs", "1", "--layers", "32", "--batch-size", "128", "--workers", "1",
                        "--dropout-input", "0", "--dropout-hidden", "0,0.5", "--validation-samples", "100", "--out", "sweep"]
    /// The same, each trial's workers left to the sweep (one per core of its core set).
    static let sweepOwnWorkers = sweep.enumerated().filter { $0.offset != sweep.firstIndex(of: "--workers")! && $0.offset != sweep.firstIndex(of: "--workers")! + 1 }.map(\.element)

    /// Output folders that hold another run, resumes that contradict their checkpoint.
    static var folderCases: [Case] {
        [
            Case(name: "--out holds another run", arguments: shared + ["--out", "../good"], mentions: ["--out", "--overwrite"]),
            Case(name: "--out is a file", arguments: shared + ["--out", "file"], mentions: ["file"]) {
                try Data("x".utf8).write(to: URL(fileURLWithPath: "\($0)/file"))
            },
            Case(name: "--out held by another process", arguments: shared + ["--out", "busy"], mentions: ["busy", "in use"]) {
                try FileManager.default.createDirectory(atPath: "\($0)/busy", withIntermediateDirectories: false)
                let holder = Process()
                holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
                holder.arguments = ["\($0)/busy/.shardwise.lock", "sleep", "20"]
                try holder.run()
                usleep(300_000)  // let flock take the lock
            },
            Case(name: "resume with another learning rate", arguments: ["train", "--workers", "1", "--resume", "ckpt-run", "--data", "../data", "--lr", "0.5"], mentions: ["--lr", "0.5"]) {
                try FileManager.default.createDirectory(atPath: "\($0)/ckpt-run", withIntermediateDirectories: false)
                try FileManager.default.copyItem(atPath: try Checkpoint.newest(in: "\(root)/good"), toPath: "\($0)/ckpt-run/checkpoint-000000001")
            },
            Case(name: "resume a state whose global step disagrees with its epoch", arguments: ["train", "--workers", "1", "--resume", "ckpt-run", "--data", "../data"], mentions: ["global step 5"]) {
                try FileManager.default.createDirectory(atPath: "\($0)/ckpt-run", withIntermediateDirectories: false)
                try FileManager.default.copyItem(atPath: try Checkpoint.newest(in: "\(root)/good"), toPath: "\($0)/ckpt-run/checkpoint-000000001")
                try editState("\($0)/ckpt-run/checkpoint-000000001") { $0["global_step"] = 5 }
            },
            Case(name: "resume with other layers", arguments: ["train", "--workers", "1", "--resume", "../good", "--data", "../data", "--layers", "64"], mentions: ["--layers"]),
            Case(name: "resume on other data", arguments: ["train", "--workers", "1", "--resume", "ckpt-run", "--data", "../data", "--train-samples", "256"], mentions: ["other data"]) {
                try FileManager.default.createDirectory(atPath: "\($0)/ckpt-run", withIntermediateDirectories: false)
                try FileManager.default.copyItem(atPath: try Checkpoint.newest(in: "\(root)/good"), toPath: "\($0)/ckpt-run/checkpoint-000000001")
            },
            Case(name: "resume a folder without checkpoints", arguments: ["train", "--workers", "1", "--resume", "empty", "--data", "../data"], mentions: ["empty", "no checkpoint"]) {
                try FileManager.default.createDirectory(atPath: "\($0)/empty", withIntermediateDirectories: false)
            },
            Case(name: "resume a damaged checkpoint", arguments: ["train", "--workers", "1", "--resume", "damaged", "--data", "../data"], mentions: ["damaged", "checksum"]) {
                try FileManager.default.createDirectory(atPath: "\($0)/damaged", withIntermediateDirectories: false)
                try FileManager.default.copyItem(atPath: try Checkpoint.newest(in: "\(root)/good"), toPath: "\($0)/damaged/checkpoint-000000001")
                try Data("{}".utf8).write(to: URL(fileURLWithPath: "\($0)/damaged/checkpoint-000000001/state.json"))
            },
        ]
    }

    func run(_ cases: [Case], file: StaticString = #filePath, line: UInt = #line) throws {
        let before = snapshot(Self.root)
        for (index, c) in cases.enumerated() {
            let folder = "\(Self.root)/case-\(c.name.filter { $0.isLetter || $0.isNumber })-\(index)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try c.prepare(folder)
            let outcome = try runLimited(c.arguments, in: folder, seconds: 60)
            let what = "\(c.name) (\(c.arguments.joined(separator: " ")))"
            XCTAssert((1..<128).contains(outcome.status), "\(what): exit status \(outcome.status), expected 1 to 127; \(outcome.error.suffix(600))", file: file, line: line)
            XCTAssert(outcome.firstLine.hasPrefix("error: "), "\(what): first line '\(outcome.firstLine)'", file: file, line: line)
            for text in c.mentions {
                XCTAssert(outcome.firstLine.contains(text), "\(what): '\(outcome.firstLine)' does not mention '\(text)'", file: file, line: line)
            }
            for trap in ["Fatal error", "Backtrace", "Stack dump", "Illegal instruction", "Segmentation"] {
                XCTAssertFalse(outcome.error.contains(trap), "\(what): \(outcome.error.suffix(600))", file: file, line: line)
            }
        }
        XCTAssertEqual(snapshot(Self.root), before, "a case wrote outside its own folder", file: file, line: line)
        // The previous run's checkpoint is still whole and loads.
        let evaluated = try runLimited(["eval", "--checkpoint", "good", "--data", "data"], in: Self.root)
        XCTAssertEqual(evaluated.status, 0, evaluated.error, file: file, line: line)
    }

    /// An output path that names a device node, a FIFO, a symbolic link to one, a folder or
    /// nothing at all is refused by name before anything is written, and left as it was: the
    /// atomic write's rename used to replace even `/dev/null` with a regular file. The nodes are
    /// the test's own, in its own folder (a character device like /dev/null's needs root; skipped otherwise).
    func testOutputsThatAreNotRegularFilesAreRefused() throws {
        let folder = "\(Self.root)/case-not-regular"  // case-: outside the other tests' snapshots
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: "\(folder)/dir.onnx", withIntermediateDirectories: true)
        var targets: [(name: String, kind: mode_t, found: String)] = [("dir.onnx", S_IFDIR, "a folder")]
        for name in ["pipe.onnx", "pipe.csv", "pipe.svg"] {
            XCTAssertEqual(mkfifo("\(folder)/\(name)", 0o644), 0)
            targets.append((name, S_IFIFO, "a FIFO"))
        }
        if mknod("\(folder)/null.onnx", S_IFCHR | 0o666, 259) == 0 {  // major 1, minor 3: /dev/null's
            XCTAssertEqual(symlink("null.onnx", "\(folder)/link.onnx"), 0)
            XCTAssertEqual(mknod("\(folder)/null.csv", S_IFCHR | 0o666, 259), 0)
            targets += [("null.onnx", S_IFCHR, "a character device"), ("link.onnx", S_IFCHR, "a character device"), ("null.csv", S_IFCHR, "a character device")]
        } else {
            print("no character device made (not root): FIFOs and folders only")
        }
        let listing = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        for target in targets {
            let arguments: [String]
            switch target.name.split(separator: ".").last! {
            case "onnx": arguments = ["export", "--checkpoint", "../good", "--onnx", target.name]
            case "csv": arguments = ["predict", "--checkpoint", "../good", "--data", "../data", "--out", target.name]
            default: arguments = ["curves", "../good", "--out", target.name]
            }
            let outcome = try runLimited(arguments, in: folder, seconds: 60)
            XCTAssertEqual(outcome.status, 1, "\(arguments): \(outcome.error)")
            XCTAssert(outcome.firstLine.hasPrefix("error: ") && outcome.firstLine.contains(target.name) && outcome.firstLine.contains("it is \(target.found); expected a regular file"), "\(arguments): '\(outcome.firstLine)'")
            var info = stat()
            XCTAssertEqual(stat("\(folder)/\(target.name)", &info), 0)
            XCTAssertEqual(info.st_mode & S_IFMT, target.kind, "\(target.name) was replaced")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(), listing, "a file was created or removed beside the targets")
        for arguments in [["export", "--checkpoint", "../good", "--onnx", ""], ["curves", "../good", "--out", ""]] {
            let outcome = try runLimited(arguments, in: folder, seconds: 60)
            XCTAssertEqual(outcome.status, 1, "\(arguments): \(outcome.error)")
            XCTAssert(outcome.firstLine.contains("an empty path; expected a file name"), "\(arguments): '\(outcome.firstLine)'")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(), listing)
    }

    func testIDXFiles() throws { try run(Self.idxCases) }
    func testSafetensorsFiles() throws { try run(Self.safetensorsCases) }
    func testCheckpointStates() throws { try run(Self.stateCases) }
    func testFlags() throws { try run(Self.flagCases) }
    func testOutputFoldersAndResume() throws { try run(Self.folderCases) }
    func testDataFiles() throws { try run(Self.dataFileCases) }
    func testModelDescriptions() throws { try run(Self.modelCases) }
    func testCounts() throws { try run(Self.countCases) }
    func testLanguageModels() throws { try run(Self.languageModelCases) }

    /// Every case checks what its error says (at least one name or figure besides "error:"),
    /// and no two share a name (a failure names the one case).
    func testEveryCaseChecksItsMessage() {
        let all = [Self.idxCases, Self.safetensorsCases, Self.stateCases, Self.flagCases, Self.folderCases, Self.dataFileCases, Self.modelCases, Self.countCases, Self.languageModelCases].flatMap { $0 }
        XCTAssertEqual(all.filter { $0.mentions.allSatisfy(\.isEmpty) }.map(\.name), [], "cases that check no part of their message")
        XCTAssertEqual(Dictionary(grouping: all, by: \.name).filter { $0.value.count > 1 }.keys.sorted(), [], "names used twice")
    }
}
