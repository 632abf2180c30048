/* kvcache.c - the paged KV cache for the path descriptors (hx_kvcache.h): the cache keys'
 * defaults and checks, building a NaN-filled cache from logical rows with the reference
 * writer, checking loaded caches, and naming a cache element by (block, slot, head, dim).
 */
#include "hx_kvcache.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(HX_LAYOUT_NHD == (int)REF_KV_NHD && HX_LAYOUT_HND == (int)REF_KV_HND &&
                   HX_LAYOUT_SHUFFLED == (int)REF_KV_SHUFFLED,
               "the layout key's values are ref_kv_layout's");

/* A cache scale: the kernels receive an f32, so the case's value is rounded to one; it must
 * stay a normal f32, or dividing by it would overflow before fp8 saturation applies. */
static int hx__scale(hx_case *c, const char *key, double *s, hx_err *e)
{
    if (c->kv_dtype != REF_FP8E4M3) {
        if (*s != 0)
            return hx_case_fail(e, c, key, "only fp8e4m3 caches are scaled (kv_dtype is %s)",
                                ref_dtype_name(c->kv_dtype));
        return HX_OK;
    }
    if (*s == 0)
        *s = HX_KV_DEFAULT_SCALE;
    const float f = (float)*s;
    if (!(f >= FLT_MIN && f <= FLT_MAX))
        return hx_case_fail(e, c, key, "%g is not a normal f32 (accepted: %g .. %g)", *s,
                            (double)FLT_MIN, (double)FLT_MAX);
    *s = f;
    return HX_OK;
}

int hx_kv_check(hx_case *c, hx_err *e)
{
    int rc;
    if (c->kv_dtype == REF_DTYPE_COUNT)
        c->kv_dtype = c->dtype;
    if (c->kv_dtype != c->dtype && c->kv_dtype != REF_FP8E4M3)
        return hx_case_fail(e, c, "kv_dtype",
                            "'%s' is not a cache dtype for dtype %s (accepted: %s, or fp8e4m3)",
                            ref_dtype_name(c->kv_dtype), ref_dtype_name(c->dtype),
                            ref_dtype_name(c->dtype));
    if (c->layout < 0)
        c->layout = HX_LAYOUT_NHD;
    if (!c->block_size)
        c->block_size = 16;
    if (c->block_alloc < 0)
        c->block_alloc = HX_ALLOC_PERMUTED;
    if (c->layout == HX_LAYOUT_SHUFFLED) {
        const int x = ref_kv_x(c->kv_dtype);
        if (c->head_dim % x)
            return hx_case_fail(e, c, "head_dim",
                                "%d is not a multiple of x = %d, which layout = shuffled needs "
                                "for kv_dtype %s (x = 16 bytes of elements)",
                                c->head_dim, x, ref_dtype_name(c->kv_dtype));
        if (c->block_size % x)
            return hx_case_fail(e, c, "block_size",
                                "%d is not a multiple of x = %d, which layout = shuffled needs "
                                "for kv_dtype %s (x = 16 bytes of elements)",
                                c->block_size, x, ref_dtype_name(c->kv_dtype));
    }
    if ((rc = hx__scale(c, "k_scale", &c->k_scale, e)) || (rc = hx__scale(c, "v_scale", &c->v_scale, e)))
        return rc;
    return HX_OK;
}

int hx_kv_check_attention(hx_case *c, hx_err *e)
{
    int rc;
    if ((rc = hx_check_positive(e, c, "heads_q", c->heads_q)) ||
        (rc = hx_check_positive(e, c, "head_dim", c->head_dim)))
        return rc;
    if (!c->heads_kv)
        c->heads_kv = c->heads_q;
    if (c->heads_q % c->heads_kv)
        return hx_case_fail(e, c, "heads_kv", "%d does not divide heads_q = %d (GQA needs Hq %% Hkv == 0)",
                            c->heads_kv, c->heads_q);
    if (c->scale == 0)
        c->scale = 1.0 / sqrt((double)c->head_dim);
    if (c->dtype == REF_DTYPE_COUNT)
        c->dtype = REF_BF16;
    if (c->dtype != REF_BF16 && c->dtype != REF_F16)
        return hx_case_fail(e, c, "dtype", "'%s' is not accepted here (accepted: bf16, f16)",
                            ref_dtype_name(c->dtype));
    return hx_kv_check(c, e);
}

