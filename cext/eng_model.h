/* The model's state, shared by eng_model.c (weights, lanes, caches, the public calls) and the
 * architecture files that compute a forward pass over it (eng_gemma3.c). */
#ifndef NCZIP_ENG_MODEL_H
#define NCZIP_ENG_MODEL_H

#include "engine.h"

typedef struct {
    ncz_mat q, k, v, o, gate, up, down;
    float *attn_norm, *q_norm, *k_norm, *post_attn_norm, *ffn_norm, *post_ffw_norm;
    uint32_t have; /* bit per NCZ_T_* received */
} ncz_layer;

struct ncz_model {
    ncz_hparams hp;
    uint8_t *local;     /* per layer: 1 = sliding-window layer */
    ncz_mat tok_embd, output;
    int has_embd, has_output;
    float *output_norm;
    ncz_layer *layers;
    double *inv_freq, *inv_freq_local; /* head_dim / 2 RoPE frequencies per base */
    float embed_scale, attn_scale;
    int kernel;
    ncz_pool *pool;

    /* lanes: a BOS cell and a ring of cells per (lane, layer, KV head) */
    size_t n_ctx, n_lanes, max_lane_rows;
    size_t ring_global, ring_local;
    size_t *layer_off; /* halves from a lane's start to the layer's first KV head */
    size_t lane_halves;
    uint16_t *kv;       /* per KV head: keys [ring / 16][head_dim][16], then values [ring][head_dim] */
    uint16_t *bos_k, *bos_v; /* [lane][layer][kv head][head_dim] */
    float *bos_kraw;     /* the BOS keys before RoPE, to turn them when a window shifts */
    size_t *n_past;      /* positions a lane holds (its next row's position) */
    size_t *shift;       /* positions a lane has shifted by in all */

    /* scratch for up to cap_rows rows */
    size_t cap_rows;
    float *x, *xn, *q, *k, *v, *att, *ff_g, *ff_u, *y, *trig;
    ncz_act act;
    float *attn_scratch; /* per thread */
    size_t attn_scratch_floats;

    char error[256];
};

size_t ncz_model_ring(const ncz_model *m, int layer);
/* The cache of (lane, layer, kv head) as attention reads it. */
ncz_kv_view ncz_model_kv(const ncz_model *m, size_t lane, int layer, int kvh);
uint16_t *ncz_model_k(ncz_model *m, size_t lane, int layer, int kvh);
uint16_t *ncz_model_v(ncz_model *m, size_t lane, int layer, int kvh);
size_t ncz_model_bos_index(const ncz_model *m, size_t lane, int layer, int kvh);
/* x <- x rotated by (cs, sn), NEOX pairing (i, i + half) */
void ncz_rope_apply(float *x, size_t half, const float *cs, const float *sn);
/* out = x / sqrt(mean(x^2) + eps) * w, in the engine's fixed order */
void ncz_rms_norm(const float *x, size_t n, const float *w, float eps, float *out);

int ncz_gemma3_forward(ncz_model *m, const int32_t *tokens, const int32_t *positions, const int32_t *lanes,
                       size_t rows, float *hidden);

#endif /* NCZIP_ENG_MODEL_H */
