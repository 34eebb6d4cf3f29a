/* Attention of a row's query heads over one lane's cache, in one fixed order of float32
 * operations (the portable loop below is the definition; the SIMD kernels repeat it lane by lane).
 *
 * For each query head, with positions p in [lo, hi] ascending and slot(p) = (p + offset) mod ring:
 *   score(p) = sum over d, in order d = 0, 1, ..., of q[d] * K[p][d]   (starting at +0.0)
 *   m        = the largest score (the BOS cell's included), + 0.0
 *   e(p)     = ncz_expf(score(p) - m)
 *   S        = ncz_sum16(part), part[i] = sum of e(p) over slot(p) mod 16 = i, p ascending;
 *              with the BOS cell, S = e0 + S
 *   o[d]     = +0.0, + e0 * V0[d] with the BOS cell, then + e(p) * V[p][d] for p ascending
 *   out[d]   = o[d] * (1 / S)
 * A query's scores are computed 16 slots at a time by the SIMD kernels (one slot per lane, each
 * summed over d in order), so no horizontal sum is needed where the order matters; the ring is a
 * multiple of 16, so a slot's lane is slot(p) mod 16 in every tile.
 */
#include <string.h>

#include "engine.h"

static inline size_t slot_of(const ncz_kv_view *kv, size_t p)
{
    return (p + kv->offset) % kv->ring;
}

