/* merge_vec.hip - SPEC section 3, merge_attn_states, as a streaming kernel with 16-byte
 * accesses (issue 5 item 4).
 *
 * merge_states_vec: one thread group per (token, head) row: a block of ty x tx threads covers
 *   ty consecutive tokens of one head, tx threads per row, each thread 16 bytes of oa, ob and
 *   out at a time (8 bf16/f16 or 4 f32 elements; rows whose byte length is not a multiple of
 *   16 fall back to one element per access). Each thread reads its row's two LSEs once (+inf
 *   read as -inf), so the f32 weights are computed per 16 bytes rather than per element, and
 *   the LSE loads of a block are consecutive tokens of one head: [h, t] is read and written
 *   coalesced. Heads are the grid's fastest dimension, so the blocks in flight stream
 *   contiguous memory. Per element: merge_rule.h's pa * oa + pb * ob in f32 with the row's
 *   normalised weights, rounded to the storage dtype (simple divides every element by
 *   wa + wb instead); both sides empty: out = 0, lse = -inf.
 */
#include "gpu_port.h"
#include "merge_rule.h"
#include "numerics.h"

#include <math.h>
#include <stdint.h>

enum {
    MV__THREADS = 256,
    MV__MAX_GRID_X = 1 << 16, /* heads beyond: the grid-stride loop covers them */
    MV__MAX_GRID_Y = 65535,   /* tokens beyond grid.y * ty: likewise */
};

/* ------------------------------------------------------------------ elements */
/* Element j of a 16-byte word w in storage dtype DT, as f32; j is a compile-time constant in
 * the unrolled loops below, so w stays in registers. */
template <int DT>
__device__ inline float mv__get(const uint32_t (&w)[4], int j)
{
    if (DT == OPT_F32)
        return num_bits_f32(w[j]);
    const uint16_t b = (uint16_t)(w[j / 2] >> (16 * (j % 2)));
    return DT == OPT_BF16 ? num_bf16_to_f32(b) : gpu_f16_to_f32(b);
}

template <int DT>
__device__ inline void mv__put(uint32_t (&w)[4], int j, float v)
{
    if (DT == OPT_F32) {
        w[j] = num_f32_bits(v);
        return;
    }
    const uint32_t b = DT == OPT_BF16 ? num_f32_to_bf16(v) : gpu_f32_to_f16(v);
    if (j % 2)
        w[j / 2] |= b << 16;
    else
        w[j / 2] = b;
}

/* V elements of DT at element index e of p into w (VEC16: one 16-byte load; else element 0). */
template <int DT, bool VEC16>
__device__ inline void mv__load(const void *p, size_t e, uint32_t (&w)[4])
{
    if (VEC16) {
        const uint4 r = *(const uint4 *)((const char *)p + e * (DT == OPT_F32 ? 4 : 2));
        w[0] = r.x, w[1] = r.y, w[2] = r.z, w[3] = r.w;
    } else {
        w[0] = DT == OPT_F32 ? ((const uint32_t *)p)[e] : ((const uint16_t *)p)[e];
    }
}

template <int DT, bool VEC16>
__device__ inline void mv__store(void *p, size_t e, const uint32_t (&w)[4])
{
    if (VEC16)
        *(uint4 *)((char *)p + e * (DT == OPT_F32 ? 4 : 2)) = make_uint4(w[0], w[1], w[2], w[3]);
    else if (DT == OPT_F32)
        ((uint32_t *)p)[e] = w[0];
    else
        ((uint16_t *)p)[e] = (uint16_t)w[0];
}

/* ---------------------------------------------------------------------- kernel */
/* DT: storage dtype of oa, ob and out (f32, bf16, f16). VEC16: 16-byte accesses (the row is a
 * multiple of 16 bytes and every pointer 16-byte aligned), else one element per access.
 * Block (tx, ty): threadIdx.x walks a row in accesses (tx <= the accesses of a row), threadIdx.y
 * picks the token. */
