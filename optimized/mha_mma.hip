/* mha_mma.hip - SPEC section 4, varlen prefill on matrix cores, FlashAttention-2 style
 * (issue 6). NVIDIA only (GPU_HAS_MMA_SYNC): mma.sync m16n8k16, ldmatrix and cp.async through
 * gpu_port.h; elsewhere the kernel traps and opt_mha_varlen_mma_unsupported() says so first.
 *
 * Work: one block of 4 warps per (query tile of BM rows of one sequence, query head); each
 * warp owns MT 16-row MMA tiles (BM = 128, MT = 2 for dqk <= 128: K and V fragments serve two
 * row tiles; BM = 64, MT = 1 above, where the registers hold only one). The key range the
 * tile may see (bottom-right causal and the left window, the union over its rows) is walked
 * in tiles of BN keys:
 *   S = Q K^T      Q fragments by ldmatrix (held in registers when MT = 1, dqk <= 128), K
 *                  fragments by ldmatrix from a double-buffered, XOR-swizzled shared tile;
 *   softmax        f32, online (running max m and sum l per row in registers, the quad of
 *                  lanes that shares a row reduces with two shuffles); per-row masking only on
 *                  tiles that cross a row's causal/window edge or the sequence end;
 *   O += P V       P is S's accumulator fragment packed to bf16 (f16 for f16 inputs) in
 *                  registers -- the MMA's input dtype, where the emulated reference rounds it;
 *                  the row sum keeps the unrounded f32 values, as the reference does; V
 *                  fragments by ldmatrix.trans.
 * Global -> shared copies are cp.async (16 bytes, rows past the visible range zero-filled, so
 * P = 0 never meets garbage), the next K and V tiles in flight while the current ones are used.
 * The output is O / l rounded to the input dtype; LSE natural-log f32 [hq, tq]; a row that
 * sees no key writes 0 and -inf.
 *
 * Varlen scheduling (mha_common.h, shared with wgmma): a prep kernel turns cu_seqlens_q into the
 * exclusive prefix of query tiles per sequence (workspace, batch + 1 ints); each block
 * binary-searches its tile. Within a sequence tiles run last-first, so the causal tiles with
 * the most keys start earliest and the light ones fill the tail.
 *
 * Tile shapes per head dim (dqk, dv), BM query rows x BN keys: (64, 64) and (128, 128) 128 x 64;
 * (192, 128) 64 x 64; (256, 256) 64 x 32 -- shared memory (Q + two K and V stages) 48 / 96 /
 * 104 / 96 KiB, two blocks per multiprocessor at d <= 128 (253-255 registers a thread).
 */
#include "gpu_port.h"
#include "block_scan.h"
#include "mha_common.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

/* Tuning knobs (compile-time): warps per block, MMA row tiles per warp for dqk <= 128, keys per
 * tile at MT = 2. */
#ifndef MM_WARPS
#define MM_WARPS 4
#endif
#ifndef MM_MT_SMALL
#define MM_MT_SMALL 2
#endif
#ifndef MM_BN_MT2
#define MM_BN_MT2 64
#endif
enum { MM_THREADS = 32 * MM_WARPS, MM_SCAN = 1024 };

/* Byte offset of 16-byte chunk `ch` of row `r` in a tile whose rows hold D b16 elements: the
 * chunk index is XORed with r % 8 so that ldmatrix's eight row addresses (same chunk, eight
 * consecutive rows) hit eight different bank groups. D / 8 is a multiple of 8 for every
 * supported D, so the XOR stays inside the row. */
template <int D> static __device__ __forceinline__ uint32_t mm__swz(int r, int ch)
{
    return (uint32_t)(r * (D * 2) + ((ch ^ (r & 7)) << 4));
}

template <int DQK, int DV> struct mm__cfg {
    /* MT 16-row MMA tiles per warp: two share every K and V fragment (half the shared-memory
     * traffic per FLOP), where the registers allow it. */
    static constexpr int MT = DQK <= 128 ? MM_MT_SMALL : 1;
    static constexpr int BM = 16 * MT * MM_WARPS;
    static constexpr int BN = DQK > 192 ? 32 : MT == 2 ? MM_BN_MT2 : 64;
    static constexpr int Q_BYTES = BM * DQK * 2;
    static constexpr int K_BYTES = BN * DQK * 2; /* one stage */
    static constexpr int V_BYTES = BN * DV * 2;
    static constexpr int SMEM = Q_BYTES + 2 * K_BYTES + 2 * V_BYTES;
};

