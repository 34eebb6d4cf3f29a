/* Matrix products of the engine: GGUF block-quantized weights against activations quantized
 * per row and 32-value block, as exact integer dot products plus one fixed sequence of float32
 * operations per output.
 *
 * For output o of row r, over the input blocks b in order (acc starts at +0.0):
 *   PLAIN: acc = acc + (float)dot * (scale * d)
 *   MIN:   acc = acc + ((float)dot * (scale * d) - (float)sum * (min * d))
 *   HALF:  acc = acc + ((float)dot_lo * (scale_lo * d) + (float)dot_hi * (scale_hi * d))
 * where dot = sum_j Q[o][32 b + j] * q[r][32 b + j] (an exact int32: dot_lo and dot_hi over
 * the block's two halves), d and sum are the activation block's scale and quant sum, and each
 * * and + is one IEEE float32 operation, evaluated left to right as written. The portable loop
 * spells this out; the SIMD kernels compute the integers however suits them (VNNI on unsigned
 * activations +128 minus 128 x the weight sum, AVX2 with 16-bit pair sums that provably cannot
 * saturate) and then the same float operations lane by lane, so their bits are the portable
 * loop's. tests/test_engine.py compares every kernel with it.
 *
 * Weights are repacked once at load into groups of 16 output rows (engine.h): a group's block
 * is 512 bytes, one cache line per 4-value column of 16 rows, which the VNNI kernel multiplies
 * with a broadcast of 4 activation bytes.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define QUADS (NCZ_BLOCK / 4)
#define BLOCK_BYTES (NCZ_GROUP * NCZ_BLOCK)

/* Round half away from zero with IEEE operations only (as cext/head.c): x + 0.5 with x's sign,
 * truncated. Written without a branch, whose misprediction on random signs cost more than the
 * rest of the quantization (the compiler vectorizes this form). */
static inline int32_t round_away(float x)
{
    uint32_t bits, half = 0x3F000000u; /* 0.5f */
    memcpy(&bits, &x, sizeof bits);
    half |= bits & 0x80000000u;
    float h;
    memcpy(&h, &half, sizeof h);
    return (int32_t)(x + h);
}

