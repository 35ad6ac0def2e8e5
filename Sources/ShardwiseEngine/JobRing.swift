import Synchronization

/// A bounded lock-free queue of jobs with many producers and one consumer
/// (Vyukov's bounded queue: each slot carries a sequence number that says
/// whose turn it is). No allocation after init, no lock.
final class JobRing: @unchecked Sendable {
    final class Slot: @unchecked Sendable {
        /// `position` when free for the producer of that position,
        /// `position + 1` when it holds that position's job.
        let sequence: Atomic<Int>
        var job: UnownedJob?
        init(_ position: Int) { sequence = Atomic(position) }
    }

    let slots: [Slot]
    let mask: Int
    /// Next position to write; producers claim positions by CAS.
    let tail = Atomic<Int>(0)
    /// Next position to read; only the consumer moves it.
    let head = Atomic<Int>(0)

    init(capacity: Int) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "capacity must be a power of two")
        slots = (0..<capacity).map { Slot($0) }
        mask = capacity - 1
    }

    /// Adds a job; false when the ring is full.
    func push(_ job: UnownedJob) -> Bool {
        var position = tail.load(ordering: .relaxed)
        while true {
            let slot = slots[position & mask]
            // Acquiring: pairs with the consumer's releasing store that freed the slot,
            // so our write of `job` cannot race with its read of the previous job.
            let sequence = slot.sequence.load(ordering: .acquiring)
            if sequence == position {
                // Relaxed CAS: it only claims the position; publication is the store below.
                let (exchanged, current) = tail.compareExchange(expected: position, desired: position + 1, ordering: .relaxed)
                if exchanged {
                    slot.job = job
                    // Releasing: the consumer that sees position + 1 sees the job.
                    slot.sequence.store(position + 1, ordering: .releasing)
                    return true
                }
                position = current
            } else if sequence < position {
                return false  // the consumer has not freed this slot: full
            } else {
                position = tail.load(ordering: .relaxed)  // another producer took it
            }
        }
    }

    /// Takes the oldest job, if any. Single consumer only.
    func pop() -> UnownedJob? {
        let position = head.load(ordering: .relaxed)
        let slot = slots[position & mask]
        // Acquiring: pairs with the producer's releasing store, so `job` is visible.
        guard slot.sequence.load(ordering: .acquiring) == position + 1 else { return nil }
        let job = slot.job
        slot.job = nil
        head.store(position + 1, ordering: .relaxed)
        // Releasing: hands the slot back to the producer of position + capacity.
        slot.sequence.store(position + mask + 1, ordering: .releasing)
        return job
    }
}
