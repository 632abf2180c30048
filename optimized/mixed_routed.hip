/* mixed_routed.hip - SPEC section 7's `routed` design (issue 7): one serving step split by
 * request kind and run through the project's specialised kernels in one stream:
 *   1. a planning kernel (one block) classifies every request from its lengths (decode: one
 *      new token over a context; prefill: no context; extend: the rest), partitions them
 *      stably into [decode : extend : prefill] with block scans, and writes each class's
 *      request list, cu_seqlens and lengths, and every request's first routed row;
 *   2. a gather kernel copies the q rows (and, for extend and prefill, the k_new and v_new
 *      rows) of every token to its routed row, 16 bytes per access; a second small kernel
 *      copies the decode and extend requests' block-table rows;
 *   3. decode: paged_decode `split_kv` over seq_lens = context + 1 (the new token is already
 *      in the cache), `simple` where split_kv does not take the cache; extend: extend
 *      `chunked`; prefill: mha_varlen `mma`, causal;
 *   4. a scatter kernel writes out and lse back to the arrival order.
 * All index work runs on the device from cu_seqlens_q and context_lens, so no host data enters
 * the timed launch; the host only sizes the buffers (class counts, tokens, block-table widths)
 * from the lengths it has before any launch. Nothing here uses atomics: the result is
 * deterministic, but the split and chunk plans follow the batch, so it is not batch invariant.
 * The kernels of this file are vendor-neutral; the sub-kernels decide where they run
 * (opt_mixed_routed_unsupported is the union of their needs).
 */
#include "gpu_port.h"
#include "block_scan.h"

#include <stdint.h>
#include <stdlib.h>

enum { MR_SCAN = 1024, MR_ALIGN = 256, MR_COPY = 128 };

/* --------------------------------------------------------------- device kernels */

/* Request kind from its lengths (SPEC 7): 0 decode, 1 extend, 2 prefill. */
__device__ __forceinline__ int mr__kind(int ctx, int n)
{
    return ctx <= 0 ? 2 : n == 1 ? 0 : 1;
}

/* One block. Writes, for the nd decode, ne extend and np prefill requests (counts the host
 * derived from the same lengths; writes past them are dropped):
 *   route[R]                   routed row of request r's first token: decodes at [0, nd),
 *                              extend tokens at [nd, nd + te), prefill tokens after them;
 *   dec_req[nd], dec_seq[nd]   arrival index and seq_len (context + 1) of each decode;
 *   ext_req[ne], ext_cu[ne + 1], ext_ctx[ne]   of each extend (cu over its new tokens);
 *   pre_req[np], pre_cu[np + 1]                of each prefill. */
__global__ void __launch_bounds__(MR_SCAN)
mixed_route_plan_kernel(const int32_t *__restrict__ cu_q, const int32_t *__restrict__ ctx_lens,
                        int batch, int nd, int ne, int np, int32_t *__restrict__ route,
                        int32_t *__restrict__ dec_req, int32_t *__restrict__ dec_seq,
                        int32_t *__restrict__ ext_req, int32_t *__restrict__ ext_cu,
                        int32_t *__restrict__ ext_ctx, int32_t *__restrict__ pre_req,
                        int32_t *__restrict__ pre_cu)
{
    __shared__ int part[MR_SCAN];
    int b0, b1;
    gpu_block_share<MR_SCAN>(batch, &b0, &b1);
    int cnt_d = 0, cnt_e = 0, cnt_p = 0, tok_e = 0, tok_p = 0;
    for (int r = b0; r < b1; r++) {
        const int n = cu_q[r + 1] - cu_q[r], k = mr__kind(ctx_lens[r], n);
        cnt_d += k == 0;
        cnt_e += k == 1, tok_e += k == 1 ? n : 0;
        cnt_p += k == 2, tok_p += k == 2 ? n : 0;
    }
    int all_d, all_e, all_p, te, tp;
    int id = gpu_block_exclusive_sum<MR_SCAN>(cnt_d, part, &all_d);
    int ie = gpu_block_exclusive_sum<MR_SCAN>(cnt_e, part, &all_e);
    int ip = gpu_block_exclusive_sum<MR_SCAN>(cnt_p, part, &all_p);
    int oe = gpu_block_exclusive_sum<MR_SCAN>(tok_e, part, &te);
    int op = gpu_block_exclusive_sum<MR_SCAN>(tok_p, part, &tp);
    for (int r = b0; r < b1; r++) {
        const int ctx = ctx_lens[r], n = cu_q[r + 1] - cu_q[r], k = mr__kind(ctx, n);
        if (k == 0) {
            if (id < nd)
                dec_req[id] = r, dec_seq[id] = ctx + 1;
            route[r] = id++;
        } else if (k == 1) {
            if (ie < ne)
                ext_req[ie] = r, ext_cu[ie] = oe, ext_ctx[ie] = ctx;
            route[r] = all_d + oe;
            ie++, oe += n;
        } else {
            if (ip < np)
                pre_req[ip] = r, pre_cu[ip] = op;
            route[r] = all_d + te + op;
            ip++, op += n;
        }
    }
    if (threadIdx.x == 0) {
        if (all_e <= ne)
            ext_cu[all_e] = te;
        if (all_p <= np)
            pre_cu[all_p] = tp;
    }
}

