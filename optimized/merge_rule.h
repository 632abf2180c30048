/* merge_rule.h - SPEC section 0's merge of two partials (o_a, lse_a), (o_b, lse_b) as the fast
 * kernels compute it: merge_states vec (merge_vec.hip) and the chunk merge fused into
 * mha_varlen wgmma's epilogue (mha_wgmma.hip), one rule so the two give the same bits.
 * Per row: an LSE of +inf reads as -inf; m = the larger LSE (not fmaxf: a NaN LSE reaches the
 * output, as in the reference); weights wa = e^(lse_a - m), wb = e^(lse_b - m), normalised once
 * (pa = wa / (wa + wb), pb = wb / (wa + wb)), so each element is one multiply-add; both sides
 * empty (-inf): out = 0, lse = -inf. For GPU translation units only. */
#ifndef ATTN_MERGE_RULE_H
#define ATTN_MERGE_RULE_H

#include <math.h>

struct merge2_row {
    float pa, pb, lse;
    bool empty;
};

static __device__ __forceinline__ merge2_row merge2_weights(float a, float b)
{
    a = a == INFINITY ? -INFINITY : a;
    b = b == INFINITY ? -INFINITY : b;
    merge2_row w;
    w.empty = a == -INFINITY && b == -INFINITY;
    const float m = a > b ? a : b;
    const float wa = w.empty ? 0.0f : expf(a - m), wb = w.empty ? 0.0f : expf(b - m);
    const float ws = wa + wb;
    w.pa = wa / ws, w.pb = wb / ws;
    w.lse = w.empty ? -INFINITY : m + logf(ws);
    return w;
}

/* One element of the merged row, in f32 (the caller rounds it to the storage dtype). */
static __device__ __forceinline__ float merge2_apply(const merge2_row &w, float xa, float xb)
{
    return w.empty ? 0.0f : w.pa * xa + w.pb * xb;
}

#endif /* ATTN_MERGE_RULE_H */
