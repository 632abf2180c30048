/* mha_varlen.hip - SPEC section 4, varlen prefill (flash_attn_varlen_func) on the GPU.
 *
 * mha_varlen_simple: simple, obviously correct, not slow on purpose. One block of 128 threads
 *   per (query token, query head). The query row is decoded once into shared memory as f32;
 *   the keys the token may see under the bottom-right causal and left-window masks are
 *   streamed in tiles of 128, one key per thread: the thread computes its logit (f32 dot,
 *   scale, optional soft-cap), the block reduces the tile's max and sum (warp shuffles, then
 *   shared memory), and an online softmax (running max m and sum l in f32) rescales the
 *   output accumulators, which each thread holds for dims tid and tid + 128. P stays f32 (no
 *   rounding to the input dtype). The output is rounded once, to nearest even, into the
 *   input dtype; the LSE is the natural log, f32, [hq, tq].
 */
#include "gpu_port.h"
#include "numerics.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

enum {
    MHA__THREADS = 128, /* one key per thread per tile */
    MHA__MAX_DIM = 256, /* dqk, dv */
    MHA__ACC = MHA__MAX_DIM / MHA__THREADS, /* output dims per thread */
    MHA__MAX_WARPS = MHA__THREADS / 32,     /* warps per block at the narrowest warp */
};

/* ------------------------------------------------------------ block reductions */
/* Every thread of the block gets the same result: each reads all the warp partials in the
 * same order. The trailing barrier lets the caller reuse `partial` at once. NaN: fmaxf skips
 * it in the max (the sum then carries it to the output, as in the reference). */
__device__ float mha__block_max(float v, float *partial /* [MHA__MAX_WARPS] */)
{
    for (int m = GPU_WARP_SIZE / 2; m > 0; m /= 2)
        v = fmaxf(v, GPU_SHFL_XOR(v, m));
    if (threadIdx.x % GPU_WARP_SIZE == 0)
        partial[threadIdx.x / GPU_WARP_SIZE] = v;
    __syncthreads();
    float r = partial[0];
    for (int w = 1; w < MHA__THREADS / GPU_WARP_SIZE; w++)
        r = fmaxf(r, partial[w]);
    __syncthreads();
    return r;
}

__device__ float mha__block_sum(float v, float *partial /* [MHA__MAX_WARPS] */)
{
    for (int m = GPU_WARP_SIZE / 2; m > 0; m /= 2)
        v += GPU_SHFL_XOR(v, m);
    if (threadIdx.x % GPU_WARP_SIZE == 0)
        partial[threadIdx.x / GPU_WARP_SIZE] = v;
    __syncthreads();
    float r = partial[0];
    for (int w = 1; w < MHA__THREADS / GPU_WARP_SIZE; w++)
        r += partial[w];
    __syncthreads();
    return r;
}

/* ---------------------------------------------------------------------- kernel */
/* Grid (tq, hq), block MHA__THREADS. DT is the storage dtype of q, k, v and out. */
template <int DT>
__global__ void __launch_bounds__(MHA__THREADS)
mha_varlen_simple_kernel(const void *__restrict__ q,     /* q: [tq, hq, dqk] */
                         const void *__restrict__ k,     /* k: [tk, hkv, dqk] */
                         const void *__restrict__ v,     /* v: [tk, hkv, dv] */
                         const int32_t *__restrict__ cu_q, /* cu_q: [batch + 1] */
                         const int32_t *__restrict__ cu_k, /* cu_k: [batch + 1] */
                         void *__restrict__ out,         /* out: [tq, hq, dv] */
                         float *__restrict__ lse,        /* lse: [hq, tq] */
                         int batch, int tq, int hq, int hkv, int dqk, int dv, float scale,
                         float softcap, int causal, int window_left)
{
    __shared__ float q_s[MHA__MAX_DIM];
    __shared__ float p_s[MHA__THREADS];
    __shared__ float partial[MHA__MAX_WARPS];

    const int tid = threadIdx.x;
    const int tok = blockIdx.x, h = blockIdx.y;
    const int kh = h / (hq / hkv);

    /* The token's sequence: the last b with cu_q[b] <= tok (empty sequences before it share
     * its start and are skipped). Invariant: cu_q[lo] <= tok, and hi == batch or
     * cu_q[hi] > tok; cu_q[batch] == tq > tok closes the last sequence. */
    int lo = 0, hi = batch;
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        if (cu_q[mid] <= tok)
            lo = mid;
        else
            hi = mid;
    }
    const int b = lo;
    const int q0 = cu_q[b], k0 = cu_k[b];
    const long long lq = cu_q[b + 1] - q0, lk = cu_k[b + 1] - k0;
    const long long i = tok - q0;

    /* Visible keys [jlo, jhi] within the sequence (64-bit: i + lk - lq - window_left can leave
     * the int range). */
    const long long diag = i + lk - lq;
    long long jlo = 0, jhi = lk - 1;
    if (window_left >= 0 && diag - window_left > jlo)
        jlo = diag - window_left;
    if (causal && diag < jhi)
        jhi = diag;

    const size_t o_row = ((size_t)tok * hq + h) * dv;
    if (jlo > jhi) { /* empty attended set: out = 0, lse = -inf (uniform across the block) */
        for (int d = tid; d < dv; d += MHA__THREADS)
            num_store_f32(DT, out, o_row + d, 0.0f);
        if (tid == 0)
            lse[(size_t)h * tq + tok] = -INFINITY;
        return;
    }

    const size_t q_row = ((size_t)tok * hq + h) * dqk;
    for (int d = tid; d < dqk; d += MHA__THREADS)
        q_s[d] = num_load_f32(DT, q, q_row + d);
    __syncthreads();

    float m = -INFINITY, l = 0.0f;
    float acc[MHA__ACC];
