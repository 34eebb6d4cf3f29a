/* The ensemble: cheap online models beside the LLM, mixed in log space, per token in C.
 *
 * Per token: token n-gram models (orders 1..orders, hashed contexts) and a match model propose
 * a few candidate tokens; each turns its guess into a feature in the LLM's log domain, and a
 * mixer adds them up with weights learned online:
 *
 *     z(t) = log2 P_llm(t) + bias(t) + sum_i w_i f_i(t)          (in 1/256-bit steps)
 *
 * The feature of a model that backs off to the LLM is the log-ratio of "model, escaping to the
 * LLM" over the LLM alone: an n-gram context seen n times with d distinct followers, c of them
 * token t (PPM method C), gives f(t) = log2(1 + c / (d P_llm(t))); a match with hit rate p
 * gives f(t*) = log2(1 + p / ((1 - p) P_llm(t*))). Both are 0 for tokens the model does not
 * propose, so only candidates cost anything. With one weight at 1 and the rest at 0 the mix is
 * exactly that model's linear interpolation with the LLM; learned weights go beyond it.
 * bias(t) is a per-document correction of every token's log-probability (the "bias head"),
 * trained like the weights by online gradient steps on the coding loss. The weights are chosen
 * by a small context (match length class x the longest n-gram order with statistics).
 *
 * Determinism: after the LLM's logits become integer log steps (the two float32 operations of
 * cdf.c), everything is integer arithmetic, including log2 (ilog2_steps) and the learning
 * updates, so encoder and decoder agree on every platform. Both call ncz_ens_prepare, code
 * the token against its table, then ncz_ens_update with the token: the same calls in the same
 * order (lanes in lane order within a step), so the models stay identical.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nczip.h"
#include "vocab_simd.h"

#define STEPS 256                      /* log steps per bit */
#define K_LIMIT 65535                  /* steps below the max logit a token can fall: 256 bits */
#define SLOTS 6                        /* followers remembered per n-gram context */
#define HIST 32                        /* tokens of history each lane keeps */
#define MATCH_CLASSES 4                /* none, short, medium, long */
#define LEN_BUCKETS 32                 /* match lengths for the hit-rate model */
#define APM_BITS 12                    /* the APM's input range: logit2 in -12..12 bits */
#define APM_KNOTS (2 * APM_BITS + 1)
#define APM_LENGTHS 16                 /* match length buckets with an APM of their own */
#define NIN (2 + NCZ_ENS_MAX_ORDERS)   /* LLM, orders 1..6, match */
#define IN_MATCH (1 + NCZ_ENS_MAX_ORDERS)
#define NSETS (MATCH_CLASSES * (NCZ_ENS_MAX_ORDERS + 1))
#define MAXC (SLOTS * NCZ_ENS_MAX_ORDERS + 1)
#define BIAS_LIMIT (64 * STEPS * 256)  /* +-64 bits, in 1/256 steps */
#define W_ONE 65536                    /* weights are Q16 */

typedef struct {
    uint32_t check; /* which context owns the bucket; 0 = empty */
    uint16_t total; /* sum of cnt */
    uint16_t used;  /* slots in use */
    int32_t tok[SLOTS];
    uint16_t cnt[SLOTS];
} ngram_bucket;

typedef struct {
    int32_t hist[HIST]; /* the lane's last tokens, oldest first */
    int hist_len;
    int64_t match_ptr; /* doc position whose token the match predicts, -1 none */
    uint32_t match_len;
} lane_state;

struct ncz_ensemble {
    ncz_ens_params p;
    size_t vocab, doc_len;
    int lanes;
    int32_t *doc;  /* the document's tokens as coded so far, -1 where not yet known */
    int32_t *bias; /* per token, in 1/256 steps */
    int32_t *z;    /* per token workspace: the mixed scores */
    uint16_t *k;   /* per token workspace: the LLM's log steps below its maximum */
    ngram_bucket *ngram[NCZ_ENS_MAX_ORDERS];
    uint64_t ngram_mask;
    int32_t *match_table; /* hash of match_min tokens -> doc position after them, + 1 */
    uint64_t match_mask;
    lane_state *lane;
    int32_t w[NSETS][NIN];
    /* The match model's confidence is an APM (adaptive probability map) per match length:
     * it maps the LLM's own log-odds of the guessed token to the log-odds that the guess is
     * right, piecewise linear with a knot per bit, learned from outcomes. It starts as the
     * identity (the match changes nothing until it has shown it knows better): in prose the
     * LLM usually expects what a short match guesses, and then the match adds nothing. */
    int32_t apm[APM_LENGTHS][APM_KNOTS];
    uint8_t apm_n[APM_LENGTHS][APM_KNOTS];