/* The request of token t: the last r with cu_q[r] <= t (every request has a new token). */
__device__ __forceinline__ int mr__request_of(const int32_t *__restrict__ cu_q, int batch, int t)
{
    return gpu_segment_of(cu_q, batch, t);
}

/* Copy one row of `bytes` bytes, 16 at a time where both ends and the size allow. */
__device__ __forceinline__ void mr__copy_row(char *__restrict__ dst, const char *__restrict__ src,
                                             size_t bytes, bool vec)
{
    if (vec) {
        const size_t n = bytes / 16;
        for (size_t i = threadIdx.x; i < n; i += blockDim.x)
            ((uint4 *)dst)[i] = ((const uint4 *)src)[i];
    } else {
        const size_t n = bytes / 2;
        for (size_t i = threadIdx.x; i < n; i += blockDim.x)
            ((uint16_t *)dst)[i] = ((const uint16_t *)src)[i];
    }
}

/* One block per token t (arrival order): q row t -> routed row p; the k_new, v_new rows of
 * extend and prefill tokens -> row p - nd of the routed K, V. */
__global__ void __launch_bounds__(MR_COPY)
mixed_route_gather_kernel(const int32_t *__restrict__ cu_q, const int32_t *__restrict__ route,
                          int batch, int tq, int nd, const char *__restrict__ q,
                          const char *__restrict__ k_new, const char *__restrict__ v_new,
                          size_t q_row, size_t kv_row, bool vec, char *__restrict__ q_r,
                          char *__restrict__ k_r, char *__restrict__ v_r)
{
    const int t = blockIdx.x, r = mr__request_of(cu_q, batch, t);
    const int p = route[r] + (t - cu_q[r]);
    if (p < 0 || p >= tq)
        return;
    mr__copy_row(q_r + (size_t)p * q_row, q + (size_t)t * q_row, q_row, vec);
    if (p >= nd) {
        mr__copy_row(k_r + (size_t)(p - nd) * kv_row, k_new + (size_t)t * kv_row, kv_row, vec);
        mr__copy_row(v_r + (size_t)(p - nd) * kv_row, v_new + (size_t)t * kv_row, kv_row, vec);
    }
}

/* Block i: block-table row req[i] (src_w entries) -> row i of dst (dst_w entries, -1 past
 * the source's width). */
__global__ void __launch_bounds__(MR_COPY)
mixed_route_table_kernel(const int32_t *__restrict__ bt, int src_w, const int32_t *__restrict__ req,
                         int dst_w, int32_t *__restrict__ dst)
{
    const int32_t *src = bt + (size_t)req[blockIdx.x] * src_w;
    int32_t *row = dst + (size_t)blockIdx.x * dst_w;
    for (int j = threadIdx.x; j < dst_w; j += blockDim.x)
        row[j] = j < src_w ? src[j] : -1;
}

