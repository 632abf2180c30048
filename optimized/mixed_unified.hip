/* mixed_unified.hip - SPEC section 7's `unified` design on the matrix cores (issue 7): one
 * attention kernel for every token of a serving step, whatever the request's kind -- varlen
 * queries over the paged cache, bottom-right causal, every key (context and new) read from the
 * cache. NVIDIA sm_80+ only, as paged_mma.h's engine it runs.
 *
 * A work item is (request, KV head, head group, query block, split). The query block's rows
 * are (token, head) pairs of one KV head's group, head fastest, so every cached K/V byte a
 * block reads serves all of the group's heads of all of its tokens:
 *   a request whose new tokens times the group size fit one MMA row tile (a decode, or a short
 *   extend of a small group) takes 16-row blocks with the four warps splitting every key tile
 *   (the decode kernel's shape, paged_decode mma);
 *   any other takes 64-row blocks, a warp per 16 rows over every key of the tile (the prefill
 *   kernel's shape).
 * Both shapes are one kernel (a block-uniform branch), so one launch serves the whole mix. The
 * keys of a query block -- up to the last row's causal limit -- are cut into splits of
 * split_tokens (a multiple of 64 chosen from the step's total key work and the SM count, at
 * least MU__MIN_SPLIT, at most PSPLIT_MAX_SPLITS per request); a row whose visible keys fit one
 * split is finished by its block, the others are merged by a combine kernel (a warp per (token,
 * head) row, SPEC section 0's merge over all the row's splits at once). Causal masking is per
 * row, on the tiles that cross some row's limit only.
 *
 * The items' prefix over the requests is computed on the device from cu_q and context_lens by
 * a one-block plan kernel (the host knows the same lengths and sizes the grid from them; no
 * host data is copied inside the timed launch). Deterministic (no atomics); not batch
 * invariant (split_tokens follows the batch).
 */
#include "paged_mma.h"
#include "block_scan.h"

enum {
    MU__SCAN = 1024,
    MU__MIN_SPLIT = 512,      /* tokens: eight tiles at least per split, as decode */
    MU__BLOCKS_PER_SM = 4,    /* about two waves of two resident blocks */
    MU__COMBINE_ROWS = 4,     /* a warp per (token, head) row */
};

/* How request (n new tokens over c cached ones) is cut, for group size gq and split S. */
struct mu__shape {
    int wq;      /* 1: 16-row blocks, 4: 64-row blocks */
    int gv;      /* heads per block (the last head group may hold fewer) */
    int n_hg;    /* head groups per KV head */
    int tpb;     /* tokens per query block */
    int n_qb;    /* query blocks */
    int n_split; /* splits of the longest query block's keys */
};

__host__ __device__ __forceinline__ int mu__n_split(int n, int c, int split_tokens)
{
    return (int)(((long long)c + n + split_tokens - 1) / split_tokens);
}

__host__ __device__ __forceinline__ mu__shape mu__shape_of(int n, int c, int gq, int split_tokens)
{
    mu__shape s;
    s.wq = (long long)n * gq <= PDM__ROWS ? 1 : 4;
    const int bm = PDM__ROWS * s.wq;
    s.gv = gq < bm ? gq : bm;
    s.n_hg = (gq + s.gv - 1) / s.gv;
    s.tpb = bm / s.gv;
    s.n_qb = (n + s.tpb - 1) / s.tpb;
    s.n_split = mu__n_split(n, c, split_tokens);
    return s;
}

/* Work items and workspace rows of one request. */
__host__ __device__ __forceinline__ long long mu__items(const mu__shape &s, int hkv)
{
    return (long long)hkv * s.n_hg * s.n_qb * s.n_split;
}

__host__ __device__ __forceinline__ long long mu__ws_rows(const mu__shape &s, int n, int hq)
{
    return s.n_split > 1 ? (long long)n * hq * s.n_split : 0;
}

