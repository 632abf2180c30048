/* test_dtype.c - the storage dtypes of SPEC.md section 0, exhaustively.
 *
 * Every code of every narrow format is decoded and re-encoded; every rounding boundary
 * (the midpoint of each adjacent pair of codes) is hit exactly and from either side; and
 * f32 values spread over the whole bit space are compared with oracles written another way
 * (the usual bf16 bit trick, the compiler's _Float16, and a nearest-value search over the
 * decoded code table), so an error in ref_dtype.c has to be made twice to pass.
 */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

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

static uint64_t bits64(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

/* One narrow float format, seen through the public API. Positive codes 0..max_code are the
 * finite non-negative values in increasing order; inf_code is the IEEE infinity (0 = none). */
typedef struct fmt {
    const char *name;
    ref_dtype dtype;
    unsigned ncodes, sign_bit, max_code, inf_code;
    int saturate;
    float (*decode)(unsigned);
    unsigned (*encode)(float);
} fmt;

static float dec_bf16(unsigned c) { return ref_bf16_to_f32((uint16_t)c); }
static unsigned enc_bf16(float f) { return ref_f32_to_bf16(f); }
static float dec_f16(unsigned c) { return ref_f16_to_f32((uint16_t)c); }
static unsigned enc_f16(float f) { return ref_f32_to_f16(f); }
static float dec_fp8(unsigned c) { return ref_fp8e4m3_to_f32((uint8_t)c); }
static unsigned enc_fp8(float f) { return ref_f32_to_fp8e4m3(f); }

static const fmt fmts[] = {
    {"bf16", REF_BF16, 1u << 16, 0x8000u, 0x7F7Fu, 0x7F80u, 0, dec_bf16, enc_bf16},
    {"f16", REF_F16, 1u << 16, 0x8000u, 0x7BFFu, 0x7C00u, 0, dec_f16, enc_f16},
    {"fp8e4m3", REF_FP8E4M3, 1u << 8, 0x80u, 0x7Eu, 0u, 1, dec_fp8, enc_fp8},
};
#define NFMTS (sizeof fmts / sizeof fmts[0])

/* ------------------------------------------------------------------------ dtype table */

Test(dtype, table)
{
    static const struct {
        ref_dtype t;
        const char *name;
        size_t size;
        int is_float;
    } want[] = {
        {REF_F32, "f32", 4, 1},         {REF_F64, "f64", 8, 1},   {REF_BF16, "bf16", 2, 1},
        {REF_F16, "f16", 2, 1},         {REF_FP8E4M3, "fp8e4m3", 1, 1},
        {REF_E8M0, "e8m0", 1, 1},       {REF_I32, "i32", 4, 0},   {REF_I64, "i64", 8, 0},
        {REF_U8, "u8", 1, 0},
    };
    cr_assert_eq((int)(sizeof want / sizeof want[0]), REF_DTYPE_COUNT, "every dtype listed");
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_str_eq(ref_dtype_name(want[i].t), want[i].name);
        cr_assert_eq(ref_dtype_size(want[i].t), want[i].size, "%s", want[i].name);
        cr_assert_eq(ref_dtype_is_float(want[i].t), want[i].is_float, "%s", want[i].name);
        ref_dtype t = REF_DTYPE_COUNT;
        cr_assert_eq(ref_dtype_from_name(want[i].name, &t), REF_OK, "%s", want[i].name);
        cr_assert_eq(t, want[i].t, "%s", want[i].name);
    }
    ref_dtype t = REF_F32;
    cr_assert_eq(ref_dtype_from_name("fp8", &t), REF_EINVAL);
    cr_assert_eq(ref_dtype_from_name("BF16x", &t), REF_EINVAL);
    cr_assert_eq(ref_dtype_from_name("", &t), REF_EINVAL);
    cr_assert_eq(ref_dtype_from_name(NULL, &t), REF_EINVAL);
    cr_assert_eq(ref_dtype_from_name("f32", NULL), REF_EINVAL);
    cr_assert_eq(t, REF_F32, "untouched on failure");
    cr_assert_str_eq(ref_dtype_name(REF_DTYPE_COUNT), "?");
    cr_assert_eq(ref_dtype_size(REF_DTYPE_COUNT), 0);
    cr_assert_eq(ref_dtype_is_float(REF_DTYPE_COUNT), 0);
}

/* ------------------------------------------------------------------- every code, both ways */

