/* test_numerics.c - optimized/numerics.h (the kernels' bit-twiddling conversions, compiled
 * here as C) against reference/ref_dtype.c (the yardstick, written with frexp/ldexp and
 * nearbyint).
 *
 * Decoding is checked on every code of every narrow format. Encoding is checked on a
 * structured sample of f32 bit patterns chosen to hit every way a rounding can go wrong:
 * every exponent and sign with mantissas that put a tie, and one unit either side of it, at
 * every bit position; the exact midpoint of every adjacent pair of codes of each format and
 * its neighbours; dense runs through each format's subnormal range and overflow or saturation
 * region; and the specials (zeros, infinities, quiet and signalling NaNs with payloads in any
 * bit). Results must be bit-identical; where the reference gives NaN, both must be NaN of the
 * same sign.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "numerics.h"
#include "ref.h"

static uint32_t bits32(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Same bits, or both NaN with the same sign. */
static int same_float(float a, float b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b) && !!signbit(a) == !!signbit(b);
    return bits32(a) == bits32(b);
}

/* ------------------------------------------------------------------ formats */

/* One narrow format seen through both implementations. max_code is the largest finite
 * positive code; positive codes 0..max_code increase. */
typedef struct fmt {
    const char *name;
    int opt_dtype;
    ref_dtype ref;
    unsigned ncodes, sign_bit, max_code;
    float (*ref_dec)(unsigned);
    unsigned (*ref_enc)(float);
    float (*num_dec)(unsigned);
    unsigned (*num_enc)(float);
} fmt;

static float ref_dec_bf16(unsigned c) { return ref_bf16_to_f32((uint16_t)c); }
static unsigned ref_enc_bf16(float f) { return ref_f32_to_bf16(f); }
static float num_dec_bf16(unsigned c) { return num_bf16_to_f32((uint16_t)c); }
static unsigned num_enc_bf16(float f) { return num_f32_to_bf16(f); }
static float ref_dec_f16(unsigned c) { return ref_f16_to_f32((uint16_t)c); }
static unsigned ref_enc_f16(float f) { return ref_f32_to_f16(f); }
static float num_dec_f16(unsigned c) { return num_f16_to_f32((uint16_t)c); }
static unsigned num_enc_f16(float f) { return num_f32_to_f16(f); }
static float ref_dec_fp8(unsigned c) { return ref_fp8e4m3_to_f32((uint8_t)c); }
static unsigned ref_enc_fp8(float f) { return ref_f32_to_fp8e4m3(f); }
static float num_dec_fp8(unsigned c) { return num_fp8e4m3_to_f32((uint8_t)c); }
static unsigned num_enc_fp8(float f) { return num_f32_to_fp8e4m3(f); }

static const fmt fmts[] = {
    {"bf16", OPT_BF16, REF_BF16, 1u << 16, 0x8000u, 0x7F7Fu, ref_dec_bf16, ref_enc_bf16,
     num_dec_bf16, num_enc_bf16},
    {"f16", OPT_F16, REF_F16, 1u << 16, 0x8000u, 0x7BFFu, ref_dec_f16, ref_enc_f16, num_dec_f16,
     num_enc_f16},
    {"fp8e4m3", OPT_FP8E4M3, REF_FP8E4M3, 1u << 8, 0x80u, 0x7Eu, ref_dec_fp8, ref_enc_fp8,
     num_dec_fp8, num_enc_fp8},
};
#define NFMTS (sizeof fmts / sizeof fmts[0])

/* ------------------------------------------------------------------ decoding, every code */

Test(numerics, decode_every_code)
{
    for (size_t k = 0; k < NFMTS; k++) {
        const fmt *F = &fmts[k];
        unsigned bad = 0, first = 0, nans = 0;
        for (unsigned c = 0; c < F->ncodes; c++) {
            float want = F->ref_dec(c), got = F->num_dec(c);
            nans += isnan(want) != 0;
            if (!same_float(got, want) && !bad++)
                first = c;
        }
        cr_assert_eq(bad, 0, "%s: %u codes decode differently, first 0x%x: %a vs %a", F->name,
                     bad, first, F->num_dec(first), F->ref_dec(first));
        cr_assert_gt(nans, 0, "%s: the NaN codes were visited", F->name);
    }
}

Test(numerics, decode_e8m0_every_code)
{
    for (unsigned b = 0; b < 256; b++) {
        double want = ref_e8m0_to_f64((uint8_t)b);
        float got = num_e8m0_to_f32((uint8_t)b);
        if (isnan(want))
            cr_assert(isnan(got), "0x%02x", b);
        else
            cr_assert_eq((double)got, want, "0x%02x: %a vs %a", b, got, want);
    }
    cr_assert_eq(bits32(num_e8m0_to_f32(0)), 0x00400000u, "2^-127 is an f32 subnormal");
    cr_assert_eq(num_e8m0_to_f32(127), 1.0f);
    cr_assert_eq(num_e8m0_to_f32(254), 0x1p127f);
}