/* Four activation bytes as one int32, for a broadcast (memcpy: no aliasing assumption). */
static inline int32_t load_quad(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void *alloc_aligned(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = 64;
    if (posix_memalign(&p, 64, bytes) != 0)
        return NULL;
    return p;
}

/* ---- GGUF blocks ---- */

size_t ncz_ggml_row_bytes(int type, size_t n)
{
    switch (type) {
    case NCZ_GGML_F32: return n * 4;
    case NCZ_GGML_F16: return n * 2;
    case NCZ_GGML_Q8_0: return n % 32 ? 0 : n / 32 * 34;
    case NCZ_GGML_Q5_0: return n % 32 ? 0 : n / 32 * 22;
    case NCZ_GGML_Q4_K: return n % 256 ? 0 : n / 256 * 144;
    case NCZ_GGML_Q6_K: return n % 256 ? 0 : n / 256 * 210;
    default: return 0;
    }
}

static inline uint16_t load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* One row into quants q[n], a scale per 16 values sc[n / 16] and a min per 32 mn[n / 32]. */
static void decode_row(int type, const uint8_t *src, size_t n, int8_t *q, float *sc, float *mn)
{
    switch (type) {
    case NCZ_GGML_Q8_0:
        for (size_t b = 0; b < n / 32; b++, src += 34) {
            float d = ncz_half_to_float(load_u16(src));
            sc[2 * b] = sc[2 * b + 1] = d;
            memcpy(q + 32 * b, src + 2, 32);
        }
        break;
    case NCZ_GGML_Q5_0:
        for (size_t b = 0; b < n / 32; b++, src += 22) {
            float d = ncz_half_to_float(load_u16(src));
            uint32_t qh = (uint32_t)src[2] | (uint32_t)src[3] << 8 | (uint32_t)src[4] << 16 | (uint32_t)src[5] << 24;
            const uint8_t *qs = src + 6;
            sc[2 * b] = sc[2 * b + 1] = d;
            for (int j = 0; j < 16; j++) {
                int lo = (qs[j] & 0x0F) | (int)(((qh >> j) << 4) & 0x10);
                int hi = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
                q[32 * b + j] = (int8_t)(lo - 16);
                q[32 * b + j + 16] = (int8_t)(hi - 16);
            }
        }
        break;
    case NCZ_GGML_Q4_K:
        for (size_t s = 0; s < n / 256; s++, src += 144) {
            float d = ncz_half_to_float(load_u16(src));
            float dmin = ncz_half_to_float(load_u16(src + 2));
            const uint8_t *scales = src + 4, *qs = src + 16;
            for (int j = 0; j < 8; j++) {
                int scj, mj;
                if (j < 4) {
                    scj = scales[j] & 63;
                    mj = scales[j + 4] & 63;
                } else {
                    scj = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4);
                    mj = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
                }
                size_t b = s * 8 + (size_t)j;
                /* exact: an 11-bit significand times a 6-bit integer */
                sc[2 * b] = sc[2 * b + 1] = d * (float)scj;
                mn[b] = dmin * (float)mj;
                const uint8_t *qq = qs + 32 * (j / 2);
                for (int l = 0; l < 32; l++)
                    q[32 * b + (size_t)l] = (int8_t)(j % 2 ? qq[l] >> 4 : qq[l] & 0x0F);
            }
        }
        break;
    case NCZ_GGML_Q6_K:
        for (size_t s = 0; s < n / 256; s++, src += 210) {
            const uint8_t *ql = src, *qh = src + 128;
            const int8_t *scales = (const int8_t *)(src + 192);
            float d = ncz_half_to_float(load_u16(src + 208));
            int8_t *y = q + 256 * s;
            for (int half = 0; half < 2; half++, ql += 64, qh += 32, y += 128) {
                for (int l = 0; l < 32; l++) {
                    y[l] = (int8_t)(((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32);
                    y[l + 32] = (int8_t)(((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
                    y[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                    y[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                }
            }
            for (int j = 0; j < 16; j++) /* exact: 11 bits times 8 */
                sc[s * 16 + (size_t)j] = d * (float)scales[j];
        }
        break;
    case NCZ_GGML_F32:
    case NCZ_GGML_F16:
        /* Not block-quantized: quantized here to Q8_0's form with a float32 scale, by the
         * activations' rule (round(x * 127 / amax)). A defined, deterministic stand-in. */
        for (size_t b = 0; b < n / 32; b++) {
            float x[32], amax = 0.0f;
            for (int j = 0; j < 32; j++) {
                if (type == NCZ_GGML_F32)
                    memcpy(&x[j], src + 4 * (32 * b + (size_t)j), 4);
                else
                    x[j] = ncz_half_to_float(load_u16(src + 2 * (32 * b + (size_t)j)));
                float a = x[j] < 0.0f ? -x[j] : x[j];
                amax = a > amax ? a : amax;
            }
            float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            sc[2 * b] = sc[2 * b + 1] = amax / 127.0f;
            for (int j = 0; j < 32; j++) {
                int32_t v = round_away(x[j] * id);
                q[32 * b + (size_t)j] = (int8_t)(v > 127 ? 127 : (v < -127 ? -127 : v));
            }
        }
        break;
    }
}

void ncz_mat_free(ncz_mat *m)
{
    free(m->q);
    free(m->wsum);
    free(m->scale);
    free(m->min);
    memset(m, 0, sizeof *m);
}

int ncz_mat_pack(ncz_mat *m, int type, const uint8_t *raw, size_t raw_len, size_t n_out, size_t n_in)
{
    size_t row_bytes = ncz_ggml_row_bytes(type, n_in);
    memset(m, 0, sizeof *m);
    if (row_bytes == 0 || n_out == 0 || n_in % NCZ_BLOCK || raw_len / row_bytes < n_out)
        return -1;
    m->kind = type == NCZ_GGML_Q4_K ? NCZ_MAT_MIN : type == NCZ_GGML_Q6_K ? NCZ_MAT_HALF : NCZ_MAT_PLAIN;
    m->wide = type == NCZ_GGML_Q8_0 || type == NCZ_GGML_F32 || type == NCZ_GGML_F16;
    m->n_out = n_out;
    m->n_in = n_in;
    m->nb = n_in / NCZ_BLOCK;
    m->groups = (n_out + NCZ_GROUP - 1) / NCZ_GROUP;
    size_t halves = m->kind == NCZ_MAT_HALF ? 2 : 1;
    size_t cells = m->groups * m->nb * NCZ_GROUP;
    m->q = alloc_aligned(cells * NCZ_BLOCK);
    m->wsum = alloc_aligned(cells * halves * sizeof(int32_t));
    m->scale = alloc_aligned(cells * halves * sizeof(float));
    m->min = m->kind == NCZ_MAT_MIN ? alloc_aligned(cells * sizeof(float)) : NULL;
    int8_t *qrow = malloc(n_in);
    float *sc = malloc(n_in / 16 * sizeof(float)), *mn = malloc(m->nb * sizeof(float));
    if (!m->q || !m->wsum || !m->scale || (m->kind == NCZ_MAT_MIN && !m->min) || !qrow || !sc || !mn) {
        free(qrow);
        free(sc);
        free(mn);
        ncz_mat_free(m);
        return -2;
    }
    /* the last group's missing rows stay zero: their outputs are never stored */
    memset(m->q, 0, cells * NCZ_BLOCK);
    memset(m->wsum, 0, cells * halves * sizeof(int32_t));
    memset(m->scale, 0, cells * halves * sizeof(float));
    if (m->min)
        memset(m->min, 0, cells * sizeof(float));
    for (size_t o = 0; o < n_out; o++) {
        size_t g = o / NCZ_GROUP, l = o % NCZ_GROUP;
        for (size_t b = 0; b < m->nb; b++)
            mn[b] = 0.0f;
        decode_row(type, raw + o * row_bytes, n_in, qrow, sc, mn);
        for (size_t b = 0; b < m->nb; b++) {
            size_t gb = g * m->nb + b;
            int8_t *dst = m->q + gb * BLOCK_BYTES;
            int32_t s[2] = {0, 0};
            for (size_t c = 0; c < QUADS; c++)
                for (size_t k = 0; k < 4; k++) {
                    int8_t v = qrow[b * NCZ_BLOCK + 4 * c + k];
                    dst[(c * NCZ_GROUP + l) * 4 + k] = v;
                    s[c >= QUADS / 2] += v;
                }
            if (m->kind == NCZ_MAT_HALF) {
                for (size_t h = 0; h < 2; h++) {
                    m->wsum[(gb * 2 + h) * NCZ_GROUP + l] = 128 * s[h];
                    m->scale[(gb * 2 + h) * NCZ_GROUP + l] = sc[2 * b + h];
                }
            } else {
                m->wsum[gb * NCZ_GROUP + l] = 128 * (s[0] + s[1]);
                m->scale[gb * NCZ_GROUP + l] = sc[2 * b];
                if (m->min)
                    m->min[gb * NCZ_GROUP + l] = mn[b];
            }
        }
    }
    free(qrow);
    free(sc);
    free(mn);
    return 0;
}

void ncz_mat_row(const ncz_mat *m, size_t row, float *out)
{
    size_t g = row / NCZ_GROUP, l = row % NCZ_GROUP;
    for (size_t b = 0; b < m->nb; b++) {
        size_t gb = g * m->nb + b;
        const int8_t *src = m->q + gb * BLOCK_BYTES;
        for (size_t j = 0; j < NCZ_BLOCK; j++) {
            float q = (float)src[((j / 4) * NCZ_GROUP + l) * 4 + j % 4];
            float v;
            if (m->kind == NCZ_MAT_HALF)
                v = m->scale[(gb * 2 + j / 16) * NCZ_GROUP + l] * q;
            else {
                v = m->scale[gb * NCZ_GROUP + l] * q;
                if (m->kind == NCZ_MAT_MIN)
                    v = v - m->min[gb * NCZ_GROUP + l];
            }
            out[b * NCZ_BLOCK + j] = v;
        }
    }
}

/* ---- activations ---- */

void ncz_act_free(ncz_act *a)
{
    free(a->q8);
    free(a->s8);
    free(a->d);
    free(a->sum);
    memset(a, 0, sizeof *a);
}

int ncz_act_reserve(ncz_act *a, size_t rows, size_t n_in)
{
    if (rows <= a->cap_rows && n_in <= a->cap_in)
        return 0;
    size_t r = rows > a->cap_rows ? rows : a->cap_rows, n = n_in > a->cap_in ? n_in : a->cap_in;
    ncz_act_free(a);
    a->q8 = alloc_aligned(r * n);
    a->s8 = alloc_aligned(r * n);
    a->d = alloc_aligned(r * (n / NCZ_BLOCK) * sizeof(float));
    a->sum = alloc_aligned(r * (n / NCZ_BLOCK) * sizeof(int32_t));
    if (!a->q8 || !a->s8 || !a->d || !a->sum) {
        ncz_act_free(a);
        return -2;
    }
    a->cap_rows = r;
    a->cap_in = n;
    return 0;
}

/* One block: q = round_away(x * (127 / amax)) clamped to -127..127, d = amax / 127. */
static void quantize_block(const float *v, uint8_t *q8, int8_t *s8, float *d, int32_t *sum)
{
    float mx[8] = {0};
    for (int j = 0; j < NCZ_BLOCK; j++) {
        uint32_t bits;
        memcpy(&bits, &v[j], sizeof bits);
        bits &= 0x7FFFFFFFu;
        float t;
        memcpy(&t, &bits, sizeof t);
        mx[j % 8] = t > mx[j % 8] ? t : mx[j % 8]; /* a maximum is exact in any order */
    }
    float amax = 0.0f;
    for (int j = 0; j < 8; j++)
        amax = mx[j] > amax ? mx[j] : amax;
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    *d = amax / 127.0f;
    int32_t total = 0;
    for (int j = 0; j < NCZ_BLOCK; j++) {
        int32_t q = round_away(v[j] * id);
        q = q > 127 ? 127 : (q < -127 ? -127 : q);
        q8[j] = (uint8_t)(q + 128);
        s8[j] = (int8_t)q;
        total += q;
    }
    *sum = total;
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

/* quantize_block, 16 values at a time (AVX-512; bit operations on integers, AVX512F only) */
__attribute__((target("avx512f"))) static void quantize_block_avx512(const float *v, uint8_t *q8, int8_t *s8,
                                                                   float *d, int32_t *sum)
{
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u), half = _mm512_set1_epi32(0x3F000000);
    __m512i b0 = _mm512_castps_si512(_mm512_loadu_ps(v)), b1 = _mm512_castps_si512(_mm512_loadu_ps(v + 16));
    __m512 mx = _mm512_max_ps(_mm512_castsi512_ps(_mm512_andnot_si512(sign, b0)),
                              _mm512_castsi512_ps(_mm512_andnot_si512(sign, b1)));
    float amax = _mm512_reduce_max_ps(mx);
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    *d = amax / 127.0f;
    __m512 vid = _mm512_set1_ps(id);
    __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512 y0 = _mm512_mul_ps(_mm512_castsi512_ps(b0), vid), y1 = _mm512_mul_ps(_mm512_castsi512_ps(b1), vid);
    __m512 h0 = _mm512_castsi512_ps(_mm512_or_si512(half, _mm512_and_si512(sign, _mm512_castps_si512(y0))));
    __m512 h1 = _mm512_castsi512_ps(_mm512_or_si512(half, _mm512_and_si512(sign, _mm512_castps_si512(y1))));
    __m512i q0 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvttps_epi32(_mm512_add_ps(y0, h0)), lo), hi);
    __m512i q1 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvttps_epi32(_mm512_add_ps(y1, h1)), lo), hi);
    _mm_storeu_si128((__m128i *)s8, _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128((__m128i *)(s8 + 16), _mm512_cvtepi32_epi8(q1));
    __m512i off = _mm512_set1_epi32(128);
    _mm_storeu_si128((__m128i *)q8, _mm512_cvtepi32_epi8(_mm512_add_epi32(q0, off)));
    _mm_storeu_si128((__m128i *)(q8 + 16), _mm512_cvtepi32_epi8(_mm512_add_epi32(q1, off)));
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
}

/* quantize_block, 8 values at a time (AVX2) */
__attribute__((target("avx2"))) static void quantize_block_avx2(const float *v, uint8_t *q8, int8_t *s8, float *d,
                                                                int32_t *sum)
{
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256 x[4], mx = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) {
        x[i] = _mm256_loadu_ps(v + 8 * i);
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, x[i]));
    }
    float m8[8], amax = 0.0f;
    _mm256_storeu_ps(m8, mx);
    for (int j = 0; j < 8; j++)
        amax = m8[j] > amax ? m8[j] : amax;
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    *d = amax / 127.0f;
    __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f);
    __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127), total = _mm256_setzero_si256();
    int32_t q[NCZ_BLOCK];
    for (int i = 0; i < 4; i++) {
        __m256 y = _mm256_mul_ps(x[i], vid);
        y = _mm256_add_ps(y, _mm256_or_ps(half, _mm256_and_ps(sign, y)));
        __m256i qi = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvttps_epi32(y), lo), hi);
        total = _mm256_add_epi32(total, qi);
        _mm256_storeu_si256((__m256i *)(q + 8 * i), qi);
    }
    for (int j = 0; j < NCZ_BLOCK; j++) {
        q8[j] = (uint8_t)(q[j] + 128);
        s8[j] = (int8_t)q[j];
    }
    int32_t t8[8], s = 0;
    _mm256_storeu_si256((__m256i *)t8, total);
    for (int j = 0; j < 8; j++)
        s += t8[j];
    *sum = s;
}
#define HAVE_X86_QUANTIZE 1
#else
#define HAVE_X86_QUANTIZE 0
#endif