    /* the current token, from prepare to update */
    int pending, plain, cur_lane, set;
    size_t cur_pos;
    float mf;
    int32_t log2_z; /* log2 of the LLM's weight sum, steps */
    int ncand;
    int32_t cand[MAXC];
    int32_t feat[MAXC][NIN];
    int32_t cand_k[MAXC]; /* the LLM's log steps below its maximum */
    int32_t boost[MAXC];  /* what the features add to the score, steps */
    int match_bucket, apm_knot;
    int32_t apm_frac, apm_out; /* the interpolation weight of knot + 1, and the output */
    int32_t match_tok;
    int has_input[NIN];
    ncz_team *team; /* splits the O(vocabulary) passes over two threads; NULL: one */
};

/* ---- integer log2 and softplus ---- */

/* log2(x) in 1/256-bit steps, rounded down, for x >= 1: the exponent from the bit length,
 * then 8 fraction bits by repeated squaring of the 32-bit mantissa. */
static int32_t ilog2_steps(uint64_t x)
{
    int e = 63, i;
    uint64_t m;
    int32_t r;
    while (!(x >> e))
        e--;
    m = e >= 31 ? x >> (e - 31) : x << (31 - e); /* in [2^31, 2^32) */
    r = e * STEPS;
    for (i = STEPS / 2; i >= 1; i >>= 1) {
        m = (m * m) >> 31; /* m < 2^32: the square fits 64 bits; result in [2^31, 2^33) */
        if (m >> 32) {
            m >>= 1;
            r += i;
        }
    }
    return r;
}

/* 2^31 * 2^(-a / 256), a >= 0 steps: the quantizer's table, shifted (0 from 32 bits on). */
static uint32_t pow2_neg(int64_t a)
{
    if (a >= 32 * STEPS)
        return 0;
    return (uint32_t)((uint64_t)ncz_pow2_frac[a % STEPS] >> (a / STEPS));
}

/* log2(1 + 2^(x / 256)) in steps, >= 0. */
static int32_t softplus_steps(int64_t x)
{
    int64_t a = x >= 0 ? x : -x;
    int32_t tail = ilog2_steps(((uint64_t)1 << 31) + pow2_neg(a)) - 31 * STEPS;
    if (x >= 0)
        return (int32_t)(x > (1 << 24) ? (1 << 24) : x) + tail;
    return tail;
}

/* Floor division by 2^s for signed values, without relying on >> of negatives. */
static int64_t shr_floor(int64_t v, int s)
{
    return v >= 0 ? v >> s : -(((-v) + ((int64_t)1 << s) - 1) >> s);
}

static int32_t clamp32(int64_t v, int64_t lo, int64_t hi)
{
    return (int32_t)(v < lo ? lo : v > hi ? hi : v);
}

/* ---- construction ---- */

int ncz_ens_check_params(const ncz_ens_params *p)
{
    if (p->orders < 0 || p->orders > NCZ_ENS_MAX_ORDERS || p->ngram_bits < 8 ||
        p->ngram_bits > 24 || (p->match_min != 0 && (p->match_min < 2 || p->match_min > HIST)) ||
        p->match_bits < 8 || p->match_bits > 26 || p->mix_rate < 0 || p->mix_rate > W_ONE ||
        p->bias_rate < 0 || p->bias_rate > 1 << 20 ||
        p->w_ngram < -2 * W_ONE || p->w_ngram > 4 * W_ONE || p->w_match < -2 * W_ONE ||
        p->w_match > 4 * W_ONE)
        return NCZ_E_PARAMS;
    return NCZ_OK;
}

void ncz_ens_free(ncz_ensemble *e)
{
    int o;
    if (e == NULL)
        return;
    ncz_team_free(e->team);
    free(e->doc);
    free(e->bias);
    free(e->z);
    free(e->k);
    for (o = 0; o < NCZ_ENS_MAX_ORDERS; o++)
        free(e->ngram[o]);
    free(e->match_table);
    free(e->lane);
    free(e);
}

