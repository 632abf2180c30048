/* paged_mma.h - the paged-KV attention engine on the matrix cores that paged_decode's `mma`
 * variant (paged_decode_mma.hip) and mixed's `unified` variant (mixed_unified.hip) share:
 * flash attention of a block of query rows over a range of a paged cache's keys, behind a deep
 * asynchronous copy pipeline. NVIDIA sm_80+ only (mma.sync, ldmatrix, cp.async; gpu_port.h
 * GPU_HAS_MMA_SYNC); the kernels that use it trap elsewhere and their unsupported() says so.
 *
 * A block of 4 warps serves a pdm__job: rows = (query token, query head) pairs of one KV head's
 * group, head fastest, so every K/V byte the block reads serves all of its rows. The block walks
 * its key range in tiles of BN = 64 tokens (128 for fp8 decode: pdm__cfg's NSUB):
 *   copy     every thread issues 16-byte cp.async copies of the tile's K and V vectors in the
 *            cache's own layout (nhd, hnd, or AITER's shuffled layout, read natively) into a
 *            ring of STAGES tiles (3 for 16-bit caches and fp8 128-token tiles, 4 for fp8
 *            64-token tiles, 2 at head_dim 256): while a tile is computed the next STAGES - 1
 *            are in flight (about 64 KB per block at head_dim 128; two blocks per SM, three
 *            for fp8 64-token tiles). The first tiles' copies go out before Q is read. Row
 *            starts (64-bit byte offsets) of the tile's tokens are computed one tile ahead,
 *            into shared memory, from block-table entries read two tiles ahead, so neither a
 *            copy nor the math waits on a table read. Tokens past the range read nothing (zero
 *            fill).
 *   staging  the cache's bytes are copied as they are (fp8: the codes): row layouts as
 *            [token][16-byte word] rows XOR-swizzled by row; the shuffled layout in its own
 *            order (K [dim group][token], V [token group][dim]: x consecutive tokens of a dim
 *            are one 16-byte vector, the B operand's k-pairs), so that every copy phase
 *            writes 128 contiguous bytes (pdm__kword, pdm__vword). fp8 codes are dequantized
 *            in registers after ldmatrix (exact: one cvt per pair on sm_89+); k_scale goes into
 *            the logit and v_scale into the output.
 *   math     two shapes (template WQ): WQ = 1, one 16-row MMA tile whose four warps take 16
 *            NSUB tokens each of every tile and merge at the end (decode: the rows are a group's
 *            heads); WQ = 4, 64 rows, a warp per 16 rows over every token of the tile
 *            (prefill, extend). S = Q K^T with Q in registers for the whole range as the A
 *            operand and K by ldmatrix; an online softmax per row in f32 (base 2; the quad of
 *            lanes sharing a row reduces with two shuffles; O is rescaled only when some row's
 *            max grew 2^8 past the reference it was scaled to); a row sees the keys before its
 *            causal limit, masked only on the tiles that cross some row's limit; P rounded to
 *            the MMA type as the A operand of O += P V (V by ldmatrix.trans, or plain ldmatrix
 *            for the shuffled [dim][token] tiles). The MMAs run in the query dtype over 16-bit
 *            caches and in f16 over fp8 ones: a bf16 query row is then scaled by a power of two
 *            into f16's range (exact but for parts below 2^-39 of the row's largest element,
 *            under f32's rounding of the dot product), the logit takes the power back. Rows
 *            past the job's count are zero queries whose results are dropped.
 * The warps' (m, l, O) merge in shared memory at the end; each row is written as its final out
 * (rounded once into the query dtype) and lse when all of its keys are in this range's split,
 * else as a normalised partial and LSE in the caller's workspace for a combine kernel. Slots
 * past the range's end are never used: zero-filled for row layouts; for shuffled V, whose
 * 16-byte vectors hold x tokens, the tail tokens of the last vector are zeroed in shared memory
 * before any MMA reads them (0 * NaN would be NaN).
 */
#ifndef ATTN_PAGED_MMA_H
#define ATTN_PAGED_MMA_H

#include "paged_kv.h"
#include "paged_split.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

enum {
    PDM__WARPS = 4,
    PDM__THREADS = 32 * PDM__WARPS,
    PDM__BN = 16 * PDM__WARPS,  /* tokens per tile of one 16-token sub-tile per warp; a shape's
                                   tile is pdm__cfg::BN = NSUB of them */
    PDM__ROWS = 16,             /* query heads per block: one MMA row tile */
    PDM__MIN_SPLIT = 512,       /* tokens: eight tiles at least per split (the ring's fill and
                                   the final merge are paid once per split) */
    PDM__BLOCKS_PER_SM = 4,     /* about two waves of two resident blocks */
};

#define PDM__LOG2E 1.4426950408889634f
#define PDM__RESCALE_LOG2 8.0f /* pdm__attend rescales O when a row's max grows past m + this */
#define PDM__LN2 0.69314718055994531f

/* Compile-time shape of one instantiation: cache dtype KVT, f16 (else bf16) queries, head_dim
 * D, shuffled layout (else nhd or hnd, which differ only in the row offsets), NSUB 16-token
 * sub-tiles per warp in a tile of the one-row-tile shape (WQ = 1; the WQ = 4 shape takes
 * NSUB = 1): fp8 decode takes 2, a 128-token tile of the bytes of a 16-bit cache's 64 tokens,
 * so that a tile's fixed work (the barrier, the row starts, the softmax's reductions) is paid
 * once per 32 KB as for 16-bit caches, and each warp has two independent S chains. */
