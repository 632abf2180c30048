/* ref_mixed.c - SPEC section 7, one serving step: decode, extend and prefill requests in
 * arrival order over one paged cache that already holds every request's context and new
 * tokens. The contract is the same for all three kinds (query i of request r sees keys
 * j <= c_r + i), so each request is one ref_attn over its c_r + n_r cached rows with the
 * bottom-right causal mask, written at its own rows of out and lse: the output is in the
 * original token order by construction, whatever order a GPU design runs the kinds in.
 */
#include "ref_paged.h"

#include <limits.h>
#include <omp.h>
#include <stdlib.h>

int ref_mixed(const ref_mixed_args *a, double *out, double *lse)
{
    if (!a)
        return REF_EINVAL;
    int err = ref_kv_check(&a->cache);
    if (err != REF_OK)
        return err;
    const int batch = a->batch, hq = a->hq, hkv = a->cache.heads, d = a->cache.head_dim;
    if (batch < 0 || hq <= 0 || a->max_blocks < 0)
        return REF_EINVAL;
    if (batch == 0)
        return REF_OK;
    if (!a->cu_q || !a->context_lens || !a->block_table)
        return REF_EINVAL;
    if (hq % hkv != 0)
        return REF_ESHAPE;
    if (!ref_dtype_is_float(a->dtype))
        return REF_EDTYPE;
    if (a->cu_q[0] != 0)
        return REF_ESHAPE;
    for (int r = 0; r < batch; r++) {
        if (a->cu_q[r + 1] < a->cu_q[r])
            return REF_ESHAPE;
        if (a->context_lens[r] < 0 ||
            (int64_t)a->context_lens[r] + (a->cu_q[r + 1] - a->cu_q[r]) > INT_MAX)
            return REF_EINVAL;
    }
    const int64_t t = a->cu_q[batch];
    if (t > 0 && (!a->q || !out || !lse))
        return REF_EINVAL;

    ref_attn_opts o = a->opts;
    o.causal = 1;
    o.window_left = -1;
    const ref_dtype round_to = o.mode == REF_EMULATE ? a->dtype : REF_F64;
    const size_t es = ref_dtype_size(a->dtype);
#pragma omp parallel for schedule(dynamic) if (!omp_in_parallel() && batch > 1)
    for (int r = 0; r < batch; r++) {
        const int q0 = a->cu_q[r], n = a->cu_q[r + 1] - q0, lk = a->context_lens[r] + n;
        if (n == 0)
            continue;
        const ref_view q = {a->dtype, (const char *)a->q + (size_t)q0 * hq * d * es,
                            (ptrdiff_t)hq * d, d};
        const int rc = ref_kv_attend(&a->cache, a->block_table + (size_t)r * a->max_blocks,
                                     a->max_blocks, lk, round_to, n, hq, q, &o,
                                     out + (size_t)q0 * hq * d, lse + q0, t);
        if (rc != REF_OK) {
#pragma omp critical(ref__mixed_err)
            if (err == REF_OK)
                err = rc;
        }
    }
    return err;
}
