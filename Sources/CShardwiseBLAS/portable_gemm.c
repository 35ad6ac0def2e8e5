// Portable matrix products: C = op(A) * op(B) with every element of C computed as one
// fused multiply-add chain over k in increasing order, starting from zero:
//     c = 0; for p in 0..<k: c = fma(a(i, p), b(p, j), c)
// whatever the instruction set, vector width, register or cache blocking. Vector lanes hold
// different elements of C, never parts of one sum; a K block stores its running values in C
// and the next block loads and continues them. fma is exactly rounded on every IEEE machine,
// so the scalar, AVX2 and AVX-512 paths give the same bits, here and on any other CPU.
//
// Blocking (GotoBLAS's order): NC columns of B, then KC of the k dimension (B packed into
// NR-wide panels), then MC rows of A (packed into MR-high panels), then MR x NR micro-tiles.
#include "shardwise_blas.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { KC = 256, MC = 96, NC = 2048, MR_MAX = 12, NR_MAX = 32 };

typedef void (*micro_kernel)(int kc, const float *a, const float *b, float *c, int ldc, int first);

// MR x NR tile, scalar: the reference shape of the computation.
static void kernel_scalar(int kc, const float *a, const float *b, float *c, int ldc, int first) {
    enum { MR = 4, NR = 4 };
    float acc[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = first ? 0.0f : c[i * ldc + j];
    for (int p = 0; p < kc; p++)
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i][j] = fmaf(a[p * MR + i], b[p * NR + j], acc[i][j]);
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) c[i * ldc + j] = acc[i][j];
}

#if defined(__x86_64__)
// 6 x 16 with AVX2 and FMA: 12 accumulators, two B vectors, one broadcast of A.
__attribute__((target("avx2,fma")))
static void kernel_avx2(int kc, const float *a, const float *b, float *c, int ldc, int first) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (first) {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    } else {
        c00 = _mm256_loadu_ps(c + 0 * ldc); c01 = _mm256_loadu_ps(c + 0 * ldc + 8);
        c10 = _mm256_loadu_ps(c + 1 * ldc); c11 = _mm256_loadu_ps(c + 1 * ldc + 8);
        c20 = _mm256_loadu_ps(c + 2 * ldc); c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
        c30 = _mm256_loadu_ps(c + 3 * ldc); c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
        c40 = _mm256_loadu_ps(c + 4 * ldc); c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
        c50 = _mm256_loadu_ps(c + 5 * ldc); c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
    }
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b + p * 16), b1 = _mm256_load_ps(b + p * 16 + 8);
        const float *ap = a + p * 6;
        __m256 x;
        x = _mm256_broadcast_ss(ap + 0); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(ap + 1); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(ap + 2); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(ap + 3); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(ap + 4); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(ap + 5); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    _mm256_storeu_ps(c + 0 * ldc, c00); _mm256_storeu_ps(c + 0 * ldc + 8, c01);
    _mm256_storeu_ps(c + 1 * ldc, c10); _mm256_storeu_ps(c + 1 * ldc + 8, c11);
    _mm256_storeu_ps(c + 2 * ldc, c20); _mm256_storeu_ps(c + 2 * ldc + 8, c21);
    _mm256_storeu_ps(c + 3 * ldc, c30); _mm256_storeu_ps(c + 3 * ldc + 8, c31);
    _mm256_storeu_ps(c + 4 * ldc, c40); _mm256_storeu_ps(c + 4 * ldc + 8, c41);
    _mm256_storeu_ps(c + 5 * ldc, c50); _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}

// 8 x 32 with AVX-512: 16 accumulators, two B vectors, one broadcast of A. Eight rows: shards
// of 32, 64 or 128 rows make whole tiles (twelve rows left a third of a tile idle at 64).
__attribute__((target("avx512f")))
static void kernel_avx512(int kc, const float *a, const float *b, float *c, int ldc, int first) {
    __m512 acc[8][2];
    for (int i = 0; i < 8; i++) {
        acc[i][0] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * ldc);
        acc[i][1] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * ldc + 16);
    }
    for (int p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b + p * 32), b1 = _mm512_load_ps(b + p * 32 + 16);
        const float *ap = a + p * 8;
