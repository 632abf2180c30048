/* gather_cache.c - path descriptor for gather_cache (SPEC section 2, cp_mha_gather_cache):
 * copy tokens [starts[b], starts[b] + lens[b]) of each sequence out of the paged cache into
 * contiguous rows, dequantized, in the standard layout the varlen kernels read.
 *
 * Inputs  block_table [B, max_blocks] i32; k_cache, v_cache holding context_lens[b] tokens per
 *         sequence (hx_kvcache.h: any layout, kv_dtype; NaN in every other slot); fp8 caches:
 *         k_scale, v_scale [1] f32; starts, lens [B] i32; cu_out [B + 1] i32.
 * Outputs k, v [sum(lens), Hkv, D] in the case dtype (bf16 by default, as SPEC says: fp8
 *         values are dequantized, then rounded to it). Compared bit-exactly.
 *
 * Case keys: context_lens = tokens in the cache, seq_lens = tokens to gather (default: all);
 * the start of each window is drawn from the case seed in [0, context_lens - seq_lens].
 */
#include "hx_kvcache.h"

#include <string.h>

/* Where sequence b's window starts: a pure function of the case, so locate() can name the
 * cached token behind an output row. */
static int32_t gc__start(const hx_case *c, int b)
{
    return (int32_t)ref_rng_range(c->seed ^ ref_hash_str("starts"), (uint64_t)b, 0,
                                  c->context_lens.v[b] - c->seq_lens_q.v[b]);
}

static int gc__check(hx_case *c, hx_err *e)
{
    int rc;
    if ((rc = hx_check_positive(e, c, "heads_kv", c->heads_kv)) ||
        (rc = hx_check_positive(e, c, "head_dim", c->head_dim)))
        return rc;
    if (!c->context_lens.set)
        return hx_case_fail(e, c, NULL, "missing key 'context_lens' (cached tokens per sequence)");
    if (!c->seq_lens_q.set && (rc = hx_lens_copy(&c->seq_lens_q, &c->context_lens, e)))
        return rc;
    for (int b = 0; b < c->seq_lens_q.n; b++)
        if (c->seq_lens_q.v[b] > c->context_lens.v[b])
            return hx_case_fail(e, c, "seq_lens",
                                "sequence %d gathers %d tokens but holds context_lens = %d", b,
                                c->seq_lens_q.v[b], c->context_lens.v[b]);
    if (c->dtype == REF_DTYPE_COUNT)
        c->dtype = REF_BF16;
    if (c->dtype != REF_BF16 && c->dtype != REF_F16)
        return hx_case_fail(e, c, "dtype", "'%s' is not accepted here (accepted: bf16, f16)",
                            ref_dtype_name(c->dtype));
    return hx_kv_check(c, e);
}

static int gc__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    const int nb = c->context_lens.n;
    const int64_t tc = hx_lens_total(&c->context_lens);
    const int64_t sc[3] = {tc, c->heads_kv, c->head_dim}, sb[1] = {nb};
    hx_tensors rows = {0};
    hx_tensor *k = hx_tensors_add(&rows, "k", c->dtype, 3, sc, e);
    hx_tensor *v = k ? hx_tensors_add(&rows, "v", c->dtype, 3, sc, e) : NULL;
    int rc = v ? HX_OK : e->code;
    if (!rc) {
        hx_tensor_fill_normal(k, c->seed, 1.0);
        hx_tensor_fill_normal(v, c->seed, 1.0);
        rc = hx_kv_make(c, in, c->context_lens.v, nb, c->dtype, k->data, v->data, e);
    }
    hx_tensors_free(&rows);
    if (rc)
        return rc;
    hx_tensor *st = hx_tensors_add(in, "starts", REF_I32, 1, sb, e);
    hx_tensor *ln = st ? hx_tensors_add(in, "lens", REF_I32, 1, sb, e) : NULL;
    if (!ln || !hx_make_cu_tensor(in, "cu_out", &c->seq_lens_q, e))
        return e->code;
    for (int b = 0; b < nb; b++)
        ((int32_t *)st->data)[b] = gc__start(c, b);
    memcpy(ln->data, c->seq_lens_q.v, (size_t)nb * sizeof(int32_t));
    return HX_OK;
}

static int gc__check_inputs(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    const int nb = c->context_lens.n;
    const hx_tensor *st = hx_tensors_get(in, "starts"), *ln = hx_tensors_get(in, "lens");
    if (!st || !ln || st->dtype != REF_I32 || ln->dtype != REF_I32 || st->numel != (size_t)nb ||
        ln->numel != (size_t)nb)
        return hx_fail(e, HX_ECASE, "[%s] inputs 'starts' and 'lens' must be i32 [%d]", c->name, nb);
    const int32_t *s = st->data, *l = ln->data;
    for (int b = 0; b < nb; b++) {
        if (l[b] != c->seq_lens_q.v[b])
            return hx_fail(e, HX_ECASE, "[%s] lens[%d] = %d but the case says %d", c->name, b, l[b],
                           c->seq_lens_q.v[b]);
        if (s[b] < 0 || (int64_t)s[b] + l[b] > c->context_lens.v[b])
            return hx_fail(e, HX_ECASE,
                           "[%s] starts[%d] = %d: tokens [%d, %lld) are not all in the %d cached",
                           c->name, b, s[b], s[b], (long long)s[b] + l[b], c->context_lens.v[b]);
    }
    int rc = hx_check_cu_tensor(c, in, "cu_out", &c->seq_lens_q, e);
    return rc ? rc : hx_kv_check_inputs(c, in, c->context_lens.v, nb, e);
}

