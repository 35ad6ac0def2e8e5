import Foundation
import Shardwise
import ShardwiseApp
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Ranks on different "hosts" over TCP: network namespaces joined by rate-limited veth links
/// (Tests/multihost/testbed.sh), each host's ranks on its own cores (`--affinity`). Skipped
/// where namespaces cannot be created (not root, or a container without CAP_SYS_ADMIN).
final class MultiHostTests: XCTestCase {
    static let testbed = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("multihost/testbed.sh").path
    var folder = ""

    override func setUpWithError() throws {
        _ = try sharedMNIST()
        let check = try Self.launch([Self.testbed, "--check"])
        let why = String(decoding: check.1.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        check.0.waitUntilExit()
        guard check.0.terminationStatus == 0 else { throw XCTSkip(why.isEmpty ? "the multi-host test bed cannot run here" : why) }
        folder = NSTemporaryDirectory() + "shardwise-hosts-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if !folder.isEmpty { try? FileManager.default.removeItem(atPath: folder) }
    }

    static func launch(_ command: [String]) throws -> (Process, Pipe, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return (process, out, err)
    }

    func run(_ command: [String]) throws -> (status: Int32, output: String, error: String) {
        let (process, out, err) = try Self.launch(command)
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
    }

    /// The reference recipe (784-1024x3-10, dropout 0.2/0.5, max-norm, momentum), 6 steps of 4 shards of 32.
    func training(_ out: String) -> [String] {
        [shardwiseExecutable, "train", "--train-samples", "768", "--test-samples", "100", "--epochs", "1",
         "--batch-size", "128", "--shard-size", "32", "--seed", "11", "--affinity", "--out", out]
    }

    func summary(_ out: String) throws -> RunSummary {
        try JSON.decoder().decode(RunSummary.self, from: Data(contentsOf: URL(fileURLWithPath: "\(out)/summary.json")))
    }

    /// What the test bed left behind: namespaces, links, and processes of this test's runs.
    func leftovers() throws -> [String] {
        let listed = try run([Self.testbed, "--leftovers"])
        return listed.output.split(separator: "\n").map(String.init) + processes(matching: folder).map { "process \($0.pid)" }
    }

    /// Processes whose command line mentions `text`, with their MPI rank when they are one.
    func processes(matching text: String) -> [(pid: Int32, rank: Int?)] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return names.compactMap { name in
            guard let pid = Int32(name), pid != getpid(),
                  let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                  String(decoding: command, as: UTF8.self).contains(text) else { return nil }
            let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") ?? Data()
            let rank = environ.split(separator: 0).lazy.map { String(decoding: $0, as: UTF8.self) }
                .first { $0.hasPrefix("OMPI_COMM_WORLD_RANK=") }.flatMap { Int($0.dropFirst("OMPI_COMM_WORLD_RANK=".count)) }
            return (pid, rank)
        }
    }

    /// 2 and 3 hosts over TCP (overlapped and not, the ordered exchange) train the single
    /// process's weights, and leave no namespace, link or process behind.
    func testNamespaceHostsOverTCPMatchOneProcess() throws {
        let single = try run(training("\(folder)/single") + ["--workers", "2", "--oversubscribe"])
        XCTAssertEqual(single.status, 0, single.error)
        let reference = try summary("\(folder)/single")
        for (hosts, flags) in [(2, [String]()), (3, []), (2, ["--no-overlap"])] {
            let out = "\(folder)/hosts\(hosts)\(flags.first ?? "")"
            let result = try run([Self.testbed, "--hosts", "\(hosts)", "--rate", "10gbit", "--timeout", "300", "--"] + training(out) + flags)
            XCTAssertEqual(result.status, 0, "\(hosts) hosts \(flags): \(result.error)")
            let multi = try summary(out)
            XCTAssertEqual(multi.ranks, hosts)
            XCTAssertEqual(multi.overlap, flags.isEmpty)
            XCTAssertEqual(multi.workers, 1, "each host has one core, and --affinity keeps its rank to it")
            XCTAssertEqual(multi.weightsSha256, reference.weightsSha256, "\(hosts) hosts \(flags)")
            XCTAssertEqual(multi.epochs.map(\.trainLoss), reference.epochs.map(\.trainLoss))
            // Every rank sends its shards' slices and its part of the parameters: with one shard a
            // rank (4 shards, 3 hosts: 2, 1, 1) that is a ring all-reduce's data; rank 0 has two.
            let traffic = try XCTUnwrap(multi.traffic)
            XCTAssertGreaterThanOrEqual(traffic.sentBytes, traffic.ringAllreduceBytes / 2)
            XCTAssert(result.error.contains("testbed: host h\(hosts - 1) = namespace"), result.error)
            XCTAssertEqual(try leftovers(), [])
        }
    }

    /// A rank killed on one host (SIGKILL) ends the job at once with the launcher's message; a
    /// rank that hangs (SIGSTOP) ends it within --mpi-timeout with the surviving rank's message,
    /// from the overlapped exchange. Either way the test bed removes everything it made.
    func testKilledOrHungRankOnOneHostEndsTheJob() throws {
        for (signal, expected) in [(SIGKILL, "rank 1 with PID"), (SIGSTOP, "rank 0 of 2 on")] {
            let out = "\(folder)/signal\(signal)"
            let arguments = [Self.testbed, "--hosts", "2", "--rate", "1gbit", "--timeout", "300", "--", shardwiseExecutable, "train",
                             "--train-samples", "4096", "--test-samples", "100", "--epochs", "50", "--batch-size", "128", "--shard-size", "32",
                             "--layers", "256,256", "--affinity", "--mpi-timeout", "10", "--out", out]
            let (process, _, err) = try Self.launch(arguments)
            let deadline = Date().addingTimeInterval(120)
            var victim: Int32?
            while victim == nil && Date() < deadline && process.isRunning {
                if access("\(out)/metrics.jsonl", F_OK) == 0 { victim = processes(matching: out).first { $0.rank == 1 }?.pid }
                usleep(50_000)
            }
            let pid = try XCTUnwrap(victim, "rank 1 never started training")
            let signalled = Date()
            kill(pid, signal)
            let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            let seconds = Date().timeIntervalSince(signalled)
            XCTAssertNotEqual(process.terminationStatus, 0)
            XCTAssertLessThan(seconds, 30, "signal \(signal): the job took \(seconds) s to end: \(message)")
            if signal == SIGKILL {
                XCTAssert(message.contains("\(expected) \(pid) on node h1 exited on signal 9"), message)
            } else {
                XCTAssert(message.contains(expected) && message.contains("no answer from the other ranks within 10 s"), message)
            }
            XCTAssertEqual(try leftovers(), [])
        }
    }

    /// Killed itself (SIGTERM, as a CI runner's timeout does), the test bed still removes its
    /// namespaces, links and processes.
    func testTestbedCleansUpWhenKilled() throws {
        let out = "\(folder)/interrupted"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.testbed)
        process.arguments = ["--hosts", "2", "--"] + training(out) + ["--epochs", "50", "--layers", "256,256"]
        // Nothing reads its output: a pipe left full would block the test bed, not test it.
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while access("\(out)/metrics.jsonl", F_OK) != 0 && Date() < deadline && process.isRunning { usleep(50_000) }
        XCTAssertFalse(processes(matching: out).isEmpty, "the job never started")
        process.terminate()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 143)
        XCTAssertEqual(try leftovers(), [])
        XCTAssertEqual(processes(matching: "swtb").map(\.pid), [], "an mpirun or daemon of the test bed outlived it")
    }
}
