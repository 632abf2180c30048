/* mha_varlen.c - path descriptor for varlen prefill (SPEC section 4, flash_attn_varlen_func).
 *
 * Inputs  q [Tq, Hq, Dqk], k [Tk, Hkv, Dqk], v [Tk, Hkv, Dv] in the case dtype,
 *         cu_seqlens_q, cu_seqlens_k [B + 1] i32.
 * Outputs out [Tq, Hq, Dv] in the case dtype, lse [Hq, Tq] f32.
 */
#include "hx.h"

#include <math.h>
#include <string.h>

static int mv__check(hx_case *c, hx_err *e)
{
    int rc;
    if ((rc = hx_check_positive(e, c, "heads_q", c->heads_q)) ||
        (rc = hx_check_positive(e, c, "head_dim", c->head_dim)))
        return rc;
    if (!c->seq_lens_q.set)
        return hx_case_fail(e, c, NULL, "missing key 'seq_lens' (per-sequence query lengths)");
    if (!c->heads_kv)
        c->heads_kv = c->heads_q;
    if ((rc = hx_check_positive(e, c, "heads_kv", c->heads_kv)))
        return rc;
    if (c->heads_q % c->heads_kv)
        return hx_case_fail(e, c, "heads_kv", "%d does not divide heads_q = %d (GQA needs Hq %% Hkv == 0)",
                            c->heads_kv, c->heads_q);
    if (!c->head_dim_v)
        c->head_dim_v = c->head_dim;
    if ((rc = hx_check_positive(e, c, "head_dim_v", c->head_dim_v)))
        return rc;
    if (!c->seq_lens_k.set && (rc = hx_lens_copy(&c->seq_lens_k, &c->seq_lens_q, e)))
        return rc;
    if (c->seq_lens_k.n != c->seq_lens_q.n)
        return hx_case_fail(e, c, "seq_lens_k", "has %d sequences but seq_lens_q has %d",
                            c->seq_lens_k.n, c->seq_lens_q.n);
    if (c->causal < 0)
        c->causal = 1;
    if (c->scale == 0)
        c->scale = 1.0 / sqrt((double)c->head_dim);
    if (c->dtype == REF_DTYPE_COUNT)
        c->dtype = REF_BF16;
    if (c->dtype != REF_BF16 && c->dtype != REF_F16 && c->dtype != REF_F32)
        return hx_case_fail(e, c, "dtype", "'%s' is not a prefill dtype (accepted: bf16, f16, f32)",
                            ref_dtype_name(c->dtype));
    return HX_OK;
}

static int mv__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    int64_t tq = hx_lens_total(&c->seq_lens_q), tk = hx_lens_total(&c->seq_lens_k);
    int64_t sq[3] = {tq, c->heads_q, c->head_dim}, sk[3] = {tk, c->heads_kv, c->head_dim},
            sv[3] = {tk, c->heads_kv, c->head_dim_v};
    hx_tensor *q = hx_tensors_add(in, "q", c->dtype, 3, sq, e);
    hx_tensor *k = q ? hx_tensors_add(in, "k", c->dtype, 3, sk, e) : NULL;
    hx_tensor *v = k ? hx_tensors_add(in, "v", c->dtype, 3, sv, e) : NULL;
    if (!v || !hx_make_cu_tensor(in, "cu_seqlens_q", &c->seq_lens_q, e) ||
        !hx_make_cu_tensor(in, "cu_seqlens_k", &c->seq_lens_k, e))
        return e->code;
    hx_tensor_fill_normal(q, c->seed, 1.0);
    hx_tensor_fill_normal(k, c->seed, 1.0);
    hx_tensor_fill_normal(v, c->seed, 1.0);
    return HX_OK;
}

static int mv__check_inputs(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    int rc = hx_check_cu_tensor(c, in, "cu_seqlens_q", &c->seq_lens_q, e);
    return rc ? rc : hx_check_cu_tensor(c, in, "cu_seqlens_k", &c->seq_lens_k, e);
}

