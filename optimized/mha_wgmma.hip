/* mha_wgmma.hip - SPEC section 4, varlen prefill on Hopper's warpgroup MMA (issue 6's moonshot).
 * NVIDIA sm_90a only (GPU_HAS_WGMMA: wgmma.mma_async reading 128-byte-swizzled shared tiles
 * through matrix descriptors, gpu_port.h); elsewhere the kernel traps and
 * opt_mha_varlen_wgmma_unsupported() refuses first (not a Hopper device, or a library built
 * without an sm_90a image).
 *
 * Work: one block of three warpgroups (384 threads) per (query tile of BM = 128 rows of one
 * sequence, query head), FlashAttention-3's warp specialization: warpgroup 0 copies, 1 and 2
 * (the consumers) compute, consumer c owning rows 64c .. 64c + 63 of the tile (wgmma's M = 64).
 * setmaxnreg moves registers from the copier (24 a thread) to the consumers (240).
 * The key range the tile may see (bottom-right causal and the left window, the union over its
 * rows; mha_common.h, the same schedule as mma) is walked in tiles of BN = 128 keys (64 at
 * dv = 256):
 *   S = Q K^T      wgmma m64n{BN}k16, A = Q and B = K both from shared memory, K-major SW128
 *                  tiles (dqk / 16 steps, one commit group);
 *   softmax        f32, online, exactly as mma: logits scaled (or soft-capped) into log2
 *                  units, per-row masks only on tiles that cross a row's causal/window edge or
 *                  the sequence end, the row max and sum over the quad of lanes sharing a row;
 *   O += P V       wgmma m64n{dv}k16 (dv = 256: two m64n128k16 per k16 step, one for each
 *                  128-column half of V) with A = P from registers -- S's accumulator packed in
 *                  pairs to bf16 (f16 for f16 inputs), the MMA's input dtype, where the
 *                  emulated reference rounds it; the row sum keeps the unrounded f32 values --
 *                  and B = V from shared memory, the same SW128 storage read MN-major
 *                  (transpose flag), so K and V tiles are copied by one routine.
 * Copies: the producer's 128 threads cp.async Q, then K_0, then K_t and V_(t-1) for each t,
 * into rings of ST stages (16 bytes a copy, rows past the visible range zero-filled, so P = 0
 * never meets garbage). Each producer thread's cp.async.mbarrier.arrive arrives on the tile's
 * "full" mbarrier once its copies have landed, without waiting for them, so every stage may be
 * in flight; the consumers wait on it and fence the bytes into the async proxy
 * (fence.proxy.async, as wgmma reads shared memory there), and arrive on the stage's "empty"
 * mbarrier as soon as the MMA that read the tile has been waited for; the producer waits on
 * that before refilling the stage. No block-wide barrier after the start, so the consumers run
 * apart.
 * Consumers (FlashAttention-3's intra-warpgroup overlap and ping-pong): each keeps one S
 * accumulator set and one P register set. Iteration it waits for P V of tile it - 2
 * (wgmma.wait_group 0), packs P of tile it - 1, then issues S_it and P_(it-1) V_(it-1) as two
 * commit groups and waits for S_it alone (wait_group 1), so the softmax of tile it runs while
 * P V of tile it - 1 is still on the tensor cores. The wait for that P V opens the next
 * iteration rather than closing this one: ptxas moved a wgmma wait placed after the softmax
 * ahead of it, and the loop's back edge keeps it behind. The two consumers take turns to issue
 * (named barriers), so one's softmax runs under the other's MMAs.
 * The output is O / l rounded once to the input dtype; LSE natural-log f32 [hq, tq]; a row
 * that sees no key writes 0 and -inf. The numerics are those of the lockstep version this
 * replaced (S, softmax, P V one after another): on an H200 its outputs and LSE matched it bit
 * for bit (causal, window, softcap, GQA, varlen with empty sequences, bf16 and f16, D 64 and
 * 128), 1.2x faster (causal and non-causal prefill, D = 128 and 64). Against the previous
 * version (two warpgroups copying for themselves, a block barrier per tile), on an H100 in one
 * device call (run cases/perf-prefill.ini -f 'prefill_causal_8k_*' -V wgmma): D = 128 70.4 ->
 * 77.8% of mma.sync's measured peak, D = 64 47.0 -> 53.9%, (192, 128) 64.9 -> 69.5%, window 1K
 * 52.4 -> 57.7%, and D = 256 (new) 72.6%.
 *
 * Shared memory: Q 128 x dqk, then per stage K BN x dqk and V BN x dv, each an SW128 tile
 * (d / 64 panels of rows x 128 bytes), the 1 + 4 ST mbarriers, + 1 KiB to align the base to
 * 1024 bytes: with 3 stages D = 128: 32 + 3 x 64 + 1 = 225 KiB, D = 64: 113 KiB; MLA prefill's
 * (192, 128) fits 2 stages, 48 + 2 x 80 + 1 = 209 KiB, and D = 256 with 64-key tiles
 * 64 + 2 x 64 + 1 = 193 KiB. One block per multiprocessor, no spills. Head dims (dqk, dv)
 * other than (64, 64), (128, 128), (256, 256) and (192, 128): unsupported.
 *
 * What a later version would add: the copies by TMA (one thread, no address arithmetic, and
 * completion counted in bytes on the mbarrier); at D = 64, where the softmax (its 2^x on the
 * MUFU) outlasts the MMAs, S of the next tile issued before this tile's softmax into a second
 * S set.
 */