#pragma unroll
    for (int r = 0; r < MHA__ACC; r++)
        acc[r] = 0.0f;

    for (long long j0 = jlo; j0 <= jhi; j0 += MHA__THREADS) {
        const int nt = (int)(jhi - j0 + 1 < MHA__THREADS ? jhi - j0 + 1 : MHA__THREADS);

        float s = -INFINITY;
        if (tid < nt) {
            const size_t k_row = ((size_t)k0 + (size_t)(j0 + tid)) * hkv * dqk + (size_t)kh * dqk;
            float dot = 0.0f;
            for (int d = 0; d < dqk; d++)
                dot += q_s[d] * num_load_f32(DT, k, k_row + d);
            s = dot * scale;
            if (softcap > 0.0f)
                s = softcap * tanhf(s / softcap);
        }

        /* The tile holds at least one visible key, so its max is -inf only when every such
         * logit is -inf (or NaN). Then exp is taken against 0 instead: exp(-inf - 0) = 0 for
         * the -inf logits and NaN stays NaN; never exp(-inf - -inf). */
        const float m_new = fmaxf(m, mha__block_max(s, partial));
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float alpha = expf(m - m_use); /* m == -inf: 0, the empty accumulator */
        const float p = tid < nt ? expf(s - m_use) : 0.0f;
        p_s[tid] = p;
        l = l * alpha + mha__block_sum(p, partial); /* its barriers also publish p_s */
        m = m_new;

#pragma unroll
        for (int r = 0; r < MHA__ACC; r++) {
            const int d = tid + r * MHA__THREADS;
            if (d < dv) {
                const size_t v_col = ((size_t)k0 + (size_t)j0) * hkv * dv + (size_t)kh * dv + d;
                const size_t v_stride = (size_t)hkv * dv;
                float pv = 0.0f;
                for (int jj = 0; jj < nt; jj++)
                    pv += p_s[jj] * num_load_f32(DT, v, v_col + (size_t)jj * v_stride);
                acc[r] = acc[r] * alpha + pv;
            }
        }
        __syncthreads(); /* p_s is rewritten by the next tile */
    }

    /* l == 0 only when every visible logit was -inf: the empty-set convention then. */
#pragma unroll
    for (int r = 0; r < MHA__ACC; r++) {
        const int d = tid + r * MHA__THREADS;
        if (d < dv)
            num_store_f32(DT, out, o_row + d, l == 0.0f ? 0.0f : acc[r] / l);
    }
    if (tid == 0)
        lse[(size_t)h * tq + tok] = l == 0.0f ? -INFINITY : m + logf(l);
}

/* -------------------------------------------------------------------- launcher */
template <int DT>
static int mha__launch(const opt_varlen_args *a, hipStream_t stream)
{
    const dim3 grid((unsigned)a->tq, (unsigned)a->hq);
    mha_varlen_simple_kernel<DT><<<grid, MHA__THREADS, 0, stream>>>(
        a->q, a->k, a->v, a->cu_q, a->cu_k, a->out, a->lse, a->batch, a->tq, a->hq, a->hkv,
        a->dqk, a->dv, a->scale, a->softcap, a->causal, a->window_left);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* cu_q[batch] must equal tq and both cu arrays start at 0 and never decrease (SPEC section 0):
 * they live on the device, so the launcher cannot check that. */
extern "C" int opt_mha_varlen_simple(const opt_varlen_args *a, void *stream)
{
    if (!a || a->batch < 0 || a->tq < 0 || (a->tq > 0 && a->batch == 0))
        return OPT_EINVAL;
    if (a->hq <= 0 || a->hkv <= 0 || a->hq % a->hkv != 0 || a->hq > 65535)
        return OPT_EINVAL; /* hq is grid.y */
    if (a->dqk < 1 || a->dqk > MHA__MAX_DIM || a->dv < 1 || a->dv > MHA__MAX_DIM)
        return OPT_EINVAL;
    if (a->window_left < -1 || !(a->softcap >= 0.0f && a->softcap <= FLT_MAX) ||
        !(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->tq > 0 && (!a->q || !a->cu_q || !a->cu_k || !a->out || !a->lse))
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    switch (a->dtype) {
    case OPT_F32: return a->tq ? mha__launch<OPT_F32>(a, s) : OPT_OK;
    case OPT_BF16: return a->tq ? mha__launch<OPT_BF16>(a, s) : OPT_OK;
    case OPT_F16: return a->tq ? mha__launch<OPT_F16>(a, s) : OPT_OK;
    default: return OPT_EINVAL;
    }
}
