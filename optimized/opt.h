/* opt.h - libattn_opt's C ABI: GPU launchers and device facts, plain C types only.
 * Kernels never see harness types. Every function returns OPT_OK (0) or a negative OPT_E*
 * code; opt_last_error() then says which call failed, where, and the runtime's message. */
#ifndef ATTN_OPT_H
#define ATTN_OPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { OPT_OK = 0, OPT_EGPU = -1, OPT_EINVAL = -2 };

const char *opt_last_error(void);
const char *opt_backend(void); /* "cuda" or "hip" */

typedef struct opt_device_info {
    char name[256];
    char arch[64];
    int multiprocessors; /* SMs (NVIDIA) or CUs (AMD) */
    int warp_size;
    int l2_bytes;
    int clock_khz, mem_clock_khz, mem_bus_bits;
    int cc_major, cc_minor;
    int smem_per_block;
    int runtime_version, driver_version;
    size_t mem_total, mem_free;
} opt_device_info;

int opt_device_count(int *n); /* 0 devices (not an error) when no GPU or no driver */
int opt_device_query(int dev, opt_device_info *out);
int opt_set_device(int dev);

/* Device memory for tests and the harness's device layer. */
int opt_alloc(void **p, size_t bytes);
int opt_free(void *p);
int opt_upload(void *dst, const void *src, size_t bytes);
int opt_download(void *dst, const void *src, size_t bytes);
int opt_synchronize(void);

/* Timing: events on a stream (NULL = default). opt_event_elapsed waits for `stop`. */
int opt_event_create(void **ev);
int opt_event_destroy(void *ev);
int opt_event_record(void *ev, void *stream);
int opt_event_elapsed(void *start, void *stop, float *ms);
/* Overwrite buf [bytes] on the device, then read it back: evicts the L2 before a cold-cache
 * timing and leaves it clean (no write-back of the flush's own lines inside the timed window). */
int opt_flush(void *buf, size_t bytes, int value, void *stream);
/* A kernel that does nothing: the timing self-test's floor. */
int opt_empty_kernel(void *stream);

/* Streaming-read probe (the roofline's read bandwidth): every 16-byte word of buf
 * [bytes / 16 x 16 B] is read once; block b XORs its words into partial[b] (so the loads
 * cannot be elided, and the result is checkable: the XOR of all partials is the XOR of all
 * words). bytes % 16 == 0; partial holds `blocks` uint32 x 4. */
int opt_probe_read(const void *buf, size_t bytes, uint32_t *partial, int blocks, void *stream);

/* Copy probe: dst[i] = src[i] over bytes / 16 words of 16 B (bytes % 16 == 0). */
int opt_probe_copy(void *dst, const void *src, size_t bytes, int blocks, void *stream);

/* Matrix-core probe: `blocks` blocks of 256 threads, each warp issuing `iters` x 8 independent
 * bf16 MMA tile products (f32 accumulate) on the primitive of gpu_port.h; sums go to sink
 * [blocks * 256] so nothing is elided. *flops receives the FLOPs this launch performs. */
int opt_probe_mma(int blocks, int iters, float *sink, double *flops, void *stream);

/* The matrix primitive's layout contract: one warp computes c = a b + c0 for a single 16x16x16
 * tile (a, b bf16 bits row-major [16][16]; c0, c f32 row-major [16][16]; device pointers),
 * placing every fragment element through gpu_mma_{a,b,c}_coord. */
int opt_mma_arange(const uint16_t *a, const uint16_t *b, const float *c0, float *c, void *stream);

/* Hopper's warpgroup MMA (gpu_port.h GPU_HAS_WGMMA): NULL when the current device (compute
 * capability major cc_major) runs this library's wgmma code, i.e. it is an sm_90 device and the
 * library has an sm_90a image for it; else why not (always a reason off NVIDIA). */
const char *opt_wgmma_unsupported(int cc_major);

/* *yes = 1 when opt_wgmma_unsupported() gives no reason for the current device, else 0; the
 * answer is cached per device, so composite paths ask on every launch without a query that
 * blocks the stream. OPT_OK, or the runtime's error. */
int opt_wgmma_here(int *yes);

/* The wgmma layout contract (gpu_port.h), checked element by element: two warpgroups compute
 * c [128][n] = a [128][k] times B through gpu_wgmma_*, gpu_sw128_* and the coordinate helpers,
 * n and k in {64, 128}, bf16 (f16 when f16 != 0) bits in, f32 out, device pointers.
 *   mode 0 (S = Q K^T): a and b [n][k] row-major in SW128 tiles, both K-major; c = a b^T.
 *   mode 1 (O = P V):   a in registers (the A fragment), b [k][n] row-major in an SW128 tile
 *                       read MN-major (transposed); c = a b.
 *   mode 2 (O = P V):   a in a K-major SW128 tile (as mode 0), b as mode 1.
 * OPT_EINVAL for other shapes; the kernel traps where opt_wgmma_unsupported() gives a reason. */
