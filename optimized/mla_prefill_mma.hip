/* mla_prefill_mma.hip - SPEC sections 9 and 6 on the matrix cores (issue 6 item 4): non-absorbed
 * MLA prefill as a serving stack runs it -- decompress the latent with a GEMM, attend with a
 * flash kernel at (dqk, dv) = (192, 128), the context in chunks merged by LSE. On NVIDIA the
 * GEMM is mma.sync (GPU_HAS_MMA_SYNC, with ldmatrix and cp.async) or wgmma; with
 * OPT_MATRIX_PORTABLE, and on AMD, it is mla_prefill_portable_decompress_kernel on gpu_port.h's
 * vendor-neutral primitive and the attention is mha_varlen portable; a kernel built for a
 * target without what it needs traps, and opt_mla_prefill_mma_unsupported() says so first.
 *
 * mla_prefill_mma_decompress_kernel: the kv_b_proj GEMM K|V = latent [rows, 512] x W_kvb^T
 *   [512, hq * 256], bf16 in, f32 accumulation, bf16 out (nearest even, where the reference
 *   rounds k_nope and v). One block of 8 warps per (128 key rows, 128 output columns = one
 *   head's k_nope or v half). On Hopper (opt_wgmma_here) its two warpgroups take 64 rows each
 *   with wgmma m64n128k16 from SW128 tiles; elsewhere warps 2 x 4, 64 x 32 each, mma.sync (16
 *   MMAs per 6 ldmatrix.x4 per k16). On the H200 (ncu, 8K new tokens, 16 heads) wgmma took the
 *   decompression from 193 us (mma.sync) to 166 us, and writing the output through shared
 *   memory in whole 16-byte chunks to 150 us; at ~230 TFLOP/s it is not bound by the MMAs: K
 *   is only 512 deep (8 stages), and a 256-column tile at one block per SM was slower (199 us).
 *   The 512 latent dims stream in 8 stages of 64 through a 3-deep cp.async pipeline, tiles
 *   XOR-swizzled for ldmatrix. Each key row's latent is read where it lives: the new tokens'
 *   c_kv rows, or a context token's row of the paged latent cache through the block table (a
 *   per-block table of 128 row offsets, built once). bf16 rows go straight to shared memory;
 *   fp8 rows land as codes in a raw stage and each thread converts the chunks it copied into
 *   bf16 codes (exact; sm_89+: cvt e4m3x2 -> f16x2, before: numerics.h); k_scale multiplies
 *   the f32 accumulators before they are rounded to bf16 (one scale per tensor: the latent
 *   stays code * k_scale exactly, as SPEC's reference keeps it; rounding code * k_scale to
 *   bf16 first moved the lse by ~1e-3, past its bar, at scales that are not powers of two).
 *   Blocks of the k_nope half also copy the rows' k_pe (bf16; fp8: code * k_scale rounded to
 *   bf16, as K stores it and the reference rounds it) into K dims
 *   128..191, so K [rows, hq, 192] and V [rows, hq, 128] are what mha_varlen mma reads with
 *   hkv = hq. Shared memory 96 KiB (bf16 rows) / 88 KiB (fp8), two blocks per SM.
 * opt_context_chunk_plan (extend_chunked.hip): extend's plan (the contexts laid end to end, cut
 *   every chunk_tokens tokens: per chunk and request the first context token and the output
 *   rows), here for the latent cache.
 * opt_mla_prefill_mma composes, in one stream:
 *   1. decompress the new tokens; the matrix-core mha_varlen (opt_mha_varlen_matrix: wgmma on
 *      Hopper, else mma), causal (cu_k = cu_q) -> (o, lse);
 *   2. per chunk: decompress its context rows (the key buffers of step 1 reused); the same
 *      mha_varlen without a mask over the request's part of the chunk; merge_states vec into
 *      (o, lse), the last merge writing the outputs.
 * Partials are stored in bf16 (lse f32) between merges, as the reference's emulated candidate
 * (ref_mla_prefill_chunked with the case's chunk_tokens) rounds them. The host needs only the
 * context lengths, to size the plan; no host data enters the timed launches.
 */
#include "block_scan.h"
#include "gpu_port.h"
#include "numerics.h"
#include "paged_kv.h"

#include <float.h>
#include <limits.h>
#include <stdint.h>

enum {
    MPM_LAT = 512,     /* latent c_kv dims */
    MPM_ROPE = 64,     /* k_pe dims */
    MPM_ROW = 576,     /* a latent cache row: [c_kv | k_pe] */
    MPM_NOPE = 128,
    MPM_QK = 192,      /* K row per head: [k_nope | k_pe] */
    MPM_V = 128,
    MPM_WROWS = 256,   /* W_kvb rows per head: W_UK_h then W_UV_h */
    MPM_BM = 128,      /* key rows per block */
    MPM_BN = 128,      /* output columns per block: one head's k_nope or v */
    MPM_BK = 64,       /* latent dims per pipeline stage */
    MPM_NK = MPM_LAT / MPM_BK,
    MPM_STAGES = 3,
    MPM_WARPS = 8,
    MPM_THREADS = 32 * MPM_WARPS,
    MPM_SCAN = 1024,
    MPM_ALIGN = 256,   /* workspace segment alignment (bytes) */
};
/* Where the key rows' latent comes from. */
enum { MPM_SRC_NEW = 0, MPM_SRC_BF16 = 1, MPM_SRC_FP8 = 2 };

