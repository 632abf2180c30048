/* latent_wgmma.h - the Hopper warpgroup-MMA attention engine of the single-latent-head decode
 * paths: mla_decode `wgmma` (mla_fast.hip) and dsv4_sparse_decode `wgmma` (dsv4_fast.hip). One
 * latent KV head serves every query head, K = the whole latent row (PANELS x 64 dims: 576 for
 * MLA, 512 for DSv4) and V = its first 512 dims; so a block takes 64 query heads (wgmma's M)
 * and streams key rows through shared memory once for all of them. NVIDIA sm_90a device code
 * (GPU_HAS_WGMMA); for GPU translation units only.
 *
 * Why: at 64-128 heads a latent row feeds 64-128 x ~1100 multiply-adds (~120-240 FLOP per bf16
 * byte), so these kernels are bound by the matrix units; mma.sync at 16 heads per block re-reads
 * every row per 16 heads through registers and spends most of its issue slots around the MMAs.
 *
 * Block: 256 threads = two warpgroups. Shared memory (base 1024-aligned; the SW128 tiles and
 * descriptors of gpu_port.h): Q [64 heads x PANELS*64] as PANELS panels of 64 rows; then key
 * tiles [64 keys x PANELS*64] -- for a loader that copies bf16 rows straight into place, two
 * stages (one in flight while the other is used); for one that stages raw rows (fp8) and
 * decodes them, one bf16 tile plus two raw stages of L::RAW_BYTES (each rounded up to 1024 bytes:
 * lwg_raw_stride), each thread decoding the
 * chunks it copied itself -- then P [64 heads x 64 keys] bf16 and 4 x 64 f32 of exchange.
 * Per tile j:
 *   copies of tile j + 1 go out (raw: at the top; bf16: while S runs, into tile j - 1's stage)
 *   S = Q K^T       warpgroup 0: PANELS*4 x wgmma m64n64k16, both operands from shared memory
 *                   (n64: each step's 2 KiB of Q serve 64 keys, so shared-memory bandwidth
 *                   keeps up with the tensor cores);
 *   softmax         warpgroup 0, f32 in log2 units: keys the loader calls invalid weigh 0; the
 *                   running max moves only when a row's max grows past it by 2^8 (weights stay
 *                   below 2^8: exact in f32, as precise in bf16, and rescales are rare);
 *                   P = exp2(S - m) rounded to bf16 into shared memory (where every flash kernel
 *                   rounds), l sums the f32 weights; the rescale factors go to warpgroup 1
 *                   through shared memory;
 *   O_w += P V_w    warpgroup w, dims 256w .. 256w + 255: 4 k-steps x 2 x wgmma m64n128k16, P
 *                   K-major, V = the key tile read MN-major (transpose flag).
 * Two barriers a tile: "tile landed" (it also says both warpgroups' MMAs on tile j - 1 are
 * done, freeing its stage) and "P whole"; raw loaders add "tile decoded".
 *
 * The loader L (a struct the caller builds; every thread holds one):
 *   static constexpr bool RAW;          raw staging + decode, or bf16 rows copied into place
 *   static constexpr int RAW_BYTES;     one raw stage (RAW only)
 *   void issue(int j, uint32_t dst);    cp.async the copies of tile j (j < nt) into dst: the
 *                                       raw stage (RAW) or the SW128 bf16 tile; no commit
 *   void decode(int j, const uint8_t *raw, uint8_t *tile);  RAW only: this thread's rows of
 *                                       tile j from its raw stage (generic pointers) into the
 *                                       bf16 tile (gpu_sw128_chunk placement)
 *   bool valid(int j, int c);           key c (0 .. 63) of tile j takes part (read by warpgroup
 *                                       0 after "tile landed"); invalid rows must be zero bytes
 * Copy roles the loaders share: thread tid moves row tid / 4 of a tile, chunks tid % 4 + 4u.
 */
#ifndef ATTN_LATENT_WGMMA_H
#define ATTN_LATENT_WGMMA_H

#include "gpu_port.h"

#include <math.h>
#include <stdint.h>

enum {
    LWG_HG = 64,                 /* query heads per block */
    LWG_THREADS = 256,           /* two warpgroups */
    LWG_BN = 64,                 /* keys per tile */
    LWG_PANEL = 64 * 128,        /* an SW128 panel: 64 rows x 64 bf16 */
    LWG_P_BYTES = LWG_PANEL,     /* P: 64 heads x 64 keys bf16 */
    LWG_X_BYTES = 4 * 64 * 4,    /* exchange: rescale factors, l, m (+ one spare row) */
};

/* A raw stage's footprint: RAW_BYTES rounded up to 1024, so P after the stages starts on a
 * swizzle atom (gpu_port.h: SW128 tiles are 1024-aligned). */