int opt_wgmma_arange(int mode, int n, int k, int f16, const uint16_t *a, const uint16_t *b,
                     float *c, void *stream);

/* The element conversions kernels share, over n bit patterns (device pointers): op 0, f16 ->
 * f32 (gpu_port.h gpu_f16_to_f32; in's low 16 bits, out f32 bits); op 1, f32 -> f16
 * (gpu_f32_to_f16); op 2, f32 -> fp8e4m3 two at a time (paged_kv.h pkv_f32x2_to_e4m3, the
 * hardware conversion where the target has one; n even). out[i] is the result for in[i]; every
 * one must equal numerics.h's for its input (tests/test_gpu_probe.c). */
int opt_convert_probe(int op, const uint32_t *in, uint32_t *out, size_t n, void *stream);

/* ------------------------------------------------------------------ dtypes
 * Element dtypes of launcher arguments; the values equal the reference's ref_dtype (checked
 * at compile time in the harness). Kernels keep narrow types as raw bits (numerics.h). */
enum { OPT_F32 = 0, OPT_BF16 = 2, OPT_F16 = 3, OPT_FP8E4M3 = 4 };

/* -------------------------------------------------------------- mha_varlen
 * SPEC section 4. q [tq, hq, dqk], k [tk, hkv, dqk], v [tk, hkv, dv] in `dtype`;
 * cu_q, cu_k [batch + 1] i32; out [tq, hq, dv] in `dtype`; lse [hq, tq] f32. */
typedef struct opt_varlen_args {
    int batch, tq, hq, hkv, dqk, dv;
    int dtype;
    const void *q, *k, *v;
    const int32_t *cu_q, *cu_k;
    float scale, softcap; /* softcap 0 = none */
    int causal, window_left;
    void *out;
    float *lse;
    /* Optional, for callers that run several attentions of one batch (0 / NULL: unused).
     * tiles_ready: the workspace already holds this cu_q's query-tile prefix, written by a
     * previous call of the same launcher with the same cu_q, batch and head dims; the prep
     * kernel is skipped. merge_o [tq, hq, dv] (dtype) and merge_lse [hq, tq]: a partial result
     * that is merged with this one (SPEC section 0, as opt_merge_states_vec does it: this
     * result rounded to dtype first, the merge in f32) into out and lse, in the kernel's
     * epilogue; only where opt_mha_varlen_matrix_merges() says so (wgmma), else OPT_EINVAL. */
    int tiles_ready;
    const void *merge_o;
    const float *merge_lse;
} opt_varlen_args;

/* simple: one block per (query token, head), keys streamed in tiles with an online softmax
 * in f32. Supports dqk, dv <= 256 and dtypes f32/bf16/f16. */
int opt_mha_varlen_simple(const opt_varlen_args *a, void *stream);

/* mma: FlashAttention-2 style on the matrix cores (mma.sync; NVIDIA sm_80+ only for now):
 * 64-row query tiles per (sequence, head), K/V tiles double-buffered through cp.async, P in
 * bf16/f16 registers. bf16/f16; (dqk, dv) in {(64,64), (128,128), (192,128), (256,256)}.
 * Workspace: opt_mha_varlen_mma_workspace(batch) bytes. unsupported(): NULL when it runs. */
const char *opt_mha_varlen_mma_unsupported(const opt_varlen_args *a, int cc_major);
size_t opt_mha_varlen_mma_workspace(int batch);
int opt_mha_varlen_mma(const opt_varlen_args *a, void *workspace, size_t workspace_bytes,
                       void *stream);

/* wgmma (issue 6's moonshot): FlashAttention forward on Hopper's warpgroup MMA (wgmma, inline
 * PTX; NVIDIA sm_90a only): 128-row query tiles of two warpgroups, 128-key K/V tiles in
 * 128-byte-swizzled shared memory through cp.async, P from registers; the tile schedule,
 * numerics and workspace of mma. bf16/f16; dqk = dv in {64, 128}. unsupported(): NULL when it
 * runs (cc_major 9 and an sm_90a image in this library), else why not. */
const char *opt_mha_varlen_wgmma_unsupported(const opt_varlen_args *a, int cc_major);
size_t opt_mha_varlen_wgmma_workspace(int batch);
int opt_mha_varlen_wgmma(const opt_varlen_args *a, void *workspace, size_t workspace_bytes,
                         void *stream);

/* mha_varlen portable: the same tiles and numerics on gpu_port.h's vendor-neutral matrix
 * primitive (MFMA on CDNA gfx90a / gfx940-942, mma.sync on NVIDIA sm_80+) and nothing else
 * vendor-specific; bf16; (dqk, dv) in (64, 64), (128, 128), (256, 256), (192, 128). Workspace:
 * opt_mha_varlen_mma_workspace(batch). opt_matrix_unsupported(): NULL when the current device's
 * image has the primitive, else why not. */
