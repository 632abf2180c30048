/* numerics.h - the project's own bit-exact storage-dtype conversions, one source for host C,
 * CUDA and HIP device code (DESIGN.md "Narrow types in kernels").
 *
 * Kernels keep bf16/f16 as uint16_t and fp8e4m3/e8m0 as uint8_t and convert in registers
 * with these helpers. HIP 5.2 has no OCP fp8 type and only a legacy bf16 struct, and CDNA3's
 * fp8 instructions use the FNUZ flavour, so no vendor type or intrinsic is used: every
 * conversion is integer bit manipulation (plus, for subnormal decodes, one multiplication by
 * a power of two whose result is a normal f32, which is exact in any rounding or flush mode).
 * tests/test_numerics.c checks every code and every rounding boundary against
 * reference/ref_dtype.c, the yardstick. A hardware conversion may replace one of these later,
 * behind a capability macro in gpu_port.h, once it is proven equal over the same test.
 *
 * Semantics (SPEC.md section 0):
 *   narrow -> f32   exact; NaN codes give NaN of the same sign (bf16 and f16 keep their
 *                   payload in the top mantissa bits, as the hardware widenings do).
 *   f32 -> bf16/f16 round to nearest, ties to even; overflow to +-inf; f16 subnormals;
 *                   NaN -> the quiet NaN 0x7FC0 / 0x7E00 with the input's sign.
 *   f32 -> fp8e4m3  OCP e4m3fn (bias 7, max 448, no inf): round to nearest even,
 *                   saturate to +-448 (inf included); NaN -> 0x7F | sign.
 *   e8m0 -> f32     2^(b - 127) (b = 0 is the f32 subnormal 2^-127); 0xFF -> NaN.
 *
 * Compiles as C11, as CUDA (nvcc) and as HIP (hipcc -x hip).
 */
#ifndef ATTN_NUMERICS_H
#define ATTN_NUMERICS_H

#include <stddef.h>
#include <stdint.h>

#include "opt.h"

#if defined(__CUDACC__) || defined(__HIP__)
#define NUM_HD __host__ __device__ inline
#else
#define NUM_HD static inline
#endif // __CUDACC__ || __HIP__

/* ------------------------------------------------------------------ bit casts */
/* __builtin_memcpy is the one bit cast that is defined behaviour in both C and C++ and that
 * gcc, clang (HIP) and nvcc all accept in host and device code; it compiles to a move. */
NUM_HD uint32_t num_f32_bits(float f)
{
    uint32_t u;
    __builtin_memcpy(&u, &f, sizeof u);
    return u;
}

NUM_HD float num_bits_f32(uint32_t u)
{
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
}

/* m >> s rounded to nearest, ties to even, for 1 <= s <= 31. */
NUM_HD uint32_t num__shift_rne(uint32_t m, int s)
{
    uint32_t q = m >> s, rem = m & ((1u << s) - 1u), half = 1u << (s - 1);
    return q + (uint32_t)(rem > half || (rem == half && (q & 1u)));
}

/* ----------------------------------------------------------------------- bf16 */
/* bf16 is the top half of an f32. */
NUM_HD float num_bf16_to_f32(uint16_t b)
{
    return num_bits_f32((uint32_t)b << 16);
}

NUM_HD uint16_t num_f32_to_bf16(float f)
{
    uint32_t u = num_f32_bits(f);
    /* Truncating a NaN could clear every payload bit and leave inf. */
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)(((u >> 16) & 0x8000u) | 0x7FC0u);
    /* Carries out of the mantissa step the exponent, up to inf: the IEEE overflow. */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* ----------------------------------------------------------------------- f16 */
NUM_HD float num_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1Fu) /* inf, NaN (payload kept) */
        return num_bits_f32(sign | 0x7F800000u | (m << 13));
    if (e == 0) /* zero or subnormal m * 2^-24: a normal f32, so the product is exact */
        return num_bits_f32(sign | num_f32_bits((float)m * 0x1p-24f));
    return num_bits_f32(sign | ((e + (127 - 15)) << 23) | (m << 13));
}

NUM_HD uint16_t num_f32_to_f16(float f)
{
    uint32_t u = num_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return (uint16_t)(sign | 0x7E00u);
    if (a >= 0x477FF000u) /* 65520 = 65504 + half a spacing: the tie goes to inf (even) */
        return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x38800000u) /* >= 2^-14, normal: rebias; a carry steps the exponent */
        return (uint16_t)(sign | (((a + 0xFFFu + ((a >> 13) & 1u)) >> 13) - ((127u - 15u) << 10)));
    if (a < 0x33000000u) /* < 2^-25, half the smallest subnormal (which itself ties to 0) */
        return (uint16_t)sign;
    /* Subnormal: the code is |f| * 2^24 rounded, i.e. the 24-bit significand times
     * 2^(e - 126), 14 <= 126 - e <= 24; 0x400 (a carry to the smallest normal) is right too. */
    return (uint16_t)(sign | num__shift_rne((a & 0x7FFFFFu) | 0x800000u, 126 - (int)(a >> 23)));
}