/* One block per token t (arrival order): routed out row p -> out row t; lse [hq, tq] from the
 * routed LSEs, one [hq, rows of the class] array per class laid end to end (decode, extend,
 * prefill: offsets hq * 0, hq * nd, hq * (nd + te)). */
__global__ void __launch_bounds__(MR_COPY)
mixed_route_scatter_kernel(const int32_t *__restrict__ cu_q, const int32_t *__restrict__ route,
                           int batch, int tq, int hq, int nd, int te, const char *__restrict__ o_r,
                           const float *__restrict__ l_r, size_t o_row, bool vec,
                           char *__restrict__ out, float *__restrict__ lse)
{
    const int t = blockIdx.x, r = mr__request_of(cu_q, batch, t);
    const int p = route[r] + (t - cu_q[r]);
    if (p < 0 || p >= tq)
        return;
    mr__copy_row(out + (size_t)t * o_row, o_r + (size_t)p * o_row, o_row, vec);
    const int base = p < nd ? 0 : p < nd + te ? nd : nd + te;
    const int rows = p < nd ? nd : p < nd + te ? te : tq - nd - te;
    const float *seg = l_r + (size_t)hq * base;
    for (int h = threadIdx.x; h < hq; h += blockDim.x)
        lse[(size_t)h * tq + t] = seg[(size_t)h * rows + (p - base)];
}

/* ------------------------------------------------------------------ the plan */
typedef struct mr__plan {
    int nd, ne, np, te, tp;        /* requests per class; extend and prefill new tokens */
    int mb_d, mb_e;                /* block-table widths of the decode and extend sub-batches */
    int split_kv;                  /* decode through split_kv (else simple) */
    size_t ws_dec, ws_ext, ws_pre; /* sub-kernel workspaces (one shared region: same stream) */
    size_t off_route, off_dreq, off_dseq, off_ereq, off_ecu, off_ectx, off_preq, off_pcu;
    size_t off_btd, off_bte, off_q, off_k, off_v, off_o, off_l, off_sub, bytes;
    int32_t *ext_ctx_host;         /* the extend contexts in routed order, malloc'd */
} mr__plan;

static size_t mr__up(size_t n)
{
    return (n + MR_ALIGN - 1) / MR_ALIGN * MR_ALIGN;
}

static int mr__esize(int dtype)
{
    return dtype == OPT_F32 ? 4 : dtype == OPT_FP8E4M3 ? 1 : 2;
}

static opt_paged_decode_args mr__decode_args(const opt_mixed_args *a, int batch, int max_blocks)
{
    opt_paged_decode_args d = {};
    d.batch = batch, d.hq = a->hq, d.dtype = a->dtype, d.cache = a->cache;
    d.max_blocks = max_blocks, d.scale = a->scale, d.softcap = a->softcap;
    return d;
}

static opt_extend_args mr__extend_args(const opt_mixed_args *a, int batch, int tq, int max_blocks)
{
    opt_extend_args e = {};
    e.batch = batch, e.tq = tq, e.hq = a->hq, e.dtype = a->dtype, e.cache = a->cache;
    e.max_blocks = max_blocks, e.scale = a->scale, e.softcap = a->softcap;
    return e;
}

static opt_varlen_args mr__prefill_args(const opt_mixed_args *a, int batch, int tq)
{
    opt_varlen_args v = {};
    v.batch = batch, v.tq = tq, v.hq = a->hq, v.hkv = a->cache.heads;
    v.dqk = v.dv = a->cache.head_dim, v.dtype = a->dtype;
    v.scale = a->scale, v.softcap = a->softcap, v.causal = 1, v.window_left = -1;
    return v;
}

/* Sizes from the host copies of the lengths; OPT_EINVAL when they disagree with a (tokens)
 * or the host cannot hold the extend contexts. */
