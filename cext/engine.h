/* nczip's own inference engine: exact, portable, batch-invariant.
 *
 * Every number the engine computes is defined by this code, not by the CPU: an archive coded on
 * one machine decodes on any other. The rules (docs/engine.md states them in full):
 *   - matrix products are exact integer dot products of the weights' own quants (GGUF blocks,
 *     repacked) against activations quantized per 32-value block to int8; the block scales are
 *     then combined in one written-down order of float32 operations per output;
 *   - everything else is IEEE float32 +, -, *, /, sqrt in a fixed order: no FMA contraction
 *     (-ffp-contract=off, and the SIMD code uses separate multiplies and adds), no fast-math,
 *     no libm transcendental (ncz_expf here; RoPE's angles in double with our own sin/cos);
 *   - reductions have one fixed shape (16 strided partial sums, then a halving tree) that the
 *     portable loop and every SIMD width compute alike;
 *   - a row's result depends only on its own lane's tokens, never on the other rows of a call,
 *     the call's size or the thread split (batch invariance);
 *   - the portable C loops are the reference; each SIMD kernel is tested equal to them.
 *
 * Plain C99 plus POSIX threads; no Python.h (py_engine.c is the binding).
 */
#ifndef NCZIP_ENGINE_H
#define NCZIP_ENGINE_H

#include <stddef.h>
#include <stdint.h>

/* ---- kernel levels: which SIMD code runs (all give the same bits) ---- */
enum { NCZ_KERNEL_PORTABLE = 0, NCZ_KERNEL_AVX2 = 1, NCZ_KERNEL_AVX512 = 2 };
/* Whether this CPU and build run level k; the best level they run. */
int ncz_kernel_runs(int k);

int ncz_kernel_best(void);
/* Puts the calling thread's float environment in the state the engine's arithmetic assumes:
 * round to nearest even, subnormals kept (no flush-to-zero, no denormals-are-zero). Another
 * library in the process (a BLAS, a GPU runtime) may have changed it; returns the old state. */
unsigned ncz_fpenv_enter(void);
void ncz_fpenv_leave(unsigned saved);

/* ---- deterministic math (eng_math.c) ---- */

/* e^x in float32, the engine's one exponential (softmax, GELU). n = round(x log2 e) (by adding
 * and subtracting 1.5 * 2^23), r = x - n ln2 in two parts (Cody and Waite), e^r by Cephes'
 * degree-7 polynomial, then 2^n through the exponent bits. x is clamped to [-87, 88] first, so
 * 2^n and the result are normal numbers (e^-87 = 1.6e-38 stands for anything smaller). About
 * 1 ulp. Inline, so that loops over it vectorize; the SIMD kernels (eng_attn.c) repeat these
 * operations with the same constants. */
#define NCZ_EXP_LO (-87.0f)
#define NCZ_EXP_HI 88.0f
#define NCZ_EXP_LOG2E 1.44269504088896341f
#define NCZ_EXP_ROUND 12582912.0f /* 1.5 * 2^23 */
#define NCZ_EXP_LN2_HI 0.693359375f
#define NCZ_EXP_LN2_LO (-2.12194440e-4f)
#define NCZ_EXP_P0 1.9875691500e-4f
#define NCZ_EXP_P1 1.3981999507e-3f
#define NCZ_EXP_P2 8.3334519073e-3f
#define NCZ_EXP_P3 4.1665795894e-2f
#define NCZ_EXP_P4 1.6666665459e-1f
#define NCZ_EXP_P5 5.0000001201e-1f

