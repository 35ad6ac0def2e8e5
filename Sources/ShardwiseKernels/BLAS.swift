import CShardwiseBLAS

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The BLAS library Shardwise runs its matrix products on, and how its kernels were chosen.
public struct BLASInfo: Sendable, Codable, Equatable {
    /// Path of the shared library that was opened.
    public var library: String
    /// The library's name for the kernels it runs ("Haswell", "SkylakeX", "skx", ...).
    public var kernels: String
    /// The library's build description.
    public var build: String
    /// CPU vendor and vector extensions as Shardwise saw them.
    public var cpu: String
    /// How the kernels were chosen: by Shardwise, or by an environment variable the user set.
    public var selection: String
    /// False when only slow (pre-AVX2) kernels run on a CPU that has faster ones, or on a CPU without AVX2.
    public var fastKernels: Bool
}

/// No usable BLAS library: what was tried.
public struct BLASError: Error, CustomStringConvertible {
    public var description: String
}

/// Matrix products through a BLAS from Debian, one thread per caller.
///
/// The library is opened with `dlopen` on first use, after Shardwise sets the
/// variables that choose its kernels, because OpenBLAS reads `OPENBLAS_CORETYPE`
/// in its load-time constructor: a binary that links OpenBLAS cannot set it in time.
///
/// Choice of library, measured on the development machine (AMD EPYC Zen 4, one
/// core, the reference network's GEMM shapes at batch 128; see README "Kernels"):
/// OpenBLAS 0.3.21 with its Haswell kernels 102-107 GFLOP/s, SkylakeX 94-98,
/// Cooperlake (its own pick) 92-95; BLIS 0.9 skx 79, its own pick 68.
/// So OpenBLAS is the default, Haswell kernels on AMD (Zen 4 runs AVX-512 at
/// half width) and SkylakeX kernels on Intel CPUs with AVX-512.
///
/// The pthread flavour of OpenBLAS is preferred, run at one thread: its
/// buffer allocator takes a lock, so several workers may call it at once; with
/// `OPENBLAS_NUM_THREADS=1` it starts no threads of its own.
///
/// `SHARDWISE_BLAS=openblas|blis|/path/to/lib.so` overrides the library;
/// `OPENBLAS_CORETYPE` or `BLIS_ARCH_TYPE`, when already set, are respected.
public enum BLAS {
    /// Loads the library once; later calls return the same result.
    public static func load() throws(BLASError) -> BLASInfo {
        switch loaded {
        case .success(let info): return info
        case .failure(let error): throw error
        }
    }

    /// The library when one loads, nil when none does: the portable kernels need none, so a
    /// machine without a BLAS trains, evaluates and predicts with them (``load()`` says why not).
    public static var ifPresent: BLASInfo? { try? load() }

    /// The git commit this binary was built from (12 hex digits), or "unknown".
    public static var buildCommit: String { String(cString: sw_build_commit()) }

    /// Whether `load()` succeeded; precondition for `gemm` with the BLAS kernels.
    public static var isLoaded: Bool {
        if case .success = loaded { return true }
        return false
    }

    private static let loaded: Result<BLASInfo, BLASError> = {
        do throws(BLASError) { return .success(try open()) } catch { return .failure(error) }
    }()

    /// `c = alpha * op(a) * op(b) + beta * c`, row-major.
    ///
    /// - Parameters: `op(a)` is (m, k), `op(b)` is (k, n), `c` is (m, n);
    ///   `lda`, `ldb`, `ldc` are the row lengths of `a`, `b`, `c` as stored.
    @inline(__always)
    public static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        let status = sw_sgemm(
            Int32(transposeA ? SW_BLAS_TRANS : SW_BLAS_NO_TRANS),
            Int32(transposeB ? SW_BLAS_TRANS : SW_BLAS_NO_TRANS),
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        // A programming error, not an input's: the kernels are chosen (and the BLAS opened) before any product.
        precondition(status == 0, "BLAS.gemm needs the BLAS, and BLAS.load() has not succeeded")
    }

    /// `c = op(a) · B` with the portable kernels, B (k, n) gathered as it is packed:
    /// `B[p][j] = x[kOffsets[p] + nOffsets[j]]` (a convolution's lowered matrix, never written out).
    /// The same bits as ``gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)`` with
    /// the portable kernels on that matrix.
    @inline(__always)
    public static func gemmGathered(
        transposeA: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
        x: UnsafePointer<Float>, kOffsets: UnsafePointer<Int32>, nOffsets: UnsafePointer<Int32>,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        sw_portable_sgemm_gathered(transposeA ? 1 : 0, Int32(m), Int32(n), Int32(k), a, Int32(lda), x, kOffsets, nOffsets, c, Int32(ldc))
    }

