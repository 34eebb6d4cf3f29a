/* AVX2 pieces of the O(vocabulary) integer passes (cdf.c, ensemble.c): the same integers as
 * their portable loops, which stay the reference and run where AVX2 is missing or
 * NCZIP_KERNEL=portable. GCC's vectorizer does not gather from a table (its generic tuning
 * avoids vpgatherdd) and built each weight 2^(31 - k/256) from eight scalar loads and inserts;
 * one gather does it here. */
#ifndef NCZIP_VOCAB_SIMD_H
#define NCZIP_VOCAB_SIMD_H

#include "nczip.h"

/* 1: take the AVX2 loops (the CPU has AVX2 and NCZIP_KERNEL is not "portable"). */
int ncz_vocab_avx2(void);

#if defined(__GNUC__) && defined(__x86_64__)
#define NCZ_HAVE_VOCAB_AVX2 1
#include <immintrin.h>

#define NCZ_AVX2 __attribute__((target("avx2")))

/* ncz_pow2_frac[k % 256] >> (k / 256) for eight step counts k <= 32 * 256 - 1 */
NCZ_AVX2 static inline __m256i ncz_pow2_weights8(__m256i k)
{
    __m256i frac = _mm256_i32gather_epi32((const int *)ncz_pow2_frac, _mm256_and_si256(k, _mm256_set1_epi32(255)), 4);
    return _mm256_srlv_epi32(frac, _mm256_srli_epi32(k, 8));
}

/* acc (four uint64) + the eight uint32 of w */
NCZ_AVX2 static inline __m256i ncz_add_u32_to_u64(__m256i acc, __m256i w)
{
    acc = _mm256_add_epi64(acc, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(w)));
    return _mm256_add_epi64(acc, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(w, 1)));
}

NCZ_AVX2 static inline uint64_t ncz_sum_u64x4(__m256i acc)
{
    uint64_t s[4];
    _mm256_storeu_si256((__m256i *)s, acc);
    return s[0] + s[1] + s[2] + s[3];
}
#else
#define NCZ_HAVE_VOCAB_AVX2 0
#endif

#endif
