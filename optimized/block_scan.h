/* block_scan.h - a block-wide exclusive prefix sum for the small scheduling kernels (query-tile
 * prefixes, extend's context chunks). Vendor-neutral: shared memory and barriers only. */
#ifndef ATTN_BLOCK_SCAN_H
#define ATTN_BLOCK_SCAN_H

#include "gpu_port.h"

/* Every thread of a THREADS-thread block contributes v; returns the sum of the contributions of
 * threads below it and stores the block's total in *total. part: __shared__ T[THREADS]. All
 * threads must call it (it has barriers); part may be reused after it returns. */
template <int THREADS, typename T>
__device__ T gpu_block_exclusive_sum(T v, T *part, T *total)
{
    const int tid = threadIdx.x;
    part[tid] = v;
    __syncthreads();
    for (int off = 1; off < THREADS; off *= 2) { /* inclusive Hillis-Steele scan */
        const T u = tid >= off ? part[tid - off] : T(0);
        __syncthreads();
        part[tid] += u;
        __syncthreads();
    }
    const T incl = part[tid];
    *total = part[THREADS - 1];
    __syncthreads();
    return incl - v;
}

/* The contiguous share [*lo, *hi) of n items that thread tid of a THREADS-thread block owns. */
template <int THREADS>
__device__ void gpu_block_share(int n, int *lo, int *hi)
{
    const int per = (n + THREADS - 1) / THREADS, tid = threadIdx.x;
    *lo = tid * per < n ? tid * per : n;
    *hi = *lo + per < n ? *lo + per : n;
}

#endif /* ATTN_BLOCK_SCAN_H */