static inline float minus_infinity(void)
{
    uint32_t u = 0xFF800000u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void attend_portable(const ncz_kv_view *kv, size_t hd, size_t nq, const float *q, size_t lo, size_t hi,
                            int with_bos, float *out, float *scratch)
{
    const float *h2f = ncz_half_table();
    size_t n = lo <= hi ? hi - lo + 1 : 0;
    for (size_t h = 0; h < nq; h++) {
        const float *qh = q + h * hd;
        float *e = scratch;
        float m = minus_infinity(), s0 = 0.0f, e0 = 0.0f;
        if (with_bos) {
            float s = 0.0f;
            for (size_t d = 0; d < hd; d++)
                s = s + qh[d] * h2f[kv->k0[d]];
            s0 = s;
            m = s;
        }
        for (size_t i = 0; i < n; i++) {
            size_t slot = slot_of(kv, lo + i);
            const uint16_t *kt = kv->k + (slot / 16) * hd * 16 + slot % 16;
            float s = 0.0f;
            for (size_t d = 0; d < hd; d++)
                s = s + qh[d] * h2f[kt[d * 16]];
            e[i] = s;
            m = s > m ? s : m;
        }
        m = m + 0.0f;
        float part[16] = {0};
        for (size_t i = 0; i < n; i++) {
            float x = ncz_expf(e[i] - m);
            e[i] = x;
            size_t lane = slot_of(kv, lo + i) % 16;
            part[lane] = part[lane] + x;
        }
        float sum = ncz_sum16(part);
        if (with_bos) {
            e0 = ncz_expf(s0 - m);
            sum = e0 + sum;
        }
        float inv = 1.0f / sum;
        for (size_t d = 0; d < hd; d++) {
            float o = 0.0f;
            if (with_bos)
                o = o + e0 * h2f[kv->v0[d]];
            for (size_t i = 0; i < n; i++)
                o = o + e[i] * h2f[kv->v[slot_of(kv, lo + i) * hd + d]];
            out[h * hd + d] = o * inv;
        }
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#include "eng_simd.h"

/* Lanes [lo, hi) of a 16-lane tile. */
static inline uint32_t lane_mask(size_t lo, size_t hi)
{
    uint32_t upto = hi >= 16 ? 0xFFFFu : (1u << hi) - 1u;
    return upto & ~((1u << lo) - 1u) & 0xFFFFu;
}

/* The work shared by both kernels: the tiles a query reads (u: the query's scratch index, tile
 * t covers u in [16 t, 16 t + 16), position lo at u = u0). */
typedef struct {
    size_t n, u0, tiles, base, ntiles;
} tile_walk;

static inline tile_walk walk_of(const ncz_kv_view *kv, size_t lo, size_t hi)
{
    tile_walk w;
    w.n = lo <= hi ? hi - lo + 1 : 0;
    size_t first = w.n ? slot_of(kv, lo) : 0;
    w.u0 = first % 16;
    w.base = first / 16;
    w.tiles = w.n ? (w.u0 + w.n + 15) / 16 : 0;
    w.ntiles = kv->ring / 16;
    return w;
}

static inline size_t tile_at(const tile_walk *w, size_t t)
{
    return (w->base + t) % w->ntiles;
}

static inline uint32_t tile_valid(const tile_walk *w, size_t t)
{
    size_t lo = t == 0 ? w->u0 : 0;
    size_t end = w->u0 + w->n - 16 * t;
    return lane_mask(lo, end);
}

/* ---- AVX-512 ---- */

A512 static inline float hmax512(__m512 v)
{
    return _mm512_reduce_max_ps(v); /* exact in any order */
}

A512 static inline float sum16_512(__m512 v)
{
    float p[16];
    _mm512_storeu_ps(p, v);
    return ncz_sum16(p);
}

A512 static void attend_avx512(const ncz_kv_view *kv, size_t hd, size_t nq, const float *q, size_t lo, size_t hi,
                               int with_bos, float *out, float *scratch)
{
    tile_walk w = walk_of(kv, lo, hi);
    size_t stride = kv->ring + 16;
    float m[8], e0[8], inv[8], s0[8];
    for (size_t h0 = 0; h0 < nq; h0 += 4) {
        size_t nh = nq - h0 < 4 ? nq - h0 : 4;
        const float *qh = q + h0 * hd;
        /* scores, 16 slots per tile, each summed over d in order */
        for (size_t t = 0; t < w.tiles; t++) {
            const uint16_t *kt = kv->k + tile_at(&w, t) * hd * 16;
            __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (size_t d = 0; d < hd; d++) {
                __m512 kk = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kt + d * 16)));
                acc0 = _mm512_add_ps(acc0, _mm512_mul_ps(_mm512_set1_ps(qh[d]), kk));
                if (nh > 1)
                    acc1 = _mm512_add_ps(acc1, _mm512_mul_ps(_mm512_set1_ps(qh[hd + d]), kk));
                if (nh > 2)
                    acc2 = _mm512_add_ps(acc2, _mm512_mul_ps(_mm512_set1_ps(qh[2 * hd + d]), kk));
                if (nh > 3)
                    acc3 = _mm512_add_ps(acc3, _mm512_mul_ps(_mm512_set1_ps(qh[3 * hd + d]), kk));
            }
            _mm512_storeu_ps(scratch + 0 * stride + 16 * t, acc0);
            if (nh > 1)
                _mm512_storeu_ps(scratch + 1 * stride + 16 * t, acc1);
            if (nh > 2)
                _mm512_storeu_ps(scratch + 2 * stride + 16 * t, acc2);
            if (nh > 3)
                _mm512_storeu_ps(scratch + 3 * stride + 16 * t, acc3);
        }
        for (size_t h = 0; h < nh; h++) {
            float *e = scratch + h * stride;
            __m512 mx = _mm512_set1_ps(minus_infinity());
            for (size_t t = 0; t < w.tiles; t++)
                mx = _mm512_mask_max_ps(mx, (__mmask16)tile_valid(&w, t), mx, _mm512_loadu_ps(e + 16 * t));
            float mm = hmax512(mx);
            if (with_bos) {
                float s = 0.0f;
                for (size_t d = 0; d < hd; d++)
                    s = s + qh[h * hd + d] * ncz_half_to_float(kv->k0[d]);
                s0[h] = s;
                mm = s > mm ? s : mm;
            }
            mm = mm + 0.0f;
            m[h] = mm;
            __m512 part = _mm512_setzero_ps(), vm = _mm512_set1_ps(mm);
            for (size_t t = 0; t < w.tiles; t++) {
                __m512 x = exp512(_mm512_sub_ps(_mm512_loadu_ps(e + 16 * t), vm));
                x = _mm512_maskz_mov_ps((__mmask16)tile_valid(&w, t), x);
                _mm512_storeu_ps(e + 16 * t, x);
                part = _mm512_add_ps(part, x);
            }
            float sum = sum16_512(part);
            if (with_bos) {
                e0[h] = ncz_expf(s0[h] - mm);
                sum = e0[h] + sum;
            }
            inv[h] = 1.0f / sum;
        }
        /* values: 16 dims at a time, every head's accumulator in a register */
        for (size_t d0 = 0; d0 < hd; d0 += 16) {
            __m512 o[4];
            for (size_t h = 0; h < 4; h++)
                o[h] = _mm512_setzero_ps();
            if (with_bos) {
                __m512 v0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kv->v0 + d0)));
                for (size_t h = 0; h < nh; h++)
                    o[h] = _mm512_add_ps(o[h], _mm512_mul_ps(_mm512_set1_ps(e0[h]), v0));
            }
            size_t slot = w.base * 16 + w.u0;
            for (size_t u = w.u0; u < w.u0 + w.n; u++, slot++) {
                if (slot == kv->ring)
                    slot = 0;
                __m512 vv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kv->v + slot * hd + d0)));
                o[0] = _mm512_add_ps(o[0], _mm512_mul_ps(_mm512_set1_ps(scratch[u]), vv));
                if (nh > 1)
                    o[1] = _mm512_add_ps(o[1], _mm512_mul_ps(_mm512_set1_ps(scratch[stride + u]), vv));
                if (nh > 2)
                    o[2] = _mm512_add_ps(o[2], _mm512_mul_ps(_mm512_set1_ps(scratch[2 * stride + u]), vv));
                if (nh > 3)
                    o[3] = _mm512_add_ps(o[3], _mm512_mul_ps(_mm512_set1_ps(scratch[3 * stride + u]), vv));
            }
            for (size_t h = 0; h < nh; h++)
                _mm512_storeu_ps(out + (h0 + h) * hd + d0, _mm512_mul_ps(o[h], _mm512_set1_ps(inv[h])));
        }
        (void)m;
    }
}

