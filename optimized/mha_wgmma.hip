/* mha_wgmma.hip - SPEC section 4, varlen prefill on Hopper's warpgroup MMA (issue 6's moonshot).
 * NVIDIA sm_90a only (GPU_HAS_WGMMA: wgmma.mma_async reading 128-byte-swizzled shared tiles
 * through matrix descriptors, gpu_port.h); elsewhere the kernel traps and
 * opt_mha_varlen_wgmma_unsupported() refuses first (not a Hopper device, or a library built
 * without an sm_90a image). Not yet run on a GPU at the time of writing.
 *
 * Work: one block of two warpgroups (256 threads) per (query tile of BM = 128 rows of one
 * sequence, query head); warpgroup q owns rows 64q .. 64q + 63 of the tile (wgmma's M = 64).
 * The key range the tile may see (bottom-right causal and the left window, the union over its
 * rows; mha_common.h, the same schedule as mma) is walked in tiles of BN = 128 keys:
 *   S = Q K^T      wgmma m64n128k16, A = Q and B = K both from shared memory, K-major SW128
 *                  tiles (dqk / 16 steps, one batch, then waited for);
 *   softmax        f32, online, exactly as mma: logits scaled (or soft-capped) into log2
 *                  units, per-row masks only on tiles that cross a row's causal/window edge or
 *                  the sequence end, the row max and sum over the quad of lanes sharing a row;
 *   O += P V       wgmma m64n{dv}k16 with A = P from registers -- S's accumulator packed in
 *                  pairs to bf16 (f16 for f16 inputs), the MMA's input dtype, where the
 *                  emulated reference rounds it; the row sum keeps the unrounded f32 values --
 *                  and B = V from shared memory, the same SW128 storage read MN-major
 *                  (transpose flag), so K and V tiles are copied by one routine.
 * Global -> shared copies are cp.async by all 256 threads (16 bytes, rows past the visible
 * range zero-filled, so P = 0 never meets garbage) into WG_STAGES K/V stages, loads for tile
 * it + WG_STAGES - 1 in flight while tile it is used. Each thread fences its landed copies into
 * the async proxy (fence.proxy.async) before the barrier that precedes the wgmma reading them.
 * The output is O / l rounded once to the input dtype; LSE natural-log f32 [hq, tq]; a row
 * that sees no key writes 0 and -inf.
 *
 * Shared memory (dqk = dv = D): Q 128 x D, then per stage K 128 x D and V 128 x D, each an
 * SW128 tile (D / 64 panels of 128 rows x 128 bytes), + 1 KiB to align the base to 1024 bytes:
 * with 3 stages D = 128: 32 + 3 x 64 + 1 = 225 KiB, D = 64: 113 KiB; one block (256 threads
 * of 230 / 179 registers) per multiprocessor. Head dims other than 64 and 128 (and dqk != dv):
 * unsupported (mma has them).
 *
 * What a later version would add (FlashAttention-3): a producer warpgroup with TMA and
 * mbarriers instead of cp.async by everyone, two consumer warpgroups in ping-pong so one's
 * softmax hides under the other's MMAs, and S of the next tile issued before this tile's
 * softmax.
 */
#include "gpu_port.h"
#include "mha_common.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

/* K/V stages in the cp.async ring: tile it + WG_STAGES - 1 is in flight while tile it is
 * used. 3 (225 KiB at D = 128, the most a block may have) gives each copy two tiles of
 * compute to land in; the block is alone on its multiprocessor either way (registers). */
#ifndef WG_STAGES
#define WG_STAGES 3
#endif
enum { WG_THREADS = 256, WG_BM = 128, WG_BN = 128 };

template <int D> struct wg__cfg {
    static constexpr int BM = WG_BM, BN = WG_BN, ST = WG_STAGES;
    static constexpr int Q_BYTES = BM * D * 2;
    static constexpr int K_BYTES = BN * D * 2, V_BYTES = BN * D * 2; /* one stage */
    static constexpr int SMEM = Q_BYTES + ST * (K_BYTES + V_BYTES) + 1024;
    static_assert(ST >= 2, "WG_STAGES: at least a double buffer");
    static_assert(SMEM <= 227 * 1024, "WG_STAGES: more shared memory than a block may have");
};

