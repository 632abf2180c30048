/* mixed.c - path descriptor for one serving step (SPEC section 7): decode, extend and prefill
 * requests in arrival order over one paged cache. Request r has context_lens[r] cached tokens
 * and seq_lens[r] >= 1 new ones; its kind follows from the pair (decode: n = 1, c > 0;
 * extend: n > 1, c > 0; prefill: c = 0).
 *
 * Inputs  q [T, Hq, D], k_new, v_new [T, Hkv, D] in the case dtype; cu_seqlens_q [R + 1] i32;
 *         context_lens [R] i32; block_table [R, max_blocks] i32; k_cache, v_cache holding
 *         context and new tokens (hx_kvcache.h); fp8 caches: k_scale, v_scale [1] f32.
 * Outputs out [T, Hq, D] in the case dtype (original token order), lse [Hq, T] f32.
 *
 * The new rows are in the cache (written by cache_write) and also given contiguously; both
 * hold the same values: k_new is the cache row dequantized to the case dtype (exact for bf16/f16
 * caches and for fp8 with a power-of-two scale). So the `unified` design (everything from the
 * cache: the variant `simple`, the path's baseline) and the `routed` one (the new keys of extend
 * and prefill requests from k_new) meet one ground truth, and check_inputs refuses loaded
 * inputs where the two disagree.
 */
#include "hx_kvcache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tokens each request keeps in the cache: context and new. malloc'd. */
static int32_t *mx__cached(const hx_case *c)
{
    int32_t *l = malloc(((size_t)c->seq_lens_q.n + 1) * sizeof *l);
    for (int r = 0; l && r < c->seq_lens_q.n; r++)
        l[r] = c->context_lens.v[r] + c->seq_lens_q.v[r];
    return l;
}

static int mx__check(hx_case *c, hx_err *e)
{
    if (!c->seq_lens_q.set)
        return hx_case_fail(e, c, NULL, "missing key 'seq_lens' (new tokens per request)");
    if (!c->context_lens.set)
        return hx_case_fail(e, c, NULL, "missing key 'context_lens' (cached tokens per request)");
    for (int r = 0; r < c->seq_lens_q.n; r++) {
        if (c->seq_lens_q.v[r] < 1)
            return hx_case_fail(e, c, "seq_lens",
                                "request %d has %d new tokens; every request of a step has at "
                                "least 1", r, c->seq_lens_q.v[r]);
        if ((int64_t)c->seq_lens_q.v[r] + c->context_lens.v[r] > INT32_MAX)
            return hx_case_fail(e, c, "context_lens", "request %d: context + new tokens pass %d",
                                r, INT32_MAX);
    }
    return hx_kv_check_attention(c, e);
}

/* The new rows as the cache holds them, dequantized and rounded to the case dtype, for
 * request r: [n_r, Hkv, D] f64 into k, v. */
static int mx__cached_new_rows(const hx_case *c, const ref_kv_cache *kc, const hx_tensor *bt, int r,
                               double *k, double *v)
{
    const int mb = (int)bt->shape[1];
    return ref_kv_gather_rows(kc, (const int32_t *)bt->data + (size_t)r * mb, mb,
                              c->context_lens.v[r], c->seq_lens_q.v[r], c->dtype, k, v);
}

