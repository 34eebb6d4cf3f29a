/* 64-bit range coder with byte output and carry propagation.
 *
 * The encoder keeps [low, low + range) as the current interval, with range in [2^56, 2^64) after
 * every step. low may exceed 2^64 in full precision; that overflow is a carry into the bytes
 * already written. The decoder tracks value = code - low instead of low, so it never sees carries.
 * tests/reference_coder.py is a line-by-line Python model of this file; keep them in step.
 */
#include <stdlib.h>
#include <string.h>

#include "nczip.h"

#define TOP ((uint64_t)1 << 56) /* normalize while range < TOP: one byte out per shift */

static int check_interval(uint64_t cum, uint64_t freq, unsigned precision)
{
    uint64_t total;
    if (precision < NCZ_MIN_PRECISION || precision > NCZ_MAX_PRECISION)
        return NCZ_E_PRECISION;
    total = (uint64_t)1 << precision;
    if (cum >= total)
        return NCZ_E_CUM;
    if (freq == 0 || freq > total - cum)
        return NCZ_E_FREQ;
    return NCZ_OK;
}

void ncz_encoder_init(ncz_encoder *e)
{
    e->low = 0;
    e->range = UINT64_MAX;
    e->buf = NULL;
    e->len = 0;
    e->cap = 0;
}

void ncz_encoder_free(ncz_encoder *e)
{
    free(e->buf);
    e->buf = NULL;
    e->len = e->cap = 0;
}

static int reserve(ncz_encoder *e, size_t extra)
{
    size_t cap;
    uint8_t *p;
    if (e->cap - e->len >= extra)
        return NCZ_OK;
    cap = e->cap ? e->cap : 256;
    while (cap - e->len < extra) {
        if (cap > SIZE_MAX / 2)
            return NCZ_E_NOMEM;
        cap *= 2;
    }
    p = (uint8_t *)realloc(e->buf, cap);
    if (p == NULL)
        return NCZ_E_NOMEM;
    e->buf = p;
    e->cap = cap;
    return NCZ_OK;
}

/* Adds 1 at the last written byte: trailing 0xFF bytes wrap to 0x00. The interval never grows
 * past where it started, so a 0xFF-only prefix cannot be reached; running off the front would
 * be a bug. Each carry turns a run of 0xFF into 0x00, so the work is amortized O(1) per byte. */
static int propagate_carry(ncz_encoder *e)
{
    size_t i = e->len;
    while (i > 0) {
        i--;
        if (e->buf[i] != 0xFF) {
            e->buf[i]++;
            return NCZ_OK;
        }
        e->buf[i] = 0x00;
    }
    return NCZ_E_INTERNAL;
}

int ncz_encode(ncz_encoder *e, uint64_t cum, uint64_t freq, unsigned precision)
{
    uint64_t r, step;
    int st = check_interval(cum, freq, precision);
    if (st != NCZ_OK)
        return st;
    /* range >= r * freq >= 2^25 after the update, so at most 4 bytes come out below. Reserving
     * first keeps the state unchanged when the allocation fails. */
    st = reserve(e, 4);
    if (st != NCZ_OK)
        return st;

    r = e->range >> precision;
    step = r * cum; /* < range: cum < 2^precision */
    e->low += step;
    if (e->low < step) {
        st = propagate_carry(e);
        if (st != NCZ_OK)
            return st;
    }
    /* The last symbol takes the remainder range - r * 2^precision too, so no range is lost. */
    if (cum + freq == ((uint64_t)1 << precision))
        e->range -= step;
    else
        e->range = r * freq;

    while (e->range < TOP) {
        e->buf[e->len++] = (uint8_t)(e->low >> 56);
        e->low <<= 8;
        e->range <<= 8;
    }
    return NCZ_OK;
}

int ncz_encoder_finish(ncz_encoder *e)
{
    unsigned k;
    int st = reserve(e, 8);
    if (st != NCZ_OK)
        return st;
    /* Shortest tail: the first k whose k-byte value v, rounded up from low, is still inside
     * [low, low + range). The decoder pads with zero bytes, so it reads exactly v. k = 8 always
     * succeeds (v = low). */
    for (k = 1; k <= 8; k++) {
        unsigned shift = 64 - 8 * k;
        uint64_t mask = ((uint64_t)1 << shift) - 1;
        uint64_t sum = e->low + mask;
        uint64_t v = sum & ~mask;
        if (v - e->low < e->range) { /* mod 2^64: the true distance, it is < 2^64 */
            unsigned i;
            if (sum < e->low) {
                st = propagate_carry(e);
                if (st != NCZ_OK)
                    return st;
            }
            for (i = 0; i < k; i++)
                e->buf[e->len++] = (uint8_t)(v >> (56 - 8 * i));
            return NCZ_OK;
        }
    }
    return NCZ_E_INTERNAL;
}

static uint8_t next_byte(ncz_decoder *d)
{
    if (d->pos < d->len)
        return d->data[d->pos++];
    d->overrun++;
    return 0;
}

void ncz_decoder_init(ncz_decoder *d, const uint8_t *data, size_t len)
{
    int i;
    d->data = data;
    d->len = len;
    d->pos = 0;
    d->overrun = 0;
    d->range = UINT64_MAX;
    d->value = 0;
    for (i = 0; i < 8; i++)
        d->value = (d->value << 8) | next_byte(d);
}

int ncz_decoder_target(const ncz_decoder *d, unsigned precision, uint32_t *target)
{
    uint64_t r, t, last;
    if (precision < NCZ_MIN_PRECISION || precision > NCZ_MAX_PRECISION)
        return NCZ_E_PRECISION;
    /* Only a stream that starts with eight 0xFF bytes gets here: the encoder never emits that,
     * and advance() keeps value < range afterwards. */
    if (d->value >= d->range)
        return NCZ_E_CORRUPT;
    r = d->range >> precision;
    t = d->value / r;
    last = ((uint64_t)1 << precision) - 1;
    /* value can lie in the remainder above r * 2^precision, which belongs to the last symbol. */
    *target = (uint32_t)(t < last ? t : last);
    return NCZ_OK;
}

int ncz_decoder_advance(ncz_decoder *d, uint64_t cum, uint64_t freq, unsigned precision)
{
    uint64_t r, step, range;
    int st = check_interval(cum, freq, precision);
    if (st != NCZ_OK)
        return st;
    if (d->value >= d->range)
        return NCZ_E_CORRUPT;
    r = d->range >> precision;
    step = r * cum;
    if (cum + freq == ((uint64_t)1 << precision))
        range = d->range - step;
    else
        range = r * freq;
    /* The code must lie inside the symbol's interval; otherwise the caller passed a symbol that
     * the target does not select, which for a correct caller means corrupt input. */
    if (d->value < step || d->value - step >= range)
        return NCZ_E_CORRUPT;
    d->value -= step;
    d->range = range;
    while (d->range < TOP) {
        d->value = (d->value << 8) | next_byte(d);
        d->range <<= 8;
    }
    return NCZ_OK;
}
