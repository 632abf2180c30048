/* mla.hip - SPEC sections 8 and 9, MLA on the GPU (DeepSeek V3/R1 geometry), `simple` variants:
 * simple, obviously correct, not slow on purpose. Every sum is f32; narrow types stay raw bits
 * and are decoded in registers (numerics.h).
 *
 * mla_decode_simple_kernel: one block of 128 threads per (sequence, query head) attends the
 *   query's 576-dim row over the sequence's rows of the paged latent cache [N, bs, 576] (bf16,
 *   or fp8e4m3 codes times the per-tensor k_scale); the value is the first 512 dims of the same
 *   rows. Keys are streamed in tiles of 128: each warp computes the logits of a share of the
 *   tile (lanes across the 576 dims, a shuffle reduction), the block reduces the tile's max and
 *   sum, and an online softmax (running max m and sum l) rescales the output accumulators,
 *   4 latent dims per thread. For fp8 the codes are multiplied out and k_scale is applied once,
 *   to each logit and to the output.
 * mla_prefill_cu_k_kernel: one thread writes the workspace's key offsets cu_k [batch + 1]:
 *   request b's keys are its context_lens[b] cached tokens, then its new tokens.
 * mla_prefill_decompress_kernel: one block of 256 threads per (key row, query head): the row's
 *   latent [c_kv | k_pe] (from the paged cache through the block table, or from the new tokens'
 *   c_kv and k_pe) is decoded into shared memory; each warp takes a share of the head's 256
 *   W_kvb rows, dots them with c_kv (lanes across the 512 columns) and writes k_nope (W_UK_h,
 *   rows 0..127) and v (W_UV_h, rows 128..255) rounded to bf16 (nearest even), as a bf16
 *   kv_b_proj GEMM writes them and the reference rounds them; k_pe is stored once per key row
 *   as f32 holding its bf16 value (the K row is bf16 in every form). fp8 context rows: the dots
 *   run on the codes and each is multiplied by k_scale once (the latent is code * k_scale
 *   exactly; a bf16 latent would round it, the lse moving by ~1e-3 at scales that are not
 *   powers of two), k_pe is code * k_scale rounded to bf16.
 * mla_prefill_attend_kernel: one block of 128 threads per (query token, head): new token i of
 *   request b sees keys 0 .. context_lens[b] + i of the request (bottom-right causal over
 *   context + new), Dqk 192 = [k_nope | k_pe], Dv 128, in tiles of 128 keys as in the decode
 *   kernel, one output dim per thread. One pass over all the keys (the chunked context
 *   algorithm of SPEC section 6 is another variant's job).
 *
 * Outputs are rounded once, to nearest even, into bf16; the LSE is the natural log, f32,
 * [hq, tokens]. No key: out = 0, lse = -inf. Every offset is computed in 64 bits.
 */
#include "gpu_port.h"
#include "numerics.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

enum {
    MLA__THREADS = 128,                  /* attention blocks */
    MLA__TILE = MLA__THREADS,            /* keys per tile: one logit per thread in the softmax */
    MLA__MAX_WARPS = MLA__THREADS / 32,  /* warps per block at the narrowest warp */
    MLA__DEC_THREADS = 256,              /* decompression blocks */
    MLA__ROW = 576,                      /* latent row [c_kv 512 | k_pe 64]; absorbed Dqk */
    MLA__LAT = 512,
    MLA__ROPE = 64,
    MLA__NOPE = 128,
    MLA__QK = 192,                       /* non-absorbed Dqk */
    MLA__V = 128,                        /* non-absorbed Dv */
    MLA__WROWS = 256,                    /* W_kvb rows per head: W_UK_h then W_UV_h */
    MLA__LAT_ACC = MLA__LAT / MLA__THREADS, /* decode: latent output dims per thread */
    MLA__ALIGN = 256,                    /* workspace segment alignment (bytes) */
};

static_assert(MLA__LAT % MLA__THREADS == 0, "decode: whole latent dims per thread");
static_assert(MLA__V == MLA__THREADS, "prefill: one output dim per thread");

