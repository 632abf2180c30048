/* dsv4.hip - SPEC section 10, DeepSeek V4 sparse MLA decode on the GPU, `simple` variant:
 * simple, obviously correct, not slow on purpose. Every sum is f32; the cache bytes are decoded
 * in registers with the project's bit-exact helpers (numerics.h), and only indexed rows are read.
 *
 * dsv4_sparse_decode_simple_kernel: one block of 128 threads per (token, query head). The
 *   token's entries are those of the SWA scope, then those of the extra scope (entry k of a
 *   scope is used iff k < len and its index is not -1; an index used twice counts twice), one
 *   softmax over all of them. Entries are streamed in tiles of 128: each thread resolves one
 *   entry to its row's data and scale bytes in the 584-byte blocked format (block stride
 *   ceil(bs * 584 / 576) * 576; data at blk * stride + o * 576, scales at blk * stride +
 *   bs * 576 + o * 8; unused entries get no row), each warp computes the 512-dim logits of a
 *   share of the tile (lanes across the dims: dim d < 448 is fp8 code * 2^(e8m0 byte of tile
 *   d / 64 - 127), exact; the 64 rope dims are little-endian bf16), the block reduces the
 *   tile's max and sum, and an online softmax (running max m and sum l) rescales the output
 *   accumulators, 4 dims per thread; V = K, all 512 dims. At the end the sink is applied once:
 *   out *= 1 / (1 + exp(sink - lse)) with lse without the sink; no used entry gives out = 0,
 *   lse = -inf (whatever the sink); sink +inf gives out = 0, sink -inf changes nothing.
 *   Output bf16 [T, Hq, 512], rounded once to nearest even; lse f32 [Hq, T], natural log.
 * Every offset is computed in 64 bits.
 */
#include "gpu_port.h"
#include "numerics.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

enum {
    DS4__THREADS = 128,
    DS4__TILE = DS4__THREADS,            /* entries per tile: one logit per thread in the softmax */
    DS4__MAX_WARPS = DS4__THREADS / 32,  /* warps per block at the narrowest warp */
    DS4__D = 512,                        /* latent dims, K = V */
    DS4__NOPE = 448,                     /* fp8 dims 0..447 */
    DS4__TILE_DIMS = 64,                 /* dims per e8m0 scale */
    DS4__DATA = 576,                     /* data bytes per token */
    DS4__SCALES = 8,                     /* scale bytes per token */
    DS4__TOKEN = 584,                    /* bytes per token before block padding */
    DS4__ACC = DS4__D / DS4__THREADS,    /* output dims per thread */
};

static_assert(DS4__D % DS4__THREADS == 0 && DS4__TILE_DIMS % DS4__ACC == 0,
              "a thread's output dims lie in one scale tile");

/* ------------------------------------------------------------ block reductions */
/* Every lane of the warp gets the warp's sum. */
static __device__ float ds4__warp_sum(float v)
{
    for (int m = GPU_WARP_SIZE / 2; m > 0; m /= 2)
        v += GPU_SHFL_XOR(v, m);
    return v;
}

/* Every thread of the block gets the same result: each reads all the warp partials in the
 * same order. The trailing barrier lets the caller reuse `partial` at once. NaN: fmaxf skips
 * it in the max (the sum then carries it to the output, as in the reference). */
static __device__ float ds4__block_max(float v, float *partial /* [DS4__MAX_WARPS] */)
{
    for (int m = GPU_WARP_SIZE / 2; m > 0; m /= 2)
        v = fmaxf(v, GPU_SHFL_XOR(v, m));
    if (threadIdx.x % GPU_WARP_SIZE == 0)
        partial[threadIdx.x / GPU_WARP_SIZE] = v;
    __syncthreads();
    float r = partial[0];
    for (int w = 1; w < DS4__THREADS / GPU_WARP_SIZE; w++)
        r = fmaxf(r, partial[w]);
    __syncthreads();
    return r;
}

static __device__ float ds4__block_sum(float v, float *partial /* [DS4__MAX_WARPS] */)
{
    v = ds4__warp_sum(v);
    if (threadIdx.x % GPU_WARP_SIZE == 0)
        partial[threadIdx.x / GPU_WARP_SIZE] = v;
    __syncthreads();
    float r = partial[0];
    for (int w = 1; w < DS4__THREADS / GPU_WARP_SIZE; w++)
        r += partial[w];
    __syncthreads();
    return r;
}

/* ------------------------------------------------------------ the cache format */
/* ceil(bs * 584 / 576) * 576 bytes. */
static __device__ size_t ds4__stride(int block_size)
{
    return ((size_t)block_size * DS4__TOKEN + DS4__DATA - 1) / DS4__DATA * DS4__DATA;
}