int64_t hx_kv_pool_blocks(const hx_case *c, const int32_t *lens, int n)
{
    if (c->num_blocks > 0)
        return c->num_blocks;
    int64_t needed = 0;
    for (int b = 0; b < n; b++)
        needed += ((int64_t)lens[b] + c->block_size - 1) / c->block_size;
    return needed;
}

/* The description without buffers: enough for shapes and coordinates. */
static ref_kv_cache hx__desc(const hx_case *c, int num_blocks)
{
    ref_kv_cache k = {
        .layout = (ref_kv_layout)c->layout, .dtype = c->kv_dtype, .num_blocks = num_blocks,
        .block_size = c->block_size, .heads = c->heads_kv, .head_dim = c->head_dim,
        .k_scale = (float)c->k_scale, .v_scale = (float)c->v_scale,
    };
    return k;
}

ref_kv_cache hx_kv_cache(const hx_case *c, const hx_tensors *in)
{
    const hx_tensor *k = hx_tensors_get(in, "k_cache"), *v = hx_tensors_get(in, "v_cache");
    ref_kv_cache kc = hx__desc(c, k ? (int)k->shape[0] : 0);
    kc.k = k ? k->data : NULL;
    kc.v = v ? v->data : NULL;
    if (c->kv_dtype == REF_FP8E4M3) {
        const hx_tensor *ks = hx_tensors_get(in, "k_scale"), *vs = hx_tensors_get(in, "v_scale");
        kc.k_scale = ks ? *(const float *)ks->data : NAN;
        kc.v_scale = vs ? *(const float *)vs->data : NAN;
    }
    return kc;
}

int hx_kv_add_caches(const hx_case *c, hx_tensors *set, int num_blocks, hx_err *e)
{
    const ref_kv_cache d = hx__desc(c, num_blocks);
    int64_t sk[5], sv[5];
    const int nk = ref_kv_shape(&d, 0, sk), nv = ref_kv_shape(&d, 1, sv);
    if (!hx_tensors_add(set, "k_cache", c->kv_dtype, nk, sk, e) ||
        !hx_tensors_add(set, "v_cache", c->kv_dtype, nv, sv, e))
        return e->code;
    return HX_OK;
}

int hx_kv_add_scales(const hx_case *c, hx_tensors *in, hx_err *e)
{
    if (c->kv_dtype != REF_FP8E4M3)
        return HX_OK;
    const int64_t one[1] = {1};
    hx_tensor *ks = hx_tensors_add(in, "k_scale", REF_F32, 1, one, e);
    hx_tensor *vs = ks ? hx_tensors_add(in, "v_scale", REF_F32, 1, one, e) : NULL;
    if (!vs)
        return e->code;
    *(float *)ks->data = (float)c->k_scale;
    *(float *)vs->data = (float)c->v_scale;
    return HX_OK;
}

void hx_kv_fill_nan(hx_tensor *t)
{
    unsigned char nan[8];
    ref_store(t->dtype, nan, 0, NAN);
    const size_t es = ref_dtype_size(t->dtype);
    unsigned char *d = t->data;
    if (es == 1) {
        memset(d, nan[0], t->bytes);
        return;
    }
    for (size_t i = 0; i < t->numel; i++)
        memcpy(d + i * es, nan, es);
}

int64_t hx_kv_slot(const int32_t *bt, int block_size, int64_t pos)
{
    return (int64_t)bt[pos / block_size] * block_size + pos % block_size;
}