/* decode then encode gives the code back; a NaN code gives a NaN code of the same sign. */
Test(dtype, every_code_round_trips)
{
    for (size_t k = 0; k < NFMTS; k++) {
        const fmt *F = &fmts[k];
        unsigned bad = 0, first = 0, nans = 0;
        for (unsigned c = 0; c < F->ncodes; c++) {
            float f = F->decode(c);
            unsigned r = F->encode(f);
            int ok;
            if (isnan(f)) {
                nans++;
                ok = isnan(F->decode(r)) && (r & F->sign_bit) == (c & F->sign_bit);
            } else {
                ok = r == c && !!signbit(f) == !!(c & F->sign_bit);
            }
            if (!ok && !bad++)
                first = c;
        }
        cr_assert_eq(bad, 0, "%s: %u codes fail, first 0x%x", F->name, bad, first);
        /* bf16 and f16: 2 * (2^mbits - 1) NaNs; fp8e4m3: exactly 2 */
        unsigned want_nans = k == 0 ? 2 * 127 : k == 1 ? 2 * 1023 : 2;
        cr_assert_eq(nans, want_nans, "%s: %u NaN codes", F->name, nans);
    }
}

/* Positive codes up to max_code increase strictly, negatives mirror them; the code after
 * max_code is inf (IEEE) or NaN (fp8e4m3). This is what lets a code's neighbour be "code+1". */
Test(dtype, codes_are_ordered_and_symmetric)
{
    for (size_t k = 0; k < NFMTS; k++) {
        const fmt *F = &fmts[k];
        for (unsigned c = 0; c < F->max_code; c++)
            cr_assert(F->decode(c) < F->decode(c + 1), "%s: 0x%x", F->name, c);
        for (unsigned c = 0; c < F->sign_bit; c++) {
            float p = F->decode(c), n = F->decode(c | F->sign_bit);
            cr_assert(isnan(p) ? isnan(n) : bits32(n) == (bits32(p) ^ 0x80000000u), "%s: 0x%x",
                      F->name, c);
        }
        float after = F->decode(F->max_code + 1);
        cr_assert(F->saturate ? isnan(after) : isinf(after) && after > 0, "%s", F->name);
    }
}

/* bf16 is the top half of an f32, and f16 decodes as the compiler's _Float16 does. */
Test(dtype, decode_matches_independent_decoders)
{
    for (unsigned c = 0; c < 1u << 16; c++) {
        float f = ref_bf16_to_f32((uint16_t)c);
        float g = from_bits32(c << 16);
        cr_assert(isnan(g) ? isnan(f) : bits32(f) == bits32(g), "bf16 0x%04x", c);
    }
#ifdef __FLT16_MAX__
    for (unsigned c = 0; c < 1u << 16; c++) {
        uint16_t b = (uint16_t)c;
        _Float16 h;
        memcpy(&h, &b, 2);
        float f = ref_f16_to_f32(b), g = (float)h;
        cr_assert(isnan(g) ? isnan(f) : bits32(f) == bits32(g), "f16 0x%04x", c);
    }
#endif
    /* fp8e4m3 by its definition: S.EEEE.MMM, bias 7, field 0 subnormal */
    for (unsigned c = 0; c < 256; c++) {
        unsigned e = (c >> 3) & 15, m = c & 7;
        double v = e ? (8 + m) / 8.0 : m / 8.0;
        for (int i = 0; i < (e ? (int)e : 1); i++)
            v *= 2.0;
        v /= 128.0; /* 2^(e - 7) * 1.m, or 2^(1 - 7) * 0.m: the loop gave 2^max(e, 1) */
        v = c & 0x80 ? -v : v;
        float f = ref_fp8e4m3_to_f32((uint8_t)c);
        if ((c & 0x7F) == 0x7F)
            cr_assert(isnan(f), "fp8 0x%02x", c);
        else
            cr_assert(bits32(f) == bits32((float)v), "fp8 0x%02x: %a vs %a", c, f, v);
    }
}

/* ------------------------------------------------------------------------- rounding */

/* Exact midpoint of every adjacent pair of non-negative codes (0 and the smallest subnormal,
 * across the subnormal/normal boundary, ...): the tie goes to the even code, and the nearest
 * f32 on either side goes to the nearer code. The same for the negatives. */
