/* mha_portable.hip - SPEC section 4 (varlen prefill) on the vendor-neutral matrix primitive of
 * gpu_port.h (issue 6): gpu_mma_bf16_16x16x16, one v_mfma_f32_16x16x16bf16_1k on CDNA
 * (gfx90a / gfx940), two mma.sync m16n8k16 on NVIDIA sm_80+. Nothing else vendor-specific: the
 * fragments are reached only through the layout helpers (gpu_mma_{a,b,c}_coord), the
 * warp/wavefront width is GPU_WARP_SIZE, and copies are plain 16-byte loads and stores. So the
 * kernel that runs here on an NVIDIA GPU is, instruction for instruction apart from the MMA and
 * its fragments, the one the AMD build compiles: the NVIDIA runs check its logic; the probe
 * test (tests/test_gpu_probe.c, opt_mma_arange) checks each vendor's fragment contract.
 *
 * Work: one block of MP_WARPS warps (wavefronts) per (query tile of 16 MP_WARPS rows of one
 * sequence, query head); warp w owns rows 16w .. 16w + 15. The key range the tile may see
 * (mha_common.h: bottom-right causal, the left window; the same schedule as mma and wgmma) is
 * walked in tiles of MP_BN keys, K and V copied to shared memory by the whole block:
 *   S = Q K^T   Q's A fragments held in registers for the whole sequence walk, K's B
 *               fragments read from shared memory, one 16 x 16 S tile per MMA chain;
 *   softmax     S goes through shared memory to a row-major layout, where GPU_WARP_SIZE / 16
 *               lanes share each row (shuffles reduce the row max and sum across them): f32,
 *               online, logits in log2 units (softcap as mma), masks per key; P rounded to
 *               bf16 into shared memory -- where the emulated reference rounds it -- and the
 *               row sum over the unrounded f32 weights; the rescale factor per row alongside;
 *   O += P V    P's A fragments and V's B fragments from shared memory, O in C fragments
 *               (DV / 16 tiles a warp).
 * The output is O / l rounded once to bf16; LSE natural-log f32 [hq, tq]; a row that sees no
 * key writes 0 and -inf. Numerics are those of mma and the emulated reference (P in bf16,
 * unrounded row sum); outputs are not bit-identical to mma (exp2f here, MUFU there).
 *
 * What it is not: fast on NVIDIA (mma and wgmma are; the round trip of S and P through shared
 * memory and the plain copies cost there), or tuned for CDNA (no LDS layout work, no
 * double-buffered copies): it makes every matrix-core prefill path available on AMD with the
 * same contract, a baseline for the MFMA kernels to come. bf16 only (the primitive's dtype);
 * head dims (64, 64), (128, 128), (256, 256), (192, 128).
 */
#include "gpu_port.h"
#include "mha_common.h"
#include "numerics.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

enum { MP_WARPS = 4, MP_BN = 32, MP_BM = 16 * MP_WARPS, MP_PAD = 8 };

/* Dynamic shared memory, byte offsets: K [BN][DQK + PAD] bf16, V [BN][DV + PAD] bf16, S per warp
 * [16][BN + 1] f32, P per warp [16][BN + PAD] bf16, one f32 per (warp, row). Rows padded so the
 * fragment reads of neighbouring rows fall in different banks. */
template <int DQK, int DV> struct mp__cfg {
    static constexpr int KLD = DQK + MP_PAD, VLD = DV + MP_PAD;
    static constexpr int SLD = MP_BN + 1, PLD = MP_BN + MP_PAD;
    static constexpr int K_OFF = 0;
    static constexpr int V_OFF = K_OFF + MP_BN * KLD * 2;
    static constexpr int S_OFF = V_OFF + MP_BN * VLD * 2;
    static constexpr int P_OFF = S_OFF + MP_WARPS * 16 * SLD * 4;
    static constexpr int R_OFF = P_OFF + MP_WARPS * 16 * PLD * 2;
    static constexpr int SMEM = R_OFF + MP_WARPS * 16 * 4;
};

/* 1 in a device image with the matrix primitive (GPU_HAS_MMA_BF16), 0 in any other: read by
 * opt_mha_varlen_portable_unsupported() from the image the runtime picked for this device. */