#include "gpu_port.h"
#include "merge_rule.h"
#include "mha_common.h"
#include "numerics.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <type_traits>

/* Stages in the K and V rings. 3 (225 KiB at D = 128, the most a block may have) lets the
 * producer run two tiles ahead; 2 still works (one tile ahead); the block is alone on its
 * multiprocessor either way (registers). */
#ifndef WG_STAGES
#define WG_STAGES 3
#endif
/* A block: a producer warpgroup (the copies) and two consumer warpgroups (the MMAs and the
 * softmax, 64 query rows each); registers moved from the producer to the consumers with
 * setmaxnreg (128 x 24 + 256 x 240 <= 64K, FlashAttention-3's split). */
enum {
    WG_PTHREADS = 128,
    WG_CTHREADS = 256,
    WG_THREADS = WG_PTHREADS + WG_CTHREADS,
    WG_PREGS = 24,
    WG_CREGS = 240,
    WG_BM = 128
};
static_assert(WG_PTHREADS * WG_PREGS + WG_CTHREADS * WG_CREGS <= 65536, "the register file");

/* Per (dqk, dv): key tiles of BN = 128, or 64 at dv = 256 (S then takes 32 accumulators a
 * thread, O 128); WG_STAGES stages where they fit in a block's 227 KiB, else a double buffer
 * (dqk 192, dv 128: 48 + 2 x 80 + 1 = 209 KiB; 256: 64 + 2 x 64 + 1 = 193 KiB). O = P V is
 * made DV / DVC column blocks of DVC <= 128 at a time, wgmma's widest N here. */
