/* mla_decode.c - path descriptor for absorbed MLA decode (SPEC section 8, DeepSeek V3/R1).
 *
 * Inputs  q [B, Hq, 576] bf16 (= [q_lat 512 | q_pe 64]);
 *         kv_cache [N, bs, 576] bf16 or fp8e4m3 (= [c_kv 512 | k_pe 64], one latent head;
 *         NaN in every slot no sequence uses), k_scale [1] f32 (fp8 only);
 *         block_table [B, max_blocks] i32; seq_lens [B] i32.
 * Outputs out_lat [B, Hq, 512] bf16 (value = the first 512 dims of the rows), lse [Hq, B] f32.
 */
#include "latent_cache.h"

#include <math.h>
#include <string.h>

static int md__check(hx_case *c, hx_err *e)
{
    int rc;
    if (!c->seq_lens_q.set)
        return hx_case_fail(e, c, NULL, "missing key 'seq_lens' (cached tokens per sequence)");
    if (!c->heads_q)
        c->heads_q = 16;
    if ((rc = hx_latent_cache_check_case(c, e)))
        return rc;
    if (c->scale == 0)
        c->scale = ref_mla_default_scale();
    c->heads_kv = 1;
    c->head_dim = REF_MLA_ROW;
    c->head_dim_v = REF_MLA_LAT;
    c->dtype = REF_BF16;
    return HX_OK;
}

/* Inputs are drawn so that logits have sd 1 whatever the scale: latent rows sd 1, q sd
 * 1 / (scale * sqrt(576)). */
static int md__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    const int b = c->seq_lens_q.n;
    const int64_t sq[3] = {b, c->heads_q, REF_MLA_ROW}, sl[1] = {b};
    hx_tensor *q = hx_tensors_add(in, "q", REF_BF16, 3, sq, e);
    if (!q || hx_latent_cache_make(c, in, c->seq_lens_q.v, b, e))
        return e->code;
    hx_tensor *lens = hx_tensors_add(in, "seq_lens", REF_I32, 1, sl, e);
    if (!lens)
        return e->code;
    memcpy(lens->data, c->seq_lens_q.v, (size_t)b * sizeof(int32_t));
    hx_tensor_fill_normal(q, c->seed, 1.0 / (c->scale * sqrt((double)REF_MLA_ROW)));
    return HX_OK;
}

static int md__check_inputs(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    const int b = c->seq_lens_q.n;
    const hx_tensor *lens = hx_tensors_get(in, "seq_lens");
    if (!lens || lens->dtype != REF_I32 || lens->numel != (size_t)b)
        return hx_fail(e, HX_ECASE, "[%s] input 'seq_lens' must be i32 [%d]", c->name, b);
    for (int i = 0; i < b; i++)
        if (((const int32_t *)lens->data)[i] != c->seq_lens_q.v[i])
            return hx_fail(e, HX_ECASE, "[%s] seq_lens[%d] = %d but the case says %d", c->name, i,
                           ((const int32_t *)lens->data)[i], c->seq_lens_q.v[i]);
    return hx_latent_cache_check(c, in, c->seq_lens_q.v, b, e);
}

static int md__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    return hx_add_attn_outputs(out, "out_lat", REF_BF16, c->seq_lens_q.n, c->heads_q, REF_MLA_LAT,
                               e);
}

static int md__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    const hx_tensor *bt = hx_tensors_get(in, "block_table");
    const ref_mla_decode_args a = {
        .batch = c->seq_lens_q.n, .hq = c->heads_q,
        .q_dtype = REF_BF16, .q = hx_tensors_get(in, "q")->data,
        .cache = hx_latent_cache_ref(c, in),
        .block_table = bt->data, .max_blocks = (int)bt->shape[1],
        .seq_lens = hx_tensors_get(in, "seq_lens")->data,
        .scale = c->scale, .mode = mode, .p_dtype = REF_BF16,
    };
    int rc =
        ref_mla_decode(&a, hx_tensors_get(out, "out_lat")->data, hx_tensors_get(out, "lse")->data);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

static hx_cost md__cost(const hx_case *c)
{
    double keys = 0, blocks = 0;
    for (int b = 0; b < c->seq_lens_q.n; b++) {
        keys += c->seq_lens_q.v[b];
        blocks += (c->seq_lens_q.v[b] + c->block_size - 1) / c->block_size;
    }
    const double bq = (double)c->seq_lens_q.n * c->heads_q;
    hx_cost k = {
        .flops = 2.0 * keys * c->heads_q * (REF_MLA_ROW + REF_MLA_LAT),
        /* one latent row per cached token, read once for all heads */
        .bytes = 2.0 * bq * REF_MLA_ROW + keys * REF_MLA_ROW * ref_dtype_size(c->kv_dtype) +
                 4.0 * (blocks + c->seq_lens_q.n) + (c->kv_dtype == REF_FP8E4M3 ? 4.0 : 0.0) +
                 2.0 * bq * REF_MLA_LAT + 4.0 * bq,
    };
    return k;
}