static int mx__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    const int nr = c->seq_lens_q.n;
    const int64_t t = hx_lens_total(&c->seq_lens_q);
    const int64_t sq[3] = {t, c->heads_q, c->head_dim}, sn[3] = {t, c->heads_kv, c->head_dim},
                  sb[1] = {nr};
    hx_tensor *q = hx_tensors_add(in, "q", c->dtype, 3, sq, e);
    hx_tensor *kn = q ? hx_tensors_add(in, "k_new", c->dtype, 3, sn, e) : NULL;
    hx_tensor *vn = kn ? hx_tensors_add(in, "v_new", c->dtype, 3, sn, e) : NULL;
    hx_tensor *cl = vn && hx_make_cu_tensor(in, "cu_seqlens_q", &c->seq_lens_q, e)
                        ? hx_tensors_add(in, "context_lens", REF_I32, 1, sb, e)
                        : NULL;
    int32_t *cached = cl ? mx__cached(c) : NULL;
    if (!cached)
        return cl ? hx_fail(e, HX_ENOMEM, "out of memory") : e->code;
    hx_tensor_fill_normal(q, c->seed, 1.0);
    memcpy(cl->data, c->context_lens.v, (size_t)nr * sizeof(int32_t));

    /* Every request's K and V (context then new), generated in the case dtype and written
     * into the cache; k_new and v_new are then read back from it. */
    int64_t tc = 0;
    for (int r = 0; r < nr; r++)
        tc += cached[r];
    const int64_t sc[3] = {tc, c->heads_kv, c->head_dim};
    hx_tensors rows = {0};
    hx_tensor *k = hx_tensors_add(&rows, "k", c->dtype, 3, sc, e);
    hx_tensor *v = k ? hx_tensors_add(&rows, "v", c->dtype, 3, sc, e) : NULL;
    int rc = v ? HX_OK : e->code;
    if (!rc) {
        hx_tensor_fill_normal(k, c->seed, 1.0);
        hx_tensor_fill_normal(v, c->seed, 1.0);
        rc = hx_kv_make(c, in, cached, nr, c->dtype, k->data, v->data, e);
    }
    hx_tensors_free(&rows);
    free(cached);

    const ref_kv_cache kc = hx_kv_cache(c, in);
    const hx_tensor *bt = hx_tensors_get(in, "block_table");
    const size_t row = (size_t)c->heads_kv * c->head_dim;
    const int32_t *cu = hx_tensors_get(in, "cu_seqlens_q")->data;
    for (int r = 0; r < nr && !rc; r++) {
        const size_t n = (size_t)c->seq_lens_q.v[r] * row;
        double *buf = malloc(2 * n * sizeof *buf);
        if (!buf)
            return hx_fail(e, HX_ENOMEM, "out of memory");
        const int err = mx__cached_new_rows(c, &kc, bt, r, buf, buf + n);
        for (size_t i = 0; !err && i < n; i++) {
            ref_store(c->dtype, kn->data, (size_t)cu[r] * row + i, buf[i]);
            ref_store(c->dtype, vn->data, (size_t)cu[r] * row + i, buf[n + i]);
        }
        free(buf);
        if (err)
            rc = hx_fail(e, HX_ERUNTIME, "[%s] reading the new rows back: %s", c->name,
                         ref_strerror(err));
    }
    return rc;
}

/* Equal values, NaN equal to NaN (a NaN written to the cache reads back as NaN). */
static int mx__same(double a, double b)
{
    return a == b || (isnan(a) && isnan(b));
}

static int mx__check_inputs(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    const int nr = c->seq_lens_q.n;
    const hx_tensor *cl = hx_tensors_get(in, "context_lens");
    if (!cl || cl->dtype != REF_I32 || cl->numel != (size_t)nr)
        return hx_fail(e, HX_ECASE, "[%s] input 'context_lens' must be i32 [%d]", c->name, nr);
    for (int r = 0; r < nr; r++)
        if (((const int32_t *)cl->data)[r] != c->context_lens.v[r])
            return hx_fail(e, HX_ECASE, "[%s] context_lens[%d] = %d but the case says %d", c->name,
                           r, ((const int32_t *)cl->data)[r], c->context_lens.v[r]);
    int rc = hx_check_cu_tensor(c, in, "cu_seqlens_q", &c->seq_lens_q, e);
    int32_t *cached = rc ? NULL : mx__cached(c);
    if (!rc && !cached)
        return hx_fail(e, HX_ENOMEM, "out of memory");
    if (!rc)
        rc = hx_kv_check_inputs(c, in, cached, nr, e);
    free(cached);
    if (rc)
        return rc;

    const ref_kv_cache kc = hx_kv_cache(c, in);
    const hx_tensor *bt = hx_tensors_get(in, "block_table");
    const hx_tensor *kn = hx_tensors_get(in, "k_new"), *vn = hx_tensors_get(in, "v_new");
    const size_t row = (size_t)c->heads_kv * c->head_dim;
    const int32_t *cu = hx_tensors_get(in, "cu_seqlens_q")->data;
    for (int r = 0; r < nr && !rc; r++) {
        const size_t n = (size_t)c->seq_lens_q.v[r] * row;
        double *buf = malloc(2 * n * sizeof *buf);
        if (!buf)
            return hx_fail(e, HX_ENOMEM, "out of memory");
        int err = mx__cached_new_rows(c, &kc, bt, r, buf, buf + n);
        if (err)
            rc = hx_fail(e, HX_ECASE, "[%s] reading request %d's new rows from the cache: %s",
                         c->name, r, ref_strerror(err));
        for (size_t i = 0; !rc && i < n; i++) {
            const int kbad = !mx__same(ref_load(c->dtype, kn->data, cu[r] * row + i), buf[i]);
            if (kbad || !mx__same(ref_load(c->dtype, vn->data, cu[r] * row + i), buf[n + i]))
                rc = hx_fail(e, HX_ECASE,
                             "[%s] %s of request %d token %zu head %zu dim %zu differs from its "
                             "row in the cache (mixed reads new K/V from both; they must agree)",
                             c->name, kbad ? "k_new" : "v_new", r, i / row,
                             i / (size_t)c->head_dim % (size_t)c->heads_kv,
                             i % (size_t)c->head_dim);
        }
        free(buf);
    }
    return rc;
}

