/* paged_kv.h - the paged KV cache on the device (SPEC section 0): element addressing in the
 * nhd, hnd and shuffled layouts, token -> (block, offset) through a block-table row, and the
 * exact element decode (fp8: code * per-tensor scale), shared by every kernel that reads or
 * writes the cache (cache_ops.hip, paged_attn.hip).
 *
 * The formulas are reference/ref_kvcache.c's (ref_kv_index, ref__dim_offsets), in 64 bits
 * throughout: a pool of 32768 blocks of 64 tokens x 8 heads x 128 dims is already 2^31
 * elements. For GPU translation units only (it includes gpu_port.h).
 */
#ifndef ATTN_PAGED_KV_H
#define ATTN_PAGED_KV_H

#include "gpu_port.h"
#include "numerics.h"

#include <stddef.h>
#include <stdint.h>

#define PKV_HD __host__ __device__ inline

/* x of the shuffled layout: 16 bytes of elements (8 for bf16/f16, 16 for fp8); 0 for a dtype
 * that is not a cache element. A compile-time dtype folds it to a constant. */
PKV_HD int pkv_x(int dtype)
{
    return dtype == OPT_FP8E4M3 ? 16 : dtype == OPT_BF16 || dtype == OPT_F16 ? 8 : 0;
}

/* Element index of (block, offset, head, dim) in K (is_v = 0) or V (is_v = 1): ref_kv_index. */
PKV_HD size_t pkv_index(const opt_kv_cache &c, int is_v, int64_t block, int offset, int head,
                        int dim)
{
    const size_t bs = (size_t)c.block_size, h = (size_t)c.heads, d = (size_t)c.head_dim;
    const size_t n = (size_t)block, o = (size_t)offset, hh = (size_t)head, dd = (size_t)dim;
    const size_t x = (size_t)pkv_x(c.dtype);
    switch (c.layout) {
    case OPT_KV_NHD:
        return ((n * bs + o) * h + hh) * d + dd;
    case OPT_KV_HND:
        return ((n * h + hh) * bs + o) * d + dd;
    case OPT_KV_SHUFFLED:
        if (is_v) /* [N, H, bs/x, D, x]: x consecutive tokens of one dim are adjacent */
            return (((n * h + hh) * (bs / x) + o / x) * d + dd) * x + o % x;
        return (((n * h + hh) * (d / x) + dd / x) * bs + o) * x + dd % x; /* [N, H, D/x, bs, x] */
    }
    return 0;
}

/* Within one (block, offset, head) row the index is linear in the dim by pieces of x:
 * pkv_index(.., dim) = pkv_index(.., 0) + (dim / x) * dim_hi + (dim % x) * dim_lo, with
 *   nhd, hnd:      dim_hi = x,           dim_lo = 1   (i.e. + dim)
 *   shuffled K:    dim_hi = block_size * x, dim_lo = 1
 *   shuffled V:    dim_hi = x * x,       dim_lo = x   (i.e. + dim * x)
 * so a kernel walks a row from its base index without re-deriving the layout per element. */
typedef struct pkv_dim_step {
    size_t hi, lo;
} pkv_dim_step;

PKV_HD pkv_dim_step pkv_dim_steps(const opt_kv_cache &c, int is_v)
{
    const size_t x = (size_t)pkv_x(c.dtype);
    pkv_dim_step s = {x, 1};
    if (c.layout == OPT_KV_SHUFFLED) {
        if (is_v)
            s.hi = x * x, s.lo = x;
        else
            s.hi = (size_t)c.block_size * x;
    }
    return s;
}

/* X is the layout's x (pkv_x of the element dtype), a compile-time power of two in kernels. */
template <int X>
PKV_HD size_t pkv_dim_offset(pkv_dim_step s, int dim)
{
    return (size_t)(dim / X) * s.hi + (size_t)(dim % X) * s.lo;
}

/* Row base (dim 0) of token `pos` of the sequence whose block-table row is bt [max_blocks]. */
PKV_HD size_t pkv_token_index(const opt_kv_cache &c, int is_v, const int32_t *bt, int64_t pos,
                              int head)
{
    const int64_t bs = c.block_size;
    return pkv_index(c, is_v, (int64_t)bt[pos / bs], (int)(pos % bs), head, 0);
}

/* Element i of a cache tensor of element dtype KVT as f32: exact for bf16/f16 (never scaled:
 * the scale belongs to fp8); fp8 is code * scale rounded once to f32, which is the f32 the
 * reference's exact f64 product rounds to. */
