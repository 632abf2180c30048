/* merge_states.c - path descriptor for merge_attn_states (SPEC section 3).
 *
 * Inputs  oa, ob [T, H, D] in the case dtype; la, lb [H, T] f32 (with -inf and +inf mixed in,
 *         since the merge rule for empty partial results is what this path must get right).
 * Outputs out [T, H, D] in the case dtype; lse [H, T] f32.
 */
#include "hx.h"

#include <math.h>
#include <string.h>

static int ms__check(hx_case *c, hx_err *e)
{
    int rc;
    if ((rc = hx_check_positive(e, c, "tokens", c->tokens)) ||
        (rc = hx_check_positive(e, c, "heads", c->heads_q)) ||
        (rc = hx_check_positive(e, c, "head_dim", c->head_dim)))
        return rc;
    if (c->dtype == REF_DTYPE_COUNT)
        c->dtype = REF_BF16;
    if (c->dtype != REF_BF16 && c->dtype != REF_F16 && c->dtype != REF_F32)
        return hx_case_fail(e, c, "dtype", "'%s' is not accepted here (accepted: bf16, f16, f32)",
                            ref_dtype_name(c->dtype));
    return HX_OK;
}

/* Partial LSEs: mostly finite, about 4% -inf (an empty chunk) and 2% +inf (FlashMLA's
 * convention for an empty set, which the merge must read as -inf), so that every branch of
 * the rule, including both sides empty, appears in any case of a few hundred rows. */
static void ms__fill_lse(hx_tensor *t, uint64_t key)
{
    uint64_t k = key ^ ref_hash_str(t->name);
    float *l = t->data;
    for (size_t i = 0; i < t->numel; i++) {
        double u = ref_rng_uniform(k, 2 * i);
        l[i] = u < 0.04 ? -INFINITY : u < 0.06 ? INFINITY
                                                : (float)(3.0 * ref_rng_normal(k, 2 * i + 1));
    }
}

static int ms__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    int64_t so[3] = {c->tokens, c->heads_q, c->head_dim}, sl[2] = {c->heads_q, c->tokens};
    hx_tensor *oa = hx_tensors_add(in, "oa", c->dtype, 3, so, e);
    hx_tensor *ob = oa ? hx_tensors_add(in, "ob", c->dtype, 3, so, e) : NULL;
    hx_tensor *la = ob ? hx_tensors_add(in, "la", REF_F32, 2, sl, e) : NULL;
    hx_tensor *lb = la ? hx_tensors_add(in, "lb", REF_F32, 2, sl, e) : NULL;
    if (!lb)
        return e->code;
    hx_tensor_fill_normal(oa, c->seed, 1.0);
    hx_tensor_fill_normal(ob, c->seed, 1.0);
    ms__fill_lse(la, c->seed);
    ms__fill_lse(lb, c->seed);
    return HX_OK;
}

static int ms__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    return hx_add_attn_outputs(out, "out", c->dtype, c->tokens, c->heads_q, c->head_dim, e);
}

static int ms__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    int rc = ref_merge_states(c->tokens, c->heads_q, c->head_dim, c->dtype,
                              hx_tensors_get(in, "oa")->data, hx_tensors_get(in, "ob")->data,
                              hx_tensors_get(in, "la")->data, hx_tensors_get(in, "lb")->data,
                              hx_tensors_get(out, "out")->data, hx_tensors_get(out, "lse")->data);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

static hx_cost ms__cost(const hx_case *c)
{
    double rows = (double)c->tokens * c->heads_q, es = (double)ref_dtype_size(c->dtype);
    hx_cost k = {.flops = 0, .bytes = rows * (3.0 * c->head_dim * es + 3.0 * 4)};
    return k;
}

static void ms__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    if (strcmp(name, "lse") == 0)
        snprintf(buf, n, "token %zu head %zu", i % (size_t)c->tokens, i / (size_t)c->tokens);
    else
        snprintf(buf, n, "token %zu head %zu dim %zu", i / ((size_t)c->heads_q * c->head_dim),
                 i / (size_t)c->head_dim % (size_t)c->heads_q, i % (size_t)c->head_dim);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"

static int ms__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    return opt_merge_states_simple(c->tokens, c->heads_q, c->head_dim, (int)c->dtype,
                                   hx_dptr(in, "oa"), hx_dptr(in, "ob"), hx_dptr(in, "la"),
                                   hx_dptr(in, "lb"), hx_dptr(out, "out"), hx_dptr(out, "lse"),
                                   stream);
}

static int ms__vec_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    return opt_merge_states_vec(c->tokens, c->heads_q, c->head_dim, (int)c->dtype,
                                hx_dptr(in, "oa"), hx_dptr(in, "ob"), hx_dptr(in, "la"),
                                hx_dptr(in, "lb"), hx_dptr(out, "out"), hx_dptr(out, "lse"), stream);
}

static const hx_variant ms__variants[] = {
    {.name = "simple", .summary = "one thread per output element", .run = ms__simple_run},
    {.name = "vec",
     .summary = "one thread group per (token, head) row, 16-byte accesses, LSEs read once per row",
     .run = ms__vec_run},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_merge_states = {
    .name = "merge_states",
    .summary = "merge_attn_states: combine two partial (out, lse) over disjoint key sets",
    .keys = "tokens heads head_dim dtype",
    .outputs = "out lse",
    .check = ms__check,
    .make_inputs = ms__make_inputs,
    .make_outputs = ms__make_outputs,
    .reference = ms__reference,
    .cost = ms__cost,
    .locate = ms__locate,
    HX_VARIANTS(ms__variants),
};