/* ------------------------------------------------------------ block reductions */
/* Every lane of the warp gets the warp's sum. */
static __device__ float mla__warp_sum(float v)
{
    for (int m = GPU_WARP_SIZE / 2; m > 0; m /= 2)
        v += GPU_SHFL_XOR(v, m);
    return v;
}

/* Every thread of the block gets the same result: each reads all the warp partials in the
 * same order. The trailing barrier lets the caller reuse `partial` at once. NaN: fmaxf skips
 * it in the max (the sum then carries it to the output, as in the reference). */
static __device__ float mla__block_max(float v, float *partial /* [MLA__MAX_WARPS] */)
{
    for (int m = GPU_WARP_SIZE / 2; m > 0; m /= 2)
        v = fmaxf(v, GPU_SHFL_XOR(v, m));
    if (threadIdx.x % GPU_WARP_SIZE == 0)
        partial[threadIdx.x / GPU_WARP_SIZE] = v;
    __syncthreads();
    float r = partial[0];
    for (int w = 1; w < MLA__THREADS / GPU_WARP_SIZE; w++)
        r = fmaxf(r, partial[w]);
    __syncthreads();
    return r;
}

static __device__ float mla__block_sum(float v, float *partial /* [MLA__MAX_WARPS] */)
{
    v = mla__warp_sum(v);
    if (threadIdx.x % GPU_WARP_SIZE == 0)
        partial[threadIdx.x / GPU_WARP_SIZE] = v;
    __syncthreads();
    float r = partial[0];
    for (int w = 1; w < MLA__THREADS / GPU_WARP_SIZE; w++)
        r += partial[w];
    __syncthreads();
    return r;
}

/* ------------------------------------------------------------ online softmax */
/* One tile's step of the online softmax: thread tid < nt holds the logit s_s[tid] (published
 * by a barrier before the call). Updates the running max m and sum l, writes the tile's
 * weights p_s [MLA__TILE] (0 past nt; the reductions' barriers publish them) and returns the
 * factor alpha that rescales the accumulators. A tile whose max is -inf (with m = -inf) takes
 * exp against 0 instead: exp(-inf - 0) = 0 for the -inf logits and NaN stays NaN; never
 * exp(-inf - -inf). */
static __device__ float mla__tile_softmax(const float *s_s, int nt, float *p_s, float *partial,
                                          float &m, float &l)
{
    const int tid = threadIdx.x;
    const float s = tid < nt ? s_s[tid] : -INFINITY;
    const float m_new = fmaxf(m, mla__block_max(s, partial));
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = expf(m - m_use); /* m == -inf: 0, the empty accumulator */
    const float p = tid < nt ? expf(s - m_use) : 0.0f;
    p_s[tid] = p;
    l = l * alpha + mla__block_sum(p, partial);
    m = m_new;
    return alpha;
}