void ncz_act_quantize(ncz_act *a, const float *x, size_t ld, size_t rows, size_t n_in, int kernel)
{
    size_t nb = n_in / NCZ_BLOCK;
    a->rows = rows;
    a->n_in = n_in;
    a->nb = nb;
    for (size_t r = 0; r < rows; r++) {
        for (size_t b = 0; b < nb; b++) {
            const float *v = x + r * ld + b * NCZ_BLOCK;
            uint8_t *q8 = a->q8 + r * n_in + b * NCZ_BLOCK;
            int8_t *s8 = a->s8 + r * n_in + b * NCZ_BLOCK;
            float *d = a->d + r * nb + b;
            int32_t *sum = a->sum + r * nb + b;
#if HAVE_X86_QUANTIZE
            if (kernel >= NCZ_KERNEL_AVX512) {
                quantize_block_avx512(v, q8, s8, d, sum);
                continue;
            }
            if (kernel >= NCZ_KERNEL_AVX2) {
                quantize_block_avx2(v, q8, s8, d, sum);
                continue;
            }
#endif
            quantize_block(v, q8, s8, d, sum);
        }
    }
    (void)kernel;
}

/* ---- the portable loop: the reference ---- */

static void matmul_portable(const ncz_mat *m, const ncz_act *a, float *out, size_t ld, size_t g0, size_t g1)
{
    size_t nb = m->nb;
    for (size_t g = g0; g < g1; g++) {
        for (size_t r = 0; r < a->rows; r++) {
            float acc[NCZ_GROUP] = {0};
            for (size_t b = 0; b < nb; b++) {
                size_t gb = g * nb + b;
                const int8_t *w = m->q + gb * BLOCK_BYTES;
                const uint8_t *x = a->q8 + r * a->n_in + b * NCZ_BLOCK;
                float d = a->d[r * nb + b];
                for (size_t l = 0; l < NCZ_GROUP; l++) {
                    int32_t t[2] = {0, 0};
                    for (size_t c = 0; c < QUADS; c++)
                        for (size_t k = 0; k < 4; k++)
                            t[c >= QUADS / 2] += (int32_t)x[4 * c + k] * (int32_t)w[(c * NCZ_GROUP + l) * 4 + k];
                    float p;
                    if (m->kind == NCZ_MAT_HALF) {
                        int32_t d0 = t[0] - m->wsum[(gb * 2) * NCZ_GROUP + l];
                        int32_t d1 = t[1] - m->wsum[(gb * 2 + 1) * NCZ_GROUP + l];
                        float s0 = m->scale[(gb * 2) * NCZ_GROUP + l] * d;
                        float s1 = m->scale[(gb * 2 + 1) * NCZ_GROUP + l] * d;
                        float p0 = (float)d0 * s0, p1 = (float)d1 * s1;
                        p = p0 + p1;
                    } else {
                        int32_t dot = t[0] + t[1] - m->wsum[gb * NCZ_GROUP + l];
                        float s = m->scale[gb * NCZ_GROUP + l] * d;
                        p = (float)dot * s;
                        if (m->kind == NCZ_MAT_MIN) {
                            float mm = m->min[gb * NCZ_GROUP + l] * d;
                            float p2 = (float)a->sum[r * nb + b] * mm;
                            p = p - p2;
                        }
                    }
                    acc[l] = acc[l] + p;
                }
            }
            for (size_t l = 0; l < NCZ_GROUP && g * NCZ_GROUP + l < m->n_out; l++)
                out[r * ld + g * NCZ_GROUP + l] = acc[l];
        }
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

/* ---- AVX-512 VNNI: 16 outputs in a register, up to 16 rows per pass over a group ---- */
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

VNNI_TARGET static inline __attribute__((always_inline)) void
vnni_rows(const ncz_mat *m, const ncz_act *a, float *out, size_t ld, size_t g, size_t r0, int R, int kind,
          int fetch_next)
{
    size_t nb = m->nb;
    __m512 acc[16];
    for (int i = 0; i < R; i++)
        acc[i] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        size_t gb = g * nb + b;
        const __m512i *wp = (const __m512i *)(m->q + gb * BLOCK_BYTES);
        if (fetch_next) {
            const char *nw = (const char *)(m->q + (gb + 2 * nb) * BLOCK_BYTES);
            for (int line = 0; line < BLOCK_BYTES; line += 64)
                _mm_prefetch(nw + line, _MM_HINT_T0);
        }
        __m512i w0 = _mm512_load_si512(wp + 0), w1 = _mm512_load_si512(wp + 1);
        __m512i w2 = _mm512_load_si512(wp + 2), w3 = _mm512_load_si512(wp + 3);
        __m512i w4 = _mm512_load_si512(wp + 4), w5 = _mm512_load_si512(wp + 5);
        __m512i w6 = _mm512_load_si512(wp + 6), w7 = _mm512_load_si512(wp + 7);
        __m512i ws0, ws1 = _mm512_setzero_si512();
        __m512 sc0, sc1 = _mm512_setzero_ps(), mn = _mm512_setzero_ps();
        if (kind == NCZ_MAT_HALF) {
            ws0 = _mm512_loadu_si512(m->wsum + (gb * 2) * NCZ_GROUP);
            ws1 = _mm512_loadu_si512(m->wsum + (gb * 2 + 1) * NCZ_GROUP);
            sc0 = _mm512_loadu_ps(m->scale + (gb * 2) * NCZ_GROUP);
            sc1 = _mm512_loadu_ps(m->scale + (gb * 2 + 1) * NCZ_GROUP);
        } else {
            ws0 = _mm512_loadu_si512(m->wsum + gb * NCZ_GROUP);
            sc0 = _mm512_loadu_ps(m->scale + gb * NCZ_GROUP);
            if (kind == NCZ_MAT_MIN)
                mn = _mm512_loadu_ps(m->min + gb * NCZ_GROUP);
        }
        for (int i = 0; i < R; i++) {
            size_t r = r0 + (size_t)i;
            const uint8_t *x = a->q8 + r * a->n_in + b * NCZ_BLOCK;
            __m512i t0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi32(load_quad(x)), w0);
            __m512i t1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi32(load_quad(x + 16)), w4);
            t0 = _mm512_dpbusd_epi32(t0, _mm512_set1_epi32(load_quad(x + 4)), w1);
            t1 = _mm512_dpbusd_epi32(t1, _mm512_set1_epi32(load_quad(x + 20)), w5);
            t0 = _mm512_dpbusd_epi32(t0, _mm512_set1_epi32(load_quad(x + 8)), w2);
            t1 = _mm512_dpbusd_epi32(t1, _mm512_set1_epi32(load_quad(x + 24)), w6);
            t0 = _mm512_dpbusd_epi32(t0, _mm512_set1_epi32(load_quad(x + 12)), w3);
            t1 = _mm512_dpbusd_epi32(t1, _mm512_set1_epi32(load_quad(x + 28)), w7);
            __m512 d = _mm512_set1_ps(a->d[r * nb + b]);
            __m512 p;
            if (kind == NCZ_MAT_HALF) {
                __m512 p0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(t0, ws0)), _mm512_mul_ps(sc0, d));
                __m512 p1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(t1, ws1)), _mm512_mul_ps(sc1, d));
                p = _mm512_add_ps(p0, p1);
            } else {
                __m512i dot = _mm512_sub_epi32(_mm512_add_epi32(t0, t1), ws0);
                p = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(sc0, d));
                if (kind == NCZ_MAT_MIN) {
                    __m512 p2 = _mm512_mul_ps(_mm512_set1_ps((float)a->sum[r * nb + b]), _mm512_mul_ps(mn, d));
                    p = _mm512_sub_ps(p, p2);
                }
            }
            acc[i] = _mm512_add_ps(acc[i], p);
        }
    }
    size_t v0 = g * NCZ_GROUP;
    __mmask16 keep = v0 + NCZ_GROUP <= m->n_out ? (__mmask16)0xFFFF : (__mmask16)((1u << (m->n_out - v0)) - 1u);
    for (int i = 0; i < R; i++)
        _mm512_mask_storeu_ps(out + (r0 + (size_t)i) * ld + v0, keep, acc[i]);
}