/* ---- AVX2: the same, a 16-slot tile as two 8-lane halves ---- */

A2 static inline float sum16_256(__m256 lo, __m256 hi)
{
    float p[16];
    _mm256_storeu_ps(p, lo);
    _mm256_storeu_ps(p + 8, hi);
    return ncz_sum16(p);
}

A2 static inline __m256 mask8(uint32_t bits)
{
    const __m256i lanes = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256i b = _mm256_and_si256(_mm256_set1_epi32((int)bits), lanes);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, lanes));
}

/* One query head's softmax over its scores e (the tiles [0, tiles) of a walk; v's lanes valid),
 * with the BOS cell when with_bos: e becomes exp(score - m), 0 outside the valid lanes, *e0
 * the BOS cell's; returns 1 / S. */
A2 static inline float softmax_avx2(float *e, const tile_walk *v, size_t tiles, const float *qh, size_t hd,
                                    const ncz_kv_view *kv, int with_bos, float *e0)
{
    float mm = minus_infinity(), s0 = 0.0f;
    for (size_t t = 0; t < tiles; t++) {
        uint32_t valid = tile_valid(v, t);
        for (size_t l = 0; l < 16; l++)
            if (valid >> l & 1u)
                mm = e[16 * t + l] > mm ? e[16 * t + l] : mm;
    }
    if (with_bos) {
        float s = 0.0f;
        for (size_t d = 0; d < hd; d++)
            s = s + qh[d] * ncz_half_to_float(kv->k0[d]);
        s0 = s;
        mm = s > mm ? s : mm;
    }
    mm = mm + 0.0f;
    __m256 part0 = _mm256_setzero_ps(), part1 = part0, vm = _mm256_set1_ps(mm);
    for (size_t t = 0; t < tiles; t++) {
        uint32_t valid = tile_valid(v, t);
        __m256 x0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(e + 16 * t), vm));
        __m256 x1 = exp256(_mm256_sub_ps(_mm256_loadu_ps(e + 16 * t + 8), vm));
        x0 = _mm256_and_ps(x0, mask8(valid & 0xFFu));
        x1 = _mm256_and_ps(x1, mask8(valid >> 8));
        _mm256_storeu_ps(e + 16 * t, x0);
        _mm256_storeu_ps(e + 16 * t + 8, x1);
        part0 = _mm256_add_ps(part0, x0);
        part1 = _mm256_add_ps(part1, x1);
    }
    float sum = sum16_256(part0, part1);
    if (with_bos) {
        *e0 = ncz_expf(s0 - mm);
        sum = *e0 + sum;
    }
    return 1.0f / sum;
}