static int gc__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    const int64_t so[3] = {hx_lens_total(&c->seq_lens_q), c->heads_kv, c->head_dim};
    if (!hx_tensors_add(out, "k", c->dtype, 3, so, e) || !hx_tensors_add(out, "v", c->dtype, 3, so, e))
        return e->code;
    return HX_OK;
}

static int gc__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    const hx_tensor *bt = hx_tensors_get(in, "block_table");
    const ref_kv_cache kc = hx_kv_cache(c, in);
    int rc = ref_gather_cache(&kc, c->context_lens.n, bt->data, (int)bt->shape[1],
                              hx_tensors_get(in, "starts")->data, hx_tensors_get(in, "lens")->data,
                              hx_tensors_get(in, "cu_out")->data, c->dtype,
                              hx_tensors_get(out, "k")->data, hx_tensors_get(out, "v")->data);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

static hx_cost gc__cost(const hx_case *c)
{
    double blocks = 0;
    for (int b = 0; b < c->seq_lens_q.n; b++) {
        const int64_t s = gc__start(c, b), l = c->seq_lens_q.v[b];
        if (l > 0)
            blocks += (s + l - 1) / c->block_size - s / c->block_size + 1;
    }
    const double rows = (double)hx_lens_total(&c->seq_lens_q), nb = c->seq_lens_q.n;
    hx_cost k = {
        .flops = 0,
        .bytes = rows * hx_kv_token_bytes(c) + 4.0 * (blocks + 3 * nb + 1) +
                 (c->kv_dtype == REF_FP8E4M3 ? 8.0 : 0.0) +
                 rows * 2.0 * c->heads_kv * c->head_dim * (double)ref_dtype_size(c->dtype),
    };
    return k;
}

static void gc__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    const int64_t row = (int64_t)(i / ((size_t)c->heads_kv * c->head_dim));
    int seq;
    int64_t pos;
    hx_locate_varlen(&c->seq_lens_q, row, &seq, &pos);
    snprintf(buf, n, "seq %d token %lld head %zu dim %zu", seq,
             (long long)(seq >= 0 ? gc__start(c, seq) + pos : pos),
             i / (size_t)c->head_dim % (size_t)c->heads_kv, i % (size_t)c->head_dim);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"

/* The device cache of a case (k_scale, v_scale are absent, NULL, unless it is fp8). */
/* Columns of the block table [batch, max_blocks], from its device copy's size. */
static const char *gc__simple_unsupported(const hx_case *c, const hx_gpu *g)
{
    (void)g;
    if ((int64_t)c->heads_kv * c->head_dim > INT32_MAX)
        return "simple counts a row's (head, dim) elements in int";
    return NULL;
}

static opt_gather_cache_args gc__args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out)
{
    const int batch = c->context_lens.n;
    opt_gather_cache_args a = {
        .batch = batch, .max_blocks = hx_kv_gpu_max_blocks(in, batch),
        .rows = (int)hx_lens_total(&c->seq_lens_q), .dtype = (int)c->dtype,
        .cache = hx_kv_gpu_cache(c, in), .block_table = hx_dptr(in, "block_table"),
        .starts = hx_dptr(in, "starts"), .cu_out = hx_dptr(in, "cu_out"),
        .k = hx_dptr(out, "k"), .v = hx_dptr(out, "v"),
    };
    return a;
}

static int gc__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_gather_cache_args a = gc__args(c, in, out);
    return opt_gather_cache_simple(&a, stream);
}

static int gc__vec_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_gather_cache_args a = gc__args(c, in, out);
    return opt_gather_cache_vec(&a, stream);
}

static const hx_variant gc__variants[] = {
    {.name = "simple",
     .summary = "one block per gathered token, one thread per (head, dim) element",
     .unsupported = gc__simple_unsupported,
     .run = gc__simple_run},
    {.name = "vec",
     .summary = "one thread per (x-token cache group, head, x dims): 16-byte loads and stores, "
                "shuffled V transposed in registers",
     .unsupported = hx_kv_vec_unsupported,
     .run = gc__vec_run},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_gather_cache = {
    .name = "gather_cache",
    .summary = "gather_cache (cp_mha_gather_cache): token windows of a paged cache to contiguous rows",
    .keys = "batch heads_kv head_dim context_lens seq_lens dtype layout kv_dtype block_size "
            "num_blocks block_alloc k_scale v_scale",
    .outputs = "k v",
    .bit_exact = 1,
    .check = gc__check,
    .make_inputs = gc__make_inputs,
    .check_inputs = gc__check_inputs,
    .make_outputs = gc__make_outputs,
    .reference = gc__reference,
    .cost = gc__cost,
    .locate = gc__locate,
    HX_VARIANTS(gc__variants),
};