/* WG: the MMAs are Hopper's wgmma (two warpgroups, m64n128k16 from SW128 tiles), else mma.sync
 * from XOR-swizzled tiles (+ 1 KiB to align the base to the 1024-byte swizzle atom for wgmma).
 * Either way a block makes MPM_BN = 128 output columns (one head's k_nope or v), two blocks per
 * SM. Both halves of a head per block (256 columns, each latent byte serving twice the FLOPs,
 * one block per SM) was measured slower on the H200 (ncu, 8K tokens x 16 heads: 199 against
 * 166 us): the short K loop (8 stages) wants the second block to hide each one's prologue and
 * epilogue. */
template <int SRC, bool WG> struct mpm__cfg {
    static constexpr int ACC = MPM_BN * MPM_BM / MPM_THREADS; /* accumulators a thread: 64 */
    static constexpr int A_BYTES = MPM_BM * MPM_BK * 2; /* one bf16 stage of latent rows */
    static constexpr int B_BYTES = MPM_BN * MPM_BK * 2; /* one stage of W rows */
    static constexpr int R_BYTES = MPM_BM * MPM_BK;     /* one stage of fp8 codes */
    /* fp8: the codes are pipelined, the converted tile needs one stage only. */
    static constexpr int A_STAGES = SRC == MPM_SRC_FP8 ? 1 : MPM_STAGES;
    static constexpr int SMEM = MPM_STAGES * B_BYTES + A_STAGES * A_BYTES +
                                (SRC == MPM_SRC_FP8 ? MPM_STAGES * R_BYTES : 0) + (WG ? 1024 : 0);
};

/* ------------------------------------------------------ decompression GEMM */
/* What every form of the decompression kernel does first, for its NR rows row0 ..: row_s[i]
 * = the element offset of row row0 + i's latent (-1: no such row), then (k_nope blocks, half
 * 0) the rows' k_pe into K dims 128..191, eight dims per item. SRC_NEW: row r is new token r
 * (c_kv, k_pe); else row r is context token starts[b] + r - cu[b] of the request b with
 * cu[b] <= r < cu[b + 1], read from the paged cache (fp8: code * ks rounded to bf16, as K is
 * stored; the GEMMs instead multiply the codes, exact in bf16, and put ks on the f32
 * accumulators). Ends with the block's threads past a barrier. */
template <int SRC, int NR>
static __device__ __forceinline__ void
mpm__rows_and_k_pe(long long *row_s, const void *lat, const uint16_t *k_pe, float ks,
                   const int32_t *block_table, const int32_t *meta, uint16_t *k, int row0,
                   int rows, int hq, int h, int half, int batch, int block_size, int max_blocks)
{
    const int tid = threadIdx.x, nth = blockDim.x;
    for (int i = tid; i < NR; i += nth) {
        const int r = row0 + i;
        long long off = -1;
        if (r < rows) {
            if (SRC == MPM_SRC_NEW) {
                off = (long long)r * MPM_LAT;
            } else {
                const int32_t *starts = meta, *cu = meta + batch;
                const int lo = gpu_segment_of(cu, batch, r); /* empty requests are skipped */
                const long long j = (long long)starts[lo] + (r - cu[lo]);
                const long long blk = block_table[(size_t)lo * max_blocks + j / block_size];
                off = (blk * block_size + j % block_size) * MPM_ROW;
            }
        }
        row_s[i] = off;
    }
    __syncthreads();
    if (half != 0)
        return;
    for (int it = tid; it < NR * 8; it += nth) {
        const int i = it / 8, c = it % 8;
        const long long off = row_s[i];
        if (off < 0)
            continue;
        uint4 val;
        if (SRC == MPM_SRC_NEW) {
            val = *(const uint4 *)(k_pe + (size_t)(row0 + i) * MPM_ROPE + c * 8);
        } else if (SRC == MPM_SRC_BF16) {
            val = *(const uint4 *)((const uint16_t *)lat + off + MPM_LAT + c * 8);
        } else {
            const uint2 w = *(const uint2 *)((const uint8_t *)lat + off + MPM_LAT + c * 8);
            val = pkv_fp8x8_bf16(w.x, w.y, ks);
        }
        *(uint4 *)(k + ((size_t)(row0 + i) * hq + h) * MPM_QK + MPM_NOPE + c * 8) = val;
    }
}

/* The decompressed tile ot [NR rows][LD] bf16 (shared memory: the 128 columns of head h's
 * k_nope, half 0, or v, half 1) to K dims 0..127 or V in 16-byte chunks: each output row's
 * columns are contiguous, so whole chunks fill whole sectors. After a barrier. */