static int mv__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    return hx_add_attn_outputs(out, "out", c->dtype, hx_lens_total(&c->seq_lens_q), c->heads_q,
                               c->head_dim_v, e);
}

static int mv__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    ref_varlen_args a = {
        .batch = c->seq_lens_q.n, .hq = c->heads_q, .hkv = c->heads_kv,
        .dqk = c->head_dim, .dv = c->head_dim_v,
        .cu_q = hx_tensors_get(in, "cu_seqlens_q")->data,
        .cu_k = hx_tensors_get(in, "cu_seqlens_k")->data,
        .dtype = c->dtype,
        .q = hx_tensors_get(in, "q")->data, .k = hx_tensors_get(in, "k")->data,
        .v = hx_tensors_get(in, "v")->data,
        .opts = {.scale = c->scale, .softcap = c->softcap, .causal = c->causal,
                 .window_left = c->window_left, .mode = mode, .p_dtype = c->dtype},
    };
    int rc = ref_mha_varlen(&a, hx_tensors_get(out, "out")->data, hx_tensors_get(out, "lse")->data);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

static hx_cost mv__cost(const hx_case *c)
{
    double keys = 0;
    for (int b = 0; b < c->seq_lens_q.n; b++) {
        int64_t lq = c->seq_lens_q.v[b], lk = c->seq_lens_k.v[b];
        for (int64_t i = 0; i < lq; i++)
            keys += (double)hx_visible_keys(lq, lk, i, c->causal, c->window_left);
    }
    double tq = (double)hx_lens_total(&c->seq_lens_q), tk = (double)hx_lens_total(&c->seq_lens_k);
    double es = (double)ref_dtype_size(c->dtype), b = c->seq_lens_q.n;
    hx_cost k = {
        .flops = 2.0 * keys * c->heads_q * (c->head_dim + c->head_dim_v),
        .bytes = es * (tq * c->heads_q * (c->head_dim + c->head_dim_v) +
                       tk * c->heads_kv * (c->head_dim + c->head_dim_v)) +
                 4.0 * (2 * (b + 1) + tq * c->heads_q),
    };
    return k;
}

static void mv__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    int64_t token, head, dim = -1;
    hx_locate_attn(name, i, hx_lens_total(&c->seq_lens_q), c->heads_q, c->head_dim_v, &token, &head,
                   &dim);
    int seq;
    int64_t pos;
    hx_locate_varlen(&c->seq_lens_q, token, &seq, &pos);
    int len = snprintf(buf, n, "seq %d token %lld head %lld", seq, (long long)pos, (long long)head);
    if (dim >= 0 && len >= 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, " dim %lld", (long long)dim);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"

static const char *mv__simple_unsupported(const hx_case *c, const hx_gpu *g)
{
    (void)g;
    if (c->head_dim > 256 || c->head_dim_v > 256)
        return "simple keeps a query row and its output in one block: head dims up to 256";
    if (c->heads_q > 65535)
        return "simple puts query heads on the grid's y dimension: at most 65535";
    return NULL;
}

static opt_varlen_args mv__args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out)
{
    opt_varlen_args a = {
        .batch = c->seq_lens_q.n, .tq = (int)hx_lens_total(&c->seq_lens_q), .hq = c->heads_q,
        .hkv = c->heads_kv, .dqk = c->head_dim, .dv = c->head_dim_v, .dtype = (int)c->dtype,
        .scale = (float)c->scale, .softcap = (float)c->softcap, .causal = c->causal,
        .window_left = c->window_left,
    };
    if (in && out) {
        a.q = hx_dptr(in, "q"), a.k = hx_dptr(in, "k"), a.v = hx_dptr(in, "v");
        a.cu_q = hx_dptr(in, "cu_seqlens_q"), a.cu_k = hx_dptr(in, "cu_seqlens_k");
        a.out = hx_dptr(out, "out"), a.lse = hx_dptr(out, "lse");
    }
    return a;
}