template <int KVT, bool F16_, int D_, bool SHUF_, int NSUB_ = 1>
struct pdm__cfg {
    static constexpr int D = D_, NSUB = NSUB_, BN = PDM__BN * NSUB_; /* BN: tokens per tile */
    static constexpr bool F16 = F16_, SHUF = SHUF_, FP8 = KVT == OPT_FP8E4M3;
    /* The MMAs run in f16 for f16 queries and for fp8 caches (fp8 -> f16 is one exact
     * conversion per pair; a bf16 query row is scaled by a power of two into f16's range). */
    static constexpr bool MF16 = F16 || FP8;
    static constexpr int ES = FP8 ? 1 : 2;                 /* bytes per cache element */
    static constexpr int GX = 16 / ES;                     /* elements per 16-byte vector: x */
    static constexpr int CPR = D / GX;                     /* vectors per (token, head) row */
    static constexpr int NCH = BN * CPR;                   /* vectors of K (and of V) per tile */
    static constexpr int NJ = NCH / PDM__THREADS;          /* ... per thread */
    static constexpr int KW = CPR;                         /* 16-byte words per staged K row */
    static constexpr int VW = SHUF ? BN / GX : CPR;        /* per staged V row */
    /* fp8 over the shuffled layout reads K's tokens permuted (pdm__attend: the order that
     * makes S's accumulator the k order of the V fragments); pdm__kword stages them to match. */
    static constexpr bool KPERM = FP8 && SHUF;
    static constexpr int STAGE = 2 * NCH * 16;             /* bytes of a tile's K and V as cached */
    static constexpr int STAGES = FP8 ? (D > 128 || NSUB > 1 ? 3 : 4) : (D > 128 ? 2 : 3);
    static constexpr int SMEM = STAGES * STAGE;
    static constexpr int MERGE = (PDM__WARPS * PDM__ROWS * (D + 3) + PDM__ROWS) * 4;
    /* A decode block's partial (16 rows of D f32, then their 16 LSEs) for the cluster merge,
     * just past the merge area (pdm__job::part). */
    static constexpr int PART = (PDM__ROWS * D + PDM__ROWS) * 4;
    /* Blocks per SM the decode kernel is built for (its __launch_bounds__): fp8 64-token tiles
     * at D <= 128 stage 64 KB or less, so three blocks fit (registers then capped at 168); two
     * for 16-bit caches and fp8 128-token tiles at D <= 128; one at 256. */
    static constexpr int MIN_BLOCKS = D > 128 ? 1 : FP8 && NSUB == 1 ? 3 : 2;
    static_assert(D % 32 == 0 && (KW == 4 || KW % 8 == 0) && (VW == 4 || VW % 8 == 0),
                  "swizzle: 4 words per row or a multiple of 8");
    static_assert(NCH % PDM__THREADS == 0 && PDM__THREADS % BN == 0 && BN <= 32 * PDM__WARPS &&
                      PDM__THREADS % CPR == 0, "whole vectors per thread, affine in j");
    static_assert(MERGE <= SMEM, "the warps' merge fits in the staging area");
    static_assert(MERGE % 16 == 0 && MERGE + PART <= SMEM, "so does a decode block's partial");
};

/* Word (16 bytes) w of row r of a staged matrix of W words per row (4, or a multiple of 8),
 * XOR-swizzled so that the 8 consecutive rows an ldmatrix phase reads hit 8 different bank
 * groups (W = 4: two rows share a 128-byte bank line). Row layouts (nhd, hnd) stage K and V
 * this way: a copy's 8 threads of a phase fill one row, 128 contiguous bytes. */
__device__ __forceinline__ int pdm__swz(int r, int w, int W)
{
    return r * W + (w ^ (W >= 8 ? r & 7 : (r >> 1) & 3));
}

/* The staged words of a tile's K (token tok, word w: dims w * x ..) and V (row: the token, or
 * for shuffled V the dim; word w). The shuffled layout is staged in its own order -- K as
 * [word][token], V as [token group][dim] -- so that the 8 threads of a copy phase, which read 8
 * consecutive 16-byte vectors of the cache, also write 128 contiguous bytes of shared memory
 * (scattered destinations split a cp.async into one L2 request per vector), and the 8 rows an
 * ldmatrix phase reads are consecutive words. fp8 K over the shuffled layout is read with its
 * tokens permuted ({0, 1, 4, 5, 8, 9, 12, 13} + 2 j of 16, pdm__attend): the tokens of the
 * second 8 of every 16 swap their bit 1, which keeps both those reads and the copies'
 * 128-byte groups conflict-free. */
template <class C>
__device__ __forceinline__ int pdm__kword(int tok, int w)
{
    if (!C::SHUF)
        return pdm__swz(tok, w, C::KW);
    return w * C::BN + (C::KPERM ? tok ^ ((tok >> 2) & 2) : tok);
}

template <class C>
__device__ __forceinline__ int pdm__vword(int row, int w)
{
    return C::SHUF ? w * C::D + row : pdm__swz(row, w, C::VW);
}

/* Vector j (0 .. NJ - 1) of thread tid in a tile's K (IS_V 0) or V: vector i = tid + THREADS j
 * of the tile. tok, the tile token of its row (shuffled V: the first of its x tokens); g, its
 * element offset from that token's row start; (row, word), its 16-byte word in the staged
 * matrix (the cache's bytes as they are, fp8 codes too). Consecutive i are consecutive 16 bytes of the
 * cache wherever the layout allows (coalesced copies). j is a compile-time constant once
 * unrolled, so all of it but the table read folds into per-thread constants. */
template <class C, int IS_V>
__device__ __forceinline__ void pdm__vec(int tid, int j, int bs, int &tok, int &g, int &row, int &word)
{
    if (C::SHUF && IS_V) {         /* [bs/x][D][x]: dim fastest */
        int og, d;
        if (C::D >= PDM__THREADS) {
            constexpr int PER = C::D >= PDM__THREADS ? C::D / PDM__THREADS : 1; /* per token group */
            og = j / PER, d = tid + PDM__THREADS * (j % PER);
        } else {
            constexpr int GPT = C::D < PDM__THREADS ? PDM__THREADS / C::D : 1; /* groups per pass */
            og = tid / C::D + GPT * j, d = tid % C::D;
        }
        tok = og * C::GX, g = d * C::GX, row = d, word = og;
    } else if (C::SHUF) {          /* [D/x][bs][x]: token fastest */
        const int c = tid / C::BN + (PDM__THREADS / C::BN) * j;
        tok = tid % C::BN, g = c * bs * C::GX, row = tok, word = c;
    } else {                       /* row layouts: dims of a token row fastest */
        const int c = tid % C::CPR;
        tok = tid / C::CPR + (PDM__THREADS / C::CPR) * j, g = c * C::GX, row = tok, word = c;
    }
}

