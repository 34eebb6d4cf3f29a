/* Frequency tables: the logits -> integer frequency quantizer, and table search.
 *
 * The quantizer must give the same integers on every machine, or archives do not decode
 * elsewhere. So its only float operations are two float32 operations per logit in a fixed order
 * (below: a subtraction and a multiplication; the build uses -ffp-contract=off, the pragmas
 * below cover other compilers, and ncz_selftest refuses a build that fused anyway); the rest is
 * integer arithmetic on a table of powers of two, and no libm is involved. ncz_ideal_bits, a
 * measurement that never reaches an archive, may use faster, looser float code.
 * tests/reference_coder.py repeats the quantizer's operations one by one in Python as the test
 * oracle. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nczip.h"
#include "vocab_simd.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(_MSC_VER)
#pragma fp_contract(off)
#endif

/* x87 evaluates in extended precision and would round differently; require plain doubles. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD > 0
#error "nczip needs double evaluation in double precision (FLT_EVAL_METHOD 0); on 32-bit x86 build with -msse2 -mfpmath=sse"
#endif

/* The quantizer works in fixed point: a logit's distance below the maximum becomes an integer
 * number of 1/256-bit steps, k = trunc((m - l) * 256 log2(e)), computed with exactly two float32
 * operations (a subtraction and a multiplication: nothing a compiler can fuse or reassociate).
 * Its weight is 2^(31 - k/256), read from a 256-entry table and shifted: w = POW2_FRAC[k % 256]
 * >> (k / 256). Everything after k is integer arithmetic, exact on every platform and in any
 * order. The 1/256-bit steps change no probability by more than 0.27%, a coding cost below
 * 1e-5 bits per token; logits 31 bits (21.5 nats) or more below the maximum get weight 0 (a
 * shift by 31 leaves nothing of a table entry below 2^31) and keep the minimum frequency of 1,
 * which a 2^31 table would give them anyway. */
#define STEP_SCALE_BITS UINT32_C(0x43b8aa3b) /* 256 / ln 2 = 369.33, rounded to float32 */
#define LOG_STEPS_PER_BIT 256
#define LOG_STEP_LIMIT (32 * LOG_STEPS_PER_BIT) /* steps with a non-zero weight */

#define POW2_FRAC ncz_pow2_frac

