/* extend_chunked.hip - SPEC section 6's algorithm on the GPU (issue 6), composed from the
 * project's own kernels in one stream:
 *   1. causal attention of the new queries over the new keys: mha_varlen `mma`
 *      (cu_seqlens_k = cu_seqlens_q) -> (o, lse);
 *   2. the contexts laid end to end (request 0's tokens, then request 1's, ...; the
 *      reference's ref_extend_chunked plan, docs/CHOICES.md) and cut into chunks of at most
 *      chunk_tokens tokens; per chunk: gather_cache (`vec` where the layout allows, else
 *      `simple`) into standard [rows, heads, dim] K and V, dequantizing fp8; non-causal
 *      `mma` attention of every new query over its request's part of the chunk (requests
 *      without one get out = 0, lse = -inf); merge_states `vec` into (o, lse), the last merge
 *      writing the outputs.
 * Partial outputs are stored in the case dtype and LSEs in f32, as vLLM's chunked prefill does
 * and as the reference's emulated candidate does. One small kernel computes every chunk's
 * per-request start and output offsets from the device context_lens, so no host data enters
 * the timed launch; the host only needs the context lengths to size the plan (chunk count and
 * rows), which it has before any launch.
 */
#include "gpu_port.h"
#include "block_scan.h"

#include <float.h>
#include <limits.h>
#include <stdint.h>

enum { XC_SCAN = 1024, XC_ALIGN = 256 };

/* Chunk c (block c) covers stream positions [c * chunk, (c + 1) * chunk) of the contexts laid
 * end to end; request b's part starts at starts[c][b] tokens into its context and lands at
 * rows cu[c][b] .. cu[c][b + 1] of the chunk's K and V. meta: [chunks][2 * batch + 1] ints. */
__global__ void __launch_bounds__(XC_SCAN)
extend_chunk_plan_kernel(const int32_t *__restrict__ context_lens, int batch, long long chunk,
                         int32_t *__restrict__ meta)
{
    __shared__ long long part[XC_SCAN];
    int32_t *starts = meta + (size_t)blockIdx.x * (2 * batch + 1), *cu = starts + batch;
    const long long c0 = (long long)blockIdx.x * chunk, c1 = c0 + chunk;
    int b0, b1;
    gpu_block_share<XC_SCAN>(batch, &b0, &b1);
    long long ctx = 0, total;
    for (int b = b0; b < b1; b++)
        ctx += context_lens[b];
    const long long pos0 = gpu_block_exclusive_sum<XC_SCAN>(ctx, part, &total); /* b0's start */
    long long pos = pos0, rows = 0;
    for (int b = b0; b < b1; b++) { /* request b's context is stream [pos, pos + ctx_b) */
        const long long end = pos + context_lens[b];
        const long long lo = pos > c0 ? pos : c0, hi = end < c1 ? end : c1;
        starts[b] = (int32_t)(hi > lo ? lo - pos : 0);
        rows += hi > lo ? hi - lo : 0;
        pos = end;
    }
    long long out = gpu_block_exclusive_sum<XC_SCAN>(rows, part, &total);
    pos = pos0;
    for (int b = b0; b < b1; b++) {
        const long long end = pos + context_lens[b];
        const long long lo = pos > c0 ? pos : c0, hi = end < c1 ? end : c1;
        cu[b] = (int32_t)out;
        out += hi > lo ? hi - lo : 0;
        pos = end;
    }
    if (threadIdx.x == 0)
        cu[batch] = (int32_t)total;
}