template <int KVT>
__device__ inline float pkv_load(const void *p, size_t i, float scale)
{
    if (KVT == OPT_FP8E4M3)
        return num_fp8e4m3_to_f32(((const uint8_t *)p)[i]) * scale;
    return num_load_f32(KVT, p, i);
}

/* ---------------------------------------------- fp8 codes -> 16-bit floats, in registers */
/* fp8e4m3 codes become 16-bit floats of a scaled value, exactly, subnormal codes included:
 *   bf16 (F16 false): code * 2^-120 -- the magnitude bits move 4 places up, the sign 8;
 *   f16  (F16 true):  code * 2^-8   -- the magnitude bits move 7 places up, the sign 8.
 * (The exponent fields differ by the bias difference, 127 - 7 and 15 - 7.) The factor is a
 * power of two, so a kernel folds it back into a logit or an output exactly. */
#define PKV_FP8_BF16_SHIFT 120
#define PKV_FP8_F16_SHIFT 8

/* Two codes (bytes 2 hi and 2 hi + 1 of w) -> a packed pair, lo in the low half. With
 * t = [0, b1, 0, b0] shifted by 4 (bf16) the signs sit at bits 27 and 11 and a + 15 * sign moves
 * each 4 places further (a - s + 16 s); shifted by 7 (f16) they sit at bits 30 and 14 and
 * a + sign moves each 1 place. NaN codes are caught by pkv_fp8x16_16bit. */
template <bool F16>
__device__ __forceinline__ uint32_t pkv_fp8x2_16bit(uint32_t w, int hi)
{
    const uint32_t t = __byte_perm(w, 0u, hi ? 0x4342u : 0x4140u);
    if (F16) {
        const uint32_t a = t << 7;
        return a + (a & 0x40004000u);
    }
    const uint32_t a = t << 4;
    return a + 15u * (a & 0x08000800u);
}

/* One code the slow, exact way: NaN (0x7F, 0xFF) -> the quiet NaN of its sign. */
template <bool F16>
__device__ __forceinline__ uint32_t pkv_fp8_one_16bit(uint32_t b)
{
    const uint32_t s = (b & 0x80u) << 8, m = b & 0x7Fu;
    if (F16)
        return m == 0x7Fu ? s | 0x7E00u : s | m << 7;
    return m == 0x7Fu ? s | 0x7FC0u : s | m << 4;
}

/* 16 codes (one 16-byte vector) -> 16 16-bit floats: lo holds codes 0-7, hi codes 8-15. A byte
 * is NaN when its low 7 bits are all ones: then (b & 0x7F) + 1 carries into bit 7, and never
 * into the next byte, so one test covers the vector and the rare NaN takes the exact path. */
template <bool F16>
__device__ __forceinline__ void pkv_fp8x16_16bit(uint4 v, uint4 &lo, uint4 &hi)
{
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    uint32_t nan = 0, r[8];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        nan |= (w[i] & 0x7F7F7F7Fu) + 0x01010101u;
        r[2 * i] = pkv_fp8x2_16bit<F16>(w[i], 0);
        r[2 * i + 1] = pkv_fp8x2_16bit<F16>(w[i], 1);
    }
    if (nan & 0x80808080u) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t x = w[i / 2] >> (16 * (i % 2));
            r[i] = pkv_fp8_one_16bit<F16>(x & 0xFFu) | pkv_fp8_one_16bit<F16>((x >> 8) & 0xFFu) << 16;
        }
    }
    lo = make_uint4(r[0], r[1], r[2], r[3]);
    hi = make_uint4(r[4], r[5], r[6], r[7]);
}

/* Two fp8e4m3 codes (bytes 0 and 1 of codes, low first) -> two bf16 of code * ks: the product in
 * f32, rounded to nearest even into bf16 (the reference's emulated dequantization; exact when ks
 * is a power of two, e4m3 having 4 significant bits). NaN codes give NaN. sm_89+: the
 * hardware's e4m3 -> f16 conversion, exact; elsewhere numerics.h's. mla_prefill mma's latent
 * decode and the latent_wgmma.h loaders (mla_decode, dsv4_sparse_decode) use it. */
