/* extend.c - path descriptor for extend, chunked-context prefill with LSE merge (SPEC
 * section 6): request b has context_lens[b] tokens in the paged cache and seq_lens[b] >= 1 new
 * tokens given contiguously.
 *
 * Inputs  q [Tn, Hq, D], k_new, v_new [Tn, Hkv, D] in the case dtype; cu_seqlens_q [B + 1] i32;
 *         context_lens [B] i32; block_table [B, max_blocks] i32; k_cache, v_cache holding the
 *         contexts (hx_kvcache.h); fp8 caches: k_scale, v_scale [1] f32.
 * Outputs out [Tn, Hq, D] in the case dtype, lse [Hq, Tn] f32.
 *
 * The f64 reference is the one-pass ground truth (ref_extend). The emulated candidate runs the
 * GPU algorithm itself (ref_extend_chunked with the case's chunk_tokens), storing each partial
 * result as the kernels do (out in the case dtype, lse in f32), so the chunking and the merge
 * are judged in every run, not only in the unit tests.
 */
#include "hx_kvcache.h"

#include <string.h>

static int ex__check(hx_case *c, hx_err *e)
{
    if (!c->seq_lens_q.set)
        return hx_case_fail(e, c, NULL, "missing key 'seq_lens' (new tokens per request)");
    if (!c->context_lens.set)
        return hx_case_fail(e, c, NULL, "missing key 'context_lens' (cached tokens per request)");
    for (int b = 0; b < c->seq_lens_q.n; b++)
        if (c->seq_lens_q.v[b] < 1)
            return hx_case_fail(e, c, "seq_lens",
                                "request %d has %d new tokens; extend needs at least 1 each", b,
                                c->seq_lens_q.v[b]);
    for (int b = 0; b < c->seq_lens_q.n; b++)
        if ((int64_t)c->seq_lens_q.v[b] + c->context_lens.v[b] > INT32_MAX)
            return hx_case_fail(e, c, "context_lens", "request %d: context + new tokens pass %d",
                                b, INT32_MAX);
    if (!c->chunk_tokens)
        c->chunk_tokens = 32768;
    return hx_kv_check_attention(c, e);
}

static int ex__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    const int b = c->seq_lens_q.n;
    const int64_t tn = hx_lens_total(&c->seq_lens_q), tc = hx_lens_total(&c->context_lens);
    const int64_t sq[3] = {tn, c->heads_q, c->head_dim}, sn[3] = {tn, c->heads_kv, c->head_dim},
                  sc[3] = {tc, c->heads_kv, c->head_dim}, sb[1] = {b};
    hx_tensor *q = hx_tensors_add(in, "q", c->dtype, 3, sq, e);
    hx_tensor *kn = q ? hx_tensors_add(in, "k_new", c->dtype, 3, sn, e) : NULL;
    hx_tensor *vn = kn ? hx_tensors_add(in, "v_new", c->dtype, 3, sn, e) : NULL;
    hx_tensor *cl = vn && hx_make_cu_tensor(in, "cu_seqlens_q", &c->seq_lens_q, e)
                        ? hx_tensors_add(in, "context_lens", REF_I32, 1, sb, e)
                        : NULL;
    if (!cl)
        return e->code;
    hx_tensor_fill_normal(q, c->seed, 1.0);
    hx_tensor_fill_normal(kn, c->seed, 1.0);
    hx_tensor_fill_normal(vn, c->seed, 1.0);
    memcpy(cl->data, c->context_lens.v, (size_t)b * sizeof(int32_t));

    /* The contexts' K and V, generated in the case dtype, then written into the cache. */
    hx_tensors rows = {0};
    hx_tensor *k = hx_tensors_add(&rows, "k", c->dtype, 3, sc, e);
    hx_tensor *v = k ? hx_tensors_add(&rows, "v", c->dtype, 3, sc, e) : NULL;
    int rc = v ? HX_OK : e->code;
    if (!rc) {
        hx_tensor_fill_normal(k, c->seed, 1.0);
        hx_tensor_fill_normal(v, c->seed, 1.0);
        rc = hx_kv_make(c, in, c->context_lens.v, b, c->dtype, k->data, v->data, e);
    }
    hx_tensors_free(&rows);
    return rc;
}

