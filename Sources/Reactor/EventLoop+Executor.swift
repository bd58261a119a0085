// The loop as a Swift executor: tasks that prefer it (`Task(executorPreference: loop)`) and actors
// whose `unownedExecutor` is the loop run on the loop thread, with no hop to the global pool.

extension EventLoop: TaskExecutor, SerialExecutor {
    public func enqueue(_ job: consuming ExecutorJob) {
        enqueueJob(UnownedJob(job))
    }

    public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    public func isSameExclusiveExecutionContext(other: EventLoop) -> Bool { other === self }

    public func checkIsolated() {
        precondition(inEventLoop, "not on event loop \(index)")
    }
}