template <int DQK, int DV> struct wg__cfg {
    static constexpr int BM = WG_BM, BN = DV > 128 ? 64 : 128;
    static constexpr int DVC = DV > 128 ? 128 : DV, NC = DV / DVC;
    static_assert(DV % DVC == 0, "O in whole column blocks");
    static constexpr int Q_BYTES = BM * DQK * 2;
    static constexpr int K_BYTES = BN * DQK * 2, V_BYTES = BN * DV * 2; /* one stage */
    /* + the 1 + 4 st mbarriers, + 1 KiB to align the base */
    static constexpr int smem_of(int st)
    {
        return Q_BYTES + st * (K_BYTES + V_BYTES) + 8 * (1 + 4 * st) + 1024;
    }
    static constexpr int ST = smem_of(WG_STAGES) <= 227 * 1024 ? WG_STAGES : 2;
    static constexpr int SMEM = smem_of(ST);
    static_assert(ST >= 2, "WG_STAGES: at least a double buffer");
    static_assert(SMEM <= 227 * 1024, "more shared memory than a block may have");
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

template <int DQK, int DV, bool F16>
__global__ void __launch_bounds__(WG_THREADS, 1)
mha_wgmma_kernel(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
                 const uint16_t *__restrict__ v, const int32_t *__restrict__ cu_q,
                 const int32_t *__restrict__ cu_k, const int32_t *__restrict__ ts,
                 uint16_t *__restrict__ out, float *__restrict__ lse,
                 const uint16_t *__restrict__ merge_o, const float *__restrict__ merge_lse,
                 int batch, int tq, int hq, int hkv, float scale, float softcap, int causal,
                 int window_left)
{
#if defined(GPU_HAS_WGMMA)
    using C = wg__cfg<DQK, DV>;
    constexpr int BM = C::BM, BN = C::BN, ST = C::ST, NT = BN / 8, DVC = C::DVC, NC = C::NC,
                  DTC = DVC / 8;
    constexpr int LNT = NT == 16 ? 4 : NT == 8 ? 3 : -1; /* log2 NT */
    static_assert(LNT > 0, "the row-max tree covers BN = 64 or 128");
    extern __shared__ uint4 wg__smem[];
    /* The swizzle atoms must sit on 1024-byte boundaries (gpu_port.h): align the base. */
    const uint32_t sq = (gpu_smem_addr(wg__smem) + 1023u) & ~1023u;
    const uint32_t skv0 = sq + C::Q_BYTES; /* stage st: K at skv0 + st (K + V), V after it */
    constexpr uint32_t STAGE = C::K_BYTES + C::V_BYTES;
    /* Key tile t's K and V live in stage t % ST; that stage's fill t / ST is the phase of its
     * mbarriers, placed after the stages: Q landed; K / V of the stage landed (kfull, vfull:
     * the producer's 128 threads arrive) and read by both consumers (kempty, vempty: 256). */
    auto k_at = [&](int t) { return skv0 + (uint32_t)(t % ST) * STAGE; };
    auto v_at = [&](int t) { return k_at(t) + (uint32_t)C::K_BYTES; };
    auto parity = [&](int t) { return (t / ST) & 1; };
    const uint32_t sbar = skv0 + ST * STAGE;
    const uint32_t qfull = sbar;
    auto kfull = [&](int t) { return sbar + 8u * (uint32_t)(1 + t % ST); };
    auto vfull = [&](int t) { return sbar + 8u * (uint32_t)(1 + ST + t % ST); };
    auto kempty = [&](int t) { return sbar + 8u * (uint32_t)(1 + 2 * ST + t % ST); };
    auto vempty = [&](int t) { return sbar + 8u * (uint32_t)(1 + 3 * ST + t % ST); };

    int tx, h;
    mha_block_of(&tx, &h);
    mha_tile tile;
    if (!mha_tile_find(ts, cu_q, cu_k, batch, BM, tx, causal, window_left, &tile))
        return;
    const int q0 = tile.q0, k0 = tile.k0, lq = tile.lq, r0 = tile.r0;
    const long long jlo = tile.jlo, jhi = tile.jhi, all_lo = tile.all_lo, all_hi = tile.all_hi;
    const int n_it = jhi >= jlo ? (int)((jhi - jlo + BN) / BN) : 0;
    const int kh = h / (hq / hkv);
    const int role = threadIdx.x / 128; /* 0: producer; 1, 2: consumers of rows 64 (role - 1) .. */

    if (threadIdx.x == 0) {
        gpu_mbar_init(qfull, WG_PTHREADS);
        for (int st = 0; st < ST; st++) {
            gpu_mbar_init(kfull(st), WG_PTHREADS);
            gpu_mbar_init(vfull(st), WG_PTHREADS);
            gpu_mbar_init(kempty(st), WG_CTHREADS);
            gpu_mbar_init(vempty(st), WG_CTHREADS);
        }
        gpu_mbar_init_fence();
    }
    __syncthreads();

    if (role == 0) {
        /* ------------------------------------------------------------ producer */
        gpu_setmaxnreg_dec<WG_PREGS>();
        if (n_it > 0) {
            const int tid = threadIdx.x;
            const size_t k_stride = (size_t)hkv * DQK, v_stride = (size_t)hkv * DV;
            const uint16_t *kbase = k + ((size_t)k0 * hkv + kh) * DQK;
            const uint16_t *vbase = v + ((size_t)k0 * hkv + kh) * DV;
            /* Items in the order the consumers need them: Q, K_0, then K_t and V_(t-1), then the
             * last V. An item's full barrier completes when every producer thread's copies of
             * it have landed (cp.async.mbarrier.arrive), so as many items are in flight as the
             * stages hold. A stage's t-th K (V) waits for the consumers to release its
             * (t - ST)-th. */
            /* Key tile t of K (d = DQK) or V (d = DV) into its stage, once the consumers have
             * released the tile that stage held before (t - ST). */
            auto load = [&](auto d, int t, uint32_t dst, const uint16_t *base, size_t stride,
                            uint32_t empty, uint32_t full) {
                if (t >= ST)
                    gpu_mbar_wait(empty, parity(t - ST));
                const long long j = jlo + (long long)t * BN;
                gpu_sw128_copy<decltype(d)::value, BN, WG_PTHREADS>(
                    dst, base + (size_t)j * stride, stride,
                    (int)(jhi - j + 1 < BN ? jhi - j + 1 : BN), tid);
                gpu_cp_async_mbar_arrive(full);
            };
            auto load_k = [&](int t) {
                load(std::integral_constant<int, DQK>(), t, k_at(t), kbase, k_stride, kempty(t),
                     kfull(t));
            };
            auto load_v = [&](int t) {
                load(std::integral_constant<int, DV>(), t, v_at(t), vbase, v_stride, vempty(t),
                     vfull(t));
            };
            gpu_sw128_copy<DQK, BM, WG_PTHREADS>(sq, q + ((size_t)(q0 + r0) * hq + h) * DQK,
                                                 (size_t)hq * DQK, tile.rows, tid);
            gpu_cp_async_mbar_arrive(qfull);
            load_k(0);
            for (int t = 1; t < n_it; t++) {
                load_k(t);
                load_v(t - 1);
            }
            load_v(n_it - 1);
            gpu_cp_async_wait_all(); /* no thread leaves with copies in flight */
        }
    } else {
        /* -------------------------------------------------------------- consumers */
        gpu_setmaxnreg_inc<WG_CREGS>();
        /* Consumer wg, its thread i; this thread's accumulator rows are wrow and wrow + 8 of the
         * tile (gpu_wgmma_c_coord), columns 8j + 2t, 8j + 2t + 1. */
        const int wg = role - 1, i = threadIdx.x % 128;
        const int t = i % 4;
        const int wrow = 64 * wg + 16 * (i / 32) + (i % 32) / 4;
        int row_lo[2], row_hi[2];
#pragma unroll
        for (int ii = 0; ii < 2; ii++)
            mha_row_bounds(&tile, r0 + wrow + 8 * ii, causal, window_left, &row_lo[ii],
                           &row_hi[ii]);

        const float log2e = 1.4426950408889634f;
        const float sl2 = scale * log2e;
        /* O's accumulators, column block c (columns DVC c ..) in o[c]. */
        float o[NC][DVC / 2];
#pragma unroll
        for (int c = 0; c < NC; c++)
#pragma unroll
            for (int j = 0; j < DVC / 2; j++)
                o[c][j] = 0.0f;
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2] = {0.0f, 0.0f};
        /* P of the tile whose P V is next, packed into A registers (k16 step c: columns
         * 16c .. 16c + 15 = s[8c .. 8c + 7]). */
        uint32_t pf[BN / 16][4];

        /* S = Q K^T of one tile, this warpgroup's 64 rows x BN keys: issued, committed, not
         * waited. */
        auto issue_s = [&](float (&s)[BN / 2], uint32_t sk) {
            gpu_wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < DQK / 16; ks++)
                gpu_wgmma_ss<BN, F16>(s, gpu_sw128_kmajor_desc(sq, BM, 64 * wg, ks),
                                      gpu_sw128_kmajor_desc(sk, BN, 0, ks), ks > 0);
            gpu_wgmma_commit();
        };
        /* O = alpha O + P V for the tile whose P is in pf: issued, committed, not waited. */
        auto issue_pv = [&](uint32_t sv) {
#pragma unroll
            for (int c = 0; c < NC; c++)
#pragma unroll
                for (int d = 0; d < DTC; d++) {
                    o[c][4 * d + 0] *= alpha[0], o[c][4 * d + 1] *= alpha[0];
                    o[c][4 * d + 2] *= alpha[1], o[c][4 * d + 3] *= alpha[1];
                }
            gpu_wgmma_fence();
            /* Column block c of V starts at its panel DVC c / 64 (BN rows of 128 bytes each). */
#pragma unroll
            for (int c = 0; c < NC; c++)
#pragma unroll
                for (int ks = 0; ks < BN / 16; ks++)
                    gpu_wgmma_rs<DVC, F16, 1>(
                        o[c], pf[ks],
                        gpu_sw128_mnmajor_desc(sv + (uint32_t)(c * (DVC / 64) * BN * 128), BN, ks),
                        1);
            gpu_wgmma_commit();
        };
        /* Online softmax of tile j0's S in log2 units, masked where the tile crosses a row's edge:
         * s becomes P in f32 (unrounded), m and l move on, alpha is O's rescale for this tile. */
        auto softmax = [&](float (&s)[BN / 2], long long j0) {
            /* Whole-tile branches (uniform over the block), so the common path is straight-line
             * code: the logits into log2 units, then the masks where the tile crosses an edge. */
            if (softcap > 0.0f) {
#pragma unroll
                for (int j = 0; j < BN / 2; j++)
                    s[j] = softcap * tanhf(s[j] * scale / softcap) * log2e;
            } else {
#pragma unroll
                for (int j = 0; j < BN / 2; j++)
                    s[j] = s[j] * sl2;
            }
            if (j0 < all_lo || j0 + BN - 1 > all_hi) {
#pragma unroll
                for (int n = 0; n < NT; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int key = (int)j0 + 8 * n + 2 * t + (e & 1);
                        if (key < row_lo[e / 2] || key > row_hi[e / 2])
                            s[4 * n + e] = -INFINITY;
                    }
            }
            /* Row maxima as a tree: max is exact, so the order does not change the value (NaN
             * logits are skipped by fmaxf either way, and -inf is the floor as in a running max),
             * and the dependency chain is log2 long instead of linear. */
            float mx[2];
#pragma unroll
            for (int ii = 0; ii < 2; ii++) {
                float a[NT];
#pragma unroll
                for (int n = 0; n < NT; n++)
                    a[n] = fmaxf(s[4 * n + 2 * ii], s[4 * n + 2 * ii + 1]);
#pragma unroll
                for (int lv = 0; lv < LNT; lv++)
#pragma unroll
                    for (int n = 0; n < NT; n += 2 << lv)
                        a[n] = fmaxf(a[n], a[n + (1 << lv)]);
                mx[ii] = fmaxf(-INFINITY, a[0]);
            }
            float m_use[2];
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
            float rs[2] = {0.0f, 0.0f};
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const float p0 = mha_exp2(s[4 * n + 0] - m_use[0]);
                const float p1 = mha_exp2(s[4 * n + 1] - m_use[0]);
                const float p2 = mha_exp2(s[4 * n + 2] - m_use[1]);
                const float p3 = mha_exp2(s[4 * n + 3] - m_use[1]);
                rs[0] += p0 + p1;
                rs[1] += p2 + p3;
                s[4 * n + 0] = p0, s[4 * n + 1] = p1, s[4 * n + 2] = p2, s[4 * n + 3] = p3;
            }
#pragma unroll
            for (int ii = 0; ii < 2; ii++)
                l[ii] = l[ii] * alpha[ii] + rs[ii];
        };
        /* P to the MMA's input dtype, where the emulated reference rounds it. Only once the P V
         * that read the previous pf has completed. */
        auto pack_p = [&](const float (&s)[BN / 2]) {
#pragma unroll
            for (int n = 0; n < NT; n++) {
                pf[n / 2][(n % 2) * 2 + 0] = gpu_pack2<F16>(s[4 * n + 0], s[4 * n + 1]);
                pf[n / 2][(n % 2) * 2 + 1] = gpu_pack2<F16>(s[4 * n + 2], s[4 * n + 3]);
            }
        };

        /* After a wait for P V: its accumulators and A registers may be read and written again. */
        auto pv_done = [&]() {
#pragma unroll
            for (int c = 0; c < NC; c++)
                gpu_wgmma_keep(o[c]);
#pragma unroll
            for (int ks = 0; ks < BN / 16; ks++)
                gpu_wgmma_keep(pf[ks]);
        };

        /* The pipeline. Intra-warpgroup overlap (FlashAttention-3): each consumer keeps one S
         * accumulator set and one P register set; iteration it waits for P V of tile it - 2
         * (wgmma.wait_group 0), packs P of tile it - 1, then issues S_it and P_(it-1) V_(it-1) as
         * two commit groups and waits for S_it alone (wait_group 1), so the softmax of tile it runs
         * while P V of tile it - 1 is still on the tensor cores. The wait for that P V opens the
         * next iteration rather than closing this one: ptxas moved a wgmma wait placed after the
         * softmax ahead of it, and the loop's back edge keeps it behind. Tile 0 has only S, a last
         * step only the last P V.
         * Ping-pong between the consumers: each issues its MMAs between gpu_bar_sync on its own
         * named barrier (1 + wg) and gpu_bar_arrive on the other's, so their issues alternate and
         * one's softmax runs under the other's MMAs. Consumer 1 opens with an arrival for
         * consumer 0, and consumer 0 takes the one left over at the end; both issue n_it + 1
         * times. Stages are released (kempty / vempty) as soon as the MMA that read them is
         * waited for. */
        float s[BN / 2];
        if (n_it > 0) {
            const int bar_mine = 1 + wg, bar_other = 2 - wg;
            gpu_mbar_wait_landed(qfull, 0);
            if (wg == 1)
                gpu_bar_arrive(1, WG_CTHREADS);
            gpu_mbar_wait_landed(kfull(0), parity(0));
            gpu_bar_sync(bar_mine, WG_CTHREADS);
            issue_s(s, k_at(0));
            gpu_bar_arrive(bar_other, WG_CTHREADS);
            gpu_wgmma_wait<0>();
            gpu_wgmma_keep(s);
            gpu_mbar_arrive(kempty(0));
            softmax(s, jlo);
            for (int it = 1; it < n_it; it++) {
                gpu_wgmma_wait<0>();
                pv_done();
                if (it >= 2)
                    gpu_mbar_arrive(vempty(it - 2));
                pack_p(s);
                gpu_mbar_wait_landed(kfull(it), parity(it));
                gpu_mbar_wait_landed(vfull(it - 1), parity(it - 1));
                gpu_bar_sync(bar_mine, WG_CTHREADS);
                issue_s(s, k_at(it));
                issue_pv(v_at(it - 1));
                gpu_bar_arrive(bar_other, WG_CTHREADS);
                gpu_wgmma_wait<1>();
                gpu_wgmma_keep(s);
                gpu_mbar_arrive(kempty(it));
                softmax(s, jlo + (long long)it * BN);
            }
            gpu_wgmma_wait<0>();
            pv_done();
            pack_p(s);
            gpu_mbar_wait_landed(vfull(n_it - 1), parity(n_it - 1));
            gpu_bar_sync(bar_mine, WG_CTHREADS);
            issue_pv(v_at(n_it - 1));
            gpu_bar_arrive(bar_other, WG_CTHREADS);
            gpu_wgmma_wait<0>();
            pv_done();
            if (wg == 0)
                gpu_bar_sync(1, WG_CTHREADS);
        }

        /* Finish: the quad's partial row sums, O / l, LSE; with merge_o, merged with the
         * partial there (below). */
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
            const float lse_b = li > 0.0f ? (m[ii] + log2f(li)) * ln2 : -INFINITY;
            const size_t row = ((size_t)(q0 + r) * hq + h) * DV;
            uint32_t *orow = (uint32_t *)(out + row);
            if (!merge_o) {
#pragma unroll
                for (int c = 0; c < NC; c++)
#pragma unroll
                    for (int d = 0; d < DTC; d++)
                        orow[(DVC * c + 8 * d + 2 * t) / 2] = gpu_pack2<F16>(
                            o[c][4 * d + 2 * ii] * inv, o[c][4 * d + 2 * ii + 1] * inv);
                if (t == 0)
                    lse[(size_t)h * tq + q0 + r] = lse_b;
                continue;
            }
            /* SPEC section 0's merge of (merge_o, merge_lse) = A with this result B by
             * merge_rule.h, as merge_states vec does it (B rounded to the dtype first, as it
             * would be stored between the two), so out and lse are bit for bit those of the
             * unfused pair of launches. */
            const uint32_t *arow = (const uint32_t *)(merge_o + row);
            const merge2_row w = merge2_weights(merge_lse[(size_t)h * tq + q0 + r], lse_b);
            auto get = [](uint32_t w, int hi) {
                const uint16_t b16 = (uint16_t)(w >> (16 * hi));
                return F16 ? gpu_f16_to_f32(b16) : num_bf16_to_f32(b16);
            };
            auto put = [](float x) {
                return (uint32_t)(F16 ? gpu_f32_to_f16(x) : num_f32_to_bf16(x));
            };
