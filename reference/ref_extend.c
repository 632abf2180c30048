/* ref_extend.c - SPEC section 6, extend (chunked-context prefill): requests with c_b tokens in
 * the paged cache and n_b new tokens given contiguously.
 *
 * ref_extend is the ground truth: per request, one ref_attn over concat(context, new) with
 * the bottom-right causal mask (lk - lq = c_b), so new query i sees the whole context and new
 * keys j <= i. ref_extend_chunked is the algorithm a GPU path runs: causal new-over-new, then
 * the context chunk by chunk, each chunk attended without a mask and merged in with the
 * section 0 merge. The identity ref_extend_chunked == ref_extend (to rounding, for any chunk
 * budget) is a test of both.
 */
#include "ref_paged.h"

#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static int ref__check(const ref_extend_args *a)
{
    if (!a)
        return REF_EINVAL;
    int err = ref_kv_check(&a->cache);
    if (err != REF_OK)
        return err;
    if (a->batch < 0 || a->hq <= 0 || a->max_blocks < 0)
        return REF_EINVAL;
    if (a->batch > 0 && (!a->cu_q || !a->context_lens || !a->block_table))
        return REF_EINVAL;
    if (a->hq % a->cache.heads != 0)
        return REF_ESHAPE;
    if (!ref_dtype_is_float(a->dtype))
        return REF_EDTYPE;
    if (a->batch > 0 && a->cu_q[0] != 0)
        return REF_ESHAPE;
    for (int b = 0; b < a->batch; b++) {
        if (a->cu_q[b + 1] < a->cu_q[b])
            return REF_ESHAPE;
        if (a->context_lens[b] < 0 ||
            (int64_t)a->context_lens[b] + (a->cu_q[b + 1] - a->cu_q[b]) > INT_MAX)
            return REF_EINVAL;
    }
    if (a->batch > 0 && a->cu_q[a->batch] > 0 && (!a->q || !a->k_new || !a->v_new))
        return REF_EINVAL;
    return REF_OK;
}

/* Keep the first error of a parallel loop. */
static void ref__first_error(int *err, int rc)
{
    if (rc == REF_OK)
        return;
#pragma omp critical(ref__extend_err)
    if (*err == REF_OK)
        *err = rc;
}

int ref_extend(const ref_extend_args *a, double *out, double *lse)
{
    int err = ref__check(a);
    if (err != REF_OK || a->batch == 0)
        return err;
    const int hq = a->hq, hkv = a->cache.heads, d = a->cache.head_dim;
    const int64_t tn = a->cu_q[a->batch];
    if (tn > 0 && (!out || !lse))
        return REF_EINVAL;
    ref_attn_opts o = a->opts;
    o.causal = 1;
    o.window_left = -1;
    const ref_dtype round_to = o.mode == REF_EMULATE ? a->dtype : REF_F64;
    const size_t es = ref_dtype_size(a->dtype), row = (size_t)hkv * d;

#pragma omp parallel for schedule(dynamic) if (!omp_in_parallel() && a->batch > 1)
    for (int b = 0; b < a->batch; b++) {
        const int q0 = a->cu_q[b], n = a->cu_q[b + 1] - q0, c = a->context_lens[b];
        if (n == 0)
            continue;
        double *k = malloc((size_t)(c + n) * row * sizeof *k);
        double *v = malloc((size_t)(c + n) * row * sizeof *v);
        int rc = k && v ? REF_OK : REF_ENOMEM;
        if (rc == REF_OK)
            rc = ref_kv_gather_rows(&a->cache, a->block_table + (size_t)b * a->max_blocks,
                                    a->max_blocks, 0, c, round_to, k, v);
        if (rc == REF_OK) {
            /* The new rows are in the query dtype already: exact in f64, and what a kernel's
             * MMA reads without conversion. */
            for (size_t i = 0; i < (size_t)n * row; i++) {
                k[(size_t)c * row + i] = ref_load(a->dtype, a->k_new, (size_t)q0 * row + i);
                v[(size_t)c * row + i] = ref_load(a->dtype, a->v_new, (size_t)q0 * row + i);
            }
            const ref_view q = {a->dtype, (const char *)a->q + (size_t)q0 * hq * d * es,
                                (ptrdiff_t)hq * d, d};
            const ref_view kv = {REF_F64, k, (ptrdiff_t)row, d}, vv = {REF_F64, v, (ptrdiff_t)row, d};
            rc = ref_attn(n, c + n, hq, hkv, d, d, q, kv, vv, &o, out + (size_t)q0 * hq * d,
                          (ptrdiff_t)hq * d, lse + q0, tn);
        }
        free(k);
        free(v);
        ref__first_error(&err, rc);
    }
    return err;
}

/* ------------------------------------------------------------ the chunked algorithm */

/* What a stored partial result holds: out rounded to dt, lse to f32 (REF_F64: unchanged).
 * Rows [q0, q0 + n) of out [Tn, hq, d] and of lse [hq, Tn]. */
static void ref__round_partial(ref_dtype dt, int64_t tn, int hq, int d, int64_t q0, int n,
                               double *out, double *lse)
{
    if (dt == REF_F64)
        return;
    for (size_t i = (size_t)q0 * hq * d; i < (size_t)(q0 + n) * hq * d; i++)
        out[i] = ref_round_to(dt, out[i]);
    for (int h = 0; h < hq; h++)
        for (int64_t i = q0; i < q0 + n; i++)
            lse[h * tn + i] = ref_round_to(REF_F32, lse[h * tn + i]);
}