const char *opt_matrix_unsupported(void);
const char *opt_mha_varlen_portable_unsupported(const opt_varlen_args *a);
int opt_mha_varlen_portable(const opt_varlen_args *a, void *workspace, size_t workspace_bytes,
                            void *stream);

/* Which matrix-core kernels a composite path (extend chunked, mixed routed, mla_prefill mma)
 * runs its pieces on (the `matrix` member of its arguments): OPT_MATRIX_BEST (0, the default)
 * the fastest this device runs -- wgmma on Hopper, mma.sync on other NVIDIA GPUs, portable
 * elsewhere (AMD); OPT_MATRIX_PORTABLE the vendor-neutral ones on every device, which makes the
 * AMD kernels checkable on NVIDIA. */
enum { OPT_MATRIX_BEST = 0, OPT_MATRIX_PORTABLE = 1 };

/* The matrix-core mha_varlen the composite paths call per piece (extend chunked, mla_prefill
 * mma, mixed routed): wgmma where opt_mha_varlen_wgmma_unsupported() gives no reason for a on
 * the current device, else mma on NVIDIA, portable elsewhere (AMD); the same arguments,
 * contract and workspace (opt_mha_varlen_mma_workspace). The device's answer is cached per
 * device, so no query blocks the stream. opt_mha_varlen_matrix_unsupported: NULL where it
 * runs a (cc_major: the device's compute capability major). */
const char *opt_mha_varlen_matrix_unsupported(const opt_varlen_args *a, int matrix, int cc_major);
int opt_mha_varlen_matrix(const opt_varlen_args *a, int matrix, void *workspace,
                          size_t workspace_bytes, void *stream);
/* *yes = 1 where opt_mha_varlen_matrix runs a kernel that merges into a->merge_o / merge_lse
 * itself (wgmma), else 0: the caller merges (opt_merge_states_vec). OPT_OK, or the device
 * query's error. */
int opt_mha_varlen_matrix_merges(const opt_varlen_args *a, int matrix, int *yes);

/* ------------------------------------------------------------ merge_states
 * SPEC section 3. oa, ob [t, h, d] in `dtype`; la, lb [h, t] f32 (+inf read as -inf);
 * out [t, h, d] in `dtype`; lse [h, t] f32. simple: one thread per output element. */
int opt_merge_states_simple(int t, int h, int d, int dtype, const void *oa, const void *ob,
                            const float *la, const float *lb, void *out, float *lse,
                            void *stream);

/* ------------------------------------------------------------ paged KV cache
 * SPEC section 0. Token t of a sequence whose block-table row is bt lives in block
 * bt[t / block_size] at offset t % block_size; an element (block, offset, head, dim) is
 * addressed per layout (values equal the reference's ref_kv_layout):
 *   OPT_KV_NHD       k, v [N, block_size, heads, head_dim]
 *   OPT_KV_HND       k, v [N, heads, block_size, head_dim]
 *   OPT_KV_SHUFFLED  k [N, heads, head_dim / x, block_size, x], v [N, heads, block_size / x,
 *                    head_dim, x], x = 16 bytes of elements (8 for bf16/f16, 16 for fp8)
 * Every offset is computed in 64 bits. */
enum { OPT_KV_NHD = 0, OPT_KV_HND = 1, OPT_KV_SHUFFLED = 2 };

typedef struct opt_kv_cache {
    int layout;                   /* OPT_KV_* */
    int dtype;                    /* element dtype: OPT_BF16, OPT_F16 or OPT_FP8E4M3 */
    int block_size, heads, head_dim;
    void *k, *v;                  /* k, v: [N, ...] per layout (written only by cache_write) */
    const float *k_scale, *v_scale; /* k_scale, v_scale: [1] f32 on the device; fp8 only
                                     * (value = code * scale), else unused */
} opt_kv_cache;

/* ------------------------------------------------------------- cache_write
 * SPEC section 1. Token i of k, v goes to flat slot slot_mapping[i] (block = slot / block_size,
 * offset = slot % block_size), -1 = skip; every other byte of the caches is left alone. fp8
 * caches store fp8(x / scale) (the quotient in f32, rounded to nearest even, saturated to
 * +-448); bf16/f16 caches of the source dtype store a copy of the bits. Slots must be distinct
 * and inside the pool (they live on the device, so the launcher cannot check that). */
typedef struct opt_cache_write_args {
    int tokens;                  /* T */
    int dtype;                   /* of k, v: OPT_BF16 or OPT_F16; the cache is that or fp8 */
    const void *k, *v;           /* k, v: [tokens, cache.heads, cache.head_dim] */
    const int64_t *slot_mapping; /* slot_mapping: [tokens] */
    opt_kv_cache cache;          /* written in place */
} opt_cache_write_args;