/* Groups are taken in blocks that stay in L2 (GROUP_BLOCK x 16 outputs) while every chunk of
 * 16 rows passes over them: with many rows (a prefill block) the outputs of a chunk are then
 * written a few KB at a time, instead of 64 bytes into each of the rows' pages per group
 * (the head's rows are 1 MB apart, and that cost a TLB miss per row and group). */
#define GROUP_BLOCK 32
#define VNNI_CHUNK(R, K)                                                                      \
    case R:                                                                                \
        for (size_t g = b0; g < b1; g++)                                                   \
            vnni_rows(m, a, out, ld, g, r, R, K, r == 0 && rows > 8 && g + 2 < g1);        \
        break;
#define VNNI_KIND(KIND)                                                                          \
    VNNI_TARGET static void vnni_##KIND(const ncz_mat *m, const ncz_act *a, float *out, size_t ld, \
                                        size_t g0, size_t g1)                                    \
    {                                                                                            \
        size_t rows = a->rows;                                                                   \
        for (size_t b0 = g0; b0 < g1; b0 += GROUP_BLOCK) {                                       \
            size_t b1 = b0 + GROUP_BLOCK < g1 ? b0 + GROUP_BLOCK : g1;                           \
            for (size_t r = 0; r < rows; r += 16) {                                              \
                switch (rows - r < 16 ? rows - r : 16) {                                         \
                    VNNI_CHUNK(1, KIND) VNNI_CHUNK(2, KIND) VNNI_CHUNK(3, KIND) VNNI_CHUNK(4, KIND) VNNI_CHUNK(5, KIND)        \
                    VNNI_CHUNK(6, KIND) VNNI_CHUNK(7, KIND) VNNI_CHUNK(8, KIND) VNNI_CHUNK(9, KIND) VNNI_CHUNK(10, KIND)       \
                    VNNI_CHUNK(11, KIND) VNNI_CHUNK(12, KIND) VNNI_CHUNK(13, KIND) VNNI_CHUNK(14, KIND) VNNI_CHUNK(15, KIND)   \
                    default:                                                                     \
                        for (size_t g = b0; g < b1; g++)                                         \
                            vnni_rows(m, a, out, ld, g, r, 16, KIND, r == 0 && rows > 8 && g + 2 < g1); \
                        break;                                                                   \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }
VNNI_KIND(NCZ_MAT_PLAIN)
VNNI_KIND(NCZ_MAT_MIN)
VNNI_KIND(NCZ_MAT_HALF)
#undef VNNI_KIND
#undef VNNI_CHUNK

/* ---- AVX2: 8 outputs in a register (a group in two halves), 4 rows per pass ----
 * maddubs multiplies unsigned by signed bytes into saturating 16-bit pair sums. Narrow weights
 * (all quants in -32..31: Q5_0, Q4_K, Q6_K) meet the activations +128 (1..255): a pair sum is
 * at most 255 * 32 * 2 = 16,320, so two of them still fit in 16 bits. Wide weights (Q8_0) use
 * the sign trick: |w| (0..128) times the activation carrying w's sign (-127..127), a pair sum
 * of at most 32,512, widened at once. Both give the exact integer dot. */
#define AVX2_TARGET __attribute__((target("avx2,f16c")))
#define AVX2_ROWS 4

/* The float operations after a block's integer dots (t0, t1: its two halves), and the stores. */
AVX2_TARGET static inline __attribute__((always_inline)) void
avx2_finish_block(const ncz_mat *m, const ncz_act *a, size_t gb, size_t b, size_t half, size_t r0, int R, int kind,
                  int offset_acts, const __m256i *t0, const __m256i *t1, __m256 *acc)
{
    size_t nb = m->nb;
    __m256i ws0, ws1 = _mm256_setzero_si256();
    __m256 sc0, sc1 = _mm256_setzero_ps(), mn = _mm256_setzero_ps();
    if (kind == NCZ_MAT_HALF) {
        ws0 = _mm256_loadu_si256((const __m256i *)(m->wsum + (gb * 2) * NCZ_GROUP + half * 8));
        ws1 = _mm256_loadu_si256((const __m256i *)(m->wsum + (gb * 2 + 1) * NCZ_GROUP + half * 8));
        sc0 = _mm256_loadu_ps(m->scale + (gb * 2) * NCZ_GROUP + half * 8);
        sc1 = _mm256_loadu_ps(m->scale + (gb * 2 + 1) * NCZ_GROUP + half * 8);
    } else {
        ws0 = _mm256_loadu_si256((const __m256i *)(m->wsum + gb * NCZ_GROUP + half * 8));
        sc0 = _mm256_loadu_ps(m->scale + gb * NCZ_GROUP + half * 8);
        if (kind == NCZ_MAT_MIN)
            mn = _mm256_loadu_ps(m->min + gb * NCZ_GROUP + half * 8);
    }
    for (int i = 0; i < R; i++) {
        size_t r = r0 + (size_t)i;
        __m256 d = _mm256_set1_ps(a->d[r * nb + b]);
        __m256 p;
        if (kind == NCZ_MAT_HALF) { /* activations +128: subtract 128 x the weight sums */
            __m256 p0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(t0[i], ws0)), _mm256_mul_ps(sc0, d));
            __m256 p1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(t1[i], ws1)), _mm256_mul_ps(sc1, d));
            p = _mm256_add_ps(p0, p1);
        } else {
            __m256i dot = _mm256_add_epi32(t0[i], t1[i]);
            if (offset_acts)
                dot = _mm256_sub_epi32(dot, ws0);
            p = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(sc0, d));
            if (kind == NCZ_MAT_MIN) {
                __m256 p2 = _mm256_mul_ps(_mm256_set1_ps((float)a->sum[r * nb + b]), _mm256_mul_ps(mn, d));
                p = _mm256_sub_ps(p, p2);
            }
        }
        acc[i] = _mm256_add_ps(acc[i], p);
    }
}