/* ------------------------------------------------------------ tile prefix (prep) */
/* ts[b] = query tiles (of bm rows) of sequences before b, ts[batch] = all tiles. One block;
 * launched through mha_tiles_prefix() (mha_common.h) by mma and wgmma. */
__global__ void __launch_bounds__(MM_SCAN)
mha_mma_tiles_kernel(const int32_t *__restrict__ cu_q, int batch, int bm, int32_t *__restrict__ ts)
{
    __shared__ int32_t part[MM_SCAN];
    int b0, b1;
    gpu_block_share<MM_SCAN>(batch, &b0, &b1);
    int32_t sum = 0, total;
    for (int b = b0; b < b1; b++)
        sum += (cu_q[b + 1] - cu_q[b] + bm - 1) / bm;
    int32_t run = gpu_block_exclusive_sum<MM_SCAN>(sum, part, &total);
    for (int b = b0; b < b1; b++) {
        ts[b] = run;
        run += (cu_q[b + 1] - cu_q[b] + bm - 1) / bm;
    }
    if (threadIdx.x == 0)
        ts[batch] = total;
}

int mha_tiles_prefix(const int32_t *cu_q, int batch, int bm, int32_t *ts, hipStream_t stream)
{
    mha_mma_tiles_kernel<<<1, MM_SCAN, 0, stream>>>(cu_q, batch, bm, ts);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* ---------------------------------------------------------------------- kernel */
#if defined(GPU_HAS_MMA_SYNC)
/* Copy rows [0, rows) of a [rows_total x D] tile whose global row r starts at src + r * stride
 * (elements) into the swizzled shared tile; rows >= valid are zero-filled. */
template <int D, int ROWS>
static __device__ __forceinline__ void mm__load_tile(uint32_t s, const uint16_t *src,
                                                     size_t stride, int valid)
{
    constexpr int CH = D / 8;
    for (int c = threadIdx.x; c < ROWS * CH; c += MM_THREADS) {
        const int r = c / CH, ch = c % CH;
        const bool ok = r < valid;
        gpu_cp_async16(s + mm__swz<D>(r, ch), ok ? src + (size_t)r * stride + ch * 8 : src,
                       ok ? 16 : 0);
    }
}
#endif // GPU_HAS_MMA_SYNC

template <int DQK, int DV, bool F16>
__global__ void __launch_bounds__(MM_THREADS)
mha_mma_kernel(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
               const uint16_t *__restrict__ v, const int32_t *__restrict__ cu_q,
               const int32_t *__restrict__ cu_k, const int32_t *__restrict__ ts,
               uint16_t *__restrict__ out, float *__restrict__ lse, int batch, int tq, int hq,
               int hkv, float scale, float softcap, int causal, int window_left)
{
#if defined(GPU_HAS_MMA_SYNC)
    using C = mm__cfg<DQK, DV>;
    constexpr int BM = C::BM, MT = C::MT, BN = C::BN, NT = BN / 8, DT = DV / 8;
    extern __shared__ uint4 mm__smem[];
    const uint32_t sq = gpu_smem_addr(mm__smem);
    const uint32_t sk0 = sq + C::Q_BYTES, sv0 = sk0 + 2 * C::K_BYTES;

    int tx, h;
    mha_block_of(&tx, &h);
    mha_tile tile;
    if (!mha_tile_find(ts, cu_q, cu_k, batch, BM, tx, causal, window_left, &tile))
        return;
    const int q0 = tile.q0, k0 = tile.k0, lq = tile.lq, r0 = tile.r0, rows = tile.rows;
    const int kh = h / (hq / hkv);
    const long long jlo = tile.jlo, jhi = tile.jhi, all_lo = tile.all_lo, all_hi = tile.all_hi;
    const int n_it = jhi >= jlo ? (int)((jhi - jlo + BN) / BN) : 0;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const int wrow = warp * 16 * MT; /* the warp's first row in the tile */
    /* Rows of this lane (tile mt, half i; sequence-local) and their visible key bounds. */
    int row_lo[MT][2], row_hi[MT][2]; /* in [0, lk] and [-1, lk - 1]: int */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < 2; i++)
            mha_row_bounds(&tile, r0 + wrow + 16 * mt + g + 8 * i, causal, window_left,
                           &row_lo[mt][i], &row_hi[mt][i]);

    const size_t kv_stride_k = (size_t)hkv * DQK, kv_stride_v = (size_t)hkv * DV;
    const uint16_t *kbase = k + ((size_t)k0 * hkv + kh) * DQK;
    const uint16_t *vbase = v + ((size_t)k0 * hkv + kh) * DV;
    mm__load_tile<DQK, BM>(sq, q + ((size_t)(q0 + r0) * hq + h) * DQK, (size_t)hq * DQK, rows);
    if (n_it > 0) {
        const int valid = (int)(jhi - jlo + 1 < BN ? jhi - jlo + 1 : BN);
        mm__load_tile<DQK, BN>(sk0, kbase + (size_t)jlo * kv_stride_k, kv_stride_k, valid);
        mm__load_tile<DV, BN>(sv0, vbase + (size_t)jlo * kv_stride_v, kv_stride_v, valid);
    }
    gpu_cp_async_commit();

    const float log2e = 1.4426950408889634f;
    const float sl2 = scale * log2e;
    float o[MT][DT][4] = {};
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
    /* Q fragments stay in registers when one tile of dqk <= 128 fits beside the rest. */
    constexpr bool Q_IN_REGS = MT == 1 && DQK <= 128;
    uint32_t qf[Q_IN_REGS ? DQK / 16 : 1][4];

    for (int it = 0; it < n_it; it++) {
        const int stage = it & 1;
        const long long j0 = jlo + (long long)it * BN;
        if (it + 1 < n_it) {
            const long long j1 = j0 + BN;
            const int valid = (int)(jhi - j1 + 1 < BN ? jhi - j1 + 1 : BN);
            mm__load_tile<DQK, BN>(sk0 + (stage ^ 1) * C::K_BYTES, kbase + (size_t)j1 * kv_stride_k,
                                   kv_stride_k, valid);
            mm__load_tile<DV, BN>(sv0 + (stage ^ 1) * C::V_BYTES, vbase + (size_t)j1 * kv_stride_v,
                                  kv_stride_v, valid);
            gpu_cp_async_commit();
            gpu_cp_async_wait<1>();
        } else {
            gpu_cp_async_wait<0>();
        }
        __syncthreads();
        const uint32_t sk = sk0 + stage * C::K_BYTES, sv = sv0 + stage * C::V_BYTES;
        if (Q_IN_REGS && it == 0)
#pragma unroll
            for (int kk = 0; kk < DQK / 16; kk++)
                gpu_ldmatrix_x4(qf[Q_IN_REGS ? kk : 0],
                                sq + mm__swz<DQK>(wrow + (lane % 16), 2 * kk + lane / 16));

        /* S = Q K^T for this warp's 16 MT rows and BN keys. */
        float s[MT][NT][4] = {};
#pragma unroll
        for (int kk = 0; kk < DQK / 16; kk++) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if (Q_IN_REGS) {
#pragma unroll
                    for (int r = 0; r < 4; r++)
                        a[mt][r] = qf[Q_IN_REGS ? kk : 0][r];
                } else {
                    gpu_ldmatrix_x4(a[mt], sq + mm__swz<DQK>(wrow + 16 * mt + (lane % 16),
                                                             2 * kk + lane / 16));
                }
            }
#pragma unroll
            for (int nn = 0; nn < NT / 2; nn++) {
                uint32_t bk[4];
                gpu_ldmatrix_x4(bk, sk + mm__swz<DQK>(nn * 16 + (lane % 8) + (lane / 16) * 8,
                                                      2 * kk + (lane / 8) % 2));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    gpu_mma16816<F16>(s[mt][2 * nn], a[mt], bk[0], bk[1]);
                    gpu_mma16816<F16>(s[mt][2 * nn + 1], a[mt], bk[2], bk[3]);
                }
            }
        }

        /* Online softmax in log2 units, masked where the tile crosses a row's edge; P packed
         * into A fragments for P V. */
        const bool mask = j0 < all_lo || j0 + BN - 1 > all_hi;
        uint32_t pf[MT][BN / 16][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int n = 0; n < NT; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float val = s[mt][n][e];
                    val = softcap > 0.0f ? softcap * tanhf(val * scale / softcap) * log2e
                                         : val * sl2;
                    if (mask) {
                        const int key = (int)j0 + 8 * n + 2 * t + (e & 1);
                        if (key < row_lo[mt][e / 2] || key > row_hi[mt][e / 2])
                            val = -INFINITY;
                    }
                    s[mt][n][e] = val;
                    mx[e / 2] = fmaxf(mx[e / 2], val);
                }
            float alpha[2], m_use[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                const float m_new = fmaxf(m[mt][i], mx[i]);
                /* All logits so far -inf: exponentiate against 0, never exp(-inf - -inf). */
                m_use[i] = m_new == -INFINITY ? 0.0f : m_new;
                alpha[i] = mha_exp2(m[mt][i] - m_use[i]);
                m[mt][i] = m_new;
            }
            float rs[2] = {0.0f, 0.0f};
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const float p0 = mha_exp2(s[mt][n][0] - m_use[0]), p1 = mha_exp2(s[mt][n][1] - m_use[0]);
                const float p2 = mha_exp2(s[mt][n][2] - m_use[1]), p3 = mha_exp2(s[mt][n][3] - m_use[1]);
                rs[0] += p0 + p1;
                rs[1] += p2 + p3;
                pf[mt][n / 2][(n % 2) * 2 + 0] = gpu_pack2<F16>(p0, p1);
                pf[mt][n / 2][(n % 2) * 2 + 1] = gpu_pack2<F16>(p2, p3);
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
                l[mt][i] = l[mt][i] * alpha[i] + rs[i];
