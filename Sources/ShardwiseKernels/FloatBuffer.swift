#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed-size, zero-initialised, 64-byte aligned array of `Float`.
///
/// Tensors in Shardwise are views into these buffers: row-major, no strides
/// beyond the leading dimension. The buffer is a class so that workers can
/// share one allocation; who writes which range is the runtime's business,
/// hence `@unchecked Sendable`.
public final class FloatBuffer: @unchecked Sendable {
    /// Cache-line alignment: SIMD loads never straddle a line at a tensor's start,
    /// and tensors owned by different workers never share a line.
    public static let alignment = 64

    /// The first float (64-byte aligned).
    public let pointer: UnsafeMutablePointer<Float>
    /// The number of floats.
    public let count: Int
    let allocator: MemoryAllocator?

    /// - Parameters:
    ///   - count: floats, zero-filled.
    ///   - allocator: where the memory comes from (a NUMA node, say); nil
    ///     means `posix_memalign`. Its memory must be at least 64-byte aligned.
    public init(count: Int, allocator: MemoryAllocator? = nil) {
        precondition(count >= 0, "FloatBuffer count must be non-negative, got \(count)")
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        var raw: UnsafeMutableRawPointer?
        if let allocator {
            raw = allocator.allocate(bytes)
            precondition(Int(bitPattern: raw) % Self.alignment == 0, "allocator returned memory not aligned to \(Self.alignment) bytes")
        } else {
            let status = posix_memalign(&raw, Self.alignment, bytes)
            if status != 0 { raw = nil }
        }
        guard let raw else { fatalError("FloatBuffer: cannot allocate \(bytes) bytes") }
        memset(raw, 0, bytes)
        self.pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        self.allocator = allocator
    }

    deinit {
        if let allocator {
            allocator.deallocate(UnsafeMutableRawPointer(pointer), max(count, 1) * MemoryLayout<Float>.stride)
        } else {
            free(pointer)
        }
    }

    /// The float at `index` (checked in debug builds only).
    public subscript(index: Int) -> Float {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    /// The floats as a buffer pointer.
    public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer, count: count)
    }

    /// Sets every float to `value`.
    public func fill(_ value: Float) {
        buffer.update(repeating: value)
    }

    /// Copies another buffer's floats (the same count).
    public func copy(from other: FloatBuffer) {
        precondition(other.count == count, "copy: \(other.count) elements into \(count)")
        pointer.update(from: other.pointer, count: count)
    }

    /// A copy of the floats.
    public var array: [Float] { Array(buffer) }
}

/// Rounds `count` floats up to a whole number of cache lines.
@inlinable
public func roundUpToCacheLine(_ count: Int) -> Int {
    let perLine = FloatBuffer.alignment / MemoryLayout<Float>.stride
    return (count + perLine - 1) / perLine * perLine
}

/// Where a buffer's memory comes from: the runtime passes one that binds pages to
/// the NUMA node of the worker that will use them (hwloc membind).
public struct MemoryAllocator: Sendable {
    /// Returns `bytes` of memory aligned to 64 bytes, or nil.
    public let allocate: @Sendable (Int) -> UnsafeMutableRawPointer?
    /// Releases memory from `allocate`, with its byte count.
    public let deallocate: @Sendable (UnsafeMutableRawPointer, Int) -> Void

    /// An allocator from its two functions.
    public init(
        allocate: @escaping @Sendable (Int) -> UnsafeMutableRawPointer?,
        deallocate: @escaping @Sendable (UnsafeMutableRawPointer, Int) -> Void
    ) {
        self.allocate = allocate
        self.deallocate = deallocate
    }
}