AVX2_TARGET static inline __attribute__((always_inline)) void
avx2_store(const ncz_mat *m, float *out, size_t ld, size_t g, size_t half, size_t r0, int R, const __m256 *acc)
{
    size_t v0 = g * NCZ_GROUP + half * 8;
    for (int i = 0; i < R; i++) {
        float *dst = out + (r0 + (size_t)i) * ld + v0;
        if (v0 + 8 <= m->n_out) {
            _mm256_storeu_ps(dst, acc[i]);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, acc[i]);
            for (size_t l = 0; v0 + l < m->n_out; l++)
                dst[l] = tmp[l];
        }
    }
}

AVX2_TARGET static inline __attribute__((always_inline)) void
avx2_rows(const ncz_mat *m, const ncz_act *a, float *out, size_t ld, size_t g, size_t half, size_t r0, int R,
          int kind, int wide)
{
    size_t nb = m->nb;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[AVX2_ROWS];
    for (int i = 0; i < R; i++)
        acc[i] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        size_t gb = g * nb + b;
        const int8_t *wb = m->q + gb * BLOCK_BYTES + half * 32;
        /* integer dots of the block's two halves (quads 0-3 and 4-7), per row; a pair of quads
         * at a time, its weights loaded once for all rows */
        __m256i t0[AVX2_ROWS], t1[AVX2_ROWS];
        for (int i = 0; i < R; i++)
            t0[i] = t1[i] = _mm256_setzero_si256();
        for (int c = 0; c < QUADS; c += 2) {
            __m256i w0 = _mm256_load_si256((const __m256i *)(wb + c * NCZ_GROUP * 4));
            __m256i w1 = _mm256_load_si256((const __m256i *)(wb + (c + 1) * NCZ_GROUP * 4));
            if (wide) {
                __m256i aw0 = _mm256_sign_epi8(w0, w0), aw1 = _mm256_sign_epi8(w1, w1);
                for (int i = 0; i < R; i++) {
                    const int8_t *x = a->s8 + (r0 + (size_t)i) * a->n_in + b * NCZ_BLOCK + 4 * c;
                    __m256i s0 = _mm256_sign_epi8(_mm256_set1_epi32(load_quad(x)), w0);
                    __m256i s1 = _mm256_sign_epi8(_mm256_set1_epi32(load_quad(x + 4)), w1);
                    __m256i d = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(aw0, s0), ones),
                                                 _mm256_madd_epi16(_mm256_maddubs_epi16(aw1, s1), ones));
                    if (c < QUADS / 2)
                        t0[i] = _mm256_add_epi32(t0[i], d);
                    else
                        t1[i] = _mm256_add_epi32(t1[i], d);
                }
            } else {
                for (int i = 0; i < R; i++) {
                    const uint8_t *x = a->q8 + (r0 + (size_t)i) * a->n_in + b * NCZ_BLOCK + 4 * c;
                    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_set1_epi32(load_quad(x)), w0),
                                                 _mm256_maddubs_epi16(_mm256_set1_epi32(load_quad(x + 4)), w1));
                    __m256i d = _mm256_madd_epi16(p, ones);
                    if (c < QUADS / 2)
                        t0[i] = _mm256_add_epi32(t0[i], d);
                    else
                        t1[i] = _mm256_add_epi32(t1[i], d);
                }
            }
        }
        avx2_finish_block(m, a, gb, b, half, r0, R, kind, !wide, t0, t1, acc);
    }
    avx2_store(m, out, ld, g, half, r0, R, acc);
}