/* simple: one thread per (token, head, dim) element, grid-stride. */
int opt_cache_write_simple(const opt_cache_write_args *a, void *stream);

/* ------------------------------------------------------------ gather_cache
 * SPEC section 2. Tokens [starts[b], starts[b] + lens[b]) of sequence b go to rows
 * [cu_out[b], cu_out[b + 1]) of k, v (so lens[b] = cu_out[b + 1] - cu_out[b], and lens itself
 * is not needed), dequantized (fp8: code * scale in f32) and rounded to nearest even into
 * `dtype`; a bf16/f16 cache of that dtype is copied bit for bit. */
typedef struct opt_gather_cache_args {
    int batch, max_blocks;
    int rows;                    /* cu_out[batch] */
    int dtype;                   /* of k, v: OPT_BF16 or OPT_F16; the cache is that or fp8 */
    opt_kv_cache cache;
    const int32_t *block_table;  /* block_table: [batch, max_blocks] */
    const int32_t *starts;       /* starts: [batch] */
    const int32_t *cu_out;       /* cu_out: [batch + 1] */
    void *k, *v;                 /* k, v: [rows, cache.heads, cache.head_dim] */
} opt_gather_cache_args;

/* simple: one block per output row, one thread per (head, dim) element of it. */
int opt_gather_cache_simple(const opt_gather_cache_args *a, void *stream);

/* ------------------------------------------------------------ paged_decode
 * SPEC section 5. Query b attends the seq_lens[b] cached tokens of sequence b (0: out = 0,
 * lse = -inf). head_dim is the cache's. */
typedef struct opt_paged_decode_args {
    int batch, hq;
    int dtype;                   /* of q and out: OPT_BF16 or OPT_F16; the cache is that or fp8 */
    const void *q;               /* q: [batch, hq, cache.head_dim] */
    opt_kv_cache cache;
    const int32_t *block_table;  /* block_table: [batch, max_blocks] */
    int max_blocks;
    const int32_t *seq_lens;     /* seq_lens: [batch] */
    float scale, softcap;        /* softcap 0 = none */
    void *out;                   /* out: [batch, hq, cache.head_dim] */
    float *lse;                  /* lse: [hq, batch] */
} opt_paged_decode_args;

/* ------------------------------------------------------------------ extend
 * SPEC section 6. Request b: context_lens[b] tokens in the cache, cu_q[b + 1] - cu_q[b] >= 1
 * new tokens given contiguously; new query i sees the whole context and new keys j <= i. */
typedef struct opt_extend_args {
    int batch, tq, hq;
    int dtype;                   /* of q, k_new, v_new, out: OPT_BF16 or OPT_F16 */
    const void *q;               /* q: [tq, hq, cache.head_dim] */
    const void *k_new, *v_new;   /* k_new, v_new: [tq, cache.heads, cache.head_dim] */
    const int32_t *cu_q;         /* cu_q: [batch + 1] */
    const int32_t *context_lens; /* context_lens: [batch] */
    opt_kv_cache cache;          /* holds the contexts */
    const int32_t *block_table;  /* block_table: [batch, max_blocks] */
    int max_blocks;
    float scale, softcap;        /* softcap 0 = none */
    void *out;                   /* out: [tq, hq, cache.head_dim] */
    float *lse;                  /* lse: [hq, tq] */
    int matrix;                  /* OPT_MATRIX_*: chunked's and routed's attention kernels */
} opt_extend_args;

/* ------------------------------------------------------------------- mixed
 * SPEC section 7. Request r: context_lens[r] cached tokens and cu_q[r + 1] - cu_q[r] >= 1 new
 * ones, all of them already in the cache (the new rows are also given as k_new, v_new);
 * query i of request r sees keys j <= context_lens[r] + i. */
/* The same fields as opt_extend_args, with the meaning above (cache holds every key). */
typedef opt_extend_args opt_mixed_args;

/* simple, for the three paths: one block per (query token, query head), keys streamed in
 * tiles from the paged cache (extend: the new keys from k_new, v_new; mixed: every key from
 * the cache, k_new and v_new unread) with an online softmax in f32. head_dim <= 256. */
int opt_paged_decode_simple(const opt_paged_decode_args *a, void *stream);
int opt_extend_simple(const opt_extend_args *a, void *stream);
int opt_mixed_simple(const opt_mixed_args *a, void *stream);

