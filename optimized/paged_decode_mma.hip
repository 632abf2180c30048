/* paged_decode_mma.hip - SPEC section 5 on the GPU, the `mma` variant: flash-decoding on the
 * matrix cores. NVIDIA sm_80+ only (mma.sync, ldmatrix, cp.async; gpu_port.h GPU_HAS_MMA_SYNC);
 * elsewhere the kernel traps and opt_paged_decode_mma_unsupported() says so before any launch.
 *
 * One block of 4 warps per (sequence, KV head, split, group of up to 16 of the KV head's query
 * heads) runs paged_mma.h's engine with one MMA row tile (WQ = 1): the rows are the group's
 * heads, the four warps take 16 tokens each of every 64-token tile (fp8 caches: 32 of every
 * 128-token tile, pdm__dcfg) and merge at the end. The
 * split plan, the workspace and the LSE combine are paged_split.h's, shared with split_kv.
 * Where the device and the loaded image have thread-block clusters (Hopper) and the plan has
 * 2 .. 8 splits, a sequence's splits run as one cluster: each keeps its partial in shared
 * memory and the cluster's warps merge the rows through distributed shared memory with the
 * combine kernel's arithmetic (same bits), which saves the workspace round trip and the second
 * launch (a few microseconds of a ~70 us decode step; docs/CHOICES.md).
 * Empty sequences: out = 0, lse = -inf.
 */
#include "paged_mma.h"

/* The engine's shape for decode: fp8 caches at head_dim <= 128 take 128-token tiles (two
 * 16-token sub-tiles a warp: pdm__cfg's NSUB), which stage as many bytes as a 16-bit cache's
 * 64-token tiles; the rest 64-token tiles. */
template <int KVT, bool F16, int D, bool SHUF>
using pdm__dcfg = pdm__cfg<KVT, F16, D, SHUF, KVT == OPT_FP8E4M3 && D <= 128 ? 2 : 1>;

/* Grid: batch * hkv * n_hg * n_split blocks (split fastest), PDM__THREADS threads, C::SMEM
 * bytes of dynamic shared memory. cluster != 0: launched in clusters of n_split blocks (one
 * (sequence, KV head, head group), rank = split; GPU_HAS_CLUSTER): each split keeps its
 * partial in its shared memory and the cluster merges them (no workspace, no combine). */