__device__ __forceinline__ uint32_t pkv_fp8x2_bf16(uint32_t codes, float ks)
{
#if defined(GPU_HAS_CVT_E4M3)
    const uint32_t h2 = gpu_e4m3x2_to_f16x2(codes);
    const float lo = gpu_f16_to_f32((uint16_t)h2), hi = gpu_f16_to_f32((uint16_t)(h2 >> 16));
    return gpu_pack2<false>(lo * ks, hi * ks);
#else
    const float lo = num_fp8e4m3_to_f32((uint8_t)(codes & 0xFFu)) * ks;
    const float hi = num_fp8e4m3_to_f32((uint8_t)(codes >> 8 & 0xFFu)) * ks;
    return (uint32_t)num_f32_to_bf16(lo) | (uint32_t)num_f32_to_bf16(hi) << 16;
#endif
}

/* num_f32_to_fp8e4m3 without branches, the same code for every input. Normal range (|x| >=
 * 2^-6): the same integer rounding, and the saturation to 448 as a minimum (every finite |x|
 * >= 448 and inf round to 0x7E or past it). Below 2^-6 the code is |x| / 2^-9 rounded to
 * nearest even, which is what adding 2^14 does in f32 (its ulp is 2^-9; the sum stays below
 * 2^15): the sum's low bits are the code, 8 being the smallest normal. A flushed subnormal |x|
 * changes nothing there (it rounds to 0 either way). */
__device__ __forceinline__ uint32_t pkv_f32_to_e4m3(float f)
{
    const uint32_t u = num_f32_bits(f), a = u & 0x7FFFFFFFu;
    const uint32_t nrm = ((a + 0x7FFFFu + ((a >> 20) & 1u)) >> 20) - ((127u - 7u) << 3);
    const uint32_t sub = num_f32_bits(num_bits_f32(a) + 16384.0f) - 0x46800000u;
    const uint32_t code = a > 0x7F800000u ? 0x7Fu : a >= 0x3C800000u ? min(nrm, 0x7Eu) : sub;
    return code | ((u >> 24) & 0x80u);
}

/* The codes of a (low byte) and b: num_f32_to_fp8e4m3's bits for every input. sm_89+: the
 * hardware converts the magnitudes two at a time and the signs are put back -- round to
 * nearest even is symmetric, so that is the signed result, and a NaN code then carries its
 * input's sign as numerics.h's does (the hardware's own NaN code is masked to 0x7F first);
 * elsewhere pkv_f32_to_e4m3 twice. opt_convert_probe checks it over every bf16 and f16 value
 * and a million random f32 (tests/test_gpu_probe.c). */
__device__ __forceinline__ uint32_t pkv_f32x2_to_e4m3(float a, float b)
{
#if defined(GPU_HAS_CVT_E4M3)
    const uint32_t ua = num_f32_bits(a), ub = num_f32_bits(b);
    const uint32_t mag = gpu_f32x2_to_e4m3x2(num_bits_f32(ua & 0x7FFFFFFFu), num_bits_f32(ub & 0x7FFFFFFFu));
    return (mag & 0x7F7Fu) | ((ua >> 24) & 0x80u) | ((ub >> 16) & 0x8000u);
#else
    return pkv_f32_to_e4m3(a) | pkv_f32_to_e4m3(b) << 8;
#endif // GPU_HAS_CVT_E4M3
}

#if defined(GPU_HAS_MMA_SYNC)
/* A bf16 pair (low half first) as the f16 pair of its values times s, each rounded to nearest
 * even: a query row into f16's range (s from num_f16_range_scale), or P (s = 1: exact, bf16's
 * 8 bits fit f16's 11 from 2^-14 up) for f16 MMAs. */
__device__ __forceinline__ uint32_t pkv_bf16x2_to_f16x2(uint32_t x, float s)
{
    return gpu_pack2<true>(num_bf16_to_f32((uint16_t)x) * s, num_bf16_to_f32((uint16_t)(x >> 16)) * s);
}
#endif // GPU_HAS_MMA_SYNC

/* Eight codes (w0, w1: four each, low byte first) -> eight bf16 of code * ks. */
__device__ __forceinline__ uint4 pkv_fp8x8_bf16(uint32_t w0, uint32_t w1, float ks)
{
    return make_uint4(pkv_fp8x2_bf16(w0, ks), pkv_fp8x2_bf16(w0 >> 16, ks), pkv_fp8x2_bf16(w1, ks),
                      pkv_fp8x2_bf16(w1 >> 16, ks));
}

#endif /* ATTN_PAGED_KV_H */
