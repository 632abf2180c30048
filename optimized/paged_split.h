/* paged_split.h - the split-KV (flash-decoding) machinery paged_decode's `split_kv` and `mma`
 * variants share (defined in paged_decode.hip): how a decode batch is cut into blocks, the
 * device's SM count, and the LSE combine of the per-split partial results.
 *
 * A block serves (sequence, KV head, split, group of up to `heads_per_block` of the KV head's
 * query heads). Split s of a sequence covers its tokens [s * split_tokens, (s + 1) *
 * split_tokens); a sequence of len tokens uses ceil(len / split_tokens) splits (0 when empty).
 * Workspace (f32), when n_split > 1: ws_o [batch, hq, n_split, D], then ws_lse [batch, hq,
 * n_split] (natural log). A sequence with one split is finished by its split kernel; the
 * combine kernel (a warp per (sequence, query head) row, psplit_merge_row) merges the others
 * with SPEC section 0's merge over all their splits at once.
 * For GPU translation units only (it includes gpu_port.h).
 */
#ifndef ATTN_PAGED_SPLIT_H
#define ATTN_PAGED_SPLIT_H

#include "gpu_port.h"
#include "numerics.h"

#include <math.h>

#include <stddef.h>
#include <stdint.h>

enum {
    PSPLIT_MAX_SPLITS = 64,
    PSPLIT_PLAN_MAX_SMS = 512,              /* workspace bound: no device has more SMs or CUs */
    PSPLIT_MAX_TOKENS = INT32_MAX - 1024,   /* token positions (and a few tiles past) fit int */
};

struct psplit_plan {
    int n_hg;          /* blocks per KV head: ceil(group / heads_per_block) */
    int n_split;       /* splits over the longest context */
    int split_tokens;  /* a multiple of `align` */
    size_t ws_bytes;   /* workspace; 0 when no sequence can need two splits */
};

/* About blocks_per_sm * sms blocks in all (fewer when the context is short: splits of at least
 * min_split tokens, at most PSPLIT_MAX_SPLITS of them). max_tokens is the longest context the
 * block table holds (max_blocks * block_size); sms <= 0 plans for PSPLIT_PLAN_MAX_SMS, the
 * workspace bound that does not depend on the device. */
psplit_plan psplit_make_plan(int batch, int hq, int hkv, int head_dim, long long max_tokens, int sms,
                             int heads_per_block, int blocks_per_sm, int min_split, int align);

/* The contract checks both variants share (SPEC section 5 arguments, the layout's x dividing
 * block_size, contexts inside PSPLIT_MAX_TOKENS, pointers when batch > 0): OPT_OK or
 * OPT_EINVAL. Each variant adds the head_dim it is built for. */
int psplit_check_args(const opt_paged_decode_args *a);

/* SM (CU) count of the current device, read once per device. */
int psplit_sm_count(int *sms);

/* SPEC section 0's merge of one row's nv (1 .. PSPLIT_MAX_SPLITS) split partials, by the 32
 * lanes of a warp (lane: 0 .. 31 of the row's warp): partial s is the D floats at o_at(s)
 * (f32, normalised) with LSE lse_at(s) (natural log; +inf reads as -inf; the max keeps a NaN,
 * which poisons the row as in the reference). Writes out[out_off .. + D) in out_dtype (0 when
 * the weights sum to 0) and, from lane 0, *lse_dst (-inf then). The accessors let the
 * partials live in the workspace (psplit_merge_row) or in the shared memory of a cluster's
 * blocks (paged_decode mma); the arithmetic, and so every bit of the result, is the same. */
template <int D, class LseAt, class OAt>
__device__ __forceinline__ void psplit_merge_row_at(LseAt lse_at, OAt o_at, int nv, int lane,
                                                    void *__restrict__ out, int out_dtype,
                                                    size_t out_off, float *lse_dst)
{
    static_assert(D % 32 == 0 && PSPLIT_MAX_SPLITS <= 64, "a lane holds D / 32 dims, two splits");
    float x0 = lane < nv ? lse_at(lane) : -INFINITY;
    float x1 = lane + 32 < nv ? lse_at(lane + 32) : -INFINITY;
    x0 = x0 == INFINITY ? -INFINITY : x0;
    x1 = x1 == INFINITY ? -INFINITY : x1;
    float mx = x1 > x0 || x1 != x1 ? x1 : x0;
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
        const float y = GPU_SHFL_XOR(mx, o);
        mx = y > mx || y != y ? y : mx;
    }
    const float mr = mx == -INFINITY ? 0.0f : mx;
    const float w0 = expf(x0 - mr), w1 = expf(x1 - mr);
    float sum = w0 + w1;
#pragma unroll
    for (int o = 16; o > 0; o /= 2)
        sum += GPU_SHFL_XOR(sum, o);
    if (lane == 0)
        *lse_dst = sum == 0.0f ? -INFINITY : mr + logf(sum);
    float acc[D / 32];
#pragma unroll
    for (int k = 0; k < D / 32; k++)
        acc[k] = 0.0f;
    for (int sp = 0; sp < nv; sp++) {
        const float wsp = GPU_SHFL32(sp < 32 ? w0 : w1, sp % 32);
        const float *src = o_at(sp);
#pragma unroll
        for (int k = 0; k < D / 32; k++)
            acc[k] += wsp * src[lane + 32 * k];
    }
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
#pragma unroll
    for (int k = 0; k < D / 32; k++)
        num_store_f32(out_dtype, out, out_off + lane + 32 * k, acc[k] * inv);
}

/* The same over the workspace: partial s of the row is ws_o[(base + s) * D ..] with LSE
 * ws_lse[base + s]. The combine kernels of paged_decode (psplit_combine) and of mixed
 * unified share it. */
template <int D>
__device__ __forceinline__ void psplit_merge_row(const float *__restrict__ ws_o,
                                                 const float *__restrict__ ws_lse, size_t base,
                                                 int nv, int lane, void *__restrict__ out,
                                                 int out_dtype, size_t out_off, float *lse_dst)
{
    psplit_merge_row_at<D>([&](int sp) { return ws_lse[base + sp]; },
                           [&](int sp) { return ws_o + (base + sp) * D; }, nv, lane, out,
                           out_dtype, out_off, lse_dst);
}

/* The combine kernel over the workspace of plan p (nothing to do when p.n_split == 1). */
int psplit_combine(const psplit_plan &p, const float *ws_o, const float *ws_lse,
                   const int32_t *seq_lens, void *out, float *lse, int out_dtype, int batch, int hq,
                   int head_dim, hipStream_t stream);

#endif /* ATTN_PAGED_SPLIT_H */