static int mr__make_plan(const opt_mixed_args *a, const int32_t *host_ctx, const int32_t *host_new,
                         int chunk_tokens, mr__plan *p)
{
    *p = mr__plan();
    const int bs = a->cache.block_size;
    if (bs < 1)
        return OPT_EINVAL;
    long long tokens = 0;
    for (int r = 0; r < a->batch; r++) {
        const int c = host_ctx[r], n = host_new[r];
        if (c < 0 || n < 1)
            return OPT_EINVAL;
        tokens += n;
        if (c > 0 && n == 1) {
            const int nb = (int)(((long long)c + 1 + bs - 1) / bs);
            p->nd++, p->mb_d = nb > p->mb_d ? nb : p->mb_d;
        } else if (c > 0) {
            const int nb = (int)(((long long)c + bs - 1) / bs);
            p->ne++, p->te += n, p->mb_e = nb > p->mb_e ? nb : p->mb_e;
        } else {
            p->np++, p->tp += n;
        }
    }
    if (tokens != a->tq)
        return OPT_EINVAL;
    p->mb_d = p->mb_d < 1 ? 1 : p->mb_d;
    p->mb_e = p->mb_e < 1 ? 1 : p->mb_e;
    p->ext_ctx_host = (int32_t *)malloc(((size_t)p->ne + 1) * sizeof(int32_t));
    if (!p->ext_ctx_host)
        return OPT_EINVAL;
    for (int r = 0, i = 0; r < a->batch; r++)
        if (host_ctx[r] > 0 && host_new[r] > 1)
            p->ext_ctx_host[i++] = host_ctx[r];

    const opt_kv_cache *c = &a->cache;
    /* split_kv keeps token positions in int (a few chunks of headroom): simple past that. */
    p->split_kv = !opt_paged_decode_split_kv_unsupported(c->head_dim, c->dtype, c->layout) &&
                  (long long)p->mb_d * bs <= INT32_MAX - 1024;
    if (p->nd && p->split_kv)
        p->ws_dec = opt_paged_decode_split_kv_workspace(p->nd, a->hq, c->heads, c->head_dim,
                                                        p->mb_d, bs);
    if (p->ne) {
        const opt_extend_args e = mr__extend_args(a, p->ne, p->te, p->mb_e);
        p->ws_ext = opt_extend_chunked_workspace(&e, p->ext_ctx_host, chunk_tokens);
    }
    if (p->np)
        p->ws_pre = opt_mha_varlen_mma_workspace(p->np);
    size_t sub = p->ws_dec > p->ws_ext ? p->ws_dec : p->ws_ext;
    sub = sub > p->ws_pre ? sub : p->ws_pre;

    const size_t es = (size_t)mr__esize(a->dtype), i4 = sizeof(int32_t);
    const size_t q_rows = (size_t)a->tq * a->hq * c->head_dim * es;
    const size_t kv_rows = (size_t)(p->te + p->tp) * c->heads * c->head_dim * es;
    size_t at = 0;
    p->off_route = at, at += mr__up((size_t)a->batch * i4);
    p->off_dreq = at, at += mr__up((size_t)p->nd * i4);
    p->off_dseq = at, at += mr__up((size_t)p->nd * i4);
    p->off_ereq = at, at += mr__up((size_t)p->ne * i4);
    p->off_ecu = at, at += mr__up(((size_t)p->ne + 1) * i4);
    p->off_ectx = at, at += mr__up((size_t)p->ne * i4);
    p->off_preq = at, at += mr__up((size_t)p->np * i4);
    p->off_pcu = at, at += mr__up(((size_t)p->np + 1) * i4);
    p->off_btd = at, at += mr__up((size_t)p->nd * p->mb_d * i4);
    p->off_bte = at, at += mr__up((size_t)p->ne * p->mb_e * i4);
    p->off_q = at, at += mr__up(q_rows);
    p->off_k = at, at += mr__up(kv_rows);
    p->off_v = at, at += mr__up(kv_rows);
    p->off_o = at, at += mr__up(q_rows);
    p->off_l = at, at += mr__up((size_t)a->hq * a->tq * sizeof(float));
    p->off_sub = at, at += mr__up(sub);
    p->bytes = at;
    return OPT_OK;
}