static int mv__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_varlen_args a = mv__args(c, in, out);
    return opt_mha_varlen_simple(&a, stream);
}

static const char *mv__mma_unsupported(const hx_case *c, const hx_gpu *g)
{
    const opt_varlen_args a = mv__args(c, NULL, NULL);
    return opt_mha_varlen_mma_unsupported(&a, g->cc_major);
}

static size_t mv__mma_workspace(const hx_case *c)
{
    return opt_mha_varlen_mma_workspace(c->seq_lens_q.n);
}

static int mv__mma_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_varlen_args a = mv__args(c, in, out);
    return opt_mha_varlen_mma(&a, hx_dptr(out, "workspace"), mv__mma_workspace(c), stream);
}

static const char *mv__wgmma_unsupported(const hx_case *c, const hx_gpu *g)
{
    const opt_varlen_args a = mv__args(c, NULL, NULL);
    return opt_mha_varlen_wgmma_unsupported(&a, g->cc_major);
}

static size_t mv__wgmma_workspace(const hx_case *c)
{
    return opt_mha_varlen_wgmma_workspace(c->seq_lens_q.n);
}

static int mv__wgmma_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_varlen_args a = mv__args(c, in, out);
    return opt_mha_varlen_wgmma(&a, hx_dptr(out, "workspace"), mv__wgmma_workspace(c), stream);
}

static const char *mv__portable_unsupported(const hx_case *c, const hx_gpu *g)
{
    (void)g;
    const opt_varlen_args a = mv__args(c, NULL, NULL);
    return opt_mha_varlen_portable_unsupported(&a);
}

static int mv__portable_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out,
                            void *stream)
{
    const opt_varlen_args a = mv__args(c, in, out);
    return opt_mha_varlen_portable(&a, hx_dptr(out, "workspace"), mv__mma_workspace(c), stream);
}

static const hx_variant mv__variants[] = {
    {.name = "simple",
     .summary = "one block per (token, head), keys streamed with an online softmax in f32",
     .unsupported = mv__simple_unsupported,
     .run = mv__simple_run,
     .batch_invariant = 1},
    {.name = "mma",
     .summary = "FlashAttention-2 style: 64-row query tiles, mma.sync, cp.async double buffer",
     .unsupported = mv__mma_unsupported,
     .run = mv__mma_run,
     .workspace = mv__mma_workspace,
     .batch_invariant = 1},
    {.name = "wgmma",
     .summary = "Hopper sm_90a: 128-row tiles over two warpgroups, wgmma on swizzled shared tiles",
     .unsupported = mv__wgmma_unsupported,
     .run = mv__wgmma_run,
     .workspace = mv__wgmma_workspace,
     .batch_invariant = 1},
    {.name = "portable",
     .summary = "64-row tiles on gpu_port.h's vendor-neutral matrix primitive (MFMA on CDNA, "
                "mma.sync on NVIDIA), S and P through shared memory: the AMD path, bf16",
     .unsupported = mv__portable_unsupported,
     .run = mv__portable_run,
     .workspace = mv__mma_workspace,
     .batch_invariant = 1},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_mha_varlen = {
    .name = "mha_varlen",
    .summary = "varlen prefill (flash_attn_varlen_func): causal/window/softcap, GQA, Dqk != Dv",
    .keys = "batch heads_q heads_kv head_dim head_dim_v seq_lens seq_lens_q seq_lens_k "
            "scale softcap causal window_left dtype",
    .outputs = "out lse",
    .check = mv__check,
    .make_inputs = mv__make_inputs,
    .check_inputs = mv__check_inputs,
    .make_outputs = mv__make_outputs,
    .reference = mv__reference,
    .cost = mv__cost,
    .locate = mv__locate,
    HX_VARIANTS(mv__variants),
};
