#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Seconds from a monotonic clock.
@inline(__always)
public func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// Calls `body` once untimed (a warm-up), then repeatedly until about `seconds` have
/// passed; returns the timed calls and the seconds they took. The one measurement loop
/// of every "how fast is X here" figure.
public func measureRepeatedly(seconds: Double, _ body: () -> Void) -> (repetitions: Int, seconds: Double) {
    body()
    var repetitions = 0
    let start = monotonicSeconds()
    var elapsed = 0.0
    repeat {
        body()
        repetitions += 1
        elapsed = monotonicSeconds() - start
    } while elapsed < seconds
    return (repetitions, elapsed)
}