static __host__ __device__ constexpr int lwg_raw_stride(int raw_bytes)
{
    return (raw_bytes + 1023) / 1024 * 1024;
}

/* Shared memory of the engine for PANELS and a loader staging RAW_BYTES per stage (0: bf16
 * rows copied into place), + 1024 to align the base. */
static constexpr int lwg_smem_bytes(int panels, int raw_bytes)
{
    return panels * LWG_PANEL +
           (raw_bytes ? panels * LWG_PANEL + 2 * lwg_raw_stride(raw_bytes) : 2 * panels * LWG_PANEL) +
           LWG_P_BYTES + LWG_X_BYTES + 1024;
}

#if defined(GPU_HAS_WGMMA)
/* Shared-space and generic addresses of the engine's regions. */
template <int PANELS, class L> struct lwg_smem {
    static constexpr int TILE = PANELS * LWG_PANEL;
    uint8_t *gen;    /* 1024-aligned base, generic */
    uint32_t base;   /* its shared-space address */
    __device__ uint32_t q() const { return base; }
    __device__ uint32_t tile(int j) const { return base + TILE + (L::RAW ? 0 : (j & 1) * TILE); }
    static constexpr int RAW_STRIDE = L::RAW ? lwg_raw_stride(L::RAW_BYTES) : 0;
    __device__ uint32_t raw(int j) const { return base + 2 * TILE + (j & 1) * RAW_STRIDE; }
    __device__ uint32_t p() const { return base + TILE + (L::RAW ? TILE + 2 * RAW_STRIDE : 2 * TILE); }
    __device__ uint8_t *at(uint32_t a) const { return gen + (a - base); }
    __device__ float *x() const { return (float *)at(p() + LWG_P_BYTES); } /* [4][64] */
};

/* The extern shared array aligned to 1024 bytes. */
template <int PANELS, class L>
static __device__ __forceinline__ lwg_smem<PANELS, L> lwg_smem_of(uint8_t *raw_base)
{
    lwg_smem<PANELS, L> s;
    const uint32_t a = gpu_smem_addr(raw_base);
    s.base = (a + 1023u) & ~1023u;
    s.gen = raw_base + (s.base - a);
    return s;
}

/* Copies rows [0, 64) of Q (row r at q_row(r), 16-bit, PANELS*64 wide; rows >= valid zero) into
 * the Q tile: the caller issues this before lwg_attend, so it rides in tile 0's group. */
template <int PANELS, class L>
static __device__ __forceinline__ void lwg_load_q(const lwg_smem<PANELS, L> &sm, const uint16_t *q0,
                                                  size_t row_stride, int valid)
{
    const int r = threadIdx.x >> 2, sub = threadIdx.x & 3;
    const uint16_t *src = q0 + (size_t)(r < valid ? r : 0) * row_stride;
#pragma unroll
    for (int u = 0; u < PANELS * 8 / 4; u++) {
        const int ch = sub + 4 * u;
        gpu_cp_async16(sm.q() + gpu_sw128_chunk(64, r, ch), src + 8 * ch, r < valid ? 16 : 0);
    }
}

/* Attention of the 64 heads over nt tiles of the loader's keys. sl2: the logit scale in log2
 * units. Out: o[c][..] this thread's accumulators for dims 256w + 128c + (wgmma C layout), and
 * for its two rows (wrow, wrow + 8; wrow = 16 (i / 32) + (i % 32) / 4 of warpgroup thread i)
 * the running max m (log2 units) and the weight sum l, in both warpgroups. Called by every
 * thread of the block (barriers); ends with a barrier, so the caller may reuse shared memory. */