Test(dtype, midpoints_tie_to_even)
{
    for (size_t k = 0; k < NFMTS; k++) {
        const fmt *F = &fmts[k];
        unsigned bad = 0, first = 0;
        for (unsigned c = 0; c < F->max_code; c++) {
            double lo = F->decode(c), hi = F->decode(c + 1), mid = 0.5 * (lo + hi);
            float m = (float)mid;
            cr_assert_eq((double)m, mid, "%s: midpoint above 0x%x is not an f32", F->name, c);
            unsigned even = c & 1 ? c + 1 : c;
            float below = nextafterf(m, 0.0f), above = nextafterf(m, INFINITY);
            int ok = F->encode(m) == even && F->encode(below) == c && F->encode(above) == c + 1 &&
                     F->encode(-m) == (even | F->sign_bit) &&
                     F->encode(-below) == (c | F->sign_bit) &&
                     F->encode(-above) == ((c + 1) | F->sign_bit);
            if (!ok && !bad++)
                first = c;
        }
        cr_assert_eq(bad, 0, "%s: %u pairs fail, first 0x%x", F->name, bad, first);
    }
}

/* Past the largest finite value: IEEE formats overflow to inf from max + half a spacing on
 * (that tie goes to inf, whose code is even); fp8e4m3 saturates everything, inf included. */
Test(dtype, overflow_and_saturation)
{
    /* bf16: max 0x7F7F = (2 - 2^-7) 2^127; the boundary is (2 - 2^-8) 2^127 */
    cr_assert_eq(ref_bf16_to_f32(0x7F7F), 0x1.FEp127f);
    cr_assert_eq(ref_f32_to_bf16(0x1.FFp127f), 0x7F80);
    cr_assert_eq(ref_f32_to_bf16(nextafterf(0x1.FFp127f, 0)), 0x7F7F);
    cr_assert_eq(ref_f32_to_bf16(FLT_MAX), 0x7F80);
    cr_assert_eq(ref_f32_to_bf16(-FLT_MAX), 0xFF80);
    cr_assert_eq(ref_f32_to_bf16(INFINITY), 0x7F80);
    cr_assert_eq(ref_f32_to_bf16(-INFINITY), 0xFF80);
    /* f16: max 65504, spacing 32 there, boundary 65520 */
    cr_assert_eq(ref_f32_to_f16(65504.0f), 0x7BFF);
    cr_assert_eq(ref_f32_to_f16(65519.99f), 0x7BFF);
    cr_assert_eq(ref_f32_to_f16(65520.0f), 0x7C00);
    cr_assert_eq(ref_f32_to_f16(-65520.0f), 0xFC00);
    cr_assert_eq(ref_f32_to_f16(1e9f), 0x7C00);
    cr_assert_eq(ref_f32_to_f16(INFINITY), 0x7C00);
    cr_assert_eq(ref_f32_to_f16(-INFINITY), 0xFC00);
    /* fp8e4m3: 448 = 0x7E; 464 is the tie with the NaN slot 480, 480 and more saturate */
    cr_assert_eq(ref_f32_to_fp8e4m3(448.0f), 0x7E);
    cr_assert_eq(ref_f32_to_fp8e4m3(-448.0f), 0xFE);
    cr_assert_eq(ref_f32_to_fp8e4m3(nextafterf(464.0f, 0)), 0x7E);
    cr_assert_eq(ref_f32_to_fp8e4m3(464.0f), 0x7E);
    cr_assert_eq(ref_f32_to_fp8e4m3(nextafterf(464.0f, INFINITY)), 0x7E);
    cr_assert_eq(ref_f32_to_fp8e4m3(480.0f), 0x7E);
    cr_assert_eq(ref_f32_to_fp8e4m3(1e9f), 0x7E);
    cr_assert_eq(ref_f32_to_fp8e4m3(FLT_MAX), 0x7E);
    cr_assert_eq(ref_f32_to_fp8e4m3(-1e9f), 0xFE);
    cr_assert_eq(ref_f32_to_fp8e4m3(INFINITY), 0x7E);
    cr_assert_eq(ref_f32_to_fp8e4m3(-INFINITY), 0xFE);
    cr_assert_eq(ref_fp8e4m3_to_f32(0x7E), 448.0f);
    cr_assert_eq(ref_fp8e4m3_to_f32(0xFE), -448.0f);
}