template <int NR, int LD>
static __device__ __forceinline__ void mpm__store_tile(const uint16_t *ot, uint16_t *k, uint16_t *v,
                                                       int row0, int rows, int hq, int h, int half)
{
    for (int c = threadIdx.x; c < NR * (MPM_BN / 8); c += blockDim.x) {
        const int r = c / (MPM_BN / 8), col = (c % (MPM_BN / 8)) * 8;
        if (row0 + r >= rows)
            continue;
        uint16_t *dst = half == 0 ? k + ((size_t)(row0 + r) * hq + h) * MPM_QK + col
                                  : v + ((size_t)(row0 + r) * hq + h) * MPM_V + col;
        *(uint4 *)dst = *(const uint4 *)(ot + r * LD + col);
    }
}

/* The vendor-neutral form (OPT_MATRIX_PORTABLE, and the AMD build's only one): gpu_port.h's
 * 16 x 16 x 16 primitive through its fragment helpers, plain loads into padded shared tiles,
 * one stage of 32 latent dims at a time. Block: MPP_WARPS warps (wavefronts) x 16 rows each
 * = 64 rows, 128 columns (one head's k_nope or v); grid (ceil(rows / 64), 2 hq). */
enum { MPP_WARPS = 4, MPP_BM = 16 * MPP_WARPS, MPP_BK = 32, MPP_LD = MPP_BK + 8 };

template <int SRC>
__global__ void __launch_bounds__(MPP_WARPS * GPU_WARP_SIZE)
mla_prefill_portable_decompress_kernel(const void *__restrict__ lat,
                                       const uint16_t *__restrict__ k_pe,
                                       const float *__restrict__ k_scale,
                                       const int32_t *__restrict__ block_table,
                                       const int32_t *__restrict__ meta,
                                       const uint16_t *__restrict__ w_kvb, uint16_t *__restrict__ k,
                                       uint16_t *__restrict__ v, int rows, int hq, int batch,
                                       int block_size, int max_blocks)
{
#if defined(GPU_HAS_MMA_BF16)
    __shared__ long long row_s[MPP_BM];
    __shared__ uint16_t as[MPP_BM * MPP_LD], bs[MPM_BN * MPP_LD];
    __shared__ uint16_t ot[MPP_BM * (MPM_BN + 8)];
    const int tid = threadIdx.x, nth = blockDim.x, lane = tid % GPU_WARP_SIZE;
    const int warp = tid / GPU_WARP_SIZE, row0 = blockIdx.x * MPP_BM;
    const int h = blockIdx.y / 2, half = blockIdx.y % 2;
    const float ks = SRC == MPM_SRC_FP8 ? *k_scale : 1.0f;
    mpm__rows_and_k_pe<SRC, MPP_BM>(row_s, lat, k_pe, ks, block_table, meta, k, row0, rows, hq, h,
                                    half, batch, block_size, max_blocks);
    const uint16_t *wb = w_kvb + ((size_t)h * MPM_WROWS + (size_t)half * MPM_NOPE) * MPM_LAT;

    float acc[MPM_BN / 16][GPU_MMA_C_REGS];
    for (int nt = 0; nt < MPM_BN / 16; nt++)
        for (int e = 0; e < GPU_MMA_C_REGS; e++)
            acc[nt][e] = 0.0f;
    for (int k0 = 0; k0 < MPM_LAT; k0 += MPP_BK) {
        __syncthreads(); /* every warp is done with the previous stage */
        for (int c = tid; c < MPM_BN * (MPP_BK / 8); c += nth) {
            const int n = c / (MPP_BK / 8), ch = c % (MPP_BK / 8);
            *(uint4 *)(bs + n * MPP_LD + ch * 8) =
                *(const uint4 *)(wb + (size_t)n * MPM_LAT + k0 + ch * 8);
        }
        for (int c = tid; c < MPP_BM * (MPP_BK / 8); c += nth) {
            const int r = c / (MPP_BK / 8), ch = c % (MPP_BK / 8);
            const long long off = row_s[r];
            uint4 val = make_uint4(0u, 0u, 0u, 0u); /* rows without a key: never stored */
            if (off >= 0) {
                if (SRC == MPM_SRC_FP8) { /* the codes themselves: k_scale goes on acc */
                    const uint2 w = *(const uint2 *)((const uint8_t *)lat + off + k0 + ch * 8);
                    val = pkv_fp8x8_bf16(w.x, w.y, 1.0f);
                } else {
                    val = *(const uint4 *)((const uint16_t *)lat + off + k0 + ch * 8);
                }
            }
            *(uint4 *)(as + r * MPP_LD + ch * 8) = val;
        }
        __syncthreads();
        for (int kk = 0; kk < MPP_BK / 16; kk++) {
            uint32_t a[GPU_MMA_A_REGS];
            gpu_mma_load_a(a, as + 16 * warp * MPP_LD + 16 * kk, MPP_LD);
            for (int nt = 0; nt < MPM_BN / 16; nt++) {
                uint32_t b[GPU_MMA_B_REGS];
                gpu_mma_load_bt(b, bs + 16 * nt * MPP_LD + 16 * kk, MPP_LD);
                gpu_mma_bf16_16x16x16(acc[nt], a, b);
            }
        }
    }
    for (int nt = 0; nt < MPM_BN / 16; nt++)
        for (int e = 0; e < GPU_MMA_C_ELEMS; e++) {
            int row, col;
            gpu_mma_c_coord(lane, e, &row, &col);
            ot[(16 * warp + row) * (MPM_BN + 8) + 16 * nt + col] = num_f32_to_bf16(acc[nt][e] * ks);
        }
    __syncthreads();
    mpm__store_tile<MPP_BM, MPM_BN + 8>(ot, k, v, row0, rows, hq, h, half);
#else
    (void)lat, (void)k_pe, (void)k_scale, (void)block_table, (void)meta, (void)w_kvb, (void)k;
    (void)v, (void)rows, (void)hq, (void)batch, (void)block_size, (void)max_blocks;
    GPU_TRAP();
#endif // GPU_HAS_MMA_BF16
}