/* ------------------------------------------------------------------ mla_decode */
/* Grid (batch, hq), block MLA__THREADS. KV is the cache's element dtype (bf16 or fp8e4m3). */
template <int KV>
__global__ void __launch_bounds__(MLA__THREADS)
mla_decode_simple_kernel(const uint16_t *__restrict__ q,           /* q: [batch, hq, 576] bf16 */
                         const void *__restrict__ cache,           /* cache: [N, bs, 576] KV */
                         const float *__restrict__ k_scale,        /* k_scale: [1] (fp8 only) */
                         const int32_t *__restrict__ block_table,  /* block_table: [batch, max_blocks] */
                         const int32_t *__restrict__ seq_lens,     /* seq_lens: [batch] */
                         uint16_t *__restrict__ out,               /* out: [batch, hq, 512] bf16 */
                         float *__restrict__ lse,                  /* lse: [hq, batch] */
                         int batch, int hq, int block_size, int max_blocks, float scale)
{
    __shared__ float q_s[MLA__ROW];
    __shared__ float s_s[MLA__TILE];
    __shared__ float p_s[MLA__TILE];
    __shared__ size_t row_s[MLA__TILE]; /* element offset of each tile key's latent row */
    __shared__ float partial[MLA__MAX_WARPS];

    const int tid = threadIdx.x, lane = tid % GPU_WARP_SIZE, warp = tid / GPU_WARP_SIZE;
    const int b = blockIdx.x, h = blockIdx.y;
    const int len = seq_lens[b];
    const size_t o_row = ((size_t)b * hq + h) * MLA__LAT;

    if (len <= 0) { /* empty attended set: out = 0, lse = -inf (uniform across the block) */
        for (int d = tid; d < MLA__LAT; d += MLA__THREADS)
            out[o_row + d] = num_f32_to_bf16(0.0f);
        if (tid == 0)
            lse[(size_t)h * batch + b] = -INFINITY;
        return;
    }

    /* fp8: value = code * k_scale; the dots run on the codes and k_scale is applied once. */
    const float ks = KV == OPT_FP8E4M3 ? *k_scale : 1.0f;
    const float s_mul = scale * ks;

    const size_t q_row = ((size_t)b * hq + h) * MLA__ROW;
    for (int d = tid; d < MLA__ROW; d += MLA__THREADS)
        q_s[d] = num_bf16_to_f32(q[q_row + d]);

    const int32_t *bt = block_table + (size_t)b * max_blocks;
    float m = -INFINITY, l = 0.0f;
    float acc[MLA__LAT_ACC];
#pragma unroll
    for (int r = 0; r < MLA__LAT_ACC; r++)
        acc[r] = 0.0f;

    for (int j0 = 0; j0 < len; j0 += MLA__TILE) {
        const int nt = len - j0 < MLA__TILE ? len - j0 : MLA__TILE;
        if (tid < nt) {
            const int j = j0 + tid;
            row_s[tid] = ((size_t)bt[j / block_size] * (size_t)block_size +
                          (size_t)(j % block_size)) * MLA__ROW;
        }
        __syncthreads(); /* row_s (and, on the first tile, q_s) */

        /* Logits: warp w takes keys w, w + warps, ...; its lanes split the 576 dims. */
        for (int jj = warp; jj < nt; jj += MLA__THREADS / GPU_WARP_SIZE) {
            const size_t row = row_s[jj];
            float dot = 0.0f;
            for (int d = lane; d < MLA__ROW; d += GPU_WARP_SIZE)
                dot += q_s[d] * num_load_f32(KV, cache, row + d);
            dot = mla__warp_sum(dot);
            if (lane == 0)
                s_s[jj] = dot * s_mul;
        }
        __syncthreads(); /* s_s */

        const float alpha = mla__tile_softmax(s_s, nt, p_s, partial, m, l);

        /* P.V over the first 512 dims of the same rows: dims 4 tid .. 4 tid + 3. */
        float pv[MLA__LAT_ACC];
#pragma unroll
        for (int r = 0; r < MLA__LAT_ACC; r++)
            pv[r] = 0.0f;
        for (int jj = 0; jj < nt; jj++) {
            const float p = p_s[jj];
            const size_t base = row_s[jj] + (size_t)tid * MLA__LAT_ACC;
#pragma unroll
            for (int r = 0; r < MLA__LAT_ACC; r++)
                pv[r] += p * num_load_f32(KV, cache, base + r);
        }
#pragma unroll
        for (int r = 0; r < MLA__LAT_ACC; r++)
            acc[r] = acc[r] * alpha + pv[r];
        __syncthreads(); /* row_s, s_s and p_s are rewritten by the next tile */
    }

    /* l == 0 only when every logit was -inf: the empty-set convention then. */
#pragma unroll
    for (int r = 0; r < MLA__LAT_ACC; r++)
        out[o_row + (size_t)tid * MLA__LAT_ACC + r] =
            num_f32_to_bf16(l == 0.0f ? 0.0f : acc[r] * ks / l);
    if (tid == 0)
        lse[(size_t)h * batch + b] = l == 0.0f ? -INFINITY : m + logf(l);
}