static inline float ncz_expf(float x)
{
    x = x < NCZ_EXP_LO ? NCZ_EXP_LO : x;
    x = x > NCZ_EXP_HI ? NCZ_EXP_HI : x;
    float t = x * NCZ_EXP_LOG2E;
    float n = t + NCZ_EXP_ROUND;
    n = n - NCZ_EXP_ROUND;
    float r = x - n * NCZ_EXP_LN2_HI;
    r = r - n * NCZ_EXP_LN2_LO;
    float z = r * r;
    float p = NCZ_EXP_P0;
    p = p * r + NCZ_EXP_P1;
    p = p * r + NCZ_EXP_P2;
    p = p * r + NCZ_EXP_P3;
    p = p * r + NCZ_EXP_P4;
    p = p * r + NCZ_EXP_P5;
    p = p * z;
    p = p + r;
    p = p + 1.0f;
    union { uint32_t u; float f; } scale;
    scale.u = (uint32_t)((int32_t)n + 127) << 23;
    return p * scale.f;
}
/* Double-precision helpers for RoPE: IEEE double operations only, no libm. */
double ncz_exp_d(double x);
double ncz_log_d(double x);
void ncz_sincos_d(double x, double *s, double *c);
/* GELU, tanh form, written with one exponential: x / (1 + e^(-2 sqrt(2/pi) (x + 0.044715 x^3))),
 * its float operations in this order. */
#define NCZ_GELU_C1 0.044715f
#define NCZ_GELU_C2 (-1.5957691216057308f) /* -2 sqrt(2 / pi) */

static inline float ncz_gelu(float x)
{
    float u = x * x;
    u = u * x;
    u = u * NCZ_GELU_C1;
    u = x + u;
    u = u * NCZ_GELU_C2;
    float e = ncz_expf(u);
    float den = 1.0f + e;
    return x / den;
}

/* IEEE half <-> single, round to nearest even (the same as F16C's conversions). */
float ncz_half_to_float(uint16_t h);
uint16_t ncz_float_to_half(float f);
/* The 65,536 halves as floats (built once; the portable loops read it). */
const float *ncz_half_table(void);
/* The engine's one reduction shape: p[i] + p[i + 8], then + 4, + 2, + 1. */
float ncz_sum16(const float p[16]);

/* ---- packed matrices (eng_matmul.c) ---- */
/* GGUF / ggml tensor types the engine reads. */
enum { NCZ_GGML_F32 = 0, NCZ_GGML_F16 = 1, NCZ_GGML_Q5_0 = 6, NCZ_GGML_Q8_0 = 8, NCZ_GGML_Q4_K = 12,
       NCZ_GGML_Q6_K = 14 };
/* How a 32-value block's quants become values:
 *   PLAIN: w = scale * q                      (Q8_0, Q5_0; F32 / F16 are quantized to Q8_0 at load)
 *   MIN:   w = scale * q - min                (Q4_K: q in 0..15)
 *   HALF:  w = scale_h * q, h = j / 16        (Q6_K: a scale per 16 values) */
enum { NCZ_MAT_PLAIN = 0, NCZ_MAT_MIN = 1, NCZ_MAT_HALF = 2 };
#define NCZ_GROUP 16 /* output rows interleaved in one packed group */
#define NCZ_BLOCK 32 /* input values per quantization block */

typedef struct {
    int kind;
    int wide;     /* quants may leave [-64, 63]: the AVX2 kernel then uses its sign trick */
    size_t n_out, n_in, groups, nb;
    int8_t *q;    /* [groups][nb][8][16][4]: q[g][b][c][l][k] = Q[16 g + l][32 b + 4 c + k] */
    int32_t *wsum; /* 128 x the sum of a block's quants (HALF: of each 16-value half): [g][nb][H][16] */
    float *scale;  /* [g][nb][H][16], H = 2 for HALF, else 1 */
    float *min;    /* MIN only: [g][nb][16] */
} ncz_mat;

size_t ncz_ggml_row_bytes(int type, size_t n); /* 0: unsupported type or n */
/* Repacks n_out rows of n_in values of a GGUF tensor (raw: its bytes) into m. */
int ncz_mat_pack(ncz_mat *m, int type, const uint8_t *raw, size_t raw_len, size_t n_out, size_t n_in);
void ncz_mat_free(ncz_mat *m);
/* Row `row` as floats: each value exactly scale * q (- min). */
void ncz_mat_row(const ncz_mat *m, size_t row, float *out);

/* Activations quantized per row and block: q = round(x * 127 / amax) in -127..127, stored +128
 * as uint8 (q8) and as int8 (s8, for AVX2's sign trick); d = amax / 127; sum = sum of q. */