template <int PANELS, class L>
static __device__ __forceinline__ void lwg_attend(L &ld, const lwg_smem<PANELS, L> &sm, int nt,
                                                  float sl2, float (&o)[2][64], float (&m)[2],
                                                  float (&l)[2])
{
    const int tid = threadIdx.x, wg = tid >> 7, i = tid & 127, t = i & 3;
    const int wrow = 16 * (i >> 5) + ((i & 31) >> 2);
    float *x = sm.x();

    auto issue = [&](int j) {
        if (j < nt)
            ld.issue(j, L::RAW ? sm.raw(j) : sm.tile(j));
        gpu_cp_async_commit(); /* empty groups too; Q rides with tile 0 */
    };
    issue(0);
#pragma unroll
    for (int c = 0; c < 2; c++)
#pragma unroll
        for (int jj = 0; jj < 64; jj++)
            o[c][jj] = 0.0f;
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.0f;

    for (int j = 0; j < nt; j++) {
        gpu_cp_async_wait<0>(); /* tile j (and Q) landed: this thread's copies */
        gpu_fence_proxy_async();
        __syncthreads();        /* everyone's; both warpgroups are done with tile j - 1 */
        const uint32_t kt = sm.tile(j);
        if constexpr (L::RAW) {
            issue(j + 1); /* into the raw stage this thread decoded at tile j - 1 */
            ld.decode(j, sm.at(sm.raw(j)), sm.at(kt));
            gpu_fence_proxy_async();
            __syncthreads(); /* tile decoded */
        }

        /* S = Q K^T over the tile's 64 keys, by warpgroup 0. */
        float s[32];
        if (wg == 0) {
            gpu_wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < PANELS * 4; kk++)
                gpu_wgmma_ss<64, false>(s, gpu_sw128_kmajor_desc(sm.q(), 64, 0, kk),
                                        gpu_sw128_kmajor_desc(kt, 64, 0, kk), kk > 0);
            gpu_wgmma_commit();
        }
        if constexpr (!L::RAW)
            issue(j + 1); /* while S runs: into tile j - 1's stage, whose MMAs are done */
        float alpha[2];
        if (wg == 0) {
            gpu_wgmma_wait<0>();
            gpu_wgmma_keep(s);
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int e = 0; e < 32; e++) {
                float v = s[e] * sl2;
                if (!ld.valid(j, 8 * (e >> 2) + 2 * t + (e & 1)))
                    v = -INFINITY;
                s[e] = v;
                mx[(e >> 1) & 1] = fmaxf(mx[(e >> 1) & 1], v);
            }
            float mu[2];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[r] = fmaxf(mx[r], GPU_SHFL_XOR(mx[r], 1));
                mx[r] = fmaxf(mx[r], GPU_SHFL_XOR(mx[r], 2));
                const float mn = mx[r] > m[r] + 8.0f ? mx[r] : m[r];
                mu[r] = mn == -INFINITY ? 0.0f : mn; /* never -inf - -inf */
                alpha[r] = mn == m[r] ? 1.0f : gpu_exp2_approx(m[r] - mu[r]);
                m[r] = mn;
            }
            float rs[2] = {0.0f, 0.0f};
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const float p0 = gpu_exp2_approx(s[4 * n + 2 * r] - mu[r]);
                    const float p1 = gpu_exp2_approx(s[4 * n + 2 * r + 1] - mu[r]);
                    rs[r] += p0 + p1;
                    *(uint32_t *)sm.at(sm.p() + gpu_sw128_chunk(64, wrow + 8 * r, n) + 4 * t) =
                        gpu_pack2<false>(p0, p1);
                }
#pragma unroll
            for (int r = 0; r < 2; r++)
                l[r] = l[r] * alpha[r] + rs[r];
            if (t == 0)
                x[wrow] = alpha[0], x[wrow + 8] = alpha[1];
        }
        gpu_fence_proxy_async();
        __syncthreads(); /* P and the rescale factors whole */
        if (wg == 1)
            alpha[0] = x[wrow], alpha[1] = x[wrow + 8];
        if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
            for (int c = 0; c < 2; c++)
#pragma unroll
                for (int jj = 0; jj < 64; jj++)
                    o[c][jj] *= alpha[(jj >> 1) & 1];
        }

        /* O_w += P V_w. */
        gpu_wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < LWG_BN / 16; kk++) {
            const uint64_t pa = gpu_sw128_kmajor_desc(sm.p(), 64, 0, kk);
            gpu_wgmma_ss<128, false, 1>(o[0], pa, gpu_sw128_mnmajor_desc(kt + 4 * wg * LWG_PANEL, 64, kk), 1);
            gpu_wgmma_ss<128, false, 1>(o[1], pa, gpu_sw128_mnmajor_desc(kt + (4 * wg + 2) * LWG_PANEL, 64, kk), 1);
        }
        gpu_wgmma_commit();
        gpu_wgmma_wait<0>();
        gpu_wgmma_keep(o[0]);
        gpu_wgmma_keep(o[1]);
    }
    gpu_cp_async_wait<0>();

    /* m and l (warpgroup 0's; l over the quad's lanes) to both warpgroups, beside the rescale
     * factors warpgroup 1 may still be reading. */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += GPU_SHFL_XOR(l[r], 1);
        l[r] += GPU_SHFL_XOR(l[r], 2);
    }
    if (wg == 0 && t == 0) {
        x[64 + wrow] = l[0], x[64 + wrow + 8] = l[1];
        x[128 + wrow] = m[0], x[128 + wrow + 8] = m[1];
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < 2; r++)
        l[r] = x[64 + wrow + 8 * r], m[r] = x[128 + wrow + 8 * r];
    __syncthreads(); /* the caller may refill Q, the tiles and the exchange */
}
#endif // GPU_HAS_WGMMA

#endif /* ATTN_LATENT_WGMMA_H */