    // MARK: - Loading

    static let libraryDirectory = "/usr/lib/x86_64-linux-gnu"

    /// CPU vendor and vector extensions as Shardwise sees them: "amd avx2+fma".
    public static var cpuDescription: String {
        let avx512 = sw_cpu_has_avx512() != 0, avx2 = sw_cpu_has_avx2_fma() != 0
        return String(cString: sw_cpu_vendor()) + " " + (avx512 ? "avx512" : avx2 ? "avx2+fma" : "no-avx2")
    }

    /// The BLAS's kernels for a report's header ("Haswell"), or "none" when no library loads.
    public static var kernelsDescription: String { ifPresent?.kernels ?? "none" }

    static func open() throws(BLASError) -> BLASInfo {
        let avx512 = sw_cpu_has_avx512() != 0
        let avx2 = sw_cpu_has_avx2_fma() != 0
        let vendor = String(cString: sw_cpu_vendor())
        let cpu = cpuDescription
        let choice = (environment("SHARDWISE_BLAS") ?? "openblas").lowercased()

        var selection: String
        let candidates: [String]
        // The variables are set with overwrite=0: a user's explicit choice wins.
        if choice == "blis" {
            selection = selectKernels(
                variable: "BLIS_ARCH_TYPE", value: avx512 ? "skx" : avx2 ? "haswell" : nil)
            setenv("BLIS_NUM_THREADS", "1", 1)
            candidates = ["\(libraryDirectory)/blis-openmp/libblis.so.4",
                          "\(libraryDirectory)/blis-pthread/libblis.so.4",
                          "\(libraryDirectory)/blis-serial/libblis.so.4", "libblis.so.4"]
        } else if choice == "openblas" {
            let coreType = avx512 && vendor == "intel" ? "SkylakeX" : avx2 ? "Haswell" : nil
            selection = selectKernels(variable: "OPENBLAS_CORETYPE", value: coreType)
            setenv("OPENBLAS_NUM_THREADS", "1", 1)
            candidates = ["\(libraryDirectory)/openblas-pthread/libopenblas.so.0",
                          "libopenblas.so.0",
                          "\(libraryDirectory)/openblas-serial/libopenblas.so.0"]
        } else {
            selection = "library from SHARDWISE_BLAS"
            setenv("OPENBLAS_NUM_THREADS", "1", 1)
            setenv("BLIS_NUM_THREADS", "1", 1)
            candidates = [choice]
        }

        var errors: [String] = []
        for path in candidates {
            var message = [CChar](repeating: 0, count: 512)
            if sw_blas_open(path, &message, message.count) == 0 {
                sw_blas_set_single_threaded()
                let kernels = sw_blas_kernel_name().map { String(cString: $0) } ?? "unknown"
                let build = sw_blas_build_description().map { String(cString: $0) } ?? "unknown"
                let fast = avx2 && !slowKernelNames.contains(kernels.lowercased())
                return BLASInfo(
                    library: path, kernels: kernels, build: build, cpu: cpu,
                    selection: selection, fastKernels: fast)
            }
            errors.append(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        throw BLASError(description: """
            no BLAS library could be opened (SHARDWISE_BLAS=\(choice)); tried \(candidates.joined(separator: ", ")): \
            \(errors.joined(separator: "; ")). Install it with: apt-get install libopenblas-dev libopenblas-serial-dev
            """)
    }

    /// Kernel sets that leave most of an AVX2 machine's arithmetic unused.
    static let slowKernelNames: Set<String> = [
        "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai",
        "coppermine", "northwood", "opteron", "opteron_sse3", "barcelona", "bobcat",
        "generic", "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator",
    ]

    private static func selectKernels(variable: String, value: String?) -> String {
        if let existing = environment(variable) { return "\(variable)=\(existing) (set by the user)" }
        guard let value else { return "library default (no AVX2 on this CPU)" }
        setenv(variable, value, 0)
        return "\(variable)=\(value) (chosen by Shardwise)"
    }

    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        let string = String(cString: value)
        return string.isEmpty ? nil : string
    }
}