int ncz_ens_new(const ncz_ens_params *p, size_t vocab, int lanes, size_t doc_len,
                ncz_ensemble **out)
{
    ncz_ensemble *e;
    int o, s, i;
    size_t j;
    *out = NULL;
    if (ncz_ens_check_params(p) != NCZ_OK || lanes < 1 || vocab < 1 || vocab > (1u << 30) ||
        doc_len > ((size_t)1 << 31) - 2)
        return NCZ_E_PARAMS;
    e = (ncz_ensemble *)calloc(1, sizeof *e);
    if (e == NULL)
        return NCZ_E_NOMEM;
    e->p = *p;
    e->vocab = vocab;
    e->doc_len = doc_len;
    e->lanes = lanes;
    e->doc = (int32_t *)malloc((doc_len ? doc_len : 1) * sizeof(int32_t));
    e->bias = (int32_t *)calloc(vocab, sizeof(int32_t));
    e->z = (int32_t *)malloc(vocab * sizeof(int32_t));
    e->k = (uint16_t *)malloc(vocab * sizeof(uint16_t));
    e->lane = (lane_state *)calloc((size_t)lanes, sizeof(lane_state));
    e->ngram_mask = ((uint64_t)1 << p->ngram_bits) - 1;
    for (o = 0; o < p->orders; o++) {
        e->ngram[o] = (ngram_bucket *)calloc((size_t)1 << p->ngram_bits, sizeof(ngram_bucket));
        if (e->ngram[o] == NULL)
            break;
    }
    if (p->match_min) {
        e->match_mask = ((uint64_t)1 << p->match_bits) - 1;
        e->match_table = (int32_t *)calloc((size_t)1 << p->match_bits, sizeof(int32_t));
    }
    if (e->doc == NULL || e->bias == NULL || e->z == NULL || e->k == NULL || e->lane == NULL ||
        (p->orders && e->ngram[p->orders - 1] == NULL) || (p->match_min && e->match_table == NULL)) {
        ncz_ens_free(e);
        return NCZ_E_NOMEM;
    }
    for (j = 0; j < doc_len; j++)
        e->doc[j] = -1;
    for (i = 0; i < lanes; i++)
        e->lane[i].match_ptr = -1;
    for (s = 0; s < NSETS; s++) {
        e->w[s][0] = W_ONE; /* the LLM's, fixed */
        for (o = 1; o <= NCZ_ENS_MAX_ORDERS; o++)
            e->w[s][o] = p->w_ngram;
        e->w[s][IN_MATCH] = p->w_match;
    }
    /* Before any evidence, a match of length L is trusted like L hits in L + 2 tries. */
    /* Before any evidence: the LLM's odds, raised for long matches to a floor of 1:1 from
     * 8 tokens, 4:1 from 16, 16:1 from 32 (repeats that long are rarely coincidences). */
    for (i = 0; i < APM_LENGTHS; i++) {
        int32_t floor_steps = i < 8 ? INT32_MIN : i < 10 ? 0 : i < 12 ? 2 * STEPS : 4 * STEPS;
        for (s = 0; s < APM_KNOTS; s++) {
            int32_t x = (s - APM_BITS) * STEPS;
            e->apm[i][s] = x > floor_steps ? x : floor_steps;
        }
    }
    *out = e;
    return NCZ_OK;
}

int ncz_ens_use_threads(ncz_ensemble *e, int threads)
{
    if (threads > 1 && e->team == NULL)
        e->team = ncz_team_new(); /* NULL (no threads): the passes run here, same integers */
    return e->team != NULL;
}

void ncz_ens_fan_out(ncz_ensemble *e)
{
    int i;
    for (i = 1; i < e->lanes; i++) {
        memcpy(e->lane[i].hist, e->lane[0].hist, sizeof e->lane[0].hist);
        e->lane[i].hist_len = e->lane[0].hist_len;
        e->lane[i].match_ptr = -1;
        e->lane[i].match_len = 0;
    }
}

/* ---- the cheap models ---- */

static uint64_t hash_tokens(const int32_t *tok, int n, uint64_t seed)
{
    uint64_t h = seed * UINT64_C(0x9E3779B97F4A7C15) + UINT64_C(0x632BE59BD9B4E019);
    int i;
    for (i = 0; i < n; i++)
        h = (h ^ (uint64_t)(uint32_t)tok[i]) * UINT64_C(0xBF58476D1CE4E5B9) + (uint64_t)i;
    return h ^ (h >> 29);
}

/* The bucket of the lane's order-o context (its last o tokens), and its check value. */
static ngram_bucket *ngram_slot(ncz_ensemble *e, const lane_state *ls, int o, uint32_t *check)
{
    uint64_t h = hash_tokens(ls->hist + ls->hist_len - o, o, (uint64_t)o);
    *check = (uint32_t)(h >> 32) | 1u;
    return &e->ngram[o - 1][h & e->ngram_mask];
}

/* Match lengths 1..7 each get a bucket, then two per doubling: 8-11, 12-15, 16-23, ... */
static int match_bucket_of(uint32_t len)
{
    int e = 0, b;
    if (len < 8)
        return (int)len;
    while ((len >> e) >= 2)
        e++;
    b = 8 + 2 * (e - 3) + (int)((len >> (e - 1)) & 1);
    return b < LEN_BUCKETS ? b : LEN_BUCKETS - 1;
}

static int add_candidate(ncz_ensemble *e, int32_t tok)
{
    int c;
    for (c = 0; c < e->ncand; c++)
        if (e->cand[c] == tok)
            return c;
    c = e->ncand++;
    e->cand[c] = tok;
    memset(e->feat[c], 0, sizeof e->feat[c]);
    return c;
}

/* The LLM's log2-probability of token t in steps (<= 0), from its logit. */
static int32_t llm_log2p(const ncz_ensemble *e, int c)
{
    return 31 * STEPS - e->cand_k[c] - e->log2_z;
}

/* ---- one token ---- */