typedef struct {
    size_t rows, n_in, nb, cap_rows, cap_in;
    uint8_t *q8;
    int8_t *s8;
    float *d;
    int32_t *sum;
} ncz_act;

int ncz_act_reserve(ncz_act *a, size_t rows, size_t n_in);
void ncz_act_free(ncz_act *a);
/* x: rows x n_in floats, row stride ld. */
void ncz_act_quantize(ncz_act *a, const float *x, size_t ld, size_t rows, size_t n_in, int kernel);
/* out[r * ld + o] = (W a_r)[o] for the outputs of groups [g0, g1). */
void ncz_matmul(const ncz_mat *m, const ncz_act *a, float *out, size_t ld, size_t g0, size_t g1, int kernel);

/* ---- threads (eng_pool.c) ---- */
typedef struct ncz_pool ncz_pool;
/* fn(arg, lo, hi, part) handles units [lo, hi); part: 0 for the caller, 1.. for the workers. */
typedef void (*ncz_pool_fn)(void *arg, size_t lo, size_t hi, int part);
ncz_pool *ncz_pool_new(int threads); /* NULL for one thread, or where threads are unavailable */
void ncz_pool_free(ncz_pool *p);
int ncz_pool_threads(const ncz_pool *p);
/* Splits [0, n) into one contiguous part per thread (the caller takes the first) and waits. */
void ncz_pool_run(ncz_pool *p, ncz_pool_fn fn, void *arg, size_t n);

/* ---- attention (eng_attn.c) ---- */
/* One lane's cache for one layer: a BOS cell (window position 0, kept when the window shifts)
 * and a ring of `ring` cells (a multiple of 16) for positions >= 1; position p lies in slot
 * (p + offset) mod ring. Keys are stored in tiles of 16 slots, dimension-major
 * (k[tile][d][16]); values slot-major (v[slot][d]); both as IEEE halves. */
typedef struct {
    const uint16_t *k;  /* [ring / 16][head_dim][16] */
    const uint16_t *v;  /* [ring][head_dim] */
    const uint16_t *k0; /* BOS cell */
    const uint16_t *v0;
    size_t ring;
    size_t offset;      /* the lane's total shift, mod ring */
} ncz_kv_view;

/* Attention of n_q query heads (sharing this cache) over window positions [lo, hi] (1 <= lo,
 * or lo > hi for none) and, when with_bos, the BOS cell. q: n_q x head_dim floats (already
 * scaled); out: n_q x head_dim floats; scratch: NCZ_ATTN_SCRATCH(ring) floats (room for the
 * scores of two queries of up to 4 heads: ncz_attend_pair). */
#define NCZ_ATTN_SCRATCH(ring) (8 * ((ring) + 16))
void ncz_attend(const ncz_kv_view *kv, size_t head_dim, size_t n_q, const float *q, size_t lo, size_t hi,
                int with_bos, float *out, float *scratch, int kernel);
/* Two queries of one cache, the bits of two ncz_attend calls: qa over [lo, hi] (lo <= hi) with
 * bos_a, qb (the next position's) over [lo + b_skip, hi + 1] with bos_b (b_skip: 0 or 1). */
void ncz_attend_pair(const ncz_kv_view *kv, size_t head_dim, size_t n_q, const float *qa, const float *qb,
                     size_t lo, size_t hi, size_t b_skip, int bos_a, int bos_b, float *out_a, float *out_b,
                     float *scratch, int kernel);


/* ---- the model (eng_model.c: weights, lanes and caches; eng_gemma3.c: its forward pass) ---- */

/* Which tensor ncz_model_set_tensor receives. */
enum {
    NCZ_T_TOKEN_EMBD = 0, /* also the output head when the model has no NCZ_T_OUTPUT */
    NCZ_T_OUTPUT,
    NCZ_T_OUTPUT_NORM,
    NCZ_T_ATTN_NORM, /* per layer from here on */
    NCZ_T_ATTN_Q,
    NCZ_T_ATTN_K,
    NCZ_T_ATTN_V,
    NCZ_T_ATTN_Q_NORM,
    NCZ_T_ATTN_K_NORM,
    NCZ_T_ATTN_OUTPUT,
    NCZ_T_POST_ATTN_NORM,
    NCZ_T_FFN_NORM,
    NCZ_T_FFN_GATE,
    NCZ_T_FFN_UP,
    NCZ_T_FFN_DOWN,
    NCZ_T_POST_FFW_NORM,
    NCZ_T_COUNT
};
#define NCZ_T_FIRST_LAYER NCZ_T_ATTN_NORM

