/// A data file that cannot be used, with what was found and what was expected.
public struct DataError: Error, CustomStringConvertible, Equatable {
    /// The file (or folder) at fault.
    public var path: String
    /// What was found and what was expected.
    public var problem: String

    /// A problem with the file at `path`.
    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(problem)" }
}