/* pdm__vec of tensor h (0: K, 1: V), h a run-time value. */
template <class C>
__device__ __forceinline__ void pdm__vec_h(int h, int tid, int j, int bs, int &tok, int &g, int &row,
                                           int &word)
{
    if (h)
        pdm__vec<C, 1>(tid, j, bs, tok, g, row, word);
    else
        pdm__vec<C, 0>(tid, j, bs, tok, g, row, word);
}

/* Issue the copies of one tile (first token tok0, tokens < t_end only) into stage `st` (K
 * matrix then V matrix, in chunks of up to 4 vectors of each). koff/voff: the tile's row
 * starts, bytes (row layouts: one array). A chunk's row starts are read from shared memory
 * before its first copy: the copies' "memory" clobber would otherwise order each read after
 * the copy before it, one shared-memory latency per copy, and read the row layouts' starts
 * twice (K, then V). Chunks of 4 bound the registers they take (head_dim 256: 16 vectors). */
template <class C>
__device__ __forceinline__ void pdm__issue(const uint8_t *__restrict__ kc, const uint8_t *__restrict__ vc,
                                           const long long *koff, const long long *voff, int tok0,
                                           int t_end, int bs, uint8_t *st, int tid)
{
#if defined(GPU_HAS_MMA_SYNC)
    constexpr int JC = C::NJ < 4 ? C::NJ : 4;
    static_assert(C::NJ % JC == 0, "whole chunks");
    const uint32_t sbase = gpu_smem_addr(st);
#pragma unroll
    for (int j0 = 0; j0 < C::NJ; j0 += JC) {
        long long off[2][JC];
        int at[2][JC], gb[2][JC];
        bool ok[2][JC];
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int jc = 0; jc < JC; jc++) {
                int tok, g, row, word;
                pdm__vec_h<C>(h, tid, j0 + jc, bs, tok, g, row, word);
                if (h == 0 || C::SHUF)
                    off[h][jc] = (h ? voff : koff)[tok];
                else
                    off[1][jc] = off[0][jc]; /* row layouts: V's vector j is K's (same tok, g) */
                /* A token past the range has row start 0 (pdm__rows): its address stays
                 * inside the cache's first page and the copy reads nothing (zero fill). */
                ok[h][jc] = tok0 + tok < t_end;
                at[h][jc] = h * C::NCH + (h ? pdm__vword<C>(row, word) : pdm__kword<C>(row, word));
                gb[h][jc] = g * C::ES;
            }
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int jc = 0; jc < JC; jc++)
                gpu_cp_async16(sbase + 16 * at[h][jc], (h ? vc : kc) + off[h][jc] + gb[h][jc],
                               ok[h][jc] ? 16 : 0);
    }
#endif
}

/* pos / bs and pos % bs for pos >= 0: shifts when the block size is a power of two (every
 * serving configuration), else the division. Saves the integer-division sequences the
 * per-tile row-start work would otherwise run. */
__device__ __forceinline__ void pdm__divmod(int pos, int bs, int &q, int &r)
{
    if ((bs & (bs - 1)) == 0) {
        const int sh = __ffs(bs) - 1;
        q = pos >> sh, r = pos & (bs - 1);
    } else {
        q = pos / bs, r = pos % bs;
    }
}

/* The cache block (page) holding token tok0 + j of the tile at tok0, read from the block table
 * (-1 for j >= bn, the tile's tokens, or a token past t_end). j: this thread's token of the
 * tile (pdm__row_j). */
__device__ __forceinline__ int pdm__page(const int32_t *__restrict__ bt, int tok0, int t_end, int j,
                                         int bs, int bn)
{
    const int pos = tok0 + j;
    int q, r;
    pdm__divmod(pos, bs, q, r);
    return j < bn && pos < t_end ? bt[q] : -1;
}

/* Row starts, in bytes, of token pos (in page n, -1: past the range) as the copies need them:
 * K row (shuffled: dim-group 0 of the token), V row (shuffled: the token's x-group); 0 for
 * n < 0. kh is the KV head. */
template <class C>
__device__ __forceinline__ void pdm__rows(const opt_kv_cache &cache, int n_page, int kh, int pos,
                                          long long &ko, long long &vo)
{
    ko = vo = 0;
    if (n_page < 0)
        return;
    const int bs = cache.block_size, hkv = cache.heads;
    const long long n = n_page;
    int q, o;
    pdm__divmod(pos, bs, q, o);
    if (C::SHUF) {
        const long long base = (n * hkv + kh) * (long long)bs * C::D;
        ko = (base + (long long)o * C::GX) * C::ES;
        vo = (base + (long long)(o / C::GX) * C::D * C::GX) * C::ES;
    } else if (cache.layout == OPT_KV_NHD) {
        ko = vo = ((n * bs + o) * hkv + kh) * (long long)C::D * C::ES;
    } else {
        ko = vo = ((n * hkv + kh) * (long long)bs + o) * C::D * C::ES;
    }
}

/* The tile token whose row starts thread tid computes in a tile of BN tokens: BN / 4 per warp
 * (its first lanes), so that the table work is spread over the warps; BN (none) for the
 * other lanes. */
template <int BN>
__device__ __forceinline__ int pdm__row_j(int tid)
{
    constexpr int TPW = BN / PDM__WARPS;
    static_assert(BN % PDM__WARPS == 0 && TPW <= 32, "a lane per token of the warp's share");
    return tid % 32 < TPW ? tid / 32 * TPW + tid % 32 : BN;
}

