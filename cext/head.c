/* nczip's own output head: logits = W h for a Q8_0 weight matrix W (n_vocab x n_embd) and a few
 * rows h of final hidden states, computed as exact integer dot products per 32-value block plus
 * a fixed sequence of float32 operations per logit.
 *
 * Why: llama.cpp's head (262k x 640) is ~60% of the model's time on two cores, and its floats are
 * whatever its kernels give. Here the block dot products are integers (exact on every machine
 * and with any SIMD width), and each logit is then
 *     acc = 0; for b in blocks: acc = acc + (float)dot_b * (dw[v][b] * da[r][b])
 * in that order, multiplications and additions as separate IEEE operations (no FMA: the file is
 * built with -ffp-contract=off, and the SIMD path uses separate mul and add). The AVX-512 VNNI
 * kernel and the portable loop therefore give the same bits; a test compares them.
 *
 * Weights are packed once (in Python, numpy) into groups of 16 vocabulary rows:
 *   packed[g][b][c][l][k] = W[16 g + l][32 b + 4 c + k]   (int8; c < 8, l < 16, k < 4)
 *   wsum[g][b][l]  = 128 * sum_j W[16 g + l][32 b + j]     (int32)
 *   dw[g][b][l]    = the block's Q8_0 scale as float32
 * Activations are quantized here per row and block: q = round(h * 127 / amax), d = amax / 127,
 * stored offset by +128 as uint8 so that VNNI's unsigned x signed product applies; the offset
 * is removed exactly with wsum.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nczip.h"

#define GROUP 16
#define BLOCK 32

/* Round half away from zero with IEEE operations only (no libm): deterministic everywhere. */
static int32_t round_away(float x)
{
    return (int32_t)(x >= 0.0f ? x + 0.5f : x - 0.5f);
}

static void quantize_rows(const float *hidden, size_t rows, size_t n_embd, uint8_t *aq, float *da)
{
    size_t nb = n_embd / BLOCK;
    for (size_t r = 0; r < rows; r++) {
        for (size_t b = 0; b < nb; b++) {
            const float *x = hidden + r * n_embd + b * BLOCK;
            float amax = 0.0f;
            for (int j = 0; j < BLOCK; j++) {
                float a = x[j] < 0.0f ? -x[j] : x[j];
                if (a > amax)
                    amax = a;
            }
            float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            da[r * nb + b] = amax / 127.0f;
            for (int j = 0; j < BLOCK; j++) {
                int32_t q = round_away(x[j] * id);
                q = q > 127 ? 127 : (q < -127 ? -127 : q);
                aq[(r * nb + b) * BLOCK + j] = (uint8_t)(q + 128);
            }
        }
    }
}

