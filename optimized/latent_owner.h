/* latent_owner.h - the softmax of the 16-head latent decode kernels on mma.sync: mla_decode
 * `split_kv` (mla_fast.hip) and dsv4_sparse_decode `packed` (dsv4_fast.hip). NVIDIA device code
 * (GPU_HAS_MMA_SYNC); for GPU translation units only.
 *
 * Those kernels give a block (or a warp group) 16 query heads, the M of one m16n8k16 tile, and
 * four warps that each hold a quarter of the latent dims: per sub-tile of 16 keys each warp
 * computes partial logits over its dims, and the four partials must be summed before the
 * softmax. Every warp used to sum all four and run the whole 16 x 16 softmax itself; here each
 * warp *owns* four heads: it sums their partials (in warp order, so the logits are the same in
 * every run), runs their online softmax and writes their probabilities, already in P.V's A
 * fragment order, and their rescale factors back to shared memory. A second barrier later every
 * warp reads its P fragment with one 16-byte load. The owner's lanes each hold two keys of one
 * head, so the per-warp softmax work is a quarter of what it was (ncu on mla_decode fp8: 25%
 * fewer instructions, 18% faster).
 *
 * Per sub-tile (the caller places the barriers: __syncthreads or a warp group's named one):
 *   lat_own_put_partials(x, warp, lane, acc)   every warp: its partials to x
 *   -- barrier --
 *   lat_own_softmax(x, ow, lane, ok)           every warp: its heads' P and alphas into x
 *   -- barrier --
 *   lat_own_alpha(x, g, aA, aB), lat_own_p(x, lane, pa)   every warp: rows g and g + 8
 * After the last sub-tile: lat_own_sum(ow) gives the owner lanes their head's row sum, and
 * lat_own_put_ml / (barrier) / lat_own_ml hand (m, l) to the lanes holding rows g and g + 8.
 *
 * The exchange area x (LAT_OWN_FLOATS floats, 16-byte aligned): partial logits
 * [warp][half][n-tile][lane] float2 (half 0 = row g, 1 = row g + 8: a warp's 8-byte accesses
 * cover 256 contiguous bytes, no bank conflict), P [lane][4] u32, then alpha, m and l [16] each.
 * With two barriers a sub-tile no area needs a second parity: a sub-tile's partials are written
 * after every warp read the previous P, and read before anyone writes the next ones.
 */
#ifndef ATTN_LATENT_OWNER_H
#define ATTN_LATENT_OWNER_H

#include "gpu_port.h"

#include <math.h>
#include <stdint.h>

enum {
    LAT_OWN_HEADS = 16, /* heads per tile, the M of m16n8k16 */
    LAT_OWN_WARPS = 4,
    LAT_OWN_PER = LAT_OWN_HEADS / LAT_OWN_WARPS, /* heads a warp owns */
    LAT_OWN_X_P = LAT_OWN_WARPS * 2 * 2 * 32 * 2,
    LAT_OWN_X_ALPHA = LAT_OWN_X_P + 32 * 4,
    LAT_OWN_X_M = LAT_OWN_X_ALPHA + LAT_OWN_HEADS,
    LAT_OWN_X_L = LAT_OWN_X_M + LAT_OWN_HEADS,
    LAT_OWN_FLOATS = LAT_OWN_X_L + LAT_OWN_HEADS,
};

#if defined(GPU_HAS_MMA_SYNC)
/* A lane's share: warp w owns heads 4w .. 4w + 3 of the tile's 16; lane (i, g, t) = (lane / 16,
 * lane / 4 % 4, lane % 4) holds keys key = 8i + 2t, + 1 of a sub-tile for head `head` = 4w + g,
 * which is row dst = head % 8 of half h = head / 8 (fragment rows dst / dst + 8): warp w2 wrote
 * its partials at part + 128 w2 (float2s; lane 4 dst + t, n-tile i), and lane 4 dst + t of every
 * warp reads the probabilities from slot 2i + h of its P fragment (pslot, in u32s). sl: the
 * head's logit scale (log2 units); m, l: its running max and the lane's part of its sum. */
struct lat_owner {
    int part, pslot, head, key;
    float sl, m, l;
};

static __device__ __forceinline__ lat_owner lat_own_init(int warp, int lane, float sl)
{
    const int i = lane >> 4, t = lane & 3;
    lat_owner ow;
    ow.head = LAT_OWN_PER * warp + ((lane >> 2) & 3);
    const int h = ow.head >> 3, dst = ow.head & 7;
    ow.part = (h * 2 + i) * 32 + 4 * dst + t;
    ow.pslot = (4 * dst + t) * 4 + 2 * i + h;
    ow.key = 8 * i + 2 * t;
    ow.sl = sl, ow.m = -INFINITY, ow.l = 0.0f;
    return ow;
}

/* This warp's partial logits of the sub-tile (acc[n-tile][c0..c3]) into x. */
static __device__ __forceinline__ void lat_own_put_partials(float *x, int warp, int lane,
                                                            const float (&acc)[2][4])
{
    float2 *part = (float2 *)x;
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            part[((warp * 2 + h) * 2 + i) * 32 + lane] = make_float2(acc[i][2 * h], acc[i][2 * h + 1]);
}