/* ----------------------------------------------------------- mla_prefill: cu_k */
/* One thread: cu_k[b + 1] = cu_k[b] + context_lens[b] + (cu_q[b + 1] - cu_q[b]). */
__global__ void mla_prefill_cu_k_kernel(const int32_t *__restrict__ cu_q,         /* cu_q: [batch + 1] */
                                        const int32_t *__restrict__ context_lens, /* context_lens: [batch] */
                                        int32_t *__restrict__ cu_k,               /* cu_k: [batch + 1] */
                                        int batch)
{
    if (threadIdx.x != 0 || blockIdx.x != 0)
        return;
    int32_t k = 0;
    cu_k[0] = 0;
    for (int b = 0; b < batch; b++) {
        k += context_lens[b] + (cu_q[b + 1] - cu_q[b]);
        cu_k[b + 1] = k;
    }
}

/* -------------------------------------------------- mla_prefill: decompression */
/* Grid (tk, hq), block MLA__DEC_THREADS. KV is the cache's element dtype. */
template <int KV>
__global__ void __launch_bounds__(MLA__DEC_THREADS)
mla_prefill_decompress_kernel(const uint16_t *__restrict__ c_kv,        /* c_kv: [tq, 512] bf16 */
                              const uint16_t *__restrict__ k_pe,        /* k_pe: [tq, 64] bf16 */
                              const uint16_t *__restrict__ w_kvb,       /* w_kvb: [hq * 256, 512] bf16 */
                              const int32_t *__restrict__ cu_q,         /* cu_q: [batch + 1] */
                              const int32_t *__restrict__ context_lens, /* context_lens: [batch] */
                              const int32_t *__restrict__ cu_k,         /* cu_k: [batch + 1] */
                              const void *__restrict__ cache,           /* cache: [N, bs, 576] KV */
                              const float *__restrict__ k_scale,        /* k_scale: [1] (fp8 only) */
                              const int32_t *__restrict__ block_table,  /* block_table: [batch, max_blocks] */
                              uint16_t *__restrict__ k_nope,            /* k_nope: [tk, hq, 128] bf16 */
                              uint16_t *__restrict__ v,                 /* v: [tk, hq, 128] bf16 */
                              float *__restrict__ k_rope,               /* k_rope: [tk, 64] f32 */
                              int batch, int hq, int block_size, int max_blocks)
{
    __shared__ float lat_s[MLA__ROW];

    const int tid = threadIdx.x, lane = tid % GPU_WARP_SIZE, warp = tid / GPU_WARP_SIZE;
    const int r = blockIdx.x, h = blockIdx.y;

    /* The key row's request: the last b with cu_k[b] <= r (requests without keys share the
     * next one's start and are skipped); cu_k[batch] == tk > r closes the last one. */
    int lo = 0, hi = batch;
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        if (cu_k[mid] <= r)
            lo = mid;
        else
            hi = mid;
    }
    const int b = lo;
    const int j = r - cu_k[b], ctx = context_lens[b];

    float ks = 1.0f; /* fp8 context rows: c_kv stays in codes, k_scale goes on each dot */
    if (j < ctx) { /* context token j, from the paged cache */
        if (KV == OPT_FP8E4M3)
            ks = *k_scale;
        const size_t row = ((size_t)block_table[(size_t)b * max_blocks + j / block_size] *
                                (size_t)block_size + (size_t)(j % block_size)) * MLA__ROW;
        for (int d = tid; d < MLA__LAT; d += MLA__DEC_THREADS)
            lat_s[d] = num_load_f32(KV, cache, row + d);
        for (int d = tid; d < MLA__ROPE; d += MLA__DEC_THREADS) /* k_pe as K stores it: bf16 */
            lat_s[MLA__LAT + d] = num_bf16_to_f32(num_f32_to_bf16(num_load_f32(KV, cache, row + MLA__LAT + d) * ks));
    } else { /* new token j - ctx of the request */
        const size_t tok = (size_t)cu_q[b] + (size_t)(j - ctx);
        for (int d = tid; d < MLA__LAT; d += MLA__DEC_THREADS)
            lat_s[d] = num_bf16_to_f32(c_kv[tok * MLA__LAT + d]);
        for (int d = tid; d < MLA__ROPE; d += MLA__DEC_THREADS)
            lat_s[MLA__LAT + d] = num_bf16_to_f32(k_pe[tok * MLA__ROPE + d]);
    }
    __syncthreads();

    /* Warp w takes W_kvb rows w, w + warps, ... of head h; its lanes split the 512 columns. */
    const uint16_t *w = w_kvb + (size_t)h * MLA__WROWS * MLA__LAT;
    const size_t kv_row = ((size_t)r * hq + h) * MLA__NOPE;
    for (int rr = warp; rr < MLA__WROWS; rr += MLA__DEC_THREADS / GPU_WARP_SIZE) {
        float dot = 0.0f;
        for (int c = lane; c < MLA__LAT; c += GPU_WARP_SIZE)
            dot += num_bf16_to_f32(w[(size_t)rr * MLA__LAT + c]) * lat_s[c];
        dot = mla__warp_sum(dot);
        if (lane == 0) {
            if (rr < MLA__NOPE)
                k_nope[kv_row + rr] = num_f32_to_bf16(dot * ks);
            else
                v[kv_row + (rr - MLA__NOPE)] = num_f32_to_bf16(dot * ks);
        }
    }
    if (h == 0)
        for (int d = tid; d < MLA__ROPE; d += MLA__DEC_THREADS)
            k_rope[(size_t)r * MLA__ROPE + d] = lat_s[MLA__LAT + d];
}