/* One block: item_start[r] (r <= batch: the exclusive prefix of the requests' items, [batch]
 * the total) and ws_base[r] (the first workspace row of request r). */
__global__ void __launch_bounds__(MU__SCAN)
mixed_unified_plan_kernel(const int32_t *__restrict__ cu_q, const int32_t *__restrict__ ctx_lens,
                          int batch, int hq, int hkv, int split_tokens,
                          long long *__restrict__ item_start, long long *__restrict__ ws_base)
{
    __shared__ long long part[MU__SCAN];
    int b0, b1;
    gpu_block_share<MU__SCAN>(batch, &b0, &b1);
    const int gq = hq / hkv;
    long long items = 0, rows = 0;
    for (int r = b0; r < b1; r++) {
        const int n = cu_q[r + 1] - cu_q[r];
        const mu__shape s = mu__shape_of(n, ctx_lens[r], gq, split_tokens);
        items += mu__items(s, hkv);
        rows += mu__ws_rows(s, n, hq);
    }
    long long all_items, all_rows;
    long long ii = gpu_block_exclusive_sum<MU__SCAN>(items, part, &all_items);
    long long ir = gpu_block_exclusive_sum<MU__SCAN>(rows, part, &all_rows);
    for (int r = b0; r < b1; r++) {
        const int n = cu_q[r + 1] - cu_q[r];
        const mu__shape s = mu__shape_of(n, ctx_lens[r], gq, split_tokens);
        item_start[r] = ii, ws_base[r] = ir;
        ii += mu__items(s, hkv);
        ir += mu__ws_rows(s, n, hq);
    }
    if (threadIdx.x == 0)
        item_start[batch] = all_items;
}

/* Grid: the step's item count, PDM__THREADS threads, C::SMEM bytes of dynamic shared memory. */
template <int KVT, bool F16, int D, bool SHUF>
__global__ void __launch_bounds__(PDM__THREADS, D > 128 ? 1 : 2)
mixed_unified_kernel(const void *__restrict__ q,                /* q: [tq, hq, D] */
                     opt_kv_cache cache,
                     const int32_t *__restrict__ block_table,   /* block_table: [batch, max_blocks] */
                     const int32_t *__restrict__ cu_q,          /* cu_q: [batch + 1] */
                     const int32_t *__restrict__ ctx_lens,      /* ctx_lens: [batch] */
                     const long long *__restrict__ item_start,  /* item_start: [batch + 1] */
                     const long long *__restrict__ ws_base,     /* ws_base: [batch] */
                     void *__restrict__ out,                    /* out: [tq, hq, D] */
                     float *__restrict__ lse,                   /* lse: [hq, tq] */
                     float *__restrict__ ws_o, float *__restrict__ ws_lse,
                     int batch, int tq, int hq, int max_blocks, int split_tokens, float scale,
                     float softcap)
{
#if defined(GPU_HAS_MMA_SYNC)
    using C = pdm__cfg<KVT, F16, D, SHUF>;
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ long long koff_s[C::STAGES][C::BN], voff_s[C::STAGES][C::BN];

    const long long item = blockIdx.x;
    const int r = gpu_segment_of(item_start, batch, item);
    const int hkv = cache.heads, gq = hq / hkv;
    const int n = cu_q[r + 1] - cu_q[r], c = ctx_lens[r];
    const mu__shape sh = mu__shape_of(n, c, gq, split_tokens);
    long long loc = item - item_start[r];
    const int qb = sh.n_qb - 1 - (int)(loc % sh.n_qb); /* the longest query blocks first */
    loc /= sh.n_qb;
    const int s = (int)(loc % sh.n_split);
    loc /= sh.n_split;
    const int hg = (int)(loc % sh.n_hg), kh = (int)(loc / sh.n_hg);

    const int i0 = qb * sh.tpb, n_tok = n - i0 < sh.tpb ? n - i0 : sh.tpb;
    const int last_vis = c + i0 + n_tok; /* keys the block's last token sees */
    const long long t_begin = (long long)s * split_tokens;
    if (t_begin >= last_vis)
        return; /* every row's keys end before this split */
    pdm__job jb;
    jb.q = q, jb.out = out, jb.lse = lse, jb.ws_o = ws_o, jb.ws_lse = ws_lse, jb.part = nullptr;
    jb.q_tok = cu_q[r] + i0, jb.ws_base = ws_base[r], jb.ws_tok = i0, jb.n_tok = n_tok;
    jb.T = tq, jb.hq = hq, jb.h0 = kh * gq + hg * sh.gv, jb.kh = kh;
    jb.gv = gq - hg * sh.gv < sh.gv ? gq - hg * sh.gv : sh.gv;
    jb.t_begin = (int)t_begin;
    jb.t_end = (int)(t_begin + split_tokens < last_vis ? t_begin + split_tokens : last_vis);
    jb.vis0 = c + i0 + 1, jb.split_tokens = split_tokens, jb.s = s, jb.n_split = sh.n_split;
    jb.scale = scale, jb.softcap = softcap;
    const int32_t *bt = block_table + (size_t)r * max_blocks;
    if (sh.wq == 1)
        pdm__attend<C, 1>(jb, cache, bt, smem, koff_s, voff_s);
    else
        pdm__attend<C, 4>(jb, cache, bt, smem, koff_s, voff_s);
#else
    GPU_TRAP(); /* opt_mixed_unified_unsupported() refuses this target before any launch */
#endif // GPU_HAS_MMA_SYNC
}