/* 1 in a device image compiled for sm_90a (where GPU_HAS_WGMMA is), 0 in any other: read by
 * opt_wgmma_unsupported() from the image the runtime picked for the current device. */
#if defined(GPU_VENDOR_NVIDIA)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG__IMAGE_SM90A 1
#else
#define WG__IMAGE_SM90A 0
#endif // __CUDA_ARCH_FEAT_SM90_ALL
static __device__ int wg__image_sm90a = WG__IMAGE_SM90A;
#endif // GPU_VENDOR_NVIDIA

/* ---------------------------------------------------------------------- kernel */
#if defined(GPU_HAS_WGMMA)
/* Copy rows [0, ROWS) of a tile whose global row r starts at src + r * stride (elements) into
 * the SW128 tile at shared address s (D columns); rows >= valid are zero-filled. Consecutive
 * threads take consecutive 16-byte chunks of a row: coalesced reads, and each 8 of them fill
 * one 128-byte swizzled row segment without bank conflicts. */
template <int D, int ROWS>
static __device__ __forceinline__ void wg__load_tile(uint32_t s, const uint16_t *src, size_t stride,
                                                     int valid)
{
    constexpr int CH = D / 8;
    static_assert(ROWS * CH % WG_THREADS == 0, "wg__load_tile: whole rounds of chunks");
#pragma unroll
    for (int u = 0; u < ROWS * CH / WG_THREADS; u++) {
        const int c = threadIdx.x + u * WG_THREADS, r = c / CH, ch = c % CH;
        const bool ok = r < valid;
        gpu_cp_async16(s + gpu_sw128_chunk(ROWS, r, ch),
                       ok ? src + (size_t)r * stride + ch * 8 : src, ok ? 16 : 0);
    }
}
#endif // GPU_HAS_WGMMA