/* ------------------------------------------------------------------ launchers */
extern "C" const char *opt_mixed_routed_unsupported(const opt_mixed_args *a, int cc_major)
{
    const opt_varlen_args v = mr__prefill_args(a, a->batch, a->tq);
    const char *why = opt_mha_varlen_matrix_unsupported(&v, a->matrix, cc_major);
    if (why)
        return why; /* mma is also extend chunked's kernel: this covers both */
    const opt_extend_args e = mr__extend_args(a, a->batch, a->tq, a->max_blocks);
    if ((why = opt_extend_chunked_unsupported(&e, cc_major)))
        return why;
    if (a->cache.dtype != a->dtype && a->cache.dtype != OPT_FP8E4M3)
        return "routed's decode kernels read a cache of the case dtype or fp8e4m3";
    if ((long long)a->tq * a->hq > INT32_MAX)
        return "routed indexes its routed LSE rows in int: tokens * heads_q up to 2^31 - 1";
    return NULL;
}

extern "C" size_t opt_mixed_routed_workspace(const opt_mixed_args *a, const int32_t *host_ctx,
                                             const int32_t *host_new, int chunk_tokens)
{
    if (!a || !host_ctx || !host_new || chunk_tokens < 1 || a->batch < 0)
        return 0;
    mr__plan p;
    const int rc = mr__make_plan(a, host_ctx, host_new, chunk_tokens, &p);
    free(p.ext_ctx_host);
    return rc ? 0 : p.bytes;
}

