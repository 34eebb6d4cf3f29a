/* Frequency tables: the logits -> integer frequency quantizer, and table search.
 *
 * The quantizer must give the same integers on every machine, or archives do not decode
 * elsewhere. So: every operation is a single IEEE-754 double operation in a fixed order (plain
 * sequential loops, no reassociation, no FMA: the build uses -ffp-contract=off, the pragmas
 * below cover other compilers, and ncz_selftest refuses a build that fused anyway), and no
 * libm: exp is our own polynomial with constants given by their bit patterns.
 * tests/reference_coder.py repeats these operations one by one in Python as the test oracle.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nczip.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(_MSC_VER)
#pragma fp_contract(off)
#endif

/* x87 evaluates in extended precision and would round differently; require plain doubles. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD > 0
#error "nczip needs double evaluation in double precision (FLT_EVAL_METHOD 0); on 32-bit x86 build with -msse2 -mfpmath=sse"
#endif

/* Bit patterns instead of decimal literals: C only promises decimal constants to within one
 * ulp, these are exact everywhere. */
#define LOG2E_BITS UINT64_C(0x3ff71547652b82fe) /* log2(e) rounded to nearest */

/* 2^f = sum_k a_k f^k with a_k = ln2^k / k! (Taylor, k = 0..12), each rounded to nearest,
 * listed a_0 first. Truncation error < 7e-13 relative on [0, 1]. */
static const uint64_t EXP2_POLY_BITS[13] = {
    UINT64_C(0x3ff0000000000000), UINT64_C(0x3fe62e42fefa39ef), UINT64_C(0x3fcebfbdff82c58f),
    UINT64_C(0x3fac6b08d704a0c0), UINT64_C(0x3f83b2ab6fba4e77), UINT64_C(0x3f55d87fe78a6731),
    UINT64_C(0x3f2430912f86c787), UINT64_C(0x3eeffcbfc588b0c7), UINT64_C(0x3eb62c0223a5c824),
    UINT64_C(0x3e7b5253d395e7c4), UINT64_C(0x3e3e4cf5158b8eca), UINT64_C(0x3dfe8cac7351bb25),
    UINT64_C(0x3dbc3bd650fc2986),
};

static double from_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* e^x for x in [-NCZ_CUTOFF, 0]. y = x log2(e) splits into n = floor(y) in [-93, 0] and
 * f = y - n in [0, 1] (one rounding when -1 < y < 0, which can give f = 1; exact otherwise).
 * The polynomial is evaluated in Estrin's form: its independent halves overlap in the CPU,
 * about 1.5x faster than Horner's serial chain here. With positive coefficients and f >= 0
 * every intermediate is non-decreasing in f and rounding is monotone, so exp_approx is monotone
 * in x; p(1) < 2 keeps it monotone across powers of two, and exp_approx(0) = 1 exactly. 2^n
 * is built from its exponent bits (n + 1023 >= 930: normal). */
static double exp_approx(double x, double log2e, const double *a)
{
    double y = x * log2e;
    int64_t n = (int64_t)y; /* truncates toward zero: ceil(y) for y <= 0 */
    double f, f2, f4, f8, q0, q1, q2, q3, q4, q5, r0, r1, r2, s0, s1, p;
    if ((double)n > y)
        n -= 1;
    f = y - (double)n;
    f2 = f * f;
    f4 = f2 * f2;
    f8 = f4 * f4;
    q0 = a[0] + a[1] * f;
    q1 = a[2] + a[3] * f;
    q2 = a[4] + a[5] * f;
    q3 = a[6] + a[7] * f;
    q4 = a[8] + a[9] * f;
    q5 = a[10] + a[11] * f;
    r0 = q0 + q1 * f2;
    r1 = q2 + q3 * f2;
    r2 = q4 + q5 * f2;
    s0 = r0 + r1 * f4;
    s1 = r2 + a[12] * f4;
    p = s0 + s1 * f8;
    return p * from_bits((uint64_t)(n + 1023) << 52);
}