/* 4 fp8e4m3 codes (bytes 0-3 of w) -> 4 f16 of the same values, exactly (NaN codes -> NaN):
 * lo holds codes 0 and 1, hi codes 2 and 3 (first code in the low half). sm_89+: one cvt per
 * pair; older targets: paged_kv.h's bit moves give code * 2^-8, times 256 (exact). */
__device__ __forceinline__ void pdm__fp8x4_f16(uint32_t w, uint32_t &lo, uint32_t &hi)
{
#if defined(GPU_HAS_CVT_E4M3)
    lo = gpu_e4m3x2_to_f16x2(w);
    hi = gpu_e4m3x2_hi_to_f16x2(w);
#else
    uint4 l4, h4;
    pkv_fp8x16_16bit<true>(make_uint4(w, 0u, 0u, 0u), l4, h4);
    uint32_t u[2] = {l4.x, l4.y};
    for (int i = 0; i < 2; i++) { /* times 256 on the exponent (NaN stays NaN) */
        const float x = gpu_f16_to_f32((uint16_t)u[i]) * 256.0f;
        const float y = gpu_f16_to_f32((uint16_t)(u[i] >> 16)) * 256.0f;
        u[i] = (uint32_t)gpu_f32_to_f16(x) | (uint32_t)gpu_f32_to_f16(y) << 16;
    }
    lo = u[0], hi = u[1];
#endif
}

/* Shuffled V: zero the staged tokens [t_end, next multiple of x) of the tile, whose 16-byte
 * vectors were copied whole (slots past a context's end may hold anything, NaN too). */
template <class C>
__device__ __forceinline__ void pdm__zero_tail(uint8_t *vmat, int tok0, int t_end, int tid)
{
    const int p0 = t_end - tok0, n = C::GX - p0 % C::GX;
    for (int i = tid; i < C::D * n; i += PDM__THREADS) {
        const int d = i / n, t = p0 + i % n;
        uint8_t *e = vmat + 16 * pdm__vword<C>(d, t / C::GX) + (t % C::GX) * C::ES;
        if (C::ES == 2)
            *(uint16_t *)e = 0;
        else
            *e = 0;
    }
}

__device__ __forceinline__ float pdm__ref(float x)
{
    return x == -INFINITY ? 0.0f : x; /* never exp(-inf - -inf) */
}


/* One block's work for pdm__attend: rows = (local token i, head h0 + j) for i < n_tok,
 * j < gv, row index i * gv + j; local token i is global token q_tok + i (q, out: [T, hq, D],
 * lse: [hq, T]) and sees the keys [0, vis0 + i) of the sequence; the block attends keys
 * [t_begin, t_end) of them, split s of n_split of split_tokens keys each. A row whose keys fit
 * one split (vis0 + i <= split_tokens) is finished here (split 0 writes out and lse); the
 * others write split s's normalised partial and LSE to workspace row ws_base + ((ws_tok + i) *
 * hq + h) * n_split + s (ws_o rows of D floats, ws_lse the same rows), if the split holds some
 * of the row's keys. */
struct pdm__job {
    const void *q;
    void *out;
    float *lse, *ws_o, *ws_lse;
    float *part; /* non-null (WQ = 1): partials go to this block's shared memory, rows of D
                  * floats, then the rows' LSEs (C::PART bytes), for a cluster merge */
    long long q_tok, ws_base;
    int ws_tok, n_tok, T, hq, h0, gv, kh;
    int t_begin, t_end, vis0, split_tokens, s, n_split;
    float scale, softcap;
};

/* The engine: one block of PDM__WARPS warps attends job jb's rows over the keys of
 * [t_begin, t_end) (non-empty) of the sequence whose block-table row is bt. WQ = 1: one MMA
 * row tile (16 rows), the four warps take 16 tokens each of every 64-token tile and merge at
 * the end (decode: rows are the group's heads). WQ = 4: 64 rows, warp w takes rows 16 w ..
 * 16 w + 15 over every token of the tile (prefill and extend: rows are (token, head) pairs).
 * Rows past n_tok * gv are zero queries whose results are dropped. */