/* -------------------------------------------------------------------- fp8e4m3 */
NUM_HD float num_fp8e4m3_to_f32(uint8_t b)
{
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t e = (b >> 3) & 0xFu, m = b & 7u;
    if ((b & 0x7Fu) == 0x7Fu)
        return num_bits_f32(sign | 0x7FC00000u);
    if (e == 0) /* zero or subnormal m * 2^-9 */
        return num_bits_f32(sign | num_f32_bits((float)m * 0x1p-9f));
    return num_bits_f32(sign | ((e + (127 - 7)) << 23) | (m << 20));
}

NUM_HD uint8_t num_f32_to_fp8e4m3(float f)
{
    uint32_t u = num_f32_bits(f);
    uint32_t sign = (u >> 24) & 0x80u, a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return (uint8_t)(sign | 0x7Fu);
    if (a >= 0x43E00000u) /* >= 448 (inf included): everything above rounds to or past 448 */
        return (uint8_t)(sign | 0x7Eu);
    if (a >= 0x3C800000u) /* >= 2^-6, normal; below 448 no carry can reach the NaN code */
        return (uint8_t)(sign | (((a + 0x7FFFFu + ((a >> 20) & 1u)) >> 20) - ((127u - 7u) << 3)));
    if (a < 0x3A800000u) /* < 2^-10, half the smallest subnormal */
        return (uint8_t)sign;
    /* Subnormal: the code is |f| * 2^9 rounded, 21 <= 141 - e <= 24. */
    return (uint8_t)(sign | num__shift_rne((a & 0x7FFFFFu) | 0x800000u, 141 - (int)(a >> 23)));
}

/* ----------------------------------------------------------------------- e8m0 */
NUM_HD float num_e8m0_to_f32(uint8_t b)
{
    if (b == 0xFFu)
        return num_bits_f32(0x7FC00000u);
    return num_bits_f32(b ? (uint32_t)b << 23 : 0x00400000u);
}

/* ------------------------------------------------------------ f16 range of a row */
/* The power of two 2^e that takes a row whose largest magnitude is mx (an f32 holding a bf16
 * value) into f16's range for f16 MMAs: e = 14 - floor(log2 mx), so the maximum lands in
 * [2^14, 2^15); every bf16 value of the row at or above 2^-31 of it stays exact in f16 (scaled,
 * it is 2^-17 or more: its 8 bits above f16's 2^-24 steps), smaller ones are rounded by at most
 * 2^-39 of the maximum (under f32's rounding of the dot product). e is clamped to [-126, 127]
 * (2^e normal): a zero row gets 2^127, an inf or NaN maximum 2^-114 (its logits are inf or NaN
 * anyway). The callers multiply the row by it and divide its logits by it, both exact. */
NUM_HD float num_f16_range_scale(float mx)
{
    const int x = 268 - (int)((num_f32_bits(mx) >> 23) & 0xFFu); /* biased 127 + 14 - E */
    return num_bits_f32((uint32_t)(x < 1 ? 1 : x > 254 ? 254 : x) << 23);
}

/* -------------------------------------------------------------- load and store */
/* Element i of p in storage dtype `dtype` (OPT_F32, OPT_BF16, OPT_F16, OPT_FP8E4M3), as f32;
 * another dtype reads as NaN. A kernel that passes a compile-time dtype gets one branch. */
NUM_HD float num_load_f32(int dtype, const void *p, size_t i)
{
    switch (dtype) {
    case OPT_F32: return ((const float *)p)[i];
    case OPT_BF16: return num_bf16_to_f32(((const uint16_t *)p)[i]);
    case OPT_F16: return num_f16_to_f32(((const uint16_t *)p)[i]);
    case OPT_FP8E4M3: return num_fp8e4m3_to_f32(((const uint8_t *)p)[i]);
    default: return num_bits_f32(0x7FC00000u);
    }
}

/* v rounded to dtype (as above) into element i of p; another dtype stores nothing. */
NUM_HD void num_store_f32(int dtype, void *p, size_t i, float v)
{
    switch (dtype) {
    case OPT_F32: ((float *)p)[i] = v; break;
    case OPT_BF16: ((uint16_t *)p)[i] = num_f32_to_bf16(v); break;
    case OPT_F16: ((uint16_t *)p)[i] = num_f32_to_f16(v); break;
    case OPT_FP8E4M3: ((uint8_t *)p)[i] = num_f32_to_fp8e4m3(v); break;
    default: break;
    }
}

#endif /* ATTN_NUMERICS_H */