/* Dim d of the row whose data bytes start at row and scale bytes at sc, exact as f32. */
static __device__ float ds4__dim(const uint8_t *row /* [576] */, const uint8_t *sc /* [8] */,
                                 int d)
{
    if (d < DS4__NOPE)
        return num_fp8e4m3_to_f32(row[d]) * num_e8m0_to_f32(sc[d / DS4__TILE_DIMS]);
    const int o = DS4__NOPE + 2 * (d - DS4__NOPE);
    return num_bf16_to_f32((uint16_t)(row[o] | row[o + 1] << 8));
}

/* ---------------------------------------------------------------------- kernel */
/* Grid (tokens, hq), block DS4__THREADS. */
__global__ void __launch_bounds__(DS4__THREADS)
dsv4_sparse_decode_simple_kernel(
    const uint16_t *__restrict__ q,         /* q: [tokens, hq, 512] bf16 */
    const uint8_t *__restrict__ swa_cache,  /* swa_cache: [Ns, stride(swa_bs)] */
    const int32_t *__restrict__ swa_idx,    /* swa_idx: [tokens, swa_width] */
    const int32_t *__restrict__ swa_len,    /* swa_len: [tokens] */
    const uint8_t *__restrict__ ext_cache,  /* ext_cache: [Ne, stride(ext_bs)] */
    const int32_t *__restrict__ ext_idx,    /* ext_idx: [tokens, ext_width] */
    const int32_t *__restrict__ ext_len,    /* ext_len: [tokens] */
    const float *__restrict__ sink,         /* sink: [hq], or NULL */
    uint16_t *__restrict__ out,             /* out: [tokens, hq, 512] bf16 */
    float *__restrict__ lse,                /* lse: [hq, tokens] */
    int tokens, int hq, int swa_bs, int swa_width, int ext_bs, int ext_width, float scale)
{
    __shared__ float q_s[DS4__D];
    __shared__ float s_s[DS4__TILE];
    __shared__ float p_s[DS4__TILE];
    __shared__ const uint8_t *row_s[DS4__TILE]; /* data bytes of each entry's row; NULL: unused */
    __shared__ const uint8_t *sc_s[DS4__TILE];  /* its scale bytes */
    __shared__ float partial[DS4__MAX_WARPS];

    const int tid = threadIdx.x, lane = tid % GPU_WARP_SIZE, warp = tid / GPU_WARP_SIZE;
    const int t = blockIdx.x, h = blockIdx.y;
    const int n_swa = swa_len[t], n = n_swa + ext_len[t];
    const size_t swa_stride = ds4__stride(swa_bs), ext_stride = ds4__stride(ext_bs);

    const size_t q_row = ((size_t)t * hq + h) * DS4__D;
    for (int d = tid; d < DS4__D; d += DS4__THREADS)
        q_s[d] = num_bf16_to_f32(q[q_row + d]);

    float m = -INFINITY, l = 0.0f;
    float acc[DS4__ACC];
#pragma unroll
    for (int r = 0; r < DS4__ACC; r++)
        acc[r] = 0.0f;

    for (int e0 = 0; e0 < n; e0 += DS4__TILE) {
        const int nt = n - e0 < DS4__TILE ? n - e0 : DS4__TILE;
        if (tid < nt) {
            /* Entry e: SWA entry e, then extra entry e - n_swa. */
            const int e = e0 + tid, in_swa = e < n_swa;
            const int32_t slot = in_swa ? swa_idx[(size_t)t * swa_width + e]
                                        : ext_idx[(size_t)t * ext_width + (e - n_swa)];
            const uint8_t *row = NULL, *sc = NULL;
            if (slot != -1) {
                const int bs = in_swa ? swa_bs : ext_bs;
                const uint8_t *blk = (in_swa ? swa_cache : ext_cache) +
                                     (size_t)(slot / bs) * (in_swa ? swa_stride : ext_stride);
                row = blk + (size_t)(slot % bs) * DS4__DATA;
                sc = blk + (size_t)bs * DS4__DATA + (size_t)(slot % bs) * DS4__SCALES;
            }
            row_s[tid] = row;
            sc_s[tid] = sc;
        }
        __syncthreads(); /* row_s, sc_s (and, on the first tile, q_s) */

        /* Logits: warp w takes entries w, w + warps, ...; its lanes split the 512 dims. An
         * unused entry has logit -inf, so weight 0. */
        for (int jj = warp; jj < nt; jj += DS4__THREADS / GPU_WARP_SIZE) {
            const uint8_t *row = row_s[jj], *sc = sc_s[jj];
            if (!row) { /* uniform across the warp */
                if (lane == 0)
                    s_s[jj] = -INFINITY;
                continue;
            }
            float dot = 0.0f;
            for (int d = lane; d < DS4__D; d += GPU_WARP_SIZE)
                dot += q_s[d] * ds4__dim(row, sc, d);
            dot = ds4__warp_sum(dot);
            if (lane == 0)
                s_s[jj] = dot * scale;
        }
        __syncthreads(); /* s_s */

        /* Online softmax step (as mha_varlen's): a tile whose max is -inf (with m = -inf)
         * takes exp against 0, never exp(-inf - -inf). The reductions' barriers publish p_s. */
        const float s = tid < nt ? s_s[tid] : -INFINITY;
        const float m_new = fmaxf(m, ds4__block_max(s, partial));
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float alpha = expf(m - m_use); /* m == -inf: 0, the empty accumulator */
        const float p = tid < nt ? expf(s - m_use) : 0.0f;
        p_s[tid] = p;
        l = l * alpha + ds4__block_sum(p, partial);
        m = m_new;

        /* P.V with V = K: dims 4 tid .. 4 tid + 3, in one scale tile (or all rope). */
        const int d0 = tid * DS4__ACC;
        float pv[DS4__ACC];
#pragma unroll
        for (int r = 0; r < DS4__ACC; r++)
            pv[r] = 0.0f;
        for (int jj = 0; jj < nt; jj++) {
            const uint8_t *row = row_s[jj];
            if (!row)
                continue;
            const float pj = p_s[jj];
#pragma unroll
            for (int r = 0; r < DS4__ACC; r++)
                pv[r] += pj * ds4__dim(row, sc_s[jj], d0 + r);
        }
#pragma unroll
        for (int r = 0; r < DS4__ACC; r++)
            acc[r] = acc[r] * alpha + pv[r];
        __syncthreads(); /* row_s, sc_s, s_s and p_s are rewritten by the next tile */
    }

    /* l == 0: no used entry (or every logit -inf): out = 0, lse = -inf. */
    const float lse_v = l == 0.0f ? -INFINITY : m + logf(l);
    /* The sink as the reference applies it: -inf changes nothing, NaN poisons, +inf or an
     * infinite lse (the empty set) gives 0. */
    float f = 1.0f;
    if (sink) {
        const float sk = sink[h];
        if (sk == -INFINITY)
            f = 1.0f;
        else if (isnan(sk))
            f = sk;
        else if (sk != INFINITY && lse_v != INFINITY && lse_v != -INFINITY)
            f = 1.0f / (1.0f + expf(sk - lse_v));
        else
            f = 0.0f;
    }
    const size_t o_row = ((size_t)t * hq + h) * DS4__D + (size_t)tid * DS4__ACC;
#pragma unroll
    for (int r = 0; r < DS4__ACC; r++)
        out[o_row + r] = num_f32_to_bf16((l == 0.0f ? 0.0f : acc[r] / l) * f);
    if (tid == 0)
        lse[(size_t)h * tokens + t] = lse_v;
}

