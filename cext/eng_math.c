/* The engine's own elementary functions and conversions, defined by IEEE operations alone.
 *
 * libm's expf, sinf or powf differ between C libraries and versions by an ulp here and there;
 * an archive cannot depend on that. These functions are built from +, -, *, / and bit
 * manipulation in a fixed order, so they give the same bits everywhere (with the float
 * environment of ncz_fpenv_enter). The SIMD kernels repeat ncz_expf's steps operation by
 * operation (eng_attn.c); a test compares them.
 */
#include <string.h>

#include "engine.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

static inline uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint64_t bits_of_d(double f)
{
    uint64_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline double double_of(uint64_t u)
{
    double f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- float environment ---- */

unsigned ncz_fpenv_enter(void)
{
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE2__))
    unsigned saved = _mm_getcsr();
    /* all exceptions masked, round to nearest, FTZ and DAZ off: the reset state */
    _mm_setcsr(0x1F80u);
    return saved;
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    /* RMode (bits 22-23) to nearest, FZ (24) and FZ16 (19) off, AH (1) and FIZ (0) off */
    uint64_t want = fpcr & ~((uint64_t)3 << 22 | (uint64_t)1 << 24 | (uint64_t)1 << 19 | 3u);
    if (want != fpcr)
        __asm__ volatile("msr fpcr, %0" : : "r"(want));
    return (unsigned)fpcr;
#else
    return 0;
#endif
}

void ncz_fpenv_leave(unsigned saved)
{
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE2__))
    _mm_setcsr(saved);
#elif defined(__aarch64__)
    uint64_t fpcr = saved;
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr));
#else
    (void)saved;
#endif
}

/* ---- doubles, for RoPE's angles ----
 * Only used a few hundred times per token, so plain series with generous degrees; the result
 * is rounded to float afterwards, where these errors (below 1e-15) vanish. */
#define LN2_D 0.6931471805599453094
#define LN2_HI_D 6.93147180369123816490e-01 /* fdlibm's split of ln 2: hi has 32 bits */
#define LN2_LO_D 1.90821492927058770002e-10
#define ROUND_D 6755399441055744.0           /* 1.5 * 2^52 */

double ncz_exp_d(double x)
{
    if (x < -700.0)
        return 0.0;
    if (x > 700.0)
        x = 700.0;
    double k = x * (1.0 / LN2_D);
    k = k + ROUND_D;
    k = k - ROUND_D;
    double r = x - k * LN2_HI_D;
    r = r - k * LN2_LO_D;
    /* Taylor series to degree 20: |r| <= 0.35, so the remainder is below 1e-28 */
    double term = 1.0, sum = 1.0;
    for (int i = 1; i <= 20; i++) {
        term = term * r / (double)i;
        sum = sum + term;
    }
    int64_t e = (int64_t)k + 1023;
    return sum * double_of((uint64_t)e << 52);
}

