/* test_rng.c - the counter-based RNG: frozen values, purity, and the distributions' shape.
 *
 * The golden values pin every case's inputs: if one changes, every stored result and every
 * dumped input set changes meaning. They were computed by ref_rng.c and, independently, by
 * this Python re-implementation of the same formulas (the two agree on all of them):
 *
 *   M = (1 << 64) - 1; G = 0x9E3779B97F4A7C15; SALT = 0x6E6F726D616C3432
 *   def mix(z):
 *       z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
 *       z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
 *       return z ^ (z >> 31)
 *   def u64(k, c): return mix(k ^ mix((c + G) & M))
 *   def uni(k, c): return (u64(k, c) >> 11) * 2.0**-53
 *   def normal(k, c):
 *       kk = mix(k ^ SALT); c4 = (c * 4) & M
 *       s = uni(kk, c4); s += uni(kk, (c4 + 1) & M); s += uni(kk, (c4 + 2) & M)
 *       s += uni(kk, (c4 + 3) & M)
 *       return (s - 2.0) * 1.7320508075688772
 *   def rng_range(k, c, lo, hi): return lo if hi <= lo else lo + ((u64(k, c) * (hi - lo + 1)) >> 64)
 */
#include <criterion/criterion.h>

#include <stdint.h>

#include "ref.h"

static const struct {
    uint64_t key, counter, u64;
    double uniform, normal;
    int64_t range5; /* ref_rng_range(key, counter, -5, 5) */
} golden[] = {
    {0x0000000000000000ull, 0, 0x48218226ff3cd4bfull, 0x1.2086089bfcf34p-2, 0x1.3eb247d4ac3bep-3, -2},
    {0x0000000000000000ull, 1, 0xdce423fc82c0d5b8ull, 0x1.b9c847f90581ap-1, -0x1.16d1f7aafa007p+1, 4},
    {0x0000000000000000ull, 2, 0xe60bbbf6ca094f3cull, 0x1.cc1777ed94129p-1, -0x1.ed95e453ab5a9p-1, 4},
    {0x0000000000000000ull, 1000000, 0x0c2bd0cc91a62defull, 0x1.857a199234c5p-5, 0x1.11fe233fe3833p+1, -5},
    {0x0000000000000000ull, UINT64_MAX, 0x445018e305810b78ull, 0x1.1140638c16042p-2, 0x1.58d0ed1ee1c6fp-2, -3},
    {0x0000000000000001ull, 0, 0x9e0160293a33aaf7ull, 0x1.3c02c05274675p-1, -0x1.40a24f56aad67p+0, 1},
    {0x0000000000000001ull, 1, 0x5c52bd4054e958c9ull, 0x1.714af50153a56p-2, -0x1.2b12fe0c9e0ap-5, -2},
    {0x0000000000000001ull, 1000000, 0x680783b2cc650a7cull, 0x1.a01e0ecb31942p-2, 0x1.0298eb0d89e95p+0, -1},
    {0xdeadbeefcafef00dull, 0, 0xd7a87df254c958a4ull, 0x1.af50fbe4a992bp-1, -0x1.472cd9668ff8p+0, 4},
    {0xdeadbeefcafef00dull, 2, 0x1bce9f385e100c48ull, 0x1.bce9f385e1008p-4, 0x1.81a45fed75af2p+0, -4},
    {0xdeadbeefcafef00dull, UINT64_MAX, 0x0bc4d69224e8f804ull, 0x1.789ad2449d1fp-5, 0x1.069b3c4817968p+1, -5},
    {0xcbf29ce484222325ull, 0, 0xaebe53f85cdc3c4cull, 0x1.5d7ca7f0b9b87p-1, 0x1.4ebb175055603p-3, 2},
    {0xcbf29ce484222325ull, 1000000, 0x45245e3a520fa371ull, 0x1.149178e9483e8p-2, 0x1.92507b3f11743p-1, -3},
    {0xcbf29ce484222325ull, UINT64_MAX, 0x7717db1cd5b917d0ull, 0x1.dc5f6c7356e44p-2, 0x1.07ad599c6b622p-10, 0},
};

