/* ref_mha_varlen.c - SPEC section 4, varlen prefill (flash_attn_varlen_func): each sequence of a
 * packed batch is one ref_attn call on views into the packed tensors, so the masks, LSE and
 * empty-set conventions are exactly the core's.
 */
#include "ref.h"

static int ref__check_cu(int batch, const int32_t *cu)
{
    if (cu[0] != 0)
        return REF_ESHAPE;
    for (int b = 0; b < batch; b++)
        if (cu[b + 1] < cu[b])
            return REF_ESHAPE;
    return REF_OK;
}

/* out: [Tq, hq, dv]   lse: [hq, Tq] */
int ref_mha_varlen(const ref_varlen_args *a, double *out, double *lse)
{
    if (!a || !out || !lse || !a->cu_q || !a->cu_k)
        return REF_EINVAL;
    if (a->batch < 0 || a->hq <= 0 || a->hkv <= 0 || a->dqk <= 0 || a->dv <= 0)
        return REF_EINVAL;
    if (a->hq % a->hkv != 0)
        return REF_ESHAPE;
    if (!ref_dtype_is_float(a->dtype))
        return REF_EDTYPE;
    int err = ref__check_cu(a->batch, a->cu_q);
    if (err == REF_OK)
        err = ref__check_cu(a->batch, a->cu_k);
    if (err != REF_OK)
        return err;

    const int hq = a->hq, hkv = a->hkv, dqk = a->dqk, dv = a->dv;
    const ptrdiff_t tq = a->cu_q[a->batch];
    const size_t es = ref_dtype_size(a->dtype);
    for (int b = 0; b < a->batch && err == REF_OK; b++) {
        const int q0 = a->cu_q[b], k0 = a->cu_k[b];
        const int lq = a->cu_q[b + 1] - q0, lk = a->cu_k[b + 1] - k0;
        if (lq == 0)
            continue;
        const ref_view q = {a->dtype, (const char *)a->q + (size_t)q0 * hq * dqk * es,
                            (ptrdiff_t)hq * dqk, dqk};
        const ref_view k = {a->dtype, (const char *)a->k + (size_t)k0 * hkv * dqk * es,
                            (ptrdiff_t)hkv * dqk, dqk};
        const ref_view v = {a->dtype, (const char *)a->v + (size_t)k0 * hkv * dv * es,
                            (ptrdiff_t)hkv * dv, dv};
        err = ref_attn(lq, lk, hq, hkv, dqk, dv, q, k, v, &a->opts, out + (size_t)q0 * hq * dv,
                       (ptrdiff_t)hq * dv, lse + q0, tq);
    }
    return err;
}
