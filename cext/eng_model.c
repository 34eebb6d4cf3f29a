/* The engine's model: weights (repacked from the GGUF), lanes with their caches, and the calls
 * the binding makes. The forward pass itself is the architecture's (eng_gemma3.c).
 *
 * Positions. A lane's rows arrive at window positions 0, 1, 2, ... (BOS at 0). When the window
 * is full, ncz_model_shift_lane drops positions [1, end): the later cells keep their keys and
 * values where they are (their slot is (position + shift) mod ring, and shift grows by end - 1),
 * and RoPE always turns a key or query by its absolute position, position + shift. The BOS cell
 * is the exception: it stays at window position 0, so its key is turned anew to absolute
 * position shift. Every relative distance is then the window's, as if the cells had moved.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_model.h"

static int fail(ncz_model *m, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->error, sizeof m->error, fmt, ap);
    va_end(ap);
    return status;
}

size_t ncz_model_width(const ncz_model *m)
{
    return (size_t)m->hp.n_embd;
}

size_t ncz_model_vocab(const ncz_model *m)
{
    return (size_t)m->hp.n_vocab;
}

const char *ncz_model_error(const ncz_model *m)
{
    return m->error;
}

static size_t round16(size_t n)
{
    return (n + 15) / 16 * 16;
}

/* ---- shared numerics ---- */

void ncz_rms_norm(const float *x, size_t n, const float *w, float eps, float *out)
{
    float part[16] = {0};
    for (size_t j = 0; j < n; j++)
        part[j % 16] = part[j % 16] + x[j] * x[j];
    float ss = ncz_sum16(part);
    float mean = ss / (float)n;
    float t = mean + eps;
    float s = sqrtf(t);
    float r = 1.0f / s;
    for (size_t j = 0; j < n; j++)
        out[j] = (x[j] * r) * w[j];
}

void ncz_rope_trig(const double *inv_freq, size_t half, double pos, float *cs, float *sn)
{
    for (size_t i = 0; i < half; i++) {
        double s, c;
        ncz_sincos_d(pos * inv_freq[i], &s, &c);
        cs[i] = (float)c;
        sn[i] = (float)s;
    }
}

void ncz_rope_apply(float *x, size_t half, const float *cs, const float *sn)
{
    for (size_t i = 0; i < half; i++) {
        float x0 = x[i], x1 = x[i + half];
        float a = x0 * cs[i], b = x1 * sn[i];
        float e = x0 * sn[i], f = x1 * cs[i];
        x[i] = a - b;
        x[i + half] = e + f;
    }
}

/* ---- life cycle ---- */

int ncz_model_new(const ncz_hparams *hp, ncz_model **out)
{
    *out = NULL;
    if (hp->arch != NCZ_ARCH_GEMMA3 || hp->n_layer <= 0 || hp->n_embd <= 0 || hp->n_embd % NCZ_BLOCK ||
        hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->n_head % hp->n_head_kv || hp->head_dim <= 0 ||
        hp->head_dim % 32 || hp->n_ff <= 0 || hp->n_ff % NCZ_BLOCK || hp->n_vocab <= 0 || hp->swa_window <= 0 ||
        !(hp->eps > 0.0f) || !(hp->rope_base > 1.0) || !(hp->rope_base_local > 1.0) || hp->layer_local == NULL)
        return NCZ_ENG_E_PARAMS;
    ncz_model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NCZ_ENG_E_NOMEM;
    m->hp = *hp;
    size_t half = (size_t)hp->head_dim / 2;
    m->local = malloc((size_t)hp->n_layer);
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    m->inv_freq = malloc(half * sizeof(double));
    m->inv_freq_local = malloc(half * sizeof(double));
    if (!m->local || !m->layers || !m->inv_freq || !m->inv_freq_local) {
        ncz_model_free(m);
        return NCZ_ENG_E_NOMEM;
    }
    memcpy(m->local, hp->layer_local, (size_t)hp->n_layer);
    m->hp.layer_local = m->local;
    /* base^(-2i / head_dim), in double with our own exp and log */
    double lg = ncz_log_d(hp->rope_base), lgl = ncz_log_d(hp->rope_base_local);
    for (size_t i = 0; i < half; i++) {
        double f = -2.0 * (double)i / (double)hp->head_dim;
        m->inv_freq[i] = ncz_exp_d(f * lg);
        m->inv_freq_local[i] = ncz_exp_d(f * lgl);
    }
    m->embed_scale = sqrtf((float)hp->n_embd);
    m->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    m->kernel = ncz_kernel_best();
    *out = m;
    return NCZ_ENG_OK;
}