A2 static void attend_avx2(const ncz_kv_view *kv, size_t hd, size_t nq, const float *q, size_t lo, size_t hi,
                           int with_bos, float *out, float *scratch)
{
    tile_walk w = walk_of(kv, lo, hi);
    size_t stride = kv->ring + 16;
    float e0[4], inv[4];
    for (size_t h0 = 0; h0 < nq; h0 += 4) {
        size_t nh = nq - h0 < 4 ? nq - h0 : 4;
        const float *qh = q + h0 * hd;
        for (size_t t = 0; t < w.tiles; t++) {
            const uint16_t *kt = kv->k + tile_at(&w, t) * hd * 16;
            for (size_t half = 0; half < 2; half++) {
                __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
                for (size_t d = 0; d < hd; d++) {
                    __m256 kk = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kt + d * 16 + half * 8)));
                    acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(_mm256_set1_ps(qh[d]), kk));
                    if (nh > 1)
                        acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(_mm256_set1_ps(qh[hd + d]), kk));
                    if (nh > 2)
                        acc2 = _mm256_add_ps(acc2, _mm256_mul_ps(_mm256_set1_ps(qh[2 * hd + d]), kk));
                    if (nh > 3)
                        acc3 = _mm256_add_ps(acc3, _mm256_mul_ps(_mm256_set1_ps(qh[3 * hd + d]), kk));
                }
                float *dst = scratch + 16 * t + 8 * half;
                _mm256_storeu_ps(dst, acc0);
                if (nh > 1)
                    _mm256_storeu_ps(dst + stride, acc1);
                if (nh > 2)
                    _mm256_storeu_ps(dst + 2 * stride, acc2);
                if (nh > 3)
                    _mm256_storeu_ps(dst + 3 * stride, acc3);
            }
        }
        for (size_t h = 0; h < nh; h++)
            inv[h] = softmax_avx2(scratch + h * stride, &w, w.tiles, qh + h * hd, hd, kv, with_bos, &e0[h]);
        for (size_t d0 = 0; d0 < hd; d0 += 16) {
            __m256 o[4][2];
            for (size_t h = 0; h < 4; h++)
                o[h][0] = o[h][1] = _mm256_setzero_ps();
            if (with_bos) {
                __m256 v0a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kv->v0 + d0)));
                __m256 v0b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kv->v0 + d0 + 8)));
                for (size_t h = 0; h < nh; h++) {
                    __m256 eh = _mm256_set1_ps(e0[h]);
                    o[h][0] = _mm256_add_ps(o[h][0], _mm256_mul_ps(eh, v0a));
                    o[h][1] = _mm256_add_ps(o[h][1], _mm256_mul_ps(eh, v0b));
                }
            }
            size_t slot = w.base * 16 + w.u0;
            for (size_t u = w.u0; u < w.u0 + w.n; u++, slot++) {
                if (slot == kv->ring)
                    slot = 0;
                const uint16_t *vp = kv->v + slot * hd + d0;
                __m256 va = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)vp));
                __m256 vb = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vp + 8)));
                for (size_t h = 0; h < nh; h++) {
                    __m256 eh = _mm256_set1_ps(scratch[h * stride + u]);
                    o[h][0] = _mm256_add_ps(o[h][0], _mm256_mul_ps(eh, va));
                    o[h][1] = _mm256_add_ps(o[h][1], _mm256_mul_ps(eh, vb));
                }
            }
            for (size_t h = 0; h < nh; h++) {
                __m256 iv = _mm256_set1_ps(inv[h]);
                _mm256_storeu_ps(out + (h0 + h) * hd + d0, _mm256_mul_ps(o[h][0], iv));
                _mm256_storeu_ps(out + (h0 + h) * hd + d0 + 8, _mm256_mul_ps(o[h][1], iv));
            }
        }
    }
}
/* Two queries of one lane at once (a prefill block's consecutive rows): A over [lo, hi], B over
 * [lo + b_skip, hi + 1] (b_skip 0 or 1). Each key tile and value row is
 * converted from half once for both, and eight accumulator chains run instead of four; every
 * score, sum and output of each query is the sequence of operations attend_avx2 performs for
 * it alone (positions outside a query's range are masked from its maximum and sums, and never
 * enter its value sums). nq <= 4 heads; scratch holds 2 x 4 score rows. */