Test(dtype, nan)
{
    float qnan = NAN, nqnan = -NAN, snan = from_bits32(0x7F800001u), nsnan = from_bits32(0xFFA00000u);
    cr_assert(!signbit(qnan) && signbit(nqnan));
    cr_assert_eq(ref_f32_to_bf16(qnan), 0x7FC0);
    cr_assert_eq(ref_f32_to_bf16(nqnan), 0xFFC0);
    cr_assert_eq(ref_f32_to_bf16(snan), 0x7FC0, "signalling NaN quieted, not turned into inf");
    cr_assert_eq(ref_f32_to_bf16(nsnan), 0xFFC0);
    cr_assert_eq(ref_f32_to_f16(qnan), 0x7E00);
    cr_assert_eq(ref_f32_to_f16(nqnan), 0xFE00);
    cr_assert_eq(ref_f32_to_f16(snan), 0x7E00);
    cr_assert_eq(ref_f32_to_fp8e4m3(qnan), 0x7F);
    cr_assert_eq(ref_f32_to_fp8e4m3(nqnan), 0xFF);
    cr_assert_eq(ref_f32_to_fp8e4m3(snan), 0x7F);
    cr_assert(isnan(ref_bf16_to_f32(0x7F81)) && isnan(ref_bf16_to_f32(0xFFFF)));
    cr_assert(isnan(ref_f16_to_f32(0x7C01)) && isnan(ref_f16_to_f32(0xFFFF)));
    cr_assert(isnan(ref_fp8e4m3_to_f32(0x7F)) && isnan(ref_fp8e4m3_to_f32(0xFF)));
    cr_assert(signbit(ref_fp8e4m3_to_f32(0xFF)) && !signbit(ref_fp8e4m3_to_f32(0x7F)));
}

Test(dtype, subnormals)
{
    /* bf16: smallest subnormal 2^-133, smallest normal 2^-126 */
    cr_assert_eq(ref_f32_to_bf16(0x1p-133f), 0x0001);
    cr_assert_eq(ref_bf16_to_f32(0x0001), 0x1p-133f);
    cr_assert_eq(ref_f32_to_bf16(0x1p-134f), 0x0000, "tie with 0 goes to 0");
    cr_assert_eq(ref_f32_to_bf16(nextafterf(0x1p-134f, 1)), 0x0001);
    cr_assert_eq(ref_f32_to_bf16(0x1p-149f), 0x0000);
    cr_assert_eq(ref_f32_to_bf16(0x1p-126f), 0x0080);
    cr_assert_eq(ref_bf16_to_f32(0x007F), 0x1.FCp-127f);
    /* f16: smallest subnormal 2^-24, largest 1023 * 2^-24, smallest normal 2^-14 */
    cr_assert_eq(ref_f32_to_f16(0x1p-24f), 0x0001);
    cr_assert_eq(ref_f16_to_f32(0x0001), 0x1p-24f);
    cr_assert_eq(ref_f32_to_f16(0x1p-25f), 0x0000);
    cr_assert_eq(ref_f32_to_f16(nextafterf(0x1p-25f, 1)), 0x0001);
    cr_assert_eq(ref_f32_to_f16(0x1.8p-24f), 0x0002, "1.5 spacings: tie to even 2");
    cr_assert_eq(ref_f32_to_f16(0x1.4p-23f), 0x0002, "2.5 spacings: tie to even 2");
    cr_assert_eq(ref_f16_to_f32(0x03FF), 1023 * 0x1p-24f);
    cr_assert_eq(ref_f32_to_f16(0x1p-14f), 0x0400);
    cr_assert_eq(ref_f32_to_f16(1023.5f * 0x1p-24f), 0x0400, "tie between 0x3FF and 0x400");
    cr_assert_eq(ref_f32_to_f16(-0x1p-24f), 0x8001);
    /* fp8e4m3: smallest subnormal 2^-9, largest 7 * 2^-9, smallest normal 2^-6 */
    cr_assert_eq(ref_f32_to_fp8e4m3(0x1p-9f), 0x01);
    cr_assert_eq(ref_fp8e4m3_to_f32(0x01), 0x1p-9f);
    cr_assert_eq(ref_f32_to_fp8e4m3(0x1p-10f), 0x00);
    cr_assert_eq(ref_f32_to_fp8e4m3(nextafterf(0x1p-10f, 1)), 0x01);
    cr_assert_eq(ref_fp8e4m3_to_f32(0x07), 7 * 0x1p-9f);
    cr_assert_eq(ref_f32_to_fp8e4m3(0x1p-6f), 0x08);
    cr_assert_eq(ref_f32_to_fp8e4m3(7.5f * 0x1p-9f), 0x08);
    cr_assert_eq(ref_f32_to_fp8e4m3(-0x1p-9f), 0x81);
    cr_assert_eq(ref_f32_to_fp8e4m3(0x1p-20f), 0x00);
}