double ncz_log_d(double x)
{
    /* x = m 2^k with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1) */
    if (!(x > 0.0))
        return -1e308;
    uint64_t u = bits_of_d(x);
    int64_t k = (int64_t)((u >> 52) & 0x7FF) - 1023;
    double m = double_of((u & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    if (m > 1.41421356237309504880) {
        m = m * 0.5;
        k = k + 1;
    }
    double s = (m - 1.0) / (m + 1.0);
    double s2 = s * s, power = s, sum = 0.0;
    for (int i = 1; i <= 41; i += 2) { /* |s| <= 0.1716: s^43 / 43 is below 1e-34 */
        sum = sum + power / (double)i;
        power = power * s2;
    }
    return 2.0 * sum + (double)k * LN2_D;
}

#define PIO2_1 1.57079632673412561417e+00  /* first 33 bits of pi/2 */
#define PIO2_2 6.07710050630396597660e-11  /* next 33 bits */
#define PIO2_3 2.02226624871116645580e-21  /* the rest */
#define TWO_OVER_PI 6.36619772367581382433e-01

void ncz_sincos_d(double x, double *s_out, double *c_out)
{
    /* x in [0, 2^20]: k = round(2x / pi) < 2^20, so k * PIO2_1 and k * PIO2_2 are exact */
    double k = x * TWO_OVER_PI;
    k = k + ROUND_D;
    k = k - ROUND_D;
    double r = x - k * PIO2_1;
    r = r - k * PIO2_2;
    r = r - k * PIO2_3;
    /* |r| <= pi/4: Taylor series to degree 21 / 22, remainders below 1e-25 */
    double r2 = r * r;
    double term = r, s = r;
    for (int i = 2; i <= 20; i += 2) {
        term = -term * r2 / (double)(i * (i + 1));
        s = s + term;
    }
    term = 1.0;
    double c = 1.0;
    for (int i = 1; i <= 21; i += 2) {
        term = -term * r2 / (double)(i * (i + 1));
        c = c + term;
    }
    switch ((int64_t)k & 3) {
    case 0: *s_out = s; *c_out = c; break;
    case 1: *s_out = c; *c_out = -s; break;
    case 2: *s_out = -s; *c_out = -c; break;
    default: *s_out = -c; *c_out = s; break;
    }
}

/* ---- halves ---- */

float ncz_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu;
    uint32_t m = h & 0x3FFu;
    if (e == 0x1F)
        return float_of(sign | 0x7F800000u | (m << 13));
    if (e != 0)
        return float_of(sign | ((e + 112u) << 23) | (m << 13));
    if (m == 0)
        return float_of(sign);
    /* subnormal: m 2^-24 with its top bit at p (0..9) */
    uint32_t p = 9;
    while (!(m & (1u << p)))
        p--;
    return float_of(sign | ((p + 103u) << 23) | ((m << (23 - p)) & 0x7FFFFFu));
}

uint16_t ncz_float_to_half(float f)
{
    uint32_t x = bits_of(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) /* inf, NaN (quiet) */
        return (uint16_t)(sign | (ax > 0x7F800000u ? 0x7E00u : 0x7C00u));
    if (ax >= 0x477FF000u) /* 65520 and above round to infinity */
        return (uint16_t)(sign | 0x7C00u);
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half, or zero */
        if (ax < 0x33000000u) /* at most 2^-25: rounds to zero */
            return (uint16_t)sign;
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126u - e;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = (ax - 0x38000000u) >> 13, rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is the correct rounding */
    return (uint16_t)(sign | h);
}

static float half_table[65536];
static int half_table_ready;

const float *ncz_half_table(void)
{
    if (!__atomic_load_n(&half_table_ready, __ATOMIC_ACQUIRE)) {
        /* idempotent: threads that race here write the same values */
        for (uint32_t h = 0; h < 65536; h++)
            half_table[h] = ncz_half_to_float((uint16_t)h);
        __atomic_store_n(&half_table_ready, 1, __ATOMIC_RELEASE);
    }
    return half_table;
}

float ncz_sum16(const float p[16])
{
    float a[8], b[4];
    for (int i = 0; i < 8; i++)
        a[i] = p[i] + p[i + 8];
    for (int i = 0; i < 4; i++)
        b[i] = a[i] + a[i + 4];
    float c0 = b[0] + b[2], c1 = b[1] + b[3];
    return c0 + c1;
}

/* ---- which kernels this CPU runs ---- */

int ncz_kernel_runs(int k)
{
    switch (k) {
    case NCZ_KERNEL_PORTABLE:
        return 1;
#if defined(__GNUC__) && defined(__x86_64__)
    case NCZ_KERNEL_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    case NCZ_KERNEL_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("f16c");
#endif
    default:
        return 0;
    }
}

int ncz_kernel_best(void)
{
    for (int k = NCZ_KERNEL_AVX512; k > NCZ_KERNEL_PORTABLE; k--)
        if (ncz_kernel_runs(k))
            return k;
    return NCZ_KERNEL_PORTABLE;
}