/* POW2_FRAC[j] = 2^(31 - j/256), rounded to nearest (from tests/reference_coder.py). */
const uint32_t ncz_pow2_frac[LOG_STEPS_PER_BIT] = {
    2147483648u, 2141676973u, 2135885998u, 2130110682u, 2124350982u, 2118606857u,
    2112878262u, 2107165158u, 2101467502u, 2095785251u, 2090118366u, 2084466803u,
    2078830522u, 2073209480u, 2067603638u, 2062012954u, 2056437387u, 2050876895u,
    2045331439u, 2039800978u, 2034285470u, 2028784876u, 2023299156u, 2017828268u,
    2012372174u, 2006930832u, 2001504204u, 1996092249u, 1990694927u, 1985312200u,
    1979944027u, 1974590370u, 1969251188u, 1963926443u, 1958616096u, 1953320108u,
    1948038440u, 1942771053u, 1937517909u, 1932278970u, 1927054196u, 1921843549u,
    1916646992u, 1911464486u, 1906295993u, 1901141476u, 1896000896u, 1890874216u,
    1885761398u, 1880662405u, 1875577199u, 1870505744u, 1865448001u, 1860403934u,
    1855373507u, 1850356681u, 1845353420u, 1840363688u, 1835387448u, 1830424663u,
    1825475297u, 1820539314u, 1815616678u, 1810707353u, 1805811301u, 1800928489u,
    1796058879u, 1791202437u, 1786359126u, 1781528911u, 1776711757u, 1771907628u,
    1767116489u, 1762338305u, 1757573041u, 1752820662u, 1748081133u, 1743354420u,
    1738640488u, 1733939301u, 1729250827u, 1724575029u, 1719911875u, 1715261330u,
    1710623359u, 1705997930u, 1701385007u, 1696784557u, 1692196547u, 1687620943u,
    1683057710u, 1678506817u, 1673968228u, 1669441912u, 1664927835u, 1660425963u,
    1655936265u, 1651458706u, 1646993254u, 1642539877u, 1638098541u, 1633669214u,
    1629251865u, 1624846459u, 1620452965u, 1616071351u, 1611701585u, 1607343634u,
    1602997467u, 1598663052u, 1594340357u, 1590029350u, 1585730000u, 1581442275u,
    1577166143u, 1572901575u, 1568648537u, 1564406999u, 1560176931u, 1555958300u,
    1551751076u, 1547555228u, 1543370725u, 1539197537u, 1535035634u, 1530884983u,
    1526745556u, 1522617322u, 1518500250u, 1514394310u, 1510299473u, 1506215708u,
    1502142985u, 1498081275u, 1494030547u, 1489990772u, 1485961921u, 1481943963u,
    1477936870u, 1473940611u, 1469955159u, 1465980482u, 1462016553u, 1458063343u,
    1454120821u, 1450188960u, 1446267730u, 1442357104u, 1438457051u, 1434567544u,
    1430688553u, 1426820052u, 1422962010u, 1419114401u, 1415277195u, 1411450365u,
    1407633882u, 1403827719u, 1400031848u, 1396246240u, 1392470869u, 1388705706u,
    1384950723u, 1381205894u, 1377471191u, 1373746586u, 1370032052u, 1366327563u,
    1362633090u, 1358948606u, 1355274085u, 1351609500u, 1347954824u, 1344310030u,
    1340675091u, 1337049980u, 1333434672u, 1329829140u, 1326233356u, 1322647296u,
    1319070932u, 1315504238u, 1311947188u, 1308399756u, 1304861917u, 1301333643u,
    1297814910u, 1294305692u, 1290805962u, 1287315695u, 1283834865u, 1280363448u,
    1276901417u, 1273448747u, 1270005413u, 1266571390u, 1263146652u, 1259731174u,
    1256324931u, 1252927899u, 1249540052u, 1246161366u, 1242791816u, 1239431376u,
    1236080024u, 1232737732u, 1229404479u, 1226080238u, 1222764986u, 1219458698u,
    1216161350u, 1212872918u, 1209593378u, 1206322705u, 1203060876u, 1199807867u,
    1196563654u, 1193328213u, 1190101520u, 1186883552u, 1183674286u, 1180473697u,
    1177281762u, 1174098458u, 1170923762u, 1167757650u, 1164600099u, 1161451085u,
    1158310587u, 1155178580u, 1152055042u, 1148939949u, 1145833280u, 1142735011u,
    1139645120u, 1136563583u, 1133490379u, 1130425485u, 1127368878u, 1124320536u,
    1121280436u, 1118248556u, 1115224875u, 1112209370u, 1109202018u, 1106202798u,
    1103211687u, 1100228665u, 1097253708u, 1094286796u, 1091327906u, 1088377016u,
    1085434106u, 1082499153u, 1079572136u, 1076653033u,
};

static float float_from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The fixed-point weight of logit v, given the maximum mf (finite). 0 for NaN, -inf, and logits
 * 31 bits or more below the maximum; 2^31 for the maximum itself. Branch-free (a select, a
 * lookup, a shift): about a third of a vocabulary's logits fall within 32 bits of the maximum,
 * so a branch here would be mispredicted all the time. */
static uint32_t weight_of(float v, float mf, float step_scale)
{
    float steps = (mf - v) * step_scale; /* >= 0, or NaN; +inf when mf - v overflows */
    /* false for NaN: clamped to the limit like any too-distant logit */
    uint32_t k = (uint32_t)(steps < (float)LOG_STEP_LIMIT ? steps : (float)LOG_STEP_LIMIT);
    /* k <= 8192: a shift of up to 32 on 64 bits; 2^31 >> 32 = 0 */
    return (uint32_t)((uint64_t)POW2_FRAC[k % LOG_STEPS_PER_BIT] >> (k / LOG_STEPS_PER_BIT));
}

/* The largest of v[0..n), NaN ignored, -inf when there is none: the value of the sequential
 * `m = v[i] > m ? v[i] : m` from m = -inf. Vector lanes take the maximum of their own elements
 * (a maximum is exact in any order, and the select keeps NaN out as the sequential loop does);
 * the one thing order decides is a zero maximum's sign, the first zero's, so that is looked up.
 * The sequential loop is one chain of dependent maxss, 4 cycles a logit: 0.2 ms for a
 * 262,144-token vocabulary. */
typedef float ncz_f32x8 __attribute__((vector_size(32)));
typedef int32_t ncz_i32x8 __attribute__((vector_size(32)));

/* m = x where x > m, lane by lane (a macro: a function returning a vector changes the ABI) */
#define LARGER8(x, m) ((ncz_f32x8)(((ncz_i32x8)(x) & ((x) > (m))) | ((ncz_i32x8)(m) & ~((x) > (m)))))