/* mixed routed (issue 7): SPEC section 7's routed design from this library's kernels. A small
 * kernel classifies the requests from cu_q and context_lens on the device (decode: 1 new token
 * over a context; prefill: no context; extend: the rest) and orders them [decode : extend :
 * prefill], stable within a class; their rows are gathered contiguously (16-byte copies);
 * decodes run paged_decode split_kv (seq_len = context + 1; simple where split_kv does not take
 * the cache), extends extend chunked (context chunks of at most chunk_tokens), prefills
 * mha_varlen causal (opt_mha_varlen_matrix, a->matrix) over their k_new, v_new; out and lse
 * are scattered back to the arrival order. host_ctx, host_new: context_lens [batch] and new
 * tokens [batch] on the host, the same values as on the device, for the sizes only. Supported
 * where opt_mha_varlen_matrix_unsupported() gives no reason (NVIDIA sm_80+ bf16/f16; portable:
 * bf16, on AMD too; head_dim 64/128/256) with heads_q divisible by the cache's heads.
 * Deterministic (no atomics); not batch invariant (the split and chunk plans follow the
 * batch). */
const char *opt_mixed_routed_unsupported(const opt_mixed_args *a, int cc_major);
size_t opt_mixed_routed_workspace(const opt_mixed_args *a, const int32_t *host_ctx,
                                  const int32_t *host_new, int chunk_tokens);
int opt_mixed_routed(const opt_mixed_args *a, const int32_t *host_ctx, const int32_t *host_new,
                     int chunk_tokens, void *workspace, size_t workspace_bytes, void *stream);

/* mixed unified (issue 7): SPEC section 7's unified design on the matrix cores -- one kernel
 * for every token (varlen queries over the paged cache, bottom-right causal, every key from the
 * cache), paged_mma.h's engine with 16-row blocks for requests whose new tokens times the group
 * size fit 16 rows and 64-row blocks for the rest, split-KV over long key ranges with a combine
 * kernel (mixed_unified.hip). host_ctx, host_new: context_lens and new tokens on the host, the
 * same values as on the device, for the plan's sizes. Supported where paged_decode mma is
 * (NVIDIA sm_80+, bf16/f16 queries over a cache of their dtype or fp8e4m3, head_dim 64/128/256).
 * Deterministic; not batch invariant (the split length follows the batch). */
const char *opt_mixed_unified_unsupported(const opt_mixed_args *a, int cc_major);
size_t opt_mixed_unified_workspace(const opt_mixed_args *a, const int32_t *host_ctx,
                                   const int32_t *host_new);
int opt_mixed_unified(const opt_mixed_args *a, const int32_t *host_ctx, const int32_t *host_new,
                      void *workspace, size_t workspace_bytes, void *stream);

/* extend chunked (issue 6): SPEC section 6's algorithm from this library's kernels -- mha_varlen
 * (opt_mha_varlen_matrix with a->matrix: wgmma on Hopper, mma on other NVIDIA, portable on
 * AMD or when asked) causal over the new tokens; the contexts end to end in chunks of at most
 * chunk_tokens, each gathered (gather_cache vec/simple) into standard layout, attended without
 * a mask and merged (opt_chunk_attend_merge: in wgmma's epilogue, else merge_states vec).
 * host_ctx: context_lens on the host, for the plan's sizes. Supported where
 * opt_mha_varlen_matrix_unsupported() gives no reason (NVIDIA sm_80+ bf16/f16; portable: bf16,
 * on AMD too; head_dim 64/128/256). */
/* The chunk plan shared by extend and mla_prefill: contexts (context_lens [batch], device) laid
 * end to end and cut every chunk_tokens tokens; for chunk c, meta[c * (2 batch + 1) ..] holds
 * starts[batch] (tokens into each request's context) then cu[batch + 1] (row offsets of each
 * request's part in the chunk). chunks = ceil(sum of context_lens / chunk_tokens). */
int opt_context_chunk_plan(const int32_t *context_lens, int batch, int chunk_tokens, int chunks,
                           int32_t *meta, void *stream);
/* One context chunk of extend or mla_prefill: the attention ch (its out and lse unset; its
 * tile prefix in ts, written by the new tokens' call) merged with the running (o_acc, l_acc)
 * into (mo, ml) -- in the attention's epilogue where opt_mha_varlen_matrix_merges says so,
 * else into (oc, lc) and then opt_merge_states_vec. */
int opt_chunk_attend_merge(opt_varlen_args *ch, int matrix, void *ts, size_t ts_bytes,
                           const void *o_acc, const float *l_acc, void *oc, float *lc, void *mo,
                           float *ml, void *stream);
const char *opt_extend_chunked_unsupported(const opt_extend_args *a, int cc_major);
size_t opt_extend_chunked_workspace(const opt_extend_args *a, const int32_t *host_ctx,
                                    int chunk_tokens);
int opt_extend_chunked(const opt_extend_args *a, const int32_t *host_ctx, int chunk_tokens,
                       void *workspace, size_t workspace_bytes, void *stream);

/* --------------------------------------------------- MLA and DeepSeek V4 sparse decode
 * SPEC sections 8, 9 and 10 (DeepSeek V3/R1 and V4 geometry: one latent KV head read by every
 * query head). q and out are bf16; lse [hq, tokens] f32. */