#define AVX2_KIND(NAME, ROWS, KIND, WIDE, TARGET)                                               \
    TARGET static void NAME(const ncz_mat *m, const ncz_act *a, float *out, size_t ld, size_t g0, size_t g1) \
    {                                                                                            \
        for (size_t b0 = g0; b0 < g1; b0 += GROUP_BLOCK) {                                       \
            size_t b1 = b0 + GROUP_BLOCK < g1 ? b0 + GROUP_BLOCK : g1;                           \
            for (size_t r = 0; r < a->rows; r += AVX2_ROWS) {                                    \
                int R = a->rows - r < AVX2_ROWS ? (int)(a->rows - r) : AVX2_ROWS;                \
                for (size_t g = b0; g < b1; g++)                                                 \
                    for (size_t half = 0; half < 2 && g * NCZ_GROUP + half * 8 < m->n_out; half++) { \
                        switch (R) {                                                             \
                        case 1: ROWS(m, a, out, ld, g, half, r, 1, KIND, WIDE); break;           \
                        case 2: ROWS(m, a, out, ld, g, half, r, 2, KIND, WIDE); break;           \
                        case 3: ROWS(m, a, out, ld, g, half, r, 3, KIND, WIDE); break;           \
                        default: ROWS(m, a, out, ld, g, half, r, 4, KIND, WIDE); break;          \
                        }                                                                        \
                    }                                                                            \
            }                                                                                    \
        }                                                                                        \
    }