/* -------------------------------------------------------------------- launcher */
static int ds4__scope_ok(const opt_dsv4_scope *s)
{
    return s->block_size > 0 && s->width >= 0 && s->cache && s->len && (s->width == 0 || s->idx);
}

/* len[t] in [0, width] and every used index a slot inside its cache: device data, so the
 * launcher cannot check that. */
extern "C" int opt_dsv4_sparse_decode_simple(const opt_dsv4_args *a, void *stream)
{
    if (!a || a->tokens < 0 || a->hq <= 0 || a->hq > 65535) /* hq is grid.y */
        return OPT_EINVAL;
    if (!(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->tokens == 0)
        return OPT_OK;
    if (!a->q || !a->out || !a->lse || !ds4__scope_ok(&a->swa) || !ds4__scope_ok(&a->extra))
        return OPT_EINVAL;
    const dim3 grid((unsigned)a->tokens, (unsigned)a->hq);
    dsv4_sparse_decode_simple_kernel<<<grid, DS4__THREADS, 0, (hipStream_t)stream>>>(
        (const uint16_t *)a->q, a->swa.cache, a->swa.idx, a->swa.len, a->extra.cache,
        a->extra.idx, a->extra.len, a->sink, (uint16_t *)a->out, a->lse, a->tokens, a->hq,
        a->swa.block_size, a->swa.width, a->extra.block_size, a->extra.width, a->scale);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}