/* ---------------------------------------------------- mla_prefill: attention */
/* Grid (tq, hq), block MLA__THREADS. */
__global__ void __launch_bounds__(MLA__THREADS)
mla_prefill_attend_kernel(const uint16_t *__restrict__ q,            /* q: [tq, hq, 192] bf16 */
                          const int32_t *__restrict__ cu_q,          /* cu_q: [batch + 1] */
                          const int32_t *__restrict__ context_lens,  /* context_lens: [batch] */
                          const int32_t *__restrict__ cu_k,          /* cu_k: [batch + 1] */
                          const uint16_t *__restrict__ k_nope,       /* k_nope: [tk, hq, 128] bf16 */
                          const uint16_t *__restrict__ v,            /* v: [tk, hq, 128] bf16 */
                          const float *__restrict__ k_rope,          /* k_rope: [tk, 64] f32 */
                          uint16_t *__restrict__ out,                /* out: [tq, hq, 128] bf16 */
                          float *__restrict__ lse,                   /* lse: [hq, tq] */
                          int batch, int tq, int hq, float scale)
{
    __shared__ float q_s[MLA__QK];
    __shared__ float s_s[MLA__TILE];
    __shared__ float p_s[MLA__TILE];
    __shared__ float partial[MLA__MAX_WARPS];

    const int tid = threadIdx.x, lane = tid % GPU_WARP_SIZE, warp = tid / GPU_WARP_SIZE;
    const int tok = blockIdx.x, h = blockIdx.y;

    /* The token's request: the last b with cu_q[b] <= tok (as in mha_varlen). */
    int lo = 0, hi = batch;
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        if (cu_q[mid] <= tok)
            lo = mid;
        else
            hi = mid;
    }
    const int b = lo;
    const long long i = tok - cu_q[b];
    /* Keys 0 .. context + i: the whole context and new keys j <= i (never empty). */
    const long long n_keys = (long long)context_lens[b] + i + 1;
    const size_t k0 = (size_t)cu_k[b];

    const size_t q_row = ((size_t)tok * hq + h) * MLA__QK;
    for (int d = tid; d < MLA__QK; d += MLA__THREADS)
        q_s[d] = num_bf16_to_f32(q[q_row + d]);
    __syncthreads();

    float m = -INFINITY, l = 0.0f, acc = 0.0f;
    for (long long j0 = 0; j0 < n_keys; j0 += MLA__TILE) {
        const int nt = (int)(n_keys - j0 < MLA__TILE ? n_keys - j0 : MLA__TILE);

        /* Logits: warp w takes keys w, w + warps, ...; its lanes split the 192 dims
         * (k_nope 0..127 from the bf16 rows, k_pe 128..191 from the f32 rows). */
        for (int jj = warp; jj < nt; jj += MLA__THREADS / GPU_WARP_SIZE) {
            const size_t key = k0 + (size_t)j0 + (size_t)jj;
            const size_t kn = (key * hq + h) * MLA__NOPE, kr = key * MLA__ROPE;
            float dot = 0.0f;
            for (int d = lane; d < MLA__QK; d += GPU_WARP_SIZE)
                dot += q_s[d] * (d < MLA__NOPE ? num_bf16_to_f32(k_nope[kn + d])
                                               : k_rope[kr + (d - MLA__NOPE)]);
            dot = mla__warp_sum(dot);
            if (lane == 0)
                s_s[jj] = dot * scale;
        }
        __syncthreads(); /* s_s */

        const float alpha = mla__tile_softmax(s_s, nt, p_s, partial, m, l);

        /* P.V: output dim tid. */
        float pv = 0.0f;
        for (int jj = 0; jj < nt; jj++) {
            const size_t key = k0 + (size_t)j0 + (size_t)jj;
            pv += p_s[jj] * num_bf16_to_f32(v[(key * hq + h) * MLA__V + tid]);
        }
        acc = acc * alpha + pv;
        __syncthreads(); /* s_s and p_s are rewritten by the next tile */
    }

    out[((size_t)tok * hq + h) * MLA__V + tid] = num_f32_to_bf16(l == 0.0f ? 0.0f : acc / l);
    if (tid == 0)
        lse[(size_t)h * tq + tok] = l == 0.0f ? -INFINITY : m + logf(l);
}