AVX2_KIND(avx2_plain_narrow, avx2_rows, NCZ_MAT_PLAIN, 0, AVX2_TARGET)
AVX2_KIND(avx2_plain_wide, avx2_rows, NCZ_MAT_PLAIN, 1, AVX2_TARGET)
AVX2_KIND(avx2_min, avx2_rows, NCZ_MAT_MIN, 0, AVX2_TARGET)
AVX2_KIND(avx2_half, avx2_rows, NCZ_MAT_HALF, 0, AVX2_TARGET)
#undef AVX2_KIND
#define HAVE_X86_KERNELS 1
#else
#define HAVE_X86_KERNELS 0
#endif

void ncz_matmul(const ncz_mat *m, const ncz_act *a, float *out, size_t ld, size_t g0, size_t g1, int kernel)
{
#if HAVE_X86_KERNELS
    if (kernel == NCZ_KERNEL_AVX512) {
        switch (m->kind) {
        case NCZ_MAT_PLAIN: vnni_NCZ_MAT_PLAIN(m, a, out, ld, g0, g1); return;
        case NCZ_MAT_MIN: vnni_NCZ_MAT_MIN(m, a, out, ld, g0, g1); return;
        default: vnni_NCZ_MAT_HALF(m, a, out, ld, g0, g1); return;
        }
    }
    if (kernel >= NCZ_KERNEL_AVX2) {
        if (m->kind == NCZ_MAT_PLAIN)
            (m->wide ? avx2_plain_wide : avx2_plain_narrow)(m, a, out, ld, g0, g1);
        else if (m->kind == NCZ_MAT_MIN && !m->wide)
            avx2_min(m, a, out, ld, g0, g1);
        else if (m->kind == NCZ_MAT_HALF && !m->wide)
            avx2_half(m, a, out, ld, g0, g1);
        else
            matmul_portable(m, a, out, ld, g0, g1);
        return;
    }
#endif
    (void)kernel;
    matmul_portable(m, a, out, ld, g0, g1);
}