#if defined(GPU_HAS_MMA_BF16)
#define MP__IMAGE_MMA 1
#else
#define MP__IMAGE_MMA 0
#endif // GPU_HAS_MMA_BF16
static __device__ int mp__image_mma = MP__IMAGE_MMA;

#if defined(GPU_HAS_MMA_BF16)
/* Copy rows [0, MP_BN) of a K or V tile (row r at src + r * stride, D wide) into shared rows of
 * LD elements; rows >= valid are zero, so P = 0 never meets garbage. */
template <int D, int LD>
static __device__ __forceinline__ void mp__load_tile(uint16_t *dst, const uint16_t *src,
                                                     size_t stride, int valid)
{
    constexpr int CH = D / 8;
    for (int c = threadIdx.x; c < MP_BN * CH; c += MP_WARPS * GPU_WARP_SIZE) {
        const int r = c / CH, ch = c % CH;
        uint4 val = {0u, 0u, 0u, 0u};
        if (r < valid)
            val = *(const uint4 *)(src + (size_t)r * stride + ch * 8);
        *(uint4 *)(dst + r * LD + ch * 8) = val;
    }
}
#endif // GPU_HAS_MMA_BF16

template <int DQK, int DV>
__global__ void __launch_bounds__(MP_WARPS * GPU_WARP_SIZE)
mha_portable_kernel(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
                    const uint16_t *__restrict__ v, const int32_t *__restrict__ cu_q,
                    const int32_t *__restrict__ cu_k, const int32_t *__restrict__ ts,
                    uint16_t *__restrict__ out, float *__restrict__ lse, int batch, int tq, int hq,
                    int hkv, float scale, float softcap, int causal, int window_left)
{
#if defined(GPU_HAS_MMA_BF16)
    using C = mp__cfg<DQK, DV>;
    constexpr int W = GPU_WARP_SIZE, LPR = W / 16; /* lanes sharing a row in the softmax */
    extern __shared__ uint4 mp__smem[];
    uint8_t *sm = (uint8_t *)mp__smem;
    uint16_t *ks = (uint16_t *)(sm + C::K_OFF), *vs = (uint16_t *)(sm + C::V_OFF);
    const int warp = threadIdx.x / W, lane = threadIdx.x % W;
    float *ss = (float *)(sm + C::S_OFF) + warp * 16 * C::SLD;
    uint16_t *ps = (uint16_t *)(sm + C::P_OFF) + warp * 16 * C::PLD;
    float *rs = (float *)(sm + C::R_OFF) + warp * 16;

    mha_tile tile;
    int tx, h;
    mha_block_of(&tx, &h);
    if (!mha_tile_find(ts, cu_q, cu_k, batch, MP_BM, tx, causal, window_left, &tile))
        return;
    const int kh = h / (hq / hkv);
    const int q0 = tile.q0, k0 = tile.k0, lq = tile.lq, wr0 = tile.r0 + 16 * warp;

    /* Q's A fragments, rows wr0 .. wr0 + 15 (zero past the sequence). */
    uint32_t qa[DQK / 16][GPU_MMA_A_REGS];
#pragma unroll
    for (int kk = 0; kk < DQK / 16; kk++)
#pragma unroll
        for (int e = 0; e < GPU_MMA_A_ELEMS; e += 2) {
            int row, col;
            gpu_mma_a_coord(lane, e, &row, &col);
            const int r = wr0 + row;
            qa[kk][e / 2] = r < lq ? *(const uint32_t *)(q + ((size_t)(q0 + r) * hq + h) * DQK +
                                                         16 * kk + col)
                                   : 0u; /* elements e, e + 1: k = col, col + 1 */
        }

    /* This lane's softmax row and columns: row lane / LPR, columns lane % LPR + LPR c. */
    const int srow = lane / LPR, scol = lane % LPR;
    int row_lo, row_hi;
    mha_row_bounds(&tile, wr0 + srow, causal, window_left, &row_lo, &row_hi);
    const float log2e = 1.4426950408889634f, sl2 = scale * log2e;
    float m = -INFINITY, l = 0.0f;

    float o[DV / 16][GPU_MMA_C_REGS];
#pragma unroll
    for (int d = 0; d < DV / 16; d++)
#pragma unroll
        for (int e = 0; e < GPU_MMA_C_REGS; e++)
            o[d][e] = 0.0f;

    const size_t k_stride = (size_t)hkv * DQK, v_stride = (size_t)hkv * DV;
    for (long long j0 = tile.jlo; j0 <= tile.jhi; j0 += MP_BN) {
        const int valid = (int)(tile.jhi - j0 + 1 < MP_BN ? tile.jhi - j0 + 1 : MP_BN);
        __syncthreads(); /* every warp is done with the previous tile */
        mp__load_tile<DQK, C::KLD>(ks, k + ((size_t)(k0 + j0) * hkv + kh) * DQK, k_stride, valid);
        mp__load_tile<DV, C::VLD>(vs, v + ((size_t)(k0 + j0) * hkv + kh) * DV, v_stride, valid);
        __syncthreads();

        /* S = Q K^T, 16 keys per MMA chain, into this warp's row-major S. */
#pragma unroll
        for (int nt = 0; nt < MP_BN / 16; nt++) {
            float c[GPU_MMA_C_REGS];
#pragma unroll
            for (int e = 0; e < GPU_MMA_C_REGS; e++)
                c[e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < DQK / 16; kk++) {
                uint32_t b[GPU_MMA_B_REGS];
                gpu_mma_load_bt(b, ks + 16 * nt * C::KLD + 16 * kk, C::KLD);
                gpu_mma_bf16_16x16x16(c, qa[kk], b);
            }
#pragma unroll
            for (int e = 0; e < GPU_MMA_C_ELEMS; e++) {
                int row, col;
                gpu_mma_c_coord(lane, e, &row, &col);
                ss[row * C::SLD + 16 * nt + col] = c[e];
            }
        }
        __syncthreads();

        /* Online softmax of this lane's row over its columns. */
        float x[MP_BN / LPR], mx = -INFINITY;
#pragma unroll
        for (int c = 0; c < MP_BN / LPR; c++) {
            const int col = scol + LPR * c;
            const long long key = j0 + col;
            float s = ss[srow * C::SLD + col];
            s = softcap > 0.0f ? softcap * tanhf(s * scale / softcap) * log2e : s * sl2;
            if (key < row_lo || key > row_hi)
                s = -INFINITY;
            x[c] = s;
            mx = fmaxf(mx, s);
        }
#pragma unroll
        for (int off = 1; off < LPR; off *= 2)
            mx = fmaxf(mx, GPU_SHFL_XOR(mx, off));
        const float m_new = fmaxf(m, mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new; /* never exp(-inf - -inf) */
        const float alpha = exp2f(m - m_use);
        m = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int c = 0; c < MP_BN / LPR; c++) {
            const float p = exp2f(x[c] - m_use);
            sum += p;
            ps[srow * C::PLD + scol + LPR * c] = num_f32_to_bf16(p);
        }
#pragma unroll
        for (int off = 1; off < LPR; off *= 2)
            sum += GPU_SHFL_XOR(sum, off);
        l = l * alpha + sum;
        if (scol == 0)
            rs[srow] = alpha;
        __syncthreads();

        /* O = alpha O + P V. */
#pragma unroll
        for (int e = 0; e < GPU_MMA_C_ELEMS; e++) {
            int row, col;
            gpu_mma_c_coord(lane, e, &row, &col);
            const float a = rs[row];
#pragma unroll
            for (int d = 0; d < DV / 16; d++)
                o[d][e] *= a;
        }
#pragma unroll
        for (int kk = 0; kk < MP_BN / 16; kk++) {
            uint32_t pa[GPU_MMA_A_REGS];
            gpu_mma_load_a(pa, ps + 16 * kk, C::PLD);
#pragma unroll
            for (int d = 0; d < DV / 16; d++) {
                uint32_t b[GPU_MMA_B_REGS];
                gpu_mma_load_b(b, vs + 16 * kk * C::VLD + 16 * d, C::VLD);
                gpu_mma_bf16_16x16x16(o[d], pa, b);
            }
        }
    }

    /* Finish: 1 / l per row through shared memory to the lanes holding its O elements. */
    __syncthreads();
    if (scol == 0)
        rs[srow] = l > 0.0f ? 1.0f / l : 0.0f;
    if (scol == 0 && wr0 + srow < lq)
        lse[(size_t)h * tq + q0 + wr0 + srow] =
            l > 0.0f ? (m + log2f(l)) * 0.6931471805599453f : -INFINITY;
    __syncthreads();
#pragma unroll
    for (int e = 0; e < GPU_MMA_C_ELEMS; e++) {
        int row, col;
        gpu_mma_c_coord(lane, e, &row, &col);
        const int r = wr0 + row;
        if (r >= lq)
            continue;
        const float inv = rs[row];
        uint16_t *orow = out + ((size_t)(q0 + r) * hq + h) * DV + col;
#pragma unroll
        for (int d = 0; d < DV / 16; d++)
            orow[16 * d] = num_f32_to_bf16(o[d][e] * inv);
    }
#else
    (void)q, (void)k, (void)v, (void)cu_q, (void)cu_k, (void)ts, (void)out, (void)lse;
    (void)batch, (void)tq, (void)hq, (void)hkv, (void)scale, (void)softcap, (void)causal;
    (void)window_left;
    GPU_TRAP();
#endif // GPU_HAS_MMA_BF16
}

