/* paged_decode.c - path descriptor for paged decode (SPEC section 5): one new token per
 * sequence attends every token of its sequence in the paged cache (the new token included).
 *
 * Inputs  q [B, Hq, D] in the case dtype;
 *         block_table [B, max_blocks] i32; k_cache, v_cache in the case's layout and kv_dtype
 *         (hx_kvcache.h; NaN in every slot past a sequence's length); fp8 caches: k_scale,
 *         v_scale [1] f32; seq_lens [B] i32 (0 allowed: out = 0, lse = -inf).
 * Outputs out [B, Hq, D] in the case dtype, lse [Hq, B] f32.
 */
#include "hx_kvcache.h"

#include <stdlib.h>
#include <string.h>

static int pd__check(hx_case *c, hx_err *e)
{
    if (!c->seq_lens_q.set)
        return hx_case_fail(e, c, NULL, "missing key 'seq_lens' (cached tokens per sequence)");
    return hx_kv_check_attention(c, e);
}

static int pd__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    const int b = c->seq_lens_q.n;
    const int64_t total = hx_lens_total(&c->seq_lens_q);
    const int64_t sq[3] = {b, c->heads_q, c->head_dim}, skv[3] = {total, c->heads_kv, c->head_dim},
                  sb[1] = {b};
    hx_tensor *q = hx_tensors_add(in, "q", c->dtype, 3, sq, e);
    if (!q)
        return e->code;
    hx_tensor_fill_normal(q, c->seed, 1.0);

    /* The sequences' K and V, generated in the case dtype, then written into the cache. */
    hx_tensors rows = {0};
    hx_tensor *k = hx_tensors_add(&rows, "k", c->dtype, 3, skv, e);
    hx_tensor *v = k ? hx_tensors_add(&rows, "v", c->dtype, 3, skv, e) : NULL;
    int rc = v ? HX_OK : e->code;
    if (!rc) {
        hx_tensor_fill_normal(k, c->seed, 1.0);
        hx_tensor_fill_normal(v, c->seed, 1.0);
        rc = hx_kv_make(c, in, c->seq_lens_q.v, b, c->dtype, k->data, v->data, e);
    }
    hx_tensors_free(&rows);
    if (rc)
        return rc;
    hx_tensor *sl = hx_tensors_add(in, "seq_lens", REF_I32, 1, sb, e);
    if (!sl)
        return e->code;
    memcpy(sl->data, c->seq_lens_q.v, (size_t)b * sizeof(int32_t));
    return HX_OK;
}

static int pd__check_inputs(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    const hx_tensor *sl = hx_tensors_get(in, "seq_lens");
    if (!sl || sl->dtype != REF_I32 || sl->numel != (size_t)c->seq_lens_q.n)
        return hx_fail(e, HX_ECASE, "[%s] input 'seq_lens' must be i32 [%d]", c->name, c->seq_lens_q.n);
    const int32_t *v = sl->data;
    for (int b = 0; b < c->seq_lens_q.n; b++)
        if (v[b] != c->seq_lens_q.v[b])
            return hx_fail(e, HX_ECASE, "[%s] seq_lens[%d] = %d but the case says %d", c->name, b,
                           v[b], c->seq_lens_q.v[b]);
    return hx_kv_check_inputs(c, in, c->seq_lens_q.v, c->seq_lens_q.n, e);
}

static int pd__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    return hx_add_attn_outputs(out, "out", c->dtype, c->seq_lens_q.n, c->heads_q, c->head_dim, e);
}

static int pd__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    const hx_tensor *bt = hx_tensors_get(in, "block_table");
    const ref_decode_args a = {
        .batch = c->seq_lens_q.n, .hq = c->heads_q, .dtype = c->dtype,
        .q = hx_tensors_get(in, "q")->data, .cache = hx_kv_cache(c, in),
        .block_table = bt->data, .max_blocks = (int)bt->shape[1],
        .seq_lens = hx_tensors_get(in, "seq_lens")->data,
        .opts = {.scale = c->scale, .softcap = c->softcap, .window_left = -1, .mode = mode,
                 .p_dtype = c->dtype},
    };
    int rc = ref_paged_decode(&a, hx_tensors_get(out, "out")->data, hx_tensors_get(out, "lse")->data);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

static hx_cost pd__cost(const hx_case *c)
{
    const double b = c->seq_lens_q.n, keys = (double)hx_lens_total(&c->seq_lens_q);
    double blocks = 0;
    for (int i = 0; i < c->seq_lens_q.n; i++)
        blocks += ((int64_t)c->seq_lens_q.v[i] + c->block_size - 1) / c->block_size;
    const double es = (double)ref_dtype_size(c->dtype), qo = b * c->heads_q * c->head_dim * es;
    hx_cost k = {
        .flops = 2.0 * keys * c->heads_q * 2.0 * c->head_dim,
        .bytes = qo + keys * hx_kv_token_bytes(c) + 4.0 * (blocks + b) +
                 (c->kv_dtype == REF_FP8E4M3 ? 8.0 : 0.0) + qo + 4.0 * c->heads_q * b,
    };
    return k;
}

static void pd__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    const size_t b = (size_t)c->seq_lens_q.n;
    size_t seq, head;
    if (strcmp(name, "lse") == 0) {
        head = i / b;
        seq = i % b;
        snprintf(buf, n, "seq %zu (seq_len %d) head %zu", seq, c->seq_lens_q.v[seq], head);
        return;
    }
    seq = i / ((size_t)c->heads_q * c->head_dim);
    head = i / (size_t)c->head_dim % (size_t)c->heads_q;
    snprintf(buf, n, "seq %zu (seq_len %d) head %zu dim %zu", seq, c->seq_lens_q.v[seq], head,
             i % (size_t)c->head_dim);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"

