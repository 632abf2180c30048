/* cache_ops.hip - the paged KV cache's data movement on the GPU: SPEC section 1, cache_write
 * (reshape_and_cache), and section 2, gather_cache (cp_mha_gather_cache). Both are compared
 * bit-exactly against the reference, so every value goes through exactly the reference's
 * rounding steps; the addressing is paged_kv.h's.
 *
 * cache_write_simple: one thread per (token, kv head, dim) element of k and v, grid-stride.
 *   A token with slot -1 writes nothing; otherwise the thread writes its K and V element at
 *   (slot / block_size, slot % block_size, head, dim) in the cache's layout: a bit copy for a
 *   cache of the source dtype, fp8(x / scale) for fp8 (the quotient in f32, as the reference's
 *   f64 quotient rounded to f32; then round to nearest even, saturating to +-448).
 * gather_cache_simple: one block per output row (a gathered token; grid-stride over rows), its
 *   threads striding over the row's (kv head, dim) elements. The block finds its sequence by binary search over
 *   cu_out, its token's block through the block table, and writes each element dequantized:
 *   a bit copy for a cache of the output dtype, fp8 code * scale in f32 then rounded to nearest
 *   even into the output dtype (the reference's f64 product rounded to f32, then to bf16/f16).
 */
#include "paged_kv.h"

#include <stdint.h>

enum {
    CACHE__THREADS = 256,
    CACHE__MAX_BLOCKS = 65536, /* grid-stride loops cover the rest */
};

/* ------------------------------------------------------------ element encode */
/* Source element i (dtype DT) as the cache code of dtype KVT, stored at element di of dst.
 * KVT == DT (bf16/f16): the bits themselves (a NaN keeps its payload, as the reference's
 * copy does). */
template <int DT, int KVT>
__device__ inline void cache__put(void *dst, size_t di, const void *src, size_t si, float scale)
{
    if (KVT == DT)
        ((uint16_t *)dst)[di] = ((const uint16_t *)src)[si];
    else
        ((uint8_t *)dst)[di] = num_f32_to_fp8e4m3(num_load_f32(DT, src, si) / scale);
}

/* ------------------------------------------------------------- cache_write */
/* DT: dtype of k, v (bf16/f16); KVT: the cache's (DT or fp8). */
template <int DT, int KVT>
__global__ void __launch_bounds__(CACHE__THREADS)
cache_write_simple_kernel(const void *__restrict__ k,                /* k: [tokens, heads, head_dim] */
                          const void *__restrict__ v,                /* v: [tokens, heads, head_dim] */
                          const int64_t *__restrict__ slot_mapping, /* slot_mapping: [tokens] */
                          opt_kv_cache cache, int tokens)
{
    const int h = cache.heads, d = cache.head_dim;
    const size_t n = (size_t)tokens * h * d;
    const float ks = KVT == OPT_FP8E4M3 ? *cache.k_scale : 1.0f;
    const float vs = KVT == OPT_FP8E4M3 ? *cache.v_scale : 1.0f;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const size_t row = e / (size_t)d; /* token * h + head */
        const int dim = (int)(e - row * d);
        const size_t tok = row / (size_t)h;
        const int head = (int)(row - tok * h);
        const int64_t slot = slot_mapping[tok];
        if (slot < 0)
            continue;
        const int64_t blk = slot / cache.block_size;
        const int off = (int)(slot % cache.block_size);
        cache__put<DT, KVT>(cache.k, pkv_index(cache, 0, blk, off, head, dim), k, e, ks);
        cache__put<DT, KVT>(cache.v, pkv_index(cache, 1, blk, off, head, dim), v, e, vs);
    }
}

/* ------------------------------------------------------------ gather_cache */
/* DT: dtype of the output k, v (bf16/f16); KVT: the cache's (DT or fp8). */
template <int DT, int KVT>
__global__ void __launch_bounds__(CACHE__THREADS)
gather_cache_simple_kernel(opt_kv_cache cache,
                           const int32_t *__restrict__ block_table, /* block_table: [batch, max_blocks] */
                           const int32_t *__restrict__ starts,      /* starts: [batch] */
                           const int32_t *__restrict__ cu_out,      /* cu_out: [batch + 1] */
                           void *__restrict__ k,                    /* k: [rows, heads, head_dim] */
                           void *__restrict__ v,                    /* v: [rows, heads, head_dim] */
                           int batch, int max_blocks, int rows)
{
    const int h = cache.heads, d = cache.head_dim;
    const float ks = KVT == OPT_FP8E4M3 ? *cache.k_scale : 1.0f;
    const float vs = KVT == OPT_FP8E4M3 ? *cache.v_scale : 1.0f;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        /* The row's sequence: the last b with cu_out[b] <= row (empty sequences before it
         * share its start and are skipped); cu_out[batch] = rows > row closes the last one. */
        int lo = 0, hi = batch;
        while (hi - lo > 1) {
            const int mid = lo + (hi - lo) / 2;
            if (cu_out[mid] <= row)
                lo = mid;
            else
                hi = mid;
        }
        const int b = lo;
        const int64_t pos = (int64_t)starts[b] + (row - cu_out[b]);
        const int32_t *bt = block_table + (size_t)b * max_blocks;
        const int64_t blk = bt[pos / cache.block_size];
        const int off = (int)(pos % cache.block_size);

        const size_t out_row = (size_t)row * h * d;
        for (int e = threadIdx.x; e < h * d; e += CACHE__THREADS) {
            const int head = e / d, dim = e - head * d;
            const size_t ki = pkv_index(cache, 0, blk, off, head, dim);
            const size_t vi = pkv_index(cache, 1, blk, off, head, dim);
            if (KVT == DT) {
                ((uint16_t *)k)[out_row + e] = ((const uint16_t *)cache.k)[ki];
                ((uint16_t *)v)[out_row + e] = ((const uint16_t *)cache.v)[vi];
            } else {
                num_store_f32(DT, k, out_row + e, pkv_load<KVT>(cache.k, ki, ks));
                num_store_f32(DT, v, out_row + e, pkv_load<KVT>(cache.v, vi, vs));
            }
        }
    }
}

