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
 *   rounds k_nope and v). On Hopper (opt_wgmma_here) it is mla_prefill_wgmma_decompress_kernel
 *   (warp-specialized and persistent, the latent of 128 rows resident, W streamed: described
 *   there); elsewhere one block of 8 warps per (128 key rows, 128 output columns = one head's
 *   k_nope or v half), warps 2 x 4, 64 x 32 each, mma.sync (16 MMAs per 6 ldmatrix.x4 per k16).
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
 *      mha_varlen without a mask over the request's part of the chunk (its tile prefix the
 *      one step 1 wrote), merged into (o, lse) by opt_chunk_attend_merge -- in the wgmma
 *      kernel's epilogue, else by merge_states vec -- the last merge writing the outputs.
 * Partials are stored in bf16 (lse f32) between merges, as the reference's emulated candidate
 * (ref_mla_prefill_chunked with the case's chunk_tokens) rounds them. The host needs only the
 * context lengths, to size the plan; no host data enters the timed launches.
 */
#include "block_scan.h"
#include "gpu_port.h"
#include "numerics.h"
#include "paged_kv.h"
#include "paged_split.h"

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

/* The mma.sync form: a block makes MPM_BN = 128 output columns (one head's k_nope or v) of 128
 * rows, two blocks per SM. (Hopper's form is mla_prefill_wgmma_decompress_kernel below.) */
template <int SRC> struct mpm__cfg {
    static constexpr int ACC = MPM_BN * MPM_BM / MPM_THREADS; /* accumulators a thread: 64 */
    static constexpr int A_BYTES = MPM_BM * MPM_BK * 2; /* one bf16 stage of latent rows */
    static constexpr int B_BYTES = MPM_BN * MPM_BK * 2; /* one stage of W rows */
    static constexpr int R_BYTES = MPM_BM * MPM_BK;     /* one stage of fp8 codes */
    /* fp8: the codes are pipelined, the converted tile needs one stage only. */
    static constexpr int A_STAGES = SRC == MPM_SRC_FP8 ? 1 : MPM_STAGES;
    static constexpr int SMEM = MPM_STAGES * B_BYTES + A_STAGES * A_BYTES +
                                (SRC == MPM_SRC_FP8 ? MPM_STAGES * R_BYTES : 0);
};

/* ------------------------------------------------------ decompression GEMM */
/* Where key row r's latent lives (element offset; -1: no such row, r >= rows). SRC_NEW: row r
 * is new token r (c_kv); else context token starts[b] + r - cu[b] of the request b with
 * cu[b] <= r < cu[b + 1], read from the paged cache through the block table. */
template <int SRC>
static __device__ __forceinline__ long long mpm__row_off(int r, int rows,
                                                         const int32_t *block_table,
                                                         const int32_t *meta, int batch,
                                                         int block_size, int max_blocks)
{
    if (r >= rows)
        return -1;
    if (SRC == MPM_SRC_NEW)
        return (long long)r * MPM_LAT;
    const int32_t *starts = meta, *cu = meta + batch;
    const int lo = gpu_segment_of(cu, batch, r); /* empty requests are skipped */
    const long long j = (long long)starts[lo] + (r - cu[lo]);
    const long long blk = block_table[(size_t)lo * max_blocks + j / block_size];
    return (blk * block_size + j % block_size) * MPM_ROW;
}

/* Eight k_pe dims (chunk c of 8) of key row r, whose latent is at off (>= 0), as K stores
 * them (fp8: code * ks rounded to bf16; the GEMMs instead multiply the codes, exact in bf16,
 * and put ks on the f32 accumulators); mpm__k_pe_chunk writes them into K dims 128 + 8c .. of
 * head h. */
template <int SRC>
static __device__ __forceinline__ uint4 mpm__k_pe_load(long long off, const void *lat,
                                                       const uint16_t *k_pe, float ks, int r, int c)
{
    if (SRC == MPM_SRC_NEW)
        return *(const uint4 *)(k_pe + (size_t)r * MPM_ROPE + c * 8);
    if (SRC == MPM_SRC_BF16)
        return *(const uint4 *)((const uint16_t *)lat + off + MPM_LAT + c * 8);
    const uint2 w = *(const uint2 *)((const uint8_t *)lat + off + MPM_LAT + c * 8);
    return pkv_fp8x8_bf16(w.x, w.y, ks);
}
__device__ __forceinline__ uint16_t *mpm__k_pe_dst(uint16_t *k, int r, int hq, int h, int c)
{
    return k + ((size_t)r * hq + h) * MPM_QK + MPM_NOPE + c * 8;
}
template <int SRC>
static __device__ __forceinline__ void mpm__k_pe_chunk(long long off, const void *lat,
                                                       const uint16_t *k_pe, float ks, uint16_t *k,
                                                       int r, int hq, int h, int c)
{
    *(uint4 *)mpm__k_pe_dst(k, r, hq, h, c) = mpm__k_pe_load<SRC>(off, lat, k_pe, ks, r, c);
}

/* What the one-tile forms of the decompression kernel do first, for their NR rows row0 ..:
 * row_s[i] = mpm__row_off of row row0 + i, then (k_nope blocks, half 0) the rows' k_pe into K
 * dims 128..191. Ends with the block's threads past a barrier. */
template <int SRC, int NR>
static __device__ __forceinline__ void
mpm__rows_and_k_pe(long long *row_s, const void *lat, const uint16_t *k_pe, float ks,
                   const int32_t *block_table, const int32_t *meta, uint16_t *k, int row0,
                   int rows, int hq, int h, int half, int batch, int block_size, int max_blocks)
{
    const int tid = threadIdx.x, nth = blockDim.x;
    for (int i = tid; i < NR; i += nth)
        row_s[i] = mpm__row_off<SRC>(row0 + i, rows, block_table, meta, batch, block_size,
                                     max_blocks);
    __syncthreads();
    if (half != 0)
        return;
    for (int it = tid; it < NR * 8; it += nth) {
        const int i = it / 8, c = it % 8;
        if (row_s[i] >= 0)
            mpm__k_pe_chunk<SRC>(row_s[i], lat, k_pe, ks, k, row0 + i, hq, h, c);
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

/* acc += A B^T over one stage (A: 128 latent rows x 64, B: 128 W rows x 64, both K-major):
 * warp (wm, wn) of 2 x 4 owns rows 64 wm .., columns 32 wn ..; acc[16 mt + 4 nt + c] is its
 * m16n8 tile (mt, nt) element c (mpm__acc_at says where each lands). */
static __device__ __forceinline__ void mpm__stage_mma(float (&acc)[64], uint32_t sa, uint32_t sb)
{
    const int tid = threadIdx.x;
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
static __device__ __forceinline__ void mpm__acc_at(int e, int *row, int *col)
{
    const int tid = threadIdx.x, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int warp = tid / 32, wm = warp / 4, wn = warp % 4;
    *row = wm * 64 + (e / 16) * 16 + g + 8 * ((e % 4) / 2);
    *col = wn * 32 + ((e / 4) % 4) * 8 + 2 * t;
}

#endif // GPU_HAS_MMA_SYNC

/* Grid (ceil(rows / 128), 2 hq): block (x, y) makes rows 128 x .. of head y / 2's k_nope (y
 * even, with k_pe) or v (y odd). Rows as mpm__rows_and_k_pe says. */
template <int SRC>
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
    using C = mpm__cfg<SRC>;
    extern __shared__ uint4 mpm__smem[];
    __shared__ long long row_s[MPM_BM]; /* element offset of each row's latent; -1: no row */
    const uint32_t sb0 = gpu_smem_addr(mpm__smem);
    uint8_t *const gen0 = (uint8_t *)mpm__smem;
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
            gpu_cp_async16(sb0 + stage * C::B_BYTES + mpm__swz(n, ch),
                           wb + (size_t)n * MPM_LAT + kstep * MPM_BK + ch * 8, 16);
        }
        if (SRC != MPM_SRC_FP8) {
            for (int c = tid; c < MPM_BM * 8; c += MPM_THREADS) {
                const int r = c / 8, ch = c % 8;
                const long long off = row_s[r];
                const uint16_t *src = (const uint16_t *)lat + (off < 0 ? 0 : off) +
                                      kstep * MPM_BK + ch * 8;
                gpu_cp_async16(sa0 + stage * C::A_BYTES + mpm__swz(r, ch), src,
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
        __syncthreads(); /* stage arrived for all; the stage refilled below is free */
        if (SRC == MPM_SRC_FP8) {
            /* Each thread converts the codes it copied itself (visible to it after the wait). */
            for (int c = tid; c < MPM_BM * 4; c += MPM_THREADS) {
                const int r = c / 4, q = c % 4;
                const uint4 w = *(const uint4 *)(raw + stage * C::R_BYTES + r * MPM_BK + q * 16);
                const uint4 lo = pkv_fp8x8_bf16(w.x, w.y, 1.0f), hi = pkv_fp8x8_bf16(w.z, w.w, 1.0f);
                uint8_t *a = gen0 + MPM_STAGES * C::B_BYTES;
                *(uint4 *)(a + mpm__swz(r, 2 * q)) = lo;
                *(uint4 *)(a + mpm__swz(r, 2 * q + 1)) = hi;
            }
            __syncthreads();
        }
        if (kstep + MPM_STAGES - 1 < MPM_NK)
            load_stage((kstep + MPM_STAGES - 1) % MPM_STAGES, kstep + MPM_STAGES - 1);
        gpu_cp_async_commit(); /* possibly empty: keeps the group count uniform */

        mpm__stage_mma(acc, sa0 + (SRC == MPM_SRC_FP8 ? 0 : stage * C::A_BYTES),
                       sb0 + stage * C::B_BYTES);
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
        mpm__acc_at(e, &r, &col);
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

/* ------------------------------------------- the Hopper decompression GEMM */
/* mla_prefill_wgmma_decompress_kernel: the same GEMM on sm_90a, warp-specialized and persistent
 * (mha_wgmma.hip's structure). Work items are (128 key rows, one output tile of 128 columns =
 * one head's k_nope or v); the grid is one block per SM, each taking a contiguous run of items
 * (row block major, so a run crosses a row block at most a few times). A block keeps its row
 * block's latent resident in shared memory -- 128 rows x 512 dims bf16, 128 KiB, loaded once
 * per row block (fp8: the codes converted once) -- and streams W through a ring of MPW_STAGES
 * stages of 128 W rows x 64 dims. Each W byte then serves 128 rows (the two-operand tiles of the
 * mma.sync form: 64), and no block barrier stands in the K loop:
 *   producer warpgroup  cp.async of W stages (gpu_sw128_copy), in item order, as many in
 *                       flight as the ring holds: each thread's cp.async.mbarrier.arrive makes
 *                       a stage's "full" mbarrier complete when all of its copies have landed
 *                       (the consumers fence them into the async proxy after their wait); its
 *                       "empty" one is waited before the stage is refilled;
 *   consumer warpgroups take turns by item (ping-pong: one waits for and multiplies its
 *                       item's stages while the other writes out its previous one), each
 *                       making all 128 rows of its item
 *                       (two wgmma m64n128k16 per k16 step, 128 accumulators a thread, from the
 *                       resident latent, K-major SW128, and the W stage), so one's epilogue
 *                       (x k_scale, bf16, stored from the fragments) runs under the other's
 *                       MMAs; a stage is released as soon as the MMA that read it is waited.
 * Keeping two accumulator sets in one warpgroup instead (the epilogue of tile j under tile
 * j + 1's first stage) made ptxas serialize every wgmma (C7514): it could not see the older set
 * retired by wait_group 1 across the loops.
 * At a new row block both consumers finish their items, meet at a named barrier, and load the
 * latent themselves (bf16: cp.async into place; fp8: the codes into the upper half of the
 * region, then converted panel by panel into bf16 codes, exact, the upper panels through
 * registers because they overwrite the codes). The k_pe of a head's K rows is copied by the
 * epilogue of its k_nope tile (half 0). */
/* W ring stages. An earlier producer marked a stage full itself, after cp.async.wait_group
 * with one stage behind the one it issued, so at most two stages were ever in flight whatever
 * the ring's depth: on the H200 (ncu --clock-control none, 4K new rows of 16 heads) 4 stages
 * took 53.7 us, 6 stages 59.9 us. Arriving through cp.async.mbarrier.arrive instead (every
 * stage may be in flight), 4 stages took 52.5 us and 6 stages 56.8 us (same tool, one call).
 * The consumers release a stage only once they hold the next, and a "full" wait must not run
 * ahead of its slot's previous fill, which the strict turns guarantee while the ring is no
 * deeper than an item's MPM_NK stages. */
#ifndef MPW_STAGES
#define MPW_STAGES 4
#endif
enum {
    MPW_PTHREADS = 128,
    MPW_CTHREADS = 256,
    MPW_THREADS = MPW_PTHREADS + MPW_CTHREADS,
    MPW_PREGS = 40,
    MPW_CREGS = 232,
    MPW_A_BYTES = MPM_BM * MPM_LAT * 2, /* the resident latent rows: 128 KiB */
    MPW_W_BYTES = MPM_BN * MPM_BK * 2,  /* a W stage: 16 KiB */
    MPW_SMEM = MPW_A_BYTES + MPW_STAGES * MPW_W_BYTES + 16 * MPW_STAGES + 1024,
    MPW_CBAR = 1, /* the consumers' named barrier */
    MPW_TURN = 2, /* + w: consumer w's turn to wait for stages (2, 3) */
};
static_assert(MPW_STAGES >= 2 && MPW_STAGES <= MPM_NK, "two stages at least, an item's at most");
static_assert(MPW_PTHREADS * MPW_PREGS + MPW_CTHREADS * MPW_CREGS <= 65536, "the register file");
static_assert(MPW_SMEM + MPM_BM * 8 <= 227 * 1024, "more shared memory than a block may have");

template <int SRC>
__global__ void __launch_bounds__(MPW_THREADS, 1)
mla_prefill_wgmma_decompress_kernel(const void *__restrict__ lat, const uint16_t *__restrict__ k_pe,
                                    const float *__restrict__ k_scale,
                                    const int32_t *__restrict__ block_table,
                                    const int32_t *__restrict__ meta,
                                    const uint16_t *__restrict__ w_kvb, uint16_t *__restrict__ k,
                                    uint16_t *__restrict__ v, int rows, int hq, int batch,
                                    int block_size, int max_blocks, long long items)
{
#if defined(GPU_HAS_WGMMA)
    extern __shared__ uint4 mpm__smem[];
    __shared__ long long row_s[MPM_BM];
    const uint32_t s_in = gpu_smem_addr(mpm__smem);
    const uint32_t sa = (s_in + 1023u) & ~1023u; /* the swizzle atom */
    uint8_t *const ga = (uint8_t *)mpm__smem + (sa - s_in);
    const uint32_t sw0 = sa + MPW_A_BYTES, sbar = sw0 + MPW_STAGES * MPW_W_BYTES;
    /* Stage q of the block's W stream (item q / 8, k step q % 8) lives in ring slot
     * q % MPW_STAGES; that slot's fill q / MPW_STAGES is its barriers' phase. */
    auto w_at = [&](long long q) { return sw0 + (uint32_t)(q % MPW_STAGES) * MPW_W_BYTES; };
    auto full = [&](long long q) { return sbar + 8u * (uint32_t)(q % MPW_STAGES); };
    auto empty = [&](long long q) { return sbar + 8u * (uint32_t)(MPW_STAGES + q % MPW_STAGES); };
    auto parity = [&](long long q) { return (int)((q / MPW_STAGES) & 1); };

    const int nt = 2 * hq; /* output tiles per row block: tile 2h + half */
    const long long i0 = items * blockIdx.x / gridDim.x;
    const long long i1 = items * (blockIdx.x + 1) / gridDim.x;
    const int role = threadIdx.x / 128; /* 0: producer; 1, 2: consumers */
    if (threadIdx.x == 0) {
        for (int st = 0; st < MPW_STAGES; st++) {
            gpu_mbar_init(full(st), MPW_PTHREADS);
            gpu_mbar_init(empty(st), 128); /* the consumer warpgroup of the item */
        }
        gpu_mbar_init_fence();
    }
    __syncthreads();

    if (role == 0) {
        /* ------------------------------------------------------------ producer */
        gpu_setmaxnreg_dec<MPW_PREGS>();
        const int tid = threadIdx.x;
        long long q = 0;
        for (long long it = i0; it < i1; it++) {
            const int tt = (int)(it % nt);
            const uint16_t *wb =
                w_kvb + ((size_t)(tt / 2) * MPM_WROWS + (size_t)(tt % 2) * MPM_NOPE) * MPM_LAT;
#pragma unroll 1
            for (int kstep = 0; kstep < MPM_NK; kstep++, q++) {
                if (q >= MPW_STAGES)
                    gpu_mbar_wait(empty(q), parity(q - MPW_STAGES));
                gpu_sw128_copy<MPM_BK, MPM_BN, MPW_PTHREADS>(w_at(q), wb + kstep * MPM_BK, MPM_LAT,
                                                             MPM_BN, tid);
                gpu_cp_async_mbar_arrive(full(q)); /* full once this thread's copies landed */
            }
        }
        gpu_cp_async_wait_all(); /* no thread leaves with copies in flight */
    } else {
        /* -------------------------------------------------------------- consumers */
        gpu_setmaxnreg_inc<MPW_CREGS>();
        const int wg = role - 1, ctid = threadIdx.x - MPW_PTHREADS, i = threadIdx.x % 128;
        const float ks = SRC == MPM_SRC_FP8 ? *k_scale : 1.0f;

        /* The latent of row block rb into the resident tile, once both consumers are done
         * with the previous row block. */
        auto load_rows = [&](long long rb) {
            gpu_bar_sync(MPW_CBAR, MPW_CTHREADS);
            const int row0 = (int)(rb * MPM_BM);
            for (int r = ctid; r < MPM_BM; r += MPW_CTHREADS)
                row_s[r] = mpm__row_off<SRC>(row0 + r, rows, block_table, meta, batch, block_size,
                                             max_blocks);
            gpu_bar_sync(MPW_CBAR, MPW_CTHREADS);
            if (SRC != MPM_SRC_FP8) {
                /* 64 chunks a row; a warp copies half a row (512 contiguous bytes). */
#pragma unroll 4
                for (int u = 0; u < MPM_BM * (MPM_LAT / 8) / MPW_CTHREADS; u++) {
                    const int c = ctid + MPW_CTHREADS * u, r = c / 64, ch = c % 64;
                    const long long off = row_s[r];
                    gpu_cp_async16(sa + gpu_sw128_chunk(MPM_BM, r, ch),
                                   (const uint16_t *)lat + (off < 0 ? 0 : off) + 8 * ch,
                                   off < 0 ? 0 : 16);
                }
            } else {
                /* The codes, 16 a chunk, panel by panel (64 dims: 8 KiB) into the upper half:
                 * a warp copies 8 rows x 64 bytes of one panel. */
#pragma unroll 4
                for (int u = 0; u < MPM_BM * (MPM_LAT / 16) / MPW_CTHREADS; u++) {
                    const int c = ctid + MPW_CTHREADS * u, lane = c % 32, w = c / 32;
                    const int p = w % 8, r = 8 * (w / 8) + lane / 4, c4 = lane % 4;
                    const long long off = row_s[r];
                    gpu_cp_async16(sa + MPW_A_BYTES / 2 + p * (MPM_BM * 64) + r * 64 + c4 * 16,
                                   (const uint8_t *)lat + (off < 0 ? 0 : off) + 64 * p + 16 * c4,
                                   off < 0 ? 0 : 16);
                }
            }
            gpu_cp_async_commit();
            gpu_cp_async_wait<0>();
            if (SRC == MPM_SRC_FP8) {
                gpu_bar_sync(MPW_CBAR, MPW_CTHREADS); /* every thread's codes landed */
                /* Panel p's codes (row r, chunk c4 of 16) become bf16 chunks 2 c4, 2 c4 + 1 of
                 * the panel. Panels 0-3 land below the codes; 4-7 overwrite them, so their codes
                 * are read into registers first and written after a barrier. */
                constexpr int PER = MPM_BM * 4 / MPW_CTHREADS; /* chunks a thread, a panel */
                uint4 hold[4][PER];
                const uint8_t *raw = ga + MPW_A_BYTES / 2;
                auto put = [&](int p, int item, uint4 w) {
                    const int r = item / 4, c4 = item % 4;
                    *(uint4 *)(ga + gpu_sw128_chunk(MPM_BM, r, 8 * p + 2 * c4)) =
                        pkv_fp8x8_bf16(w.x, w.y, 1.0f);
                    *(uint4 *)(ga + gpu_sw128_chunk(MPM_BM, r, 8 * p + 2 * c4 + 1)) =
                        pkv_fp8x8_bf16(w.z, w.w, 1.0f);
                };
#pragma unroll
                for (int p = 0; p < 8; p++)
#pragma unroll
                    for (int e = 0; e < PER; e++) {
                        const int item = ctid + MPW_CTHREADS * e;
                        const uint4 w = *(const uint4 *)(raw + p * (MPM_BM * 64) + item * 16);
                        if (p < 4)
                            put(p, item, w);
                        else
                            hold[p - 4][e] = w;
                    }
                gpu_bar_sync(MPW_CBAR, MPW_CTHREADS); /* every code is read */
#pragma unroll
                for (int p = 4; p < 8; p++)
#pragma unroll
                    for (int e = 0; e < PER; e++)
                        put(p, ctid + MPW_CTHREADS * e, hold[p - 4][e]);
            }
            gpu_fence_proxy_async();
            gpu_bar_sync(MPW_CBAR, MPW_CTHREADS); /* the tile is whole */
        };

        /* Tile `item`'s accumulators (all 128 rows: acc[m] holds rows 64 m ..) x k_scale,
         * rounded to bf16, into K dims 0..127 (half 0) or V (half 1). */
        auto epilogue = [&](const float(&acc)[2][64], long long item) {
            const int tt = (int)(item % nt), h = tt / 2, half = tt % 2;
            const int r0 = (int)(item / nt) * MPM_BM + 16 * (i / 32) + (i % 32) / 4;
#pragma unroll
            for (int rr = 0; rr < 4; rr++) { /* rows r0 + 64 (rr / 2) + 8 (rr % 2) */
                const int r = r0 + 64 * (rr / 2) + 8 * (rr % 2);
                if (r >= rows)
                    continue;
                const size_t at = (size_t)r * hq + h;
                uint16_t *dst = (half == 0 ? k + at * MPM_QK : v + at * MPM_V) + 2 * (i % 4);
#pragma unroll
                for (int n = 0; n < MPM_BN / 8; n++)
                    *(uint32_t *)(dst + 8 * n) =
                        gpu_pack2<false>(acc[rr / 2][4 * n + 2 * (rr % 2)] * ks,
                                         acc[rr / 2][4 * n + 2 * (rr % 2) + 1] * ks);
            }
            if (half != 0)
                return;
            /* A k_nope tile: head h's K also takes the rows' k_pe (dims 128..191), here under
             * the other consumer's MMAs rather than in load_rows, where it held both up. Eight
             * rows x 128 bytes a pass; every load is issued before the first store. */
            const int row0 = (int)(item / nt) * MPM_BM, c = i % 8;
            uint4 pe[MPM_BM / 16]; /* this thread's rows i / 8 + 16 e */
#pragma unroll
            for (int e = 0; e < MPM_BM / 16; e++) {
                const int r = i / 8 + 16 * e;
                const long long off = row_s[r];
                pe[e] = off >= 0 ? mpm__k_pe_load<SRC>(off, lat, k_pe, ks, row0 + r, c)
                                 : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int e = 0; e < MPM_BM / 16; e++) {
                const int r = i / 8 + 16 * e;
                if (row_s[r] >= 0)
                    *(uint4 *)mpm__k_pe_dst(k, row0 + r, hq, h, c) = pe[e];
            }
        };

        /* The block's items, a row block (segment) at a time; in a segment the consumers take
         * turns, item s0 + 2 n + w to consumer w, so one's epilogue runs under the other's MMAs.
         * Item `it`'s k step kstep is stage q = 8 (it - i0) + kstep of the producer's stream.
         * The turns are strict: item it (> s0) waits for its stages only once item it - 1's
         * consumer has waited for all of its own (named barriers MPW_TURN + w, one arrival per
         * sync). A "full" wait names a phase by its parity alone, so it must not run ahead of
         * the previous fill of its slot (q - MPW_STAGES, within the previous item's stages);
         * and the stages are released in order, as the producer refills them. */
        float acc[2][64];
        for (long long s0 = i0; s0 < i1;) {
            const long long rb = s0 / nt;
            const long long s1 = (rb + 1) * nt < i1 ? (rb + 1) * nt : i1;
            load_rows(rb);
            for (long long it = s0 + wg; it < s1; it += 2) {
                if (it > s0)
                    gpu_bar_sync(MPW_TURN + wg, MPW_CTHREADS); /* item it - 1's stages waited */
#pragma unroll 1
                for (int kstep = 0; kstep < MPM_NK; kstep++) {
                    const long long q = MPM_NK * (it - i0) + kstep;
                    gpu_mbar_wait_landed(full(q), parity(q));
                    if (kstep == MPM_NK - 1 && it + 1 < s1) /* the other consumer's turn */
                        gpu_bar_arrive(MPW_TURN + 1 - wg, MPW_CTHREADS);
                    gpu_wgmma_fence();
#pragma unroll
                    for (int kk = 0; kk < MPM_BK / 16; kk++)
#pragma unroll
                        for (int m = 0; m < 2; m++)
                            gpu_wgmma_ss<MPM_BN, false>(
                                acc[m], gpu_sw128_kmajor_desc(sa, MPM_BM, 64 * m, 4 * kstep + kk),
                                gpu_sw128_kmajor_desc(w_at(q), MPM_BN, 0, kk),
                                kstep > 0 || kk > 0);
                    gpu_wgmma_commit();
                    gpu_wgmma_wait<1>(); /* all but this stage's MMAs: the last stage is read */
                    if (kstep > 0)
                        gpu_mbar_arrive(empty(q - 1));
                }
                gpu_wgmma_wait<0>();
                gpu_wgmma_keep(acc[0]);
                gpu_wgmma_keep(acc[1]);
                gpu_mbar_arrive(empty(MPM_NK * (it - i0) + MPM_NK - 1));
                epilogue(acc, it);
            }
            s0 = s1;
        }
    }
#else
    (void)lat, (void)k_pe, (void)k_scale, (void)block_table, (void)meta, (void)w_kvb, (void)k;
    (void)v, (void)rows, (void)hq, (void)batch, (void)block_size, (void)max_blocks, (void)items;
    GPU_TRAP();
#endif // GPU_HAS_WGMMA
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

/* The mma.sync form: grid (ceil(rows / 128), 2 hq). */
template <int SRC>
static int mpm__decompress_mma(const opt_mla_prefill_args *a, const void *lat, const int32_t *meta,
                               int rows, uint16_t *k, uint16_t *v, hipStream_t stream)
{
    const int bytes = mpm__cfg<SRC>::SMEM;
    GPU_CHECK(hipFuncSetAttribute((const void *)mla_prefill_mma_decompress_kernel<SRC>,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, bytes));
    const dim3 grid((unsigned)((rows + MPM_BM - 1) / MPM_BM), (unsigned)(2 * a->hq));
    mla_prefill_mma_decompress_kernel<SRC><<<grid, MPM_THREADS, bytes, stream>>>(
        lat, (const uint16_t *)a->k_pe, a->cache.k_scale, a->block_table, meta,
        (const uint16_t *)a->w_kvb, k, v, rows, a->hq, a->batch, a->cache.block_size,
        a->max_blocks);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* The wgmma form: one block per SM (at most one per item), items = row blocks x 2 hq. */
template <int SRC>
static int mpm__decompress_wgmma(const opt_mla_prefill_args *a, const void *lat,
                                 const int32_t *meta, int rows, uint16_t *k, uint16_t *v,
                                 hipStream_t stream)
{
    int sms = 0, rc = psplit_sm_count(&sms);
    if (rc != OPT_OK)
        return rc;
    const long long items = (long long)((rows + MPM_BM - 1) / MPM_BM) * (2 * a->hq);
    const int grid = (int)(items < sms ? items : sms);
    GPU_CHECK(hipFuncSetAttribute((const void *)mla_prefill_wgmma_decompress_kernel<SRC>,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, MPW_SMEM));
    mla_prefill_wgmma_decompress_kernel<SRC><<<grid, MPW_THREADS, MPW_SMEM, stream>>>(
        lat, (const uint16_t *)a->k_pe, a->cache.k_scale, a->block_table, meta,
        (const uint16_t *)a->w_kvb, k, v, rows, a->hq, a->batch, a->cache.block_size,
        a->max_blocks, items);
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
        return wg ? mpm__decompress_wgmma<SRC>(a, lat, meta, rows, k, v, stream)
                  : mpm__decompress_mma<SRC>(a, lat, meta, rows, k, v, stream);
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
        const bool last = c + 1 == p.chunks;
        if ((rc = opt_chunk_attend_merge(&ch, a->matrix, ts, ts_bytes, o_acc, l_acc,
                                         ws + p.off_oc, (float *)(ws + p.off_lc),
                                         last ? a->out : o_nxt, last ? a->lse : l_nxt,
                                         stream)) != OPT_OK)
            return rc;
        void *t = o_acc;
        o_acc = o_nxt, o_nxt = t;
        float *u = l_acc;
        l_acc = l_nxt, l_nxt = u;
    }
    return OPT_OK;
}
