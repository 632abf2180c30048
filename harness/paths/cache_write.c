/* cache_write.c - path descriptor for cache_write (SPEC section 1, reshape_and_cache): scatter
 * the K/V rows of a step's new tokens into their slots of the paged cache.
 *
 * Inputs  k, v [T, Hkv, D] in the case dtype; slot_mapping [T] i64 (flat slot, -1 = skip);
 *         k_cache, v_cache, the caches before the write (hx_kvcache.h shapes, kv_dtype);
 *         fp8 caches: k_scale, v_scale [1] f32.
 * Outputs k_cache, v_cache after the write (same names and shapes; in place on a GPU).
 *         Compared bit-exactly, every element: the written slots and all the others.
 *
 * Case keys: seq_lens = new tokens per sequence, written at positions context_lens[b] ..
 * context_lens[b] + seq_lens[b] - 1 of sequence b through a block table (not an input: the
 * kernel sees only the slots); tokens = T >= sum(seq_lens), the tokens past the sum being
 * padding with slot -1, as a CUDA-graph-padded batch has. The caches start out holding random
 * values of the cache dtype (not NaN: a value compared bit-exactly shows a stray write that a
 * NaN-for-NaN match would hide).
 */
#include "hx_kvcache.h"

#include <stdlib.h>
#include <string.h>

static int32_t cw__ctx(const hx_case *c, int b)
{
    return c->context_lens.set ? c->context_lens.v[b] : 0;
}

/* Tokens of each sequence after the write. malloc'd. */
static int32_t *cw__after(const hx_case *c)
{
    int32_t *l = malloc(((size_t)c->seq_lens_q.n + 1) * sizeof *l);
    for (int b = 0; l && b < c->seq_lens_q.n; b++)
        l[b] = cw__ctx(c, b) + c->seq_lens_q.v[b];
    return l;
}

static int cw__check(hx_case *c, hx_err *e)
{
    int rc;
    if ((rc = hx_check_positive(e, c, "heads_kv", c->heads_kv)) ||
        (rc = hx_check_positive(e, c, "head_dim", c->head_dim)))
        return rc;
    if (!c->seq_lens_q.set)
        return hx_case_fail(e, c, NULL, "missing key 'seq_lens' (new tokens per sequence)");
    for (int b = 0; b < c->seq_lens_q.n; b++)
        if ((int64_t)cw__ctx(c, b) + c->seq_lens_q.v[b] > INT32_MAX)
            return hx_case_fail(e, c, "context_lens", "sequence %d: context + new tokens pass %d",
                                b, INT32_MAX);
    const int64_t sum = hx_lens_total(&c->seq_lens_q);
    if (!c->tokens)
        c->tokens = (int)sum;
    if (c->tokens < sum)
        return hx_case_fail(e, c, "tokens", "%d is fewer than the %lld new tokens of seq_lens",
                            c->tokens, (long long)sum);
    if (c->dtype == REF_DTYPE_COUNT)
        c->dtype = REF_BF16;
    if (c->dtype != REF_BF16 && c->dtype != REF_F16)
        return hx_case_fail(e, c, "dtype", "'%s' is not accepted here (accepted: bf16, f16)",
                            ref_dtype_name(c->dtype));
    return hx_kv_check(c, e);
}

static int cw__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    const int nb = c->seq_lens_q.n;
    const int64_t t = c->tokens, skv[3] = {t, c->heads_kv, c->head_dim}, ss[1] = {t};
    int32_t *after = cw__after(c);
    if (!after)
        return hx_fail(e, HX_ENOMEM, "out of memory");
    hx_tensors scratch = {0};
    int pool = 0;
    const hx_tensor *bt =
        hx_make_block_table(c, &scratch, "block_table", after, nb, c->block_size, &pool, e);
    free(after);
    hx_tensor *k = bt ? hx_tensors_add(in, "k", c->dtype, 3, skv, e) : NULL;
    hx_tensor *v = k ? hx_tensors_add(in, "v", c->dtype, 3, skv, e) : NULL;
    hx_tensor *sm = v ? hx_tensors_add(in, "slot_mapping", REF_I64, 1, ss, e) : NULL;
    int rc = sm && !hx_kv_add_caches(c, in, pool, e) && !hx_kv_add_scales(c, in, e) ? HX_OK : e->code;
    if (!rc) {
        hx_tensor_fill_normal(k, c->seed, 1.0);
        hx_tensor_fill_normal(v, c->seed, 1.0);
        /* Old contents of the magnitude new rows have: fp8 codes of x / scale. */
        const int fp8 = c->kv_dtype == REF_FP8E4M3;
        hx_tensor_fill_normal(hx_tensors_get(in, "k_cache"), c->seed, fp8 ? 1.0 / c->k_scale : 1.0);
        hx_tensor_fill_normal(hx_tensors_get(in, "v_cache"), c->seed, fp8 ? 1.0 / c->v_scale : 1.0);
        int64_t *slots = sm->data, i = 0;
        const int32_t *tab = bt->data;
        for (int b = 0; b < nb; b++)
            for (int64_t p = cw__ctx(c, b); p < cw__ctx(c, b) + c->seq_lens_q.v[b]; p++)
                slots[i++] = hx_kv_slot(tab + (size_t)b * bt->shape[1], c->block_size, p);
        while (i < t)
            slots[i++] = -1;
    }
    hx_tensors_free(&scratch);
    return rc;
}