int hx_kv_make(const hx_case *c, hx_tensors *in, const int32_t *lens, int n, ref_dtype src_dtype,
               const void *k, const void *v, hx_err *e)
{
    int pool = 0;
    const hx_tensor *bt = hx_make_block_table(c, in, "block_table", lens, n, c->block_size, &pool, e);
    if (!bt || hx_kv_add_caches(c, in, pool, e) || hx_kv_add_scales(c, in, e))
        return e->code;
    hx_kv_fill_nan(hx_tensors_get(in, "k_cache"));
    hx_kv_fill_nan(hx_tensors_get(in, "v_cache"));

    int64_t total = 0;
    for (int b = 0; b < n; b++)
        total += lens[b];
    int64_t *slots = malloc(((size_t)total + 1) * sizeof *slots);
    if (!slots)
        return hx_fail(e, HX_ENOMEM, "[%s] out of memory for %lld cache slots", c->name,
                       (long long)total);
    const int32_t *tab = bt->data;
    const int64_t mb = bt->shape[1];
    for (int64_t b = 0, i = 0; b < n; b++)
        for (int64_t p = 0; p < lens[b]; p++)
            slots[i++] = hx_kv_slot(tab + b * mb, c->block_size, p);
    const ref_kv_cache kc = hx_kv_cache(c, in);
    const int rc = ref_cache_write(&kc, total, src_dtype, k, v, slots);
    free(slots);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] writing the KV cache: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

static int hx__check_tensor(const hx_case *c, const hx_tensors *in, const char *name,
                            const ref_kv_cache *d, int is_v, hx_err *e)
{
    const hx_tensor *t = hx_tensors_get(in, name);
    int64_t s[5];
    const int nd = ref_kv_shape(d, is_v, s);
    int ok = t && t->dtype == d->dtype && t->ndim == nd;
    for (int i = 0; ok && i < nd; i++)
        ok = t->shape[i] == s[i];
    if (!ok)
        return hx_fail(e, HX_ECASE, "[%s] input '%s' must be %s of the %s layout's shape for %d blocks",
                       c->name, name, ref_dtype_name(d->dtype), hx_layout_name(c->layout),
                       d->num_blocks);
    return HX_OK;
}

int hx_kv_check_cache(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    const hx_tensor *k = hx_tensors_get(in, "k_cache");
    if (!k || k->ndim < 1 || k->shape[0] > INT32_MAX)
        return hx_fail(e, HX_ECASE, "[%s] input 'k_cache' is missing or has no block dimension",
                       c->name);
    const ref_kv_cache kc = hx_kv_cache(c, in);
    int rc;
    if ((rc = hx__check_tensor(c, in, "k_cache", &kc, 0, e)) ||
        (rc = hx__check_tensor(c, in, "v_cache", &kc, 1, e)))
        return rc;
    if (c->kv_dtype != REF_FP8E4M3)
        return HX_OK;
    const char *names[2] = {"k_scale", "v_scale"};
    for (int i = 0; i < 2; i++) {
        const hx_tensor *s = hx_tensors_get(in, names[i]);
        if (!s || s->dtype != REF_F32 || s->numel != 1)
            return hx_fail(e, HX_ECASE, "[%s] input '%s' must be f32 [1]", c->name, names[i]);
        const float v = *(const float *)s->data;
        if (!(isfinite(v) && v > 0))
            return hx_fail(e, HX_ECASE, "[%s] input '%s' = %g; a cache scale is finite and > 0",
                           c->name, names[i], (double)v);
    }
    return HX_OK;
}

int hx_kv_check_inputs(const hx_case *c, const hx_tensors *in, const int32_t *lens, int n,
                       hx_err *e)
{
    int rc = hx_kv_check_cache(c, in, e);
    if (rc)
        return rc;
    const int pool = (int)hx_tensors_get(in, "k_cache")->shape[0];
    return hx_check_block_table(c, in, "block_table", lens, n, c->block_size, pool, e);
}

void hx_kv_locate(const hx_case *c, int is_v, size_t i, char *buf, size_t n)
{
    const ref_kv_cache d = hx__desc(c, 1);
    int64_t block;
    int slot, head, dim;
    ref_kv_coords(&d, is_v, i, &block, &slot, &head, &dim);
    snprintf(buf, n, "block %lld slot %d head %d dim %d", (long long)block, slot, head, dim);
}

