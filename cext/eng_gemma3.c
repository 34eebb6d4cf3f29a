/* Gemma-3's forward pass over the engine's model (eng_model.c), row by row in the engine's
 * fixed arithmetic. Per layer, for each row:
 *   h = rms_norm(x) * attn_norm
 *   q = Wq h, k = Wk h, v = Wv h
 *   q_i = rope(rms_norm(q_i) * q_norm) * (1 / sqrt(head_dim)) per query head i
 *   k_j = rope(rms_norm(k_j) * k_norm) per KV head j; k_j and v_j go into the lane's cache
 *   a = attention over the lane's window (all positions on global layers, the last swa_window
 *       on sliding-window ones)
 *   x = x + rms_norm(Wo a) * post_attention_norm
 *   h = rms_norm(x) * ffn_norm
 *   x = x + rms_norm(Wdown (gelu(Wgate h) * (Wup h))) * post_ffw_norm
 * with x = token_embd[token] * sqrt(n_embd) before the first layer and rms_norm(x) * output_norm
 * after the last (the hidden state the head turns into logits). RoPE uses base rope_base on
 * global layers and rope_base_local on sliding-window ones (NEOX pairing: i with i + d/2).
 *
 * The work goes to the thread pool in jobs over rows (norms, RoPE, cache writes, GELU),
 * over output groups (matrix products) or over (row, KV head) pairs (attention); every job
 * writes its own outputs in the same order whoever runs it.
 */
#include <string.h>

#include "eng_model.h"
#include "eng_simd.h"

typedef struct {
    ncz_model *m;
    const int32_t *tokens, *positions, *lanes;
    size_t rows;
    int layer;
    float *hidden;
    /* matrix products of one job: up to three matrices over the same activations */
    const ncz_mat *mats[3];
    float *outs[3];
    size_t n_mats;
} pass;

/* ---- jobs over rows ---- */

static void embed_rows(void *arg, size_t lo, size_t hi, int part)
{
    pass *p = arg;
    ncz_model *m = p->m;
    size_t e = (size_t)m->hp.n_embd, hd = (size_t)m->hp.head_dim, half = hd / 2;
    (void)part;
    for (size_t r = lo; r < hi; r++) {
        float *x = m->x + r * e;
        ncz_mat_row(&m->tok_embd, (size_t)p->tokens[r], x);
        for (size_t j = 0; j < e; j++)
            x[j] = x[j] * m->embed_scale;
        /* this row's RoPE angles: absolute position = window position + the lane's shift */
        double pos = (double)((size_t)p->positions[r] + m->shift[p->lanes[r]]);
        float *t = m->trig + r * 2 * hd;
        ncz_rope_trig(m->inv_freq, half, pos, t, t + half);
        ncz_rope_trig(m->inv_freq_local, half, pos, t + hd, t + hd + half);
    }
}

/* h = rms_norm(x) * w, quantized for the next product */
static void norm_rows(void *arg, size_t lo, size_t hi, int part)
{
    pass *p = arg;
    ncz_model *m = p->m;
    size_t e = (size_t)m->hp.n_embd;
    const float *w = m->layers[p->layer].attn_norm;
    (void)part;
    if (p->layer == m->hp.n_layer) { /* after the last layer: the output norm, into hidden */
        for (size_t r = lo; r < hi; r++)
            ncz_rms_norm(m->x + r * e, e, m->output_norm, m->hp.eps, p->hidden + r * e);
        return;
    }
    for (size_t r = lo; r < hi; r++)
        ncz_rms_norm(m->x + r * e, e, w, m->hp.eps, m->xn + r * e);
}

static void quantize_rows(ncz_model *m, const float *x, size_t ld, size_t lo, size_t hi, size_t n_in)
{
    /* the act buffer's rows are addressed from 0; quantize rows [lo, hi) in place */
    ncz_act sub = m->act;
    sub.q8 += lo * n_in;
    sub.s8 += lo * n_in;
    sub.d += lo * (n_in / NCZ_BLOCK);
    sub.sum += lo * (n_in / NCZ_BLOCK);
    ncz_act_quantize(&sub, x + lo * ld, ld, hi - lo, n_in, m->kernel);
}

typedef struct {
    pass *p;
    const float *x;
    size_t ld, n_in;
} quant_job;

static void quant_part(void *arg, size_t lo, size_t hi, int part)
{
    quant_job *j = arg;
    (void)part;
    quantize_rows(j->p->m, j->x, j->ld, lo, hi, j->n_in);
}

static void quantize(pass *p, const float *x, size_t ld, size_t n_in)
{
    ncz_model *m = p->m;
    quant_job j = {p, x, ld, n_in};
    ncz_pool_run(m->pool, quant_part, &j, p->rows);
    m->act.rows = p->rows;
    m->act.n_in = n_in;
    m->act.nb = n_in / NCZ_BLOCK;
}