Test(dtype, negative_zero)
{
    cr_assert_eq(ref_f32_to_bf16(-0.0f), 0x8000);
    cr_assert_eq(ref_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(ref_f32_to_fp8e4m3(-0.0f), 0x80);
    cr_assert_eq(ref_f32_to_bf16(0.0f), 0x0000);
    cr_assert_eq(ref_f32_to_f16(0.0f), 0x0000);
    cr_assert_eq(ref_f32_to_fp8e4m3(0.0f), 0x00);
    /* negative values that round to zero keep their sign */
    cr_assert_eq(ref_f32_to_bf16(-0x1p-140f), 0x8000);
    cr_assert_eq(ref_f32_to_f16(-0x1p-30f), 0x8000);
    cr_assert_eq(ref_f32_to_fp8e4m3(-0x1p-12f), 0x80);
    cr_assert(signbit(ref_bf16_to_f32(0x8000)) && ref_bf16_to_f32(0x8000) == 0);
    cr_assert(signbit(ref_f16_to_f32(0x8000)) && ref_f16_to_f32(0x8000) == 0);
    cr_assert(signbit(ref_fp8e4m3_to_f32(0x80)) && ref_fp8e4m3_to_f32(0x80) == 0);
    const ref_dtype fl[] = {REF_F32, REF_F64, REF_BF16, REF_F16, REF_FP8E4M3};
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
        double r = ref_round_to(fl[i], -0.0);
        cr_assert(r == 0 && signbit(r), "%s", ref_dtype_name(fl[i]));
    }
}

Test(dtype, known_bit_patterns)
{
    cr_assert_eq(ref_f32_to_bf16(1.0f), 0x3F80);
    cr_assert_eq(ref_f32_to_bf16(-2.0f), 0xC000);
    cr_assert_eq(ref_f32_to_bf16(3.140625f), 0x4049);
    cr_assert_eq(ref_f32_to_bf16(0.1f), 0x3DCD); /* 0x3DCCCCCD rounds up */
    cr_assert_eq(ref_f32_to_f16(1.0f), 0x3C00);
    cr_assert_eq(ref_f32_to_f16(-2.0f), 0xC000);
    cr_assert_eq(ref_f32_to_f16(0.5f), 0x3800);
    cr_assert_eq(ref_f32_to_f16(0.1f), 0x2E66);
    cr_assert_eq(ref_f32_to_f16(1.0f / 3.0f), 0x3555);
    cr_assert_eq(ref_f32_to_fp8e4m3(1.0f), 0x38);
    cr_assert_eq(ref_f32_to_fp8e4m3(-1.0f), 0xB8);
    cr_assert_eq(ref_f32_to_fp8e4m3(1.125f), 0x39);
    cr_assert_eq(ref_f32_to_fp8e4m3(1.0625f), 0x38, "tie to even");
    cr_assert_eq(ref_f32_to_fp8e4m3(1.1875f), 0x3A, "tie to even");
    cr_assert_eq(ref_f32_to_fp8e4m3(256.0f), 0x78);
    cr_assert_eq(ref_f32_to_fp8e4m3(448.0f), 0x7E);
    cr_assert_eq(ref_f32_to_fp8e4m3(0x1p-9f), 0x01);
    cr_assert_eq(ref_f32_to_fp8e4m3(0.1f), 0x1D); /* 0.1015625 = 1.625 * 2^-4 */
}

/* ---------------------------------------------------------- oracles over the f32 space */

/* Nearest code by searching the table of non-negative values (index = code): ties to the
 * even code; past the largest finite, IEEE rounds to inf from max + half a spacing on,
 * fp8e4m3 saturates. Written without scaling or frexp, unlike ref_dtype.c. */
static unsigned nearest_code(const fmt *F, const float *tab, float x)
{
    unsigned sign = signbit(x) ? F->sign_bit : 0;
    double a = fabs((double)x);
    unsigned n = F->max_code; /* tab[0..n] */
    if (a >= tab[n]) {
        if (F->saturate)
            return sign | n;
        double half = 0.5 * ((double)tab[n] - tab[n - 1]);
        return sign | (a >= tab[n] + half ? F->inf_code : n);
    }
    unsigned lo = 0, hi = n; /* tab[lo] <= a < tab[hi] */
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if (tab[mid] <= a)
            lo = mid;
        else
            hi = mid;
    }
    double dl = a - tab[lo], dh = tab[hi] - a;
    unsigned c = dl < dh ? lo : dh < dl ? hi : (lo & 1 ? hi : lo);
    return sign | c;
}