A2 static inline __attribute__((always_inline)) void
attend_pair_avx2(const ncz_kv_view *kv, size_t hd, const size_t nq, const float *qa, const float *qb, size_t lo,
                 size_t hi, size_t b_skip, int bos_a, int bos_b, float *out_a, float *out_b,
                 float *scratch)
{
    tile_walk w = walk_of(kv, lo, hi + 1);                 /* the union of the two ranges */
    tile_walk wq[2] = {w, w};                              /* each query's own lanes in it */
    wq[0].n = w.n - 1;
    wq[1].u0 = w.u0 + b_skip;
    wq[1].n = w.n - b_skip;
    const float *q[2] = {qa, qb};
    float *out[2] = {out_a, out_b};
    int bos[2] = {bos_a, bos_b};
    size_t stride = kv->ring + 16;
    float e0[2][4], inv[2][4];
    for (size_t t = 0; t < w.tiles; t++) {
        const uint16_t *kt = kv->k + tile_at(&w, t) * hd * 16;
        for (size_t half = 0; half < 2; half++) {
            __m256 acc[2][4];
            for (int j = 0; j < 2; j++)
                for (int h = 0; h < 4; h++)
                    acc[j][h] = _mm256_setzero_ps();
            for (size_t d = 0; d < hd; d++) {
                __m256 kk = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kt + d * 16 + half * 8)));
                for (int j = 0; j < 2; j++)
                    for (size_t h = 0; h < nq; h++)
                        acc[j][h] = _mm256_add_ps(acc[j][h], _mm256_mul_ps(_mm256_set1_ps(q[j][h * hd + d]), kk));
            }
            for (int j = 0; j < 2; j++)
                for (size_t h = 0; h < nq; h++)
                    _mm256_storeu_ps(scratch + (4 * (size_t)j + h) * stride + 16 * t + 8 * half, acc[j][h]);
        }
    }
    for (int j = 0; j < 2; j++)
        for (size_t h = 0; h < nq; h++)
            inv[j][h] = softmax_avx2(scratch + (4 * (size_t)j + h) * stride, &wq[j], w.tiles, q[j] + h * hd, hd, kv,
                                     bos[j], &e0[j][h]);
    size_t a_end = wq[0].u0 + wq[0].n, b_first = wq[1].u0;
    for (size_t d0 = 0; d0 < hd; d0 += 8) {
        __m256 o[2][4];
        for (int j = 0; j < 2; j++)
            for (int h = 0; h < 4; h++)
                o[j][h] = _mm256_setzero_ps();
        __m256 v0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kv->v0 + d0)));
        for (int j = 0; j < 2; j++)
            if (bos[j])
                for (size_t h = 0; h < nq; h++)
                    o[j][h] = _mm256_add_ps(o[j][h], _mm256_mul_ps(_mm256_set1_ps(e0[j][h]), v0));
        size_t slot = w.base * 16 + w.u0;
        for (size_t u = w.u0; u < w.u0 + w.n; u++, slot++) {
            if (slot == kv->ring)
                slot = 0;
            __m256 vv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kv->v + slot * hd + d0)));
            if (u < a_end)
                for (size_t h = 0; h < nq; h++)
                    o[0][h] = _mm256_add_ps(o[0][h], _mm256_mul_ps(_mm256_set1_ps(scratch[h * stride + u]), vv));
            if (u >= b_first)
                for (size_t h = 0; h < nq; h++)
                    o[1][h] = _mm256_add_ps(o[1][h], _mm256_mul_ps(_mm256_set1_ps(scratch[(4 + h) * stride + u]), vv));
        }
        for (int j = 0; j < 2; j++)
            for (size_t h = 0; h < nq; h++)
                _mm256_storeu_ps(out[j] + h * hd + d0, _mm256_mul_ps(o[j][h], _mm256_set1_ps(inv[j][h])));
    }
}
/* attend_pair_avx2 with the head count a constant: its loops over heads unroll and the eight
 * accumulators stay in registers */