static int mx__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    return hx_add_attn_outputs(out, "out", c->dtype, hx_lens_total(&c->seq_lens_q), c->heads_q,
                               c->head_dim, e);
}

static int mx__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    const hx_tensor *bt = hx_tensors_get(in, "block_table");
    const ref_mixed_args a = {
        .batch = c->seq_lens_q.n, .hq = c->heads_q, .dtype = c->dtype,
        .q = hx_tensors_get(in, "q")->data, .cu_q = hx_tensors_get(in, "cu_seqlens_q")->data,
        .context_lens = hx_tensors_get(in, "context_lens")->data, .cache = hx_kv_cache(c, in),
        .block_table = bt->data, .max_blocks = (int)bt->shape[1],
        .opts = {.scale = c->scale, .softcap = c->softcap, .causal = 1, .window_left = -1,
                 .mode = mode, .p_dtype = c->dtype},
    };
    int rc = ref_mixed(&a, hx_tensors_get(out, "out")->data, hx_tensors_get(out, "lse")->data);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

/* Bytes as the unified design reads them: every K/V row from the cache (k_new, v_new are
 * the same rows again). */
static hx_cost mx__cost(const hx_case *c)
{
    double keys = 0, rows = 0, blocks = 0;
    for (int r = 0; r < c->seq_lens_q.n; r++) {
        const double n = c->seq_lens_q.v[r], ctx = c->context_lens.v[r];
        keys += n * ctx + n * (n + 1) / 2;
        rows += n + ctx;
        blocks += ((int64_t)c->seq_lens_q.v[r] + c->context_lens.v[r] + c->block_size - 1) /
                  c->block_size;
    }
    const double t = (double)hx_lens_total(&c->seq_lens_q), nr = c->seq_lens_q.n;
    const double qo = t * c->heads_q * c->head_dim * (double)ref_dtype_size(c->dtype);
    hx_cost k = {
        .flops = 2.0 * keys * c->heads_q * 2.0 * c->head_dim,
        .bytes = qo + rows * hx_kv_token_bytes(c) + 4.0 * (blocks + 2 * nr + 1) +
                 (c->kv_dtype == REF_FP8E4M3 ? 8.0 : 0.0) + qo + 4.0 * c->heads_q * t,
    };
    return k;
}

static void mx__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    int64_t token, head, dim = -1;
    hx_locate_attn(name, i, hx_lens_total(&c->seq_lens_q), c->heads_q, c->head_dim, &token, &head,
                   &dim);
    int r;
    int64_t pos;
    hx_locate_varlen(&c->seq_lens_q, token, &r, &pos);
    const int ctx = r >= 0 ? c->context_lens.v[r] : 0, nn = r >= 0 ? c->seq_lens_q.v[r] : 0;
    int len = snprintf(buf, n, "request %d (%s) new token %lld (position %lld) head %lld", r,
                       ref_request_kind_name(ref_request_kind_of(ctx, nn)), (long long)pos,
                       (long long)(ctx + pos), (long long)head);
    if (dim >= 0 && len >= 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, " dim %lld", (long long)dim);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"