static int cw__check_inputs(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    int rc = hx_kv_check_cache(c, in, e);
    if (rc)
        return rc;
    const hx_tensor *sm = hx_tensors_get(in, "slot_mapping");
    if (!sm || sm->dtype != REF_I64 || sm->numel != (size_t)c->tokens)
        return hx_fail(e, HX_ECASE, "[%s] input 'slot_mapping' must be i64 [%d]", c->name, c->tokens);
    const int64_t nslots = hx_tensors_get(in, "k_cache")->shape[0] * (int64_t)c->block_size;
    const int64_t *s = sm->data;
    /* Which token took each slot, to name both of a duplicate pair. */
    int64_t *owner = malloc(((size_t)nslots + 1) * sizeof *owner);
    if (!owner)
        return hx_fail(e, HX_ENOMEM, "out of memory for %lld slots", (long long)nslots);
    for (int64_t j = 0; j < nslots; j++)
        owner[j] = -1;
    for (int64_t i = 0; i < c->tokens && !rc; i++) {
        if (s[i] == -1)
            continue;
        if (s[i] < -1 || s[i] >= nslots)
            rc = hx_fail(e, HX_ECASE, "[%s] slot_mapping[%lld] = %lld is outside [-1, %lld)",
                         c->name, (long long)i, (long long)s[i], (long long)nslots);
        else if (owner[s[i]] >= 0)
            rc = hx_fail(e, HX_ECASE, "[%s] slot_mapping[%lld] and [%lld] are both slot %lld",
                         c->name, (long long)owner[s[i]], (long long)i, (long long)s[i]);
        else
            owner[s[i]] = i;
    }
    free(owner);
    return rc;
}

/* The caches after the write; a pool of the size make_inputs builds. */
static int cw__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    int32_t *after = cw__after(c);
    if (!after)
        return hx_fail(e, HX_ENOMEM, "out of memory");
    const int64_t pool = hx_kv_pool_blocks(c, after, c->seq_lens_q.n);
    free(after);
    return hx_kv_add_caches(c, out, (int)pool, e);
}

static int cw__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    ref_kv_cache kc = hx_kv_cache(c, in);
    const hx_tensor *kin = hx_tensors_get(in, "k_cache"), *vin = hx_tensors_get(in, "v_cache");
    /* The inputs stay as they were: the write goes to copies, read back element by element. */
    kc.k = malloc(kin->bytes + 1);
    kc.v = malloc(vin->bytes + 1);
    int rc = kc.k && kc.v ? REF_OK : REF_ENOMEM;
    if (rc == REF_OK) {
        memcpy(kc.k, kin->data, kin->bytes);
        memcpy(kc.v, vin->data, vin->bytes);
        rc = ref_cache_write(&kc, c->tokens, c->dtype, hx_tensors_get(in, "k")->data,
                             hx_tensors_get(in, "v")->data, hx_tensors_get(in, "slot_mapping")->data);
    }
    if (rc == REF_OK) {
        double *ko = hx_tensors_get(out, "k_cache")->data, *vo = hx_tensors_get(out, "v_cache")->data;
        for (size_t i = 0; i < kin->numel; i++) {
            ko[i] = ref_load(c->kv_dtype, kc.k, i);
            vo[i] = ref_load(c->kv_dtype, kc.v, i);
        }
    }
    free(kc.k);
    free(kc.v);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

static hx_cost cw__cost(const hx_case *c)
{
    const double rows = (double)hx_lens_total(&c->seq_lens_q);
    hx_cost k = {
        .flops = 0,
        .bytes = 8.0 * c->tokens +
                 rows * 2.0 * c->heads_kv * c->head_dim * (double)ref_dtype_size(c->dtype) +
                 (c->kv_dtype == REF_FP8E4M3 ? 8.0 : 0.0) + rows * hx_kv_token_bytes(c),
    };
    return k;
}

static void cw__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    hx_kv_locate(c, strcmp(name, "v_cache") == 0, i, buf, n);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"

/* In place: the kernel writes the output caches, which start as copies of the input ones;
 * the fp8 scales (absent otherwise) are inputs. */
static opt_cache_write_args cw__args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out)
{
    opt_cache_write_args a = {
        .tokens = c->tokens, .dtype = (int)c->dtype,
        .k = hx_dptr(in, "k"), .v = hx_dptr(in, "v"), .slot_mapping = hx_dptr(in, "slot_mapping"),
        .cache = hx_kv_gpu_cache(c, in),
    };
    a.cache.k = hx_dptr(out, "k_cache");
    a.cache.v = hx_dptr(out, "v_cache");
    return a;
}

static int cw__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_cache_write_args a = cw__args(c, in, out);
    return opt_cache_write_simple(&a, stream);
}

static int cw__vec_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_cache_write_args a = cw__args(c, in, out);
    return opt_cache_write_vec(&a, stream);
}

static const hx_variant cw__variants[] = {
    {.name = "simple",
     .summary = "one thread per (token, head, dim) element, written at its slot per layout",
     .run = cw__simple_run},
    {.name = "vec",
     .summary = "one thread per (x tokens, head, x dims): 16-byte loads and stores; shuffled V "
                "by runs of slots inside a cache x-group, transposed in registers",
     .unsupported = hx_kv_vec_unsupported,
     .run = cw__vec_run},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_cache_write = {
    .name = "cache_write",
    .summary = "cache_write (reshape_and_cache): new K/V rows into their paged-cache slots",
    .keys = "batch tokens heads_kv head_dim seq_lens context_lens dtype layout kv_dtype block_size "
            "num_blocks block_alloc k_scale v_scale",
    .outputs = "k_cache v_cache",
    .bit_exact = 1,
    .check = cw__check,
    .make_inputs = cw__make_inputs,
    .check_inputs = cw__check_inputs,
    .make_outputs = cw__make_outputs,
    .reference = cw__reference,
    .cost = cw__cost,
    .locate = cw__locate,
    HX_VARIANTS(cw__variants),
};
