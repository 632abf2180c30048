/* mla_prefill.c - path descriptor for non-absorbed MLA prefill with chunked context (SPEC
 * sections 9 and 6, DeepSeek V3/R1 geometry).
 *
 * Inputs  q [Tq, Hq, 192] bf16 (= [q_nope 128 | q_pe 64]); the new tokens' latent
 *         c_kv [Tq, 512] and k_pe [Tq, 64] bf16; w_kvb [Hq * 256, 512] bf16;
 *         the context: kv_cache [N, bs, 576] bf16 or fp8e4m3 (NaN in every unused slot),
 *         k_scale [1] f32 (fp8 only), block_table [B, max_blocks] i32, context_lens [B] i32;
 *         cu_seqlens_q [B + 1] i32.
 * Outputs out [Tq, Hq, 128] bf16, lse [Hq, Tq] f32.
 *
 * The reference is one causal attention per request over concat(context, new); the emulated
 * candidate runs the chunked algorithm a GPU path runs (chunk_tokens context tokens per
 * iteration across the batch, partial results stored in bf16 / f32 between merges), so the
 * two also check each other.
 */
#include "latent_cache.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int mp__check(hx_case *c, hx_err *e)
{
    int rc;
    if (!c->seq_lens_q.set)
        return hx_case_fail(e, c, NULL, "missing key 'seq_lens' (new tokens per request)");
    if (!c->context_lens.set) {
        snprintf(c->context_lens.text, sizeof c->context_lens.text, "0");
        if ((rc = hx_lens_expand(c, "context_lens", &c->context_lens, c->seq_lens_q.n, e)))
            return rc;
    }
    if (!c->heads_q)
        c->heads_q = 16;
    if ((rc = hx_latent_cache_check_case(c, e)))
        return rc;
    if (!c->chunk_tokens)
        c->chunk_tokens = 32768;
    if (c->scale == 0)
        c->scale = ref_mla_default_scale();
    c->heads_kv = c->heads_q;
    c->head_dim = REF_MLA_QK;
    c->head_dim_v = REF_MLA_V;
    c->causal = 1;
    c->dtype = REF_BF16;
    return HX_OK;
}

/* Latent values (c_kv, k_pe, the cached context) sd 1 and W_kvb sd 1/sqrt(512), so k_nope and
 * v have sd about 1; q sd 1 / (scale * sqrt(192)) then gives logits of sd about 1. */
static int mp__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    const int b = c->seq_lens_q.n, hq = c->heads_q;
    const int64_t tq = hx_lens_total(&c->seq_lens_q);
    const int64_t sq[3] = {tq, hq, REF_MLA_QK}, sc[2] = {tq, REF_MLA_LAT},
                  sp[2] = {tq, REF_MLA_ROPE}, sw[2] = {(int64_t)hq * REF_MLA_WROWS, REF_MLA_LAT},
                  sl[1] = {b};
    hx_tensor *q = hx_tensors_add(in, "q", REF_BF16, 3, sq, e);
    hx_tensor *ckv = q ? hx_tensors_add(in, "c_kv", REF_BF16, 2, sc, e) : NULL;
    hx_tensor *kpe = ckv ? hx_tensors_add(in, "k_pe", REF_BF16, 2, sp, e) : NULL;
    hx_tensor *w = kpe ? hx_tensors_add(in, "w_kvb", REF_BF16, 2, sw, e) : NULL;
    if (!w || hx_latent_cache_make(c, in, c->context_lens.v, b, e))
        return e->code;
    hx_tensor *cl = hx_tensors_add(in, "context_lens", REF_I32, 1, sl, e);
    if (!cl || !hx_make_cu_tensor(in, "cu_seqlens_q", &c->seq_lens_q, e))
        return e->code;
    memcpy(cl->data, c->context_lens.v, (size_t)b * sizeof(int32_t));
    hx_tensor_fill_normal(q, c->seed, 1.0 / (c->scale * sqrt((double)REF_MLA_QK)));
    hx_tensor_fill_normal(ckv, c->seed, 1.0);
    hx_tensor_fill_normal(kpe, c->seed, 1.0);
    hx_tensor_fill_normal(w, c->seed, 1.0 / sqrt((double)REF_MLA_LAT));
    return HX_OK;
}

static int mp__check_inputs(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    const int b = c->seq_lens_q.n;
    const hx_tensor *cl = hx_tensors_get(in, "context_lens");
    if (!cl || cl->dtype != REF_I32 || cl->numel != (size_t)b)
        return hx_fail(e, HX_ECASE, "[%s] input 'context_lens' must be i32 [%d]", c->name, b);
    for (int i = 0; i < b; i++)
        if (((const int32_t *)cl->data)[i] != c->context_lens.v[i])
            return hx_fail(e, HX_ECASE, "[%s] context_lens[%d] = %d but the case says %d", c->name,
                           i, ((const int32_t *)cl->data)[i], c->context_lens.v[i]);
    int rc = hx_check_cu_tensor(c, in, "cu_seqlens_q", &c->seq_lens_q, e);
    return rc ? rc : hx_latent_cache_check(c, in, c->context_lens.v, b, e);
}