#pragma unroll
            for (int c = 0; c < NC; c++)
#pragma unroll
                for (int d = 0; d < DTC; d++) {
                    const int at = (DVC * c + 8 * d + 2 * t) / 2;
                    const uint32_t xa = arow[at];
                    const uint32_t xb = gpu_pack2<F16>(o[c][4 * d + 2 * ii] * inv,
                                                       o[c][4 * d + 2 * ii + 1] * inv);
                    const float y0 = merge2_apply(w, get(xa, 0), get(xb, 0));
                    const float y1 = merge2_apply(w, get(xa, 1), get(xb, 1));
                    orow[at] = put(y0) | put(y1) << 16;
                }
            if (t == 0)
                lse[(size_t)h * tq + q0 + r] = w.lse;
        }
    }
#else
    (void)q, (void)k, (void)v, (void)cu_q, (void)cu_k, (void)ts, (void)out, (void)lse;
    (void)merge_o, (void)merge_lse, (void)batch, (void)tq, (void)hq, (void)hkv, (void)scale;
    (void)softcap, (void)causal;
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
    if (!GPU_READ_IMAGE_FLAG(wg__image_sm90a, &have))
        return "wgmma: this library has no device image loadable on this GPU";
    if (!have)
        return "wgmma: this library was built without an sm_90a image (CMAKE_CUDA_ARCHITECTURES "
               "needs 90a; plain sm_90 code has no wgmma)";
    return NULL;