static void md__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    const size_t b = c->seq_lens_q.n;
    size_t seq, head;
    if (strcmp(name, "lse") == 0) {
        seq = i % b;
        head = i / b;
    } else {
        seq = i / ((size_t)c->heads_q * REF_MLA_LAT);
        head = i / REF_MLA_LAT % (size_t)c->heads_q;
    }
    int len = snprintf(buf, n, "seq %zu (len %d) head %zu", seq, c->seq_lens_q.v[seq], head);
    if (strcmp(name, "lse") != 0 && len >= 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, " dim %zu", i % REF_MLA_LAT);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"

/* Columns of the block table [batch, max_blocks], from its device copy's size. */
static int md__max_blocks(const hx_dtensors *in, int batch)
{
    for (int i = 0; i < in->n && batch > 0; i++)
        if (strcmp(in->t[i].name, "block_table") == 0)
            return (int)(in->t[i].bytes / sizeof(int32_t) / (size_t)batch);
    return 0;
}

static const char *md__simple_unsupported(const hx_case *c, const hx_gpu *g)
{
    (void)g;
    if (c->heads_q > 65535)
        return "simple puts query heads on the grid's y dimension: at most 65535";
    return NULL;
}

static opt_mla_decode_args md__args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out)
{
    const int batch = c->seq_lens_q.n;
    opt_mla_decode_args a = {
        .batch = batch, .hq = c->heads_q, .q = hx_dptr(in, "q"),
        .cache = {.dtype = (int)c->kv_dtype, .block_size = c->block_size,
                  .data = hx_dptr(in, "kv_cache"), .k_scale = hx_dptr(in, "k_scale")},
        .block_table = hx_dptr(in, "block_table"), .max_blocks = md__max_blocks(in, batch),
        .seq_lens = hx_dptr(in, "seq_lens"), .scale = (float)c->scale,
        .out = hx_dptr(out, "out_lat"), .lse = hx_dptr(out, "lse"),
    };
    return a;
}

static int md__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_mla_decode_args a = md__args(c, in, out);
    return opt_mla_decode_simple(&a, stream);
}

static const char *md__split_kv_unsupported(const hx_case *c, const hx_gpu *g)
{
    return opt_mla_decode_split_kv_unsupported(c->seq_lens_q.n, c->heads_q, g->cc_major);
}

static size_t md__split_kv_workspace(const hx_case *c)
{
    return opt_mla_decode_split_kv_workspace(c->seq_lens_q.n, c->heads_q);
}

static int md__split_kv_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out,
                            void *stream)
{
    const opt_mla_decode_args a = md__args(c, in, out);
    return opt_mla_decode_split_kv(&a, hx_dptr(out, "workspace"), md__split_kv_workspace(c),
                                   stream);
}

static const char *md__wgmma_unsupported(const hx_case *c, const hx_gpu *g)
{
    return opt_mla_decode_wgmma_unsupported(c->seq_lens_q.n, c->heads_q, g->cc_major);
}

static size_t md__wgmma_workspace(const hx_case *c)
{
    return opt_mla_decode_wgmma_workspace(c->seq_lens_q.n, c->heads_q);
}

static int md__wgmma_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_mla_decode_args a = md__args(c, in, out);
    return opt_mla_decode_wgmma(&a, hx_dptr(out, "workspace"), md__wgmma_workspace(c), stream);
}

static const hx_variant md__variants[] = {
    {.name = "simple",
     .summary = "one block per (sequence, head), latent rows in tiles (a warp per 576-dim logit), "
                "online softmax in f32",
     .unsupported = md__simple_unsupported,
     .run = md__simple_run,
     .batch_invariant = 1},
    {.name = "split_kv",
     .summary = "tensor cores (mma.sync), 16 heads per block so each latent row is read once, "
                "equal key ranges per block, fp8 decoded in registers, LSE combine",
     .unsupported = md__split_kv_unsupported,
     .run = md__split_kv_run,
     .workspace = md__split_kv_workspace},
    {.name = "wgmma",
     .summary = "Hopper warpgroup MMA (sm_90a): 64 heads per block, 64-key tiles in shared memory, "
                "S and P.V by wgmma, fp8 decoded to bf16 in shared memory; split_kv's ranges and "
                "combine",
     .unsupported = md__wgmma_unsupported,
     .run = md__wgmma_run,
     .workspace = md__wgmma_workspace},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_mla_decode = {
    .name = "mla_decode",
    .summary = "absorbed MLA decode (DeepSeek V3/R1): paged latent cache [N, bs, 576], bf16 or fp8",
    .keys = "batch heads_q seq_lens kv_dtype k_scale block_size num_blocks block_alloc scale",
    .outputs = "out_lat lse",
    .check = md__check,
    .make_inputs = md__make_inputs,
    .check_inputs = md__check_inputs,
    .make_outputs = md__make_outputs,
    .reference = md__reference,
    .cost = md__cost,
    .locate = md__locate,
    HX_VARIANTS(md__variants),
};