NCZ_HOT float ncz_max_ignoring_nan(const float *v, size_t n)
{
    const ncz_f32x8 none = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    ncz_f32x8 m0 = none, m1 = none, m2 = none, m3 = none; /* four chains: no waiting on one */
    float m = -INFINITY;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        ncz_f32x8 x0, x1, x2, x3;
        memcpy(&x0, v + i, sizeof x0);
        memcpy(&x1, v + i + 8, sizeof x1);
        memcpy(&x2, v + i + 16, sizeof x2);
        memcpy(&x3, v + i + 24, sizeof x3);
        m0 = LARGER8(x0, m0);
        m1 = LARGER8(x1, m1);
        m2 = LARGER8(x2, m2);
        m3 = LARGER8(x3, m3);
    }
    m0 = LARGER8(m1, m0);
    m2 = LARGER8(m3, m2);
    m0 = LARGER8(m2, m0);
    for (int j = 0; j < 8; j++)
        m = m0[j] > m ? m0[j] : m;
    for (; i < n; i++)
        m = v[i] > m ? v[i] : m;
    if (m == 0.0f) /* +0 or -0: the first zero's */
        for (i = 0; i < n; i++)
            if (v[i] == 0.0f)
                return v[i];
    return m;
}

typedef struct {
    uint32_t *freq;
    uint64_t m_scale;
    uint64_t part_sum[2];
} shares_pass;

NCZ_HOT static void shares_part(void *arg, size_t lo, size_t hi, int part)
{
    shares_pass *a = arg;
    const uint64_t m_scale = a->m_scale;
    uint64_t sum = 0;
    size_t i;
    for (i = lo; i < hi; i++) {
        uint32_t f = 1u + (uint32_t)(((uint64_t)a->freq[i] * m_scale) >> 32);
        a->freq[i] = f;
        sum += f;
    }
    a->part_sum[part] = sum;
}

/* Steps 3 and 4 of both quantizers: integer weights w_i (in freq, summing to z >= 1) become
 * frequencies >= 1 summing to exactly total = budget + n. With a team, step 3 is split in two
 * (elementwise, and an integer sum: the same integers). */
static int shares_of_budget(ncz_team *team, uint32_t *freq_out, size_t n, uint64_t z, size_t argmax,
                            uint64_t total, uint64_t budget)
{
    uint64_t sum;
    int64_t top;
    shares_pass a;
    /* 3. Shares of the budget: f_i = 1 + floor(w_i m_scale / 2^32), m_scale = floor(budget
     * 2^32 / z). budget 2^32 < 2^63; z >= 1, and w_i m_scale <= z m_scale <= budget 2^32, so
     * nothing overflows, and the shares sum to at most budget. */
    a.freq = freq_out;
    a.m_scale = (budget << 32) / z;
    ncz_team_split(team, shares_part, &a, n);
    sum = a.part_sum[0] + a.part_sum[1];

    /* 4. What the floors left over (>= 0: at most about one per symbol with a weight, plus
     * z / 2^32) goes to the first maximum. The check keeps a bad table from ever leaving. */
    top = (int64_t)freq_out[argmax] + ((int64_t)total - (int64_t)sum);
    if (sum > total || top > (int64_t)total)
        return NCZ_E_INTERNAL;
    freq_out[argmax] = (uint32_t)top;
    return NCZ_OK;
}

NCZ_HOT int ncz_quantize(const float *logits, size_t n, unsigned precision, uint32_t *freq_out)
{
    uint64_t total, budget, z = 0;
    float mf = -INFINITY, step_scale = float_from_bits(STEP_SCALE_BITS);
    size_t i, argmax = 0;

    if (precision < NCZ_MIN_PRECISION || precision > NCZ_MAX_PRECISION)
        return NCZ_E_PRECISION;
    total = (uint64_t)1 << precision;
    /* budget = total - n >= n: every symbol has room for its minimum of 1 plus a share. */
    if (n == 0 || n > total / 2)
        return NCZ_E_ALPHABET;
    budget = total - n;

    /* 1. The maximum, ignoring NaN (v > mf is false for NaN), then its first index. Two simple
     * loops are faster than one that tracks the index. */
    mf = ncz_max_ignoring_nan(logits, n);
    while (argmax < n && logits[argmax] != mf)
        argmax++;
    if (argmax == n) /* only NaN logits: nothing equals mf = -inf */
        argmax = 0;

    /* 2. Integer weights, written into freq_out (each logit is read before its slot is
     * written, so freq_out may alias logits), and their exact sum z <= n 2^31 < 2^62. */
    if (mf == -INFINITY) { /* all -inf or NaN: every symbol equally likely */
        for (i = 0; i < n; i++)
            freq_out[i] = 1;
        z = n;
    } else if (mf == INFINITY) { /* the +inf logits share the mass, the rest is -inf */
        for (i = 0; i < n; i++) {
            uint32_t w = logits[i] == INFINITY;
            freq_out[i] = w;
            z += w;
        }
    } else {
        for (i = 0; i < n; i++) {
            uint32_t w = weight_of(logits[i], mf, step_scale);
            freq_out[i] = w;
            z += w;
        }
    }

    return shares_of_budget(NULL, freq_out, n, z, argmax, total, budget);
}