template <class C, int WQ>
__device__ __forceinline__ void pdm__attend(const pdm__job &jb, const opt_kv_cache &cache,
                                            const int32_t *__restrict__ bt, uint8_t *smem,
                                            long long (*koff_s)[C::BN], long long (*voff_s)[C::BN])
{
#if defined(GPU_HAS_MMA_SYNC)
    constexpr int D = C::D, KS = D / 16;
    constexpr int QT = C::F16 ? OPT_F16 : OPT_BF16;
    constexpr int KWARPS = PDM__WARPS / WQ; /* warps sharing a row tile, splitting the tokens */
    constexpr int BM = 16 * WQ;             /* rows of the block */
    constexpr int BN = C::BN;               /* tokens per tile */
    constexpr int NS = WQ * C::NSUB;        /* 16-token sub-tiles per warp per tile */
    static_assert(PDM__WARPS % WQ == 0 && KWARPS * BM == PDM__WARPS * PDM__ROWS,
                  "the merge area holds KWARPS x BM rows");
    static_assert(WQ == 1 || C::NSUB == 1, "WQ = 4: a warp's 16 rows over a 64-token tile");
    static_assert(16 * NS * KWARPS == BN, "the warps' sub-tiles cover the tile");
    const int tid = threadIdx.x, lane = tid % 32, w = tid / 32, g = lane / 4, t4 = lane % 4;
    const int rg = w % WQ, kw = w / WQ; /* row tile, token group */
    const int t_begin = jb.t_begin, t_end = jb.t_end, gv = jb.gv, hq = jb.hq;
    const int n_rows = jb.n_tok * gv;
    const int n_tiles = (t_end - t_begin + BN - 1) / BN;
    const int bs = cache.block_size, kh = jb.kh;
    const uint8_t *kc = (const uint8_t *)cache.k, *vc = (const uint8_t *)cache.v;

    /* Row starts of the first STAGES tiles; then, one tile ahead of its use, the page of the
     * next tile's token (pg), so that no block-table read is waited for inside the loop. */
    const int rj = pdm__row_j<BN>(tid);
#pragma unroll
    for (int t = 0; t < C::STAGES; t++)
        if (rj < BN) {
            const int tok0 = t_begin + t * BN;
            pdm__rows<C>(cache, pdm__page(bt, tok0, t_end, rj, bs, BN), kh, tok0 + rj, koff_s[t][rj],
                         voff_s[t][rj]);
        }
    int pg = pdm__page(bt, t_begin + C::STAGES * BN, t_end, rj, bs, BN);

    /* The first STAGES - 1 tiles' copies go out before the queries are read: a block's first
     * bytes are then in flight one global round trip sooner (the Q reads and their f16
     * scaling overlap them). */
    __syncthreads(); /* row starts visible */
#pragma unroll
    for (int t = 0; t < C::STAGES - 1; t++) {
        if (t < n_tiles)
            pdm__issue<C>(kc, vc, koff_s[t], voff_s[t], t_begin + t * BN, t_end, bs,
                          smem + t * C::STAGE, tid);
        gpu_cp_async_commit();
    }

    /* This lane's rows a = 16 rg + g and b = a + 8: their q rows and key limits (a row sees
     * the keys before lim; rows past n_rows: t_end, results dropped). */
    const int ra = 16 * rg + g, rb = ra + 8;
    const int ia = ra / gv, ib = rb / gv;
    const bool va = ra < n_rows, vb = rb < n_rows;
    const int lim_a = va && jb.vis0 + ia < t_end ? jb.vis0 + ia : t_end;
    const int lim_b = vb && jb.vis0 + ib < t_end ? jb.vis0 + ib : t_end;
    const int lim_blk = jb.vis0 < t_end ? jb.vis0 : t_end; /* the block's first row's limit */

    /* Q as the A operand for the whole split. bf16 queries over an fp8 cache become f16 times
     * 2^e per row (numerics.h num_f16_range_scale: the row's largest magnitude to [2^14, 2^15);
     * what f16 then rounds is below 2^-39 of it, under f32's rounding of the dot product); the
     * logit takes 2^-e back. */
    uint32_t qa[KS][4];
    float qmul0, qmul1; /* logit multiplier of rows a and b, times log2(e) */
    /* v_scale read now, its latency hidden behind the split, not paid in the merge. */
    const float vmul = C::FP8 ? *cache.v_scale : 1.0f;
    {
        const float qmul = (C::FP8 ? jb.scale * *cache.k_scale : jb.scale);
        const uint16_t *q16 = (const uint16_t *)jb.q;
        const uint16_t *qra = q16 + ((size_t)(jb.q_tok + ia) * hq + jb.h0 + ra % gv) * D;
        const uint16_t *qrb = q16 + ((size_t)(jb.q_tok + ib) * hq + jb.h0 + rb % gv) * D;
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
#pragma unroll
            for (int r = 0; r < 4; r++) { /* a0: (g, 2t), a1: (g + 8, 2t), a2: (g, 2t + 8), a3 */
                /* fp8: the K fragments hold dims 4t .. 4t + 3 (pdm__attend's fp8 K), so the
                 * k order is permuted alike: k 2t, 2t + 1 -> dims 4t, 4t + 1; 2t + 8, 2t + 9
                 * -> 4t + 2, 4t + 3. */
                const int col = C::FP8 ? 16 * ks + 4 * t4 + 2 * (r / 2) : 16 * ks + 2 * t4 + 8 * (r / 2);
                const bool ok = r % 2 ? vb : va;
                qa[ks][r] = ok ? *(const uint32_t *)((r % 2 ? qrb : qra) + col) : 0u;
            }
        }
        float e0 = 1.0f, e1 = 1.0f; /* 2^e of rows a and b */
        if (C::FP8 && !C::F16) {
            float mx0 = 0.0f, mx1 = 0.0f;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    const float x = fmaxf(fabsf(num_bf16_to_f32((uint16_t)qa[ks][r])),
                                          fabsf(num_bf16_to_f32((uint16_t)(qa[ks][r] >> 16))));
                    if (r % 2)
                        mx1 = fmaxf(mx1, x);
                    else
                        mx0 = fmaxf(mx0, x);
                }
            }
            mx0 = fmaxf(mx0, GPU_SHFL_XOR(mx0, 1));
            mx0 = fmaxf(mx0, GPU_SHFL_XOR(mx0, 2));
            mx1 = fmaxf(mx1, GPU_SHFL_XOR(mx1, 1));
            mx1 = fmaxf(mx1, GPU_SHFL_XOR(mx1, 2));
            e0 = num_f16_range_scale(mx0), e1 = num_f16_range_scale(mx1);