static void matmul_part(void *arg, size_t lo, size_t hi, int part)
{
    pass *p = arg;
    (void)part;
    size_t base = 0;
    for (size_t i = 0; i < p->n_mats; i++) {
        const ncz_mat *w = p->mats[i];
        size_t g0 = lo > base ? lo - base : 0;
        size_t g1 = hi > base ? hi - base : 0;
        g1 = g1 < w->groups ? g1 : w->groups;
        if (g0 < g1)
            ncz_matmul(w, &p->m->act, p->outs[i], w->n_out, g0, g1, p->m->kernel);
        base += w->groups;
    }
}

static void matmul(pass *p, size_t n, const ncz_mat *a, float *oa, const ncz_mat *b, float *ob, const ncz_mat *c,
                   float *oc)
{
    p->n_mats = n;
    p->mats[0] = a, p->outs[0] = oa;
    p->mats[1] = b, p->outs[1] = ob;
    p->mats[2] = c, p->outs[2] = oc;
    size_t groups = 0;
    for (size_t i = 0; i < n; i++)
        groups += p->mats[i]->groups;
    ncz_pool_run(p->m->pool, matmul_part, p, groups);
}

/* q and k heads: norm, RoPE, scale; k and v into the lane's cache */
static void qk_rows(void *arg, size_t lo, size_t hi, int part)
{
    pass *p = arg;
    ncz_model *m = p->m;
    const ncz_layer *L = &m->layers[p->layer];
    int local = m->local[p->layer];
    size_t hd = (size_t)m->hp.head_dim, half = hd / 2, nh = (size_t)m->hp.n_head, nkv = (size_t)m->hp.n_head_kv;
    size_t ring = ncz_model_ring(m, p->layer);
    float tmp[1024];
    (void)part;
    for (size_t r = lo; r < hi; r++) {
        const float *cs = m->trig + r * 2 * hd + (local ? hd : 0), *sn = cs + half;
        for (size_t h = 0; h < nh; h++) {
            float *q = m->q + (r * nh + h) * hd;
            ncz_rms_norm(q, hd, L->q_norm, m->hp.eps, tmp);
            ncz_rope_apply(tmp, half, cs, sn);
            for (size_t d = 0; d < hd; d++)
                q[d] = tmp[d] * m->attn_scale;
        }
        size_t lane = (size_t)p->lanes[r], pos = (size_t)p->positions[r];
        for (size_t h = 0; h < nkv; h++) {
            const float *k = m->k + (r * nkv + h) * hd, *v = m->v + (r * nkv + h) * hd;
            ncz_rms_norm(k, hd, L->k_norm, m->hp.eps, tmp);
            if (pos == 0) { /* the BOS cell keeps its key before RoPE, to turn it when the window shifts */
                size_t b = ncz_model_bos_index(m, lane, p->layer, (int)h);
                memcpy(m->bos_kraw + b, tmp, hd * sizeof(float));
                ncz_rope_apply(tmp, half, cs, sn);
                for (size_t d = 0; d < hd; d++) {
                    m->bos_k[b + d] = ncz_float_to_half(tmp[d]);
                    m->bos_v[b + d] = ncz_float_to_half(v[d]);
                }
                continue;
            }
            ncz_rope_apply(tmp, half, cs, sn);
            size_t slot = (pos + m->shift[lane]) % ring;
            uint16_t *kc = ncz_model_k(m, lane, p->layer, (int)h) + (slot / 16) * hd * 16 + slot % 16;
            uint16_t *vc = ncz_model_v(m, lane, p->layer, (int)h) + slot * hd;
            for (size_t d = 0; d < hd; d++) {
                kc[d * 16] = ncz_float_to_half(tmp[d]);
                vc[d] = ncz_float_to_half(v[d]);
            }
        }
    }
}

/* The first window position the row at `pos` attends to, and whether it sees the BOS cell: all
 * positions from 1 on global layers, the last `window` (this one included) on local ones. */
static size_t attention_first(int local, size_t window, size_t pos, int *bos)
{
    *bos = !(local && pos + 1 > window);
    return *bos ? 1 : pos + 1 - window;
}

static void attention_part(void *arg, size_t lo, size_t hi, int part)
{
    pass *p = arg;
    ncz_model *m = p->m;
    size_t hd = (size_t)m->hp.head_dim, nh = (size_t)m->hp.n_head, nkv = (size_t)m->hp.n_head_kv;
    size_t per = nh / nkv, window = (size_t)m->hp.swa_window;
    int local = m->local[p->layer];
    float *scratch = m->attn_scratch + (size_t)part * NCZ_ATTN_SCRATCH(m->ring_global);
    for (size_t u = lo; u < hi; u++) {
        size_t r = u / nkv, h = u % nkv;
        size_t lane = (size_t)p->lanes[r], pos = (size_t)p->positions[r];
        ncz_kv_view kv = ncz_model_kv(m, lane, p->layer, (int)h);
        int bos, next_bos;
        size_t first = attention_first(local, window, pos, &bos);
        const float *q = m->q + (r * nh + h * per) * hd;
        float *out = m->att + (r * nh + h * per) * hd;
        /* A prefill block's next row on the same lane, one position on: both in one pass over
         * the cache (its range starts at `first` or one later, and ends one later). */
        if (nkv == 1 && u + 1 < hi && first <= pos && (size_t)p->lanes[r + 1] == lane &&
            (size_t)p->positions[r + 1] == pos + 1) {
            size_t next_first = attention_first(local, window, pos + 1, &next_bos);
            ncz_attend_pair(&kv, hd, per, q, q + nh * hd, first, pos, next_first - first, bos, next_bos, out,
                            out + nh * hd, scratch, m->kernel);
            u++;
            continue;
        }
        ncz_attend(&kv, hd, per, q, first, pos, bos, out, scratch, m->kernel);
    }
}