/* About 4.2 million f32 bit patterns spread over the whole space (every exponent, both
 * signs, inf and NaN), each against the table search, and bf16 also against the classic
 * round-to-nearest-even bit trick, f16 against the compiler's conversion. */
Test(dtype, f32_sweep_matches_oracles, .timeout = 60)
{
    static float tab[NFMTS][1u << 16];
    for (size_t k = 0; k < NFMTS; k++)
        for (unsigned c = 0; c <= fmts[k].max_code; c++)
            tab[k][c] = fmts[k].decode(c);
    unsigned bad[NFMTS + 2] = {0};
    uint32_t first[NFMTS + 2] = {0};
    for (uint64_t u64 = 0; u64 <= 0xFFFFFFFFu; u64 += 1021) {
        uint32_t u = (uint32_t)u64;
        float x = from_bits32(u);
        for (size_t k = 0; k < NFMTS; k++) {
            const fmt *F = &fmts[k];
            unsigned got = F->encode(x);
            int ok = isnan(x) ? isnan(F->decode(got)) && !!(got & F->sign_bit) == !!signbit(x)
                              : got == nearest_code(F, tab[k], x);
            if (!ok && !bad[k]++)
                first[k] = u;
        }
        if (!isnan(x)) {
            unsigned trick = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
            if (ref_f32_to_bf16(x) != trick && !bad[NFMTS]++)
                first[NFMTS] = u;
#ifdef __FLT16_MAX__
            _Float16 h = (_Float16)x;
            uint16_t hb;
            memcpy(&hb, &h, 2);
            if (ref_f32_to_f16(x) != hb && !bad[NFMTS + 1]++)
                first[NFMTS + 1] = u;
#endif
        }
    }
    for (size_t k = 0; k < NFMTS; k++)
        cr_expect_eq(bad[k], 0, "%s vs table search: %u fail, first f32 0x%08x", fmts[k].name,
                     bad[k], first[k]);
    cr_expect_eq(bad[NFMTS], 0, "bf16 vs bit trick: %u fail, first 0x%08x", bad[NFMTS],
                 first[NFMTS]);
    cr_expect_eq(bad[NFMTS + 1], 0, "f16 vs _Float16: %u fail, first 0x%08x", bad[NFMTS + 1],
                 first[NFMTS + 1]);
}

/* ------------------------------------------------------------------------------ e8m0 */

Test(dtype, e8m0)
{
    double p = 0x1p-127; /* built by doubling, independently of ldexp */
    for (unsigned b = 0; b < 255; b++, p *= 2.0) {
        cr_assert_eq(ref_e8m0_to_f64((uint8_t)b), p, "0x%02x", b);
        uint8_t s = 0;
        ref_store(REF_E8M0, &s, 0, p);
        cr_assert_eq(s, b, "store 2^%d", (int)b - 127);
        cr_assert_eq(ref_load(REF_E8M0, &s, 0), p);
        cr_assert_eq(ref_round_to(REF_E8M0, p), p);
    }
    cr_assert(isnan(ref_e8m0_to_f64(0xFF)));
    cr_assert(isnan(ref_round_to(REF_E8M0, ref_e8m0_to_f64(0xFF))));
    /* nearest power of two, 1.5 * 2^e (the tie) up; clamped into [2^-127, 2^127] */
    cr_assert_eq(ref_round_to(REF_E8M0, 1.49), 1.0);
    cr_assert_eq(ref_round_to(REF_E8M0, 1.5), 2.0);
    cr_assert_eq(ref_round_to(REF_E8M0, 3.0), 4.0);
    cr_assert_eq(ref_round_to(REF_E8M0, 0.7), 0.5);
    cr_assert_eq(ref_round_to(REF_E8M0, 0x1p-140), 0x1p-127);
    cr_assert_eq(ref_round_to(REF_E8M0, 0x1.8p127), 0x1p127);
    cr_assert_eq(ref_round_to(REF_E8M0, 1e300), 0x1p127);
    cr_assert_eq(ref_round_to(REF_E8M0, INFINITY), 0x1p127);
    /* no zero, sign or NaN value in e8m0: those become the NaN code */
    const double none[] = {0.0, -0.0, -1.0, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        uint8_t s = 0;
        ref_store(REF_E8M0, &s, 0, none[i]);
        cr_assert_eq(s, 0xFF, "%g", none[i]);
    }
}

/* -------------------------------------------------------------------- load and store */