extern "C" int opt_context_chunk_plan(const int32_t *context_lens, int batch, int chunk_tokens,
                                     int chunks, int32_t *meta, void *stream)
{
    if (batch < 0 || chunk_tokens < 1 || chunks < 0 || (chunks > 0 && (!context_lens || !meta)))
        return OPT_EINVAL;
    if (chunks == 0 || batch == 0)
        return OPT_OK;
    extend_chunk_plan_kernel<<<(unsigned)chunks, XC_SCAN, 0, (hipStream_t)stream>>>(
        context_lens, batch, chunk_tokens, meta);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* ------------------------------------------------------------------ the plan */
typedef struct xc__plan {
    long long total_ctx;
    int chunks, max_rows;
    size_t off_meta, off_ts, off_k, off_v, off_oc, off_lc, off_oa, off_la, off_ob, off_lb, bytes;
} xc__plan;

static size_t xc__up(size_t n)
{
    return (n + XC_ALIGN - 1) / XC_ALIGN * XC_ALIGN;
}

static int xc__esize(int dtype)
{
    return dtype == OPT_F32 ? 4 : dtype == OPT_FP8E4M3 ? 1 : 2;
}

static xc__plan xc__make_plan(const opt_extend_args *a, const int32_t *host_ctx, int chunk_tokens)
{
    xc__plan p = {};
    for (int b = 0; b < a->batch; b++)
        p.total_ctx += host_ctx[b] > 0 ? host_ctx[b] : 0;
    const long long chunks = (p.total_ctx + chunk_tokens - 1) / chunk_tokens;
    if (chunks > INT_MAX) { /* no such plan: the launcher refuses it, no workspace is sized */
        p.chunks = -1;
        return p;
    }
    p.chunks = (int)chunks;
    p.max_rows = (int)(p.total_ctx < chunk_tokens ? p.total_ctx : chunk_tokens);
    const size_t es = (size_t)xc__esize(a->dtype);
    const size_t kv = (size_t)p.max_rows * a->cache.heads * a->cache.head_dim * es;
    const size_t o = (size_t)a->tq * a->hq * a->cache.head_dim * es, l = (size_t)a->tq * a->hq * 4;
    size_t at = 0;
    p.off_meta = at, at += xc__up((size_t)p.chunks * (2 * a->batch + 1) * 4);
    p.off_ts = at, at += xc__up(opt_mha_varlen_mma_workspace(a->batch));
    p.off_k = at, at += xc__up(kv);
    p.off_v = at, at += xc__up(kv);
    p.off_oc = at, at += xc__up(o);
    p.off_lc = at, at += xc__up(l);
    p.off_oa = at, at += xc__up(o);
    p.off_la = at, at += xc__up(l);
    p.off_ob = at, at += xc__up(o);
    p.off_lb = at, at += xc__up(l);
    p.bytes = at;
    return p;
}

extern "C" int opt_chunk_attend_merge(opt_varlen_args *ch, int matrix, void *ts, size_t ts_bytes,
                                      const void *o_acc, const float *l_acc, void *oc, float *lc,
                                      void *mo, float *ml, void *stream)
{
    int fused = 0, rc = opt_mha_varlen_matrix_merges(ch, matrix, &fused);
    if (rc != OPT_OK)
        return rc;
    ch->tiles_ready = 1; /* the same cu_q as the new tokens' attention */
    if (fused) {
        ch->merge_o = o_acc, ch->merge_lse = l_acc, ch->out = mo, ch->lse = ml;
        return opt_mha_varlen_matrix(ch, matrix, ts, ts_bytes, stream);
    }
    ch->out = oc, ch->lse = lc;
    if ((rc = opt_mha_varlen_matrix(ch, matrix, ts, ts_bytes, stream)) != OPT_OK)
        return rc;
    return opt_merge_states_vec(ch->tq, ch->hq, ch->dv, ch->dtype, o_acc, oc, l_acc, lc, mo, ml,
                                stream);
}

static opt_varlen_args xc__varlen(const opt_extend_args *a)
{
    opt_varlen_args v = {};
    v.batch = a->batch, v.tq = a->tq, v.hq = a->hq, v.hkv = a->cache.heads;
    v.dqk = v.dv = a->cache.head_dim, v.dtype = a->dtype, v.q = a->q, v.cu_q = a->cu_q;
    v.scale = a->scale, v.softcap = a->softcap, v.window_left = -1;
    return v;
}

extern "C" const char *opt_extend_chunked_unsupported(const opt_extend_args *a, int cc_major)
{
    const opt_varlen_args v = xc__varlen(a);
    const char *why = opt_mha_varlen_matrix_unsupported(&v, a->matrix, cc_major);
    if (why)
        return why;
    if (a->cache.heads <= 0 || a->hq % a->cache.heads)
        return "chunked needs heads_q divisible by the cache's heads";
    return NULL;
}

extern "C" size_t opt_extend_chunked_workspace(const opt_extend_args *a, const int32_t *host_ctx,
                                               int chunk_tokens)
{
    if (!a || !host_ctx || chunk_tokens < 1 || a->batch < 0)
        return 0;
    return xc__make_plan(a, host_ctx, chunk_tokens).bytes;
}

/* host_ctx: the context lengths on the host (the same values as a->context_lens on the
 * device), for the plan's sizes only. */
extern "C" int opt_extend_chunked(const opt_extend_args *a, const int32_t *host_ctx,
                                  int chunk_tokens, void *workspace, size_t workspace_bytes,
                                  void *stream)
{
    if (!a || !host_ctx || chunk_tokens < 1 || a->batch < 0 || a->tq < 0)
        return OPT_EINVAL;
    if (a->tq == 0)
        return OPT_OK;
    const xc__plan p = xc__make_plan(a, host_ctx, chunk_tokens);
    if (p.chunks < 0)
        return OPT_EINVAL;
    if (!workspace || workspace_bytes < p.bytes)
        return OPT_EINVAL;
    char *ws = (char *)workspace;
    void *ts = ws + p.off_ts;
    const size_t ts_bytes = opt_mha_varlen_mma_workspace(a->batch);
    int rc;

    /* 1. new over new, causal. */
    opt_varlen_args nn = xc__varlen(a);
    nn.k = a->k_new, nn.v = a->v_new, nn.cu_k = a->cu_q, nn.causal = 1;
    nn.out = p.chunks ? (void *)(ws + p.off_oa) : a->out;
    nn.lse = p.chunks ? (float *)(ws + p.off_la) : a->lse;
    if ((rc = opt_mha_varlen_matrix(&nn, a->matrix, ts, ts_bytes, stream)) != OPT_OK || !p.chunks)
        return rc;

    /* 2. the context, chunk by chunk. */
    int32_t *meta = (int32_t *)(ws + p.off_meta);
    if ((rc = opt_context_chunk_plan(a->context_lens, a->batch, chunk_tokens, p.chunks, meta,
                                     stream)) != OPT_OK)
        return rc;
    const int x = 16 / xc__esize(a->cache.dtype);
    void *kc = ws + p.off_k, *vc = ws + p.off_v;
    const bool vec = a->cache.head_dim % x == 0 && (uintptr_t)a->cache.k % 16 == 0 &&
                     (uintptr_t)a->cache.v % 16 == 0;
    void *o_acc = ws + p.off_oa, *o_nxt = ws + p.off_ob;
    float *l_acc = (float *)(ws + p.off_la), *l_nxt = (float *)(ws + p.off_lb);
    for (int c = 0; c < p.chunks; c++) {
        const int32_t *starts = meta + (size_t)c * (2 * a->batch + 1), *cu = starts + a->batch;
        const long long left = p.total_ctx - (long long)c * chunk_tokens;
        opt_gather_cache_args g = {};
        g.batch = a->batch, g.max_blocks = a->max_blocks;
        g.rows = (int)(left < chunk_tokens ? left : chunk_tokens);
        g.dtype = a->dtype, g.cache = a->cache, g.block_table = a->block_table;
        g.starts = starts, g.cu_out = cu, g.k = kc, g.v = vc;
        if ((rc = vec ? opt_gather_cache_vec(&g, stream) : opt_gather_cache_simple(&g, stream)))
            return rc;
        opt_varlen_args ch = xc__varlen(a);
        ch.k = kc, ch.v = vc, ch.cu_k = cu, ch.causal = 0;
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
