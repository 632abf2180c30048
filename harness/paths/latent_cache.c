/* latent_cache.c - the paged latent cache of the MLA paths: defaults, generation with NaN in
 * every unused slot, and the checks of loaded cache inputs (latent_cache.h).
 */
#include "latent_cache.h"

#include <math.h>
#include <stdlib.h>

int hx_latent_cache_check_case(hx_case *c, hx_err *e)
{
    if (!c->block_size)
        c->block_size = 64;
    if (c->kv_dtype == REF_DTYPE_COUNT)
        c->kv_dtype = REF_BF16;
    if (c->kv_dtype != REF_BF16 && c->kv_dtype != REF_FP8E4M3)
        return hx_case_fail(e, c, "kv_dtype",
                            "'%s' is not a latent cache dtype (accepted: bf16, fp8e4m3)",
                            ref_dtype_name(c->kv_dtype));
    if (c->kv_dtype != REF_FP8E4M3 && c->k_scale > 0)
        return hx_case_fail(e, c, "k_scale", "applies to fp8e4m3 caches only (kv_dtype is %s)",
                            ref_dtype_name(c->kv_dtype));
    if (c->kv_dtype == REF_FP8E4M3 && c->k_scale == 0)
        c->k_scale = HX_LATENT_K_SCALE;
    return HX_OK;
}

int hx_latent_cache_make(const hx_case *c, hx_tensors *in, const int32_t *lens, int n, hx_err *e)
{
    const int bs = c->block_size;
    int pool = 0;
    hx_tensor *bt = hx_make_block_table(c, in, "block_table", lens, n, bs, &pool, e);
    if (!bt)
        return e->code;
    const int64_t shape[3] = {pool, bs, REF_MLA_ROW};
    hx_tensor *kv = hx_tensors_add(in, "kv_cache", c->kv_dtype, 3, shape, e);
    if (!kv)
        return e->code;
    if (c->kv_dtype == REF_FP8E4M3) {
        const int64_t one[1] = {1};
        hx_tensor *ks = hx_tensors_add(in, "k_scale", REF_F32, 1, one, e);
        if (!ks)
            return e->code;
        *(float *)ks->data = (float)c->k_scale;
    }

    /* used[blk]: how many leading offsets of the block hold a token (ids are not shared). */
    int32_t *used = calloc((size_t)pool + 1, sizeof *used);
    if (!used)
        return hx_fail(e, HX_ENOMEM, "[%s] out of memory for the cache map", c->name);
    const int32_t *tab = bt->data;
    const int64_t mb = bt->shape[1];
    for (int b = 0; b < n; b++)
        for (int64_t j = 0; j * bs < lens[b]; j++)
            used[tab[b * mb + j]] = (int32_t)(lens[b] - j * bs < bs ? lens[b] - j * bs : bs);

    const uint64_t key = c->seed ^ ref_hash_str("kv_cache");
    const float ks = (float)c->k_scale;
    const int fp8 = c->kv_dtype == REF_FP8E4M3;
    uint8_t *c8 = kv->data;
    uint16_t *c16 = kv->data;
    const int64_t slots = (int64_t)pool * bs;
#pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < slots; s++) {
        const size_t base = (size_t)s * REF_MLA_ROW;
        const int use = s % bs < used[s / bs];
        for (int d = 0; d < REF_MLA_ROW; d++) {
            const float x = use ? ref_fast_bf16_to_f32(ref_fast_f32_to_bf16(
                                      (float)ref_rng_normal(key, base + d)))
                                : NAN;
            /* fp8: SPEC section 1's writer, the quotient in f32 */
            if (fp8)
                c8[base + d] = ref_fast_f32_to_fp8e4m3(x / ks);
            else
                c16[base + d] = ref_fast_f32_to_bf16(x);
        }
    }
    free(used);
    return HX_OK;
}

int hx_latent_cache_check(const hx_case *c, const hx_tensors *in, const int32_t *lens, int n,
                          hx_err *e)
{
    const hx_tensor *kv = hx_tensors_get(in, "kv_cache");
    if (!kv || kv->dtype != c->kv_dtype || kv->ndim != 3 || kv->shape[1] != c->block_size ||
        kv->shape[2] != REF_MLA_ROW || kv->shape[0] > INT32_MAX)
        return hx_fail(e, HX_ECASE, "[%s] input 'kv_cache' must be %s [num_blocks, %d, %d]",
                       c->name, ref_dtype_name(c->kv_dtype), c->block_size, REF_MLA_ROW);
    int rc =
        hx_check_block_table(c, in, "block_table", lens, n, c->block_size, (int)kv->shape[0], e);
    if (rc)
        return rc;
    if (c->kv_dtype == REF_FP8E4M3) {
        const hx_tensor *ks = hx_tensors_get(in, "k_scale");
        if (!ks || ks->dtype != REF_F32 || ks->numel != 1)
            return hx_fail(e, HX_ECASE, "[%s] input 'k_scale' must be f32 [1]", c->name);
        const float v = *(const float *)ks->data;
        if (!(v > 0 && isfinite(v)))
            return hx_fail(e, HX_ECASE, "[%s] k_scale = %g must be a positive finite number",
                           c->name, v);
    }
    return HX_OK;
}

ref_mla_cache hx_latent_cache_ref(const hx_case *c, const hx_tensors *in)
{
    const hx_tensor *kv = hx_tensors_get(in, "kv_cache"), *ks = hx_tensors_get(in, "k_scale");
    const ref_mla_cache r = {kv->dtype, kv->data, kv->shape[0], c->block_size,
                             ks ? *(const float *)ks->data : 1.0};
    return r;
}