static int ex__check_inputs(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    const hx_tensor *cl = hx_tensors_get(in, "context_lens");
    if (!cl || cl->dtype != REF_I32 || cl->numel != (size_t)c->context_lens.n)
        return hx_fail(e, HX_ECASE, "[%s] input 'context_lens' must be i32 [%d]", c->name,
                       c->context_lens.n);
    const int32_t *v = cl->data;
    for (int b = 0; b < c->context_lens.n; b++)
        if (v[b] != c->context_lens.v[b])
            return hx_fail(e, HX_ECASE, "[%s] context_lens[%d] = %d but the case says %d", c->name,
                           b, v[b], c->context_lens.v[b]);
    int rc = hx_check_cu_tensor(c, in, "cu_seqlens_q", &c->seq_lens_q, e);
    return rc ? rc : hx_kv_check_inputs(c, in, c->context_lens.v, c->context_lens.n, e);
}

static int ex__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    return hx_add_attn_outputs(out, "out", c->dtype, hx_lens_total(&c->seq_lens_q), c->heads_q,
                               c->head_dim, e);
}

static int ex__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    const hx_tensor *bt = hx_tensors_get(in, "block_table");
    const ref_extend_args a = {
        .batch = c->seq_lens_q.n, .hq = c->heads_q, .dtype = c->dtype,
        .q = hx_tensors_get(in, "q")->data, .k_new = hx_tensors_get(in, "k_new")->data,
        .v_new = hx_tensors_get(in, "v_new")->data,
        .cu_q = hx_tensors_get(in, "cu_seqlens_q")->data,
        .context_lens = hx_tensors_get(in, "context_lens")->data, .cache = hx_kv_cache(c, in),
        .block_table = bt->data, .max_blocks = (int)bt->shape[1],
        .opts = {.scale = c->scale, .softcap = c->softcap, .causal = 1, .window_left = -1,
                 .mode = mode, .p_dtype = c->dtype},
    };
    double *o = hx_tensors_get(out, "out")->data, *l = hx_tensors_get(out, "lse")->data;
    int rc = mode == REF_EXACT ? ref_extend(&a, o, l)
                               : ref_extend_chunked(&a, c->chunk_tokens, c->dtype, o, l);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

static hx_cost ex__cost(const hx_case *c)
{
    double keys = 0, blocks = 0;
    for (int b = 0; b < c->seq_lens_q.n; b++) {
        const double n = c->seq_lens_q.v[b], ctx = c->context_lens.v[b];
        keys += n * ctx + n * (n + 1) / 2;
        blocks += ((int64_t)c->context_lens.v[b] + c->block_size - 1) / c->block_size;
    }
    const double tn = (double)hx_lens_total(&c->seq_lens_q), tc = (double)hx_lens_total(&c->context_lens);
    const double es = (double)ref_dtype_size(c->dtype), nb = c->seq_lens_q.n;
    const double qo = tn * c->heads_q * c->head_dim * es;
    hx_cost k = {
        .flops = 2.0 * keys * c->heads_q * 2.0 * c->head_dim,
        .bytes = qo + tn * 2.0 * c->heads_kv * c->head_dim * es + tc * hx_kv_token_bytes(c) +
                 4.0 * (blocks + 2 * nb + 1) + (c->kv_dtype == REF_FP8E4M3 ? 8.0 : 0.0) + qo +
                 4.0 * c->heads_q * tn,
    };
    return k;
}

static void ex__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    int64_t token, head, dim = -1;
    hx_locate_attn(name, i, hx_lens_total(&c->seq_lens_q), c->heads_q, c->head_dim, &token, &head,
                   &dim);
    int seq;
    int64_t pos;
    hx_locate_varlen(&c->seq_lens_q, token, &seq, &pos);
    const int ctx = seq >= 0 ? c->context_lens.v[seq] : 0;
    int len = snprintf(buf, n, "seq %d new token %lld (position %lld) head %lld", seq,
                       (long long)pos, (long long)(ctx + pos), (long long)head);
    if (dim >= 0 && len >= 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, " dim %lld", (long long)dim);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"