/* A warp per (token, head) row whose visible keys span two or more splits: SPEC section 0's
 * merge of its ceil(vis / split_tokens) partials (psplit_merge_row). Grid: ceil(tq * hq /
 * MU__COMBINE_ROWS) blocks. */
template <int D>
__global__ void __launch_bounds__(32 * MU__COMBINE_ROWS)
mixed_unified_combine_kernel(const float *__restrict__ ws_o, const float *__restrict__ ws_lse,
                             const int32_t *__restrict__ cu_q, const int32_t *__restrict__ ctx_lens,
                             const long long *__restrict__ ws_base, void *__restrict__ out,
                             float *__restrict__ lse, int out_dtype, int batch, int tq, int hq,
                             int split_tokens)
{
    const long long row = (long long)blockIdx.x * MU__COMBINE_ROWS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= (long long)tq * hq)
        return;
    const int t = (int)(row / hq), h = (int)(row % hq);
    const int r = gpu_segment_of(cu_q, batch, t);
    const int i = t - cu_q[r], n = cu_q[r + 1] - cu_q[r], c = ctx_lens[r];
    const int vis = c + i + 1;
    if (vis <= split_tokens)
        return; /* finished by its only split */
    const int n_split = mu__n_split(n, c, split_tokens);
    const int nv = (vis + split_tokens - 1) / split_tokens;
    psplit_merge_row<D>(ws_o, ws_lse, (size_t)ws_base[r] + ((size_t)i * hq + h) * n_split, nv, lane,
                        out, out_dtype, ((size_t)t * hq + h) * D, lse + (size_t)h * tq + t);
}

/* --------------------------------------------------------------- launcher */
/* The plan: split_tokens and the sizes the host derives from the lengths. */
struct mu__plan {
    int split_tokens;
    long long items, ws_rows;
    size_t ws_bytes; /* item_start, ws_base, ws_o, ws_lse */
};

enum { MU__ALIGN = 256 };

static size_t mu__align(size_t x)
{
    return (x + MU__ALIGN - 1) / MU__ALIGN * MU__ALIGN;
}

/* sms <= 0 plans for PSPLIT_PLAN_MAX_SMS: the smallest splits, so the largest workspace any
 * device needs. */