/* The weight 2^31 * 2^(-a/256) of a score a steps below the LLM's maximum, for
 * -HEADROOM * 256 <= a <= 32 * 256: candidates may rise up to HEADROOM bits above the LLM's
 * best token. For a >= 0 it is the plain quantizer's weight, bit for bit. */
#define HEADROOM 12
static uint64_t weight_at(int64_t a)
{
    if (a >= 0) {
        if (a >= 32 * STEPS)
            return 0;
        return (uint64_t)ncz_pow2_frac[a % STEPS] >> (a / STEPS);
    }
    a += HEADROOM * STEPS;
    return (uint64_t)ncz_pow2_frac[a % STEPS] << (HEADROOM - a / STEPS);
}

/* Candidates' features and their score changes (boost, steps); needs e->log2_z. */
static void score_candidates(ncz_ensemble *e, const lane_state *ls, size_t n)
{
    int o, c, i;
    for (o = 1; o <= e->p.orders && o <= ls->hist_len; o++) {
        uint32_t check;
        ngram_bucket *b = ngram_slot(e, ls, o, &check);
        int32_t log2_d;
        if (b->check != check || b->total == 0)
            continue;
        log2_d = ilog2_steps(b->used);
        for (i = 0; i < b->used; i++) {
            int32_t tok = b->tok[i];
            if (!b->cnt[i] || (size_t)tok >= n)
                continue;
            c = add_candidate(e, tok);
            e->feat[c][o] = softplus_steps((int64_t)ilog2_steps(b->cnt[i]) - log2_d -
                                           llm_log2p(e, c));
        }
    }
    if (e->match_tok >= 0) {
        /* x = log2(P / (1 - P)) of the guess under the LLM, in steps */
        int32_t l2 = llm_log2p(e, c = add_candidate(e, e->match_tok)), x, a;
        uint64_t p31 = l2 <= -32 * STEPS ? 0 : weight_at(-(int64_t)l2);
        const int32_t *knot = e->apm[e->match_bucket];
        x = l2 - (ilog2_steps(((uint64_t)1 << 31) - p31 + (p31 == (uint64_t)1 << 31)) - 31 * STEPS);
        x = x < -APM_BITS * STEPS ? -APM_BITS * STEPS : x > APM_BITS * STEPS ? APM_BITS * STEPS : x;
        a = x + APM_BITS * STEPS;
        e->apm_knot = a / STEPS < APM_KNOTS - 1 ? a / STEPS : APM_KNOTS - 2;
        e->apm_frac = a - e->apm_knot * STEPS; /* 0..256 */
        e->apm_out = (int32_t)shr_floor((int64_t)knot[e->apm_knot] * (STEPS - e->apm_frac) +
                                        (int64_t)knot[e->apm_knot + 1] * e->apm_frac, 8);
        /* the log-ratio of "the guess has the APM's odds, the rest keeps the LLM's shape"
         * over the LLM, for the guess (0 for every other token): out - x */
        e->feat[c][IN_MATCH] = e->apm_out - x;
    }
    for (c = 0; c < e->ncand; c++) {
        int64_t add = 0;
        for (i = 1; i < NIN; i++)
            add += (int64_t)e->w[e->set][i] * e->feat[c][i];
        add = shr_floor(add, 16);
        e->boost[c] = (int32_t)(add < -(1 << 24) ? -(1 << 24) : add > (1 << 24) ? (1 << 24) : add);
    }
}

/* Without the bias head only the candidates' scores change, so the LLM's own weights (the
 * plain quantizer's) serve every other token: one O(vocabulary) weight pass, as in
 * ncz_quantize, then the candidates are patched in. */