int ncz_quantize_ws(const float *logits, size_t n, unsigned precision, uint32_t *freq_out,
                    double *work)
{
    uint64_t total, budget, sum;
    double m, s, scale, log2e, a[13];
    float mf = -INFINITY;
    size_t i, argmax = 0;
    int64_t diff, top;

    if (precision < NCZ_MIN_PRECISION || precision > NCZ_MAX_PRECISION)
        return NCZ_E_PRECISION;
    total = (uint64_t)1 << precision;
    /* budget = total - n >= n: every symbol has room for its minimum of 1 plus a share. */
    if (n == 0 || n > total / 2)
        return NCZ_E_ALPHABET;
    budget = total - n;

    /* 1. The maximum, ignoring NaN (v > mf is false for NaN), then its first index. Two simple
     * loops are faster than one that tracks the index. */
    for (i = 0; i < n; i++) {
        float v = logits[i];
        mf = v > mf ? v : mf;
    }
    while (argmax < n && logits[argmax] != mf)
        argmax++;
    if (argmax == n) /* only NaN logits: nothing equals mf = -inf */
        argmax = 0;
    m = mf;

    /* 2. Weights w_i = e^(l_i - m) in [0, 1], and their sum in index order. logits is not read
     * after this loop, so freq_out may alias it. */
    s = 0.0;
    if (m == -INFINITY) {
        for (i = 0; i < n; i++) /* all -inf or NaN: every symbol equally likely */
            work[i] = 1.0;
        s = (double)n;
    } else if (m == INFINITY) {
        for (i = 0; i < n; i++) { /* the +inf logits share the mass, the rest is -inf */
            double w = (logits[i] == INFINITY) ? 1.0 : 0.0;
            work[i] = w;
            s += w;
        }
    } else {
        log2e = from_bits(LOG2E_BITS);
        for (i = 0; i < 13; i++)
            a[i] = from_bits(EXP2_POLY_BITS[i]);
        for (i = 0; i < n; i++) {
            double x = (double)logits[i] - m;
            /* false for x < -CUTOFF, and for NaN logits (x is NaN); -inf gives x = -inf. */
            double w = (x >= -NCZ_CUTOFF) ? exp_approx(x, log2e, a) : 0.0;
            work[i] = w;
            s += w;
        }
    }

    /* 3. Shares of the budget, one scale for all. s >= 1: the maximum has weight 1. */
    scale = (double)budget / s;
    sum = 0;
    for (i = 0; i < n; i++) {
        /* 0 <= w * scale <= budget (1 + tiny) < 2^32: the cast truncates, = floor. Via int64:
         * x86-64 has no direct double -> uint64 instruction. */
        uint32_t f = 1u + (uint32_t)(int64_t)(work[i] * scale);
        freq_out[i] = f;
        sum += f;
    }

    /* 4. The rounding difference goes to the first maximum. It stays >= 1: s <= n (n weights
     * <= 1), so scale >= budget / n >= 1 and the maximum's frequency is >= 2 before the
     * correction. The correction is the floor loss (>= 0) minus the rounding excess of the
     * products and sums, which is at most budget * (n + 1) * 2^-53 < 1 for n < 2^22 at any
     * precision; so the maximum only gains. The check keeps a bad table from ever leaving. */
    diff = (int64_t)total - (int64_t)sum;
    top = (int64_t)freq_out[argmax] + diff;
    if (top < 1 || top > (int64_t)total)
        return NCZ_E_INTERNAL;
    freq_out[argmax] = (uint32_t)top;
    return NCZ_OK;
}

int ncz_quantize(const float *logits, size_t n, unsigned precision, uint32_t *freq_out)
{
    double *work;
    int st;
    if (precision < NCZ_MIN_PRECISION || precision > NCZ_MAX_PRECISION)
        return NCZ_E_PRECISION;
    if (n == 0 || n > ((uint64_t)1 << precision) / 2)
        return NCZ_E_ALPHABET;
    work = (double *)malloc(n * sizeof(double));
    if (work == NULL)
        return NCZ_E_NOMEM;
    st = ncz_quantize_ws(logits, n, precision, freq_out, work);
    free(work);
    return st;
}

size_t ncz_find_symbol(const uint32_t *freq, size_t n, uint32_t target, uint32_t *cum_out)
{
    uint64_t cum = 0; /* 64-bit: a bad table cannot wrap around and match twice */
    size_t i;
    for (i = 0; i < n; i++) {
        uint64_t next = cum + freq[i];
        if (target < next) {
            *cum_out = (uint32_t)cum;
            return i;
        }
        cum = next;
    }
    return n;
}

uint32_t ncz_cum_of(const uint32_t *freq, size_t n, size_t s)
{
    uint32_t cum = 0;
    size_t i;
    if (s > n)
        s = n;
    for (i = 0; i < s; i++)
        cum += freq[i];
    return cum;
}

/* Sum of the table, stopping once it passes 2^precision (so it cannot overflow). */
static int table_sums_to(const uint32_t *freq, size_t n, unsigned precision)
{
    uint64_t total = (uint64_t)1 << precision, sum = 0;
    size_t i;
    for (i = 0; i < n && sum <= total; i++)
        sum += freq[i];
    return sum == total;
}

int ncz_encode_freqs(ncz_encoder *e, const uint32_t *freq, size_t n, size_t symbol,
                     unsigned precision)
{
    if (precision < NCZ_MIN_PRECISION || precision > NCZ_MAX_PRECISION)
        return NCZ_E_PRECISION;
    if (symbol >= n)
        return NCZ_E_SYMBOL;
    if (!table_sums_to(freq, n, precision))
        return NCZ_E_TABLE;
    if (freq[symbol] == 0)
        return NCZ_E_ZERO_FREQ;
    return ncz_encode(e, ncz_cum_of(freq, n, symbol), freq[symbol], precision);
}

