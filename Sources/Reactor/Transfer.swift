/// Moves a value that is not `Sendable` to a loop (or a task on one) that alone uses it from then
/// on: the caller vouches for that, the compiler cannot check it.
public struct Transfer<T>: @unchecked Sendable {
    public let value: T
    public init(_ v: T) { value = v }
}
