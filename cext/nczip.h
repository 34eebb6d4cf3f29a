/* nczip C core: a 64-bit range coder and the logits -> frequency-table quantizer.
 *
 * Plain C99, no Python.h: every function works on (pointer, length) and returns a status code;
 * module.c is the only file that knows about Python. Everything here is deterministic: the same
 * inputs give the same bytes on every IEEE-754 platform (see cdf.c for the float side).
 *
 * Coding model: a symbol is an interval [cum, cum + freq) of a total 2^precision, precision in
 * 1..31. The coder keeps range in [2^56, 2^64), so the per-step scale range >> precision is at
 * least 2^25 and truncation wastes less than 2^-24 of the range.
 */
#ifndef NCZIP_H
#define NCZIP_H

#include <stddef.h>
#include <stdint.h>

#define NCZ_MIN_PRECISION 1u
#define NCZ_MAX_PRECISION 31u

/* The O(vocabulary) loops run once or twice per token over 262,144 entries. NCZ_HOT compiles a
 * function for several x86-64 levels and picks one at load time (GCC's target_clones): with
 * AVX-512 the ensemble's decode step took 0.72 ms instead of 1.52 (measured on alice29). The
 * bits cannot differ: the loops are integer arithmetic and elementwise float32 operations,
 * never contracted into FMA (-ffp-contract=off) nor reassociated (no -ffast-math). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define NCZ_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NCZ_HOT
#endif

/* Status codes. 0 is success; module.c turns the others into exceptions in one place. */
enum {
    NCZ_OK = 0,
    NCZ_E_PRECISION,  /* precision outside 1..31 */
    NCZ_E_CUM,        /* cum >= 2^precision */
    NCZ_E_FREQ,       /* freq == 0 or cum + freq > 2^precision */
    NCZ_E_SYMBOL,     /* symbol index >= alphabet size */
    NCZ_E_ALPHABET,   /* quantizer: n == 0 or n > 2^precision / 2 */
    NCZ_E_TABLE,      /* frequency table does not sum to exactly 2^precision */
    NCZ_E_ZERO_FREQ,  /* the symbol to encode has frequency 0 in its table */
    NCZ_E_NOMEM,      /* allocation failed */
    NCZ_E_CORRUPT,    /* decoder: the stream is inconsistent with the model (corrupt input) */
    NCZ_E_INTERNAL,   /* an invariant the code relies on was broken: a bug, never expected */
    NCZ_E_PARAMS      /* ensemble: parameters out of range, or a call out of order */
};

/* ---- range coder (rangecoder.c) ---- */

typedef struct {
    uint64_t low;
    uint64_t range;
    uint8_t *buf; /* malloc'ed output; bytes already written may still change by a carry */
    size_t len;
    size_t cap;
} ncz_encoder;

typedef struct {
    const uint8_t *data; /* borrowed: must outlive the decoder */
    size_t len;
    size_t pos;       /* bytes consumed from data, <= len */
    uint64_t overrun; /* zero bytes supplied past the end of data */
    uint64_t range;
    uint64_t value;   /* code - low; a consistent stream keeps value < range */
} ncz_decoder;

void ncz_encoder_init(ncz_encoder *e);
void ncz_encoder_free(ncz_encoder *e);
/* Codes the interval [cum, cum + freq) of 2^precision. On error the state is unchanged. */
int ncz_encode(ncz_encoder *e, uint64_t cum, uint64_t freq, unsigned precision);
/* Appends the shortest tail that identifies the final interval; the result is e->buf[0..len).
 * Nothing may be encoded afterwards. */
int ncz_encoder_finish(ncz_encoder *e);

void ncz_decoder_init(ncz_decoder *d, const uint8_t *data, size_t len);
/* The position of the code inside the current range, in units of 2^-precision of it:
 * the symbol to decode is the one with cum <= target < cum + freq. */
int ncz_decoder_target(const ncz_decoder *d, unsigned precision, uint32_t *target);
/* Consumes the symbol [cum, cum + freq); NCZ_E_CORRUPT if the code is not inside it. */
int ncz_decoder_advance(ncz_decoder *d, uint64_t cum, uint64_t freq, unsigned precision);

/* ---- a team of two threads for O(vocabulary) loops (team.c) ---- */