template <int DT, bool VEC16>
__global__ void __launch_bounds__(MV__THREADS)
merge_states_vec_kernel(const void *__restrict__ oa,  /* oa: [t, h, d] */
                        const void *__restrict__ ob,  /* ob: [t, h, d] */
                        const float *__restrict__ la, /* la: [h, t] */
                        const float *__restrict__ lb, /* lb: [h, t] */
                        void *__restrict__ out,       /* out: [t, h, d] */
                        float *__restrict__ lse,      /* lse: [h, t] */
                        int t, int h, int d)
{
    constexpr int V = VEC16 ? 16 / (DT == OPT_F32 ? 4 : 2) : 1; /* elements per access */
    const int per_row = d / V;
    const int64_t tok_stride = (int64_t)gridDim.y * blockDim.y;
    for (int head = blockIdx.x; head < h; head += gridDim.x) {
        for (int64_t tok = (int64_t)blockIdx.y * blockDim.y + threadIdx.y; tok < t; tok += tok_stride) {
            const size_t li = (size_t)head * t + (size_t)tok;
            const size_t row = ((size_t)tok * h + head) * (size_t)d;
            /* The row's data loads go out before the LSE arithmetic, which they do not need:
             * one memory round trip per row rather than two. */
            int c = threadIdx.x;
            uint32_t xa[4], xb[4];
            mv__load<DT, VEC16>(oa, row + (size_t)c * V, xa);
            mv__load<DT, VEC16>(ob, row + (size_t)c * V, xb);
            const merge2_row w = merge2_weights(la[li], lb[li]); /* merge_rule.h */
            for (;;) {
                uint32_t o[4] = {0, 0, 0, 0};
#pragma unroll
                for (int j = 0; j < V; j++)
                    mv__put<DT>(o, j, merge2_apply(w, mv__get<DT>(xa, j), mv__get<DT>(xb, j)));
                mv__store<DT, VEC16>(out, row + (size_t)c * V, o);
                c += blockDim.x;
                if (c >= per_row)
                    break;
                mv__load<DT, VEC16>(oa, row + (size_t)c * V, xa);
                mv__load<DT, VEC16>(ob, row + (size_t)c * V, xb);
            }
            if (threadIdx.x == 0)
                lse[li] = w.lse;
        }
    }
}

/* -------------------------------------------------------------------- launcher */
template <int DT, bool VEC16>
static int mv__launch(int t, int h, int d, const void *oa, const void *ob, const float *la,
                      const float *lb, void *out, float *lse, hipStream_t stream)
{
    constexpr int V = VEC16 ? 16 / (DT == OPT_F32 ? 4 : 2) : 1;
    const int per_row = d / V;
    /* tx threads per row (a row wider than a block is walked in steps of the block), ty rows
     * (tokens of one head) per block. */
    const int tx = per_row < MV__THREADS ? per_row : MV__THREADS;
    const int ty = MV__THREADS / tx;
    /* Heads on grid x, the fastest-launched: the blocks in flight at once cover all heads of
     * a run of tokens, i.e. contiguous memory of oa, ob and out. */
    const int64_t gy = ((int64_t)t + ty - 1) / ty;
    const dim3 grid((unsigned)(h < MV__MAX_GRID_X ? h : MV__MAX_GRID_X),
                    (unsigned)(gy < MV__MAX_GRID_Y ? gy : MV__MAX_GRID_Y));
    merge_states_vec_kernel<DT, VEC16><<<grid, dim3((unsigned)tx, (unsigned)ty), 0, stream>>>(
        oa, ob, la, lb, out, lse, t, h, d);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

template <int DT>
static int mv__dispatch(int t, int h, int d, const void *oa, const void *ob, const float *la,
                        const float *lb, void *out, float *lse, hipStream_t stream)
{
    const int es = DT == OPT_F32 ? 4 : 2;
    const int vec16 = (size_t)d * es % 16 == 0 && ((uintptr_t)oa | (uintptr_t)ob | (uintptr_t)out) % 16 == 0;
    return vec16 ? mv__launch<DT, true>(t, h, d, oa, ob, la, lb, out, lse, stream)
                 : mv__launch<DT, false>(t, h, d, oa, ob, la, lb, out, lse, stream);
}

extern "C" int opt_merge_states_vec(int t, int h, int d, int dtype, const void *oa,
                                    const void *ob, const float *la, const float *lb, void *out,
                                    float *lse, void *stream)
{
    if (t < 0 || h <= 0 || d <= 0)
        return OPT_EINVAL;
    if (t > 0 && (!oa || !ob || !la || !lb || !out || !lse))
        return OPT_EINVAL;
    if (t == 0)
        return dtype == OPT_F32 || dtype == OPT_BF16 || dtype == OPT_F16 ? OPT_OK : OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    switch (dtype) {
    case OPT_F32: return mv__dispatch<OPT_F32>(t, h, d, oa, ob, la, lb, out, lse, s);
    case OPT_BF16: return mv__dispatch<OPT_BF16>(t, h, d, oa, ob, la, lb, out, lse, s);
    case OPT_F16: return mv__dispatch<OPT_F16>(t, h, d, oa, ob, la, lb, out, lse, s);
    default: return OPT_EINVAL;
    }
}
