// Vector forms of PortableMath's elementwise functions on AVX2 and AVX-512, each lane the
// operations of the Swift formula in the same order (separate multiplies and adds, never
// fused), so every instruction set gives the scalar path's bits.
//
// GELU's exact form, x Φ(x) with Φ from erf, and its derivative Φ(x) + x φ(x): the operations of ActivationMath.erfAndGaussian (Swift), lane by lane in the same
// order, so every instruction set gives the same bits. erf(a) and e^(-a²) on [0, 6) are
// degree-11 polynomials in a piece's offset u = a - (0.25 + k/2), one piece per half unit
// (k = ⌊2a⌋ < 12), evaluated by Horner's rule as separate multiplies and adds (never fused:
// the scalar path has no fused form). The coefficient tables come transposed from Swift:
// term j of piece k at j * 16 + k, so a term's twelve pieces are one (AVX-512: two) loads.
#pragma STDC FP_CONTRACT OFF
#include "shardwise_blas.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

enum { TERMS = 12, STRIDE = 16 };

__attribute__((target("avx512f")))
static int gelu_avx512(int count, const float *x, const float *dy, float *out, const double *erf_terms, const double *gauss_terms) {
    const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1), half = _mm512_set1_pd(0.5), quarter = _mm512_set1_pd(0.25);
    const __m512d two = _mm512_set1_pd(2), six = _mm512_set1_pd(6);
    const __m512d inverse_sqrt2 = _mm512_set1_pd(0.7071067811865476), inverse_sqrt2pi = _mm512_set1_pd(0.3989422804014327);
    const __m512i sign = _mm512_set1_epi64((long long)0x8000000000000000ULL);
    int i = 0;
    for (; i + 8 <= count; i += 8) {
        __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
        __m512d t = _mm512_mul_pd(v, inverse_sqrt2);
        __mmask8 negative = _mm512_cmp_pd_mask(t, zero, _CMP_LT_OQ);
        __m512d a = _mm512_castsi512_pd(_mm512_mask_xor_epi64(_mm512_castpd_si512(t), negative, _mm512_castpd_si512(t), sign));
        __mmask8 inside = _mm512_cmp_pd_mask(a, six, _CMP_LT_OQ);
        __m512d twice = _mm512_mul_pd(_mm512_maskz_mov_pd(inside, a), two);
        __m256i k = _mm512_cvttpd_epi32(twice);
        __m512i index = _mm512_cvtepi32_epi64(k);
        __m512d u = _mm512_sub_pd(a, _mm512_add_pd(quarter, _mm512_mul_pd(half, _mm512_cvtepi32_pd(k))));
        const double *ec = erf_terms + (TERMS - 1) * STRIDE, *gc = gauss_terms + (TERMS - 1) * STRIDE;
        __m512d e = _mm512_permutex2var_pd(_mm512_loadu_pd(ec), index, _mm512_loadu_pd(ec + 8));
        __m512d g = dy ? _mm512_permutex2var_pd(_mm512_loadu_pd(gc), index, _mm512_loadu_pd(gc + 8)) : zero;
        for (int j = TERMS - 2; j >= 0; j--) {
            ec = erf_terms + j * STRIDE;
            e = _mm512_add_pd(_mm512_mul_pd(e, u), _mm512_permutex2var_pd(_mm512_loadu_pd(ec), index, _mm512_loadu_pd(ec + 8)));
            if (dy) {
                gc = gauss_terms + j * STRIDE;
                g = _mm512_add_pd(_mm512_mul_pd(g, u), _mm512_permutex2var_pd(_mm512_loadu_pd(gc), index, _mm512_loadu_pd(gc + 8)));
            }
        }
        e = _mm512_mask_blend_pd(inside, one, e);
        e = _mm512_castsi512_pd(_mm512_mask_xor_epi64(_mm512_castpd_si512(e), negative, _mm512_castpd_si512(e), sign));
        __m512d result;
        if (dy) {
            g = _mm512_maskz_mov_pd(inside, g);
            __m512d d = _mm512_cvtps_pd(_mm256_loadu_ps(dy + i));
            result = _mm512_mul_pd(d, _mm512_add_pd(_mm512_mul_pd(half, _mm512_add_pd(one, e)), _mm512_mul_pd(_mm512_mul_pd(v, inverse_sqrt2pi), g)));
        } else {
            result = _mm512_mul_pd(_mm512_mul_pd(half, v), _mm512_add_pd(one, e));
        }
        _mm256_storeu_ps(out + i, _mm512_cvtpd_ps(result));
    }
    return i;
}