#pragma unroll
            for (int d = 0; d < DT; d++) {
                o[mt][d][0] *= alpha[0], o[mt][d][1] *= alpha[0];
                o[mt][d][2] *= alpha[1], o[mt][d][3] *= alpha[1];
            }
        }

        /* O += P V. */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
            for (int dd = 0; dd < DT / 2; dd++) {
                uint32_t bv[4];
                gpu_ldmatrix_x4_trans(bv, sv + mm__swz<DV>(kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8,
                                                           2 * dd + lane / 16));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    gpu_mma16816<F16>(o[mt][2 * dd], pf[mt][kk], bv[0], bv[1]);
                    gpu_mma16816<F16>(o[mt][2 * dd + 1], pf[mt][kk], bv[2], bv[3]);
                }
            }
        __syncthreads(); /* this stage is refilled two iterations on */
    }
    gpu_cp_async_wait<0>();

    /* Finish: the quad's partial row sums, O / l, LSE. */
    const float ln2 = 0.6931471805599453f;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float li = l[mt][i];
            li += __shfl_xor_sync(0xffffffffu, li, 1);
            li += __shfl_xor_sync(0xffffffffu, li, 2);
            const int r = r0 + wrow + 16 * mt + g + 8 * i;
            if (r >= lq)
                continue;
            const float inv = li > 0.0f ? 1.0f / li : 0.0f;
            uint32_t *orow = (uint32_t *)(out + ((size_t)(q0 + r) * hq + h) * DV);
