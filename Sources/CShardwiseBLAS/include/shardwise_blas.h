// C shim for BLAS: the library is opened with dlopen at run time, after the
// kernel-selection environment variables are set (OPENBLAS_CORETYPE is read by
// OpenBLAS's load-time constructor, so setting it from a binary that links
// OpenBLAS is too late). Only ShardwiseKernels imports this module.
#ifndef SHARDWISE_BLAS_H
#define SHARDWISE_BLAS_H

#include <stddef.h>

/// CBLAS constants, as in cblas.h.
enum { SW_BLAS_ROW_MAJOR = 101, SW_BLAS_NO_TRANS = 111, SW_BLAS_TRANS = 112 };

/// Opens `path` and resolves cblas_sgemm. Returns 0 on success; otherwise
/// writes the dynamic loader's message into `error` and returns -1.
/// Not thread-safe: called once, before any worker starts.
int sw_blas_open(const char *path, char *error, size_t error_length);

/// Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C. Returns 0, or -1
/// (C untouched) when the product needs the BLAS and none was opened: the caller reports it.
int sw_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
             const float *a, int lda, const float *b, int ldb, float beta,
             float *c, int ldc);

/// The library's own description of its kernels ("Haswell", "skx", ...),
/// or NULL when the library does not say.
const char *sw_blas_kernel_name(void);
/// The library's build description ("OpenBLAS 0.3.21 DYNAMIC_ARCH ...", "BLIS 0.9.0").
const char *sw_blas_build_description(void);
/// Asks the library for one thread per call, where it has a setting for it.
void sw_blas_set_single_threaded(void);

/// CPU features, from the compiler's cpuid support.
int sw_cpu_has_avx512(void);
int sw_cpu_has_avx2_fma(void);
/// "intel", "amd" or "other".
const char *sw_cpu_vendor(void);

/// The git commit this binary was built from (12 hex digits), or "unknown".
const char *sw_build_commit(void);

/// Portable products (README, "The determinism contract"): C (m, n) = op(A) op(B), row-major,
/// each element one fma chain over k in increasing order from zero, on every instruction set.
void sw_portable_sgemm(int transpose_a, int transpose_b, int m, int n, int k,
                       const float *a, int lda, const float *b, int ldb, float *c, int ldc);
/// sw_portable_sgemm with B gathered as it is packed, never stored: element (p, j) of B (k, n) is
/// x[k_offsets[p] + n_offsets[j]]. A convolution's lowered matrix is such a B (window rows and
/// output positions add separable offsets into the padded input), so the product is computed
/// without writing the matrix out; the same bits as sw_portable_sgemm on the written-out B.
void sw_portable_sgemm_gathered(int transpose_a, int m, int n, int k, const float *a, int lda,
                                const float *x, const int *k_offsets, const int *n_offsets, float *c, int ldc);
/// The same by the definition, element by element with fmaf: the tests' oracle.
void sw_reference_sgemm(int transpose_a, int transpose_b, int m, int n, int k,
                        const float *a, int lda, const float *b, int ldb, float *c, int ldc);
/// Routes sw_sgemm's products (alpha 1, beta 0: every product the layers make) to the portable
/// kernels (1) or to the BLAS library (0). Set before training; read by every product.
void sw_use_portable_kernels(int on);
int sw_portable_kernels_in_use(void);
/// Chooses the portable kernels' instruction set ("scalar", "avx2", "avx512"); -1 when this CPU lacks it.
int sw_portable_select(const char *name);
/// Whether this CPU runs the named instruction set's kernel.
int sw_portable_isa_available(const char *name);
/// The instruction set the portable kernels run (the fastest available unless one was selected).
const char *sw_portable_isa(void);
/// out[j] = e^x[j], j < count: PortableMath.exp's bits (fused multiply-adds) on the portable
/// kernels' instruction set; `fallback` (that function) takes the values the vector lanes do not.
void sw_portable_exp(int count, const double *x, double *out, double (*fallback)(double));
/// out[j] = (float) e^x for x = (double)(row[j] * scale - maximum) (float arithmetic), j < count,
/// x at most 0 (a softmax's shifted scores): PortableMath.expNonPositive's bits on the portable
/// kernels' instruction set; `fallback` (that function) takes the values the vector lanes do not.
/// `out` may be `row`.
void sw_portable_exp_shifted(int count, const float *row, float scale, float maximum, float *out, double (*fallback)(double));
/// GELU's exact form on the portable kernels' instruction set: out = x Φ(x) (dy NULL) or
/// dy (Φ(x) + x φ(x)), the bits of ActivationMath's one-element formula. The tables hold
/// term j of piece k at j * 16 + k (12 terms, 12 pieces). Returns how many leading elements it
/// wrote (a multiple of the vector width; 0 on the scalar instruction set): the caller does the rest.
int sw_portable_gelu(int count, const float *x, const float *dy, float *out, const double *erf_terms, const double *gauss_terms);

#endif
