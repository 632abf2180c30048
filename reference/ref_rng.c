/* ref_rng.c - the counter-based RNG every test input comes from (VALIDATION.md).
 *
 * Each number is a pure function of (key, counter), so inputs are identical on any machine,
 * in any order and from any thread, and one element can be regenerated alone. Only integer
 * arithmetic and exact or fixed-order double operations are used (no libm), so a GPU or a
 * script can reproduce the values bit for bit. Everything here is frozen: changing a constant
 * changes every case's inputs (tests/test_rng.c pins golden values).
 */
#include "ref.h"

#define REF__GOLDEN 0x9E3779B97F4A7C15ull   /* 2^64 / golden ratio: SplitMix64's increment */
#define REF__NORMAL_SALT 0x6E6F726D616C3432ull /* "normal42": the normals' own stream */

/* SplitMix64's output finaliser (Stafford's variant 13): a bijection of 64-bit words with
 * full avalanche, so neighbouring counters give unrelated outputs. */
static uint64_t ref__mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t ref_hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 offset basis */
    if (!s)
        return h;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull; /* FNV-1a 64 prime */
    }
    return h;
}

/* The counter is mixed before the key is folded in, and the result mixed again, so keys
 * that differ in a few bits (seeds 0, 1, 2, ...; keys combined with ^) still give
 * unrelated streams. */
uint64_t ref_rng_u64(uint64_t key, uint64_t counter)
{
    return ref__mix(key ^ ref__mix(counter + REF__GOLDEN));
}

/* Top 53 bits scaled by 2^-53: every multiple of 2^-53 in [0, 1) is equally likely, and the
 * product is exact. */
double ref_rng_uniform(uint64_t key, uint64_t counter)
{
    return (double)(ref_rng_u64(key, counter) >> 11) * 0x1p-53;
}

/* Irwin-Hall with n = 4: the sum of 4 uniforms has mean 2 and variance 4/12, so
 * (sum - 2) * sqrt(3) has mean 0, variance 1 and lies in [-2 sqrt 3, 2 sqrt 3]. The uniforms
 * come from counters 4c..4c+3 of a stream derived from the key, so normal(key, c) shares no
 * draws with uniform(key, *) nor with normal(key, c') for c' != c. The additions are in a
 * fixed order, hence bit-identical everywhere. */
double ref_rng_normal(uint64_t key, uint64_t counter)
{
    uint64_t k = ref__mix(key ^ REF__NORMAL_SALT);
    uint64_t c = counter * 4u;
    double s = ref_rng_uniform(k, c);
    s += ref_rng_uniform(k, c + 1);
    s += ref_rng_uniform(k, c + 2);
    s += ref_rng_uniform(k, c + 3);
    return (s - 2.0) * 1.7320508075688772; /* sqrt(3), the nearest double */
}

/* High 64 bits of a 64 x 64-bit product, in portable C (no __int128). */
static uint64_t ref__mulhi64(uint64_t a, uint64_t b)
{
    uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32;
    uint64_t b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
    uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
    uint64_t mid = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFu) + lo_hi; /* cannot overflow */
    return hi_hi + (hi_lo >> 32) + (mid >> 32);
}

/* Lemire's multiply-shift: floor(u * span / 2^64) maps the 2^64 words onto [0, span) with
 * each value hit floor or ceil(2^64 / span) times, a relative bias below span / 2^64 (under
 * 1e-9 for any span below 2^34), and one draw per counter, which keeps it a pure function.
 * hi < lo gives lo. */
int64_t ref_rng_range(uint64_t key, uint64_t counter, int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    /* two's-complement differences in uint64_t: exact for any lo < hi */
    uint64_t span_minus_1 = (uint64_t)hi - (uint64_t)lo;
    uint64_t u = ref_rng_u64(key, counter);
    uint64_t off = span_minus_1 == UINT64_MAX ? u : ref__mulhi64(u, span_minus_1 + 1u);
    return (int64_t)((uint64_t)lo + off);
}