#pragma unroll
            for (int d = 0; d < DT; d++)
                orow[(8 * d + 2 * t) / 2] =
                    gpu_pack2<F16>(o[mt][d][2 * i] * inv, o[mt][d][2 * i + 1] * inv);
            if (t == 0)
                lse[(size_t)h * tq + q0 + r] = li > 0.0f ? (m[mt][i] + log2f(li)) * ln2 : -INFINITY;
        }
#else
    (void)q, (void)k, (void)v, (void)cu_q, (void)cu_k, (void)ts, (void)out, (void)lse;
    (void)batch, (void)tq, (void)hq, (void)hkv, (void)scale, (void)softcap, (void)causal;
    (void)window_left;
    GPU_TRAP();
#endif // GPU_HAS_MMA_SYNC
}

/* -------------------------------------------------------------------- launchers */
static bool mm__dims_ok(int dqk, int dv)
{
    return (dqk == dv && (dqk == 64 || dqk == 128 || dqk == 256)) || (dqk == 192 && dv == 128);
}

extern "C" const char *opt_mha_varlen_mma_unsupported(const opt_varlen_args *a, int cc_major)
{
#if defined(GPU_VENDOR_NVIDIA)
    if (cc_major < 8)
        return "mma is written with mma.sync, ldmatrix and cp.async: NVIDIA sm_80 or newer";
    if (a->dtype != OPT_BF16 && a->dtype != OPT_F16)
        return "mma multiplies bf16 or f16 inputs on the matrix cores (f32 inputs: simple)";
    if (!mm__dims_ok(a->dqk, a->dv))
        return "mma has tile shapes for head dims 64, 128, 256 and (192, 128)";
    if (mha_grid_tiles(a, a->dqk <= 128 ? 128 : 64) == 0)
        return "mma puts query tiles on the grid's y dimension: at most 65535 of them";
    return NULL;
#else
    (void)a, (void)cc_major;
    return "mma is written with NVIDIA PTX (mma.sync, ldmatrix, cp.async); this backend has no "
           "such variant yet";
#endif // GPU_VENDOR_NVIDIA
}