#pragma clang loop unroll(full)
        for (int i = 0; i < 8; i++) {
            __m512 x = _mm512_set1_ps(ap[i]);
            acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]);
        }
    }
    for (int i = 0; i < 8; i++) {
        _mm512_storeu_ps(c + i * ldc, acc[i][0]);
        _mm512_storeu_ps(c + i * ldc + 16, acc[i][1]);
    }
}
#endif

#if defined(__x86_64__)
// Loads 8 floats from each of s0..s7 and stores them transposed: row t of `out` (row stride nr)
// holds element t of each. Data movement only.
__attribute__((target("avx2"), always_inline))
static inline void transpose8x8_avx2(float *out, int nr, const float *s0, const float *s1, const float *s2, const float *s3,
                                     const float *s4, const float *s5, const float *s6, const float *s7) {
    __m256 r0 = _mm256_loadu_ps(s0), r1 = _mm256_loadu_ps(s1), r2 = _mm256_loadu_ps(s2), r3 = _mm256_loadu_ps(s3);
    __m256 r4 = _mm256_loadu_ps(s4), r5 = _mm256_loadu_ps(s5), r6 = _mm256_loadu_ps(s6), r7 = _mm256_loadu_ps(s7);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5), t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE), u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(out + 0 * nr, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(out + 1 * nr, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(out + 2 * nr, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(out + 3 * nr, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(out + 4 * nr, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(out + 5 * nr, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(out + 6 * nr, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(out + 7 * nr, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// Packs kc x width (width a multiple of 8) of a B stored transposed (column j of op(B) is row j of
// the array) into a panel of nr columns, p-major: 8 x 8 blocks transposed in registers.
// Data movement only: the bits of the product do not depend on it.
__attribute__((target("avx2")))
static int pack_transposed_avx2(float *panel, int nr, const float *source, int ld, int kc, int width) {
    if (width % 8 != 0) return 0;
    int p = 0;
    for (; p + 8 <= kc; p += 8) {
        for (int j = 0; j < width; j += 8) {
            const float *column = source + (size_t)j * ld + p;
            transpose8x8_avx2(panel + (size_t)p * nr + j, nr, column, column + ld, column + 2 * (size_t)ld, column + 3 * (size_t)ld,
                              column + 4 * (size_t)ld, column + 5 * (size_t)ld, column + 6 * (size_t)ld, column + 7 * (size_t)ld);
        }
    }
    for (; p < kc; p++)
        for (int j = 0; j < width; j++) panel[(size_t)p * nr + j] = source[(size_t)j * ld + p];
    return 1;
}
#endif

struct isa { const char *name; micro_kernel kernel; int mr, nr; };

static const struct isa isas[] = {
    {"scalar", kernel_scalar, 4, 4},
#if defined(__x86_64__)
    {"avx2", kernel_avx2, 6, 16},
    {"avx512", kernel_avx512, 8, 32},
#endif
};

// Set by sw_portable_select or on the first product; several workers may make their first
// product at once, so it is atomic (relaxed: every thread that finds it unset picks the same set).
static _Atomic int chosen = -1;

int sw_portable_isa_available(const char *name) {
#if defined(__x86_64__)
    if (strcmp(name, "avx2") == 0) return sw_cpu_has_avx2_fma();
    if (strcmp(name, "avx512") == 0) return sw_cpu_has_avx512();
#endif
    return strcmp(name, "scalar") == 0;
}

int sw_portable_select(const char *name) {
    for (int i = 0; i < (int)(sizeof isas / sizeof isas[0]); i++) {
        if (strcmp(isas[i].name, name) == 0 && sw_portable_isa_available(name)) { atomic_store_explicit(&chosen, i, memory_order_relaxed); return 0; }
    }
    return -1;
}

static int chosen_index(void) {
    int index = atomic_load_explicit(&chosen, memory_order_relaxed);
    if (index < 0) {
        index = 0;
        for (int i = (int)(sizeof isas / sizeof isas[0]) - 1; i > 0; i--) {
            if (sw_portable_isa_available(isas[i].name)) { index = i; break; }
        }
        atomic_store_explicit(&chosen, index, memory_order_relaxed);
    }
    return index;
}

const char *sw_portable_isa(void) { return isas[chosen_index()].name; }

// Packing buffers, one pair per thread, allocated on a thread's first product and kept until
// the thread ends (a pthread key's destructor frees them: pools come and go in long processes).
static _Thread_local float *packed_a, *packed_b;
static pthread_key_t buffers_key;
static pthread_once_t buffers_once = PTHREAD_ONCE_INIT;

static void free_buffers(void *buffers) {
    float **pair = buffers;
    free(pair[0]);
    free(pair[1]);
    free(pair);
}

static void make_buffers_key(void) { pthread_key_create(&buffers_key, free_buffers); }

static void allocate_buffers(void) {
    packed_a = aligned_alloc(64, sizeof(float) * (MC + MR_MAX) * KC);
    packed_b = aligned_alloc(64, sizeof(float) * (NC + NR_MAX) * KC);
    pthread_once(&buffers_once, make_buffers_key);
    float **pair = malloc(2 * sizeof(float *));
    if (pair) {
        pair[0] = packed_a;
        pair[1] = packed_b;
        pthread_setspecific(buffers_key, pair);
    }
}

static inline float element(const float *x, int ld, int transposed, int row, int column) {
    return transposed ? x[(size_t)column * ld + row] : x[(size_t)row * ld + column];
}

// Where B comes from: stored (b, ldb, transposed) or gathered (x at k_offsets[p] + n_offsets[j]).
struct b_source {
    const float *b;
    int ldb, transposed;
    const float *x;
    const int *k_offsets, *n_offsets;
};

// Whether offsets[0..<8] are consecutive.
static inline int consecutive8(const int *offsets) {
    int run = 1;
    for (int t = 1; t < 8; t++) run &= offsets[t] == offsets[0] + t;
    return run;
}

#if defined(__x86_64__)
// 8 rows x `width` columns (a multiple of 8) of a gathered B whose 8 row offsets are consecutive:
// column j's 8 values lie side by side in x, so each 8 x 8 tile is 8 vector loads transposed in
// registers (a convolution's weight gradient: rows are output positions, columns window rows).
__attribute__((target("avx2")))
static void pack_gathered_tiles_avx2(float *out, int nr, const float *x, int row, const int *columns, int width) {
    const float *base = x + row;
    for (int j = 0; j < width; j += 8) {
        transpose8x8_avx2(out + j, nr, base + columns[j], base + columns[j + 1], base + columns[j + 2], base + columns[j + 3],
                          base + columns[j + 4], base + columns[j + 5], base + columns[j + 6], base + columns[j + 7]);
    }
}
#endif

// Gathers kc x width of B (rows pc.., columns j0..) into a panel of nr columns, p-major. Blocks
// of 8 columns whose offsets are consecutive (output positions along a row, at stride 1) are
// copied as one vector; else blocks of 8 consecutive rows as transposed tiles; the rest one
// value at a time. Data movement only: the product's bits do not depend on it.
static void pack_gathered(float *panel, int nr, const struct b_source *src, int pc, int kc, int j0, int width) {
    const int *columns = src->n_offsets + j0, *rows = src->k_offsets + pc;
    unsigned consecutive = 0;  // bit b: columns 8b ..< 8b + 8
    for (int b = 0; b + 8 <= width; b += 8) consecutive |= (unsigned)consecutive8(columns + b) << (b / 8);
#if defined(__x86_64__)
    const int tiles = consecutive == 0 && width >= 8 && sw_cpu_has_avx2_fma();
#else
    const int tiles = 0;
#endif
    for (int p = 0; p < kc; p++) {
#if defined(__x86_64__)
        if (tiles && p % 8 == 0 && p + 8 <= kc && consecutive8(rows + p)) {
            const int whole = width / 8 * 8;
            pack_gathered_tiles_avx2(panel + (size_t)p * nr, nr, src->x, rows[p], columns, whole);
            for (int t = 0; t < 8; t++)
                for (int j = whole; j < width; j++) panel[(size_t)(p + t) * nr + j] = src->x[rows[p + t] + columns[j]];
            p += 7;
            continue;
        }
#endif
        const float *row = src->x + rows[p];
        float *out = panel + (size_t)p * nr;
        int j = 0;
        for (; j + 8 <= width; j += 8) {
            if (consecutive >> (j / 8) & 1) {
                memcpy(out + j, row + columns[j], 8 * sizeof(float));
            } else {
                for (int t = 0; t < 8; t++) out[j + t] = row[columns[j + t]];
            }
        }
        for (; j < width; j++) out[j] = row[columns[j]];
    }
}

static void portable_sgemm(int transpose_a, int m, int n, int k, const float *a, int lda,
                           const struct b_source *src, float *c, int ldc);

void sw_portable_sgemm(int transpose_a, int transpose_b, int m, int n, int k,
                       const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    const struct b_source src = {b, ldb, transpose_b, NULL, NULL, NULL};
    portable_sgemm(transpose_a, m, n, k, a, lda, &src, c, ldc);
}

void sw_portable_sgemm_gathered(int transpose_a, int m, int n, int k, const float *a, int lda,
                                const float *x, const int *k_offsets, const int *n_offsets, float *c, int ldc) {
    const struct b_source src = {NULL, 0, 0, x, k_offsets, n_offsets};
    portable_sgemm(transpose_a, m, n, k, a, lda, &src, c, ldc);
}

static void portable_sgemm(int transpose_a, int m, int n, int k, const float *a, int lda,
                           const struct b_source *src, float *c, int ldc) {
    const float *b = src->b;
    const int ldb = src->ldb, transpose_b = src->transposed;
    const struct isa *isa = &isas[chosen_index()];
    const int mr = isa->mr, nr = isa->nr;
#if defined(__x86_64__)
    const int fast_packing = sw_cpu_has_avx2_fma();
#endif
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        for (int i = 0; i < m; i++) memset(c + (size_t)i * ldc, 0, (size_t)n * sizeof(float));
        return;
    }
    if (!packed_a) allocate_buffers();
    if (!packed_a || !packed_b) {  // no memory for the panels: the definition itself, slower, the same bits
        if (src->x) {
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    float acc = 0.0f;
                    for (int p = 0; p < k; p++) acc = fmaf(element(a, lda, transpose_a, i, p), src->x[src->k_offsets[p] + src->n_offsets[j]], acc);
                    c[(size_t)i * ldc + j] = acc;
                }
        } else {
            sw_reference_sgemm(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, c, ldc);
        }
        return;
    }
    float edge[MR_MAX * NR_MAX] __attribute__((aligned(64)));
    for (int jc = 0; jc < n; jc += NC) {
        const int nc = n - jc < NC ? n - jc : NC;
        for (int pc = 0; pc < k; pc += KC) {
            const int kc = k - pc < KC ? k - pc : KC;
            const int first = pc == 0;
            // B (kc x nc) into panels of nr columns, p-major, zero beyond n; read along B's rows.
            if (src->x) {
                for (int jr = 0; jr < nc; jr += nr) {
                    float *panel = packed_b + (size_t)jr * kc;
                    const int width = nc - jr < nr ? nc - jr : nr;
                    if (width < nr) memset(panel, 0, sizeof(float) * (size_t)kc * nr);
                    pack_gathered(panel, nr, src, pc, kc, jc + jr, width);
                }
            } else if (!transpose_b) {
                // Row by row of B (sequential reads), each row's pieces to every panel.
                const int whole = nc / nr * nr;
                for (int p = 0; p < kc; p++) {
                    const float *row = b + (size_t)(pc + p) * ldb + jc;
                    for (int jr = 0; jr < whole; jr += nr) memcpy(packed_b + (size_t)jr * kc + (size_t)p * nr, row + jr, sizeof(float) * nr);
                }
                if (whole < nc) {
                    float *panel = packed_b + (size_t)whole * kc;
                    memset(panel, 0, sizeof(float) * (size_t)kc * nr);
                    for (int p = 0; p < kc; p++) memcpy(panel + p * nr, b + (size_t)(pc + p) * ldb + jc + whole, sizeof(float) * (nc - whole));
                }
            } else for (int jr = 0; jr < nc; jr += nr) {
                float *panel = packed_b + (size_t)jr * kc;
                const int width = nc - jr < nr ? nc - jr : nr;
                if (width < nr) memset(panel, 0, sizeof(float) * (size_t)kc * nr);
                if (transpose_b) {
#if defined(__x86_64__)
                    if (fast_packing && pack_transposed_avx2(panel, nr, b + (size_t)(jc + jr) * ldb + pc, ldb, kc, width)) continue;
#endif
                    for (int j = 0; j < width; j++) {
                        const float *column = b + (size_t)(jc + jr + j) * ldb + pc;
                        for (int p = 0; p < kc; p++) panel[p * nr + j] = column[p];
                    }
                } else {
                    for (int p = 0; p < kc; p++) memcpy(panel + p * nr, b + (size_t)(pc + p) * ldb + jc + jr, sizeof(float) * width);
                }
            }
            for (int ic = 0; ic < m; ic += MC) {
                const int mc = m - ic < MC ? m - ic : MC;
                // A (mc x kc) into panels of mr rows, p-major, zero beyond m; read along A's rows.
                for (int ir = 0; ir < mc; ir += mr) {
                    float *panel = packed_a + (size_t)ir * kc;
                    const int height = mc - ir < mr ? mc - ir : mr;
                    if (height < mr) memset(panel, 0, sizeof(float) * (size_t)kc * mr);
                    if (!transpose_a && fast_packing && height == mr && pack_transposed_avx2(panel, mr, a + (size_t)(ic + ir) * lda + pc, lda, kc, height)) {
                        continue;
                    } else if (transpose_a) {
                        for (int p = 0; p < kc; p++) memcpy(panel + p * mr, a + (size_t)(pc + p) * lda + ic + ir, sizeof(float) * height);
                    } else {
                        for (int i = 0; i < height; i++) {
                            const float *row = a + (size_t)(ic + ir + i) * lda + pc;
                            for (int p = 0; p < kc; p++) panel[p * mr + i] = row[p];
                        }
                    }
                }
                for (int jr = 0; jr < nc; jr += nr) {
                    for (int ir = 0; ir < mc; ir += mr) {
                        float *tile = c + (size_t)(ic + ir) * ldc + jc + jr;
                        const int rows = mc - ir < mr ? mc - ir : mr, columns = nc - jr < nr ? nc - jr : nr;
                        if (rows == mr && columns == nr) {
                            isa->kernel(kc, packed_a + (size_t)ir * kc, packed_b + (size_t)jr * kc, tile, ldc, first);
                        } else {
                            // A partial tile runs on a full one whose extra elements are discarded.
                            for (int i = 0; i < rows; i++)
                                for (int j = 0; j < columns; j++) edge[i * nr + j] = first ? 0.0f : tile[(size_t)i * ldc + j];
                            isa->kernel(kc, packed_a + (size_t)ir * kc, packed_b + (size_t)jr * kc, edge, nr, first);
                            for (int i = 0; i < rows; i++)
                                for (int j = 0; j < columns; j++) tile[(size_t)i * ldc + j] = edge[i * nr + j];
                        }
                    }
                }
            }
        }
    }
}

void sw_reference_sgemm(int transpose_a, int transpose_b, int m, int n, int k,
                        const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int p = 0; p < k; p++) acc = fmaf(element(a, lda, transpose_a, i, p), element(b, ldb, transpose_b, p, j), acc);
            c[(size_t)i * ldc + j] = acc;
        }
}