template <int KVT, bool F16, int D, bool SHUF>
__global__ void __launch_bounds__(PDM__THREADS, (pdm__dcfg<KVT, F16, D, SHUF>::MIN_BLOCKS))
paged_decode_mma_kernel(const void *__restrict__ q,               /* q: [batch, hq, D] */
                        opt_kv_cache cache,
                        const int32_t *__restrict__ block_table,  /* block_table: [batch, max_blocks] */
                        const int32_t *__restrict__ seq_lens,     /* seq_lens: [batch] */
                        void *__restrict__ out,                   /* out: [batch, hq, D] */
                        float *__restrict__ lse,                  /* lse: [hq, batch] */
                        float *__restrict__ ws_o,                 /* ws_o: [batch, hq, n_split, D] */
                        float *__restrict__ ws_lse,               /* ws_lse: [batch, hq, n_split] */
                        int batch, int hq, int max_blocks, int n_hg, int n_split,
                        int split_tokens, float scale, float softcap, int cluster)
{
#if defined(GPU_HAS_MMA_SYNC)
    using C = pdm__dcfg<KVT, F16, D, SHUF>;
    constexpr int QT = F16 ? OPT_F16 : OPT_BF16;
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ long long koff_s[C::STAGES][C::BN], voff_s[C::STAGES][C::BN];

    const int hkv = cache.heads, gq = hq / hkv, tid = threadIdx.x;
    long long bid = blockIdx.x;
    const int s = (int)(bid % n_split);
    bid /= n_split;
    const int hg = (int)(bid % n_hg);
    bid /= n_hg;
    const int kh = (int)(bid % hkv), b = (int)(bid / hkv);
    const int h0 = kh * gq + hg * PDM__ROWS;
    const int gv = gq - hg * PDM__ROWS < PDM__ROWS ? gq - hg * PDM__ROWS : PDM__ROWS;
    const int len = seq_lens[b];
    const int n_valid = len <= 0 ? 0 : (int)(((long long)len + split_tokens - 1) / split_tokens);
    float *part = (float *)(smem + C::MERGE); /* the cluster merge's partial: pdm__job::part */

    if (n_valid == 0) { /* empty attended set: out = 0, lse = -inf, from split 0 */
        for (int i = tid; s == 0 && i < gv * D; i += PDM__THREADS) {
            num_store_f32(QT, out, ((size_t)b * hq + h0 + i / D) * D + i % D, 0.0f);
            if (i % D == 0)
                lse[(size_t)(h0 + i / D) * batch + b] = -INFINITY;
        }
    } else if (s < n_valid) {
        pdm__job jb;
        jb.q = q, jb.out = out, jb.lse = lse, jb.ws_o = ws_o, jb.ws_lse = ws_lse;
        jb.part = cluster ? part : nullptr;
        jb.q_tok = b, jb.ws_base = (long long)b * hq * n_split, jb.ws_tok = 0, jb.n_tok = 1;
        jb.T = batch, jb.hq = hq, jb.h0 = h0, jb.gv = gv, jb.kh = kh;
        jb.t_begin = (int)((long long)s * split_tokens);
        jb.t_end = (int)((long long)len < (long long)jb.t_begin + split_tokens
                             ? (long long)len
                             : (long long)jb.t_begin + split_tokens);
        jb.vis0 = len, jb.split_tokens = split_tokens, jb.s = s, jb.n_split = n_split;
        jb.scale = scale, jb.softcap = softcap;
        pdm__attend<C, 1>(jb, cache, block_table + (size_t)b * max_blocks, smem, koff_s, voff_s);
    }
#if defined(GPU_HAS_CLUSTER)
    if (cluster) {
        /* Every block of the cluster passes both barriers (those past the sequence's splits
         * too). The rows are dealt round the cluster's warps; a warp merges its row's n_valid
         * partials from their blocks' shared memory, as the combine kernel would from the
         * workspace (psplit_merge_row_at: the same arithmetic). One split: its block wrote
         * the row already. */
        gpu_cluster_sync(); /* every partial written */
        if (n_valid >= 2) {
            const int warp = tid / 32, lane = tid % 32;
            for (int r = s * PDM__WARPS + warp; r < gv; r += n_split * PDM__WARPS) {
                const int h = h0 + r;
                psplit_merge_row_at<D>(
                    [&](int sp) { return *gpu_cluster_map(part + PDM__ROWS * D + r, (unsigned)sp); },
                    [&](int sp) { return gpu_cluster_map(part + r * D, (unsigned)sp); }, n_valid, lane,
                    out, QT, ((size_t)b * hq + h) * D, lse + (size_t)h * batch + b);
            }
        }
        gpu_cluster_sync(); /* no block leaves while its partial may still be read */
    }
#else
    (void)cluster; /* the launcher asks gpu_cluster_ok() first: never set for this image */
#endif // GPU_HAS_CLUSTER
#else
    GPU_TRAP(); /* opt_paged_decode_mma_unsupported() refuses this target before any launch */
#endif // GPU_HAS_MMA_SYNC
}

/* --------------------------------------------------------------- launcher */
static int pdm__clusters_on = 1;   /* opt_paged_decode_mma_clusters */
static int pdm__clusters_used = 0; /* opt_paged_decode_mma_used_clusters */

/* The split plan. Blocks run in waves of `resident` blocks per SM (the kernel's occupancy,
 * asked of the runtime), of which the plan counts at most PDM__PLAN_BLOCKS; a split costs its
 * tiles plus about PDM__SPLIT_COST tiles of fixed work (the ring's fill, the warps' merge,
 * its share of the combine). The split count is the one of least waves x (tiles per split +
 * fixed cost), the fewest on a tie: a batch that fills the device once with whole sequences
 * takes no split, a small one as many as fill a wave.
 * Why a cap: the decode streams memory, and two blocks an SM already keep enough copies in
 * flight to saturate it; a third resident block adds no bandwidth, so counting it as a slot
 * made the plan split sequences to fill slots that bring nothing -- each split paying a ring
 * fill, a merge and the combine. On an H100, fp8 GQA 1-8 (256 sequence x KV head pairs, 3
 * blocks an SM resident) planned 3 splits and read 76-80% of the bandwidth, unsplit 81-86%;
 * fp8 GQA 16 (128 pairs) 3 splits 68%, 2 splits 72% (docs/CHOICES.md).
 * A split is a whole number of the kernel's tiles (bn tokens: 64, 128 for fp8), so that only a
 * sequence's last tile is partial.
 * resident <= 0 (workspace sizing, no device known): the most splits any device may take;
 * with bn = PDM__BN, the smallest tile, that is the most any launch's plan has. */