NCZ_HOT static int mix_without_bias(ncz_ensemble *e, const lane_state *ls, const float *logits,
                            size_t n, unsigned precision, uint32_t *freq)
{
    const float step_scale = ncz_step_scale();
    const float mf = e->mf;
    uint64_t total = (uint64_t)1 << precision, budget = total - n, zsum = 0, m_scale, sum = 0;
    uint64_t wc[MAXC], best = 0;
    size_t t, argmax = 0;
    int c;
    int64_t top;

    for (t = 0; t < n; t++) {
        float steps = (mf - logits[t]) * step_scale;
        uint32_t k = (uint32_t)(steps < (float)(32 * STEPS) ? steps : (float)(32 * STEPS));
        uint32_t w = (uint32_t)((uint64_t)ncz_pow2_frac[k % STEPS] >> (k / STEPS));
        freq[t] = w;
        zsum += w;
    }
    e->log2_z = ilog2_steps(zsum); /* >= 2^31: the maximum's own weight */
    score_candidates(e, ls, n);
    for (c = 0; c < e->ncand; c++) {
        int64_t a = (int64_t)e->cand_k[c] - e->boost[c];
        a = a < -HEADROOM * STEPS ? -HEADROOM * STEPS : a;
        wc[c] = weight_at(a);
        zsum = zsum - freq[e->cand[c]] + wc[c];
        freq[e->cand[c]] = 0;
    }
    /* The first token of the largest weight: the LLM's first maximum unless a candidate
     * reaches or passes it. */
    while (argmax < n && !(logits[argmax] == mf && freq[argmax] != 0))
        argmax++;
    if (argmax < n)
        best = freq[argmax];
    for (c = 0; c < e->ncand; c++)
        if (wc[c] > best || (wc[c] == best && (size_t)e->cand[c] < argmax)) {
            best = wc[c];
            argmax = (size_t)e->cand[c];
        }
    if (zsum == 0 || argmax >= n)
        return NCZ_E_INTERNAL;
    /* The shares, as in cdf.c: every weight <= zsum < 2^62, so w * m_scale <= budget 2^32. */
    m_scale = (budget << 32) / zsum;
    for (t = 0; t < n; t++) {
        uint32_t f = 1u + (uint32_t)(((uint64_t)freq[t] * m_scale) >> 32);
        freq[t] = f;
        sum += f;
    }
    for (c = 0; c < e->ncand; c++) {
        uint64_t f = 1u + ((wc[c] * m_scale) >> 32);
        freq[e->cand[c]] = (uint32_t)f;
        sum += f - 1;
    }
    top = (int64_t)freq[argmax] + ((int64_t)total - (int64_t)sum);
    if (sum > total || top > (int64_t)total)
        return NCZ_E_INTERNAL;
    freq[argmax] = (uint32_t)top;
    return NCZ_OK;
}

/* One part of mix_with_bias's pass: the LLM's log steps, their weight sum, the scores. */
typedef struct {
    ncz_ensemble *e;
    const float *logits;
    float mf;
    uint64_t part_sum[2];
    float part_max[2];
} vocab_pass;

#if NCZ_HAVE_VOCAB_AVX2
/* scores_part's second loop, eight at a time; returns the weights' sum, *end the first index
 * left. k < 2^16 and w0 <= 4 W_ONE: every product fits 32 bits (see scores_part). */
NCZ_AVX2 static uint64_t scores_avx2(const uint16_t *kk, const int32_t *bias, int32_t *z, size_t lo, size_t hi,
                                     uint32_t w0_hi, uint32_t w0_lo, size_t *end)
{
    const __m256i last = _mm256_set1_epi32(32 * STEPS - 1), hi_w = _mm256_set1_epi32((int)w0_hi),
                  lo_w = _mm256_set1_epi32((int)w0_lo);
    __m256i zsum = _mm256_setzero_si256();
    size_t t = lo;
    for (; t + 8 <= hi; t += 8) {
        __m256i k = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(kk + t)));
        zsum = ncz_add_u32_to_u64(zsum, ncz_pow2_weights8(_mm256_min_epu32(k, last)));
        __m256i scaled = _mm256_add_epi32(_mm256_mullo_epi32(hi_w, k),
                                          _mm256_srli_epi32(_mm256_mullo_epi32(lo_w, k), 16));
        __m256i b = _mm256_srai_epi32(_mm256_loadu_si256((const __m256i *)(bias + t)), 8); /* floor */
        _mm256_storeu_si256((__m256i *)(z + t), _mm256_sub_epi32(b, scaled));
    }
    *end = t;
    return ncz_sum_u64x4(zsum);
}
#endif

NCZ_HOT static void scores_part(void *arg, size_t lo, size_t hi, int part)
{
    vocab_pass *a = arg;
    ncz_ensemble *e = a->e;
    const float step_scale = ncz_step_scale();
    const float mf = a->mf;
    const float *logits = a->logits;
    int32_t *z = e->z;
    uint16_t *kk = e->k;
    /* w0 * k >> 16 in 32-bit lanes, 8 to a vector instead of 4: w0 (clamped to W_ONE/16..4
     * W_ONE) = hi 2^16 + lo, and w0 k >> 16 = hi k + (lo k >> 16) exactly, lo k < 2^32 */
    const uint32_t w0 = (uint32_t)e->w[e->set][0], w0_hi = w0 >> 16, w0_lo = w0 & 0xFFFFu;
    uint64_t zsum = 0;
    size_t t;
    for (t = lo; t < hi; t++) { /* vectorizes: two float32 operations and a conversion */
        float steps = (mf - logits[t]) * step_scale;
        kk[t] = (uint16_t)(steps < (float)K_LIMIT ? steps : (float)K_LIMIT); /* NaN: limit */
    }
    t = lo;
#if NCZ_HAVE_VOCAB_AVX2
    if (ncz_vocab_avx2())
        zsum = scores_avx2(kk, e->bias, z, lo, hi, w0_hi, w0_lo, &t);
#endif
    for (; t < hi; t++) {
        uint32_t k = kk[t];
        /* 2^(31 - k/256) >> ... as a 32-bit shift: from 32 * 256 steps on, the weight is 0,
         * which k = 32 * 256 - 1 gives as well (the table's last entry >> 31) */
        uint32_t kw = k < 32 * STEPS - 1 ? k : 32 * STEPS - 1;
        zsum += ncz_pow2_frac[kw % STEPS] >> (kw / STEPS);
        z[t] = -(int32_t)(w0_hi * k + ((w0_lo * k) >> 16)) + (int32_t)shr_floor(e->bias[t], 8);
    }
    a->part_sum[part] = zsum;
}