#define PAIR_HEADS(N)                                                                                      \
    A2 static void attend_pair_avx2_##N(const ncz_kv_view *kv, size_t hd, const float *qa, const float *qb, \
                                        size_t lo, size_t hi, size_t b_skip, int bos_a, int bos_b,          \
                                        float *out_a, float *out_b, float *scratch)                         \
    {                                                                                                      \
        attend_pair_avx2(kv, hd, N, qa, qb, lo, hi, b_skip, bos_a, bos_b, out_a, out_b, scratch);          \
    }
PAIR_HEADS(1)
PAIR_HEADS(2)
PAIR_HEADS(3)
PAIR_HEADS(4)
#undef PAIR_HEADS
#define HAVE_X86_KERNELS 1
#else
#define HAVE_X86_KERNELS 0
#endif

void ncz_attend_pair(const ncz_kv_view *kv, size_t head_dim, size_t n_q, const float *qa, const float *qb,
                     size_t lo, size_t hi, size_t b_skip, int bos_a, int bos_b, float *out_a, float *out_b,
                     float *scratch, int kernel)
{
#if HAVE_X86_KERNELS
    if (head_dim % 16 == 0 && n_q >= 1 && n_q <= 4 && kernel == NCZ_KERNEL_AVX2 && lo <= hi) {
        void (*pair)(const ncz_kv_view *, size_t, const float *, const float *, size_t, size_t, size_t, int, int,
                     float *, float *, float *) =
            n_q == 4 ? attend_pair_avx2_4 : n_q == 3 ? attend_pair_avx2_3 : n_q == 2 ? attend_pair_avx2_2
                                                                                    : attend_pair_avx2_1;
        pair(kv, head_dim, qa, qb, lo, hi, b_skip, bos_a, bos_b, out_a, out_b, scratch);
        return;
    }
#endif
    ncz_attend(kv, head_dim, n_q, qa, lo, hi, bos_a, out_a, scratch, kernel);
    ncz_attend(kv, head_dim, n_q, qb, lo + b_skip, hi + 1, bos_b, out_b, scratch, kernel);
}

void ncz_attend(const ncz_kv_view *kv, size_t head_dim, size_t n_q, const float *q, size_t lo, size_t hi,
                int with_bos, float *out, float *scratch, int kernel)
{
#if HAVE_X86_KERNELS
    if (head_dim % 16 == 0) {
        if (kernel >= NCZ_KERNEL_AVX512) {
            attend_avx512(kv, head_dim, n_q, q, lo, hi, with_bos, out, scratch);
            return;
        }
        if (kernel >= NCZ_KERNEL_AVX2) {
            attend_avx2(kv, head_dim, n_q, q, lo, hi, with_bos, out, scratch);
            return;
        }
    }
#endif
    (void)kernel;
    attend_portable(kv, head_dim, n_q, q, lo, hi, with_bos, out, scratch);
}