static void head_portable(const int8_t *packed, const int32_t *wsum, const float *dw, const uint8_t *aq,
                          const float *da, size_t rows, size_t nb, size_t g0, size_t g1, float *out,
                          size_t n_vocab)
{
    for (size_t g = g0; g < g1; g++) {
        for (size_t r = 0; r < rows; r++) {
            float acc[GROUP] = {0};
            for (size_t b = 0; b < nb; b++) {
                const int8_t *w = packed + (g * nb + b) * (GROUP * BLOCK);
                const uint8_t *a = aq + (r * nb + b) * BLOCK;
                for (int l = 0; l < GROUP; l++) {
                    int32_t dot = 0;
                    for (int c = 0; c < BLOCK / 4; c++)
                        for (int k = 0; k < 4; k++)
                            dot += (int32_t)a[4 * c + k] * (int32_t)w[(c * GROUP + l) * 4 + k];
                    dot -= wsum[(g * nb + b) * GROUP + l];
                    float s = dw[(g * nb + b) * GROUP + l] * da[r * nb + b];
                    float p = (float)dot * s;
                    acc[l] = acc[l] + p;
                }
            }
            for (int l = 0; l < GROUP; l++) {
                size_t v = g * GROUP + l;
                if (v < n_vocab)
                    out[r * n_vocab + v] = acc[l];
            }
        }
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_VNNI_KERNEL 1

#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* R rows (a compile-time constant at each call, up to 16) against one group: the accumulators
 * stay in registers, and the group's 10 KB of weights stay in L1 across the row chunks. The
 * first chunk of a group prefetches the weights two groups on: with 16 lanes a call reads each
 * weight once, and without the prefetch it waits on memory. Gemma's 16 rows (bench/head_rows.py):
 * 14.7-14.8 ms in chunks of 8 without prefetch, 14.0-14.4 in one chunk, 9.9-10.1 with both;
 * 12 rows 11.4-11.9 -> 8.9-9.5 ms. */
VNNI_TARGET static inline __attribute__((always_inline)) void
vnni_rows(const int8_t *packed, const int32_t *wsum, const float *dw, const uint8_t *aq, const float *da,
          size_t nb, size_t g, size_t r0, int R, float *out, size_t n_vocab, int fetch_next)
{
    __m512 acc[16];
    for (int i = 0; i < R; i++)
        acc[i] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const __m512i *wp = (const __m512i *)(packed + (g * nb + b) * (GROUP * BLOCK));
        if (fetch_next) {
            const char *nw = (const char *)(packed + ((g + 2) * nb + b) * (GROUP * BLOCK));
            for (int line = 0; line < GROUP * BLOCK; line += 64)
                _mm_prefetch(nw + line, _MM_HINT_T0);
            _mm_prefetch((const char *)(wsum + ((g + 2) * nb + b) * GROUP), _MM_HINT_T0);
            _mm_prefetch((const char *)(dw + ((g + 2) * nb + b) * GROUP), _MM_HINT_T0);
        }
        __m512i w0 = _mm512_loadu_si512(wp + 0), w1 = _mm512_loadu_si512(wp + 1);
        __m512i w2 = _mm512_loadu_si512(wp + 2), w3 = _mm512_loadu_si512(wp + 3);
        __m512i w4 = _mm512_loadu_si512(wp + 4), w5 = _mm512_loadu_si512(wp + 5);
        __m512i w6 = _mm512_loadu_si512(wp + 6), w7 = _mm512_loadu_si512(wp + 7);
        __m512i ws = _mm512_loadu_si512(wsum + (g * nb + b) * GROUP);
        __m512 dwv = _mm512_loadu_ps(dw + (g * nb + b) * GROUP);
        for (int i = 0; i < R; i++) {
            const int32_t *a = (const int32_t *)(aq + ((r0 + i) * nb + b) * BLOCK);
            __m512i t0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi32(a[0]), w0);
            __m512i t1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi32(a[1]), w1);
            t0 = _mm512_dpbusd_epi32(t0, _mm512_set1_epi32(a[2]), w2);
            t1 = _mm512_dpbusd_epi32(t1, _mm512_set1_epi32(a[3]), w3);
            t0 = _mm512_dpbusd_epi32(t0, _mm512_set1_epi32(a[4]), w4);
            t1 = _mm512_dpbusd_epi32(t1, _mm512_set1_epi32(a[5]), w5);
            t0 = _mm512_dpbusd_epi32(t0, _mm512_set1_epi32(a[6]), w6);
            t1 = _mm512_dpbusd_epi32(t1, _mm512_set1_epi32(a[7]), w7);
            __m512i dot = _mm512_sub_epi32(_mm512_add_epi32(t0, t1), ws);
            __m512 s = _mm512_mul_ps(dwv, _mm512_set1_ps(da[(r0 + i) * nb + b]));
            __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), s);
            acc[i] = _mm512_add_ps(acc[i], p);
        }
    }
    size_t v0 = g * GROUP;
    __mmask16 keep = v0 + GROUP <= n_vocab ? (__mmask16)0xFFFF : (__mmask16)((1u << (n_vocab - v0)) - 1u);
    for (int i = 0; i < R; i++)
        _mm512_mask_storeu_ps(out + (r0 + i) * n_vocab + v0, keep, acc[i]);
}