/* With the bias head every token's score moves: integer scores for all, then
 * ncz_quantize_steps. The LLM's weight (a temperature) is learned too, since its gradient
 * needs the same O(vocabulary) pass as the bias head's. */
static int mix_with_bias(ncz_ensemble *e, const lane_state *ls, const float *logits, size_t n,
                         unsigned precision, uint32_t *freq)
{
    int32_t *z = e->z;
    int c;
    vocab_pass a;
    a.e = e;
    a.logits = logits;
    a.mf = e->mf;
    ncz_team_split(e->team, scores_part, &a, n);
    e->log2_z = ilog2_steps(a.part_sum[0] + a.part_sum[1]);
    score_candidates(e, ls, n);
    for (c = 0; c < e->ncand; c++)
        z[e->cand[c]] = clamp32((int64_t)z[e->cand[c]] + e->boost[c], -(1 << 30), 1 << 30);
    return ncz_quantize_steps(e->team, z, n, precision, freq);
}

static void max_part(void *arg, size_t lo, size_t hi, int part)
{
    vocab_pass *a = arg;
    a->part_max[part] = ncz_max_ignoring_nan(a->logits + lo, hi - lo);
}

NCZ_HOT int ncz_ens_prepare(ncz_ensemble *e, int lane, size_t pos, const float *logits, size_t n,
                    unsigned precision, uint32_t *freq_out)
{
    const float step_scale = ncz_step_scale();
    lane_state *ls;
    float mf = -INFINITY;
    int o, c, hi = 0, i;

    if (lane < 0 || lane >= e->lanes || pos >= e->doc_len || n != e->vocab)
        return NCZ_E_PARAMS;
    if (precision < NCZ_MIN_PRECISION || precision > NCZ_MAX_PRECISION)
        return NCZ_E_PRECISION;
    if (n > ((uint64_t)1 << precision) / 2)
        return NCZ_E_ALPHABET;
    ls = &e->lane[lane];
    e->pending = 1;
    e->cur_lane = lane;
    e->cur_pos = pos;
    e->ncand = 0;
    e->match_tok = -1;
    memset(e->has_input, 0, sizeof e->has_input);

    {
        /* the maximum, ignoring NaN; the second part's only if strictly larger, as in one pass */
        vocab_pass a;
        a.logits = logits;
        ncz_team_split(e->team, max_part, &a, n);
        mf = a.part_max[1] > a.part_max[0] ? a.part_max[1] : a.part_max[0];
    }
    e->mf = mf;
    /* Non-finite maxima (no usable logits, or +inf) take the plain quantizer: nothing to mix. */
    e->plain = !(mf > -INFINITY && mf < INFINITY);
    if (e->plain)
        return ncz_quantize(logits, n, precision, freq_out);

    /* Candidates: the n-gram contexts' followers, the match model's guess. */
    for (o = 1; o <= e->p.orders && o <= ls->hist_len; o++) {
        uint32_t check;
        ngram_bucket *b = ngram_slot(e, ls, o, &check);
        if (b->check != check || b->total == 0)
            continue;
        hi = o;
        e->has_input[o] = 1;
        for (i = 0; i < b->used; i++)
            if (b->cnt[i] && (size_t)b->tok[i] < n)
                add_candidate(e, b->tok[i]);
    }
    e->match_bucket = -1;
    if (ls->match_ptr >= 0 && (size_t)ls->match_ptr < e->doc_len && e->doc[ls->match_ptr] >= 0 &&
        (size_t)e->doc[ls->match_ptr] < n) {
        e->match_tok = e->doc[ls->match_ptr];
        e->match_bucket = match_bucket_of(ls->match_len);
        e->match_bucket = e->match_bucket < APM_LENGTHS ? e->match_bucket : APM_LENGTHS - 1;
        e->has_input[IN_MATCH] = 1;
        add_candidate(e, e->match_tok);
    }
    e->set = (e->match_tok >= 0) * (NCZ_ENS_MAX_ORDERS + 1) + hi;
    /* The candidates' LLM log steps below the maximum (NaN: the limit). */
    for (c = 0; c < e->ncand; c++) {
        float steps = (mf - logits[e->cand[c]]) * step_scale;
        e->cand_k[c] = (int32_t)(steps < (float)K_LIMIT ? steps : (float)K_LIMIT);
    }
    if (e->p.bias_rate)
        return mix_with_bias(e, ls, logits, n, precision, freq_out);
    return mix_without_bias(e, ls, logits, n, precision, freq_out);
}

