/* ref_dtype.c - storage dtypes of SPEC.md section 0: names, sizes, exact decoding, rounding.
 *
 * This file is the yardstick that the kernels' bit-twiddling conversion helpers are tested
 * against over every code, so it is written to be checked by reading, not to be fast: every
 * narrow float format is described by a handful of numbers (ref__fmt), a value is rounded by
 * exact power-of-two scaling and nearbyint(), and bits are produced from the rounded value
 * by arithmetic that cannot be inexact. The reference never changes the floating-point
 * environment, so nearbyint() and the (float) casts round to nearest, ties to even.
 */
#include "ref.h"

#include <math.h>
#include <string.h>

/* A binary floating-point format: value = (-1)^s * 2^(e - bias) * 1.m for exponent fields
 * 1.., and 2^(1 - bias) * 0.m for the field 0 (subnormals). */
typedef struct ref__fmt {
    int mbits;         /* stored mantissa bits (the significand has mbits + 1) */
    int ebits;         /* exponent field bits */
    int bias;          /* so the smallest normal is 2^(1 - bias) */
    double max_finite; /* largest finite magnitude */
    int saturate;      /* 1: magnitudes past max_finite (inf included) become max_finite;
                          0: IEEE, they round to infinity like any other value */
    unsigned nan_code; /* the (positive) NaN this format produces */
} ref__fmt;

/* IEEE binary16 and bfloat16: the top exponent field is inf/NaN, so the largest finite is
 * (2 - 2^-mbits) * 2^bias. */
static const ref__fmt ref__bf16 = {7, 8, 127, 0x1.FEp127, 0, 0x7FC0u}; /* 0x7F7F */
static const ref__fmt ref__f16 = {10, 5, 15, 0x1.FFCp15, 0, 0x7E00u};  /* 0x7BFF = 65504 */
/* OCP e4m3fn: the top exponent field is an ordinary binade except S.1111.111 (NaN), so the
 * largest finite is 1.110b * 2^8 = 448; no infinities, so out-of-range values saturate. */
static const ref__fmt ref__fp8e4m3 = {3, 4, 7, 448.0, 1, 0x7Fu};

/* |x| rounded to the format's grid, ignoring the sign and the upper end of the range:
 * the spacing in the binade of x is 2^(e - mbits), and below the smallest normal 2^emin it
 * stays 2^(emin - mbits) (gradual underflow). Scaling by a power of two is exact for every
 * double |x| here (the scaled value is below 2^(mbits + 1), far from double's underflow
 * or overflow), so the one rounding step is nearbyint(): ties to even. The
 * result may be 2^(e+1), the first value of the next binade; callers handle overflow. */
static double ref__round_grid(double ax, int mbits, int emin)
{
    if (ax == 0.0)
        return 0.0;
    int E;
    (void)frexp(ax, &E); /* ax = f * 2^E, f in [0.5, 1): the binade is 2^(E-1) */
    int e = E - 1;
    if (e < emin)
        e = emin;
    int q = e - mbits; /* exponent of the spacing */
    return ldexp(nearbyint(ldexp(ax, -q)), q);
}

/* x rounded to the format as a double (sign kept, -0 included): NaN stays NaN; IEEE formats
 * overflow to +-inf (exactly the values >= max_finite + half a spacing, since the tie goes to
 * the even next power of two), saturating formats clamp to +-max_finite. */
static double ref__round_format(double x, const ref__fmt *f)
{
    if (isnan(x))
        return x;
    double ax = fabs(x);
    double r;
    if (isinf(ax))
        r = f->saturate ? f->max_finite : ax;
    else {
        r = ref__round_grid(ax, f->mbits, 1 - f->bias);
        if (r > f->max_finite)
            r = f->saturate ? f->max_finite : INFINITY;
    }
    return signbit(x) ? -r : r;
}