#if defined(GPU_HAS_MMA_SYNC)
/* Byte offset of 16-byte chunk `ch` (0..7) of row r in a tile of 64-element bf16 rows: the
 * chunk index XORed with r % 8, so ldmatrix's eight row addresses hit eight bank groups. */
static __device__ __forceinline__ uint32_t mpm__swz(int r, int ch)
{
    return (uint32_t)(r * (MPM_BK * 2) + ((ch ^ (r & 7)) << 4));
}

/* The tile layout of either MMA form: a stage (latent or W) is 128 rows x 64 bf16 (one SW128
 * panel for WG). */
template <bool WG> static __device__ __forceinline__ uint32_t mpm__at(int r, int ch)
{
    static_assert(MPM_BM == MPM_BN, "latent and W stages share one layout");
#if defined(GPU_HAS_WGMMA)
    if (WG)
        return gpu_sw128_chunk(MPM_BM, r, ch);
#endif // GPU_HAS_WGMMA
    return mpm__swz(r, ch);
}

/* acc (+)= A B^T over one stage (A: 128 latent rows x 64, B: 128 W rows x 64, both K-major).
 * mma.sync: warp (wm, wn) of 2 x 4 owns rows 64 wm .., columns 32 wn ..; acc[16 mt + 4 nt + c]
 * is its m16n8 tile (mt, nt) element c. wgmma: warpgroup w owns rows 64 w .., all 128 columns,
 * in wgmma's C layout (gpu_wgmma_c_coord). mpm__acc_at says where each lands. */
template <bool WG>
static __device__ __forceinline__ void mpm__stage_mma(float (&acc)[64], uint32_t sa, uint32_t sb,
                                                      bool first)
{
    const int tid = threadIdx.x;
    if (WG) {
#if defined(GPU_HAS_WGMMA)
        gpu_wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < MPM_BK / 16; kk++)
            gpu_wgmma_ss<MPM_BN, false>(acc, gpu_sw128_kmajor_desc(sa, MPM_BM, 64 * (tid / 128), kk),
                                        gpu_sw128_kmajor_desc(sb, MPM_BN, 0, kk),
                                        !first || kk > 0);
        gpu_wgmma_commit();
        gpu_wgmma_wait<0>();
        gpu_wgmma_keep(acc);
#else
        (void)acc, (void)sa, (void)sb, (void)first;
        GPU_TRAP();
#endif // GPU_HAS_WGMMA
        return;
    }
    (void)first;
    const int warp = tid / 32, lane = tid % 32, wm = warp / 4, wn = warp % 4;
#pragma unroll
    for (int kk = 0; kk < MPM_BK / 16; kk++) {
        uint32_t a[4][4];
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
            gpu_ldmatrix_x4(a[mt],
                            sa + mpm__swz(wm * 64 + mt * 16 + lane % 16, 2 * kk + lane / 16));
#pragma unroll
        for (int nn = 0; nn < 2; nn++) {
            uint32_t b[4];
            gpu_ldmatrix_x4(b, sb + mpm__swz(wn * 32 + nn * 16 + lane % 8 + (lane / 16) * 8,
                                             2 * kk + (lane / 8) % 2));
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                gpu_mma16816<false>(*(float(*)[4])&acc[16 * mt + 8 * nn], a[mt], b[0], b[1]);
                gpu_mma16816<false>(*(float(*)[4])&acc[16 * mt + 8 * nn + 4], a[mt], b[2], b[3]);
            }
        }
    }
}