static int ex__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_extend_args a = hx_kv_gpu_attn_args(c, in, out);
    return opt_extend_simple(&a, stream);
}

/* chunked's arguments with its attention kernels chosen: OPT_MATRIX_BEST or _PORTABLE. */
static opt_extend_args ex__chunked_args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out,
                                        int matrix)
{
    opt_extend_args a = hx_kv_gpu_attn_args(c, in, out);
    a.matrix = matrix;
    return a;
}

static const char *ex__chunked_unsupported_as(const hx_case *c, const hx_gpu *g, int matrix)
{
    const opt_extend_args a = ex__chunked_args(c, NULL, NULL, matrix);
    return opt_extend_chunked_unsupported(&a, g->cc_major);
}

static const char *ex__chunked_unsupported(const hx_case *c, const hx_gpu *g)
{
    return ex__chunked_unsupported_as(c, g, OPT_MATRIX_BEST);
}

static const char *ex__portable_unsupported(const hx_case *c, const hx_gpu *g)
{
    return ex__chunked_unsupported_as(c, g, OPT_MATRIX_PORTABLE);
}

static size_t ex__chunked_workspace(const hx_case *c)
{
    const opt_extend_args a = hx_kv_gpu_attn_args(c, NULL, NULL);
    return opt_extend_chunked_workspace(&a, c->context_lens.v, c->chunk_tokens);
}

static int ex__chunked_run_as(const hx_case *c, const hx_dtensors *in, hx_dtensors *out,
                              void *stream, int matrix)
{
    const opt_extend_args a = ex__chunked_args(c, in, out, matrix);
    return opt_extend_chunked(&a, c->context_lens.v, c->chunk_tokens, hx_dptr(out, "workspace"),
                              ex__chunked_workspace(c), stream);
}

static int ex__chunked_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out,
                           void *stream)
{
    return ex__chunked_run_as(c, in, out, stream, OPT_MATRIX_BEST);
}

static int ex__portable_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out,
                            void *stream)
{
    return ex__chunked_run_as(c, in, out, stream, OPT_MATRIX_PORTABLE);
}

static const hx_variant ex__variants[] = {
    {.name = "simple",
     .summary = "one block per (token, head) over paged context + new keys in one pass, online "
                "softmax in f32 (no chunks)",
     .unsupported = hx_kv_simple_unsupported,
     .run = ex__simple_run,
     .batch_invariant = 1},
    {.name = "chunked",
     .summary = "SPEC 6 on the GPU: matrix-core (wgmma on Hopper, mma on other NVIDIA, portable "
                "on AMD) causal new-over-new, context chunks gathered (vec) to standard layout, "
                "non-causal per chunk, merge_states vec",
     .unsupported = ex__chunked_unsupported,
     .run = ex__chunked_run,
     .workspace = ex__chunked_workspace},
    {.name = "portable",
     .summary = "chunked with mha_varlen portable for its attention (gpu_port.h's vendor-neutral "
                "matrix primitive: the AMD kernels, run anywhere), bf16",
     .unsupported = ex__portable_unsupported,
     .run = ex__portable_run,
     .workspace = ex__chunked_workspace},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_extend = {
    .name = "extend",
    .summary = "extend: new tokens over paged context + themselves, context in chunks merged by LSE",
    .keys = "batch heads_q heads_kv head_dim seq_lens context_lens scale softcap dtype layout "
            "kv_dtype block_size num_blocks block_alloc k_scale v_scale chunk_tokens",
    .outputs = "out lse",
    .check = ex__check,
    .make_inputs = ex__make_inputs,
    .check_inputs = ex__check_inputs,
    .make_outputs = ex__make_outputs,
    .reference = ex__reference,
    .cost = ex__cost,
    .locate = ex__locate,
    HX_VARIANTS(ex__variants),
};