template <int D, bool F16>
__global__ void __launch_bounds__(WG_THREADS, 1)
mha_wgmma_kernel(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
                 const uint16_t *__restrict__ v, const int32_t *__restrict__ cu_q,
                 const int32_t *__restrict__ cu_k, const int32_t *__restrict__ ts,
                 uint16_t *__restrict__ out, float *__restrict__ lse, int batch, int tq, int hq,
                 int hkv, float scale, float softcap, int causal, int window_left)
{
#if defined(GPU_HAS_WGMMA)
    using C = wg__cfg<D>;
    constexpr int BM = C::BM, BN = C::BN, ST = C::ST, NT = BN / 8, DT = D / 8;
    extern __shared__ uint4 wg__smem[];
    /* The swizzle atoms must sit on 1024-byte boundaries (gpu_port.h): align the base. */
    const uint32_t sq = (gpu_smem_addr(wg__smem) + 1023u) & ~1023u;
    const uint32_t skv0 = sq + C::Q_BYTES; /* stage st: K at skv0 + st (K + V), V after it */

    const int h = blockIdx.y;
    mha_tile tile;
    if (!mha_tile_find(ts, cu_q, cu_k, batch, BM, blockIdx.x, causal, window_left, &tile))
        return;
    const int q0 = tile.q0, k0 = tile.k0, lq = tile.lq, r0 = tile.r0;
    const long long jlo = tile.jlo, jhi = tile.jhi, all_lo = tile.all_lo, all_hi = tile.all_hi;
    const int n_it = jhi >= jlo ? (int)((jhi - jlo + BN) / BN) : 0;
    const int kh = h / (hq / hkv);

    /* Warpgroup wg, its thread i; this thread's accumulator rows are wrow and wrow + 8 of the
     * tile (gpu_wgmma_c_coord), columns 8j + 2t, 8j + 2t + 1. */
    const int wg = threadIdx.x / 128, i = threadIdx.x % 128;
    const int t = i % 4;
    const int wrow = 64 * wg + 16 * (i / 32) + (i % 32) / 4;
    int row_lo[2], row_hi[2];
#pragma unroll
    for (int ii = 0; ii < 2; ii++)
        mha_row_bounds(&tile, r0 + wrow + 8 * ii, causal, window_left, &row_lo[ii], &row_hi[ii]);

    const size_t kv_stride = (size_t)hkv * D;
    const uint16_t *kbase = k + ((size_t)k0 * hkv + kh) * D;
    const uint16_t *vbase = v + ((size_t)k0 * hkv + kh) * D;
    /* Prologue: Q with K/V tile 0 in the first cp.async group, tiles 1 .. ST - 2 one group
     * each (groups stay one per tile, empty ones included, so the waits count right). */
    if (n_it > 0)
        wg__load_tile<D, BM>(sq, q + ((size_t)(q0 + r0) * hq + h) * D, (size_t)hq * D, tile.rows);
#pragma unroll
    for (int p = 0; p < ST - 1; p++) {
        if (p < n_it) {
            const long long j = jlo + (long long)p * BN;
            const int valid = (int)(jhi - j + 1 < BN ? jhi - j + 1 : BN);
            const uint32_t sk = skv0 + p * (C::K_BYTES + C::V_BYTES);
            wg__load_tile<D, BN>(sk, kbase + (size_t)j * kv_stride, kv_stride, valid);
            wg__load_tile<D, BN>(sk + C::K_BYTES, vbase + (size_t)j * kv_stride, kv_stride, valid);
        }
        gpu_cp_async_commit();
    }

    const float log2e = 1.4426950408889634f;
    const float sl2 = scale * log2e;
    float o[D / 2];
#pragma unroll
    for (int j = 0; j < D / 2; j++)
        o[j] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (int it = 0; it < n_it; it++) {
        const int stage = it % ST;
        const long long j0 = jlo + (long long)it * BN;
        /* Tile it has landed (this thread's copies), is visible to the async proxy, and every
         * thread is past iteration it - 1, whose stage the next copy refills. */
        gpu_cp_async_wait<ST - 2>();
        gpu_fence_proxy_async();
        __syncthreads();
        {
            const int nx = it + ST - 1;
            if (nx < n_it) {
                const long long j = jlo + (long long)nx * BN;
                const int valid = (int)(jhi - j + 1 < BN ? jhi - j + 1 : BN);
                const uint32_t sk = skv0 + (nx % ST) * (C::K_BYTES + C::V_BYTES);
                wg__load_tile<D, BN>(sk, kbase + (size_t)j * kv_stride, kv_stride, valid);
                wg__load_tile<D, BN>(sk + C::K_BYTES, vbase + (size_t)j * kv_stride, kv_stride,
                                     valid);
            }
            gpu_cp_async_commit();
        }
        const uint32_t sk = skv0 + stage * (C::K_BYTES + C::V_BYTES), sv = sk + C::K_BYTES;

        /* S = Q K^T: this warpgroup's 64 rows x BN keys. */
        float s[BN / 2];
        gpu_wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++)
            gpu_wgmma_ss<BN, F16>(s, gpu_sw128_kmajor_desc(sq, BM, 64 * wg, ks),
                                  gpu_sw128_kmajor_desc(sk, BN, 0, ks), ks > 0);
        gpu_wgmma_commit();
        gpu_wgmma_wait<0>();
        gpu_wgmma_keep(s);

        /* Online softmax in log2 units, masked where the tile crosses a row's edge; P packed
         * into A registers for P V (k16 step c: columns 16c .. 16c + 15 = s[8c .. 8c + 7]). */
        const bool mask = j0 < all_lo || j0 + BN - 1 > all_hi;
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float val = s[4 * n + e];
                val = softcap > 0.0f ? softcap * tanhf(val * scale / softcap) * log2e : val * sl2;
                if (mask) {
                    const int key = (int)j0 + 8 * n + 2 * t + (e & 1);
                    if (key < row_lo[e / 2] || key > row_hi[e / 2])
                        val = -INFINITY;
                }
                s[4 * n + e] = val;
                mx[e / 2] = fmaxf(mx[e / 2], val);
            }
        float alpha[2], m_use[2];