/* -------------------------------------------------------------------- launchers */
static bool mp__dims_ok(int dqk, int dv)
{
    return (dqk == dv && (dqk == 64 || dqk == 128 || dqk == 256)) || (dqk == 192 && dv == 128);
}

extern "C" const char *opt_matrix_unsupported(void)
{
    int have = 0;
    if (!GPU_READ_IMAGE_FLAG(mp__image_mma, &have))
        return "this library has no device image loadable on this GPU";
    if (!have)
        return "the matrix primitive (gpu_port.h GPU_HAS_MMA_BF16) is built for NVIDIA sm_80+ "
               "and CDNA gfx90a / gfx940-942; this device's image has none";
    return NULL;
}

extern "C" const char *opt_mha_varlen_portable_unsupported(const opt_varlen_args *a)
{
    if (a->dtype != OPT_BF16)
        return "portable multiplies bf16 on the matrix primitive (f16: mma; f32: simple)";
    if (!mp__dims_ok(a->dqk, a->dv))
        return "portable has tile shapes for head dims 64, 128, 256 and (192, 128)";
    if (mha_grid_tiles(a, MP_BM) == 0)
        return "portable puts query tiles on the grid's y dimension: at most 65535 of them";
    return opt_matrix_unsupported();
}

template <int DQK, int DV>
static int mp__launch(const opt_varlen_args *a, const int32_t *ts, hipStream_t stream)
{
    const int bytes = mp__cfg<DQK, DV>::SMEM;
    GPU_CHECK(hipFuncSetAttribute((const void *)mha_portable_kernel<DQK, DV>,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, bytes));
    int warp = 0, rc = gpu_warp_size(&warp);
    if (rc == OPT_OK)
        rc = mha_tiles_for(a, MP_BM, (int32_t *)ts, stream);
    if (rc != OPT_OK)
        return rc;
    const long long tiles = mha_grid_tiles(a, MP_BM);
    if (tiles == 0)
        return OPT_EINVAL; /* refused first by the unsupported check */
    const dim3 grid((unsigned)a->hq, (unsigned)tiles);
    mha_portable_kernel<DQK, DV><<<grid, MP_WARPS * warp, bytes, stream>>>(
        (const uint16_t *)a->q, (const uint16_t *)a->k, (const uint16_t *)a->v, a->cu_q, a->cu_k,
        ts, (uint16_t *)a->out, a->lse, a->batch, a->tq, a->hq, a->hkv, a->scale, a->softcap,
        a->causal, a->window_left);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

extern "C" int opt_mha_varlen_portable(const opt_varlen_args *a, void *workspace,
                                       size_t workspace_bytes, void *stream)
{
    if (mha_check_args(a, a && mp__dims_ok(a->dqk, a->dv) && a->dtype == OPT_BF16, false,
                       workspace, workspace_bytes) != OPT_OK)
        return OPT_EINVAL;
    if (a->tq == 0)
        return OPT_OK;
    const hipStream_t s = (hipStream_t)stream;
    const int32_t *ts = (const int32_t *)workspace;
    if (a->dqk == 64)
        return mp__launch<64, 64>(a, ts, s);
    if (a->dqk == 128)
        return mp__launch<128, 128>(a, ts, s);
    if (a->dqk == 192)
        return mp__launch<192, 128>(a, ts, s);
    return mp__launch<256, 256>(a, ts, s);
}