/* A paged latent cache: token t of a sequence whose block-table row is bt is row
 * bt[t / block_size] * block_size + t % block_size. */
typedef struct opt_latent_cache {
    int dtype;                   /* OPT_BF16, or OPT_FP8E4M3 (value = code * *k_scale) */
    int block_size;
    const void *data;            /* data: [N, block_size, 576] = [c_kv 512 | k_pe 64] */
    const float *k_scale;        /* k_scale: [1] f32 on the device; fp8 only, else unused */
} opt_latent_cache;

/* SPEC section 8. Query b attends the seq_lens[b] cached rows of sequence b over all 576
 * dims; the value is the first 512 dims of the same rows (0 rows: out = 0, lse = -inf). */
typedef struct opt_mla_decode_args {
    int batch, hq;
    const void *q;               /* q: [batch, hq, 576] bf16 (= [q_lat 512 | q_pe 64]) */
    opt_latent_cache cache;
    const int32_t *block_table;  /* block_table: [batch, max_blocks] */
    int max_blocks;
    const int32_t *seq_lens;     /* seq_lens: [batch] */
    float scale;
    void *out;                   /* out: [batch, hq, 512] bf16 */
    float *lse;                  /* lse: [hq, batch] */
} opt_mla_decode_args;

/* simple: one block per (sequence, head); each tile of 128 rows has its 576-dim logits
 * computed one warp per row, then an online softmax in f32; 4 latent dims per thread. */
int opt_mla_decode_simple(const opt_mla_decode_args *a, void *stream);

/* SPEC section 9. Request b: context_lens[b] latent rows in the cache, then its new tokens
 * cu_q[b] .. cu_q[b + 1] - 1 (latent c_kv, k_pe); head h decompresses every row into
 * k = [W_UK_h c_kv (rounded to bf16) | k_pe] (192) and v = W_UV_h c_kv (rounded to bf16)
 * (128); new query i of request b attends keys 0 .. context_lens[b] + i (causal, bottom-right). */
typedef struct opt_mla_prefill_args {
    int batch, tq, hq;
    int tk;                      /* keys: the sum of context_lens[b] + cu_q[b + 1] - cu_q[b] */
    const void *q;               /* q: [tq, hq, 192] bf16 (= [q_nope 128 | q_pe 64]) */
    const void *c_kv;            /* c_kv: [tq, 512] bf16 */
    const void *k_pe;            /* k_pe: [tq, 64] bf16 */
    const void *w_kvb;           /* w_kvb: [hq * 256, 512] bf16 (W_UK_h = rows 256h .. 256h + 127,
                                    W_UV_h = rows 256h + 128 .. 256h + 255) */
    const int32_t *cu_q;         /* cu_q: [batch + 1] */
    const int32_t *context_lens; /* context_lens: [batch] */
    opt_latent_cache cache;      /* holds the contexts (unread when tk == tq) */
    const int32_t *block_table;  /* block_table: [batch, max_blocks] */
    int max_blocks;
    float scale;
    void *workspace;             /* workspace: [workspace_bytes] device scratch */
    size_t workspace_bytes;      /* >= opt_mla_prefill_workspace(batch, tk, hq) */
    void *out;                   /* out: [tq, hq, 128] bf16 */
    float *lse;                  /* lse: [hq, tq] */
    int matrix;                  /* OPT_MATRIX_*: mma's GEMM and attention kernels */
} opt_mla_prefill_args;

/* Bytes of device scratch opt_mla_prefill_simple needs: key offsets, the decompressed
 * k_nope and v of every key and head (bf16), k_pe of every key (f32). */
size_t opt_mla_prefill_workspace(int batch, int tk, int hq);

/* simple: a naive decompression kernel (one block per (key, head), f32 sums, bf16 results)
 * into the workspace, then one block per (query token, head) over all its keys in one pass,
 * tiles of 128 with an online softmax in f32 (not the chunked context algorithm). */
int opt_mla_prefill_simple(const opt_mla_prefill_args *a, void *stream);

/* mma (issue 6 item 4): SPEC 9 and 6 on the matrix cores, NVIDIA sm_80+ only (mma.sync,
 * ldmatrix, cp.async). A decompression GEMM (128 keys x 128 columns per block, bf16 in, f32
 * accumulation, bf16 out) reads each key's latent where it lives -- c_kv, or the paged cache
 * through the block table, fp8 dequantized in shared memory -- and writes K [keys, hq, 192] =
 * [k_nope | k_pe] and V [keys, hq, 128]; mha_varlen mma (192/128, hkv = hq) attends the new
 * tokens causally, then each context chunk (the contexts end to end, at most chunk_tokens keys
 * per chunk) without a mask, merged by merge_states vec; partials in bf16 / f32 between merges.
 * host_ctx: context_lens on the host, for the plan's sizes. a->workspace must hold
 * opt_mla_prefill_mma_workspace(batch, tq, hq, host_ctx, chunk_tokens) bytes (not
 * opt_mla_prefill_workspace's). unsupported(): NULL when it runs, else why not. With
 * matrix = OPT_MATRIX_PORTABLE (and on AMD) the GEMM and the attention are the vendor-neutral
 * kernels (mla_prefill_portable_decompress_kernel, mha_varlen portable). */
