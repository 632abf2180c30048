/* ref_paged.h - libattn_ref: the paged KV cache (SPEC section 0) and the paths that read or
 * write it: cache_write (section 1), gather_cache (2), paged_decode (5), extend (6) and
 * mixed (7).
 *
 * Same rules as ref.h: f64 accumulation through ref_attn, narrow values decoded exactly, no
 * printing, REF_OK or a negative REF_E* code. Every offset into a cache is computed in 64 bits:
 * pools past 2^31 bytes (or elements) are an ordinary production size.
 *
 * A cache row is read as its exact value (fp8: code * scale, exact in f64). REF_EMULATE
 * models a kernel that converts each row to its MMA input dtype (the query dtype) before the
 * products: the value is rounded through that dtype, which changes nothing for a bf16/f16
 * cache read by queries of the same dtype, and is what a dequantizing fp8 kernel does.
 */
#ifndef ATTN_REF_PAGED_H
#define ATTN_REF_PAGED_H

#include "ref.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- the paged cache */
typedef enum ref_kv_layout {
    REF_KV_NHD = 0,      /* k, v [N, bs, Hkv, D] (vLLM flash layout) */
    REF_KV_HND = 1,      /* k, v [N, Hkv, bs, D] */
    REF_KV_SHUFFLED = 2, /* k [N, Hkv, D/x, bs, x], v [N, Hkv, bs/x, D, x] (AITER preshuffled) */
} ref_kv_layout;

/* A K/V cache pair. Token t of a sequence whose block-table row is bt lives in block
 * bt[t / bs] at offset t % bs; element (block, offset, head, dim) is addressed per layout. */
typedef struct ref_kv_cache {
    ref_kv_layout layout;
    ref_dtype dtype; /* element dtype: bf16, f16 or fp8e4m3 */
    int num_blocks, block_size, heads, head_dim;
    float k_scale, v_scale; /* fp8e4m3 only: value = code * scale (per tensor); else unused */
    void *k, *v;            /* the two cache tensors, shapes as ref_kv_layout says */
} ref_kv_cache;

/* x of the shuffled layout: 16 bytes of elements (8 for bf16/f16, 16 for fp8). */
int ref_kv_x(ref_dtype t);
/* REF_OK, or why the description is unusable: REF_EDTYPE for an element dtype other than
 * bf16/f16/fp8e4m3, REF_ESHAPE for shuffled with head_dim or block_size not a multiple of x,
 * REF_EINVAL for non-positive sizes (num_blocks may be 0), a missing buffer, or an fp8 scale
 * that is not a positive finite number. */
int ref_kv_check(const ref_kv_cache *c);
/* Elements of one cache tensor: num_blocks * block_size * heads * head_dim. */
size_t ref_kv_numel(const ref_kv_cache *c);
/* The tensor shape of K (is_v = 0) or V (is_v = 1): 4 or 5 extents into shape, rank returned. */
int ref_kv_shape(const ref_kv_cache *c, int is_v, int64_t shape[5]);
/* Element index of (block, offset, head, dim) in K or V. */
size_t ref_kv_index(const ref_kv_cache *c, int is_v, int64_t block, int offset, int head, int dim);
/* The inverse of ref_kv_index. */
void ref_kv_coords(const ref_kv_cache *c, int is_v, size_t index, int64_t *block, int *offset,
                   int *head, int *dim);

/* Tokens [t0, t0 + n) of one sequence (block-table row bt: [max_blocks]) as K and V rows,
 * each value dequantized exactly and then rounded through round_to (REF_F64: not rounded;
 * REF_EMULATE callers pass the query dtype).
 *   k, v: [n, heads, head_dim] f64
 * REF_ERANGE when the tokens need more than max_blocks blocks or a block id used is outside
 * [0, num_blocks). */
int ref_kv_gather_rows(const ref_kv_cache *c, const int32_t *bt, int max_blocks, int64_t t0,
                       int n, ref_dtype round_to, double *k, double *v);

/* nq query rows (q: nq rows of hq heads) attend the first lk tokens of the sequence whose
 * block-table row is bt: the rows are gathered (ref_kv_gather_rows, rounded to round_to) and
 * ref_attn runs with o. out: nq rows of hq * head_dim; lse[h * lse_head_stride + i]. The
 * shared body of paged_decode (nq = 1) and mixed (the new tokens over context + themselves). */
int ref_kv_attend(const ref_kv_cache *c, const int32_t *bt, int max_blocks, int lk,
                  ref_dtype round_to, int nq, int hq, ref_view q, const ref_attn_opts *o,
                  double *out, double *lse, ptrdiff_t lse_head_stride);

/* How SPEC section 7 names a request with c cached and n new tokens. */
typedef enum ref_request_kind {
    REF_REQ_DECODE,  /* n = 1, c > 0 */
    REF_REQ_EXTEND,  /* n > 1, c > 0 */
    REF_REQ_PREFILL, /* c = 0 */
} ref_request_kind;
ref_request_kind ref_request_kind_of(int c, int n);
const char *ref_request_kind_name(ref_request_kind k); /* "decode", "extend", "prefill" */

/* ------------------------------------------------------------------ the paths */