enum { PDM__SPLIT_COST = 4, PDM__PLAN_BLOCKS = 2 };

static psplit_plan pdm__plan(int batch, int hq, int hkv, int head_dim, long long max_tokens, int sms,
                             int resident, int bn)
{
    psplit_plan p = psplit_make_plan(batch, hq, hkv, head_dim, max_tokens, sms, PDM__ROWS,
                                     PDM__BLOCKS_PER_SM, PDM__MIN_SPLIT, PDM__BN);
    const long long mt = max_tokens < 1 ? 1 : max_tokens > PSPLIT_MAX_TOKENS ? PSPLIT_MAX_TOKENS : max_tokens;
    long long cap = mt / PDM__MIN_SPLIT;
    cap = cap < 1 ? 1 : cap > PSPLIT_MAX_SPLITS ? PSPLIT_MAX_SPLITS : cap;
    long long n = cap;
    if (resident > 0 && sms > 0) {
        const long long slots = (long long)sms * (resident < PDM__PLAN_BLOCKS ? resident : PDM__PLAN_BLOCKS),
                        pairs = (long long)batch * hkv * p.n_hg;
        const long long tiles = (mt + PDM__BN - 1) / PDM__BN;
        long long best = -1;
        for (long long k = 1; k <= cap; k++) {
            const long long cost = (pairs * k + slots - 1) / slots * ((tiles + k - 1) / k + PDM__SPLIT_COST);
            if (best < 0 || cost < best)
                best = cost, n = k;
        }
    }
    long long st = (mt + n - 1) / n;
    st = (st + bn - 1) / bn * bn;
    p.split_tokens = (int)st;
    p.n_split = (int)((mt + st - 1) / st);
    p.ws_bytes = p.n_split > 1 ? (size_t)batch * (size_t)hq * (size_t)p.n_split *
                                     ((size_t)head_dim + 1) * sizeof(float)
                               : 0;
    return p;
}

template <int KVT, bool F16, int D, bool SHUF>
struct pdm__launch {
    static int run(const opt_paged_decode_args *a, void *workspace, size_t workspace_bytes, int sms,
                   hipStream_t stream)
    {
        using C = pdm__dcfg<KVT, F16, D, SHUF>;
        static int resident[64];
        int res = 0;
        auto kern = paged_decode_mma_kernel<KVT, F16, D, SHUF>;
        const int rc = gpu_resident_blocks((const void *)kern, PDM__THREADS, C::SMEM, resident, &res);
        if (rc)
            return rc;
        const opt_kv_cache *c = &a->cache;
        const psplit_plan p = pdm__plan(a->batch, a->hq, c->heads, D,
                                        (long long)a->max_blocks * c->block_size, sms, res, C::BN);
        if (p.ws_bytes > workspace_bytes || (p.ws_bytes && !workspace))
            return OPT_EINVAL;
        const long long blocks = (long long)a->batch * c->heads * p.n_hg * p.n_split;
        if (blocks > INT32_MAX || (long long)a->batch * a->hq > INT32_MAX)
            return OPT_EINVAL;
        float *ws_o = (float *)workspace;
        float *ws_lse = ws_o ? ws_o + (size_t)a->batch * a->hq * p.n_split * D : NULL;
        /* 2 .. 8 splits (8: the portable cluster size) merge inside their cluster where the
         * device and this image have clusters, clusters cost no resident blocks and the grid
         * is one wave; else through the workspace and the combine. A cluster's blocks wait
         * for each other at the merge: in a grid of several waves that idles slots the next
         * blocks could use; and 3-block clusters of the fp8 kernel, which fit 372 of its 396
         * blocks on an H200, ran 7-16 points of read bandwidth slower there. */
        static int cl_cache[64 * 8];
        bool cl = false;
        if (pdm__clusters_on && blocks <= (long long)sms * res) {
            const int rc2 = gpu_cluster_ok((const void *)kern, PDM__THREADS, C::SMEM, p.n_split, res,
                                           cl_cache, &cl);
            if (rc2)
                return rc2;
        }
        pdm__clusters_used = cl;
        GPU_CHECK(gpu_launch(kern, (unsigned)blocks, PDM__THREADS, (size_t)C::SMEM, stream,
                             cl ? (unsigned)p.n_split : 1u, a->q, a->cache, a->block_table,
                             a->seq_lens, a->out, a->lse, ws_o, ws_lse, a->batch, a->hq,
                             a->max_blocks, p.n_hg, p.n_split, p.split_tokens, a->scale,
                             a->softcap, cl ? 1 : 0));
        if (cl)
            return OPT_OK; /* merged in the clusters */
        return psplit_combine(p, ws_o, ws_lse, a->seq_lens, a->out, a->lse, a->dtype, a->batch,
                              a->hq, D, stream);
    }
};

