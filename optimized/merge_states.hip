/* merge_states.hip - SPEC section 3, merge_attn_states: two partial attention results over
 * disjoint key sets, combined with the section 0 merge.
 *
 * merge_states_simple: one thread per output element (token, head, dim), grid-stride. Each
 *   thread reads its row's two LSEs (+inf read as -inf), weighs the two inputs in f32 and
 *   rounds the result to the storage dtype; the thread of dim 0 writes the row's LSE. Both
 *   sides empty (-inf): out = 0, lse = -inf.
 */
#include "gpu_port.h"
#include "numerics.h"

#include <math.h>
#include <stdint.h>

enum {
    MERGE__THREADS = 256,
    MERGE__MAX_BLOCKS = 65536, /* the grid-stride loop covers the rest */
};

/* ---------------------------------------------------------------------- kernel */
/* DT is the storage dtype of oa, ob and out. */
template <int DT>
__global__ void merge_states_simple_kernel(const void *__restrict__ oa, /* oa: [t, h, d] */
                                           const void *__restrict__ ob, /* ob: [t, h, d] */
                                           const float *__restrict__ la, /* la: [h, t] */
                                           const float *__restrict__ lb, /* lb: [h, t] */
                                           void *__restrict__ out,      /* out: [t, h, d] */
                                           float *__restrict__ lse,     /* lse: [h, t] */
                                           int t, int h, int d)
{
    const size_t n = (size_t)t * h * d;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const size_t row = e / (size_t)d; /* token * h + head */
        const size_t c = e - row * d;
        const size_t tok = row / (size_t)h, head = row - tok * h;
        const size_t li = head * (size_t)t + tok;
        float a = la[li], b = lb[li];
        if (a == INFINITY)
            a = -INFINITY;
        if (b == INFINITY)
            b = -INFINITY;
        float o, l;
        if (a == -INFINITY && b == -INFINITY) {
            o = 0.0f;
            l = -INFINITY;
        } else {
            /* Not fmaxf: a NaN LSE must reach the output, as in the reference. */
            const float m = a > b ? a : b;
            const float wa = expf(a - m), wb = expf(b - m), ws = wa + wb;
            o = (wa * num_load_f32(DT, oa, e) + wb * num_load_f32(DT, ob, e)) / ws;
            l = m + logf(ws);
        }
        num_store_f32(DT, out, e, o);
        if (c == 0)
            lse[li] = l;
    }
}

/* -------------------------------------------------------------------- launcher */
template <int DT>
static int merge__launch(int t, int h, int d, const void *oa, const void *ob, const float *la,
                         const float *lb, void *out, float *lse, hipStream_t stream)
{
    const size_t n = (size_t)t * h * d;
    size_t blocks = (n + MERGE__THREADS - 1) / MERGE__THREADS;
    if (blocks > MERGE__MAX_BLOCKS)
        blocks = MERGE__MAX_BLOCKS;
    merge_states_simple_kernel<DT><<<(unsigned)blocks, MERGE__THREADS, 0, stream>>>(
        oa, ob, la, lb, out, lse, t, h, d);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

extern "C" int opt_merge_states_simple(int t, int h, int d, int dtype, const void *oa,
                                       const void *ob, const float *la, const float *lb,
                                       void *out, float *lse, void *stream)
{
    if (t < 0 || h <= 0 || d <= 0)
        return OPT_EINVAL;
    if (t > 0 && (!oa || !ob || !la || !lb || !out || !lse))
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    switch (dtype) {
    case OPT_F32: return t ? merge__launch<OPT_F32>(t, h, d, oa, ob, la, lb, out, lse, s) : OPT_OK;
    case OPT_BF16: return t ? merge__launch<OPT_BF16>(t, h, d, oa, ob, la, lb, out, lse, s) : OPT_OK;
    case OPT_F16: return t ? merge__launch<OPT_F16>(t, h, d, oa, ob, la, lb, out, lse, s) : OPT_OK;
    case OPT_FP8E4M3:
        return t ? merge__launch<OPT_FP8E4M3>(t, h, d, oa, ob, la, lb, out, lse, s) : OPT_OK;
    default: return OPT_EINVAL;
    }
}
