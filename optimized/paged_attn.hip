/* paged_attn.hip - attention over the paged KV cache on the GPU: SPEC section 5 (paged_decode),
 * section 6 (extend) and section 7 (mixed), `simple` variants: simple, obviously correct, not
 * slow on purpose. All three are one device routine, pattn__attend_row: one block of 128
 * threads attends one query row (token, query head) over keys 0..n_keys-1 of its sequence,
 * where key j < n_cached is token j of the sequence in the paged cache (block table, layout,
 * element dtype, fp8 scale: paged_kv.h) and key j >= n_cached is row new_row0 + (j - n_cached)
 * of a contiguous k_new/v_new. The query row is decoded once into shared memory as f32; keys
 * are streamed in tiles of 128, one key per thread: the thread computes its logit (f32 dot,
 * scale, optional soft-cap) and its V row's base index, the block reduces the tile's max and
 * sum (warp shuffles, then shared memory), and an online softmax (running max m and sum l in
 * f32, never exp(-inf - -inf)) rescales the output accumulators, which each thread holds for
 * dims tid and tid + 128. P stays f32. The output is rounded once, to nearest even, into the
 * query dtype; the LSE is the natural log, f32, [hq, tokens]. No visible key: out = 0,
 * lse = -inf.
 *
 * paged_decode_simple: grid (batch, hq); query b sees the seq_lens[b] cached tokens.
 * extend_simple: grid (tq, hq); new query i of request b (found by binary search over cu_q)
 *   sees the c_b context tokens from the cache and new keys j <= i from k_new/v_new: SPEC
 *   section 6's ground truth in one pass (the chunked algorithm is another variant's job).
 * mixed_simple: grid (tq, hq); query i of request r sees keys j <= c_r + i, all read from the
 *   cache, which holds every request's context and new tokens (the `unified` design).
 */
#include "paged_kv.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

enum {
    PATTN__THREADS = 128, /* one key per thread per tile */
    PATTN__MAX_DIM = 256, /* head_dim */
    PATTN__ACC = PATTN__MAX_DIM / PATTN__THREADS, /* output dims per thread */
    PATTN__MAX_WARPS = PATTN__THREADS / 32,       /* warps per block at the narrowest warp */
};

/* ------------------------------------------------------------ block reductions */
/* Every thread of the block gets the same result: each reads all the warp partials in the
 * same order. The trailing barrier lets the caller reuse `partial` at once. NaN: fmaxf skips
 * it in the max (the sum then carries it to the output, as in the reference). */
__device__ float pattn__block_max(float v, float *partial /* [PATTN__MAX_WARPS] */)
{
    for (int m = GPU_WARP_SIZE / 2; m > 0; m /= 2)
        v = fmaxf(v, GPU_SHFL_XOR(v, m));
    if (threadIdx.x % GPU_WARP_SIZE == 0)
        partial[threadIdx.x / GPU_WARP_SIZE] = v;
    __syncthreads();
    float r = partial[0];
    for (int w = 1; w < PATTN__THREADS / GPU_WARP_SIZE; w++)
        r = fmaxf(r, partial[w]);
    __syncthreads();
    return r;
}

__device__ float pattn__block_sum(float v, float *partial /* [PATTN__MAX_WARPS] */)
{
    for (int m = GPU_WARP_SIZE / 2; m > 0; m /= 2)
        v += GPU_SHFL_XOR(v, m);
    if (threadIdx.x % GPU_WARP_SIZE == 0)
        partial[threadIdx.x / GPU_WARP_SIZE] = v;
    __syncthreads();
    float r = partial[0];
    for (int w = 1; w < PATTN__THREADS / GPU_WARP_SIZE; w++)
        r += partial[w];
    __syncthreads();
    return r;
}

/* The request of packed token `tok`: the last b with cu[b] <= tok (empty requests before it
 * share its start and are skipped). Invariant: cu[lo] <= tok, and hi == batch or cu[hi] > tok;
 * cu[batch] == tokens > tok closes the last request. */
