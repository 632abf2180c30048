/* block_scan.h - a block-wide exclusive prefix sum for the small scheduling kernels (query-tile
 * prefixes, extend's context chunks) and the search of such a prefix. Vendor-neutral. */
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

/* The segment holding element x of a partition given by its non-decreasing starts p[0 .. n]
 * (p[0] <= x < p[n]): the last b < n with p[b] <= x, so an empty segment (p[b] == p[b + 1]) is
 * never the answer. The varlen kernels' "which sequence / request / tile is this" search. */
template <typename T>
__device__ __forceinline__ int gpu_segment_of(const T *__restrict__ p, int n, long long x)
{
    int lo = 0, hi = n; /* p[lo] <= x < p[hi] */
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        if (p[mid] <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

#endif /* ATTN_BLOCK_SCAN_H */