static void free_lanes(ncz_model *m)
{
    free(m->layer_off);
    free(m->kv);
    free(m->bos_k);
    free(m->bos_v);
    free(m->bos_kraw);
    free(m->n_past);
    free(m->shift);
    m->layer_off = NULL;
    m->kv = m->bos_k = m->bos_v = NULL;
    m->bos_kraw = NULL;
    m->n_past = m->shift = NULL;
    m->n_lanes = 0;
}

static void free_scratch(ncz_model *m)
{
    float **bufs[] = {&m->x, &m->xn, &m->q, &m->k, &m->v, &m->att, &m->ff_g, &m->ff_u, &m->y, &m->trig,
                      &m->attn_scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    ncz_act_free(&m->act);
    m->cap_rows = 0;
    m->attn_scratch_floats = 0;
}

void ncz_model_free(ncz_model *m)
{
    if (m == NULL)
        return;
    free_lanes(m);
    free_scratch(m);
    ncz_pool_free(m->pool);
    if (m->layers) {
        for (int i = 0; i < m->hp.n_layer; i++) {
            ncz_layer *l = &m->layers[i];
            ncz_mat *mats[] = {&l->q, &l->k, &l->v, &l->o, &l->gate, &l->up, &l->down};
            for (size_t j = 0; j < 7; j++)
                ncz_mat_free(mats[j]);
            free(l->attn_norm);
            free(l->q_norm);
            free(l->k_norm);
            free(l->post_attn_norm);
            free(l->ffn_norm);
            free(l->post_ffw_norm);
        }
    }
    ncz_mat_free(&m->tok_embd);
    ncz_mat_free(&m->output);
    free(m->output_norm);
    free(m->layers);
    free(m->local);
    free(m->inv_freq);
    free(m->inv_freq_local);
    free(m);
}

/* ---- tensors ---- */

static int set_vector(ncz_model *m, float **dst, int type, const uint8_t *raw, size_t len, size_t n, size_t want,
                      const char *name)
{
    if (type != NCZ_GGML_F32 || n != want || len < n * 4)
        return fail(m, NCZ_ENG_E_PARAMS, "%s: expected %zu float32 values", name, want);
    float *v = malloc(n * sizeof(float));
    if (v == NULL)
        return NCZ_ENG_E_NOMEM;
    memcpy(v, raw, n * sizeof(float));
    free(*dst);
    *dst = v;
    return NCZ_ENG_OK;
}

static int set_matrix(ncz_model *m, ncz_mat *dst, int type, const uint8_t *raw, size_t len, size_t n_out,
                      size_t n_in, size_t want_out, size_t want_in, const char *name)
{
    if (n_out != want_out || n_in != want_in)
        return fail(m, NCZ_ENG_E_PARAMS, "%s: shape %zu x %zu, expected %zu x %zu", name, n_out, n_in, want_out,
                    want_in);
    ncz_mat packed;
    int status = ncz_mat_pack(&packed, type, raw, len, n_out, n_in);
    if (status == -2)
        return NCZ_ENG_E_NOMEM;
    if (status != 0)
        return fail(m, NCZ_ENG_E_PARAMS, "%s: tensor type %d is not one the engine reads (or its data is short)",
                    name, type);
    ncz_mat_free(dst);
    *dst = packed;
    return NCZ_ENG_OK;
}

int ncz_model_set_tensor(ncz_model *m, int which, int layer, int type, const uint8_t *raw, size_t len,
                         size_t n_out, size_t n_in)
{
    const ncz_hparams *hp = &m->hp;
    size_t e = (size_t)hp->n_embd, hd = (size_t)hp->head_dim, ff = (size_t)hp->n_ff;
    size_t nq = (size_t)hp->n_head * hd, nkv = (size_t)hp->n_head_kv * hd, nv = (size_t)hp->n_vocab;
    if (which == NCZ_T_TOKEN_EMBD) {
        int s = set_matrix(m, &m->tok_embd, type, raw, len, n_out, n_in, nv, e, "token_embd");
        m->has_embd |= s == NCZ_ENG_OK;
        return s;
    }
    if (which == NCZ_T_OUTPUT) {
        int s = set_matrix(m, &m->output, type, raw, len, n_out, n_in, nv, e, "output");
        m->has_output |= s == NCZ_ENG_OK;
        return s;
    }
    if (which == NCZ_T_OUTPUT_NORM)
        return set_vector(m, &m->output_norm, type, raw, len, n_out * n_in, e, "output_norm");
    if (which < NCZ_T_FIRST_LAYER || which >= NCZ_T_COUNT || layer < 0 || layer >= hp->n_layer)
        return fail(m, NCZ_ENG_E_PARAMS, "tensor %d of layer %d: no such tensor", which, layer);
    ncz_layer *l = &m->layers[layer];
    size_t n = n_out * n_in;
    int s;
    switch (which) {
    case NCZ_T_ATTN_NORM: s = set_vector(m, &l->attn_norm, type, raw, len, n, e, "attn_norm"); break;
    case NCZ_T_ATTN_Q: s = set_matrix(m, &l->q, type, raw, len, n_out, n_in, nq, e, "attn_q"); break;
    case NCZ_T_ATTN_K: s = set_matrix(m, &l->k, type, raw, len, n_out, n_in, nkv, e, "attn_k"); break;
    case NCZ_T_ATTN_V: s = set_matrix(m, &l->v, type, raw, len, n_out, n_in, nkv, e, "attn_v"); break;
    case NCZ_T_ATTN_Q_NORM: s = set_vector(m, &l->q_norm, type, raw, len, n, hd, "attn_q_norm"); break;
    case NCZ_T_ATTN_K_NORM: s = set_vector(m, &l->k_norm, type, raw, len, n, hd, "attn_k_norm"); break;
    case NCZ_T_ATTN_OUTPUT: s = set_matrix(m, &l->o, type, raw, len, n_out, n_in, e, nq, "attn_output"); break;
    case NCZ_T_POST_ATTN_NORM:
        s = set_vector(m, &l->post_attn_norm, type, raw, len, n, e, "post_attention_norm");
        break;
    case NCZ_T_FFN_NORM: s = set_vector(m, &l->ffn_norm, type, raw, len, n, e, "ffn_norm"); break;
    case NCZ_T_FFN_GATE: s = set_matrix(m, &l->gate, type, raw, len, n_out, n_in, ff, e, "ffn_gate"); break;
    case NCZ_T_FFN_UP: s = set_matrix(m, &l->up, type, raw, len, n_out, n_in, ff, e, "ffn_up"); break;
    case NCZ_T_FFN_DOWN: s = set_matrix(m, &l->down, type, raw, len, n_out, n_in, e, ff, "ffn_down"); break;
    default: s = set_vector(m, &l->post_ffw_norm, type, raw, len, n, e, "post_ffw_norm"); break;
    }
    if (s == NCZ_ENG_OK)
        l->have |= 1u << (which - NCZ_T_FIRST_LAYER);
    return s;
}

int ncz_model_ready(const ncz_model *m)
{
    if (!m->has_embd || m->output_norm == NULL)
        return NCZ_ENG_E_MISSING;
    uint32_t all = (1u << (NCZ_T_COUNT - NCZ_T_FIRST_LAYER)) - 1u;
    for (int i = 0; i < m->hp.n_layer; i++)
        if (m->layers[i].have != all)
            return NCZ_ENG_E_MISSING;
    return NCZ_ENG_OK;
}

void ncz_model_set_kernel(ncz_model *m, int kernel)
{
    /* the level asked for, or the best below it that this CPU runs */
    while (kernel > NCZ_KERNEL_PORTABLE && !ncz_kernel_runs(kernel))
        kernel--;
    m->kernel = kernel < NCZ_KERNEL_PORTABLE ? NCZ_KERNEL_PORTABLE : kernel;
}

int ncz_model_kernel(const ncz_model *m)
{
    return m->kernel;
}

int ncz_model_set_threads(ncz_model *m, int threads)
{
    if (threads < 1 || threads > 256)
        return fail(m, NCZ_ENG_E_PARAMS, "threads must be in 1..256, got %d", threads);
    if (ncz_pool_threads(m->pool) == threads)
        return NCZ_ENG_OK;
    ncz_pool_free(m->pool);
    m->pool = ncz_pool_new(threads);
    free_scratch(m); /* per-thread attention scratch is sized by the thread count */
    return NCZ_ENG_OK;
}

/* ---- lanes ---- */

size_t ncz_model_ring(const ncz_model *m, int layer)
{
    return m->local[layer] ? m->ring_local : m->ring_global;
}

static size_t kv_head_halves(const ncz_model *m, int layer)
{
    return 2 * ncz_model_ring(m, layer) * (size_t)m->hp.head_dim;
}

uint16_t *ncz_model_k(ncz_model *m, size_t lane, int layer, int kvh)
{
    return m->kv + lane * m->lane_halves + m->layer_off[layer] + (size_t)kvh * kv_head_halves(m, layer);
}

uint16_t *ncz_model_v(ncz_model *m, size_t lane, int layer, int kvh)
{
    return ncz_model_k(m, lane, layer, kvh) + ncz_model_ring(m, layer) * (size_t)m->hp.head_dim;
}

size_t ncz_model_bos_index(const ncz_model *m, size_t lane, int layer, int kvh)
{
    return ((lane * (size_t)m->hp.n_layer + (size_t)layer) * (size_t)m->hp.n_head_kv + (size_t)kvh) *
           (size_t)m->hp.head_dim;
}

ncz_kv_view ncz_model_kv(const ncz_model *m, size_t lane, int layer, int kvh)
{
    ncz_kv_view v;
    v.ring = ncz_model_ring(m, layer);
    v.k = ncz_model_k((ncz_model *)m, lane, layer, kvh);
    v.v = v.k + v.ring * (size_t)m->hp.head_dim;
    size_t b = ncz_model_bos_index(m, lane, layer, kvh);
    v.k0 = m->bos_k + b;
    v.v0 = m->bos_v + b;
    v.offset = m->shift[lane] % v.ring;
    return v;
}

int ncz_model_configure(ncz_model *m, size_t n_ctx, size_t n_lanes, size_t max_lane_rows)
{
    if (n_ctx < 2 || n_ctx > ((size_t)1 << 20) || n_lanes < 1 || n_lanes > 4096 || max_lane_rows < 1 ||
        max_lane_rows > 4096)
        return fail(m, NCZ_ENG_E_PARAMS, "configure: n_ctx must be in 2..2^20, lanes in 1..4096, rows in 1..4096");
    free_lanes(m);
    const ncz_hparams *hp = &m->hp;
    size_t hd = (size_t)hp->head_dim;
    m->ring_global = round16(n_ctx);
    size_t local = round16((size_t)hp->swa_window + max_lane_rows);
    m->ring_local = local < m->ring_global ? local : m->ring_global;
    m->layer_off = malloc((size_t)hp->n_layer * sizeof(size_t));
    if (m->layer_off == NULL)
        return NCZ_ENG_E_NOMEM;
    size_t off = 0;
    for (int i = 0; i < hp->n_layer; i++) {
        m->layer_off[i] = off;
        off += (size_t)hp->n_head_kv * kv_head_halves(m, i);
    }
    m->lane_halves = off;
    size_t bos = n_lanes * (size_t)hp->n_layer * (size_t)hp->n_head_kv * hd;
    /* zeroed: a cell a query never sees is still a finite number in the SIMD lanes that read it */
    m->kv = calloc(n_lanes * m->lane_halves, sizeof(uint16_t));
    m->bos_k = calloc(bos, sizeof(uint16_t));
    m->bos_v = calloc(bos, sizeof(uint16_t));
    m->bos_kraw = calloc(bos, sizeof(float));
    m->n_past = calloc(n_lanes, sizeof(size_t));
    m->shift = calloc(n_lanes, sizeof(size_t));
    if (!m->kv || !m->bos_k || !m->bos_v || !m->bos_kraw || !m->n_past || !m->shift) {
        free_lanes(m);
        return fail(m, NCZ_ENG_E_NOMEM, "cannot allocate the caches of %zu lanes x %zu positions", n_lanes, n_ctx);
    }
    m->n_ctx = n_ctx;
    m->n_lanes = n_lanes;
    m->max_lane_rows = max_lane_rows;
    free(m->attn_scratch); /* sized by the ring */
    m->attn_scratch = NULL;
    m->attn_scratch_floats = 0;
    return NCZ_ENG_OK;
}

void ncz_model_reset(ncz_model *m)
{
    for (size_t i = 0; i < m->n_lanes; i++)
        m->n_past[i] = m->shift[i] = 0;
}

int ncz_model_clear_lane(ncz_model *m, size_t lane)
{
    if (lane >= m->n_lanes)
        return fail(m, NCZ_ENG_E_PARAMS, "lane %zu out of range 0..%zu", lane, m->n_lanes - 1);
    m->n_past[lane] = m->shift[lane] = 0;
    return NCZ_ENG_OK;
}

size_t ncz_model_lane_length(const ncz_model *m, size_t lane)
{
    return lane < m->n_lanes ? m->n_past[lane] : 0;
}

int ncz_model_copy_lane(ncz_model *m, size_t source, size_t target)
{
    if (source >= m->n_lanes || target >= m->n_lanes)
        return fail(m, NCZ_ENG_E_PARAMS, "lanes %zu, %zu: out of range 0..%zu", source, target, m->n_lanes - 1);
    if (source == target)
        return NCZ_ENG_OK;
    const ncz_hparams *hp = &m->hp;
    size_t hd = (size_t)hp->head_dim, n = m->n_past[source];
    for (int l = 0; l < hp->n_layer; l++) {
        size_t ring = ncz_model_ring(m, l);
        /* the tiles that hold positions [1, n): whole tiles, the cells around them are never read */
        size_t cells = n > 1 ? n - 1 : 0;
        if (cells > ring)
            cells = ring;
        for (int h = 0; h < hp->n_head_kv; h++) {
            uint16_t *ks = ncz_model_k(m, source, l, h), *kt = ncz_model_k(m, target, l, h);
            uint16_t *vs = ncz_model_v(m, source, l, h), *vt = ncz_model_v(m, target, l, h);
            size_t first = cells ? (n - cells + m->shift[source]) % ring : 0;
            size_t t0 = first / 16, tiles = cells ? (first % 16 + cells + 15) / 16 : 0, ntiles = ring / 16;
            for (size_t t = 0; t < tiles && t < ntiles; t++) {
                size_t tile = (t0 + t) % ntiles;
                memcpy(kt + tile * hd * 16, ks + tile * hd * 16, hd * 16 * sizeof(uint16_t));
                memcpy(vt + tile * 16 * hd, vs + tile * 16 * hd, hd * 16 * sizeof(uint16_t));
            }
            size_t bs = ncz_model_bos_index(m, source, l, h), bt = ncz_model_bos_index(m, target, l, h);
            memcpy(m->bos_k + bt, m->bos_k + bs, hd * sizeof(uint16_t));
            memcpy(m->bos_v + bt, m->bos_v + bs, hd * sizeof(uint16_t));
            memcpy(m->bos_kraw + bt, m->bos_kraw + bs, hd * sizeof(float));
        }
    }
    m->n_past[target] = n;
    m->shift[target] = m->shift[source];
    return NCZ_ENG_OK;
}

int ncz_model_shift_lane(ncz_model *m, size_t lane, size_t end)
{
    if (lane >= m->n_lanes)
        return fail(m, NCZ_ENG_E_PARAMS, "lane %zu out of range 0..%zu", lane, m->n_lanes - 1);
    if (end < 2 || end > m->n_past[lane])
        return fail(m, NCZ_ENG_E_PARAMS, "cannot drop positions 1..%zu of a lane that holds %zu", end - 1,
                    m->n_past[lane]);
    const ncz_hparams *hp = &m->hp;
    size_t hd = (size_t)hp->head_dim, half = hd / 2;
    m->n_past[lane] -= end - 1;
    m->shift[lane] += end - 1;
    float cs[2][512], sn[2][512], k[1024];
    if (half > 512)
        return fail(m, NCZ_ENG_E_PARAMS, "head_dim %zu is too large", hd);
    ncz_rope_trig(m->inv_freq, half, (double)m->shift[lane], cs[0], sn[0]);
    ncz_rope_trig(m->inv_freq_local, half, (double)m->shift[lane], cs[1], sn[1]);
    for (int l = 0; l < hp->n_layer; l++) {
        int local = m->local[l];
        for (int h = 0; h < hp->n_head_kv; h++) {
            size_t b = ncz_model_bos_index(m, lane, l, h);
            memcpy(k, m->bos_kraw + b, hd * sizeof(float));
            ncz_rope_apply(k, half, cs[local], sn[local]);
            for (size_t d = 0; d < hd; d++)
                m->bos_k[b + d] = ncz_float_to_half(k[d]);
        }
    }
    return NCZ_ENG_OK;
}

/* ---- evaluation ---- */

static int reserve_rows(ncz_model *m, size_t rows)
{
    const ncz_hparams *hp = &m->hp;
    size_t threads = (size_t)ncz_pool_threads(m->pool);
    size_t scratch = threads * NCZ_ATTN_SCRATCH(m->ring_global);
    if (rows <= m->cap_rows && m->attn_scratch != NULL && m->attn_scratch_floats >= scratch)
        return NCZ_ENG_OK;
    free_scratch(m);
    size_t e = (size_t)hp->n_embd, nq = (size_t)hp->n_head * (size_t)hp->head_dim;
    size_t nkv = (size_t)hp->n_head_kv * (size_t)hp->head_dim, ff = (size_t)hp->n_ff;
    size_t widest = e > nq ? e : nq;
    widest = widest > ff ? widest : ff;
    m->x = malloc(rows * e * sizeof(float));
    m->xn = malloc(rows * e * sizeof(float));
    m->q = malloc(rows * nq * sizeof(float));
    m->k = malloc(rows * nkv * sizeof(float));
    m->v = malloc(rows * nkv * sizeof(float));
    m->att = malloc(rows * nq * sizeof(float));
    m->ff_g = malloc(rows * ff * sizeof(float));
    m->ff_u = malloc(rows * ff * sizeof(float));
    m->y = malloc(rows * e * sizeof(float));
    m->trig = malloc(rows * 2 * (size_t)hp->head_dim * sizeof(float));
    m->attn_scratch = malloc(scratch * sizeof(float));
    if (!m->x || !m->xn || !m->q || !m->k || !m->v || !m->att || !m->ff_g || !m->ff_u || !m->y || !m->trig ||
        !m->attn_scratch || ncz_act_reserve(&m->act, rows, widest) != 0) {
        free_scratch(m);
        return fail(m, NCZ_ENG_E_NOMEM, "cannot allocate the buffers for %zu rows", rows);
    }
    m->cap_rows = rows;
    m->attn_scratch_floats = scratch;
    return NCZ_ENG_OK;
}

int ncz_model_forward(ncz_model *m, const int32_t *tokens, const int32_t *positions, const int32_t *lanes,
                      size_t rows, float *hidden)
{
    if (ncz_model_ready(m) != NCZ_ENG_OK)
        return fail(m, NCZ_ENG_E_MISSING, "the model is missing tensors");
    if (m->n_lanes == 0)
        return fail(m, NCZ_ENG_E_ORDER, "the model has no lanes: configure it first");
    if (rows == 0)
        return fail(m, NCZ_ENG_E_PARAMS, "no rows to evaluate");
    /* each lane's rows must continue where the lane stands, in order, at most max_lane_rows */
    size_t *next = malloc(m->n_lanes * sizeof(size_t)), *count = calloc(m->n_lanes, sizeof(size_t));
    if (next == NULL || count == NULL) {
        free(next);
        free(count);
        return NCZ_ENG_E_NOMEM;
    }
    memcpy(next, m->n_past, m->n_lanes * sizeof(size_t));
    int status = NCZ_ENG_OK;
    for (size_t r = 0; r < rows && status == NCZ_ENG_OK; r++) {
        if (tokens[r] < 0 || tokens[r] >= m->hp.n_vocab)
            status = fail(m, NCZ_ENG_E_PARAMS, "row %zu: token %d out of range 0..%d", r, tokens[r], m->hp.n_vocab - 1);
        else if (lanes[r] < 0 || (size_t)lanes[r] >= m->n_lanes)
            status = fail(m, NCZ_ENG_E_PARAMS, "row %zu: lane %d out of range 0..%zu", r, lanes[r], m->n_lanes - 1);
        else if (positions[r] < 0 || (size_t)positions[r] != next[lanes[r]])
            status = fail(m, NCZ_ENG_E_ORDER, "row %zu: lane %d is at position %zu, the row says %d", r, lanes[r],
                          next[lanes[r]], positions[r]);
        else if ((size_t)positions[r] >= m->n_ctx)
            status = fail(m, NCZ_ENG_E_PARAMS, "row %zu: position %d is beyond the lane's %zu", r, positions[r],
                          m->n_ctx);
        else if ((size_t)positions[r] + m->shift[lanes[r]] > NCZ_MAX_POSITION)
            status = fail(m, NCZ_ENG_E_PARAMS, "row %zu: lane %d has gone past %d positions", r, lanes[r],
                          NCZ_MAX_POSITION);
        else if (++count[lanes[r]] > m->max_lane_rows)
            status = fail(m, NCZ_ENG_E_PARAMS, "more than %zu rows of lane %d in one call", m->max_lane_rows,
                          lanes[r]);
        else
            next[lanes[r]]++;
    }
    free(count);
    if (status == NCZ_ENG_OK)
        status = reserve_rows(m, rows);
    if (status == NCZ_ENG_OK) {
        unsigned env = ncz_fpenv_enter();
        status = ncz_gemma3_forward(m, tokens, positions, lanes, rows, hidden);
        ncz_fpenv_leave(env);
        if (status == NCZ_ENG_OK)
            memcpy(m->n_past, next, m->n_lanes * sizeof(size_t));
    }
    free(next);
    return status;
}

typedef struct {
    const ncz_mat *w;
    const ncz_act *a;
    float *out;
    int kernel;
} head_job;

static void head_part(void *arg, size_t lo, size_t hi, int part)
{
    head_job *j = arg;
    (void)part;
    ncz_matmul(j->w, j->a, j->out, j->w->n_out, lo, hi, j->kernel);
}

int ncz_model_head(ncz_model *m, const float *hidden, size_t rows, float *logits)
{
    if (!m->has_embd)
        return fail(m, NCZ_ENG_E_MISSING, "the model has no output matrix");
    if (rows == 0)
        return NCZ_ENG_OK;
    const ncz_mat *w = m->has_output ? &m->output : &m->tok_embd;
    if (ncz_act_reserve(&m->act, rows > m->cap_rows ? rows : m->cap_rows, (size_t)m->hp.n_embd) != 0)
        return NCZ_ENG_E_NOMEM;
    unsigned env = ncz_fpenv_enter();
    ncz_act_quantize(&m->act, hidden, (size_t)m->hp.n_embd, rows, (size_t)m->hp.n_embd, m->kernel);
    head_job j = {w, &m->act, logits, m->kernel};
    ncz_pool_run(m->pool, head_part, &j, w->groups);
    ncz_fpenv_leave(env);
    return NCZ_ENG_OK;
}