VNNI_TARGET static void head_vnni(const int8_t *packed, const int32_t *wsum, const float *dw, const uint8_t *aq,
                                  const float *da, size_t rows, size_t nb, size_t g0, size_t g1, float *out,
                                  size_t n_vocab)
{
/* one chunk of exactly R rows, R a constant so that the accumulators live in registers */
#define CHUNK(R) \
    case R: \
        vnni_rows(packed, wsum, dw, aq, da, nb, g, r, R, out, n_vocab, fetch); \
        break;
    for (size_t g = g0; g < g1; g++) {
        /* The first chunk fetches the weights two groups on; up to 8 rows, where the prefetch
         * did not pay (bench/head_rows.py), the hardware's own prefetch is left alone. */
        int fetch = rows > 8 && g + 2 < g1;
        for (size_t r = 0; r < rows; r += 16, fetch = 0) {
            switch (rows - r < 16 ? rows - r : 16) {
                CHUNK(1) CHUNK(2) CHUNK(3) CHUNK(4) CHUNK(5) CHUNK(6) CHUNK(7) CHUNK(8)
                CHUNK(9) CHUNK(10) CHUNK(11) CHUNK(12) CHUNK(13) CHUNK(14) CHUNK(15) CHUNK(16)
            }
        }
    }
#undef CHUNK
}

static int have_vnni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#else
#define HAVE_VNNI_KERNEL 0
#endif

int ncz_head_fast_kernel(void)
{
#if HAVE_VNNI_KERNEL
    return have_vnni();
#else
    return 0;
#endif
}

int ncz_head_q8(const int8_t *packed, const int32_t *wsum, const float *dw, size_t n_vocab, size_t n_embd,
                const float *hidden, size_t rows, size_t g0, size_t g1, float *out, int portable)
{
    size_t nb = n_embd / BLOCK;
    size_t groups = (n_vocab + GROUP - 1) / GROUP;
    if (n_embd == 0 || n_embd % BLOCK != 0 || rows == 0 || g0 > g1 || g1 > groups)
        return NCZ_E_PARAMS;
    uint8_t *aq = malloc(rows * n_embd);
    float *da = malloc(rows * nb * sizeof(float));
    if (aq == NULL || da == NULL) {
        free(aq);
        free(da);
        return NCZ_E_NOMEM;
    }
    quantize_rows(hidden, rows, n_embd, aq, da);
#if HAVE_VNNI_KERNEL
    if (!portable && have_vnni())
        head_vnni(packed, wsum, dw, aq, da, rows, nb, g0, g1, out, n_vocab);
    else
#endif
        head_portable(packed, wsum, dw, aq, da, rows, nb, g0, g1, out, n_vocab);
    (void)portable;
    free(aq);
    free(da);
    return NCZ_OK;
}

/* llama.cpp's log callback: see nczip.h. */
void ncz_discard_log(int level, const char *text, void *user_data)
{
    (void)level;
    (void)text;
    (void)user_data;
}

/* llama.cpp's graph callback (ggml_backend_sched_eval_callback): copy the rows of the tensor
 * named "result_norm" (the final hidden states) and stop the graph there, so that llama.cpp's
 * own head never runs. llama.cpp still copies its (unwritten) logits buffer out afterwards.
 * ggml's accessors come in through the capture struct, so this file needs no ggml header. */
_Bool ncz_capture_callback(void *tensor, _Bool ask, void *user_data)
{
    ncz_capture *c = user_data;
    if (!c->enabled)
        return ask ? 0 : 1;
    const char *name = c->get_name(tensor);
    if (name == NULL || strcmp(name, "result_norm") != 0)
        return ask ? 0 : 1;
    if (ask)
        return 1;
    size_t n = c->nbytes(tensor);
    if (c->len + n > c->cap) {
        c->overflow = 1;
        return 0;
    }
    memcpy(c->buf + c->len, c->get_data(tensor), n);
    c->len += n;
    return 0;  /* stop: what follows result_norm is the head */
}