/* --------------------------------------------------------------- launchers */
/* The cache description a kernel can use with a source/output dtype `dtype`: a known layout,
 * an element dtype of `dtype` or fp8 (with both scales), positive sizes, shuffled extents
 * divisible by x. Device-resident facts (slots, block ids, scales' values) are the caller's. */
static int cache__check(const opt_kv_cache *c, int dtype)
{
    if (dtype != OPT_BF16 && dtype != OPT_F16)
        return OPT_EINVAL;
    if (c->dtype != dtype && c->dtype != OPT_FP8E4M3)
        return OPT_EINVAL;
    if (c->dtype == OPT_FP8E4M3 && (!c->k_scale || !c->v_scale))
        return OPT_EINVAL;
    if (c->block_size <= 0 || c->heads <= 0 || c->head_dim <= 0 || !c->k || !c->v)
        return OPT_EINVAL;
    if (c->layout != OPT_KV_NHD && c->layout != OPT_KV_HND && c->layout != OPT_KV_SHUFFLED)
        return OPT_EINVAL;
    const int x = pkv_x(c->dtype);
    if (c->layout == OPT_KV_SHUFFLED && (c->head_dim % x || c->block_size % x))
        return OPT_EINVAL;
    return OPT_OK;
}

template <int DT, int KVT>
static int cache_write__launch(const opt_cache_write_args *a, hipStream_t stream)
{
    const size_t n = (size_t)a->tokens * a->cache.heads * a->cache.head_dim;
    size_t blocks = (n + CACHE__THREADS - 1) / CACHE__THREADS;
    if (blocks > CACHE__MAX_BLOCKS)
        blocks = CACHE__MAX_BLOCKS;
    cache_write_simple_kernel<DT, KVT><<<(unsigned)blocks, CACHE__THREADS, 0, stream>>>(
        a->k, a->v, a->slot_mapping, a->cache, a->tokens);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

extern "C" int opt_cache_write_simple(const opt_cache_write_args *a, void *stream)
{
    if (!a || a->tokens < 0)
        return OPT_EINVAL;
    int rc = cache__check(&a->cache, a->dtype);
    if (rc)
        return rc;
    if (a->tokens == 0)
        return OPT_OK;
    if (!a->k || !a->v || !a->slot_mapping)
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    const int fp8 = a->cache.dtype == OPT_FP8E4M3;
    if (a->dtype == OPT_BF16)
        return fp8 ? cache_write__launch<OPT_BF16, OPT_FP8E4M3>(a, s)
                   : cache_write__launch<OPT_BF16, OPT_BF16>(a, s);
    return fp8 ? cache_write__launch<OPT_F16, OPT_FP8E4M3>(a, s)
               : cache_write__launch<OPT_F16, OPT_F16>(a, s);
}

template <int DT, int KVT>
static int gather__launch(const opt_gather_cache_args *a, hipStream_t stream)
{
    const int blocks = a->rows < CACHE__MAX_BLOCKS ? a->rows : CACHE__MAX_BLOCKS;
    gather_cache_simple_kernel<DT, KVT><<<(unsigned)blocks, CACHE__THREADS, 0, stream>>>(
        a->cache, a->block_table, a->starts, a->cu_out, a->k, a->v, a->batch, a->max_blocks,
        a->rows);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* cu_out must be the prefix sums of lens, and every window inside its sequence's cached
 * tokens (SPEC section 2): they live on the device, so the launcher cannot check that. */
extern "C" int opt_gather_cache_simple(const opt_gather_cache_args *a, void *stream)
{
    if (!a || a->batch < 0 || a->rows < 0 || a->max_blocks < 0 || (a->rows > 0 && a->batch == 0))
        return OPT_EINVAL;
    int rc = cache__check(&a->cache, a->dtype);
    if (rc)
        return rc;
    if ((size_t)a->cache.heads * a->cache.head_dim > INT32_MAX)
        return OPT_EINVAL; /* a row's elements are counted in int */
    if (a->rows == 0)
        return OPT_OK;
    if (!a->block_table || !a->starts || !a->cu_out || !a->k || !a->v)
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    const int fp8 = a->cache.dtype == OPT_FP8E4M3;
    if (a->dtype == OPT_BF16)
        return fp8 ? gather__launch<OPT_BF16, OPT_FP8E4M3>(a, s) : gather__launch<OPT_BF16, OPT_BF16>(a, s);
    return fp8 ? gather__launch<OPT_F16, OPT_FP8E4M3>(a, s) : gather__launch<OPT_F16, OPT_F16>(a, s);
}