Test(rng, golden_values)
{
    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
        uint64_t k = golden[i].key, c = golden[i].counter;
        cr_assert_eq(ref_rng_u64(k, c), golden[i].u64, "u64 #%zu", i);
        cr_assert_eq(ref_rng_uniform(k, c), golden[i].uniform, "uniform #%zu: %a", i,
                     ref_rng_uniform(k, c));
        cr_assert_eq(ref_rng_normal(k, c), golden[i].normal, "normal #%zu: %a", i,
                     ref_rng_normal(k, c));
        cr_assert_eq(ref_rng_range(k, c, -5, 5), golden[i].range5, "range #%zu", i);
    }
    /* the full int64 range is the raw word, reinterpreted */
    cr_assert_eq(ref_rng_range(0, 0, INT64_MIN, INT64_MAX), -4025793487889967937LL);
    cr_assert_eq(ref_rng_range(1, 1000000, INT64_MIN, INT64_MAX), -1727267128116704644LL);
}

Test(rng, hash_str)
{
    cr_assert_eq(ref_hash_str(""), 0xcbf29ce484222325ull);
    cr_assert_eq(ref_hash_str("a"), 0xaf63dc4c8601ec8cull);
    cr_assert_eq(ref_hash_str("foobar"), 0x85944171f73967e8ull);
    cr_assert_eq(ref_hash_str("decode_gqa8_ctx4k_shuffled_fp8"), 0x1c07b9863d8b3925ull);
    cr_assert_eq(ref_hash_str(NULL), ref_hash_str(""));
    cr_assert_neq(ref_hash_str("q"), ref_hash_str("k"));
    /* bytes, not chars: a high-bit byte hashes as unsigned */
    cr_assert_eq(ref_hash_str("\xff"), (0xcbf29ce484222325ull ^ 0xffu) * 0x100000001b3ull);
}

/* A pure function: the same value whatever was drawn before, in any order, on any thread. */
Test(rng, order_independent)
{
    enum { N = 4096 };
    static uint64_t fwd[N];
    static double nfwd[N];
    const uint64_t key = 0x123456789ull;
    for (int i = 0; i < N; i++) {
        fwd[i] = ref_rng_u64(key, (uint64_t)i);
        nfwd[i] = ref_rng_normal(key, (uint64_t)i);
    }
    for (int i = N - 1; i >= 0; i--) {
        (void)ref_rng_u64(key ^ 1, (uint64_t)i * 7); /* unrelated draws in between */
        cr_assert_eq(ref_rng_u64(key, (uint64_t)i), fwd[i], "%d", i);
        cr_assert_eq(ref_rng_normal(key, (uint64_t)i), nfwd[i], "%d", i);
    }
    int bad = 0;
#pragma omp parallel for reduction(+ : bad)
    for (int i = 0; i < N; i++)
        bad += ref_rng_u64(key, (uint64_t)i) != fwd[i] || ref_rng_normal(key, (uint64_t)i) != nfwd[i];
    cr_assert_eq(bad, 0);
}

/* Neighbouring keys and counters give unrelated words: no repeats, and each output bit is
 * set about half the time. */
Test(rng, streams_look_independent)
{
    enum { N = 100000 };
    int bitcount[64] = {0};
    int same = 0;
    for (uint64_t i = 0; i < N; i++) {
        uint64_t a = ref_rng_u64(0, i), b = ref_rng_u64(1, i), c = ref_rng_u64(0, i + 1);
        same += a == b || a == c;
        for (int j = 0; j < 64; j++)
            bitcount[j] += (int)((a >> j) & 1u);
    }
    cr_assert_eq(same, 0);
    for (int j = 0; j < 64; j++) /* sd of the count is 158 */
        cr_assert(bitcount[j] > N / 2 - 1000 && bitcount[j] < N / 2 + 1000, "bit %d: %d", j,
                  bitcount[j]);
}