static int mx__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_mixed_args a = hx_kv_gpu_attn_args(c, in, out);
    return opt_mixed_simple(&a, stream);
}

/* routed: extend's context chunk budget (SPEC 6's default; mixed has no chunk_tokens key). */
enum { MX__CHUNK_TOKENS = 32768 };

static const char *mx__routed_unsupported(const hx_case *c, const hx_gpu *g)
{
    const opt_mixed_args a = hx_kv_gpu_attn_args(c, NULL, NULL);
    return opt_mixed_routed_unsupported(&a, g->cc_major);
}

static size_t mx__routed_workspace(const hx_case *c)
{
    const opt_mixed_args a = hx_kv_gpu_attn_args(c, NULL, NULL);
    return opt_mixed_routed_workspace(&a, c->context_lens.v, c->seq_lens_q.v, MX__CHUNK_TOKENS);
}

static int mx__routed_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_mixed_args a = hx_kv_gpu_attn_args(c, in, out);
    return opt_mixed_routed(&a, c->context_lens.v, c->seq_lens_q.v, MX__CHUNK_TOKENS,
                            hx_dptr(out, "workspace"), mx__routed_workspace(c), stream);
}

static const char *mx__unified_unsupported(const hx_case *c, const hx_gpu *g)
{
    const opt_mixed_args a = hx_kv_gpu_attn_args(c, NULL, NULL);
    return opt_mixed_unified_unsupported(&a, g->cc_major);
}

static size_t mx__unified_workspace(const hx_case *c)
{
    const opt_mixed_args a = hx_kv_gpu_attn_args(c, NULL, NULL);
    return opt_mixed_unified_workspace(&a, c->context_lens.v, c->seq_lens_q.v);
}

static int mx__unified_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_mixed_args a = hx_kv_gpu_attn_args(c, in, out);
    return opt_mixed_unified(&a, c->context_lens.v, c->seq_lens_q.v, hx_dptr(out, "workspace"),
                             mx__unified_workspace(c), stream);
}

static const hx_variant mx__variants[] = {
    {.name = "simple",
     .summary = "baseline of SPEC 7's unified design: one kernel for every token, one block per (token, "
                "head), every key from the paged cache, bottom-right causal, online softmax in f32",
     .unsupported = hx_kv_simple_unsupported,
     .run = mx__simple_run},
    {.name = "unified",
     .summary = "SPEC 7's unified design on the matrix cores: one kernel for every token, "
                "blocks of (token, head) rows of a KV head's group (16 rows for decodes, 64 for "
                "the rest), paged keys by cp.async, mma.sync, split-KV + combine",
     .unsupported = mx__unified_unsupported,
     .run = mx__unified_run,
     .workspace = mx__unified_workspace,
     .batch_invariant = 0 /* the split length follows the batch */},
    {.name = "routed",
     .summary = "SPEC 7's routed design: requests partitioned on the device into [decode : "
                "extend : prefill], rows gathered; paged_decode split_kv, extend chunked, "
                "mha_varlen mma causal; out, lse scattered back",
     .unsupported = mx__routed_unsupported,
     .run = mx__routed_run,
     .workspace = mx__routed_workspace,
     .batch_invariant = 0 /* split_kv's splits and extend's chunks follow the batch */},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_mixed = {
    .name = "mixed",
    .summary = "one serving step: decode, extend and prefill requests over one paged cache",
    .keys = "batch heads_q heads_kv head_dim seq_lens context_lens scale softcap dtype layout "
            "kv_dtype block_size num_blocks block_alloc k_scale v_scale",
    .outputs = "out lse",
    .check = mx__check,
    .make_inputs = mx__make_inputs,
    .check_inputs = mx__check_inputs,
    .make_outputs = mx__make_outputs,
    .reference = mx__reference,
    .cost = mx__cost,
    .locate = mx__locate,
    HX_VARIANTS(mx__variants),
};