static mu__plan mu__make_plan(const opt_mixed_args *a, const int32_t *host_ctx,
                              const int32_t *host_new, int sms)
{
    const int hkv = a->cache.heads, gq = a->hq / hkv;
    const long long sm = sms < 1 || sms > PSPLIT_PLAN_MAX_SMS ? PSPLIT_PLAN_MAX_SMS : sms;
    /* Keys all query blocks attend, one split each; the longest request. */
    long long keys = 0, longest = 1;
    for (int r = 0; r < a->batch; r++) {
        const int n = host_new[r], c = host_ctx[r];
        const mu__shape s = mu__shape_of(n, c, gq, INT32_MAX);
        for (int qb = 0; qb < s.n_qb; qb++) {
            const int i0 = qb * s.tpb, nt = n - i0 < s.tpb ? n - i0 : s.tpb;
            keys += (long long)hkv * s.n_hg * (c + i0 + nt);
        }
        longest = (long long)c + n > longest ? (long long)c + n : longest;
    }
    long long st = (keys + MU__BLOCKS_PER_SM * sm - 1) / (MU__BLOCKS_PER_SM * sm);
    const long long floor_split = (longest + PSPLIT_MAX_SPLITS - 1) / PSPLIT_MAX_SPLITS;
    st = st < MU__MIN_SPLIT ? MU__MIN_SPLIT : st;
    st = st < floor_split ? floor_split : st;
    st = (st + PDM__BN - 1) / PDM__BN * PDM__BN;
    st = st > PSPLIT_MAX_TOKENS ? PSPLIT_MAX_TOKENS / PDM__BN * PDM__BN : st;
    mu__plan p;
    p.split_tokens = (int)st;
    p.items = p.ws_rows = 0;
    for (int r = 0; r < a->batch; r++) {
        const mu__shape s = mu__shape_of(host_new[r], host_ctx[r], gq, p.split_tokens);
        p.items += mu__items(s, hkv);
        p.ws_rows += mu__ws_rows(s, host_new[r], a->hq);
    }
    p.ws_bytes = mu__align(((size_t)a->batch + 1) * sizeof(long long)) +
                 mu__align((size_t)a->batch * sizeof(long long)) +
                 mu__align((size_t)p.ws_rows * a->cache.head_dim * sizeof(float)) +
                 (size_t)p.ws_rows * sizeof(float);
    return p;
}

template <int KVT, bool F16, int D, bool SHUF>
struct mu__launch {
    static int run(const opt_mixed_args *a, const mu__plan *p, const long long *item_start,
                   const long long *ws_base, float *ws_o, float *ws_lse, hipStream_t stream)
    {
        using C = pdm__cfg<KVT, F16, D, SHUF>;
        static int resident[64];
        int res = 0;
        const int rc = gpu_resident_blocks((const void *)mixed_unified_kernel<KVT, F16, D, SHUF>,
                                           PDM__THREADS, C::SMEM, resident, &res);
        if (rc)
            return rc;
        mixed_unified_kernel<KVT, F16, D, SHUF><<<(unsigned)p->items, PDM__THREADS, C::SMEM, stream>>>(
            a->q, a->cache, a->block_table, a->cu_q, a->context_lens, item_start, ws_base, a->out,
            a->lse, ws_o, ws_lse, a->batch, a->tq, a->hq, a->max_blocks, p->split_tokens, a->scale,
            a->softcap);
        GPU_CHECK(hipGetLastError());
        if (p->ws_rows == 0)
            return OPT_OK;
        const unsigned cgrid =
            (unsigned)(((long long)a->tq * a->hq + MU__COMBINE_ROWS - 1) / MU__COMBINE_ROWS);
        mixed_unified_combine_kernel<D><<<cgrid, 32 * MU__COMBINE_ROWS, 0, stream>>>(
            ws_o, ws_lse, a->cu_q, a->context_lens, ws_base, a->out, a->lse, a->dtype, a->batch,
            a->tq, a->hq, p->split_tokens);
        GPU_CHECK(hipGetLastError());
        return OPT_OK;
    }
};