__device__ int pattn__request_of(const int32_t *cu /* [batch + 1] */, int batch, int tok)
{
    int lo = 0, hi = batch;
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        if (cu[mid] <= tok)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* ------------------------------------------------------------ one query row */
/* Where the keys of one sequence come from. */
struct pattn__keys {
    opt_kv_cache cache;
    const int32_t *bt;     /* bt: [max_blocks], the sequence's block-table row */
    long long n_cached;    /* keys [0, n_cached): tokens 0.. of the sequence in the cache */
    const void *k_new;     /* k_new: [*, cache.heads, cache.head_dim] in the query dtype */
    const void *v_new;     /* v_new: same; keys j >= n_cached are rows new_row0 + j - n_cached */
    long long new_row0;
};

/* Attend query row q_row of q over keys 0..n_keys-1 of `src` (KV head kh); write out row o_row
 * and *lse_at. Called by all 128 threads of the block (uniform arguments). DT: the query, new
 * K/V and output dtype; KVT: the cache's element dtype (DT or fp8). */
template <int DT, int KVT>
__device__ void pattn__attend_row(const pattn__keys &src, int kh,
                                  const void *__restrict__ q, /* q: [*, hq, head_dim] */
                                  size_t q_row, long long n_keys, float scale, float softcap,
                                  void *__restrict__ out, /* out: [*, hq, head_dim] */
                                  size_t o_row, float *lse_at)
{
    __shared__ float q_s[PATTN__MAX_DIM];
    __shared__ float p_s[PATTN__THREADS];
    __shared__ size_t v_base_s[PATTN__THREADS];
    __shared__ float partial[PATTN__MAX_WARPS];

    constexpr int X = KVT == OPT_FP8E4M3 ? 16 : 8; /* pkv_x(KVT) */
    const opt_kv_cache &c = src.cache;
    const int tid = threadIdx.x, dh = c.head_dim, hkv = c.heads;

    if (n_keys <= 0) { /* empty attended set: out = 0, lse = -inf (uniform across the block) */
        for (int d = tid; d < dh; d += PATTN__THREADS)
            num_store_f32(DT, out, o_row + d, 0.0f);
        if (tid == 0)
            *lse_at = -INFINITY;
        return;
    }

    const float ks = KVT == OPT_FP8E4M3 ? *c.k_scale : 1.0f;
    const float vs = KVT == OPT_FP8E4M3 ? *c.v_scale : 1.0f;
    const pkv_dim_step k_step = pkv_dim_steps(c, 0), v_step = pkv_dim_steps(c, 1);

    for (int d = tid; d < dh; d += PATTN__THREADS)
        q_s[d] = num_load_f32(DT, q, q_row + d);
    __syncthreads();

    float m = -INFINITY, l = 0.0f;
    float acc[PATTN__ACC];
#pragma unroll
    for (int r = 0; r < PATTN__ACC; r++)
        acc[r] = 0.0f;

    for (long long j0 = 0; j0 < n_keys; j0 += PATTN__THREADS) {
        const int nt = (int)(n_keys - j0 < PATTN__THREADS ? n_keys - j0 : PATTN__THREADS);
        /* Keys [0, nc) of the tile come from the cache, [nc, nt) from the new rows. */
        const long long in_cache = src.n_cached - j0;
        const int nc = in_cache <= 0 ? 0 : in_cache >= nt ? nt : (int)in_cache;

        float s = -INFINITY;
        if (tid < nt) {
            const long long j = j0 + tid;
            float dot = 0.0f;
            if (tid < nc) {
                const size_t kb = pkv_token_index(c, 0, src.bt, j, kh);
                for (int d = 0; d < dh; d++)
                    dot += q_s[d] * pkv_load<KVT>(c.k, kb + pkv_dim_offset<X>(k_step, d), ks);
                v_base_s[tid] = pkv_token_index(c, 1, src.bt, j, kh);
            } else {
                const size_t kb = ((size_t)(src.new_row0 + (j - src.n_cached)) * hkv + kh) * dh;
                for (int d = 0; d < dh; d++)
                    dot += q_s[d] * num_load_f32(DT, src.k_new, kb + d);
                v_base_s[tid] = kb; /* v_new has k_new's shape */
            }
            s = dot * scale;
            if (softcap > 0.0f)
                s = softcap * tanhf(s / softcap);
        }

        /* The tile holds at least one key, so its max is -inf only when every logit is -inf
         * (or NaN). Then exp is taken against 0 instead: exp(-inf - 0) = 0 for the -inf
         * logits and NaN stays NaN; never exp(-inf - -inf). */
        const float m_new = fmaxf(m, pattn__block_max(s, partial)); /* its barriers publish v_base_s */
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float alpha = expf(m - m_use); /* m == -inf: 0, the empty accumulator */
        const float p = tid < nt ? expf(s - m_use) : 0.0f;
        p_s[tid] = p;
        l = l * alpha + pattn__block_sum(p, partial); /* its barriers also publish p_s */
        m = m_new;

#pragma unroll
        for (int r = 0; r < PATTN__ACC; r++) {
            const int d = tid + r * PATTN__THREADS;
            if (d < dh) {
                float pv = 0.0f;
                const size_t v_off = pkv_dim_offset<X>(v_step, d);
                for (int jj = 0; jj < nc; jj++)
                    pv += p_s[jj] * pkv_load<KVT>(c.v, v_base_s[jj] + v_off, vs);
                for (int jj = nc; jj < nt; jj++)
                    pv += p_s[jj] * num_load_f32(DT, src.v_new, v_base_s[jj] + d);
                acc[r] = acc[r] * alpha + pv;
            }
        }
        __syncthreads(); /* p_s and v_base_s are rewritten by the next tile */
    }

    /* l == 0 only when every logit was -inf: the empty-set convention then. */
#pragma unroll
    for (int r = 0; r < PATTN__ACC; r++) {
        const int d = tid + r * PATTN__THREADS;
        if (d < dh)
            num_store_f32(DT, out, o_row + d, l == 0.0f ? 0.0f : acc[r] / l);
    }
    if (tid == 0)
        *lse_at = l == 0.0f ? -INFINITY : m + logf(l);
}

/* ------------------------------------------------------------ paged_decode */
/* Grid (batch, hq), block PATTN__THREADS. */
template <int DT, int KVT>
__global__ void __launch_bounds__(PATTN__THREADS)
paged_decode_simple_kernel(const void *__restrict__ q,                /* q: [batch, hq, head_dim] */
                           opt_kv_cache cache,
                           const int32_t *__restrict__ block_table,  /* block_table: [batch, max_blocks] */
                           const int32_t *__restrict__ seq_lens,     /* seq_lens: [batch] */
                           void *__restrict__ out,                   /* out: [batch, hq, head_dim] */
                           float *__restrict__ lse,                  /* lse: [hq, batch] */
                           int batch, int hq, int max_blocks, float scale, float softcap)
{
    const int b = blockIdx.x, h = blockIdx.y;
    const int len = seq_lens[b];
    const pattn__keys src = {cache, block_table + (size_t)b * max_blocks, len, NULL, NULL, 0};
    const size_t row = ((size_t)b * hq + h) * cache.head_dim;
    pattn__attend_row<DT, KVT>(src, h / (hq / cache.heads), q, row, len, scale, softcap, out, row,
                               lse + (size_t)h * batch + b);
}

/* ------------------------------------------------------------------ extend */
/* Grid (tq, hq), block PATTN__THREADS. */
template <int DT, int KVT>
__global__ void __launch_bounds__(PATTN__THREADS)
extend_simple_kernel(const void *__restrict__ q,                   /* q: [tq, hq, head_dim] */
                     const void *__restrict__ k_new,               /* k_new: [tq, hkv, head_dim] */
                     const void *__restrict__ v_new,               /* v_new: [tq, hkv, head_dim] */
                     const int32_t *__restrict__ cu_q,             /* cu_q: [batch + 1] */
                     const int32_t *__restrict__ context_lens,     /* context_lens: [batch] */
                     opt_kv_cache cache,
                     const int32_t *__restrict__ block_table,      /* block_table: [batch, max_blocks] */
                     void *__restrict__ out,                       /* out: [tq, hq, head_dim] */
                     float *__restrict__ lse,                      /* lse: [hq, tq] */
                     int batch, int tq, int hq, int max_blocks, float scale, float softcap)
{
    const int tok = blockIdx.x, h = blockIdx.y;
    const int b = pattn__request_of(cu_q, batch, tok);
    const long long ctx = context_lens[b], i = tok - cu_q[b];
    /* New key j >= ctx is new row cu_q[b] + (j - ctx); query i sees keys 0 .. ctx + i. */
    const pattn__keys src = {cache, block_table + (size_t)b * max_blocks, ctx, k_new, v_new, cu_q[b]};
    const size_t row = ((size_t)tok * hq + h) * cache.head_dim;
    pattn__attend_row<DT, KVT>(src, h / (hq / cache.heads), q, row, ctx + i + 1, scale, softcap,
                               out, row, lse + (size_t)h * tq + tok);
}

/* ------------------------------------------------------------------- mixed */
/* Grid (tq, hq), block PATTN__THREADS. */
template <int DT, int KVT>
__global__ void __launch_bounds__(PATTN__THREADS)
mixed_simple_kernel(const void *__restrict__ q,                    /* q: [tq, hq, head_dim] */
                    const int32_t *__restrict__ cu_q,              /* cu_q: [batch + 1] */
                    const int32_t *__restrict__ context_lens,      /* context_lens: [batch] */
                    opt_kv_cache cache,
                    const int32_t *__restrict__ block_table,       /* block_table: [batch, max_blocks] */
                    void *__restrict__ out,                        /* out: [tq, hq, head_dim] */
                    float *__restrict__ lse,                       /* lse: [hq, tq] */
                    int batch, int tq, int hq, int max_blocks, float scale, float softcap)
{
    const int tok = blockIdx.x, h = blockIdx.y;
    const int r = pattn__request_of(cu_q, batch, tok);
    const long long ctx = context_lens[r], i = tok - cu_q[r];
    /* Every visible key (j <= ctx + i < ctx + n) is in the cache: bottom-right causal. */
    const pattn__keys src = {cache, block_table + (size_t)r * max_blocks, ctx + i + 1, NULL, NULL, 0};
    const size_t row = ((size_t)tok * hq + h) * cache.head_dim;
    pattn__attend_row<DT, KVT>(src, h / (hq / cache.heads), q, row, ctx + i + 1, scale, softcap,
                               out, row, lse + (size_t)h * tq + tok);
}

/* --------------------------------------------------------------- launchers */
/* What the three launchers share: the query dtype and the cache it reads (element dtype the
 * query's or fp8 with both scales, a known layout, shuffled extents divisible by x), head
 * counts (hq is grid.y), head_dim <= 256, scale and softcap finite (softcap >= 0). */
static int pattn__check(int dtype, const opt_kv_cache *c, int hq, int max_blocks, float scale,
                        float softcap)
{
    if (dtype != OPT_BF16 && dtype != OPT_F16)
        return OPT_EINVAL;
    if (c->dtype != dtype && c->dtype != OPT_FP8E4M3)
        return OPT_EINVAL;
    if (c->dtype == OPT_FP8E4M3 && (!c->k_scale || !c->v_scale))
        return OPT_EINVAL;
    if (c->layout != OPT_KV_NHD && c->layout != OPT_KV_HND && c->layout != OPT_KV_SHUFFLED)
        return OPT_EINVAL;
    if (c->block_size <= 0 || c->heads <= 0 || c->head_dim < 1 || c->head_dim > PATTN__MAX_DIM)
        return OPT_EINVAL;
    const int x = pkv_x(c->dtype);
    if (c->layout == OPT_KV_SHUFFLED && (c->head_dim % x || c->block_size % x))
        return OPT_EINVAL;
    if (hq <= 0 || hq % c->heads != 0 || hq > 65535 || max_blocks < 0)
        return OPT_EINVAL;
    if (!(softcap >= 0.0f && softcap <= FLT_MAX) || !(scale >= -FLT_MAX && scale <= FLT_MAX))
        return OPT_EINVAL;
    return OPT_OK;
}

/* One launch per (query dtype, cache dtype) pair: L is a launcher template over them. */
#define PATTN__DISPATCH(L, a, s)                                                        \
    ((a)->dtype == OPT_BF16                                                             \
         ? ((a)->cache.dtype == OPT_FP8E4M3 ? L<OPT_BF16, OPT_FP8E4M3>(a, s)            \
                                            : L<OPT_BF16, OPT_BF16>(a, s))              \
         : ((a)->cache.dtype == OPT_FP8E4M3 ? L<OPT_F16, OPT_FP8E4M3>(a, s)             \
                                            : L<OPT_F16, OPT_F16>(a, s)))

template <int DT, int KVT>
static int pattn__launch_decode(const opt_paged_decode_args *a, hipStream_t stream)
{
    const dim3 grid((unsigned)a->batch, (unsigned)a->hq);
    paged_decode_simple_kernel<DT, KVT><<<grid, PATTN__THREADS, 0, stream>>>(
        a->q, a->cache, a->block_table, a->seq_lens, a->out, a->lse, a->batch, a->hq,
        a->max_blocks, a->scale, a->softcap);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* seq_lens >= 0 and the block-table entries they use inside the pool (SPEC section 5): they
 * live on the device, so the launcher cannot check that. */
extern "C" int opt_paged_decode_simple(const opt_paged_decode_args *a, void *stream)
{
    if (!a || a->batch < 0)
        return OPT_EINVAL;
    int rc = pattn__check(a->dtype, &a->cache, a->hq, a->max_blocks, a->scale, a->softcap);
    if (rc)
        return rc;
    if (a->batch == 0)
        return OPT_OK;
    if (!a->q || !a->cache.k || !a->cache.v || !a->block_table || !a->seq_lens || !a->out ||
        !a->lse)
        return OPT_EINVAL;
    return PATTN__DISPATCH(pattn__launch_decode, a, (hipStream_t)stream);
}

template <int DT, int KVT>
static int pattn__launch_extend(const opt_extend_args *a, hipStream_t stream)
{
    const dim3 grid((unsigned)a->tq, (unsigned)a->hq);
    extend_simple_kernel<DT, KVT><<<grid, PATTN__THREADS, 0, stream>>>(
        a->q, a->k_new, a->v_new, a->cu_q, a->context_lens, a->cache, a->block_table, a->out,
        a->lse, a->batch, a->tq, a->hq, a->max_blocks, a->scale, a->softcap);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* cu_q[batch] must equal tq, cu_q start at 0 and never decrease, context_lens >= 0, and the
 * block-table entries the contexts use inside the pool (SPEC section 6): they live on the
 * device, so the launcher cannot check that. */
extern "C" int opt_extend_simple(const opt_extend_args *a, void *stream)
{
    if (!a || a->batch < 0 || a->tq < 0 || (a->tq > 0 && a->batch == 0))
        return OPT_EINVAL;
    int rc = pattn__check(a->dtype, &a->cache, a->hq, a->max_blocks, a->scale, a->softcap);
    if (rc)
        return rc;
    if (a->tq == 0)
        return OPT_OK;
    if (!a->q || !a->k_new || !a->v_new || !a->cu_q || !a->context_lens || !a->cache.k ||
        !a->cache.v || !a->block_table || !a->out || !a->lse)
        return OPT_EINVAL;
    return PATTN__DISPATCH(pattn__launch_extend, a, (hipStream_t)stream);
}

template <int DT, int KVT>
static int pattn__launch_mixed(const opt_mixed_args *a, hipStream_t stream)
{
    const dim3 grid((unsigned)a->tq, (unsigned)a->hq);
    mixed_simple_kernel<DT, KVT><<<grid, PATTN__THREADS, 0, stream>>>(
        a->q, a->cu_q, a->context_lens, a->cache, a->block_table, a->out, a->lse, a->batch,
        a->tq, a->hq, a->max_blocks, a->scale, a->softcap);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* As extend, with the block-table entries of context and new tokens inside the pool (SPEC
 * section 7). k_new and v_new are not read: every key comes from the cache. */
extern "C" int opt_mixed_simple(const opt_mixed_args *a, void *stream)
{
    if (!a || a->batch < 0 || a->tq < 0 || (a->tq > 0 && a->batch == 0))
        return OPT_EINVAL;
    int rc = pattn__check(a->dtype, &a->cache, a->hq, a->max_blocks, a->scale, a->softcap);
    if (rc)
        return rc;
    if (a->tq == 0)
        return OPT_OK;
    if (!a->q || !a->cu_q || !a->context_lens || !a->cache.k || !a->cache.v || !a->block_table ||
        !a->out || !a->lse)
        return OPT_EINVAL;
    return PATTN__DISPATCH(pattn__launch_mixed, a, (hipStream_t)stream);
}