float ncz_step_scale(void)
{
    return float_from_bits(STEP_SCALE_BITS);
}

/* The passes of ncz_quantize_steps over one part of the vocabulary; the caller combines the
 * two parts' results in order (the first part's first maximum wins), which gives the integers
 * of one sequential pass. */
typedef struct {
    const int32_t *score;
    uint32_t *freq;
    int32_t top;            /* pass 2: the maximum score */
    int32_t part_top[2];    /* pass 1 */
    size_t part_first[2];   /* pass 2: the part's first index of top, or SIZE_MAX */
    uint64_t part_sum[2];   /* pass 2: the weights' sum */
} steps_pass;

NCZ_HOT static void steps_top(void *arg, size_t lo, size_t hi, int part)
{
    steps_pass *a = arg;
    int32_t top = INT32_MIN;
    size_t i;
    for (i = lo; i < hi; i++)
        top = a->score[i] > top ? a->score[i] : top;
    a->part_top[part] = top;
}

/* The first i in [lo, hi) with v[i] == x, else SIZE_MAX: eight at a time (a part without the
 * maximum is read to its end, which one element at a time took 1 cycle each). */
NCZ_HOT static size_t first_equal(const int32_t *v, size_t lo, size_t hi, int32_t x)
{
    size_t i = lo;
    for (; i + 8 <= hi; i += 8) {
        int hit = 0;
        for (int j = 0; j < 8; j++)
            hit |= v[i + (size_t)j] == x;
        if (hit)
            break;
    }
    for (; i < hi; i++)
        if (v[i] == x)
            return i;
    return SIZE_MAX;
}

int ncz_vocab_avx2(void)
{
    static int decided = -1; /* racing first calls write the same value */
    if (decided < 0) {
        const char *forced = getenv("NCZIP_KERNEL");
        int avx2 = 0;
#if NCZ_HAVE_VOCAB_AVX2
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx2");
#endif
        decided = avx2 && !(forced != NULL && strcmp(forced, "portable") == 0);
    }
    return decided;
}

#if NCZ_HAVE_VOCAB_AVX2
/* steps_weights' loop, eight at a time; returns the weights' sum, *end the first index left */
NCZ_AVX2 static uint64_t steps_weights_avx2(const int32_t *score, uint32_t *freq, size_t lo, size_t hi,
                                            int32_t top, size_t *end)
{
    const __m256i vtop = _mm256_set1_epi32(top), last = _mm256_set1_epi32(LOG_STEP_LIMIT - 1);
    __m256i z = _mm256_setzero_si256();
    size_t i = lo;
    for (; i + 8 <= hi; i += 8) {
        __m256i k = _mm256_sub_epi32(vtop, _mm256_loadu_si256((const __m256i *)(score + i)));
        __m256i w = ncz_pow2_weights8(_mm256_min_epu32(k, last));
        _mm256_storeu_si256((__m256i *)(freq + i), w);
        z = ncz_add_u32_to_u64(z, w);
    }
    *end = i;
    return ncz_sum_u64x4(z);
}
#endif