static void ngram_update(ncz_ensemble *e, const lane_state *ls, int32_t y)
{
    int o, i;
    for (o = 1; o <= e->p.orders && o <= ls->hist_len; o++) {
        uint32_t check;
        ngram_bucket *b = ngram_slot(e, ls, o, &check);
        int found = -1, low = 0;
        if (b->check != check) { /* a new context takes the bucket */
            memset(b, 0, sizeof *b);
            b->check = check;
        }
        for (i = 0; i < b->used; i++) {
            if (b->tok[i] == y)
                found = i;
            if (b->cnt[i] < b->cnt[low])
                low = i;
        }
        if (found < 0) {
            if (b->used < SLOTS) {
                found = b->used++;
            } else { /* replace the rarest follower */
                found = low;
                b->total = (uint16_t)(b->total - b->cnt[low]);
            }
            b->tok[found] = y;
            b->cnt[found] = 0;
        }
        if (b->total >= 65000) { /* halve, keeping every follower >= 1 */
            b->total = 0;
            for (i = 0; i < b->used; i++) {
                b->cnt[i] = (uint16_t)((b->cnt[i] + 1) / 2);
                b->total = (uint16_t)(b->total + b->cnt[i]);
            }
        }
        b->cnt[found]++;
        b->total++;
    }
}

static void match_update(ncz_ensemble *e, lane_state *ls, int32_t y)
{
    int m = e->p.match_min, i;
    if (e->match_tok >= 0) {
        int hit = e->match_tok == y;
        int32_t *knot = e->apm[e->match_bucket];
        uint8_t *n = &e->apm_n[e->match_bucket][e->apm_knot];
        /* q = P(hit) by the APM, Q16: 1 / (1 + 2^-out) */
        int64_t out = e->apm_out, q, err, step;
        uint64_t w = weight_at(out >= 0 ? out : -out);
        q = out >= 0 ? (int64_t)(((uint64_t)1 << 47) / (((uint64_t)1 << 31) + w))
                     : (int64_t)((w << 16) / (((uint64_t)1 << 31) + w));
        err = (hit ? W_ONE : 0) - q;
        /* a gradient step on the log loss, in steps, faster while the knot is new */
        step = err * STEPS * 8 / ((int64_t)(*n + 4) * W_ONE); /* 2 bits at most, 1/8 later */
        knot[e->apm_knot] += (int32_t)(step * (STEPS - e->apm_frac) / STEPS);
        knot[e->apm_knot + 1] += (int32_t)(step * e->apm_frac / STEPS);
        if (*n < 60)
            (*n)++;
        if (hit) {
            ls->match_ptr++;
            if (ls->match_len < 65535)
                ls->match_len++;
        } else {
            ls->match_ptr = -1;
            ls->match_len = 0;
        }
    } else {
        ls->match_ptr = -1;
        ls->match_len = 0;
    }
    if (!m || ls->hist_len < m)
        return;
    /* ls->hist now ends with y, at doc position cur_pos. */
    {
        uint64_t h = hash_tokens(ls->hist + ls->hist_len - m, m, 99) & e->match_mask;
        if (ls->match_ptr < 0) {
            int64_t q = (int64_t)e->match_table[h] - 1;
            if (q > 0 && (size_t)q < e->doc_len) {
                uint32_t len = 0;
                while ((int)len < ls->hist_len && q - 1 - (int64_t)len >= 0 &&
                       e->doc[q - 1 - len] == ls->hist[ls->hist_len - 1 - len])
                    len++;
                if ((int)len >= m) {
                    ls->match_ptr = q;
                    ls->match_len = len;
                }
            }
        }
        e->match_table[h] = (int32_t)(e->cur_pos + 2); /* the next position, + 1 */
    }
    (void)i;
}

typedef struct {
    ncz_ensemble *e;
    const uint32_t *freq;
    unsigned precision;
    int64_t part_expect[2];
} bias_pass;

/* One part of the bias head's gradient step and of E_p[k] (integers: any split, same sums). */
NCZ_HOT static void bias_part(void *arg, size_t lo, size_t hi, int part)
{
    bias_pass *a = arg;
    ncz_ensemble *e = a->e;
    const uint64_t rate = (uint64_t)e->p.bias_rate;
    const uint32_t *freq = a->freq;
    const uint16_t *kk = e->k;
    const unsigned precision = a->precision;
    int64_t expect_k = 0;
    size_t t;
    for (t = lo; t < hi; t++) { /* vectorizes: integers only */
        e->bias[t] -= (int32_t)((rate * freq[t]) >> precision);
        expect_k += (int64_t)((uint64_t)freq[t] * kk[t]);
    }
    a->part_expect[part] = expect_k;
}