typedef struct ncz_team ncz_team;
/* fn(arg, lo, hi, part) handles entries [lo, hi); part 0 is the caller's, part 1 the helper's. */
typedef void (*ncz_part_fn)(void *arg, size_t lo, size_t hi, int part);
/* A helper thread; NULL where threads are unavailable (then every split runs in the caller). */
ncz_team *ncz_team_new(void);
void ncz_team_free(ncz_team *t);
/* Runs fn over [0, n) in two parts, [0, mid) here and [mid, n) on the helper, and returns when
 * both are done. Without a team (or for short loops) both parts run here, the second empty. */
void ncz_team_split(ncz_team *t, ncz_part_fn fn, void *arg, size_t n);

/* ---- frequency tables and the quantizer (cdf.c) ---- */

/* Symbol s with cum_s <= target < cum_s + freq_s (writes cum_s), or n if target >= sum. */
size_t ncz_find_symbol(const uint32_t *freq, size_t n, uint32_t target, uint32_t *cum_out);
/* freq[0] + ... + freq[s - 1] (s is clamped to n); meaningful for tables summing to < 2^32.
 * team: NULL, or a team to split the sum with (same result). */
uint32_t ncz_cum_of(ncz_team *team, const uint32_t *freq, size_t n, size_t s);

/* Encodes / decodes one symbol against an explicit table, which must sum to exactly
 * 2^precision (checked, O(n)). */
int ncz_encode_freqs(ncz_encoder *e, const uint32_t *freq, size_t n, size_t symbol,
                     unsigned precision);
int ncz_decode_freqs(ncz_decoder *d, const uint32_t *freq, size_t n, unsigned precision,
                     size_t *symbol_out);

/* float32 logits -> frequencies, each >= 1, summing to exactly 2^precision; needs
 * 1 <= n <= 2^precision / 2. Bit-identical on every IEEE-754 platform. freq_out may alias
 * logits; no other memory is used. */
int ncz_quantize(const float *logits, size_t n, unsigned precision, uint32_t *freq_out);

/* The largest of v[0..n) ignoring NaN (-inf if none), bit for bit a sequential pass's. */
float ncz_max_ignoring_nan(const float *v, size_t n);

/* One C call per token: quantize into freq_ws (n uint32), then code. */
int ncz_encode_logits(ncz_encoder *e, const float *logits, size_t n, size_t symbol,
                      unsigned precision, uint32_t *freq_ws);
int ncz_decode_logits(ncz_decoder *d, const float *logits, size_t n, unsigned precision,
                      uint32_t *freq_ws, size_t *symbol_out);

/* The quantizer for integer scores in 1/256-bit log steps (the ensemble's mixed scores):
 * weight 2^(-(max - score) / 256), then the same shares as ncz_quantize. score may not alias
 * freq_out. team: NULL, or a team to split its passes with (the integers are the same). */
int ncz_quantize_steps(ncz_team *team, const int32_t *score, size_t n, unsigned precision,
                       uint32_t *freq_out);
/* The quantizer's constants, shared with the ensemble: 2^(31 - j/256) for j in 0..255, and
 * 256/ln 2 as float32. */
extern const uint32_t ncz_pow2_frac[256];
float ncz_step_scale(void);

/* Diagnostics only, never used for coding (uses libm): -log2 softmax(logits)[symbol], with the
 * quantizer's conventions (NaN = -inf; all -inf = uniform; +inf logits share all the mass).
 * Returns a negative value if n == 0 or symbol >= n. */
double ncz_ideal_bits(const float *logits, size_t n, size_t symbol);

/* Checks that this build computes the quantizer's reference values bit for bit (it fails when
 * the compiler fused multiply-adds or used extended precision). NCZ_OK or NCZ_E_INTERNAL. */
int ncz_selftest(void);

/* ---- the ensemble (ensemble.c) ---- */

#define NCZ_ENS_MAX_ORDERS 6

/* Every number that changes the ensemble's predictions; all of them go into the archive. */
typedef struct {
    int orders;       /* token n-gram orders 1..orders, 0..6 */
    int ngram_bits;   /* log2 of the buckets per order, 8..24 */
    int match_min;    /* tokens of context a match needs, 2..32; 0 = no match model */
    int match_bits;   /* log2 of the match table's entries, 8..26 */
    int32_t mix_rate; /* mixer learning rate, Q16 per step of gradient (0..65536) */
    int32_t bias_rate; /* bias head learning rate, 1/65536 bit (0..2^20) */
    int32_t w_ngram;  /* initial mixer weights, Q16 (the LLM's is 1) */
    int32_t w_match;
} ncz_ens_params;