extern "C" const char *opt_paged_decode_mma_unsupported(int head_dim, int q_dtype, int kv_dtype,
                                                        int cc_major)
{
#if defined(GPU_VENDOR_NVIDIA)
    if (cc_major < 8)
        return "mma is written with mma.sync, ldmatrix and cp.async: NVIDIA sm_80 or newer";
    if (q_dtype != OPT_BF16 && q_dtype != OPT_F16)
        return "mma multiplies bf16 or f16 queries on the matrix cores";
    if (kv_dtype != q_dtype && kv_dtype != OPT_FP8E4M3)
        return "mma reads a cache of the query dtype or fp8e4m3";
    if (head_dim != 64 && head_dim != 128 && head_dim != 256)
        return "mma has tile shapes for head_dim 64, 128 and 256";
    return NULL;
#else
    (void)head_dim, (void)q_dtype, (void)kv_dtype, (void)cc_major;
    return "mma is written with NVIDIA's mma.sync, ldmatrix and cp.async (split_kv is the "
           "portable variant)";
#endif
}

extern "C" int opt_paged_decode_mma_clusters(int on)
{
    const int was = pdm__clusters_on;
    if (on >= 0)
        pdm__clusters_on = on != 0;
    return was;
}

extern "C" int opt_paged_decode_mma_used_clusters(void)
{
    return pdm__clusters_used;
}

extern "C" size_t opt_paged_decode_mma_workspace(int batch, int hq, int hkv, int head_dim,
                                                 int max_blocks, int block_size)
{
    if (batch <= 0 || hq <= 0 || hkv <= 0 || hq % hkv != 0 || head_dim <= 0)
        return 0;
    return pdm__plan(batch, hq, hkv, head_dim, (long long)max_blocks * block_size, 0, 0, PDM__BN).ws_bytes;
}

/* seq_lens[b] <= max_blocks * block_size and the block-table entries they use inside the pool
 * (SPEC section 5): they live on the device, so the launcher cannot check that. */
extern "C" int opt_paged_decode_mma(const opt_paged_decode_args *a, void *workspace,
                                    size_t workspace_bytes, void *stream)
{
    pdm__clusters_used = 0;
    if (psplit_check_args(a) != OPT_OK)
        return OPT_EINVAL;
    const opt_kv_cache *c = &a->cache;
    if (c->head_dim != 64 && c->head_dim != 128 && c->head_dim != 256)
        return OPT_EINVAL;
    if (a->batch == 0)
        return OPT_OK;
#if !defined(GPU_VENDOR_NVIDIA)
    return OPT_EINVAL; /* opt_paged_decode_mma_unsupported() says why */
#else
    int sms = 0;
    const int rc = psplit_sm_count(&sms);
    if (rc)
        return rc;
    return pdm__dispatch<pdm__launch>(*c, a->dtype, a, workspace, workspace_bytes, sms,
                                      (hipStream_t)stream);
#endif
}