#pragma unroll
            for (int ks = 0; ks < KS; ks++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    qa[ks][r] = pkv_bf16x2_to_f16x2(qa[ks][r], r % 2 ? e1 : e0);
        }
        qmul0 = qmul / e0;
        qmul1 = qmul / e1;
        if (jb.softcap <= 0.0f)
            qmul0 *= PDM__LOG2E, qmul1 *= PDM__LOG2E;
    }
    const float softcap = jb.softcap;
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* rows a and b */

    /* Per-lane ldmatrix coordinates (rows of the 8x8 matrices this lane addresses) in the
     * warp's first sub-tile; sub-tile jj adds 16 jj tokens.
     * 16-bit caches: K matrices (n-tile, k half) = (0,0), (0,1), (1,0), (1,1) of a k-step; V
     * by .trans (row layouts) or plain (shuffled [dim][token]).
     * fp8 caches, dequantized in registers: a K matrix is 8 tokens x 16 dims of codes, lane
     * (g, t) gets dims 4t .. 4t + 3 of token g -- one k-step's B fragment after two cvts,
     * with Q's k order permuted to match; matrices (n-tile, k-step) = (0,0), (1,0), (0,1),
     * (1,1) of two k-steps. Shuffled V ([dim][token]): a matrix is 8 dims x 16 tokens, lane
     * (g, t) gets tokens 4t .. 4t + 3 of dim g, so P's k order must be the same permutation:
     * K's n-tile j, column n is token 4 (n / 2) + 2 j + n % 2 of the 16, which makes S's
     * accumulator (c0, c1 of n-tiles 0 and 1) P's A fragment as it stands. Row-layout V
     * ([token][dim]) by .trans: lane (g, t) gets tokens 2t, 2t + 1 of dims 2g, 2g + 1; a byte
     * permute splits them into the B fragments of two n-tiles, one of the word's even dims,
     * one of its odd dims (the merge puts the columns back in order). */
    const int tw = 16 * NS * kw; /* the warp's first token of a tile */
    const int kr = C::FP8 ? tw + (C::KPERM ? 4 * ((lane % 8) / 2) + 2 * ((lane / 8) % 2) + lane % 2
                                           : 8 * ((lane / 8) % 2) + lane % 8)
                          : tw + 8 * (lane / 16) + lane % 8;                  /* K: token */
    const int kx = C::FP8 ? lane / 16 : (lane / 8) % 2;                       /* K: word */
    const int vr = tw + 8 * ((lane / 8) % 2) + lane % 8, vx = lane / 16;      /* V rows: token */
    const int sr = C::FP8 ? lane : 8 * (lane / 16) + lane % 8;                /* V shuffled: dim */
    const int sx = C::FP8 ? tw / 16 : tw / 8 + (lane / 8) % 2;                /* ... word */

    for (int t = 0; t < n_tiles; t++) {
        gpu_cp_async_wait<C::STAGES - 2>();
        __syncthreads(); /* tile t landed for every thread; tile t - 1's buffers are free */
        const int tn = t + C::STAGES - 1, tok0 = t_begin + t * BN;
        if (tn < n_tiles)
            pdm__issue<C>(kc, vc, koff_s[tn % C::STAGES], voff_s[tn % C::STAGES],
                          t_begin + tn * BN, t_end, bs, smem + (tn % C::STAGES) * C::STAGE, tid);
        gpu_cp_async_commit();
        /* Row starts of tile tn + 1 from its page, read an iteration ago, stored after this
         * tile's math into the slot of tile t, whose copies were issued long ago; then the
         * page of tile tn + 2's token (its read's latency hides behind the math). */
        long long nko = 0, nvo = 0;
        if (tn + 1 < n_tiles) {
            pdm__rows<C>(cache, pg, kh, t_begin + (tn + 1) * BN + rj, nko, nvo);
            pg = pdm__page(bt, t_begin + (tn + 2) * BN, t_end, rj, bs, BN);
        }

        uint8_t *kmat = smem + (t % C::STAGES) * C::STAGE, *vmat = kmat + C::NCH * 16;
        if (C::SHUF && t_end - tok0 < BN && (t_end - tok0) % C::GX != 0) {
            pdm__zero_tail<C>(vmat, tok0, t_end, tid);
            __syncthreads();
        }

        /* S = Q K^T over this warp's tokens: sc[j] = n-tile j (tokens tw + 8 j ..). */
        float sc[2 * NS][4];
#pragma unroll
        for (int j = 0; j < 2 * NS; j++)
            sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
        const uint32_t kbase = gpu_smem_addr(kmat);
        if (C::FP8) {
#pragma unroll
            for (int k2 = 0; k2 < KS / 2; k2++) {
#pragma unroll
                for (int jj = 0; jj < NS; jj++) {
                    uint32_t kb[4], b[4][2];
                    gpu_ldmatrix_x4(kb, kbase + 16 * pdm__kword<C>(kr + 16 * jj, 2 * k2 + kx));
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        pdm__fp8x4_f16(kb[i], b[i][0], b[i][1]);
#pragma unroll
                    for (int kk = 0; kk < 2; kk++) {
                        gpu_mma16816<true>(sc[2 * jj], qa[2 * k2 + kk], b[2 * kk][0], b[2 * kk][1]);
                        gpu_mma16816<true>(sc[2 * jj + 1], qa[2 * k2 + kk], b[2 * kk + 1][0], b[2 * kk + 1][1]);
                    }
                }
            }
        } else {
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
#pragma unroll
                for (int jj = 0; jj < NS; jj++) {
                    uint32_t kb[4];
                    gpu_ldmatrix_x4(kb, kbase + 16 * pdm__kword<C>(kr + 16 * jj, 2 * ks + kx));
                    gpu_mma16816<C::MF16>(sc[2 * jj], qa[ks], kb[0], kb[1]);
                    gpu_mma16816<C::MF16>(sc[2 * jj + 1], qa[ks], kb[2], kb[3]);
                }
            }
        }

        /* Online softmax (base 2) for rows a (c0, c1) and b (c2, c3); only a tile that holds
         * some row's limit masks. */
        const bool edge = tok0 + BN > lim_blk;
        const int base_tok = tok0 + tw + (C::KPERM ? 4 * t4 : 2 * t4);
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int j = 0; j < 2 * NS; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = sc[j][e] * (e < 2 ? qmul0 : qmul1);
                if (softcap > 0.0f)
                    x = softcap * tanhf(x / softcap) * PDM__LOG2E;
                const int tok = base_tok + (C::KPERM ? 16 * (j / 2) + 2 * (j % 2) : 8 * j) + e % 2;
                if (edge && tok >= (e < 2 ? lim_a : lim_b))
                    x = -INFINITY;
                sc[j][e] = x;
            }
            mx0 = fmaxf(mx0, fmaxf(sc[j][0], sc[j][1]));
            mx1 = fmaxf(mx1, fmaxf(sc[j][2], sc[j][3]));
        }
        mx0 = fmaxf(mx0, GPU_SHFL_XOR(mx0, 1));
        mx0 = fmaxf(mx0, GPU_SHFL_XOR(mx0, 2));
        mx1 = fmaxf(mx1, GPU_SHFL_XOR(mx1, 1));
        mx1 = fmaxf(mx1, GPU_SHFL_XOR(mx1, 2));
        /* Rescale only when some row's max passed its reference m by more than
         * PDM__RESCALE_LOG2 (lazy rescaling): until then P = 2^(s - m) <= 2^8 -- in range for
         * f16 and bf16 P, and l and O keep one reference, which the end divides out. */
        if (__any_sync(0xffffffffu, mx0 > m0 + PDM__RESCALE_LOG2 || mx1 > m1 + PDM__RESCALE_LOG2)) {
            const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
            const float a0 = exp2f(m0 - pdm__ref(n0)), a1 = exp2f(m1 - pdm__ref(n1));
            m0 = n0, m1 = n1;
            l0 *= a0, l1 *= a1;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                o[n][0] *= a0, o[n][1] *= a0;
                o[n][2] *= a1, o[n][3] *= a1;
            }
        }
        /* P as the A operand of sub-tile jj: (g, 2t), (g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8) */
        uint32_t pa[NS][4];
        const float r0 = pdm__ref(m0), r1 = pdm__ref(m1);
