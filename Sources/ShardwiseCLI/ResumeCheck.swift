import ArgumentParser
import Shardwise
import ShardwiseApp

/// The flags typed on the command line (not their defaults): "--lr" for `--lr 0.1` or `--lr=0.1`.
func givenFlags(_ arguments: [String] = CommandLine.arguments) -> Set<String> {
    var flags = Set<String>()
    for argument in arguments.dropFirst() {
        if argument == "--" { break }
        if argument.hasPrefix("--") { flags.insert(String(argument.split(separator: "=", maxSplits: 1)[0])) }
    }
    return flags
}

/// The flags that set a field: its own, and the switches that override it.
func flags(setting field: ConfigurationError.Field) -> [String] {
    switch field {
    case .dropoutInput, .dropoutHidden: [flag(field), "--no-dropout"]
    case .maxNorm: [flag(field), "--no-max-norm"]
    default: [flag(field)]
    }
}

/// A resumed run continues as it was configured: a flag given now that contradicts the
/// checkpoint's configuration is refused with both values, never silently ignored.
func checkResumeFlags(requested: RunConfiguration, stored: RunConfiguration, checkpoint: String, given: Set<String>) throws {
    for (mine, theirs) in zip(requested.settings, stored.settings) where mine.value != theirs.value {
        guard let typed = flags(setting: mine.field).first(where: given.contains) else { continue }
        throw ValidationError(
            "\(typed): \(mine.value) contradicts the checkpoint \(checkpoint), trained with \(theirs.value); a resumed run keeps its configuration: drop the flag, or start a new run in another --out")
    }
}