/* Request b's share of the context chunk [s, e) of the concatenated contexts, whose own
 * context starts at offset `off` there: its tokens [*t0, *t0 + *len). */
static void ref__chunk_share(int64_t s, int64_t e, int64_t off, int c, int64_t *t0, int *len)
{
    const int64_t lo = s > off ? s : off, hi = e < off + c ? e : off + c;
    *t0 = lo - off;
    *len = hi > lo ? (int)(hi - lo) : 0;
}

int ref_extend_chunked(const ref_extend_args *a, int chunk_tokens, ref_dtype partial_dtype,
                       double *out, double *lse)
{
    int err = ref__check(a);
    if (err != REF_OK)
        return err;
    if (chunk_tokens < 1 || (partial_dtype != REF_F64 && !ref_dtype_is_float(partial_dtype)))
        return REF_EINVAL;
    if (a->batch == 0)
        return REF_OK;
    const int hq = a->hq, hkv = a->cache.heads, d = a->cache.head_dim, batch = a->batch;
    const int64_t tn = a->cu_q[batch];
    if (tn > 0 && (!out || !lse))
        return REF_EINVAL;

    /* 1. New queries over the new keys, causal: (out, lse) start as that partial result. */
    ref_attn_opts o = a->opts;
    o.causal = 1;
    o.window_left = -1;
    const ref_varlen_args va = {.batch = batch, .hq = hq, .hkv = hkv, .dqk = d, .dv = d,
                                .cu_q = a->cu_q, .cu_k = a->cu_q, .dtype = a->dtype, .q = a->q,
                                .k = a->k_new, .v = a->v_new, .opts = o};
    if ((err = ref_mha_varlen(&va, out, lse)) != REF_OK)
        return err;
    ref__round_partial(partial_dtype, tn, hq, d, 0, (int)tn, out, lse);

    /* 2. The context, chunk_tokens tokens at a time across the batch. A request's result
     * depends only on its own shares of the chunks, merged in chunk order, so requests run in
     * parallel, each walking the chunks that cover its context. */
    o.causal = 0;
    const ref_dtype round_to = o.mode == REF_EMULATE ? a->dtype : REF_F64;
    const size_t es = ref_dtype_size(a->dtype), row = (size_t)hkv * d;
    int64_t *off = malloc(((size_t)batch + 1) * sizeof *off);
    double *oc = malloc(((size_t)tn * hq * d + 1) * sizeof *oc);
    double *lc = malloc(((size_t)tn * hq + 1) * sizeof *lc);
    if (!off || !oc || !lc) {
        free(off);
        free(oc);
        free(lc);
        return REF_ENOMEM;
    }
    off[0] = 0;
    for (int b = 0; b < batch; b++)
        off[b + 1] = off[b] + a->context_lens[b];

#pragma omp parallel for schedule(dynamic) if (!omp_in_parallel() && batch > 1)
    for (int b = 0; b < batch; b++) {
        const int q0 = a->cu_q[b], n = a->cu_q[b + 1] - q0, c = a->context_lens[b];
        if (n == 0 || c == 0)
            continue;
        /* Only the chunks that meet this context, from the one holding its first token: an
         * empty share (lse = -inf) would merge as the identity. */
        int rc = REF_OK;
        for (int64_t s = off[b] / chunk_tokens * chunk_tokens; s < off[b] + c && rc == REF_OK;
             s += chunk_tokens) {
            int64_t t0;
            int len;
            ref__chunk_share(s, s + chunk_tokens, off[b], c, &t0, &len);
            /* Gathered to the standard layout, as gather_cache does for the GPU path. */
            double *k = malloc((size_t)len * row * sizeof *k);
            double *v = malloc((size_t)len * row * sizeof *v);
            rc = k && v ? REF_OK : REF_ENOMEM;
            if (rc == REF_OK)
                rc = ref_kv_gather_rows(&a->cache, a->block_table + (size_t)b * a->max_blocks,
                                        a->max_blocks, t0, len, round_to, k, v);
            if (rc == REF_OK) {
                const ref_view q = {a->dtype, (const char *)a->q + (size_t)q0 * hq * d * es,
                                    (ptrdiff_t)hq * d, d};
                const ref_view kv = {REF_F64, k, (ptrdiff_t)row, d},
                               vv = {REF_F64, v, (ptrdiff_t)row, d};
                rc = ref_attn(n, len, hq, hkv, d, d, q, kv, vv, &o, oc + (size_t)q0 * hq * d,
                              (ptrdiff_t)hq * d, lc + q0, tn);
            }
            if (rc == REF_OK) {
                ref__round_partial(partial_dtype, tn, hq, d, q0, n, oc, lc);
                for (int i = q0; i < q0 + n; i++)
                    for (int h = 0; h < hq; h++) {
                        double *orow = out + ((size_t)i * hq + h) * d;
                        const size_t li = (size_t)h * tn + i;
                        ref_merge_row(d, orow, lse[li], oc + ((size_t)i * hq + h) * d, lc[li],
                                      orow, &lse[li]);
                    }
                ref__round_partial(partial_dtype, tn, hq, d, q0, n, out, lse);
            }
            free(k);
            free(v);
        }
        ref__first_error(&err, rc);
    }
    free(off);
    free(oc);
    free(lc);
    return err;
}
