/* paged_split.h - the split-KV (flash-decoding) machinery paged_decode's `split_kv` and `mma`
 * variants share (defined in paged_decode.hip): how a decode batch is cut into blocks, the
 * device's SM count, and the LSE combine of the per-split partial results.
 *
 * A block serves (sequence, KV head, split, group of up to `heads_per_block` of the KV head's
 * query heads). Split s of a sequence covers its tokens [s * split_tokens, (s + 1) *
 * split_tokens); a sequence of len tokens uses ceil(len / split_tokens) splits (0 when empty).
 * Workspace (f32), when n_split > 1: ws_o [batch, hq, n_split, D], then ws_lse [batch, hq,
 * n_split] (natural log). A sequence with one split is finished by its split kernel; the
 * combine kernel merges the others with SPEC section 0's merge over all their splits at once
 * (+inf reads as -inf; a NaN poisons the row, as in the reference; sum 0 -> out 0, lse -inf).
 * For GPU translation units only (it includes gpu_port.h).
 */
#ifndef ATTN_PAGED_SPLIT_H
#define ATTN_PAGED_SPLIT_H

#include "gpu_port.h"

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

/* The combine kernel over the workspace of plan p (nothing to do when p.n_split == 1). */
int psplit_combine(const psplit_plan &p, const float *ws_o, const float *ws_lse,
                   const int32_t *seq_lens, void *out, float *lse, int out_dtype, int batch, int hq,
                   int head_dim, hipStream_t stream);

#endif /* ATTN_PAGED_SPLIT_H */