extern "C" size_t opt_mha_varlen_mma_workspace(int batch)
{
    return batch < 0 ? 0 : (size_t)(batch + 1) * sizeof(int32_t);
}

template <int DQK, int DV, bool F16>
static int mm__launch(const opt_varlen_args *a, const int32_t *ts, hipStream_t stream)
{
    const int bytes = mm__cfg<DQK, DV>::SMEM;
    GPU_CHECK(hipFuncSetAttribute((const void *)mha_mma_kernel<DQK, DV, F16>,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, bytes));
    constexpr int BM = mm__cfg<DQK, DV>::BM;
    int rc = mha_tiles_for(a, BM, (int32_t *)ts, stream);
    if (rc)
        return rc;
    const long long tiles = mha_grid_tiles(a, BM);
    if (tiles == 0)
        return OPT_EINVAL; /* refused first by the unsupported check */
    const dim3 grid((unsigned)a->hq, (unsigned)tiles);
    mha_mma_kernel<DQK, DV, F16><<<grid, MM_THREADS, bytes, stream>>>(
        (const uint16_t *)a->q, (const uint16_t *)a->k, (const uint16_t *)a->v, a->cu_q, a->cu_k,
        ts, (uint16_t *)a->out, a->lse, a->batch, a->tq, a->hq, a->hkv, a->scale, a->softcap,
        a->causal, a->window_left);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

template <bool F16>
static int mm__dispatch(const opt_varlen_args *a, const int32_t *ts, hipStream_t s)
{
    if (a->dqk == 64)
        return mm__launch<64, 64, F16>(a, ts, s);
    if (a->dqk == 128)
        return mm__launch<128, 128, F16>(a, ts, s);
    if (a->dqk == 192)
        return mm__launch<192, 128, F16>(a, ts, s);
    return mm__launch<256, 256, F16>(a, ts, s);
}

/* cu arrays as for simple (device data, unchecked here). */
extern "C" int opt_mha_varlen_mma(const opt_varlen_args *a, void *workspace,
                                  size_t workspace_bytes, void *stream)
{
    if (mha_check_args(a, a && mm__dims_ok(a->dqk, a->dv), false, workspace,
                       workspace_bytes) != OPT_OK)
        return OPT_EINVAL;
    if (a->tq == 0)
        return OPT_OK;
    const hipStream_t s = (hipStream_t)stream;
    const int32_t *ts = (const int32_t *)workspace;
    return a->dtype == OPT_F16 ? mm__dispatch<true>(a, ts, s) : mm__dispatch<false>(a, ts, s);
}