typedef struct ncz_ensemble ncz_ensemble;

int ncz_ens_check_params(const ncz_ens_params *p);
/* A fresh ensemble for one segment: `lanes` lanes over a document of doc_len tokens. */
int ncz_ens_new(const ncz_ens_params *p, size_t vocab, int lanes, size_t doc_len,
                ncz_ensemble **out);
void ncz_ens_free(ncz_ensemble *e);
/* threads > 1: split the O(vocabulary) passes with a helper thread (same integers either way).
 * Returns 1 if a helper runs. */
int ncz_ens_use_threads(ncz_ensemble *e, int threads);
/* Every lane starts from lane 0's history (after the primer, as the LLM's lanes do). */
void ncz_ens_fan_out(ncz_ensemble *e);
/* The mixed frequency table (sum 2^precision, every entry >= 1) for the token at doc position
 * pos in lane `lane`, given the LLM's logits. Must be followed by ncz_ens_update. */
int ncz_ens_prepare(ncz_ensemble *e, int lane, size_t pos, const float *logits, size_t n,
                    unsigned precision, uint32_t *freq_out);
/* Learns the coded token y; logits and freq are those of the prepare call. */
int ncz_ens_update(ncz_ensemble *e, size_t y, const float *logits, const uint32_t *freq,
                   unsigned precision);
/* prepare + code + update in one call. */
int ncz_ens_encode(ncz_ensemble *e, ncz_encoder *enc, int lane, size_t pos,
                   const float *logits, size_t n, size_t symbol, unsigned precision,
                   uint32_t *freq_ws);
int ncz_ens_decode(ncz_ensemble *e, ncz_decoder *dec, int lane, size_t pos,
                   const float *logits, size_t n, unsigned precision, uint32_t *freq_ws,
                   size_t *symbol_out);
/* prepare + update without a coder: the symbol's frequency, for measurements. */
int ncz_ens_measure(ncz_ensemble *e, int lane, size_t pos, const float *logits, size_t n,
                    size_t symbol, unsigned precision, uint32_t *freq_ws, uint32_t *freq_out);

/* ---- the output head of our own (head.c) ---- */

/* logits out[r][v] (rows x n_vocab, row-major) for v in groups [g0, g1) of 16, from the packed
 * Q8_0 weights (layout in head.c) and float32 hidden states (rows x n_embd). Deterministic:
 * exact integer block dot products, then a fixed order of float32 operations; `portable` forces
 * the plain C loop, which gives the same bits as the SIMD kernel. */
int ncz_head_q8(const int8_t *packed, const int32_t *wsum, const float *dw, size_t n_vocab, size_t n_embd,
                const float *hidden, size_t rows, size_t g0, size_t g1, float *out, int portable);
/* 1 when this CPU runs the AVX-512 VNNI kernel, 0 when only the portable loop is available. */
int ncz_head_fast_kernel(void);

/* State for ncz_capture_callback; ggml's accessors are passed in, so no ggml header is needed. */
typedef struct {
    const char *(*get_name)(const void *tensor);
    void *(*get_data)(const void *tensor);
    size_t (*nbytes)(const void *tensor);
    uint8_t *buf;
    size_t cap;
    size_t len;
    int32_t overflow;
    int32_t enabled; /* 0: ask for nothing, so the graph runs as without a callback */
} ncz_capture;
/* A ggml_backend_sched_eval_callback: copies "result_norm" into the capture and stops the graph
 * there (llama.cpp's own head does not run). */
_Bool ncz_capture_callback(void *tensor, _Bool ask, void *user_data);

/* A ggml_log_callback that drops every message. llama.cpp logs from inside llama_decode (each
 * K-shift, each graph reserve); a Python callback there would run Python code in a ctypes frame,
 * where an exception raised by a signal handler (SIGTERM) is printed and swallowed. */
void ncz_discard_log(int level, const char *text, void *user_data);

#endif /* NCZIP_H */