/* The owner's step: its two logits (the four partials summed in warp order, times ow.sl; a
 * key with ok(e) false, e = 0 / 1 for sub-tile key ow.key + e, weighs nothing), the online softmax
 * of its head over the sub-tile's 16 keys (the 8 lanes of ow.g), and P (bf16, as every flash
 * kernel rounds it; then f16 when F16: the caller multiplies in f16) and alpha into x. The
 * running max only moves when the tile's exceeds it by more than 8 (log2 units): weights stay
 * below 2^8, exact in f32 and as precise in bf16, and rescales are rare. A max of -inf takes
 * exp2 against 0, never -inf - -inf; fmaxf skips NaN, which then reaches l and out through
 * exp2. */
template <bool F16, class Ok>
static __device__ __forceinline__ void lat_own_softmax(float *x, lat_owner &ow, int lane, Ok ok)
{
    const float2 *part = (const float2 *)x + ow.part;
    float2 sx = part[0];
#pragma unroll
    for (int w2 = 1; w2 < LAT_OWN_WARPS; w2++) {
        const float2 y = part[128 * w2];
        sx.x += y.x, sx.y += y.y;
    }
    const float x0 = ok(0) ? sx.x * ow.sl : -INFINITY, x1 = ok(1) ? sx.y * ow.sl : -INFINITY;
    float mx = fmaxf(x0, x1);
    mx = fmaxf(mx, GPU_SHFL_XOR(mx, 1));
    mx = fmaxf(mx, GPU_SHFL_XOR(mx, 2));
    mx = fmaxf(mx, GPU_SHFL_XOR(mx, 16));
    const float mn = mx > ow.m + 8.0f ? mx : ow.m;
    const float mu = mn == -INFINITY ? 0.0f : mn;
    const float alpha = mn == ow.m ? 1.0f : gpu_exp2_approx(ow.m - mu);
    const float p0 = gpu_exp2_approx(x0 - mu), p1 = gpu_exp2_approx(x1 - mu);
    ow.l = ow.l * alpha + (p0 + p1);
    ow.m = mn;
    uint32_t pw = gpu_pack2<false>(p0, p1);
    if constexpr (F16) { /* bf16 -> f16 (paged_kv.h's pkv_bf16x2_to_f16x2 at s = 1): exact
                          * from 2^-14 up (P <= 2^8), nearest-even below */
        const float2 f = make_float2(__uint_as_float(pw << 16), __uint_as_float(pw & 0xFFFF0000u));
        pw = gpu_pack2<true>(f.x, f.y);
    }
    ((uint32_t *)x)[LAT_OWN_X_P + ow.pslot] = pw;
    if ((lane & 0x13) == 0) /* i == 0, t == 0: one lane a head */
        x[LAT_OWN_X_ALPHA + ow.head] = alpha;
}

/* Rows g and g + 8's rescale factors of the sub-tile. */
static __device__ __forceinline__ void lat_own_alpha(const float *x, int g, float &aA, float &aB)
{
    aA = x[LAT_OWN_X_ALPHA + g], aB = x[LAT_OWN_X_ALPHA + g + 8];
}

/* The sub-tile's P as lane's A fragment (rows g, g + 8 x keys 2t, 2t + 1, 2t + 8, 2t + 9). */
static __device__ __forceinline__ void lat_own_p(const float *x, int lane, uint32_t (&pa)[4])
{
    const uint4 v = *(const uint4 *)((const uint32_t *)x + LAT_OWN_X_P + 4 * lane);
    pa[0] = v.x, pa[1] = v.y, pa[2] = v.z, pa[3] = v.w;
}

/* The owner lanes' row sum of their head (over its 8 lanes). */
static __device__ __forceinline__ void lat_own_sum(lat_owner &ow)
{
    ow.l += GPU_SHFL_XOR(ow.l, 1);
    ow.l += GPU_SHFL_XOR(ow.l, 2);
    ow.l += GPU_SHFL_XOR(ow.l, 16);
}

/* (m, l) of the owner's head into x (after lat_own_sum); a barrier, then lat_own_ml. */
static __device__ __forceinline__ void lat_own_put_ml(float *x, const lat_owner &ow, int lane)
{
    if ((lane & 0x13) == 0) {
        x[LAT_OWN_X_M + ow.head] = ow.m;
        x[LAT_OWN_X_L + ow.head] = ow.l;
    }
}

/* Rows g and g + 8's (m, l): m[0], l[0] row g, m[1], l[1] row g + 8. */
static __device__ __forceinline__ void lat_own_ml(const float *x, int g, float (&m)[2], float (&l)[2])
{
    m[0] = x[LAT_OWN_X_M + g], m[1] = x[LAT_OWN_X_M + g + 8];
    l[0] = x[LAT_OWN_X_L + g], l[1] = x[LAT_OWN_X_L + g + 8];
}
#endif // GPU_HAS_MMA_SYNC

#endif /* ATTN_LATENT_OWNER_H */