Test(dtype, store_load_every_narrow_code)
{
    for (size_t k = 0; k < NFMTS; k++) {
        const fmt *F = &fmts[k];
        size_t sz = ref_dtype_size(F->dtype);
        for (unsigned c = 0; c < F->ncodes; c++) {
            unsigned char in[2] = {(unsigned char)c, (unsigned char)(c >> 8)}, out[2] = {0, 0};
            uint16_t c16 = (uint16_t)c;
            if (sz == 2)
                memcpy(in, &c16, 2);
            double v = ref_load(F->dtype, in, 0);
            cr_assert(isnan(v) ? isnan(F->decode(c)) : v == F->decode(c), "%s 0x%x", F->name, c);
            ref_store(F->dtype, out, 0, v);
            if (isnan(v))
                cr_assert(isnan(ref_load(F->dtype, out, 0)), "%s 0x%x", F->name, c);
            else
                cr_assert(memcmp(in, out, sz) == 0, "%s 0x%x", F->name, c);
        }
    }
}

Test(dtype, store_load_wide_floats)
{
    for (uint64_t i = 0; i < 200000; i++) {
        uint64_t u = i * 0x9E3779B97F4A7C15ull; /* a spread of bit patterns */
        double d;
        memcpy(&d, &u, 8);
        double buf64[1];
        ref_store(REF_F64, buf64, 0, d);
        double back = ref_load(REF_F64, buf64, 0);
        cr_assert(isnan(d) ? isnan(back) : bits64(back) == u, "f64 0x%016llx", (unsigned long long)u);
        uint32_t u32 = (uint32_t)(u >> 32);
        float f = from_bits32(u32), fbuf[1];
        ref_store(REF_F32, fbuf, 0, (double)f);
        cr_assert(isnan(f) ? isnan(fbuf[0]) : bits32(fbuf[0]) == u32, "f32 0x%08x", u32);
        cr_assert(isnan(f) ? isnan(ref_load(REF_F32, fbuf, 0))
                           : bits64(ref_load(REF_F32, fbuf, 0)) == bits64((double)f));
    }
    /* f64 -> f32 rounds to nearest even and overflows to inf */
    cr_assert_eq(ref_round_to(REF_F32, 0.1), (double)0.1f);
    cr_assert_eq(ref_round_to(REF_F32, 1.0 + 0x1p-24), 1.0, "tie to even");
    cr_assert_eq(ref_round_to(REF_F32, 1.0 + 0x1p-24 + 0x1p-40), 1.0 + 0x1p-23);
    cr_assert(isinf(ref_round_to(REF_F32, 1e300)));
    cr_assert_eq(ref_round_to(REF_F64, 0.1), 0.1);
}

/* The documented double rounding: f64 -> f32 -> narrow. 1 + 2^-8 + 2^-30 is above the bf16
 * tie 1 + 2^-8 (direct rounding: 0x3F81), but in f32 it becomes the tie, which goes even. */
Test(dtype, store_rounds_through_f32)
{
    uint16_t b;
    ref_store(REF_BF16, &b, 0, 1.0 + 0x1p-8 + 0x1p-30);
    cr_assert_eq(b, 0x3F80);
    ref_store(REF_BF16, &b, 0, 1.0 + 0x1p-8 + 0x1p-20); /* survives f32: above the tie */
    cr_assert_eq(b, 0x3F81);
    ref_store(REF_F16, &b, 0, 1.0 + 0x1p-11 + 0x1p-30);
    cr_assert_eq(b, 0x3C00);
    uint8_t q;
    ref_store(REF_FP8E4M3, &q, 0, 1.0625 + 0x1p-30);
    cr_assert_eq(q, 0x38);
    ref_store(REF_FP8E4M3, &q, 0, 1e300); /* inf in f32, then saturated */
    cr_assert_eq(q, 0x7E);
    ref_store(REF_BF16, &b, 0, -1e300);
    cr_assert_eq(b, 0xFF80);
    cr_assert_eq(ref_round_to(REF_BF16, 1.0 + 0x1p-8 + 0x1p-30), 1.0);
    cr_assert_eq(ref_round_to(REF_F16, 65519.99), 65504.0);
    cr_assert(isinf(ref_round_to(REF_F16, 65519.999)), "65520 in f32, then the tie goes to inf");
    cr_assert(isinf(ref_round_to(REF_F16, 65520.0)));
}