int ncz_decode_freqs(ncz_decoder *d, const uint32_t *freq, size_t n, unsigned precision,
                     size_t *symbol_out)
{
    uint32_t target, cum;
    size_t s;
    int st;
    if (precision < NCZ_MIN_PRECISION || precision > NCZ_MAX_PRECISION)
        return NCZ_E_PRECISION;
    if (!table_sums_to(freq, n, precision))
        return NCZ_E_TABLE;
    st = ncz_decoder_target(d, precision, &target);
    if (st != NCZ_OK)
        return st;
    s = ncz_find_symbol(freq, n, target, &cum);
    if (s >= n) /* cannot happen for a table summing to 2^precision > target */
        return NCZ_E_INTERNAL;
    st = ncz_decoder_advance(d, cum, freq[s], precision);
    if (st != NCZ_OK)
        return st;
    *symbol_out = s;
    return NCZ_OK;
}

int ncz_encode_logits(ncz_encoder *e, const float *logits, size_t n, size_t symbol,
                      unsigned precision, uint32_t *freq_ws, double *work)
{
    int st;
    if (symbol >= n) /* checked first: a bad symbol must not cost a quantization */
        return n == 0 ? NCZ_E_ALPHABET : NCZ_E_SYMBOL;
    st = ncz_quantize_ws(logits, n, precision, freq_ws, work);
    if (st != NCZ_OK)
        return st;
    return ncz_encode(e, ncz_cum_of(freq_ws, n, symbol), freq_ws[symbol], precision);
}

int ncz_decode_logits(ncz_decoder *d, const float *logits, size_t n, unsigned precision,
                      uint32_t *freq_ws, double *work, size_t *symbol_out)
{
    uint32_t target, cum;
    size_t s;
    int st = ncz_decoder_target(d, precision, &target);
    if (st != NCZ_OK)
        return st;
    st = ncz_quantize_ws(logits, n, precision, freq_ws, work);
    if (st != NCZ_OK)
        return st;
    s = ncz_find_symbol(freq_ws, n, target, &cum);
    if (s >= n)
        return NCZ_E_INTERNAL;
    st = ncz_decoder_advance(d, cum, freq_ws[s], precision);
    if (st != NCZ_OK)
        return st;
    *symbol_out = s;
    return NCZ_OK;
}

double ncz_ideal_bits(const float *logits, size_t n, size_t symbol)
{
    double m = -INFINITY, s = 0.0, xs;
    size_t i, ninf = 0;
    if (symbol >= n)
        return -1.0;
    for (i = 0; i < n; i++)
        if (logits[i] > m)
            m = logits[i];
    if (m == -INFINITY) /* all -inf or NaN: uniform, like the quantizer */
        return log2((double)n);
    xs = logits[symbol];
    if (m == INFINITY) {
        for (i = 0; i < n; i++)
            ninf += logits[i] == INFINITY;
        return xs == INFINITY ? log2((double)ninf) : INFINITY;
    }
    if (!(xs > -INFINITY)) /* -inf or NaN */
        return INFINITY;
    for (i = 0; i < n; i++) {
        double x = (double)logits[i] - m;
        if (x == x) /* NaN counts as -inf: contributes 0 */
            s += exp(x);
    }
    return (m + log(s) - xs) / log(2.0);
}

/* Import-time check that this build computes the quantizer bit for bit like the reference. A
 * build that fuses multiply-adds (FMA contraction, e.g. GCC's default -ffp-contract=fast with
 * -march=haswell or on aarch64) changes ~1 weight in 6 in its last bit, which would now and then
 * move a frequency and make archives undecodable elsewhere: better to refuse to load. The input
 * is 256 logits from xorshift32 (exact in float32) plus NaN, -inf and a tie for the maximum; the
 * expected FNV-1a hash of all weight bits and frequencies comes from tests/reference_coder.py. */
#define SELFTEST_N 256
#define SELFTEST_HASH UINT64_C(0xe4a1537cd1d72eec)

static uint64_t fnv1a(uint64_t h, uint64_t v, int bytes)
{
    int i;
    for (i = 0; i < bytes; i++) {
        h ^= (v >> (8 * i)) & 0xFF;
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

int ncz_selftest(void)
{
    /* Called through a volatile pointer, so the compiler can neither inline it nor fold the
     * computation at compile time (folding would skip the FMA it may emit for the real code). */
    int (*volatile quantize)(const float *, size_t, unsigned, uint32_t *, double *) =
        ncz_quantize_ws;
    float logits[SELFTEST_N];
    double work[SELFTEST_N];
    uint32_t freq[SELFTEST_N], x = 2463534242u;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    size_t i;
    for (i = 0; i < SELFTEST_N; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        /* 23-bit integer / 2^17: exact in float32, in [-32, 32) */
        logits[i] = (float)((int32_t)(x >> 9) - (int32_t)(1 << 22)) / 131072.0f;
    }
    logits[7] = NAN;
    logits[8] = -INFINITY;
    logits[9] = 40.0f; /* the maximum, tied at 200 */
    logits[200] = 40.0f;
    if (quantize(logits, SELFTEST_N, 31, freq, work) != NCZ_OK)
        return NCZ_E_INTERNAL;
    for (i = 0; i < SELFTEST_N; i++) {
        uint64_t bits;
        memcpy(&bits, &work[i], sizeof bits);
        h = fnv1a(h, bits, 8);
        h = fnv1a(h, freq[i], 4);
    }
    return h == SELFTEST_HASH ? NCZ_OK : NCZ_E_INTERNAL;
}