/* Engine status codes (py_engine.c turns them into exceptions with the model's message). */
enum { NCZ_ENG_OK = 0, NCZ_ENG_E_PARAMS = -1, NCZ_ENG_E_NOMEM = -2, NCZ_ENG_E_MISSING = -3, NCZ_ENG_E_ORDER = -4 };

typedef struct {
    int arch;          /* NCZ_ARCH_* */
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab;
    int swa_window;    /* a local layer's query sees this many positions, itself included */
    float eps;         /* RMS norm epsilon */
    double rope_base, rope_base_local;
    const uint8_t *layer_local; /* n_layer flags (copied): 1 = sliding-window layer */
} ncz_hparams;

enum { NCZ_ARCH_GEMMA3 = 1 };

typedef struct ncz_model ncz_model;

int ncz_model_new(const ncz_hparams *hp, ncz_model **out);
void ncz_model_free(ncz_model *m);
/* A tensor's GGUF bytes: matrices (n_out x n_in) are repacked, norm vectors (F32) copied. */
int ncz_model_set_tensor(ncz_model *m, int which, int layer, int type, const uint8_t *raw, size_t len,
                         size_t n_out, size_t n_in);
/* NCZ_ENG_OK once every tensor the architecture needs is there. */
int ncz_model_ready(const ncz_model *m);
void ncz_model_set_kernel(ncz_model *m, int kernel);
int ncz_model_kernel(const ncz_model *m);
int ncz_model_set_threads(ncz_model *m, int threads);
/* The most absolute positions a lane may reach (window positions plus shifts): RoPE's angles are
 * exact to the last bit of ncz_sincos_d's range reduction below 2^20 * pi / 2. A segment of at
 * most 1 MiB never needs more. */
#define NCZ_MAX_POSITION 1500000
/* Caches for n_lanes lanes of n_ctx positions each, at most max_lane_rows rows of one lane in
 * a call (the sliding-window ring holds window + max_lane_rows cells). Every lane empty. */
int ncz_model_configure(ncz_model *m, size_t n_ctx, size_t n_lanes, size_t max_lane_rows);
/* Appends tokens[i] to lanes[i] at positions[i] (each lane's rows in order, continuing where
 * the lane stands) and writes each row's final hidden state, normalized (rows x n_embd). */
int ncz_model_forward(ncz_model *m, const int32_t *tokens, const int32_t *positions, const int32_t *lanes,
                      size_t rows, float *hidden);
/* logits (rows x n_vocab) from final hidden states. */
int ncz_model_head(ncz_model *m, const float *hidden, size_t rows, float *logits);
void ncz_model_reset(ncz_model *m);
int ncz_model_clear_lane(ncz_model *m, size_t lane);
int ncz_model_copy_lane(ncz_model *m, size_t source, size_t target);
/* Forget window positions [1, end) of a lane and move the later ones down by end - 1: the BOS
 * cell stays, the others keep their cached keys and values (their RoPE angles stay those of
 * their absolute positions; the BOS key is turned to stand end - 1 positions later). */
int ncz_model_shift_lane(ncz_model *m, size_t lane, size_t end);
size_t ncz_model_lane_length(const ncz_model *m, size_t lane);
size_t ncz_model_width(const ncz_model *m); /* n_embd */
size_t ncz_model_vocab(const ncz_model *m);
/* cos and sin of position `pos`'s RoPE angles (pos * inv_freq[i], in double), as floats */
void ncz_rope_trig(const double *inv_freq, size_t half, double pos, float *cs, float *sn);
/* The message of the last error, for the binding. */
const char *ncz_model_error(const ncz_model *m);

#endif /* NCZIP_ENGINE_H */