/* --------------------------------------------------------------- launchers */
/* The prefill workspace: cu_k, k_nope, v, k_rope, each segment MLA__ALIGN-aligned. */
typedef struct mla__ws {
    int32_t *cu_k;     /* [batch + 1] */
    uint16_t *k_nope;  /* [tk, hq, 128] bf16 */
    uint16_t *v;       /* [tk, hq, 128] bf16 */
    float *k_rope;     /* [tk, 64] f32 */
    size_t bytes;
} mla__ws;

static size_t mla__align(size_t n)
{
    return (n + MLA__ALIGN - 1) / MLA__ALIGN * MLA__ALIGN;
}

/* Offsets into a workspace at `base` (NULL: only the size). */
static mla__ws mla__ws_layout(void *base, int batch, int tk, int hq)
{
    char *p = (char *)base;
    const size_t kv = (size_t)tk * (size_t)hq * MLA__NOPE * sizeof(uint16_t);
    size_t off = 0;
    mla__ws w;
    w.cu_k = (int32_t *)(p + off);
    off += mla__align(((size_t)batch + 1) * sizeof(int32_t));
    w.k_nope = (uint16_t *)(p + off);
    off += mla__align(kv);
    w.v = (uint16_t *)(p + off);
    off += mla__align(kv);
    w.k_rope = (float *)(p + off);
    off += mla__align((size_t)tk * MLA__ROPE * sizeof(float));
    w.bytes = off;
    return w;
}

static int mla__cache_ok(const opt_latent_cache *c)
{
    if (c->block_size <= 0 || !c->data)
        return 0;
    if (c->dtype == OPT_FP8E4M3)
        return c->k_scale != NULL;
    return c->dtype == OPT_BF16;
}