__attribute__((target("avx2")))
static int gelu_avx2(int count, const float *x, const float *dy, float *out, const double *erf_terms, const double *gauss_terms) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1), half = _mm256_set1_pd(0.5), quarter = _mm256_set1_pd(0.25);
    const __m256d two = _mm256_set1_pd(2), six = _mm256_set1_pd(6), sign = _mm256_set1_pd(-0.0);
    const __m256d inverse_sqrt2 = _mm256_set1_pd(0.7071067811865476), inverse_sqrt2pi = _mm256_set1_pd(0.3989422804014327);
    int i = 0;
    for (; i + 4 <= count; i += 4) {
        __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        __m256d t = _mm256_mul_pd(v, inverse_sqrt2);
        __m256d negative = _mm256_cmp_pd(t, zero, _CMP_LT_OQ);
        __m256d a = _mm256_xor_pd(t, _mm256_and_pd(negative, sign));
        __m256d inside = _mm256_cmp_pd(a, six, _CMP_LT_OQ);
        __m256d twice = _mm256_mul_pd(_mm256_and_pd(a, inside), two);
        __m128i k = _mm256_cvttpd_epi32(twice);
        __m256d u = _mm256_sub_pd(a, _mm256_add_pd(quarter, _mm256_mul_pd(half, _mm256_cvtepi32_pd(k))));
        __m256d e = _mm256_i32gather_pd(erf_terms + (TERMS - 1) * STRIDE, k, 8);
        __m256d g = dy ? _mm256_i32gather_pd(gauss_terms + (TERMS - 1) * STRIDE, k, 8) : zero;
        for (int j = TERMS - 2; j >= 0; j--) {
            e = _mm256_add_pd(_mm256_mul_pd(e, u), _mm256_i32gather_pd(erf_terms + j * STRIDE, k, 8));
            if (dy) g = _mm256_add_pd(_mm256_mul_pd(g, u), _mm256_i32gather_pd(gauss_terms + j * STRIDE, k, 8));
        }
        e = _mm256_blendv_pd(one, e, inside);
        e = _mm256_xor_pd(e, _mm256_and_pd(negative, sign));
        __m256d result;
        if (dy) {
            g = _mm256_and_pd(g, inside);
            __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(dy + i));
            result = _mm256_mul_pd(d, _mm256_add_pd(_mm256_mul_pd(half, _mm256_add_pd(one, e)), _mm256_mul_pd(_mm256_mul_pd(v, inverse_sqrt2pi), g)));
        } else {
            result = _mm256_mul_pd(_mm256_mul_pd(half, v), _mm256_add_pd(one, e));
        }
        _mm_storeu_ps(out + i, _mm256_cvtpd_ps(result));
    }
    return i;
}

// e^x for x = row[j] * scale - maximum (float arithmetic, then double), as
// PortableMath.expNonPositive: k = round(x log2 e), r = (x - k ln2hi) - k ln2lo, e^r by Horner's
// rule to r^12/12!, times 2^k. Vector lanes take x in [-708, 0], where 2^k is a normal number
// and the product one rounding; a group with another x (NaN, positive, deeper) goes to `fallback`.
static const double exp_coefficients[13] = {
    1.0 / 479001600, 1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040, 1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1, 1,
};
static const double log2e = 1.4426950408889634, ln2hi = 6.93147180369123816490e-01, ln2lo = 1.90821492927058770002e-10;

