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

/// The fields whose flags were typed (not left at their defaults): on `--resume` each must
/// agree with the checkpoint's configuration (`RunOptions.typedFields`).
func typedFields(_ given: Set<String> = givenFlags()) -> Set<ConfigurationError.Field> {
    Set(ConfigurationError.Field.allCases.filter { field in flags(setting: field).contains(where: given.contains) })
}
