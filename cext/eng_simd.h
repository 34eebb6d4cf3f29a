/* SIMD forms of the engine's scalar functions, for the x86-64 kernels: each repeats its scalar
 * twin (engine.h) operation by operation, lane by lane, so it gives the same bits. */
#ifndef NCZIP_ENG_SIMD_H
#define NCZIP_ENG_SIMD_H

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#include "engine.h"

/* ncz_expf, 16 or 8 lanes at a time */
#define A512 __attribute__((target("avx512f")))
#define A2 __attribute__((target("avx2,f16c")))

A512 static inline __m512 exp512(__m512 x)
{
    /* max/min return the second operand when the first is NaN; scores are never NaN */
    x = _mm512_max_ps(x, _mm512_set1_ps(NCZ_EXP_LO));
    x = _mm512_min_ps(x, _mm512_set1_ps(NCZ_EXP_HI));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(NCZ_EXP_LOG2E));
    __m512 n = _mm512_add_ps(t, _mm512_set1_ps(NCZ_EXP_ROUND));
    n = _mm512_sub_ps(n, _mm512_set1_ps(NCZ_EXP_ROUND));
    __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(NCZ_EXP_LN2_HI)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(NCZ_EXP_LN2_LO)));
    __m512 z = _mm512_mul_ps(r, r);
    __m512 p = _mm512_set1_ps(NCZ_EXP_P0);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NCZ_EXP_P1));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NCZ_EXP_P2));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NCZ_EXP_P3));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NCZ_EXP_P4));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NCZ_EXP_P5));
    p = _mm512_mul_ps(p, z);
    p = _mm512_add_ps(p, r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(e, 23)));
}

A2 static inline __m256 exp256(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(NCZ_EXP_LO));
    x = _mm256_min_ps(x, _mm256_set1_ps(NCZ_EXP_HI));
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(NCZ_EXP_LOG2E));
    __m256 n = _mm256_add_ps(t, _mm256_set1_ps(NCZ_EXP_ROUND));
    n = _mm256_sub_ps(n, _mm256_set1_ps(NCZ_EXP_ROUND));
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(NCZ_EXP_LN2_HI)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(NCZ_EXP_LN2_LO)));
    __m256 z = _mm256_mul_ps(r, r);
    __m256 p = _mm256_set1_ps(NCZ_EXP_P0);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(NCZ_EXP_P1));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(NCZ_EXP_P2));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(NCZ_EXP_P3));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(NCZ_EXP_P4));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(NCZ_EXP_P5));
    p = _mm256_mul_ps(p, z);
    p = _mm256_add_ps(p, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}

/* ncz_gelu, 16 and 8 lanes at a time */
A512 static inline __m512 gelu512(__m512 x)
{
    __m512 u = _mm512_mul_ps(x, x);
    u = _mm512_mul_ps(u, x);
    u = _mm512_mul_ps(u, _mm512_set1_ps(NCZ_GELU_C1));
    u = _mm512_add_ps(x, u);
    u = _mm512_mul_ps(u, _mm512_set1_ps(NCZ_GELU_C2));
    __m512 den = _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(u));
    return _mm512_div_ps(x, den);
}

A2 static inline __m256 gelu256(__m256 x)
{
    __m256 u = _mm256_mul_ps(x, x);
    u = _mm256_mul_ps(u, x);
    u = _mm256_mul_ps(u, _mm256_set1_ps(NCZ_GELU_C1));
    u = _mm256_add_ps(x, u);
    u = _mm256_mul_ps(u, _mm256_set1_ps(NCZ_GELU_C2));
    __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), exp256(u));
    return _mm256_div_ps(x, den);
}

#endif
#endif /* NCZIP_ENG_SIMD_H */
