/* mha_common.h - what mha_varlen's matrix-core variants (mma, wgmma) share: the varlen
 * query-tile schedule (which sequence and rows a block's query tile covers, which keys it may
 * see) and the softmax's exponential, so both round at the same points.
 *
 * A prep kernel (mha_tiles_prefix, defined in mha_mma.hip) turns cu_seqlens_q into the
 * exclusive prefix of query tiles per sequence (ts [batch + 1] ints of workspace); a block
 * binary-searches its tile (mha_tile_find). Within a sequence tiles run last-first, so the
 * causal tiles with the most keys start earliest and the light ones fill the tail; the grid puts
 * the head on x, the fastest (mha_grid_tiles, mha_block_of), so that holds across the heads too.
 */
#ifndef ATTN_MHA_COMMON_H
#define ATTN_MHA_COMMON_H

#include "block_scan.h"
#include "gpu_port.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

/* Launch the one-block prep kernel on `stream`: ts[b] = query tiles of bm rows in sequences
 * before b, ts[batch] = all tiles. OPT_OK or OPT_EGPU. */
int mha_tiles_prefix(const int32_t *cu_q, int batch, int bm, int32_t *ts, hipStream_t stream);

/* The launchers' tile prefix for a: mha_tiles_prefix, unless a->tiles_ready says a previous
 * call of the same launcher already left it in ts. */
static inline int mha_tiles_for(const opt_varlen_args *a, int bm, int32_t *ts, hipStream_t stream)
{
    return a->tiles_ready ? OPT_OK : mha_tiles_prefix(a->cu_q, a->batch, bm, ts, stream);
}

/* The argument checks the launchers share: OPT_OK, or OPT_EINVAL. dims_ok: (dqk, dv) is a
 * shape the variant is built for; merges: it merges into merge_o / merge_lse (both or neither
 * given), else neither may be. With tokens, every pointer and the tile-prefix workspace
 * (opt_mha_varlen_mma_workspace bytes) must be there. */