/* Bits of a value already on the format's grid (the output of ref__round_format). */
static unsigned ref__encode(double r, const ref__fmt *f)
{
    unsigned sign = signbit(r) ? 1u << (f->ebits + f->mbits) : 0u;
    unsigned emask = (1u << f->ebits) - 1u;
    double ar = fabs(r);
    if (isnan(r))
        return sign | f->nan_code;
    if (isinf(ar)) /* only IEEE formats get here */
        return sign | (emask << f->mbits);
    if (ar == 0.0)
        return sign;
    int emin = 1 - f->bias;
    int E;
    (void)frexp(ar, &E);
    int e = E - 1;
    if (e < emin) /* subnormal: ar = m * 2^(emin - mbits) */
        return sign | (unsigned)ldexp(ar, f->mbits - emin);
    /* normal: ar = (2^mbits + m) * 2^(e - mbits) */
    unsigned m = (unsigned)(ldexp(ar, f->mbits - e) - ldexp(1.0, f->mbits));
    return sign | ((unsigned)(e + f->bias) << f->mbits) | m;
}

/* Exact value of a code. */
static double ref__decode(unsigned b, const ref__fmt *f)
{
    unsigned emask = (1u << f->ebits) - 1u;
    unsigned mmask = (1u << f->mbits) - 1u;
    int neg = (b >> (f->ebits + f->mbits)) & 1u;
    unsigned ef = (b >> f->mbits) & emask;
    unsigned m = b & mmask;
    double v;
    if (!f->saturate && ef == emask)
        v = m ? NAN : INFINITY;
    else if (f->saturate && ef == emask && m == mmask)
        v = NAN;
    else if (ef == 0)
        v = ldexp((double)m, 1 - f->bias - f->mbits);
    else
        v = ldexp((double)((1u << f->mbits) | m), (int)ef - f->bias - f->mbits);
    return neg ? copysign(v, -1.0) : copysign(v, 1.0);
}

/* ------------------------------------------------------------------ public conversions */

float ref_bf16_to_f32(uint16_t b) { return (float)ref__decode(b, &ref__bf16); }
uint16_t ref_f32_to_bf16(float f)
{
    return (uint16_t)ref__encode(ref__round_format(f, &ref__bf16), &ref__bf16);
}

float ref_f16_to_f32(uint16_t h) { return (float)ref__decode(h, &ref__f16); }
uint16_t ref_f32_to_f16(float f)
{
    return (uint16_t)ref__encode(ref__round_format(f, &ref__f16), &ref__f16);
}

float ref_fp8e4m3_to_f32(uint8_t b) { return (float)ref__decode(b, &ref__fp8e4m3); }
uint8_t ref_f32_to_fp8e4m3(float f)
{
    return (uint8_t)ref__encode(ref__round_format(f, &ref__fp8e4m3), &ref__fp8e4m3);
}

double ref_e8m0_to_f64(uint8_t b) { return b == 0xFFu ? NAN : ldexp(1.0, (int)b - 127); }

/* e8m0 is a format with no mantissa bits, no sign, no zero and no subnormals: codes 0..254
 * are 2^-127 .. 2^127. A positive value rounds to the nearer power of two (a tie, 1.5 * 2^e,
 * goes up: with no mantissa bits the "even" significand is 2), and clamps into
 * [2^-127, 2^127] (saturating, as fp8e4m3 does; +inf too). Values with no meaning as a scale
 * (NaN, zero, negative) become the NaN code 0xFF. */
static uint8_t ref__f32_to_e8m0(float f)
{
    if (isnan(f) || f <= 0.0f)
        return 0xFFu;
    double r = isinf(f) ? INFINITY : ref__round_grid(f, 0, -127);
    if (r < 0x1p-127)
        r = 0x1p-127;
    if (r > 0x1p127)
        r = 0x1p127;
    int E;
    (void)frexp(r, &E);
    return (uint8_t)(E - 1 + 127);
}

/* ------------------------------------------------------------------------ dtype table */

static const struct {
    const char *name;
    size_t size;
    int is_float;
} ref__dtypes[REF_DTYPE_COUNT] = {
    [REF_F32] = {"f32", 4, 1},         [REF_F64] = {"f64", 8, 1},
    [REF_BF16] = {"bf16", 2, 1},       [REF_F16] = {"f16", 2, 1},
    [REF_FP8E4M3] = {"fp8e4m3", 1, 1}, [REF_E8M0] = {"e8m0", 1, 1},
    [REF_I32] = {"i32", 4, 0},         [REF_I64] = {"i64", 8, 0},
    [REF_U8] = {"u8", 1, 0},
};

static int ref__valid(ref_dtype t) { return (int)t >= 0 && t < REF_DTYPE_COUNT; }

size_t ref_dtype_size(ref_dtype t) { return ref__valid(t) ? ref__dtypes[t].size : 0; }