template <int KV>
static int mla__decode_launch(const opt_mla_decode_args *a, hipStream_t stream)
{
    const dim3 grid((unsigned)a->batch, (unsigned)a->hq);
    mla_decode_simple_kernel<KV><<<grid, MLA__THREADS, 0, stream>>>(
        (const uint16_t *)a->q, a->cache.data, a->cache.k_scale, a->block_table, a->seq_lens,
        (uint16_t *)a->out, a->lse, a->batch, a->hq, a->cache.block_size, a->max_blocks,
        a->scale);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* seq_lens[b] <= max_blocks * block_size and every used block id inside the pool: device data,
 * so the launcher cannot check that. */
extern "C" int opt_mla_decode_simple(const opt_mla_decode_args *a, void *stream)
{
    if (!a || a->batch < 0 || a->hq <= 0 || a->hq > 65535 || a->max_blocks < 0)
        return OPT_EINVAL; /* hq is grid.y */
    if (!(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->batch == 0)
        return OPT_OK;
    if (!a->q || !a->block_table || !a->seq_lens || !a->out || !a->lse || !mla__cache_ok(&a->cache))
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    return a->cache.dtype == OPT_FP8E4M3 ? mla__decode_launch<OPT_FP8E4M3>(a, s)
                                         : mla__decode_launch<OPT_BF16>(a, s);
}

extern "C" size_t opt_mla_prefill_workspace(int batch, int tk, int hq)
{
    if (batch < 0 || tk < 0 || hq < 0)
        return 0;
    return mla__ws_layout(NULL, batch, tk, hq).bytes;
}

template <int KV>
static int mla__prefill_launch(const opt_mla_prefill_args *a, const mla__ws *w, hipStream_t stream)
{
    mla_prefill_cu_k_kernel<<<1, 1, 0, stream>>>(a->cu_q, a->context_lens, w->cu_k, a->batch);
    GPU_CHECK(hipGetLastError());

    const dim3 dgrid((unsigned)a->tk, (unsigned)a->hq);
    mla_prefill_decompress_kernel<KV><<<dgrid, MLA__DEC_THREADS, 0, stream>>>(
        (const uint16_t *)a->c_kv, (const uint16_t *)a->k_pe, (const uint16_t *)a->w_kvb, a->cu_q,
        a->context_lens, w->cu_k, a->cache.data, a->cache.k_scale, a->block_table, w->k_nope, w->v,
        w->k_rope, a->batch, a->hq, a->cache.block_size, a->max_blocks);
    GPU_CHECK(hipGetLastError());

    const dim3 agrid((unsigned)a->tq, (unsigned)a->hq);
    mla_prefill_attend_kernel<<<agrid, MLA__THREADS, 0, stream>>>(
        (const uint16_t *)a->q, a->cu_q, a->context_lens, w->cu_k, w->k_nope, w->v, w->k_rope,
        (uint16_t *)a->out, a->lse, a->batch, a->tq, a->hq, a->scale);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* cu_q (starting at 0, non-decreasing, cu_q[batch] == tq), context_lens (>= 0, summing with tq
 * to tk), the block table (every used id inside the pool) are device data: the launcher cannot
 * check them. */
extern "C" int opt_mla_prefill_simple(const opt_mla_prefill_args *a, void *stream)
{
    if (!a || a->batch < 0 || a->tq < 0 || (a->tq > 0 && a->batch == 0) || a->tk < a->tq)
        return OPT_EINVAL;
    if (a->hq <= 0 || a->hq > 65535 || a->max_blocks < 0) /* hq is grid.y */
        return OPT_EINVAL;
    if (!(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->tq == 0) /* no query: nothing to compute */
        return OPT_OK;
    if (!a->q || !a->c_kv || !a->k_pe || !a->w_kvb || !a->cu_q || !a->context_lens || !a->out ||
        !a->lse || !a->workspace)
        return OPT_EINVAL;
    const int has_ctx = a->tk > a->tq;
    if (has_ctx && (!a->block_table || !mla__cache_ok(&a->cache)))
        return OPT_EINVAL;
    const mla__ws w = mla__ws_layout(a->workspace, a->batch, a->tk, a->hq);
    if (a->workspace_bytes < w.bytes)
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    return has_ctx && a->cache.dtype == OPT_FP8E4M3 ? mla__prefill_launch<OPT_FP8E4M3>(a, &w, s)
                                                    : mla__prefill_launch<OPT_BF16>(a, &w, s);
}