static int mp__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    return hx_add_attn_outputs(out, "out", REF_BF16, hx_lens_total(&c->seq_lens_q), c->heads_q,
                               REF_MLA_V, e);
}

static int mp__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    const hx_tensor *bt = hx_tensors_get(in, "block_table");
    const ref_mla_prefill_args a = {
        .batch = c->seq_lens_q.n, .hq = c->heads_q, .dtype = REF_BF16,
        .q = hx_tensors_get(in, "q")->data,
        .c_kv = hx_tensors_get(in, "c_kv")->data,
        .k_pe = hx_tensors_get(in, "k_pe")->data,
        .w_kvb = hx_tensors_get(in, "w_kvb")->data,
        .cu_q = hx_tensors_get(in, "cu_seqlens_q")->data,
        .context_lens = hx_tensors_get(in, "context_lens")->data,
        .cache = hx_latent_cache_ref(c, in),
        .block_table = bt->data, .max_blocks = (int)bt->shape[1],
        .kv_round = REF_BF16,
        .scale = c->scale, .mode = mode, .p_dtype = REF_BF16,
    };
    double *o = hx_tensors_get(out, "out")->data, *l = hx_tensors_get(out, "lse")->data;
    int rc = mode == REF_EMULATE ? ref_mla_prefill_chunked(&a, c->chunk_tokens, REF_BF16, o, l)
                                 : ref_mla_prefill(&a, o, l);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

/* FLOPs are the attention's alone (SPEC's cost model); the decompression GEMMs, about
 * 2 * 512 * 256 * Hq per key row, are not counted. */
static hx_cost mp__cost(const hx_case *c)
{
    double keys = 0, ctx = 0, blocks = 0;
    for (int b = 0; b < c->seq_lens_q.n; b++) {
        const int64_t n = c->seq_lens_q.v[b], lc = c->context_lens.v[b];
        keys += (double)n * lc + (double)n * (n + 1) / 2;
        ctx += (double)lc;
        blocks += (double)((lc + c->block_size - 1) / c->block_size);
    }
    const double tq = (double)hx_lens_total(&c->seq_lens_q), hq = c->heads_q, b = c->seq_lens_q.n;
    hx_cost k = {
        .flops = 2.0 * keys * hq * (REF_MLA_QK + REF_MLA_V),
        .bytes =
            2.0 * (tq * hq * REF_MLA_QK + tq * REF_MLA_ROW + hq * REF_MLA_WROWS * REF_MLA_LAT) +
            ctx * REF_MLA_ROW * ref_dtype_size(c->kv_dtype) + 4.0 * (blocks + 2 * b + 1) +
            tq * hq * (2.0 * REF_MLA_V + 4.0),
    };
    return k;
}

static void mp__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    const int64_t tq = hx_lens_total(&c->seq_lens_q);
    int64_t token, head, dim = -1;
    hx_locate_attn(name, i, tq, c->heads_q, REF_MLA_V, &token, &head, &dim);
    int seq;
    int64_t pos;
    hx_locate_varlen(&c->seq_lens_q, token, &seq, &pos);
    const int ctx = seq >= 0 ? c->context_lens.v[seq] : 0;
    int len = snprintf(buf, n, "seq %d token %lld (position %lld after %d context) head %lld", seq,
                       (long long)pos, (long long)(pos + ctx), ctx, (long long)head);
    if (dim >= 0 && len >= 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, " dim %lld", (long long)dim);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"

/* Columns of the block table [batch, max_blocks], from its device copy's size. */
static int mp__max_blocks(const hx_dtensors *in, int batch)
{
    for (int i = 0; i < in->n && batch > 0; i++)
        if (strcmp(in->t[i].name, "block_table") == 0)
            return (int)(in->t[i].bytes / sizeof(int32_t) / (size_t)batch);
    return 0;
}

/* Bytes of a device tensor, 0 if absent. */
static size_t mp__dbytes(const hx_dtensors *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return s->t[i].bytes;
    return 0;
}

/* Keys of the whole batch: every request's context and new tokens. */
static int64_t mp__keys(const hx_case *c)
{
    return hx_lens_total(&c->seq_lens_q) + hx_lens_total(&c->context_lens);
}

static size_t mp__simple_workspace(const hx_case *c)
{
    const int64_t tk = mp__keys(c);
    return tk > INT32_MAX ? 0 : opt_mla_prefill_workspace(c->seq_lens_q.n, (int)tk, c->heads_q);
}

static const char *mp__simple_unsupported(const hx_case *c, const hx_gpu *g)
{
    if (c->heads_q > 65535)
        return "simple puts query heads on the grid's y dimension: at most 65535";
    if (mp__keys(c) > INT32_MAX)
        return "simple decompresses every key of the batch at once, indexed by i32: at most "
               "2^31 - 1 context + new tokens";
    if (mp__simple_workspace(c) > g->mem_total)
        return "simple decompresses every key of the batch at once: its workspace exceeds the "
               "device memory";
    return NULL;
}