/* SPEC section 1, cache_write (reshape_and_cache): token i of k, v goes to flat slot
 * slot_mapping[i] (block = slot / bs, offset = slot % bs); -1 skips the token; every other
 * byte of the caches is left as it was. fp8 caches store fp8(x / scale) (the quotient in f32,
 * then rounded to nearest even and saturated to +-448, as the kernels do); other caches
 * store x rounded to their dtype (a copy when the dtypes agree).
 *   k, v: [t, heads, head_dim] in src_dtype   slot_mapping: [t] i64
 * REF_ERANGE for a slot outside [-1, num_blocks * bs); REF_EINVAL for a slot given twice (a
 * race on a GPU, so never a valid input). Nothing is written when either is found. */
int ref_cache_write(const ref_kv_cache *c, int64_t t, ref_dtype src_dtype, const void *k,
                    const void *v, const int64_t *slot_mapping);

/* SPEC section 2, gather_cache (cp_mha_gather_cache): tokens [starts[b], starts[b] + lens[b])
 * of each sequence, packed at rows [cu_out[b], cu_out[b + 1]) of k and v, dequantized and
 * rounded to out_dtype (the kernel's storage dtype; SPEC says bf16).
 *   block_table: [batch, max_blocks] i32   starts, lens: [batch]   cu_out: [batch + 1]
 *   k, v: [cu_out[batch], heads, head_dim] f64 (values of out_dtype) */
int ref_gather_cache(const ref_kv_cache *c, int batch, const int32_t *block_table, int max_blocks,
                     const int32_t *starts, const int32_t *lens, const int32_t *cu_out,
                     ref_dtype out_dtype, double *k, double *v);

/* SPEC section 5, paged_decode: one query token per sequence attends its seq_lens[b] cached
 * tokens (all of them: the new token is already in the cache). seq_lens[b] = 0 gives out = 0,
 * lse = -inf. Of opts, scale, softcap, mode and p_dtype are read (no mask applies). */
typedef struct ref_decode_args {
    int batch, hq;
    ref_dtype dtype;            /* of q: bf16 or f16 (also the MMA dtype REF_EMULATE rounds to) */
    const void *q;              /* [batch, hq, head_dim] */
    ref_kv_cache cache;
    const int32_t *block_table; /* [batch, max_blocks] */
    int max_blocks;
    const int32_t *seq_lens; /* [batch] */
    ref_attn_opts opts;
} ref_decode_args;
/* out: [batch, hq, head_dim] f64   lse: [hq, batch] f64 */
int ref_paged_decode(const ref_decode_args *a, double *out, double *lse);

/* SPEC section 6, extend: request b has context_lens[b] tokens in the cache and
 * cu_q[b + 1] - cu_q[b] >= 1 new tokens given contiguously; new query i sees the whole
 * context and new keys j <= i. Of opts, scale, softcap, mode and p_dtype are read (the mask
 * is the section's). */
typedef struct ref_extend_args {
    int batch, hq;
    ref_dtype dtype;              /* of q, k_new, v_new */
    const void *q;                /* [Tn, hq, head_dim] */
    const void *k_new, *v_new;    /* [Tn, heads, head_dim] */
    const int32_t *cu_q;          /* [batch + 1] */
    const int32_t *context_lens;  /* [batch] */
    ref_kv_cache cache;           /* holds the context */
    const int32_t *block_table;   /* [batch, max_blocks] */
    int max_blocks;
    ref_attn_opts opts;
} ref_extend_args;
/* Ground truth: one attention per request over concat(context, new).
 * out: [Tn, hq, head_dim] f64   lse: [hq, Tn] f64 */
int ref_extend(const ref_extend_args *a, double *out, double *lse);
/* The algorithm a GPU path runs (SPEC section 6): causal attention of the new queries over the
 * new keys, then the context in chunks of at most chunk_tokens tokens across the batch (the
 * requests' contexts laid end to end in request order and cut every chunk_tokens tokens, so a
 * chunk may cover several requests and a request several chunks), each gathered to the
 * standard layout, attended without a mask and merged with the section 0 merge.
 * partial_dtype: REF_F64 keeps every partial (out, lse) in f64; bf16/f16 rounds each partial
 * out to it and its lse to f32 before each merge, as a pipeline of varlen attention and
 * merge_attn_states kernels stores them. Same shapes as ref_extend. */
int ref_extend_chunked(const ref_extend_args *a, int chunk_tokens, ref_dtype partial_dtype,
                       double *out, double *lse);

/* SPEC section 7, mixed: requests in arrival order, request r with context_lens[r] cached
 * tokens and n_r = cu_q[r + 1] - cu_q[r] >= 1 new ones (decode: n = 1, c > 0; extend: n > 1,
 * c > 0; prefill: c = 0). Every K/V row, context and new, is read from the cache, which holds
 * c_r + n_r tokens per request; query i of request r sees keys j <= c_r + i. */
typedef struct ref_mixed_args {
    int batch, hq;
    ref_dtype dtype;             /* of q */
    const void *q;               /* [T, hq, head_dim] */
    const int32_t *cu_q;         /* [batch + 1] */
    const int32_t *context_lens; /* [batch] */
    ref_kv_cache cache;          /* holds context and new tokens */
    const int32_t *block_table;  /* [batch, max_blocks] */
    int max_blocks;
    ref_attn_opts opts;
} ref_mixed_args;
/* out: [T, hq, head_dim] f64 in the original token order   lse: [hq, T] f64 */
int ref_mixed(const ref_mixed_args *a, double *out, double *lse);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_REF_PAGED_H */