__attribute__((target("avx512f")))
static int exp_avx512(int count, const float *row, float scale, float maximum, float *out) {
    const __m256 s = _mm256_set1_ps(scale), m = _mm256_set1_ps(maximum);
    const __m512d low = _mm512_set1_pd(-708), zero = _mm512_setzero_pd();
    int i = 0;
    // The last group may be partial: its lanes past `count` are neither read nor written.
    for (; i < count; i += 8) {
        int lanes = count - i < 8 ? count - i : 8;
        __mmask8 used = (__mmask8)((1u << lanes) - 1);
        __m256 loaded = _mm512_castps512_ps256(_mm512_maskz_loadu_ps((__mmask16)used, row + i));
        __m512d x = _mm512_cvtps_pd(_mm256_sub_ps(_mm256_mul_ps(loaded, s), m));
        if ((__mmask8)(_mm512_cmp_pd_mask(x, low, _CMP_GE_OQ) & _mm512_cmp_pd_mask(x, zero, _CMP_LE_OQ) & used) != used) break;
        __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512d r = _mm512_sub_pd(_mm512_sub_pd(x, _mm512_mul_pd(k, _mm512_set1_pd(ln2hi))), _mm512_mul_pd(k, _mm512_set1_pd(ln2lo)));
        __m512d p = _mm512_set1_pd(exp_coefficients[0]);
        for (int j = 1; j < 13; j++) p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(exp_coefficients[j]));
        __m512i bits = _mm512_slli_epi64(_mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_cvtpd_epi32(k)), _mm512_set1_epi64(1023)), 52);
        _mm512_mask_storeu_ps(out + i, (__mmask16)used, _mm512_castps256_ps512(_mm512_cvtpd_ps(_mm512_mul_pd(p, _mm512_castsi512_pd(bits)))));
    }
    return i < count ? i : count;
}

__attribute__((target("avx2")))
static int exp_avx2(int count, const float *row, float scale, float maximum, float *out) {
    const __m128 s = _mm_set1_ps(scale), m = _mm_set1_ps(maximum);
    const __m256d low = _mm256_set1_pd(-708), zero = _mm256_setzero_pd();
    int i = 0;
    for (; i + 4 <= count; i += 4) {
        __m256d x = _mm256_cvtps_pd(_mm_sub_ps(_mm_mul_ps(_mm_loadu_ps(row + i), s), m));
        __m256d in = _mm256_and_pd(_mm256_cmp_pd(x, low, _CMP_GE_OQ), _mm256_cmp_pd(x, zero, _CMP_LE_OQ));
        if (_mm256_movemask_pd(in) != 0xF) break;
        __m256d k = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256d r = _mm256_sub_pd(_mm256_sub_pd(x, _mm256_mul_pd(k, _mm256_set1_pd(ln2hi))), _mm256_mul_pd(k, _mm256_set1_pd(ln2lo)));
        __m256d p = _mm256_set1_pd(exp_coefficients[0]);
        for (int j = 1; j < 13; j++) p = _mm256_add_pd(_mm256_mul_pd(p, r), _mm256_set1_pd(exp_coefficients[j]));
        __m256i bits = _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k)), _mm256_set1_epi64x(1023)), 52);
        _mm_storeu_ps(out + i, _mm256_cvtpd_ps(_mm256_mul_pd(p, _mm256_castsi256_pd(bits))));
    }
    return i;
}

// e^x as PortableMath.exp: k = round(x log2 e), r = fma(k, -ln2lo, fma(k, -ln2hi, x)), e^r by
// fused Horner steps to r^13/13!, times 2^k. Lanes take x in [-708, 709] (2^k normal, one
// product); a group with another x goes to `fallback`.
static const double exp_divisors[13] = { 479001600.0, 39916800, 3628800, 362880, 40320, 5040, 720, 120, 24, 6, 2, 1, 1 };