/* The launcher arguments shared by the variants. */
static opt_mla_prefill_args mp__args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out)
{
    const int batch = c->seq_lens_q.n;
    opt_mla_prefill_args a = {
        .batch = batch, .tq = (int)hx_lens_total(&c->seq_lens_q), .hq = c->heads_q,
        .tk = (int)mp__keys(c),
        .q = hx_dptr(in, "q"), .c_kv = hx_dptr(in, "c_kv"), .k_pe = hx_dptr(in, "k_pe"),
        .w_kvb = hx_dptr(in, "w_kvb"), .cu_q = hx_dptr(in, "cu_seqlens_q"),
        .context_lens = hx_dptr(in, "context_lens"),
        .cache = {.dtype = (int)c->kv_dtype, .block_size = c->block_size,
                  .data = hx_dptr(in, "kv_cache"), .k_scale = hx_dptr(in, "k_scale")},
        .block_table = hx_dptr(in, "block_table"), .max_blocks = mp__max_blocks(in, batch),
        .scale = (float)c->scale,
        .workspace = hx_dptr(out, "workspace"), .workspace_bytes = mp__dbytes(out, "workspace"),
        .out = hx_dptr(out, "out"), .lse = hx_dptr(out, "lse"),
    };
    return a;
}

static int mp__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_mla_prefill_args a = mp__args(c, in, out);
    return opt_mla_prefill_simple(&a, stream);
}

static size_t mp__mma_workspace(const hx_case *c)
{
    const int64_t tq = hx_lens_total(&c->seq_lens_q);
    return tq > INT32_MAX ? 0
                          : opt_mla_prefill_mma_workspace(c->seq_lens_q.n, (int)tq, c->heads_q,
                                                          c->context_lens.v, c->chunk_tokens);
}

static const char *mp__mma_unsupported_as(const hx_case *c, const hx_gpu *g, int matrix)
{
    const char *why = opt_mla_prefill_mma_unsupported(c->heads_q, matrix, g->cc_major);
    if (why)
        return why;
    if (mp__keys(c) > INT32_MAX)
        return "mma indexes the batch's context + new tokens by i32: at most 2^31 - 1";
    if (mp__mma_workspace(c) > g->mem_total)
        return "mma keeps the K and V of max(new tokens, chunk_tokens) keys and three partial "
               "outputs: its workspace exceeds the device memory";
    return NULL;
}

static const char *mp__mma_unsupported(const hx_case *c, const hx_gpu *g)
{
    return mp__mma_unsupported_as(c, g, OPT_MATRIX_BEST);
}

static const char *mp__portable_unsupported(const hx_case *c, const hx_gpu *g)
{
    return mp__mma_unsupported_as(c, g, OPT_MATRIX_PORTABLE);
}

static int mp__mma_run_as(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream,
                          int matrix)
{
    opt_mla_prefill_args a = mp__args(c, in, out);
    a.matrix = matrix;
    return opt_mla_prefill_mma(&a, c->context_lens.v, c->chunk_tokens, stream);
}

static int mp__mma_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    return mp__mma_run_as(c, in, out, stream, OPT_MATRIX_BEST);
}

static int mp__portable_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out,
                            void *stream)
{
    return mp__mma_run_as(c, in, out, stream, OPT_MATRIX_PORTABLE);
}

static const hx_variant mp__variants[] = {
    {.name = "simple",
     .summary = "naive W_kvb decompression of every key into a workspace, then one block per "
                "(token, head) over all its keys, online softmax in f32",
     .unsupported = mp__simple_unsupported,
     .run = mp__simple_run,
     .workspace = mp__simple_workspace},
    {.name = "mma",
     .summary = "matrix-core decompression GEMM (wgmma on Hopper, mma.sync on other NVIDIA, "
                "portable on AMD; latent read in place: c_kv or the paged cache, fp8 dequantized "
                "in shared memory), "
                "matrix-core 192/128 attention causal over the new tokens, context chunks "
                "non-causal, merge_states vec",
     .unsupported = mp__mma_unsupported,
     .run = mp__mma_run,
     .workspace = mp__mma_workspace},
    {.name = "portable",
     .summary = "mma's algorithm on gpu_port.h's vendor-neutral matrix primitive (the AMD "
                "kernels, run anywhere): a plain-load decompression GEMM and mha_varlen portable",
     .unsupported = mp__portable_unsupported,
     .run = mp__portable_run,
     .workspace = mp__mma_workspace},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_mla_prefill = {
    .name = "mla_prefill",
    .summary =
        "non-absorbed MLA prefill: W_kvb decompression, 192/128 causal, chunked latent context",
    .keys =
        "batch heads_q seq_lens context_lens kv_dtype k_scale block_size num_blocks block_alloc "
        "chunk_tokens scale",
    .outputs = "out lse",
    .check = mp__check,
    .make_inputs = mp__make_inputs,
    .check_inputs = mp__check_inputs,
    .make_outputs = mp__make_outputs,
    .reference = mp__reference,
    .cost = mp__cost,
    .locate = mp__locate,
    HX_VARIANTS(mp__variants),
};