/* ------------------------------------------------------------- encoding, structured sample */

typedef struct sweep {
    unsigned long long n;
    unsigned bad[NFMTS];
    uint32_t first[NFMTS];
} sweep;

/* One f32 through every encoder. */
static void check(sweep *s, uint32_t u)
{
    float x = from_bits32(u);
    s->n++;
    for (size_t k = 0; k < NFMTS; k++) {
        const fmt *F = &fmts[k];
        unsigned want = F->ref_enc(x), got = F->num_enc(x);
        int ok;
        if (isnan(F->ref_dec(want)))
            ok = isnan(F->ref_dec(got)) && (got & F->sign_bit) == (want & F->sign_bit);
        else
            ok = got == want;
        if (!ok && !s->bad[k]++)
            s->first[k] = u;
    }
}

static void check_both_signs(sweep *s, uint32_t u)
{
    check(s, u & 0x7FFFFFFFu);
    check(s, u | 0x80000000u);
}

static void check_range(sweep *s, uint32_t lo, uint32_t hi, uint32_t step)
{
    for (uint64_t u = lo; u <= hi; u += step)
        check_both_signs(s, (uint32_t)u);
}

static void report(const sweep *s, const char *what)
{
    for (size_t k = 0; k < NFMTS; k++) {
        const fmt *F = &fmts[k];
        float x = from_bits32(s->first[k]);
        cr_expect_eq(s->bad[k], 0, "%s, %s: %u of %llu fail, first f32 0x%08x: 0x%x vs 0x%x",
                     what, F->name, s->bad[k], s->n, s->first[k], F->num_enc(x), F->ref_enc(x));
    }
}

static uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* Every sign and exponent field (subnormals, inf/NaN included) with mantissas that place a
 * tie at every bit position p, one unit either side of it and the all-ones tail, under
 * several patterns of the bits above p (so the kept part is both odd and even and carries
 * both ways); plus hashed mantissas. A format's rounding bit is at a fixed position for its
 * normals and moves down one per binade through its subnormals: covered either way. */
Test(numerics, encode_every_exponent_tie_positions)
{
    static const uint32_t highs[] = {0x000000u, 0x7FFFFFu, 0x555555u, 0x2AAAAAu, 0x400000u,
                                     0x0F0F0Fu};
    sweep s = {0};
    for (uint32_t e = 0; e < 256; e++) {
        const uint32_t ebits = e << 23;
        for (int p = 0; p < 23; p++) {
            const uint32_t tie = 1u << p, above = p == 22 ? 0 : ~((tie << 1) - 1u) & 0x7FFFFFu;
            for (size_t h = 0; h < sizeof highs / sizeof highs[0]; h++) {
                const uint32_t hi = highs[h] & above;
                const uint32_t ms[] = {hi | tie, hi | (tie - 1u), hi | (tie + 1u),
                                       hi | ((tie << 1) - 1u), hi};
                for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
                    check_both_signs(&s, ebits | (ms[i] & 0x7FFFFFu));
            }
        }
        for (uint32_t i = 0; i < 512; i++)
            check_both_signs(&s, ebits | (mix32(e * 512u + i) & 0x7FFFFFu));
    }
    report(&s, "exponent x tie positions");
}

/* The exact midpoint of every adjacent pair of finite codes of every format (as f32: exact),
 * two units either side of it, and each code's own value with its f32 neighbours; all three
 * encoders see every one of these points. Past the largest code: the overflow midpoint
 * (IEEE) and the saturation region (fp8). */
Test(numerics, encode_midpoints_and_neighbours)
{
    sweep s = {0};
    for (size_t k = 0; k < NFMTS; k++) {
        const fmt *F = &fmts[k];
        for (unsigned c = 0; c <= F->max_code; c++) {
            const double lo = F->ref_dec(c);
            const double hi = c < F->max_code ? (double)F->ref_dec(c + 1)
                                              : lo + (lo - (double)F->ref_dec(c - 1));
            const float mid = (float)(0.5 * (lo + hi));
            cr_assert_eq((double)mid, 0.5 * (lo + hi), "%s: midpoint above 0x%x", F->name, c);
            const uint32_t m = bits32(mid), v = bits32((float)lo);
            for (uint32_t d = 0; d <= 2; d++) {
                check_both_signs(&s, m + d);
                check_both_signs(&s, m - d);
                check_both_signs(&s, v + d);
                if (v >= d)
                    check_both_signs(&s, v - d);
            }
        }
    }
    report(&s, "midpoints");
}