#pragma unroll
        for (int j = 0; j < 2 * NS; j++) {
            const float p0 = exp2f(sc[j][0] - r0), p1 = exp2f(sc[j][1] - r0);
            const float p2 = exp2f(sc[j][2] - r1), p3 = exp2f(sc[j][3] - r1);
            l0 += p0 + p1;
            l1 += p2 + p3;
            pa[j / 2][2 * (j % 2)] = gpu_pack2<C::MF16>(p0, p1);
            pa[j / 2][2 * (j % 2) + 1] = gpu_pack2<C::MF16>(p2, p3);
        }

        /* O += P V, two 8-dim n-tiles per ldmatrix. */
        const uint32_t vbase = gpu_smem_addr(vmat);
#pragma unroll
        for (int jj = 0; jj < NS; jj++) {
            if (C::FP8 && C::SHUF) { /* four 8-dim n-tiles per ldmatrix */
#pragma unroll
                for (int nq = 0; nq < D / 32; nq++) {
                    uint32_t vb[4];
                    gpu_ldmatrix_x4(vb, vbase + 16 * pdm__vword<C>(32 * nq + sr, sx + jj));
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        uint32_t b0, b1;
                        pdm__fp8x4_f16(vb[i], b0, b1);
                        gpu_mma16816<true>(o[4 * nq + i], pa[jj], b0, b1);
                    }
                }
            } else if (C::FP8) { /* two words (32 dims) per ldmatrix: n-tiles of even, odd dims */
#pragma unroll
                for (int w2 = 0; w2 < D / 32; w2++) {
                    uint32_t vb[4];
                    gpu_ldmatrix_x4_trans(vb, vbase + 16 * pdm__vword<C>(vr + 16 * jj, 2 * w2 + vx));
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        /* tokens 2t, 2t + 1 (vb[2h]) and 2t + 8, 2t + 9 (vb[2h + 1]) of dims
                         * 2g, 2g + 1: bytes (t0 d0, t0 d1, t1 d0, t1 d1) -> (t0 d0, t1 d0 | t0
                         * d1, t1 d1) */
                        const uint32_t x0 = __byte_perm(vb[2 * h], 0u, 0x3120u);
                        const uint32_t x1 = __byte_perm(vb[2 * h + 1], 0u, 0x3120u);
                        uint32_t e0, d0, e1, d1;
                        pdm__fp8x4_f16(x0, e0, d0);
                        pdm__fp8x4_f16(x1, e1, d1);
                        gpu_mma16816<true>(o[2 * (2 * w2 + h)], pa[jj], e0, e1);
                        gpu_mma16816<true>(o[2 * (2 * w2 + h) + 1], pa[jj], d0, d1);
                    }
                }
            } else {
#pragma unroll
                for (int np = 0; np < D / 16; np++) {
                    uint32_t vb[4];
                    if (C::SHUF)
                        gpu_ldmatrix_x4(vb, vbase + 16 * pdm__vword<C>(16 * np + sr, sx + 2 * jj));
                    else
                        gpu_ldmatrix_x4_trans(vb, vbase + 16 * pdm__vword<C>(vr + 16 * jj, 2 * np + vx));
                    gpu_mma16816<C::MF16>(o[2 * np], pa[jj], vb[0], vb[1]);
                    gpu_mma16816<C::MF16>(o[2 * np + 1], pa[jj], vb[2], vb[3]);
                }
            }
        }

        if (tn + 1 < n_tiles && rj < BN) {
            koff_s[t % C::STAGES][rj] = nko;
            voff_s[t % C::STAGES][rj] = nvo;
        }
    }
    gpu_cp_async_wait<0>();
    __syncthreads(); /* every warp done with the staging area: it becomes the merge area */

    float *m_w = (float *)smem;                  /* m_w: [KWARPS][BM] */
    float *l_w = m_w + KWARPS * BM;              /* l_w: [KWARPS][BM] */
    float *a_w = l_w + KWARPS * BM;              /* a_w: [KWARPS][BM][D] */
    l0 += GPU_SHFL_XOR(l0, 1);
    l0 += GPU_SHFL_XOR(l0, 2);
    l1 += GPU_SHFL_XOR(l1, 1);
    l1 += GPU_SHFL_XOR(l1, 2);
    {
        float *r0 = a_w + (kw * BM + ra) * D, *r1 = r0 + 8 * D;
        if (C::FP8 && !C::SHUF) { /* n-tiles 2w, 2w + 1: even, odd dims of dims 16 w .. */
#pragma unroll
            for (int wd = 0; wd < D / 16; wd++) {
                const float *e = o[2 * wd], *d = o[2 * wd + 1];
                *(float4 *)(r0 + 16 * wd + 4 * t4) = make_float4(e[0], d[0], e[1], d[1]);
                *(float4 *)(r1 + 16 * wd + 4 * t4) = make_float4(e[2], d[2], e[3], d[3]);
            }
        } else {
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                *(float2 *)(r0 + 8 * n + 2 * t4) = make_float2(o[n][0], o[n][1]);
                *(float2 *)(r1 + 8 * n + 2 * t4) = make_float2(o[n][2], o[n][3]);
            }
        }
        if (t4 == 0) {
            m_w[kw * BM + ra] = m0, m_w[kw * BM + rb] = m1;
            l_w[kw * BM + ra] = l0, l_w[kw * BM + rb] = l1;
        }
    }
    __syncthreads();

    /* Merge the token groups (one that saw nothing has m = -inf, l = 0, O = 0: weight 0); a
     * sum of 0 only when every logit was -inf: the empty-set convention then. A thread per row
     * first turns the groups' (m, l) into output weights and the LSE; then every output
     * element is a KWARPS-term sum, four elements at a time. */
    float *wt = a_w + KWARPS * BM * D; /* wt: [KWARPS][BM], weights of the partials */
    float *ls_s = wt + KWARPS * BM;    /* ls_s: [BM], natural-log LSE */
    if (tid < n_rows && tid < BM) {
        const int r = tid;
        float mx = -INFINITY;
#pragma unroll
        for (int k = 0; k < KWARPS; k++)
            mx = fmaxf(mx, m_w[k * BM + r]);
        const float mr = pdm__ref(mx);
        float f[KWARPS], sl = 0.0f;
#pragma unroll
        for (int k = 0; k < KWARPS; k++) {
            f[k] = exp2f(m_w[k * BM + r] - mr);
            sl += f[k] * l_w[k * BM + r];
        }
        const float mul = sl != 0.0f ? vmul / sl : 0.0f;
#pragma unroll
        for (int k = 0; k < KWARPS; k++)
            wt[k * BM + r] = f[k] * mul;
        ls_s[r] = sl != 0.0f ? (mr + log2f(sl)) * PDM__LN2 : -INFINITY;
    }
    __syncthreads();
    const int rows = n_rows < BM ? n_rows : BM;
    for (int i = tid; i < rows * D / 4; i += PDM__THREADS) {
        const int r = i / (D / 4), d = 4 * (i % (D / 4));
        const int ti = r / gv, h = jb.h0 + r % gv, vis = jb.vis0 + ti;
        const bool direct = vis <= jb.split_tokens;
        if (direct ? jb.s != 0 : (long long)jb.s * jb.split_tokens >= vis)
            continue; /* the row's keys are all in another split */
        float4 ov = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int k = 0; k < KWARPS; k++) {
            const float wk = wt[k * BM + r];
            const float4 x = *(const float4 *)(a_w + (k * BM + r) * D + d);
            ov.x += wk * x.x, ov.y += wk * x.y, ov.z += wk * x.z, ov.w += wk * x.w;
        }
        if (direct) {
            const long long tok = jb.q_tok + ti;
            const size_t o0 = ((size_t)tok * hq + h) * D + d;
            num_store_f32(QT, jb.out, o0, ov.x);
            num_store_f32(QT, jb.out, o0 + 1, ov.y);
            num_store_f32(QT, jb.out, o0 + 2, ov.z);
            num_store_f32(QT, jb.out, o0 + 3, ov.w);
            if (d == 0)
                jb.lse[(size_t)h * jb.T + tok] = ls_s[r];
        } else if (WQ == 1 && jb.part) {
            *(float4 *)(jb.part + r * D + d) = ov;
            if (d == 0)
                jb.part[PDM__ROWS * D + r] = ls_s[r];
        } else {
            const size_t row = (size_t)jb.ws_base + ((size_t)(jb.ws_tok + ti) * hq + h) * jb.n_split + jb.s;
            *(float4 *)(jb.ws_o + row * D + d) = ov;
            if (d == 0)
                jb.ws_lse[row] = ls_s[r];
        }
    }