double hx_kv_token_bytes(const hx_case *c)
{
    return 2.0 * c->heads_kv * c->head_dim * (double)ref_dtype_size(c->kv_dtype);
}

#ifdef ATTN_HAVE_GPU
_Static_assert((int)OPT_KV_NHD == (int)HX_LAYOUT_NHD && (int)OPT_KV_HND == (int)HX_LAYOUT_HND &&
                   (int)OPT_KV_SHUFFLED == (int)HX_LAYOUT_SHUFFLED,
               "opt.h layout codes must equal HX_LAYOUT_*");

opt_kv_cache hx_kv_gpu_cache(const hx_case *c, const hx_dtensors *in)
{
    opt_kv_cache kc = {
        .layout = c->layout, .dtype = (int)c->kv_dtype, .block_size = c->block_size,
        .heads = c->heads_kv, .head_dim = c->head_dim,
        .k = hx_dptr(in, "k_cache"), .v = hx_dptr(in, "v_cache"),
        .k_scale = hx_dptr(in, "k_scale"), .v_scale = hx_dptr(in, "v_scale"),
    };
    return kc;
}

opt_extend_args hx_kv_gpu_attn_args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out)
{
    const int batch = c->seq_lens_q.n;
    int64_t tq = 0;
    for (int b = 0; b < batch; b++)
        tq += c->seq_lens_q.v[b];
    opt_extend_args a = {
        .batch = batch, .tq = (int)tq, .hq = c->heads_q,
        .dtype = (int)c->dtype, .scale = (float)c->scale, .softcap = (float)c->softcap,
        .cache = {.heads = c->heads_kv, .head_dim = c->head_dim,
                  .dtype = (int)c->kv_dtype, .layout = (int)c->layout,
                  .block_size = c->block_size},
    };
    if (in && out) {
        a.q = hx_dptr(in, "q"), a.k_new = hx_dptr(in, "k_new"), a.v_new = hx_dptr(in, "v_new");
        a.cu_q = hx_dptr(in, "cu_seqlens_q"), a.context_lens = hx_dptr(in, "context_lens");
        a.cache = hx_kv_gpu_cache(c, in), a.block_table = hx_dptr(in, "block_table");
        a.max_blocks = hx_kv_gpu_max_blocks(in, batch);
        a.out = hx_dptr(out, "out"), a.lse = hx_dptr(out, "lse");
    }
    return a;
}

int hx_kv_gpu_max_blocks(const hx_dtensors *in, int batch)
{
    for (int i = 0; i < in->n && batch > 0; i++)
        if (strcmp(in->t[i].name, "block_table") == 0)
            return (int)(in->t[i].bytes / sizeof(int32_t) / (size_t)batch);
    return 0;
}

const char *hx_kv_simple_unsupported(const hx_case *c, const hx_gpu *g)
{
    (void)g;
    if (c->head_dim > 256)
        return "simple keeps a query row and its output in one block: head_dim up to 256";
    if (c->heads_q > 65535)
        return "simple puts query heads on the grid's y dimension: at most 65535";
    return NULL;
}

const char *hx_kv_vec_unsupported(const hx_case *c, const hx_gpu *g)
{
    (void)g;
    const int64_t x = c->kv_dtype == REF_FP8E4M3 ? 16 : 8;
    if (c->head_dim % x)
        return c->kv_dtype == REF_FP8E4M3
                   ? "vec moves 16-byte chunks of 16 fp8 dims: head_dim must be a multiple of 16"
                   : "vec moves 16-byte chunks of 8 dims: head_dim must be a multiple of 8";
    if ((int64_t)c->heads_kv * (c->head_dim / x) * 256 > INT32_MAX)
        return "vec counts a block's (token, head, 16-byte chunk) units in int";
    return NULL;
}
#endif // ATTN_HAVE_GPU