/* Dense runs where the encoders branch: each format's subnormal range up to its smallest
 * normal, the overflow boundaries (bf16 near FLT_MAX, f16 near 65520), fp8's saturation
 * region [448, 1024), f32's own subnormals, and a stride through the whole bit space. */
Test(numerics, encode_dense_regions, .timeout = 120)
{
    sweep s = {0};
    check_range(&s, 0x33000000u, 0x38800000u, 251);  /* f16: 2^-25 .. 2^-14 */
    check_range(&s, 0x337FF000u, 0x33801000u, 1);    /* f16: around 2^-24, the first code */
    check_range(&s, 0x387FF000u, 0x38801000u, 1);    /* f16: subnormal/normal boundary */
    check_range(&s, 0x3A800000u, 0x3C800000u, 61);   /* fp8: 2^-10 .. 2^-6 */
    check_range(&s, 0x3AFFF000u, 0x3B001000u, 1);    /* fp8: around 2^-9, the first code */
    check_range(&s, 0x3C7FF000u, 0x3C801000u, 1);    /* fp8: subnormal/normal boundary */
    check_range(&s, 0x43DFF000u, 0x44800000u, 7);    /* fp8: below 448 .. 1024 */
    check_range(&s, 0x43E7F000u, 0x43E81000u, 1);    /* fp8: around 464, the tie with NaN */
    check_range(&s, 0x477F0000u, 0x47801000u, 1);    /* f16: 65280 .. past 65536 */
    check_range(&s, 0x7F7F0000u, 0x7F7FFFFFu, 1);    /* bf16: up to FLT_MAX */
    check_range(&s, 0x00000000u, 0x00800000u, 1021); /* f32 subnormals */
    check_range(&s, 0x00000000u, 0x00001000u, 1);
    check_range(&s, 0x007FF000u, 0x00801000u, 1);
    check_range(&s, 0x00000000u, 0xFFFFFFFFu, 4093); /* everything, strided */
    report(&s, "dense regions");
}

Test(numerics, encode_specials)
{
    static const uint32_t specials[] = {
        0x00000000u, 0x80000000u, /* +-0 */
        0x7F800000u, 0xFF800000u, /* +-inf */
        0x7FC00000u, 0xFFC00000u, /* quiet NaN */
        0x7F800001u, 0xFF800001u, /* signalling NaN, payload in the lowest bit only */
        0x7F808000u, 0x7F80FFFFu, 0x7F810000u, 0x7FA00000u, 0x7FFFFFFFu, 0xFFFFFFFFu,
        0x7F7FFFFFu, 0xFF7FFFFFu, /* +-FLT_MAX */
        0x00800000u, 0x00000001u, 0x007FFFFFu, /* FLT_MIN, subnormals */
        0x3F800000u, 0x43E00000u, 0x43E80000u, 0x43F00000u, 0x477FE000u, 0x477FF000u,
    };
    sweep s = {0};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        check_both_signs(&s, specials[i]);
    report(&s, "specials");

    /* The values the kernels rely on, spelled out. */
    cr_assert_eq(num_f32_to_bf16(from_bits32(0x7F800001u)), 0x7FC0, "NaN never becomes inf");
    cr_assert_eq(num_f32_to_bf16(from_bits32(0xFF800001u)), 0xFFC0);
    cr_assert_eq(num_f32_to_bf16(from_bits32(0x7F7FFFFFu)), 0x7F80, "FLT_MAX overflows to inf");
    cr_assert_eq(num_f32_to_bf16(INFINITY), 0x7F80);
    cr_assert_eq(num_f32_to_f16(65519.99f), 0x7BFF);
    cr_assert_eq(num_f32_to_f16(65520.0f), 0x7C00);
    cr_assert_eq(num_f32_to_f16(-INFINITY), 0xFC00);
    cr_assert_eq(num_f32_to_f16(NAN), 0x7E00);
    cr_assert_eq(num_f32_to_f16(0x1p-25f), 0x0000, "tie with 0 goes to 0");
    cr_assert_eq(num_f32_to_f16(1023.5f * 0x1p-24f), 0x0400, "carry into the smallest normal");
    cr_assert_eq(num_f32_to_fp8e4m3(464.0f), 0x7E, "the tie with the NaN slot stays 448");
    cr_assert_eq(num_f32_to_fp8e4m3(-INFINITY), 0xFE);
    cr_assert_eq(num_f32_to_fp8e4m3(-NAN), 0xFF);
    cr_assert_eq(num_f32_to_fp8e4m3(7.5f * 0x1p-9f), 0x08);
    cr_assert_eq(num_f32_to_fp8e4m3(-0.0f), 0x80);
}