/* x = x + rms_norm(y) * w; then h = rms_norm(x) * next (the next norm, when there is one) */
typedef struct {
    pass *p;
    const float *w, *next;
} residual_job;

static void residual_part(void *arg, size_t lo, size_t hi, int part)
{
    residual_job *j = arg;
    ncz_model *m = j->p->m;
    size_t e = (size_t)m->hp.n_embd;
    float tmp[4096];
    (void)part;
    for (size_t r = lo; r < hi; r++) {
        float *x = m->x + r * e;
        ncz_rms_norm(m->y + r * e, e, j->w, m->hp.eps, tmp);
        for (size_t i = 0; i < e; i++)
            x[i] = x[i] + tmp[i];
        if (j->next != NULL)
            ncz_rms_norm(x, e, j->next, m->hp.eps, m->xn + r * e);
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
A512 static void gelu_avx512(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i += 16)
        _mm512_storeu_ps(g + i, _mm512_mul_ps(gelu512(_mm512_loadu_ps(g + i)), _mm512_loadu_ps(u + i)));
}

A2 static void gelu_avx2(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i += 8)
        _mm256_storeu_ps(g + i, _mm256_mul_ps(gelu256(_mm256_loadu_ps(g + i)), _mm256_loadu_ps(u + i)));
}
#define HAVE_X86_KERNELS 1
#else
#define HAVE_X86_KERNELS 0
#endif

/* g = gelu(g) * u (n_ff is a multiple of 32) */
static void gelu_rows(void *arg, size_t lo, size_t hi, int part)
{
    pass *p = arg;
    ncz_model *m = p->m;
    size_t ff = (size_t)m->hp.n_ff;
    (void)part;
    for (size_t r = lo; r < hi; r++) {
        float *g = m->ff_g + r * ff;
        const float *u = m->ff_u + r * ff;
#if HAVE_X86_KERNELS
        if (m->kernel >= NCZ_KERNEL_AVX512) {
            gelu_avx512(g, u, ff);
            continue;
        }
        if (m->kernel >= NCZ_KERNEL_AVX2) {
            gelu_avx2(g, u, ff);
            continue;
        }
#endif
        for (size_t i = 0; i < ff; i++)
            g[i] = ncz_gelu(g[i]) * u[i];
    }
}

int ncz_gemma3_forward(ncz_model *m, const int32_t *tokens, const int32_t *positions, const int32_t *lanes,
                       size_t rows, float *hidden)
{
    const ncz_hparams *hp = &m->hp;
    size_t e = (size_t)hp->n_embd, nq = (size_t)hp->n_head * (size_t)hp->head_dim;
    size_t nkv = (size_t)hp->n_head_kv * (size_t)hp->head_dim, ff = (size_t)hp->n_ff;
    if (e > 4096 || hp->head_dim > 1024)
        return NCZ_ENG_E_PARAMS;
    pass p = {m, tokens, positions, lanes, rows, 0, hidden, {0}, {0}, 0};
    ncz_pool_run(m->pool, embed_rows, &p, rows);
    p.layer = 0;
    ncz_pool_run(m->pool, norm_rows, &p, rows);
    for (int il = 0; il < hp->n_layer; il++) {
        ncz_layer *L = &m->layers[il];
        p.layer = il;
        quantize(&p, m->xn, e, e);
        matmul(&p, 3, &L->q, m->q, &L->k, m->k, &L->v, m->v);
        ncz_pool_run(m->pool, qk_rows, &p, rows);
        ncz_pool_run(m->pool, attention_part, &p, rows * (size_t)hp->n_head_kv);
        quantize(&p, m->att, nq, nq);
        matmul(&p, 1, &L->o, m->y, NULL, NULL, NULL, NULL);
        residual_job attn = {&p, L->post_attn_norm, L->ffn_norm};
        ncz_pool_run(m->pool, residual_part, &attn, rows);
        quantize(&p, m->xn, e, e);
        matmul(&p, 2, &L->gate, m->ff_g, &L->up, m->ff_u, NULL, NULL);
        ncz_pool_run(m->pool, gelu_rows, &p, rows);
        quantize(&p, m->ff_g, ff, ff);
        matmul(&p, 1, &L->down, m->y, NULL, NULL, NULL, NULL);
        residual_job ffn = {&p, L->post_ffw_norm, il + 1 < hp->n_layer ? m->layers[il + 1].attn_norm : NULL};
        ncz_pool_run(m->pool, residual_part, &ffn, rows);
    }
    (void)nkv;
    p.layer = hp->n_layer;
    ncz_pool_run(m->pool, norm_rows, &p, rows);
    return NCZ_ENG_OK;
}