#else
    (void)jb, (void)cache, (void)bt, (void)smem, (void)koff_s, (void)voff_s;
#endif // GPU_HAS_MMA_SYNC
}

/* ---------------------------------------------------------- host side, both launchers */
/* L<KVT, F16, D, SHUF>::run(args...) for the cache's element dtype, the query dtype (f16, else
 * bf16), the cache's head_dim (64, 128, else 256) and layout (shuffled, else nhd/hnd): the one
 * place that maps run-time shapes onto the engine's instantiations. */
template <template <int, bool, int, bool> class L, int KVT, bool F16, int D, class... A>
static int pdm__dispatch_layout(const opt_kv_cache &c, A... args)
{
    return c.layout == OPT_KV_SHUFFLED ? L<KVT, F16, D, true>::run(args...)
                                       : L<KVT, F16, D, false>::run(args...);
}

template <template <int, bool, int, bool> class L, int KVT, bool F16, class... A>
static int pdm__dispatch_d(const opt_kv_cache &c, A... args)
{
    return c.head_dim == 64    ? pdm__dispatch_layout<L, KVT, F16, 64>(c, args...)
           : c.head_dim == 128 ? pdm__dispatch_layout<L, KVT, F16, 128>(c, args...)
                               : pdm__dispatch_layout<L, KVT, F16, 256>(c, args...);
}

template <template <int, bool, int, bool> class L, class... A>
static int pdm__dispatch(const opt_kv_cache &c, int q_dtype, A... args)
{
    const bool f16 = q_dtype == OPT_F16;
    if (c.dtype == OPT_FP8E4M3)
        return f16 ? pdm__dispatch_d<L, OPT_FP8E4M3, true>(c, args...)
                   : pdm__dispatch_d<L, OPT_FP8E4M3, false>(c, args...);
    return f16 ? pdm__dispatch_d<L, OPT_F16, true>(c, args...)
               : pdm__dispatch_d<L, OPT_BF16, false>(c, args...);
}

#endif /* ATTN_PAGED_MMA_H */