__attribute__((target("avx512f")))
static int exp_fused_avx512(int count, const double *x, double *out) {
    const __m512d low = _mm512_set1_pd(-708), high = _mm512_set1_pd(709);
    int i = 0;
    for (; i + 8 <= count; i += 8) {
        __m512d v = _mm512_loadu_pd(x + i);
        if ((__mmask8)(_mm512_cmp_pd_mask(v, low, _CMP_GE_OQ) & _mm512_cmp_pd_mask(v, high, _CMP_LE_OQ)) != 0xFF) break;
        __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(v, _mm512_set1_pd(log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512d r = _mm512_fmadd_pd(k, _mm512_set1_pd(-ln2lo), _mm512_fmadd_pd(k, _mm512_set1_pd(-ln2hi), v));
        __m512d p = _mm512_set1_pd(1.0 / 6227020800.0);
        for (int j = 0; j < 13; j++) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1 / exp_divisors[j]));
        __m512i bits = _mm512_slli_epi64(_mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_cvtpd_epi32(k)), _mm512_set1_epi64(1023)), 52);
        _mm512_storeu_pd(out + i, _mm512_mul_pd(p, _mm512_castsi512_pd(bits)));
    }
    return i;
}

__attribute__((target("avx2,fma")))
static int exp_fused_avx2(int count, const double *x, double *out) {
    const __m256d low = _mm256_set1_pd(-708), high = _mm256_set1_pd(709);
    int i = 0;
    for (; i + 4 <= count; i += 4) {
        __m256d v = _mm256_loadu_pd(x + i);
        if (_mm256_movemask_pd(_mm256_and_pd(_mm256_cmp_pd(v, low, _CMP_GE_OQ), _mm256_cmp_pd(v, high, _CMP_LE_OQ))) != 0xF) break;
        __m256d k = _mm256_round_pd(_mm256_mul_pd(v, _mm256_set1_pd(log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256d r = _mm256_fmadd_pd(k, _mm256_set1_pd(-ln2lo), _mm256_fmadd_pd(k, _mm256_set1_pd(-ln2hi), v));
        __m256d p = _mm256_set1_pd(1.0 / 6227020800.0);
        for (int j = 0; j < 13; j++) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1 / exp_divisors[j]));
        __m256i bits = _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k)), _mm256_set1_epi64x(1023)), 52);
        _mm256_storeu_pd(out + i, _mm256_mul_pd(p, _mm256_castsi256_pd(bits)));
    }
    return i;
}
#endif

// The portable kernels' instruction set: 2 AVX-512, 1 AVX2, 0 scalar.
static int isa_level(void) {
    const char *isa = sw_portable_isa();
    return strcmp(isa, "avx512") == 0 ? 2 : strcmp(isa, "avx2") == 0 ? 1 : 0;
}

void sw_portable_exp(int count, const double *x, double *out, double (*fallback)(double)) {
    int level = isa_level();
    int i = 0;
    while (i < count) {
#if defined(__x86_64__)
        if (level == 2) i += exp_fused_avx512(count - i, x + i, out + i);
        else if (level == 1) i += exp_fused_avx2(count - i, x + i, out + i);
#endif
        int end = i + 8 < count ? i + 8 : count;
        for (; i < end; i++) out[i] = fallback(x[i]);
    }
}

void sw_portable_exp_shifted(int count, const float *row, float scale, float maximum, float *out, double (*fallback)(double)) {
    int level = isa_level();
    int i = 0;
    while (i < count) {
#if defined(__x86_64__)
        if (level == 2) i += exp_avx512(count - i, row + i, scale, maximum, out + i);
        else if (level == 1) i += exp_avx2(count - i, row + i, scale, maximum, out + i);
#endif
        // The rest, or a group the vector lanes do not take: element by element.
        int end = i + 8 < count ? i + 8 : count;
        for (; i < end; i++) {
            float x = row[i] * scale - maximum;
            out[i] = (float)fallback((double)x);
        }
    }
}

int sw_portable_gelu(int count, const float *x, const float *dy, float *out, const double *erf_terms, const double *gauss_terms) {
#if defined(__x86_64__)
    int level = isa_level();
    if (level == 2) return gelu_avx512(count, x, dy, out, erf_terms, gauss_terms);
    if (level == 1) return gelu_avx2(count, x, dy, out, erf_terms, gauss_terms);
#endif
    (void)count; (void)x; (void)dy; (void)out; (void)erf_terms; (void)gauss_terms;
    return 0;
}