NCZ_HOT static void steps_weights(void *arg, size_t lo, size_t hi, int part)
{
    steps_pass *a = arg;
    const int32_t top = a->top;
    uint64_t z = 0;
    size_t i = lo;
#if NCZ_HAVE_VOCAB_AVX2
    if (ncz_vocab_avx2())
        z = steps_weights_avx2(a->score, a->freq, lo, hi, top, &i);
#endif
    /* The same weights as ncz_quantize, from integer steps below the top score, in 32-bit
     * lanes: top - score is in 0..2^31 (top is the maximum), and the last step with a weight
     * is LOG_STEP_LIMIT - 1 (the table's last entry >> 31 is 0, as 2^31 >> 32 is). */
    for (; i < hi; i++) {
        uint32_t k = (uint32_t)top - (uint32_t)a->score[i];
        uint32_t kk = k < LOG_STEP_LIMIT - 1 ? k : LOG_STEP_LIMIT - 1;
        uint32_t w = POW2_FRAC[kk % LOG_STEPS_PER_BIT] >> (kk / LOG_STEPS_PER_BIT);
        a->freq[i] = w;
        z += w;
    }
    a->part_first[part] = first_equal(a->score, lo, hi, top);
    a->part_sum[part] = z;
}

int ncz_quantize_steps(ncz_team *team, const int32_t *score, size_t n, unsigned precision,
                       uint32_t *freq_out)
{
    uint64_t total, budget, z;
    size_t argmax;
    steps_pass a;

    if (precision < NCZ_MIN_PRECISION || precision > NCZ_MAX_PRECISION)
        return NCZ_E_PRECISION;
    total = (uint64_t)1 << precision;
    if (n == 0 || n > total / 2)
        return NCZ_E_ALPHABET;
    budget = total - n;
    a.score = score;
    a.freq = freq_out;
    ncz_team_split(team, steps_top, &a, n);
    a.top = a.part_top[1] > a.part_top[0] ? a.part_top[1] : a.part_top[0];
    ncz_team_split(team, steps_weights, &a, n);
    z = a.part_sum[0] + a.part_sum[1];
    /* the first part's first maximum, else the second's (the top is in one of them) */
    argmax = a.part_first[0] != SIZE_MAX ? a.part_first[0] : a.part_first[1];
    if (argmax >= n || z == 0)
        return NCZ_E_INTERNAL;
    return shares_of_budget(team, freq_out, n, z, argmax, total, budget);
}

#define FIND_BLOCK 64

NCZ_HOT size_t ncz_find_symbol(const uint32_t *freq, size_t n, uint32_t target, uint32_t *cum_out)
{
    uint64_t cum = 0; /* 64-bit: a bad table cannot wrap around and match twice */
    size_t i = 0, j;
    /* Whole blocks first: a block's sum vectorizes, where the element-by-element search is one
     * long dependency chain with a branch per symbol; then the block that holds the target. */
    for (; i + FIND_BLOCK <= n; i += FIND_BLOCK) {
        uint64_t block = 0;
        for (j = 0; j < FIND_BLOCK; j++)
            block += freq[i + j];
        if (target < cum + block)
            break;
        cum += block;
    }
    for (; i < n; i++) {
        uint64_t next = cum + freq[i];
        if (target < next) {
            *cum_out = (uint32_t)cum;
            return i;
        }
        cum = next;
    }
    return n;
}

typedef struct {
    const uint32_t *freq;
    uint32_t part_sum[2];
} cum_pass;

NCZ_HOT static void cum_part(void *arg, size_t lo, size_t hi, int part)
{
    cum_pass *a = arg;
    uint32_t cum = 0;
    size_t i;
    for (i = lo; i < hi; i++)
        cum += a->freq[i];
    a->part_sum[part] = cum;
}

uint32_t ncz_cum_of(ncz_team *team, const uint32_t *freq, size_t n, size_t s)
{
    cum_pass a;
    a.freq = freq;
    ncz_team_split(team, cum_part, &a, s < n ? s : n);
    return a.part_sum[0] + a.part_sum[1]; /* modulo 2^32, as one running uint32 sum */
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
    return ncz_encode(e, ncz_cum_of(NULL, freq, n, symbol), freq[symbol], precision);
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
                      unsigned precision, uint32_t *freq_ws)
{
    int st;
    if (symbol >= n) /* checked first: a bad symbol must not cost a quantization */
        return n == 0 ? NCZ_E_ALPHABET : NCZ_E_SYMBOL;
    st = ncz_quantize(logits, n, precision, freq_ws);
    if (st != NCZ_OK)
        return st;
    return ncz_encode(e, ncz_cum_of(NULL, freq_ws, n, symbol), freq_ws[symbol], precision);
}