extern "C" const char *opt_mixed_unified_unsupported(const opt_mixed_args *a, int cc_major)
{
    const char *why = opt_paged_decode_mma_unsupported(a->cache.head_dim, a->dtype, a->cache.dtype,
                                                       cc_major);
    if (why)
        return why; /* the same engine */
    if ((long long)a->tq * a->hq > INT32_MAX)
        return "unified indexes (token, head) rows in int: tokens * heads_q up to 2^31 - 1";
    return NULL;
}

extern "C" size_t opt_mixed_unified_workspace(const opt_mixed_args *a, const int32_t *host_ctx,
                                              const int32_t *host_new)
{
    if (!a || a->batch <= 0 || a->hq <= 0 || a->cache.heads <= 0 || a->hq % a->cache.heads != 0 ||
        !host_ctx || !host_new)
        return 0;
    return mu__make_plan(a, host_ctx, host_new, 0).ws_bytes;
}

/* The lengths on the device (cu_q, context_lens) must equal host_ctx and host_new (the host's
 * copy, for the sizes); context + new tokens inside the block table and PSPLIT_MAX_TOKENS. */
extern "C" int opt_mixed_unified(const opt_mixed_args *a, const int32_t *host_ctx,
                                 const int32_t *host_new, void *workspace, size_t workspace_bytes,
                                 void *stream)
{
    if (!a || a->batch < 0 || !host_ctx || !host_new)
        return OPT_EINVAL;
    /* paged_decode's contract checks, on the same fields */
    opt_paged_decode_args pd = {};
    pd.batch = a->batch, pd.hq = a->hq, pd.dtype = a->dtype, pd.q = a->q, pd.cache = a->cache;
    pd.block_table = a->block_table, pd.max_blocks = a->max_blocks, pd.seq_lens = a->context_lens;
    pd.scale = a->scale, pd.softcap = a->softcap, pd.out = a->out, pd.lse = a->lse;
    if (psplit_check_args(&pd) != OPT_OK || (a->batch > 0 && !a->cu_q))
        return OPT_EINVAL;
    const int d = a->cache.head_dim;
    if (d != 64 && d != 128 && d != 256)
        return OPT_EINVAL;
    long long tq = 0;
    for (int r = 0; r < a->batch; r++) {
        if (host_new[r] < 1 || host_ctx[r] < 0 ||
            (long long)host_ctx[r] + host_new[r] > (long long)a->max_blocks * a->cache.block_size)
            return OPT_EINVAL;
        tq += host_new[r];
    }
    if (tq != a->tq || tq * a->hq > INT32_MAX)
        return OPT_EINVAL;
    if (a->batch == 0)
        return OPT_OK;
#if !defined(GPU_VENDOR_NVIDIA)
    return OPT_EINVAL; /* opt_mixed_unified_unsupported() says why */
#else
    int sms = 0;
    int rc = psplit_sm_count(&sms);
    if (rc)
        return rc;
    const mu__plan p = mu__make_plan(a, host_ctx, host_new, sms);
    if (p.ws_bytes > workspace_bytes || !workspace || p.items > INT32_MAX)
        return OPT_EINVAL;
    uint8_t *w = (uint8_t *)workspace;
    long long *item_start = (long long *)w;
    w += mu__align(((size_t)a->batch + 1) * sizeof(long long));
    long long *ws_base = (long long *)w;
    w += mu__align((size_t)a->batch * sizeof(long long));
    float *ws_o = (float *)w;
    float *ws_lse = (float *)(w + mu__align((size_t)p.ws_rows * d * sizeof(float)));
    const hipStream_t st = (hipStream_t)stream;
    mixed_unified_plan_kernel<<<1, MU__SCAN, 0, st>>>(a->cu_q, a->context_lens, a->batch, a->hq,
                                                      a->cache.heads, p.split_tokens, item_start,
                                                      ws_base);
    GPU_CHECK(hipGetLastError());
    return pdm__dispatch<mu__launch>(a->cache, a->dtype, a, &p, (const long long *)item_start,
                                     (const long long *)ws_base, ws_o, ws_lse, st);
#endif
}
