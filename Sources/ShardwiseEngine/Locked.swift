#if canImport(Glibc)
import Glibc
#endif

/// A value behind a pthread mutex, for the few values threads share outside the training step.
///
/// Not the standard library's `Mutex`: on Linux its lock is taken inside the uninstrumented
/// Synchronization library, so ThreadSanitizer does not see it order the accesses it guards and
/// now and then reports a race that is not one (it did, in the event channel a training run's
/// events go through). ThreadSanitizer intercepts pthread's mutex, so `make test`'s sanitizer
/// stage sees these locks for what they are.
final class Locked<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` on the value with the mutex held.
    func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