const char *ref_dtype_name(ref_dtype t) { return ref__valid(t) ? ref__dtypes[t].name : "?"; }

int ref_dtype_from_name(const char *s, ref_dtype *out)
{
    if (!s || !out)
        return REF_EINVAL;
    for (int t = 0; t < REF_DTYPE_COUNT; t++)
        if (strcmp(s, ref__dtypes[t].name) == 0) {
            *out = (ref_dtype)t;
            return REF_OK;
        }
    return REF_EINVAL;
}

int ref_dtype_is_float(ref_dtype t) { return ref__valid(t) && ref__dtypes[t].is_float; }

/* --------------------------------------------------------------------- load and store */

/* Buffers may be any alignment (byte-packed caches), so elements move through memcpy. */
double ref_load(ref_dtype t, const void *base, size_t i)
{
    const unsigned char *p = (const unsigned char *)base + i * ref_dtype_size(t);
    switch (t) {
    case REF_F32: { float v; memcpy(&v, p, 4); return v; }
    case REF_F64: { double v; memcpy(&v, p, 8); return v; }
    case REF_BF16: { uint16_t v; memcpy(&v, p, 2); return ref_bf16_to_f32(v); }
    case REF_F16: { uint16_t v; memcpy(&v, p, 2); return ref_f16_to_f32(v); }
    case REF_FP8E4M3: return ref_fp8e4m3_to_f32(*p);
    case REF_E8M0: return ref_e8m0_to_f64(*p);
    case REF_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case REF_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case REF_U8: return *p;
    default: return NAN;
    }
}

/* Round to the nearest integer (ties to even) and saturate to [lo, hi]; NaN -> 0. This is
 * what GPU float -> int conversions (cvt.rni.sat, v_cvt_*_i32) do, and it keeps the
 * out-of-range cases of llrint and of integer narrowing (undefined / unspecified in C)
 * out of the reference. The type's range is [lo, hi_excl) in exact doubles (2^63 itself is
 * not an int64, hence the half-open bound). */
static int64_t ref__to_int(double v, double lo, double hi_excl, int64_t ilo, int64_t ihi)
{
    if (isnan(v))
        return 0;
    double r = nearbyint(v);
    if (r < lo)
        return ilo;
    if (r >= hi_excl)
        return ihi;
    return (int64_t)r;
}

/* Narrow float types are reached through f32: (float)v rounds once to f32, then the narrow
 * conversion rounds again. That double rounding is deliberate: it is exactly what a kernel
 * that computes in f32 and rounds to its storage type produces, and those kernels are what
 * the reference is compared against (a value just past a narrow tie in f64 can land on the
 * tie in f32 and then go to even). Doubles beyond f32's range become +-inf in that first
 * step (IEEE conversion, C Annex F), then saturate or stay inf as the narrow type says. */
void ref_store(ref_dtype t, void *base, size_t i, double v)
{
    unsigned char *p = (unsigned char *)base + i * ref_dtype_size(t);
    switch (t) {
    case REF_F32: { float f = (float)v; memcpy(p, &f, 4); break; }
    case REF_F64: memcpy(p, &v, 8); break;
    case REF_BF16: { uint16_t b = ref_f32_to_bf16((float)v); memcpy(p, &b, 2); break; }
    case REF_F16: { uint16_t b = ref_f32_to_f16((float)v); memcpy(p, &b, 2); break; }
    case REF_FP8E4M3: *p = ref_f32_to_fp8e4m3((float)v); break;
    case REF_E8M0: *p = ref__f32_to_e8m0((float)v); break;
    case REF_I32: {
        int32_t x = (int32_t)ref__to_int(v, -0x1p31, 0x1p31, INT32_MIN, INT32_MAX);
        memcpy(p, &x, 4);
        break;
    }
    case REF_I64: {
        int64_t x = ref__to_int(v, -0x1p63, 0x1p63, INT64_MIN, INT64_MAX);
        memcpy(p, &x, 8);
        break;
    }
    case REF_U8: *p = (uint8_t)ref__to_int(v, 0.0, 256.0, 0, 255); break;
    default: break;
    }
}

double ref_round_to(ref_dtype t, double v)
{
    unsigned char buf[8] = {0};
    ref_store(t, buf, 0, v);
    return ref_load(t, buf, 0);
}