#pragma unroll
        for (int ii = 0; ii < 2; ii++) {
            mx[ii] = fmaxf(mx[ii], __shfl_xor_sync(0xffffffffu, mx[ii], 1));
            mx[ii] = fmaxf(mx[ii], __shfl_xor_sync(0xffffffffu, mx[ii], 2));
            const float m_new = fmaxf(m[ii], mx[ii]);
            /* All logits so far -inf: exponentiate against 0, never exp(-inf - -inf). */
            m_use[ii] = m_new == -INFINITY ? 0.0f : m_new;
            alpha[ii] = mha_exp2(m[ii] - m_use[ii]);
            m[ii] = m_new;
        }
        uint32_t pf[BN / 16][4];
        float rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const float p0 = mha_exp2(s[4 * n + 0] - m_use[0]);
            const float p1 = mha_exp2(s[4 * n + 1] - m_use[0]);
            const float p2 = mha_exp2(s[4 * n + 2] - m_use[1]);
            const float p3 = mha_exp2(s[4 * n + 3] - m_use[1]);
            rs[0] += p0 + p1;
            rs[1] += p2 + p3;
            pf[n / 2][(n % 2) * 2 + 0] = gpu_pack2<F16>(p0, p1);
            pf[n / 2][(n % 2) * 2 + 1] = gpu_pack2<F16>(p2, p3);
        }
#pragma unroll
        for (int ii = 0; ii < 2; ii++)
            l[ii] = l[ii] * alpha[ii] + rs[ii];
#pragma unroll
        for (int d = 0; d < DT; d++) {
            o[4 * d + 0] *= alpha[0], o[4 * d + 1] *= alpha[0];
            o[4 * d + 2] *= alpha[1], o[4 * d + 3] *= alpha[1];
        }

        /* O += P V. */
        gpu_wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < BN / 16; ks++)
            gpu_wgmma_rs<D, F16, 1>(o, pf[ks], gpu_sw128_mnmajor_desc(sv, BN, ks), 1);
        gpu_wgmma_commit();
        gpu_wgmma_wait<0>();
        gpu_wgmma_keep(o);
#pragma unroll
        for (int ks = 0; ks < BN / 16; ks++)
            gpu_wgmma_keep(pf[ks]);
    }
    gpu_cp_async_wait<0>();

    /* Finish: the quad's partial row sums, O / l, LSE. */
    const float ln2 = 0.6931471805599453f;
#pragma unroll
    for (int ii = 0; ii < 2; ii++) {
        float li = l[ii];
        li += __shfl_xor_sync(0xffffffffu, li, 1);
        li += __shfl_xor_sync(0xffffffffu, li, 2);
        const int r = r0 + wrow + 8 * ii;
        if (r >= lq)
            continue;
        const float inv = li > 0.0f ? 1.0f / li : 0.0f;
        uint32_t *orow = (uint32_t *)(out + ((size_t)(q0 + r) * hq + h) * D);
#pragma unroll
        for (int d = 0; d < DT; d++)
            orow[(8 * d + 2 * t) / 2] =
                gpu_pack2<F16>(o[4 * d + 2 * ii] * inv, o[4 * d + 2 * ii + 1] * inv);
        if (t == 0)
            lse[(size_t)h * tq + q0 + r] = li > 0.0f ? (m[ii] + log2f(li)) * ln2 : -INFINITY;
    }
#else
    (void)q, (void)k, (void)v, (void)cu_q, (void)cu_k, (void)ts, (void)out, (void)lse;
    (void)batch, (void)tq, (void)hq, (void)hkv, (void)scale, (void)softcap, (void)causal;
    (void)window_left;
    GPU_TRAP();
#endif // GPU_HAS_WGMMA
}

