/* ref_paged_decode.c - SPEC section 5, paged decode: each sequence's cached rows are gathered
 * from the paged cache into a contiguous f64 buffer (dequantized; rounded to the query dtype
 * under REF_EMULATE) and attended by its one query token through ref_attn, so masks, LSE and
 * the empty-sequence convention (out = 0, lse = -inf) are exactly the core's.
 */
#include "ref_paged.h"

#include <omp.h>
#include <stdlib.h>

int ref_paged_decode(const ref_decode_args *a, double *out, double *lse)
{
    if (!a)
        return REF_EINVAL;
    int err = ref_kv_check(&a->cache);
    if (err != REF_OK)
        return err;
    const int batch = a->batch, hq = a->hq, hkv = a->cache.heads, d = a->cache.head_dim;
    if (batch < 0 || hq <= 0 || a->max_blocks < 0)
        return REF_EINVAL;
    if (batch > 0 && (!a->q || !a->block_table || !a->seq_lens || !out || !lse))
        return REF_EINVAL;
    if (hq % hkv != 0)
        return REF_ESHAPE;
    if (!ref_dtype_is_float(a->dtype))
        return REF_EDTYPE;
    for (int b = 0; b < batch; b++)
        if (a->seq_lens[b] < 0)
            return REF_EINVAL;

    ref_attn_opts o = a->opts;
    o.causal = 0;
    o.window_left = -1;
    const ref_dtype round_to = o.mode == REF_EMULATE ? a->dtype : REF_F64;
    const size_t es = ref_dtype_size(a->dtype);
    /* One sequence per thread: its ref_attn runs serial inside the region. */
#pragma omp parallel for schedule(dynamic) if (!omp_in_parallel() && batch > 1)
    for (int b = 0; b < batch; b++) {
        const ref_view q = {a->dtype, (const char *)a->q + (size_t)b * hq * d * es,
                            (ptrdiff_t)hq * d, d};
        const int rc = ref_kv_attend(&a->cache, a->block_table + (size_t)b * a->max_blocks,
                                     a->max_blocks, a->seq_lens[b], round_to, 1, hq, q, &o,
                                     out + (size_t)b * hq * d, lse + b, batch);
        if (rc != REF_OK) {
#pragma omp critical(ref__decode_err)
            if (err == REF_OK)
                err = rc;
        }
    }
    return err;
}