/* Tile row and column (of the block's BN) of acc[e] (e even; acc[e + 1] is the next column). */
template <bool WG> static __device__ __forceinline__ void mpm__acc_at(int e, int *row, int *col)
{
    const int tid = threadIdx.x, lane = tid % 32, g = lane / 4, t = lane % 4;
    if (WG) {
        const int i = tid % 128;
        *row = 64 * (tid / 128) + 16 * (i / 32) + (i % 32) / 4 + 8 * ((e / 2) % 2);
        *col = 8 * (e / 4) + 2 * t;
    } else {
        const int warp = tid / 32, wm = warp / 4, wn = warp % 4;
        *row = wm * 64 + (e / 16) * 16 + g + 8 * ((e % 4) / 2);
        *col = wn * 32 + ((e / 4) % 4) * 8 + 2 * t;
    }
}

#endif // GPU_HAS_MMA_SYNC

/* Grid (ceil(rows / 128), 2 hq): block (x, y) makes rows 128 x .. of head y / 2's k_nope (y
 * even, with k_pe) or v (y odd). Rows as mpm__rows_and_k_pe says. */
template <int SRC, bool WG>
__global__ void __launch_bounds__(MPM_THREADS, 2)
mla_prefill_mma_decompress_kernel(
    const void *__restrict__ lat,              /* NEW: c_kv [rows, 512] bf16; else cache [N, bs, 576] */
    const uint16_t *__restrict__ k_pe,         /* NEW: k_pe [rows, 64] bf16; else unused */
    const float *__restrict__ k_scale,         /* k_scale: [1] (fp8 only) */
    const int32_t *__restrict__ block_table,   /* block_table: [batch, max_blocks] (cache) */
    const int32_t *__restrict__ meta,          /* starts [batch], cu [batch + 1] (cache) */
    const uint16_t *__restrict__ w_kvb,        /* w_kvb: [hq * 256, 512] bf16 */
    uint16_t *__restrict__ k,                  /* k: [rows, hq, 192] bf16 */
    uint16_t *__restrict__ v,                  /* v: [rows, hq, 128] bf16 */
    int rows, int hq, int batch, int block_size, int max_blocks)
{
#if defined(GPU_HAS_MMA_SYNC)
    using C = mpm__cfg<SRC, WG>;
    extern __shared__ uint4 mpm__smem[];
    __shared__ long long row_s[MPM_BM]; /* element offset of each row's latent; -1: no row */
    const uint32_t s_in = gpu_smem_addr(mpm__smem);
    const uint32_t sb0 = WG ? (s_in + 1023u) & ~1023u : s_in; /* wgmma: the swizzle atom */
    uint8_t *const gen0 = (uint8_t *)mpm__smem + (sb0 - s_in);
    const uint32_t sa0 = sb0 + MPM_STAGES * C::B_BYTES;
    const uint32_t sr0 = sa0 + C::A_STAGES * C::A_BYTES;
    const uint8_t *raw = gen0 + MPM_STAGES * C::B_BYTES + C::A_STAGES * C::A_BYTES;

    const int tid = threadIdx.x, row0 = blockIdx.x * MPM_BM;
    const int h = blockIdx.y / 2, half = blockIdx.y % 2;
    const float ks = SRC == MPM_SRC_FP8 ? *k_scale : 1.0f;

    mpm__rows_and_k_pe<SRC, MPM_BM>(row_s, lat, k_pe, ks, block_table, meta, k, row0, rows, hq, h,
                                    half, batch, block_size, max_blocks);

    /* One pipeline stage: W rows h * 256 + half * 128 + n (n < BN) and the rows' latent, dims
     * ks * 64 .. + 63. Rows without a key are zero-filled (never stored). */
    const uint16_t *wb = w_kvb + ((size_t)h * MPM_WROWS + (size_t)half * MPM_NOPE) * MPM_LAT;
    auto load_stage = [&](int stage, int kstep) {
        for (int c = tid; c < MPM_BN * 8; c += MPM_THREADS) {
            const int n = c / 8, ch = c % 8;
            gpu_cp_async16(sb0 + stage * C::B_BYTES + mpm__at<WG>(n, ch),
                           wb + (size_t)n * MPM_LAT + kstep * MPM_BK + ch * 8, 16);
        }
        if (SRC != MPM_SRC_FP8) {
            for (int c = tid; c < MPM_BM * 8; c += MPM_THREADS) {
                const int r = c / 8, ch = c % 8;
                const long long off = row_s[r];
                const uint16_t *src = (const uint16_t *)lat + (off < 0 ? 0 : off) +
                                      kstep * MPM_BK + ch * 8;
                gpu_cp_async16(sa0 + stage * C::A_BYTES + mpm__at<WG>(r, ch), src,
                               off < 0 ? 0 : 16);
            }
        } else {
            for (int c = tid; c < MPM_BM * 4; c += MPM_THREADS) {
                const int r = c / 4, q = c % 4;
                const long long off = row_s[r];
                const uint8_t *src = (const uint8_t *)lat + (off < 0 ? 0 : off) +
                                     kstep * MPM_BK + q * 16;
                gpu_cp_async16(sr0 + stage * C::R_BYTES + r * MPM_BK + q * 16, src,
                               off < 0 ? 0 : 16);
            }
        }
    };

#pragma unroll
    for (int s = 0; s < MPM_STAGES - 1; s++) {
        load_stage(s, s);
        gpu_cp_async_commit();
    }

    float acc[C::ACC] = {};

    for (int kstep = 0; kstep < MPM_NK; kstep++) {
        const int stage = kstep % MPM_STAGES;
        gpu_cp_async_wait<MPM_STAGES - 2>();
#if defined(GPU_HAS_WGMMA)
        if (WG)
            gpu_fence_proxy_async(); /* the landed copies, to wgmma's async proxy */
#endif // GPU_HAS_WGMMA
        __syncthreads(); /* stage arrived for all; the stage refilled below is free */
        if (SRC == MPM_SRC_FP8) {
            /* Each thread converts the codes it copied itself (visible to it after the wait). */
            for (int c = tid; c < MPM_BM * 4; c += MPM_THREADS) {
                const int r = c / 4, q = c % 4;
                const uint4 w = *(const uint4 *)(raw + stage * C::R_BYTES + r * MPM_BK + q * 16);
                const uint4 lo = pkv_fp8x8_bf16(w.x, w.y, 1.0f), hi = pkv_fp8x8_bf16(w.z, w.w, 1.0f);
                uint8_t *a = gen0 + MPM_STAGES * C::B_BYTES;
                *(uint4 *)(a + mpm__at<WG>(r, 2 * q)) = lo;
                *(uint4 *)(a + mpm__at<WG>(r, 2 * q + 1)) = hi;
            }
#if defined(GPU_HAS_WGMMA)
            if (WG)
                gpu_fence_proxy_async();
#endif // GPU_HAS_WGMMA
            __syncthreads();
        }
        if (kstep + MPM_STAGES - 1 < MPM_NK)
            load_stage((kstep + MPM_STAGES - 1) % MPM_STAGES, kstep + MPM_STAGES - 1);
        gpu_cp_async_commit(); /* possibly empty: keeps the group count uniform */

        mpm__stage_mma<WG>(acc, sa0 + (SRC == MPM_SRC_FP8 ? 0 : stage * C::A_BYTES),
                           sb0 + stage * C::B_BYTES, kstep == 0);
    }
    gpu_cp_async_wait<0>();
    __syncthreads(); /* every MMA and copy is done with the stages: they hold the output now */

    /* Rounded to bf16 into a [128][128 + 8] tile over the W stages, then written out in whole
     * 16-byte chunks (mpm__store_tile), where the fragments' 4-byte stores half-filled each
     * 32-byte sector. */
    constexpr int OLD = MPM_BN + 8;
    static_assert(MPM_BM * OLD * 2 <= MPM_STAGES * C::B_BYTES, "the output tile fits the W stages");
    uint16_t *ot = (uint16_t *)gen0;
#pragma unroll
    for (int e = 0; e < C::ACC; e += 2) {
        int r, col;
        mpm__acc_at<WG>(e, &r, &col);
        *(uint32_t *)(ot + r * OLD + col) = gpu_pack2<false>(acc[e] * ks, acc[e + 1] * ks);
    }
    __syncthreads();
    mpm__store_tile<MPM_BM, OLD>(ot, k, v, row0, rows, hq, h, half);
#else
    (void)lat, (void)k_pe, (void)k_scale, (void)block_table, (void)meta, (void)w_kvb, (void)k;
    (void)v, (void)rows, (void)hq, (void)batch, (void)block_size, (void)max_blocks;
    GPU_TRAP();
#endif // GPU_HAS_MMA_SYNC
}