static inline int mha_check_args(const opt_varlen_args *a, bool dims_ok, bool merges,
                                 const void *workspace, size_t workspace_bytes)
{
    if (a && (merges ? !a->merge_o != !a->merge_lse : a->merge_o || a->merge_lse))
        return OPT_EINVAL;
    if (!a || a->batch < 0 || a->tq < 0 || (a->tq > 0 && a->batch == 0))
        return OPT_EINVAL;
    if (a->hq <= 0 || a->hkv <= 0 || a->hq % a->hkv != 0 || a->hq > 65535)
        return OPT_EINVAL;
    if (!dims_ok || (a->dtype != OPT_BF16 && a->dtype != OPT_F16))
        return OPT_EINVAL;
    if (a->window_left < -1 || !(a->softcap >= 0.0f && a->softcap <= FLT_MAX) ||
        !(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->tq > 0 && (!a->q || !a->k || !a->v || !a->cu_q || !a->cu_k || !a->out || !a->lse ||
                      !workspace || workspace_bytes < opt_mha_varlen_mma_workspace(a->batch)))
        return OPT_EINVAL;
    return OPT_OK;
}

/* The launch grid of the matrix-core variants: one block per (query tile, head), (hq, tiles)
 * with the head on x, the fastest -- block (h, x) takes tile x (mha_tile_find's order) of head
 * h (mha_block_of) -- so every head's tile x is dispatched before any head's tile x + 1, and the
 * causal tiles with the most keys start first across the heads as well. (With the tile on x and
 * the head on y, blocks went out head by head: the last head's heaviest tiles started last.)
 * Returns the tile count, an upper bound (tiles past ts[batch] exit), or 0 past grid.y's 65535
 * (8M query tokens at 128-row tiles). */
static inline long long mha_grid_tiles(const opt_varlen_args *a, int bm)
{
    const long long tiles = ((long long)a->tq + bm - 1) / bm + a->batch;
    return tiles <= 65535 ? tiles : 0;
}
#if defined(__HIPCC__) || defined(__CUDACC__)
static __device__ __forceinline__ void mha_block_of(int *x, int *h)
{
    *x = (int)blockIdx.y;
    *h = (int)blockIdx.x;
}
#endif

/* One block's query tile, sequence-local rows r0 .. r0 + rows - 1 of sequence b. */
struct mha_tile {
    int b, q0, k0, lq, lk; /* sequence, its first query and key token, its lengths */
    int r0, rows;
    long long shift;       /* lk - lq: the bottom-right causal diagonal */
    long long jlo, jhi;    /* keys some row of the tile may see (empty when jhi < jlo) */
    long long all_lo, all_hi; /* keys every row of the tile sees */
};

/* Block x's tile of bm rows (false: x is past the last tile). Key bounds per SPEC 4: query i
 * sees j <= i + shift when causal, j >= i + shift - window_left when window_left >= 0. */
static __device__ __forceinline__ bool mha_tile_find(const int32_t *__restrict__ ts,
                                                     const int32_t *__restrict__ cu_q,
                                                     const int32_t *__restrict__ cu_k, int batch,
                                                     int bm, int x, int causal, int window_left,
                                                     mha_tile *t)
{
    if (x >= ts[batch])
        return false;
    const int lo = gpu_segment_of(ts, batch, x);
    t->b = lo;
    t->q0 = cu_q[lo], t->k0 = cu_k[lo];
    t->lq = cu_q[lo + 1] - t->q0, t->lk = cu_k[lo + 1] - t->k0;
    t->r0 = ((t->lq + bm - 1) / bm - 1 - (x - ts[lo])) * bm; /* last tile first */
    t->rows = t->lq - t->r0 < bm ? t->lq - t->r0 : bm;

    /* Key range of the tile (union over its rows) and the range every row sees in full. */
    t->shift = (long long)t->lk - t->lq;
    const long long d_first = t->r0 + t->shift, d_last = t->r0 + t->rows - 1 + t->shift;
    t->jlo = 0, t->jhi = t->lk - 1, t->all_lo = 0, t->all_hi = t->lk - 1;
    if (window_left >= 0) {
        t->jlo = d_first - window_left > 0 ? d_first - window_left : 0;
        t->all_lo = d_last - window_left;
    }
    if (causal) {
        t->jhi = d_last < t->jhi ? d_last : t->jhi;
        t->all_hi = d_first < t->all_hi ? d_first : t->all_hi;
    }
    return true;
}

/* Visible keys [*lo, *hi] of sequence-local query row r (in [0, lk] and [-1, lk - 1]); a
 * padding row (r >= lq) sees nothing (*hi = -1) and is never written. */
static __device__ __forceinline__ void mha_row_bounds(const mha_tile *t, long long r, int causal,
                                                      int window_left, int *lo, int *hi)
{
    const long long d = r + t->shift;
    const long long rlo = window_left >= 0 && d - window_left > 0 ? d - window_left : 0;
    *lo = (int)(rlo < t->lk ? rlo : t->lk);
    *hi = (int)(causal && d < t->lk - 1 ? (d < -1 ? -1 : d) : t->lk - 1);
    if (r >= t->lq)
        *hi = -1;
}

#if defined(GPU_HAS_MMA_SYNC)
/* 2^x for x <= 0 (softmax weights): the MUFU instruction; results below 2^-126 flush to 0
 * (measured on the H200: 8K causal d128 2.36 -> 2.24 ms against exp2f; -DMM_EXACT_EXP restores
 * exp2f). */
static __device__ __forceinline__ float mha_exp2(float x)
{
#if !defined(MM_EXACT_EXP)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
#else
    return exp2f(x);
#endif // MM_EXACT_EXP
}
#endif // GPU_HAS_MMA_SYNC

#endif /* ATTN_MHA_COMMON_H */