/* -------------------------------------------------------------------- launchers */
extern "C" const char *opt_wgmma_unsupported(int cc_major)
{
#if defined(GPU_VENDOR_NVIDIA)
    if (cc_major != 9)
        return "wgmma is Hopper's warpgroup MMA: an sm_90 device (H100, H200) and an sm_90a image";
    int have = 0;
    if (cudaMemcpyFromSymbol(&have, wg__image_sm90a, sizeof have) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: leave no error for the next launch's check */
        return "wgmma: this library has no device image loadable on this GPU";
    }
    if (!have)
        return "wgmma: this library was built without an sm_90a image (CMAKE_CUDA_ARCHITECTURES "
               "needs 90a; plain sm_90 code has no wgmma)";
    return NULL;
#else
    (void)cc_major;
    return "wgmma is NVIDIA Hopper PTX (sm_90a); this backend has no such variant";
#endif // GPU_VENDOR_NVIDIA
}

extern "C" const char *opt_mha_varlen_wgmma_unsupported(const opt_varlen_args *a, int cc_major)
{
    const char *why = opt_wgmma_unsupported(cc_major);
    if (why)
        return why;
    if (a->dtype != OPT_BF16 && a->dtype != OPT_F16)
        return "wgmma multiplies bf16 or f16 inputs on the matrix cores (f32 inputs: simple)";
    if (a->dqk != a->dv || (a->dqk != 64 && a->dqk != 128))
        return "wgmma has tile shapes for head dims 64 and 128 (dqk = dv); mma has the others";
    if (a->hq > 65535)
        return "wgmma puts query heads on the grid's y dimension: at most 65535";
    return NULL;
}

extern "C" size_t opt_mha_varlen_wgmma_workspace(int batch)
{
    return opt_mha_varlen_mma_workspace(batch); /* the same tile prefix */
}

template <int D, bool F16>
static int wg__launch(const opt_varlen_args *a, const int32_t *ts, hipStream_t stream)
{
    const int bytes = wg__cfg<D>::SMEM;
    GPU_CHECK(hipFuncSetAttribute((const void *)mha_wgmma_kernel<D, F16>,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, bytes));
    int rc = mha_tiles_prefix(a->cu_q, a->batch, WG_BM, (int32_t *)ts, stream);
    if (rc)
        return rc;
    const long long tiles = ((long long)a->tq + WG_BM - 1) / WG_BM + a->batch; /* upper bound */
    const dim3 grid((unsigned)tiles, (unsigned)a->hq);
    mha_wgmma_kernel<D, F16><<<grid, WG_THREADS, bytes, stream>>>(
        (const uint16_t *)a->q, (const uint16_t *)a->k, (const uint16_t *)a->v, a->cu_q, a->cu_k,
        ts, (uint16_t *)a->out, a->lse, a->batch, a->tq, a->hq, a->hkv, a->scale, a->softcap,
        a->causal, a->window_left);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* cu arrays as for simple (device data, unchecked here). On a device or build where
 * opt_mha_varlen_wgmma_unsupported() gives a reason, the kernel traps. */
extern "C" int opt_mha_varlen_wgmma(const opt_varlen_args *a, void *workspace,
                                    size_t workspace_bytes, void *stream)
{
    const bool dims_ok = a && a->dqk == a->dv && (a->dqk == 64 || a->dqk == 128);
    if (mha_check_args(a, dims_ok, workspace, workspace_bytes) != OPT_OK)
        return OPT_EINVAL;
    if (a->tq == 0)
        return OPT_OK;
    const hipStream_t s = (hipStream_t)stream;
    const int32_t *ts = (const int32_t *)workspace;
    const bool f16 = a->dtype == OPT_F16;
    if (a->dqk == 64)
        return f16 ? wg__launch<64, true>(a, ts, s) : wg__launch<64, false>(a, ts, s);
    return f16 ? wg__launch<128, true>(a, ts, s) : wg__launch<128, false>(a, ts, s);
}