/* ------------------------------------------------------------------ the plan */
typedef struct mpm__plan {
    long long total_ctx;
    int chunks, max_rows, kv_rows;
    size_t off_meta, off_ts, off_k, off_v, off_oc, off_lc, off_oa, off_la, off_ob, off_lb, bytes;
} mpm__plan;

static size_t mpm__up(size_t n)
{
    return (n + MPM_ALIGN - 1) / MPM_ALIGN * MPM_ALIGN;
}

static mpm__plan mpm__make_plan(int batch, int tq, int hq, const int32_t *host_ctx,
                                int chunk_tokens)
{
    mpm__plan p = {};
    for (int b = 0; b < batch; b++)
        p.total_ctx += host_ctx[b] > 0 ? host_ctx[b] : 0;
    const long long chunks = (p.total_ctx + chunk_tokens - 1) / chunk_tokens;
    if (chunks > INT_MAX) { /* no such plan: the launcher refuses it, no workspace is sized */
        p.chunks = -1;
        return p;
    }
    p.chunks = (int)chunks;
    p.max_rows = (int)(p.total_ctx < chunk_tokens ? p.total_ctx : chunk_tokens);
    p.kv_rows = tq > p.max_rows ? tq : p.max_rows; /* step 1 and every chunk share K, V */
    const size_t o = p.chunks ? (size_t)tq * hq * MPM_V * 2 : 0;
    const size_t l = p.chunks ? (size_t)tq * hq * 4 : 0;
    size_t at = 0;
    p.off_meta = at, at += mpm__up((size_t)p.chunks * (2 * (size_t)batch + 1) * 4);
    p.off_ts = at, at += mpm__up(opt_mha_varlen_mma_workspace(batch));
    p.off_k = at, at += mpm__up((size_t)p.kv_rows * hq * MPM_QK * 2);
    p.off_v = at, at += mpm__up((size_t)p.kv_rows * hq * MPM_V * 2);
    p.off_oc = at, at += mpm__up(o);
    p.off_lc = at, at += mpm__up(l);
    p.off_oa = at, at += mpm__up(o);
    p.off_la = at, at += mpm__up(l);
    p.off_ob = at, at += mpm__up(o);
    p.off_lb = at, at += mpm__up(l);
    p.bytes = at;
    return p;
}