/* ---------------------------------------------------------------- load and store */

/* num_load_f32 reads element i of a typed buffer as the decoders do; num_store_f32 writes
 * the bytes ref_store writes (f32 -> narrow rounding; f32 stored as is) and nothing else. */
Test(numerics, load_store)
{
    static const int dtypes[] = {OPT_F32, OPT_BF16, OPT_F16, OPT_FP8E4M3};
    static const ref_dtype refs[] = {REF_F32, REF_BF16, REF_F16, REF_FP8E4M3};
    for (size_t t = 0; t < 4; t++) {
        const size_t sz = ref_dtype_size(refs[t]);
        _Alignas(8) unsigned char buf[8 * 4], want[8 * 4];
        for (uint32_t i = 0; i < 200000; i++) {
            uint32_t u = mix32(i);
            if (i < 4096) /* small magnitudes, where the narrow types have their codes */
                u = (u & 0x81FFFFFFu) | 0x3C000000u;
            const float x = from_bits32(u);
            memset(buf, 0xA5, sizeof buf);
            memset(want, 0xA5, sizeof want);
            const size_t idx = i % 8;
            num_store_f32(dtypes[t], buf, idx, x);
            ref_store(refs[t], want, idx, (double)x);
            const float back = num_load_f32(dtypes[t], buf, idx);
            const float ref_back = (float)ref_load(refs[t], want, idx);
            int ok = same_float(back, ref_back);
            if (!isnan(ref_back))
                ok = ok && memcmp(buf, want, sizeof buf) == 0;
            cr_assert(ok, "dtype %d, f32 0x%08x at %zu (size %zu): %a vs %a", dtypes[t], u, idx,
                      sz, back, ref_back);
        }
    }
    unsigned char b[4] = {1, 2, 3, 4};
    num_store_f32(REF_F64, b, 0, 1.0f);
    cr_assert(b[0] == 1 && b[1] == 2 && b[2] == 3 && b[3] == 4, "unknown dtype stores nothing");
    cr_assert(isnan(num_load_f32(REF_E8M0, b, 0)), "unknown dtype loads NaN");
}

/* num_f16_range_scale (the f16 MMAs' query-row scale, paged_mma.h and mla_fast.hip): a power of
 * two that puts every bf16 maximum at or above 2^-113 into [2^14, 2^15), where f16 holds every
 * bf16 value down to 2^-31 of it exactly and rounds smaller ones by at most 2^-39 of it; below
 * that the clamp (2^127) applies; zero and inf/NaN maxima as documented. */
Test(numerics, f16_range_scale)
{
    int bad = 0;
    for (uint32_t b = 1; b < 0x7F80u; b++) { /* every positive finite bf16, subnormals too */
        const float m = num_bf16_to_f32((uint16_t)b), s = num_f16_range_scale(m);
        int e;
        const double fr = frexp((double)s, &e);
        const double x = (double)m * s;
        const int ok = fr == 0.5 && e - 1 >= -126 && e - 1 <= 127 &&
                       (m >= 0x1p-113f ? x >= 0x1p14 && x < 0x1p15 : s == 0x1p127f);
        if (!ok && bad++ < 8)
            cr_log_error("max %a: scale %a, max * scale %a", (double)m, (double)s, x);
    }
    cr_expect_eq(bad, 0, "%d maxima scaled wrongly", bad);
    cr_expect_eq(num_f16_range_scale(0.0f), 0x1p127f);
    cr_expect_eq(num_f16_range_scale(INFINITY), 0x1p-114f);
    cr_expect_eq(num_f16_range_scale(NAN), 0x1p-114f);
    /* a full-mantissa element at 2^-31 of the maximum is exact; one far below is off by at most
     * 2^-39 of the maximum (scaled, the maximum is 0x1.fep14 here) */
    const float m = 0x1.fep1f, s = num_f16_range_scale(m), big = 0x1.fep0f * 0x1p-30f;
    cr_expect_eq(s, 0x1p13f);
    cr_expect_eq(num_f16_to_f32(num_f32_to_f16(big * s)) / s, big);
    const float tiny = 0x1.fep0f * 0x1p-37f;
    cr_expect_leq(fabsf(num_f16_to_f32(num_f32_to_f16(tiny * s)) / s - tiny), m * 0x1p-39f);
    cr_expect_neq(num_f16_to_f32(num_f32_to_f16(tiny * s)) / s, tiny, "a value f16 cannot hold");
}
