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
/* Overwrite buf [bytes] on the device (evicts the L2 before a cold-cache timing). */
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
} opt_varlen_args;

/* simple: one block per (query token, head), keys streamed in tiles with an online softmax
 * in f32. Supports dqk, dv <= 256 and dtypes f32/bf16/f16. */
int opt_mha_varlen_simple(const opt_varlen_args *a, void *stream);

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
} opt_extend_args;

/* ------------------------------------------------------------------- mixed
 * SPEC section 7. Request r: context_lens[r] cached tokens and cu_q[r + 1] - cu_q[r] >= 1 new
 * ones, all of them already in the cache (the new rows are also given as k_new, v_new);
 * query i of request r sees keys j <= context_lens[r] + i. */
typedef struct opt_mixed_args {
    int batch, tq, hq;
    int dtype;                   /* of q, k_new, v_new, out: OPT_BF16 or OPT_F16 */
    const void *q;               /* q: [tq, hq, cache.head_dim] */
    const void *k_new, *v_new;   /* k_new, v_new: [tq, cache.heads, cache.head_dim] */
    const int32_t *cu_q;         /* cu_q: [batch + 1] */
    const int32_t *context_lens; /* context_lens: [batch] */
    opt_kv_cache cache;          /* holds context and new tokens */
    const int32_t *block_table;  /* block_table: [batch, max_blocks] */
    int max_blocks;
    float scale, softcap;        /* softcap 0 = none */
    void *out;                   /* out: [tq, hq, cache.head_dim] (original token order) */
    float *lse;                  /* lse: [hq, tq] */
} opt_mixed_args;

/* simple, for the three paths: one block per (query token, query head), keys streamed in
 * tiles from the paged cache (extend: the new keys from k_new, v_new; mixed: every key from
 * the cache, k_new and v_new unread) with an online softmax in f32. head_dim <= 256. */
int opt_paged_decode_simple(const opt_paged_decode_args *a, void *stream);
int opt_extend_simple(const opt_extend_args *a, void *stream);
int opt_mixed_simple(const opt_mixed_args *a, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_OPT_H */