/* The device cache of a case (k_scale, v_scale are absent, NULL, unless it is fp8). */
static const char *pd__simple_unsupported(const hx_case *c, const hx_gpu *g)
{
    (void)g;
    if (c->head_dim > 256)
        return "simple keeps a query row and its output in one block: head_dim up to 256";
    if (c->heads_q > 65535)
        return "simple puts query heads on the grid's y dimension: at most 65535";
    return NULL;
}

static opt_paged_decode_args pd__args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out)
{
    const int batch = c->seq_lens_q.n;
    opt_paged_decode_args a = {
        .batch = batch, .hq = c->heads_q, .dtype = (int)c->dtype, .q = hx_dptr(in, "q"),
        .cache = hx_kv_gpu_cache(c, in), .block_table = hx_dptr(in, "block_table"),
        .max_blocks = hx_kv_gpu_max_blocks(in, batch), .seq_lens = hx_dptr(in, "seq_lens"),
        .scale = (float)c->scale, .softcap = (float)c->softcap,
        .out = hx_dptr(out, "out"), .lse = hx_dptr(out, "lse"),
    };
    return a;
}

static int pd__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_paged_decode_args a = pd__args(c, in, out);
    return opt_paged_decode_simple(&a, stream);
}

/* split_kv: the block table's width, as hx_make_block_table sizes it (at least one block), in
 * tokens: the longest context the kernel plans its splits for. */
static int pd__split_kv_max_blocks(const hx_case *c)
{
    int64_t mb = 1;
    for (int i = 0; i < c->seq_lens_q.n; i++) {
        const int64_t nb = ((int64_t)c->seq_lens_q.v[i] + c->block_size - 1) / c->block_size;
        mb = nb > mb ? nb : mb;
    }
    return mb > INT32_MAX ? INT32_MAX : (int)mb;
}

static size_t pd__split_kv_workspace(const hx_case *c)
{
    return opt_paged_decode_split_kv_workspace(c->seq_lens_q.n, c->heads_q, c->heads_kv, c->head_dim,
                                               pd__split_kv_max_blocks(c), c->block_size);
}

/* The limits both split-KV variants share (optimized/paged_split.h). */
static const char *pd__split_limits(const hx_case *c)
{
    if ((int64_t)pd__split_kv_max_blocks(c) * c->block_size > INT32_MAX - 1024)
        return "the split-KV kernels keep token positions in int: contexts up to 2^31 - 1024 tokens";
    if ((int64_t)c->seq_lens_q.n * c->heads_q > INT32_MAX)
        return "the split-KV kernels launch one combine block per (sequence, query head): at most 2^31 - 1";
    return NULL;
}

static const char *pd__split_kv_unsupported(const hx_case *c, const hx_gpu *g)
{
    (void)g;
    const char *why = opt_paged_decode_split_kv_unsupported(c->head_dim, (int)c->kv_dtype, c->layout);
    if (why)
        return why;
    return pd__split_limits(c);
}

static int pd__split_kv_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_paged_decode_args a = pd__args(c, in, out);
    return opt_paged_decode_split_kv(&a, hx_dptr(out, "workspace"), pd__split_kv_workspace(c), stream);
}

static size_t pd__mma_workspace(const hx_case *c)
{
    return opt_paged_decode_mma_workspace(c->seq_lens_q.n, c->heads_q, c->heads_kv, c->head_dim,
                                          pd__split_kv_max_blocks(c), c->block_size);
}

static const char *pd__mma_unsupported(const hx_case *c, const hx_gpu *g)
{
    const char *why = opt_paged_decode_mma_unsupported(c->head_dim, (int)c->dtype, (int)c->kv_dtype,
                                                       g->cc_major);
    if (why)
        return why;
    return pd__split_limits(c);
}

static int pd__mma_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_paged_decode_args a = pd__args(c, in, out);
    return opt_paged_decode_mma(&a, hx_dptr(out, "workspace"), pd__mma_workspace(c), stream);
}

static const hx_variant pd__variants[] = {
    {.name = "simple",
     .summary = "one block per (sequence, head), cached keys streamed with an online softmax in f32",
     .unsupported = pd__simple_unsupported,
     .run = pd__simple_run,
     .batch_invariant = 1},
    {.name = "split_kv",
     .summary = "flash-decoding: blocks over (sequence, KV head, split) serve all the KV head's query "
                "heads, 16-byte loads in the native layout, f32 partials merged by LSE",
     .unsupported = pd__split_kv_unsupported,
     .run = pd__split_kv_run,
     .workspace = pd__split_kv_workspace},
    {.name = "mma",
     .summary = "flash-decoding on the matrix cores: 16 query heads per block, 64-token tiles "
                "copied asynchronously in the native layout through a 2-4 deep ring, fp8 decoded "
                "in registers after ldmatrix",
     .unsupported = pd__mma_unsupported,
     .run = pd__mma_run,
     .workspace = pd__mma_workspace},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_paged_decode = {
    .name = "paged_decode",
    .summary = "paged decode: one query per sequence over its paged K/V (nhd/hnd/shuffled, bf16/f16/fp8)",
    .keys = "batch heads_q heads_kv head_dim seq_lens scale softcap dtype layout kv_dtype block_size "
            "num_blocks block_alloc k_scale v_scale",
    .outputs = "out lse",
    .check = pd__check,
    .make_inputs = pd__make_inputs,
    .check_inputs = pd__check_inputs,
    .make_outputs = pd__make_outputs,
    .reference = pd__reference,
    .cost = pd__cost,
    .locate = pd__locate,
    HX_VARIANTS(pd__variants),
};