static int mr__run(const opt_mixed_args *a, const mr__plan *p, int chunk_tokens, char *ws,
                   hipStream_t s)
{
    const opt_kv_cache *c = &a->cache;
    const size_t es = (size_t)mr__esize(a->dtype);
    const size_t q_row = (size_t)a->hq * c->head_dim * es, kv_row = (size_t)c->heads * c->head_dim * es;
    int32_t *route = (int32_t *)(ws + p->off_route);
    int32_t *dreq = (int32_t *)(ws + p->off_dreq), *dseq = (int32_t *)(ws + p->off_dseq);
    int32_t *ereq = (int32_t *)(ws + p->off_ereq), *ecu = (int32_t *)(ws + p->off_ecu);
    int32_t *ectx = (int32_t *)(ws + p->off_ectx);
    int32_t *preq = (int32_t *)(ws + p->off_preq), *pcu = (int32_t *)(ws + p->off_pcu);
    int32_t *btd = (int32_t *)(ws + p->off_btd), *bte = (int32_t *)(ws + p->off_bte);
    char *q_r = ws + p->off_q, *k_r = ws + p->off_k, *v_r = ws + p->off_v, *o_r = ws + p->off_o;
    float *l_r = (float *)(ws + p->off_l);
    void *sub = ws + p->off_sub;
    const size_t sub_bytes = p->bytes - p->off_sub;
    /* Workspace offsets are 256-byte aligned and rows are multiples of 16 bytes at the head
     * dims mma takes; the caller's tensors decide. */
    const bool vec = (uintptr_t)a->q % 16 == 0 && (uintptr_t)a->k_new % 16 == 0 &&
                     (uintptr_t)a->v_new % 16 == 0 && (uintptr_t)a->out % 16 == 0 &&
                     q_row % 16 == 0 && kv_row % 16 == 0;
    int rc;

    /* 1. classify and partition; 2. gather rows and block tables. */
    mixed_route_plan_kernel<<<1, MR_SCAN, 0, s>>>(a->cu_q, a->context_lens, a->batch, p->nd,
                                                  p->ne, p->np, route, dreq, dseq, ereq, ecu,
                                                  ectx, preq, pcu);
    GPU_CHECK(hipGetLastError());
    mixed_route_gather_kernel<<<(unsigned)a->tq, MR_COPY, 0, s>>>(
        a->cu_q, route, a->batch, a->tq, p->nd, (const char *)a->q, (const char *)a->k_new,
        (const char *)a->v_new, q_row, kv_row, vec, q_r, k_r, v_r);
    GPU_CHECK(hipGetLastError());
    if (p->nd) {
        mixed_route_table_kernel<<<(unsigned)p->nd, MR_COPY, 0, s>>>(a->block_table, a->max_blocks,
                                                                     dreq, p->mb_d, btd);
        GPU_CHECK(hipGetLastError());
    }
    if (p->ne) {
        mixed_route_table_kernel<<<(unsigned)p->ne, MR_COPY, 0, s>>>(a->block_table, a->max_blocks,
                                                                     ereq, p->mb_e, bte);
        GPU_CHECK(hipGetLastError());
    }

    /* 3. each class on its contiguous slice. */
    if (p->nd) {
        opt_paged_decode_args d = mr__decode_args(a, p->nd, p->mb_d);
        d.q = q_r, d.block_table = btd, d.seq_lens = dseq, d.out = o_r, d.lse = l_r;
        rc = p->split_kv ? opt_paged_decode_split_kv(&d, sub, sub_bytes, s)
                         : opt_paged_decode_simple(&d, s);
        if (rc)
            return rc;
    }
    if (p->ne) {
        opt_extend_args e = mr__extend_args(a, p->ne, p->te, p->mb_e);
        e.q = q_r + (size_t)p->nd * q_row, e.k_new = k_r, e.v_new = v_r;
        e.cu_q = ecu, e.context_lens = ectx, e.block_table = bte;
        e.out = o_r + (size_t)p->nd * q_row, e.lse = l_r + (size_t)a->hq * p->nd;
        if ((rc = opt_extend_chunked(&e, p->ext_ctx_host, chunk_tokens, sub, sub_bytes, s)))
            return rc;
    }
    if (p->np) {
        opt_varlen_args v = mr__prefill_args(a, p->np, p->tp);
        const size_t row0 = (size_t)p->nd + p->te;
        v.q = q_r + row0 * q_row, v.k = k_r + (size_t)p->te * kv_row;
        v.v = v_r + (size_t)p->te * kv_row, v.cu_q = v.cu_k = pcu;
        v.out = o_r + row0 * q_row, v.lse = l_r + (size_t)a->hq * row0;
        if ((rc = opt_mha_varlen_matrix(&v, a->matrix, sub, sub_bytes, s)))
            return rc;
    }

    /* 4. back to arrival order. */
    mixed_route_scatter_kernel<<<(unsigned)a->tq, MR_COPY, 0, s>>>(
        a->cu_q, route, a->batch, a->tq, a->hq, p->nd, p->te, o_r, l_r, q_row, vec,
        (char *)a->out, a->lse);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* host_ctx, host_new: context_lens and new tokens per request on the host (the same values as
 * the device's context_lens and cu_q differences), for sizes only. */
extern "C" int opt_mixed_routed(const opt_mixed_args *a, const int32_t *host_ctx,
                                const int32_t *host_new, int chunk_tokens, void *workspace,
                                size_t workspace_bytes, void *stream)
{
    if (!a || !host_ctx || !host_new || chunk_tokens < 1 || a->batch < 0 || a->tq < 0 ||
        a->hq < 1 || a->max_blocks < 0)
        return OPT_EINVAL;
    if (a->dtype != OPT_BF16 && a->dtype != OPT_F16)
        return OPT_EINVAL;
    if (a->tq == 0 || a->batch == 0)
        return OPT_OK;
    if (!a->q || !a->k_new || !a->v_new || !a->cu_q || !a->context_lens || !a->block_table ||
        !a->out || !a->lse)
        return OPT_EINVAL;
    mr__plan p;
    int rc = mr__make_plan(a, host_ctx, host_new, chunk_tokens, &p);
    if (!rc && (!workspace || workspace_bytes < p.bytes))
        rc = OPT_EINVAL;
    if (!rc)
        rc = mr__run(a, &p, chunk_tokens, (char *)workspace, (hipStream_t)stream);
    free(p.ext_ctx_host);
    return rc;
}