template <int SRC, bool WG>
static int mpm__decompress_as(const opt_mla_prefill_args *a, const void *lat, const int32_t *meta,
                              int rows, uint16_t *k, uint16_t *v, hipStream_t stream)
{
    const int bytes = mpm__cfg<SRC, WG>::SMEM;
    GPU_CHECK(hipFuncSetAttribute((const void *)mla_prefill_mma_decompress_kernel<SRC, WG>,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, bytes));
    const dim3 grid((unsigned)((rows + MPM_BM - 1) / MPM_BM), (unsigned)(2 * a->hq));
    mla_prefill_mma_decompress_kernel<SRC, WG><<<grid, MPM_THREADS, bytes, stream>>>(
        lat, (const uint16_t *)a->k_pe, a->cache.k_scale, a->block_table, meta,
        (const uint16_t *)a->w_kvb, k, v, rows, a->hq, a->batch, a->cache.block_size,
        a->max_blocks);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* The decompression GEMM: the portable form when a->matrix asks for it or off NVIDIA; else
 * wgmma where this device runs it (opt_wgmma_here), else mma.sync. */
template <int SRC>
static int mpm__decompress(const opt_mla_prefill_args *a, const void *lat, const int32_t *meta,
                           int rows, uint16_t *k, uint16_t *v, hipStream_t stream)
{
    if (rows <= 0)
        return OPT_OK;
#if defined(GPU_VENDOR_NVIDIA)
    if (a->matrix != OPT_MATRIX_PORTABLE) {
        int wg = 0, rc = opt_wgmma_here(&wg);
        if (rc != OPT_OK)
            return rc;
        return wg ? mpm__decompress_as<SRC, true>(a, lat, meta, rows, k, v, stream)
                  : mpm__decompress_as<SRC, false>(a, lat, meta, rows, k, v, stream);
    }
#endif // GPU_VENDOR_NVIDIA
    int warp = 0, rc = gpu_warp_size(&warp);
    if (rc != OPT_OK)
        return rc;
    const dim3 grid((unsigned)((rows + MPP_BM - 1) / MPP_BM), (unsigned)(2 * a->hq));
    mla_prefill_portable_decompress_kernel<SRC><<<grid, MPP_WARPS * warp, 0, stream>>>(
        lat, (const uint16_t *)a->k_pe, a->cache.k_scale, a->block_table, meta,
        (const uint16_t *)a->w_kvb, k, v, rows, a->hq, a->batch, a->cache.block_size,
        a->max_blocks);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

static opt_varlen_args mpm__varlen(const opt_mla_prefill_args *a)
{
    opt_varlen_args v = {};
    v.batch = a->batch, v.tq = a->tq, v.hq = a->hq, v.hkv = a->hq;
    v.dqk = MPM_QK, v.dv = MPM_V, v.dtype = OPT_BF16, v.q = a->q, v.cu_q = a->cu_q;
    v.scale = a->scale, v.softcap = 0.0f, v.window_left = -1;
    return v;
}

/* ------------------------------------------------------------------ launchers */
extern "C" const char *opt_mla_prefill_mma_unsupported(int hq, int matrix, int cc_major)
{
    if (hq > 32767)
        return "mma puts (head, k_nope | v) pairs on the grid's y dimension: at most 32767 heads";
#if defined(GPU_VENDOR_NVIDIA)
    if (matrix != OPT_MATRIX_PORTABLE)
        return cc_major < 8 ? "mma is written with mma.sync, ldmatrix and cp.async: NVIDIA sm_80 "
                              "or newer"
                            : NULL;
#else
    (void)matrix;
#endif // GPU_VENDOR_NVIDIA
    (void)cc_major;
    return opt_matrix_unsupported(); /* the portable GEMM and mha_varlen portable */
}

extern "C" size_t opt_mla_prefill_mma_workspace(int batch, int tq, int hq,
                                                const int32_t *host_ctx, int chunk_tokens)
{
    if (batch < 0 || tq < 0 || hq < 0 || chunk_tokens < 1 || (batch > 0 && !host_ctx))
        return 0;
    return mpm__make_plan(batch, tq, hq, host_ctx, chunk_tokens).bytes;
}

/* host_ctx: context_lens on the host (the same values as a->context_lens on the device), for
 * the plan's sizes. cu_q, the device context_lens and the block table are device data, as for
 * simple: the launcher cannot check them. */
extern "C" int opt_mla_prefill_mma(const opt_mla_prefill_args *a, const int32_t *host_ctx,
                                   int chunk_tokens, void *stream)
{
    if (!a || a->batch < 0 || a->tq < 0 || (a->tq > 0 && a->batch == 0) || a->tk < a->tq)
        return OPT_EINVAL;
    if (a->hq <= 0 || a->hq > 32767 || a->max_blocks < 0 || chunk_tokens < 1 ||
        (a->batch > 0 && !host_ctx))
        return OPT_EINVAL;
    if (!(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->tq == 0)
        return OPT_OK;
    if (!a->q || !a->c_kv || !a->k_pe || !a->w_kvb || !a->cu_q || !a->context_lens || !a->out ||
        !a->lse || !a->workspace)
        return OPT_EINVAL;
    const mpm__plan p = mpm__make_plan(a->batch, a->tq, a->hq, host_ctx, chunk_tokens);
    if (p.chunks < 0)
        return OPT_EINVAL;
    if (a->workspace_bytes < p.bytes || p.total_ctx + a->tq != a->tk)
        return OPT_EINVAL;
    const bool fp8 = a->cache.dtype == OPT_FP8E4M3;
    if (p.chunks && (!a->block_table || !a->cache.data || a->cache.block_size <= 0 ||
                     (a->cache.dtype != OPT_BF16 && !fp8) || (fp8 && !a->cache.k_scale)))
        return OPT_EINVAL;
    /* 16-byte copies of every latent and weight row. */
    if (((uintptr_t)a->c_kv | (uintptr_t)a->k_pe | (uintptr_t)a->w_kvb |
         (uintptr_t)(p.chunks ? a->cache.data : NULL)) % 16)
        return OPT_EINVAL;

    char *ws = (char *)a->workspace;
    const hipStream_t s = (hipStream_t)stream;
    void *ts = ws + p.off_ts;
    const size_t ts_bytes = opt_mha_varlen_mma_workspace(a->batch);
    uint16_t *kb = (uint16_t *)(ws + p.off_k), *vb = (uint16_t *)(ws + p.off_v);
    int rc;

    /* 1. the new tokens, causal over themselves. */
    if ((rc = mpm__decompress<MPM_SRC_NEW>(a, a->c_kv, NULL, a->tq, kb, vb, s)) != OPT_OK)
        return rc;
    opt_varlen_args nn = mpm__varlen(a);
    nn.k = kb, nn.v = vb, nn.cu_k = a->cu_q, nn.causal = 1;
    nn.out = p.chunks ? (void *)(ws + p.off_oa) : a->out;
    nn.lse = p.chunks ? (float *)(ws + p.off_la) : a->lse;
    if ((rc = opt_mha_varlen_matrix(&nn, a->matrix, ts, ts_bytes, stream)) != OPT_OK || !p.chunks)
        return rc;

    /* 2. the contexts, chunk by chunk. */
    int32_t *meta = (int32_t *)(ws + p.off_meta);
    if ((rc = opt_context_chunk_plan(a->context_lens, a->batch, chunk_tokens, p.chunks, meta,
                                     stream)) != OPT_OK)
        return rc;
    void *o_acc = ws + p.off_oa, *o_nxt = ws + p.off_ob;
    float *l_acc = (float *)(ws + p.off_la), *l_nxt = (float *)(ws + p.off_lb);
    for (int c = 0; c < p.chunks; c++) {
        const int32_t *mc = meta + (size_t)c * (2 * a->batch + 1);
        const long long left = p.total_ctx - (long long)c * chunk_tokens;
        const int rows = (int)(left < chunk_tokens ? left : chunk_tokens);
        rc = fp8 ? mpm__decompress<MPM_SRC_FP8>(a, a->cache.data, mc, rows, kb, vb, s)
                 : mpm__decompress<MPM_SRC_BF16>(a, a->cache.data, mc, rows, kb, vb, s);
        if (rc != OPT_OK)
            return rc;
        opt_varlen_args ch = mpm__varlen(a);
        ch.k = kb, ch.v = vb, ch.cu_k = mc + a->batch, ch.causal = 0;
        ch.out = ws + p.off_oc, ch.lse = (float *)(ws + p.off_lc);
        if ((rc = opt_mha_varlen_matrix(&ch, a->matrix, ts, ts_bytes, stream)) != OPT_OK)
            return rc;
        const bool last = c + 1 == p.chunks;
        void *mo = last ? a->out : o_nxt;
        float *ml = last ? a->lse : l_nxt;
        if ((rc = opt_merge_states_vec(a->tq, a->hq, MPM_V, OPT_BF16, o_acc, ch.out, l_acc, ch.lse,
                                       mo, ml, stream)) != OPT_OK)
            return rc;
        void *t = o_acc;
        o_acc = o_nxt, o_nxt = t;
        float *u = l_acc;
        l_acc = l_nxt, l_nxt = u;
    }
    return OPT_OK;
}