const char *opt_mla_prefill_mma_unsupported(int hq, int matrix, int cc_major);
size_t opt_mla_prefill_mma_workspace(int batch, int tq, int hq, const int32_t *host_ctx,
                                     int chunk_tokens);
int opt_mla_prefill_mma(const opt_mla_prefill_args *a, const int32_t *host_ctx, int chunk_tokens,
                        void *stream);

/* SPEC section 10. One scope: a cache in the 584-byte blocked FP8 format (block stride
 * ceil(block_size * 584 / 576) * 576 bytes) and per token a row of flat-slot indices; entry k
 * of token t is used iff k < len[t] and idx[t][k] != -1. */
typedef struct opt_dsv4_scope {
    const uint8_t *cache;        /* cache: [N, stride(block_size)] bytes */
    int block_size;
    const int32_t *idx;          /* idx: [tokens, width] */
    const int32_t *len;          /* len: [tokens], 0 <= len <= width */
    int width;
} opt_dsv4_scope;

typedef struct opt_dsv4_args {
    int tokens, hq;
    const void *q;               /* q: [tokens, hq, 512] bf16 */
    opt_dsv4_scope swa, extra;
    const float *sink;           /* sink: [hq] f32 (+-inf allowed), or NULL for none */
    float scale;
    void *out;                   /* out: [tokens, hq, 512] bf16 */
    float *lse;                  /* lse: [hq, tokens], without the sink */
} opt_dsv4_args;

/* simple: one block per (token, head) over the used entries of the SWA then the extra scope
 * (duplicates count twice), rows decoded in registers (only indexed rows are read), tiles of
 * 128 with an online softmax in f32, V = K, then the sink once. */
int opt_dsv4_sparse_decode_simple(const opt_dsv4_args *a, void *stream);

/* ------------------------------------------- streaming data movement (issue 5 item 4)
 * vec variants of merge_states, cache_write and gather_cache: same arguments, same results
 * (bit for bit where the simple kernel is judged so), 16-byte accesses.
 * merge_states_vec: one thread group per (token, head) row, 16 bytes of a row per thread (one
 *   element where a row is not a multiple of 16 bytes or a pointer is not 16-byte aligned).
 * cache_write_vec, gather_cache_vec: chunks of x dims (16 bytes of cache elements) per access;
 *   shuffled V moves whole x-token groups transposed in registers. They need head_dim % x == 0
 *   (x = 8 for bf16/f16 caches, 16 for fp8) and 16-byte aligned k, v and caches; else
 *   OPT_EINVAL. */
int opt_merge_states_vec(int t, int h, int d, int dtype, const void *oa, const void *ob,
                         const float *la, const float *lb, void *out, float *lse, void *stream);
int opt_cache_write_vec(const opt_cache_write_args *a, void *stream);
int opt_gather_cache_vec(const opt_gather_cache_args *a, void *stream);

/* --------------------------------------------- paged_decode split_kv (issue 5)
 * Flash-decoding over the paged cache, same arguments and contract as simple (SPEC section 5):
 * blocks over (sequence, KV head, split, up to 8 of its query heads), each KV byte of a split
 * read once for all its query heads, 16-byte loads in the cache's own layout, fp8 decoded in
 * registers; per-split (out, lse) in f32 in the workspace, merged by a second kernel. The split
 * count follows the batch, the heads, max_blocks * block_size and the device's SM count.
 * opt_paged_decode_split_kv_unsupported: NULL when split_kv takes this head_dim, cache dtype
 * (OPT_*) and layout (OPT_KV_*), else why not. The workspace it needs is
 * opt_paged_decode_split_kv_workspace(batch, hq, cache.heads, cache.head_dim, max_blocks,
 * cache.block_size) bytes (0 when no sequence can need two splits). */
const char *opt_paged_decode_split_kv_unsupported(int head_dim, int kv_dtype, int layout);
size_t opt_paged_decode_split_kv_workspace(int batch, int hq, int hkv, int head_dim, int max_blocks,
                                           int block_size);
int opt_paged_decode_split_kv(const opt_paged_decode_args *a, void *workspace,
                              size_t workspace_bytes, void *stream);

