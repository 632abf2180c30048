/* ref_merge_states.c - SPEC section 3, merge_attn_states: two partial attention results over
 * disjoint key sets combined row by row with the section 0 merge (ref_merge_row).
 */
#include "ref.h"

#include <omp.h>
#include <stdlib.h>

/* oa, ob: [t, h, d] in dtype   la, lb: [h, t] f32   out: [t, h, d]   lse: [h, t] */
int ref_merge_states(int t, int h, int d, ref_dtype dtype, const void *oa, const void *ob,
                     const float *la, const float *lb, double *out, double *lse)
{
    if (t < 0 || h <= 0 || d <= 0)
        return REF_EINVAL;
    if (t > 0 && (!oa || !ob || !la || !lb || !out || !lse))
        return REF_EINVAL;
    if (!ref_dtype_is_float(dtype))
        return REF_EDTYPE;

    int nomem = 0;
#pragma omp parallel if (!omp_in_parallel())
    {
        double *ra = malloc(2 * (size_t)d * sizeof *ra);
        if (!ra) {
#pragma omp atomic write
            nomem = 1;
        }
#pragma omp for schedule(static)
        for (int i = 0; i < t; i++) {
            if (!ra)
                continue;
            double *rb = ra + d;
            for (int hh = 0; hh < h; hh++) {
                const size_t row = ((size_t)i * h + hh) * d, li = (size_t)hh * t + i;
                for (int c = 0; c < d; c++) {
                    ra[c] = ref_load(dtype, oa, row + c);
                    rb[c] = ref_load(dtype, ob, row + c);
                }
                ref_merge_row(d, ra, la[li], rb, lb[li], out + row, &lse[li]);
            }
        }
        free(ra);
    }
    return nomem ? REF_ENOMEM : REF_OK;
}