#else
    (void)cc_major;
    return "wgmma is NVIDIA Hopper PTX (sm_90a); this backend has no such variant";
#endif // GPU_VENDOR_NVIDIA
}

static bool wg__dims_ok(int dqk, int dv)
{
    return (dqk == dv && (dqk == 64 || dqk == 128 || dqk == 256)) || (dqk == 192 && dv == 128);
}

/* The argument checks of opt_mha_varlen_wgmma_unsupported, without the device's. */
static const char *wg__args_unsupported(const opt_varlen_args *a)
{
    if (a->dtype != OPT_BF16 && a->dtype != OPT_F16)
        return "wgmma multiplies bf16 or f16 inputs on the matrix cores (f32 inputs: simple)";
    if (!wg__dims_ok(a->dqk, a->dv))
        return "wgmma has tile shapes for head dims 64, 128 and 256 (dqk = dv) and (192, 128)";
    if (mha_grid_tiles(a, WG_BM) == 0)
        return "wgmma puts query tiles on the grid's y dimension: at most 65535 of them";
    return NULL;
}

extern "C" const char *opt_mha_varlen_wgmma_unsupported(const opt_varlen_args *a, int cc_major)
{
    const char *why = opt_wgmma_unsupported(cc_major);
    return why ? why : wg__args_unsupported(a);
}