/* paged_decode mma (issue 5): the same contract and workspace format as split_kv, on the
 * matrix cores (NVIDIA sm_80+: mma.sync, ldmatrix, cp.async): blocks over (sequence, KV head,
 * split, up to 16 of its query heads), 64-token tiles copied asynchronously in the cache's own
 * layout through a 2-4 deep ring, fp8 dequantized in registers, Q K^T and P V on the matrix
 * cores (optimized/paged_mma.h, the engine mixed unified shares); the split count from waves
 * of the kernel's occupancy, the workspace sized for the most splits any device takes. bf16 or
 * f16 queries over a cache of that dtype or fp8e4m3; head_dim 64, 128, 256.
 * opt_paged_decode_mma_unsupported: NULL when it runs (cc_major: the device's compute
 * capability major), else why not (always a reason on AMD). */
const char *opt_paged_decode_mma_unsupported(int head_dim, int q_dtype, int kv_dtype, int cc_major);
size_t opt_paged_decode_mma_workspace(int batch, int hq, int hkv, int head_dim, int max_blocks,
                                      int block_size);
int opt_paged_decode_mma(const opt_paged_decode_args *a, void *workspace, size_t workspace_bytes,
                         void *stream);
/* On Hopper, mma runs a sequence's 2-8 splits as one thread-block cluster that merges them
 * through distributed shared memory (no combine kernel) where that costs no resident blocks
 * and the grid is one wave; the merge has the combine kernel's arithmetic, so the bits are the
 * same either way. opt_paged_decode_mma_clusters(on): 1 allows that (the default), 0 keeps the
 * workspace and the combine; returns the previous setting (-1 only asks). The process's last
 * opt_paged_decode_mma launch used clusters iff opt_paged_decode_mma_used_clusters() is 1.
 * Both for tests and A/B timing; not synchronized between threads. */
int opt_paged_decode_mma_clusters(int on);
int opt_paged_decode_mma_used_clusters(void);

/* ------------------------------------- MLA and DSv4 decode on the tensor cores (issue 5)
 * NVIDIA-only variants (mma.sync, movmatrix, cp.async; gpu_port.h GPU_HAS_MMA_SYNC); their
 * *_unsupported(..., cc_major) give NULL when they run on a device of that compute capability
 * major, else why not (always a reason on other backends).
 *
 * mla_decode split_kv: same arguments and contract as simple (SPEC section 8). Blocks of 16
 * query heads read every latent row once for all of them; the batch's keys laid end to end
 * are cut into equal ranges, one per block, whatever the sequence lengths (whole sequences per
 * range when the batch fills about one wave that way); each (range, sequence) pair leaves an
 * f32 (out, lse) partial in the workspace, merged by a second kernel, except a sequence inside
 * one range, whose block writes the final row.
 * The workspace needs opt_mla_decode_split_kv_workspace(batch, hq) bytes. */
const char *opt_mla_decode_split_kv_unsupported(int batch, int hq, int cc_major);
size_t opt_mla_decode_split_kv_workspace(int batch, int hq);
int opt_mla_decode_split_kv(const opt_mla_decode_args *a, void *workspace, size_t workspace_bytes,
                            void *stream);

/* mla_decode wgmma (NVIDIA sm_90a, opt_wgmma_unsupported()): split_kv's key ranges, partials
 * and combine with a Hopper warpgroup-MMA segment: blocks of 64 query heads (two warpgroups),
 * key tiles of 64 rows in shared memory, S and O by wgmma; fp8 rows decoded to bf16 in shared
 * memory. For many heads (128: matrix-bound); fewer than 64 heads pad the tile. The workspace
 * needs opt_mla_decode_wgmma_workspace(batch, hq) bytes. */
const char *opt_mla_decode_wgmma_unsupported(int batch, int hq, int cc_major);
size_t opt_mla_decode_wgmma_workspace(int batch, int hq);
int opt_mla_decode_wgmma(const opt_mla_decode_args *a, void *workspace, size_t workspace_bytes,
                         void *stream);

/* dsv4_sparse_decode packed: same arguments and contract as simple (SPEC section 10). One
 * block per (token, group of 16 query heads): each indexed row is read and dequantized once
 * for the group, 16-byte copies, e8m0 scales applied per 64-dim tile in registers, one online
 * softmax per head, the sink once; no workspace. */
const char *opt_dsv4_sparse_decode_packed_unsupported(int tokens, int hq, int cc_major);
int opt_dsv4_sparse_decode_packed(const opt_dsv4_args *a, void *stream);

/* dsv4_sparse_decode wgmma (NVIDIA sm_90a, opt_wgmma_unsupported()): one block per (token,
 * group of 64 query heads) on the latent_wgmma.h engine (S and O by Hopper warpgroup MMA from
 * shared memory); indexed rows staged raw and decoded to bf16 in shared memory by the threads
 * that copied them; the sink once; no workspace. For 64-128 heads (matrix-bound); fewer heads
 * pad the 64-row tile. */
const char *opt_dsv4_sparse_decode_wgmma_unsupported(int tokens, int hq, int cc_major);
int opt_dsv4_sparse_decode_wgmma(const opt_dsv4_args *a, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_OPT_H */