Test(rng, uniform_moments)
{
    enum { N = 1000000 };
    double sum = 0, sum2 = 0, lo = 1, hi = 0;
    for (uint64_t i = 0; i < N; i++) {
        double u = ref_rng_uniform(0xC0FFEEull, i);
        cr_assert(u >= 0.0 && u < 1.0, "%a at %llu", u, (unsigned long long)i);
        sum += u;
        sum2 += u * u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    double mean = sum / N, var = sum2 / N - mean * mean;
    /* sd of the mean: sqrt(1/12 / N) = 2.9e-4; of the variance: ~7.5e-5 */
    cr_assert(mean > 0.5 - 2e-3 && mean < 0.5 + 2e-3, "mean %g", mean);
    cr_assert(var > 1.0 / 12 - 6e-4 && var < 1.0 / 12 + 6e-4, "variance %g", var);
    cr_assert(lo < 1e-5 && hi > 1 - 1e-5, "range [%g, %g]", lo, hi);
    /* every value is a multiple of 2^-53 */
    for (uint64_t i = 0; i < 1000; i++) {
        double s = ref_rng_uniform(7, i) * 0x1p53;
        cr_assert_eq(s, (double)(uint64_t)s);
    }
}

/* Irwin-Hall with 4 terms: mean 0, variance 1, no skew, kurtosis 3 - 6/(5*4) = 2.7, bounded
 * by 2 sqrt 3 = 3.4641. */
Test(rng, normal_moments)
{
    enum { N = 1000000 };
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0, lo = 0, hi = 0;
    for (uint64_t i = 0; i < N; i++) {
        double z = ref_rng_normal(0xFACEull, i);
        s1 += z;
        s2 += z * z;
        s3 += z * z * z;
        s4 += z * z * z * z;
        lo = z < lo ? z : lo;
        hi = z > hi ? z : hi;
    }
    double mean = s1 / N, var = s2 / N - mean * mean, m3 = s3 / N, m4 = s4 / N;
    cr_assert(mean > -5e-3 && mean < 5e-3, "mean %g", mean);
    cr_assert(var > 0.99 && var < 1.01, "variance %g", var);
    cr_assert(m3 > -0.02 && m3 < 0.02, "third moment %g", m3);
    cr_assert(m4 > 2.65 && m4 < 2.75, "fourth moment %g (Irwin-Hall 4: 2.7)", m4);
    cr_assert(lo >= -3.4641016151377548 && hi <= 3.4641016151377548, "[%g, %g]", lo, hi);
    cr_assert(lo < -3.0 && hi > 3.0, "tails reached: [%g, %g]", lo, hi);
}

Test(rng, range_bounds_and_coverage)
{
    enum { N = 110000 };
    int count[11] = {0};
    for (uint64_t i = 0; i < N; i++) {
        int64_t r = ref_rng_range(42, i, -5, 5);
        cr_assert(r >= -5 && r <= 5, "%lld", (long long)r);
        count[r + 5]++;
    }
    for (int v = 0; v < 11; v++) /* expected 10000, sd ~95 */
        cr_assert(count[v] > 9500 && count[v] < 10500, "%d drawn %d times", v - 5, count[v]);

    /* degenerate and reversed ranges give lo */
    cr_assert_eq(ref_rng_range(1, 2, 7, 7), 7);
    cr_assert_eq(ref_rng_range(1, 2, 7, 3), 7);
    cr_assert_eq(ref_rng_range(1, 2, INT64_MAX, INT64_MAX), INT64_MAX);

    /* two-value, huge and extreme ranges stay inside, and reach both halves */
    int seen[2] = {0, 0}, halves[2] = {0, 0};
    for (uint64_t i = 0; i < 10000; i++) {
        int64_t b = ref_rng_range(3, i, 0, 1);
        cr_assert(b == 0 || b == 1);
        seen[b]++;
        int64_t h = ref_rng_range(3, i, INT64_MIN + 1, INT64_MAX - 1);
        cr_assert(h > INT64_MIN && h < INT64_MAX);
        halves[h >= 0]++;
        int64_t t = ref_rng_range(3, i, INT64_MAX - 2, INT64_MAX);
        cr_assert(t >= INT64_MAX - 2);
        int64_t n = ref_rng_range(3, i, INT64_MIN, INT64_MIN + 2);
        cr_assert(n <= INT64_MIN + 2);
        int64_t big = ref_rng_range(3, i, 0, (int64_t)1 << 62);
        cr_assert(big >= 0 && big <= (int64_t)1 << 62);
    }
    cr_assert(seen[0] > 4700 && seen[1] > 4700, "%d %d", seen[0], seen[1]);
    cr_assert(halves[0] > 4700 && halves[1] > 4700, "%d %d", halves[0], halves[1]);
}