Test(dtype, store_load_integers)
{
    /* round trips of representable values */
    const int32_t i32s[] = {0, 1, -1, 7, -123456, INT32_MAX, INT32_MIN, 1 << 30};
    for (size_t i = 0; i < sizeof i32s / sizeof i32s[0]; i++) {
        int32_t x = i32s[i], y = 0;
        cr_assert_eq(ref_load(REF_I32, &x, 0), (double)x);
        ref_store(REF_I32, &y, 0, ref_load(REF_I32, &x, 0));
        cr_assert_eq(y, x);
    }
    const int64_t i64s[] = {0, 1, -1, (int64_t)1 << 53, -((int64_t)1 << 53), 1234567890123LL,
                            INT64_MIN};
    for (size_t i = 0; i < sizeof i64s / sizeof i64s[0]; i++) {
        int64_t x = i64s[i], y = 0;
        cr_assert_eq(ref_load(REF_I64, &x, 0), (double)x);
        ref_store(REF_I64, &y, 0, ref_load(REF_I64, &x, 0));
        cr_assert_eq(y, x, "%lld", (long long)x);
    }
    for (unsigned c = 0; c < 256; c++) {
        uint8_t x = (uint8_t)c, y = 0;
        cr_assert_eq(ref_load(REF_U8, &x, 0), (double)c);
        ref_store(REF_U8, &y, 0, ref_load(REF_U8, &x, 0));
        cr_assert_eq(y, x);
    }
    /* round to nearest, ties to even, then saturate; NaN -> 0 */
    static const struct {
        double v;
        int32_t i32;
        int64_t i64;
        uint8_t u8;
    } r[] = {
        {2.5, 2, 2, 2},
        {3.5, 4, 4, 4},
        {-2.5, -2, -2, 0},
        {-0.5, 0, 0, 0},
        {0.49, 0, 0, 0},
        {1.5, 2, 2, 2},
        {254.5, 254, 254, 254},
        {255.5, 256, 256, 255},
        {-1.0, -1, -1, 0},
        {1000.0, 1000, 1000, 255},
        {2147483647.4, INT32_MAX, 2147483647LL, 255},
        {2147483647.6, INT32_MAX, 2147483648LL, 255},
        {-2147483648.6, INT32_MIN, -2147483649LL, 0},
        {0x1p63, INT32_MAX, INT64_MAX, 255},
        {-0x1p63, INT32_MIN, INT64_MIN, 0},
        {1e300, INT32_MAX, INT64_MAX, 255},
        {-INFINITY, INT32_MIN, INT64_MIN, 0},
        {NAN, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        int32_t a = 7;
        int64_t b = 7;
        uint8_t c = 7;
        ref_store(REF_I32, &a, 0, r[i].v);
        ref_store(REF_I64, &b, 0, r[i].v);
        ref_store(REF_U8, &c, 0, r[i].v);
        cr_assert_eq(a, r[i].i32, "i32 of %.17g: %d", r[i].v, a);
        cr_assert_eq(b, r[i].i64, "i64 of %.17g: %lld", r[i].v, (long long)b);
        cr_assert_eq(c, r[i].u8, "u8 of %.17g: %u", r[i].v, c);
        cr_assert_eq(ref_round_to(REF_I32, r[i].v), (double)r[i].i32);
        cr_assert_eq(ref_round_to(REF_U8, r[i].v), (double)r[i].u8);
    }
    /* INT64_MAX loads as 2^63 and saturates back to itself */
    int64_t mx = INT64_MAX, y = 0;
    ref_store(REF_I64, &y, 0, ref_load(REF_I64, &mx, 0));
    cr_assert_eq(y, INT64_MAX);
}

/* Element i lives at byte i * size, at any alignment, and nothing else is touched. */
Test(dtype, indexing_and_alignment)
{
    for (int t = 0; t < REF_DTYPE_COUNT; t++) {
        size_t sz = ref_dtype_size((ref_dtype)t);
        unsigned char buf[1 + 5 * 8 + 1];
        memset(buf, 0xA5, sizeof buf);
        for (size_t i = 0; i < 5; i++)
            ref_store((ref_dtype)t, buf + 1, i, (double)(i + 1));
        for (size_t i = 0; i < 5; i++)
            cr_assert_eq(ref_load((ref_dtype)t, buf + 1, i),
                         t == REF_E8M0 ? ref_round_to(REF_E8M0, (double)(i + 1)) : (double)(i + 1),
                         "%s[%zu]", ref_dtype_name((ref_dtype)t), i);
        cr_assert_eq(buf[0], 0xA5, "%s", ref_dtype_name((ref_dtype)t));
        for (size_t j = 1 + 5 * sz; j < sizeof buf; j++)
            cr_assert_eq(buf[j], 0xA5, "%s byte %zu", ref_dtype_name((ref_dtype)t), j);
    }
}