extern "C" size_t opt_mha_varlen_wgmma_workspace(int batch)
{
    return opt_mha_varlen_mma_workspace(batch); /* the same tile prefix */
}

template <int DQK, int DV, bool F16>
static int wg__launch(const opt_varlen_args *a, const int32_t *ts, hipStream_t stream)
{
    const int bytes = wg__cfg<DQK, DV>::SMEM;
    GPU_CHECK(hipFuncSetAttribute((const void *)mha_wgmma_kernel<DQK, DV, F16>,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, bytes));
    int rc = mha_tiles_for(a, WG_BM, (int32_t *)ts, stream);
    if (rc)
        return rc;
    const long long tiles = mha_grid_tiles(a, WG_BM);
    if (tiles == 0)
        return OPT_EINVAL; /* refused first by the unsupported check */
    const dim3 grid((unsigned)a->hq, (unsigned)tiles);
    mha_wgmma_kernel<DQK, DV, F16><<<grid, WG_THREADS, bytes, stream>>>(
        (const uint16_t *)a->q, (const uint16_t *)a->k, (const uint16_t *)a->v, a->cu_q, a->cu_k,
        ts, (uint16_t *)a->out, a->lse, (const uint16_t *)a->merge_o, a->merge_lse, a->batch,
        a->tq, a->hq, a->hkv, a->scale, a->softcap, a->causal, a->window_left);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* cu arrays as for simple (device data, unchecked here). On a device or build where
 * opt_mha_varlen_wgmma_unsupported() gives a reason, the kernel traps. */
extern "C" int opt_mha_varlen_wgmma(const opt_varlen_args *a, void *workspace,
                                    size_t workspace_bytes, void *stream)
{
    if (mha_check_args(a, a && wg__dims_ok(a->dqk, a->dv), true, workspace,
                       workspace_bytes) != OPT_OK)
        return OPT_EINVAL;
    if (a->tq == 0)
        return OPT_OK;
    const hipStream_t s = (hipStream_t)stream;
    const int32_t *ts = (const int32_t *)workspace;
    const bool f16 = a->dtype == OPT_F16;
    if (a->dqk == 64)
        return f16 ? wg__launch<64, 64, true>(a, ts, s) : wg__launch<64, 64, false>(a, ts, s);
    if (a->dqk == 192)
        return f16 ? wg__launch<192, 128, true>(a, ts, s) : wg__launch<192, 128, false>(a, ts, s);
    if (a->dqk == 256)
        return f16 ? wg__launch<256, 256, true>(a, ts, s) : wg__launch<256, 256, false>(a, ts, s);
    return f16 ? wg__launch<128, 128, true>(a, ts, s) : wg__launch<128, 128, false>(a, ts, s);
}

/* opt_wgmma_here: per device (index < WG__DEVICES), 0 = not asked yet, 1 = this library runs
 * wgmma there, 2 = it does not. Racing writers store the same answer. */
enum { WG__DEVICES = 64 };
static int wg__device_ok[WG__DEVICES];

extern "C" int opt_wgmma_here(int *yes)
{
    int dev = 0;
    GPU_CHECK(hipGetDevice(&dev));
    int ok = dev >= 0 && dev < WG__DEVICES ? wg__device_ok[dev] : 2;
    if (ok == 0) {
        int cc = 0;
        GPU_CHECK(hipDeviceGetAttribute(&cc, hipDeviceAttributeComputeCapabilityMajor, dev));
        ok = opt_wgmma_unsupported(cc) ? 2 : 1;
        wg__device_ok[dev] = ok;
    }
    *yes = ok == 1;
    return OPT_OK;
}

/* Whether opt_mha_varlen_matrix runs wgmma for a (else mma on NVIDIA, portable elsewhere). */
static int wg__matrix_picks_wgmma(const opt_varlen_args *a, int matrix, int *yes)
{
    *yes = 0;
#if defined(GPU_VENDOR_NVIDIA)
    if (matrix != OPT_MATRIX_PORTABLE) {
        int wg = 0, rc = opt_wgmma_here(&wg);
        if (rc != OPT_OK)
            return rc;
        *yes = a && wg && !wg__args_unsupported(a);
    }
#else
    (void)a, (void)matrix;
#endif // GPU_VENDOR_NVIDIA
    return OPT_OK;
}

extern "C" int opt_mha_varlen_matrix(const opt_varlen_args *a, int matrix, void *workspace,
                                     size_t workspace_bytes, void *stream)
{
    int wg = 0, rc = wg__matrix_picks_wgmma(a, matrix, &wg);
    if (rc != OPT_OK)
        return rc;
    if (wg)
        return opt_mha_varlen_wgmma(a, workspace, workspace_bytes, stream);
#if defined(GPU_VENDOR_NVIDIA)
    if (matrix != OPT_MATRIX_PORTABLE)
        return opt_mha_varlen_mma(a, workspace, workspace_bytes, stream);
#endif // GPU_VENDOR_NVIDIA
    return opt_mha_varlen_portable(a, workspace, workspace_bytes, stream);
}

/* Only wgmma merges in its epilogue. */
extern "C" int opt_mha_varlen_matrix_merges(const opt_varlen_args *a, int matrix, int *yes)
{
    return wg__matrix_picks_wgmma(a, matrix, yes);
}

extern "C" const char *opt_mha_varlen_matrix_unsupported(const opt_varlen_args *a, int matrix,
                                                         int cc_major)
{
#if defined(GPU_VENDOR_NVIDIA)
    if (matrix != OPT_MATRIX_PORTABLE)
        return opt_mha_varlen_mma_unsupported(a, cc_major); /* wgmma's shapes are a subset */
#else
    (void)matrix;
#endif // GPU_VENDOR_NVIDIA
    (void)cc_major;
    return opt_mha_varlen_portable_unsupported(a);
}