int ncz_decode_logits(ncz_decoder *d, const float *logits, size_t n, unsigned precision,
                      uint32_t *freq_ws, size_t *symbol_out)
{
    uint32_t target, cum;
    size_t s;
    int st = ncz_decoder_target(d, precision, &target);
    if (st != NCZ_OK)
        return st;
    st = ncz_quantize(logits, n, precision, freq_ws);
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

/* The ideal code length is a diagnostic (`-vv`, bench's LLM-ideal column): its float sums never
 * reach an archive. So these two functions alone may let GCC treat float compares and
 * conversions as non-trapping, which it needs to vectorize the clamp and the maximum below:
 * 1.48 ms a token (262,144 logits) became 0.12. */
#if defined(__GNUC__) && !defined(__clang__)
#define NCZ_DIAGNOSTIC_MATH __attribute__((optimize("no-trapping-math")))
#else
#define NCZ_DIAGNOSTIC_MATH
#endif

/* 2^t (t <= 0): a degree-6 polynomial for 2^f, f in [0, 1) (relative error < 2e-7), times 2^k
 * built in the exponent bits; t below -126 (and NaN) counts as -126, whose 2^-126 is nothing
 * next to the top logit's 1. libm's exp() on 262,144 logits cost ~2 ms a token. */
NCZ_DIAGNOSTIC_MATH static inline float ideal_exp2(float t)
{
    float x = t >= -126.0f ? t : -126.0f, scale;
    int k = (int)(x + 127.0f) - 127; /* floor: x + 127 > 0 */
    float f = x - (float)k;
    uint32_t bits = (uint32_t)(k + 127) << 23;
    memcpy(&scale, &bits, sizeof scale);
    return scale * (1.0f + f * (0.69314720f + f * (0.24022641f + f * (0.05550411f + f * (0.00961813f +
                                f * (0.00133336f + f * 0.00015404f))))));
}

NCZ_HOT NCZ_DIAGNOSTIC_MATH double ncz_ideal_bits(const float *logits, size_t n, size_t symbol)
{
    /* 16 running maxima and sums, one per vector lane; a block's sum (<= 1024) goes on in double */
    enum { LANES = 16, BLOCK = 1024 };
    const float log2e = 1.44269504f;
    float m = -INFINITY, xs, lane[LANES];
    double s = 0.0;
    size_t i, j, ninf = 0, whole = n - n % BLOCK;
    if (symbol >= n)
        return -1.0;
    for (j = 0; j < LANES; j++)
        lane[j] = -INFINITY;
    for (i = 0; i < whole; i += LANES)
        for (j = 0; j < LANES; j++)
            lane[j] = logits[i + j] > lane[j] ? logits[i + j] : lane[j]; /* NaN never wins */
    for (i = whole; i < n; i++)
        m = logits[i] > m ? logits[i] : m;
    for (j = 0; j < LANES; j++)
        m = lane[j] > m ? lane[j] : m;
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
    for (i = 0; i < whole; i += BLOCK) {
        double block = 0.0;
        for (j = 0; j < LANES; j++)
            lane[j] = 0.0f;
        for (size_t b = 0; b < BLOCK; b += LANES)
            for (j = 0; j < LANES; j++)
                lane[j] += ideal_exp2((logits[i + b + j] - m) * log2e);
        for (j = 0; j < LANES; j++)
            block += lane[j];
        s += block;
    }
    for (i = whole; i < n; i++)
        s += ideal_exp2((logits[i] - m) * log2e);
    return ((double)m - (double)xs) / log(2.0) + log2(s);
}

/* Import-time check that this build computes the quantizer bit for bit like the reference (a
 * compiler that evaluated the float32 steps in wider precision, or miscompiled the integer
 * part, would make archives undecodable elsewhere: better to refuse to load). The input is 256
 * logits from xorshift32 (exact in float32) plus NaN, -inf and a tie for the maximum; the
 * expected FNV-1a hash of the frequencies at precisions 31 and 20 comes from
 * tests/reference_coder.py. */
#define SELFTEST_N 256
#define SELFTEST_HASH UINT64_C(0xa29249c0ecbd9207)

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
     * computation at compile time. */
    int (*volatile quantize)(const float *, size_t, unsigned, uint32_t *) = ncz_quantize;
    float logits[SELFTEST_N];
    uint32_t freq[SELFTEST_N], x = 2463534242u;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    unsigned precisions[2] = {31, 20};
    size_t i, p;
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
    for (p = 0; p < 2; p++) {
        if (quantize(logits, SELFTEST_N, precisions[p], freq) != NCZ_OK)
            return NCZ_E_INTERNAL;
        for (i = 0; i < SELFTEST_N; i++)
            h = fnv1a(h, freq[i], 4);
    }
    return h == SELFTEST_HASH ? NCZ_OK : NCZ_E_INTERNAL;
}
