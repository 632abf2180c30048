/* hx_kvcache.h - the paged KV cache as the harness builds, checks and describes it, shared by
 * the cache_write, gather_cache, paged_decode, extend and mixed path descriptors.
 *
 * Tensors (SPEC section 0): k_cache, v_cache in the case's layout and kv_dtype
 *   nhd [N, bs, Hkv, D] | hnd [N, Hkv, bs, D] | shuffled k [N, Hkv, D/x, bs, x], v [N, Hkv, bs/x, D, x];
 * block_table [B, max_blocks] i32 (unused entries -1); for fp8e4m3 caches k_scale, v_scale
 * [1] f32. A cache built for attention holds NaN of its dtype (fp8: 0x7F) in every slot that
 * no token occupies, in referenced and unreferenced blocks alike, so a kernel that reads past
 * a sequence's length, or a wrong block, produces NaN.
 */
#ifndef ATTN_HX_KVCACHE_H
#define ATTN_HX_KVCACHE_H

#include "hx.h"
#include "ref_paged.h"

/* k_scale and v_scale when not given: N(0,1) data (|x| < 3.5) lands at |x / scale| < 222,
 * inside fp8e4m3's +-448, and a power of two keeps x * scale exact in bf16. */
#define HX_KV_DEFAULT_SCALE (1.0 / 64)

/* check(): fill and validate the cache keys of a case whose dtype, heads_kv and head_dim are
 * set: layout (nhd), kv_dtype (the case dtype; or fp8e4m3), block_size (16), block_alloc
 * (permuted), k_scale and v_scale (fp8 only: HX_KV_DEFAULT_SCALE, rounded to f32). */
int hx_kv_check(hx_case *c, hx_err *e);
/* check() of the attention paths over a paged cache (paged_decode, extend, mixed): heads_q and
 * head_dim required, heads_kv = heads_q (dividing it), scale = 1/sqrt(head_dim), dtype = bf16
 * (bf16 or f16), then hx_kv_check. */
int hx_kv_check_attention(hx_case *c, hx_err *e);

/* Blocks in the pool for n sequences of lens[b] tokens: num_blocks, or as many as needed
 * (what hx_make_block_table allocates). */
int64_t hx_kv_pool_blocks(const hx_case *c, const int32_t *lens, int n);

/* The cache of a case over the tensors of `in` (pool size from k_cache, scales from the
 * k_scale/v_scale tensors of an fp8 cache). */
ref_kv_cache hx_kv_cache(const hx_case *c, const hx_tensors *in);

/* Add k_cache and v_cache (zero-filled) for a pool of num_blocks blocks. */
int hx_kv_add_caches(const hx_case *c, hx_tensors *set, int num_blocks, hx_err *e);
/* fp8 caches: add the k_scale and v_scale inputs holding the case's scales (else nothing). */
int hx_kv_add_scales(const hx_case *c, hx_tensors *in, hx_err *e);

/* Every element of a cache tensor set to the NaN of its dtype. */
void hx_kv_fill_nan(hx_tensor *t);

/* Flat slot of token `pos` of the sequence whose block-table row is bt. */
int64_t hx_kv_slot(const int32_t *bt, int block_size, int64_t pos);

/* make_inputs(): block_table for n sequences of lens[b] cached tokens, the caches (NaN
 * everywhere) and their scales, then the rows of those tokens, packed sequence after sequence, written to
 * their slots by the reference writer (fp8: quantized with the case's scales).
 *   k, v: [sum(lens), Hkv, D] in src_dtype */
int hx_kv_make(const hx_case *c, hx_tensors *in, const int32_t *lens, int n, ref_dtype src_dtype,
               const void *k, const void *v, hx_err *e);

/* check_inputs(): cache tensors of the case's dtype and layout (both of one pool), and for
 * fp8 the scales, f32 [1], positive and finite. */
int hx_kv_check_cache(const hx_case *c, const hx_tensors *in, hx_err *e);
/* hx_kv_check_cache, and every block-table entry that n sequences of lens[b] tokens use
 * inside the pool. */
int hx_kv_check_inputs(const hx_case *c, const hx_tensors *in, const int32_t *lens, int n,
                       hx_err *e);

/* "block 7 slot 3 head 0 dim 12" for element i of k_cache (is_v = 0) or v_cache (1). */
void hx_kv_locate(const hx_case *c, int is_v, size_t i, char *buf, size_t n);

/* Bytes of one token's K and V rows in the cache. */
double hx_kv_token_bytes(const hx_case *c);

#ifdef ATTN_HAVE_GPU
#include "opt.h"
/* The case's cache as the kernels' launchers take it, over the device copies of `in`. */
opt_kv_cache hx_kv_gpu_cache(const hx_case *c, const hx_dtensors *in);
/* Columns of the device block table [batch, max_blocks]. */
int hx_kv_gpu_max_blocks(const hx_dtensors *in, int batch);
/* Launcher arguments of the attention paths over the cache with new tokens (extend, mixed: one
 * struct): shapes and scalars from the case; with in and out, the device pointers too. */
opt_extend_args hx_kv_gpu_attn_args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out);
/* unsupported() of the one-block-per-(token, head) `simple` attention kernels over the cache. */
const char *hx_kv_simple_unsupported(const hx_case *c, const hx_gpu *g);
/* unsupported() of the `vec` data-movement kernels (16-byte chunks of x = 16 / element size dims). */
const char *hx_kv_vec_unsupported(const hx_case *c, const hx_gpu *g);
#endif // ATTN_HAVE_GPU

#endif /* ATTN_HX_KVCACHE_H */