NCZ_HOT int ncz_ens_update(ncz_ensemble *e, size_t y, const float *logits, const uint32_t *freq,
                   unsigned precision)
{
    lane_state *ls;
    size_t n = e->vocab;
    int c, i;
    if (!e->pending || y >= n)
        return NCZ_E_PARAMS;
    e->pending = 0;
    ls = &e->lane[e->cur_lane];

    if (!e->plain) {
        int32_t *w = e->w[e->set];
        int64_t grad[NIN];
        int yc = -1;
        const int64_t rate = e->p.bias_rate;
        /* The bias head's gradient step, O(vocabulary): d log2 p(y) / d bias(t) = [t = y] - p(t). */
        if (rate) {
            const uint16_t *kk = e->k;
            int64_t expect_k;
            bias_pass a;
            a.e = e;
            a.freq = freq;
            a.precision = precision;
            ncz_team_split(e->team, bias_part, &a, n);
            expect_k = a.part_expect[0] + a.part_expect[1];
            e->bias[y] = clamp32((int64_t)e->bias[y] + rate, -BIAS_LIMIT, BIAS_LIMIT);
            /* the LLM weight's: d log2 p(y) / d w_llm = E_p[k] - k(y), steps */
            w[0] = clamp32((int64_t)w[0] + shr_floor((int64_t)e->p.mix_rate *
                                                     ((expect_k >> precision) - kk[y]), 8),
                           W_ONE / 16, 4 * W_ONE);
        }
        /* The mixer's: d log2 p(y) / d w_i = f_i(y) - E_p[f_i], over the candidates only
         * (f_i is 0 elsewhere). */
        for (c = 0; c < e->ncand; c++)
            if ((size_t)e->cand[c] == y)
                yc = c;
        for (i = 1; i < NIN; i++) {
            int64_t ex = 0;
            for (c = 0; c < e->ncand; c++)
                ex += (int64_t)freq[e->cand[c]] * e->feat[c][i];
            grad[i] = (yc >= 0 ? e->feat[yc][i] : 0) - (ex >> precision);
        }
        for (i = 1; i < NIN; i++) {
            if (!e->has_input[i])
                continue;
            w[i] = clamp32((int64_t)w[i] + shr_floor((int64_t)e->p.mix_rate * grad[i], 8),
                           -2 * W_ONE, 4 * W_ONE);
        }
    }

    /* The cheap models learn the token: counts under the old context, then the history. */
    ngram_update(e, ls, (int32_t)y);
    if (ls->hist_len == HIST) {
        memmove(ls->hist, ls->hist + 1, (HIST - 1) * sizeof(int32_t));
        ls->hist_len--;
    }
    ls->hist[ls->hist_len++] = (int32_t)y;
    e->doc[e->cur_pos] = (int32_t)y;
    if (e->p.match_min)
        match_update(e, ls, (int32_t)y);
    else
        ls->match_ptr = -1;
    return NCZ_OK;
}

/* ---- prepare, code, update: one call per token ---- */

int ncz_ens_encode(ncz_ensemble *e, ncz_encoder *enc, int lane, size_t pos,
                   const float *logits, size_t n, size_t symbol, unsigned precision,
                   uint32_t *freq_ws)
{
    int st;
    if (symbol >= n)
        return n == 0 ? NCZ_E_ALPHABET : NCZ_E_SYMBOL;
    st = ncz_ens_prepare(e, lane, pos, logits, n, precision, freq_ws);
    if (st == NCZ_OK)
        st = ncz_encode(enc, ncz_cum_of(e->team, freq_ws, n, symbol), freq_ws[symbol], precision);
    if (st == NCZ_OK)
        st = ncz_ens_update(e, symbol, logits, freq_ws, precision);
    return st;
}

int ncz_ens_decode(ncz_ensemble *e, ncz_decoder *dec, int lane, size_t pos,
                   const float *logits, size_t n, unsigned precision, uint32_t *freq_ws,
                   size_t *symbol_out)
{
    uint32_t target, cum;
    size_t s;
    int st = ncz_decoder_target(dec, precision, &target);
    if (st == NCZ_OK)
        st = ncz_ens_prepare(e, lane, pos, logits, n, precision, freq_ws);
    if (st != NCZ_OK)
        return st;
    s = ncz_find_symbol(freq_ws, n, target, &cum);
    if (s >= n)
        return NCZ_E_INTERNAL;
    st = ncz_decoder_advance(dec, cum, freq_ws[s], precision);
    if (st == NCZ_OK)
        st = ncz_ens_update(e, s, logits, freq_ws, precision);
    *symbol_out = s;
    return st;
}

int ncz_ens_measure(ncz_ensemble *e, int lane, size_t pos, const float *logits, size_t n,
                    size_t symbol, unsigned precision, uint32_t *freq_ws, uint32_t *freq_out)
{
    int st;
    if (symbol >= n)
        return n == 0 ? NCZ_E_ALPHABET : NCZ_E_SYMBOL;
    st = ncz_ens_prepare(e, lane, pos, logits, n, precision, freq_ws);
    if (st != NCZ_OK)
        return st;
    *freq_out = freq_ws[symbol];
    return ncz_ens_update(e, symbol, logits, freq_ws, precision);
}
