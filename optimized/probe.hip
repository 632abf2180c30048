/* probe.hip - micro-benchmark kernels for the roofline command (MEASURE.md).
 *
 * probe_read: streaming read bandwidth. Each thread reads 16-byte words in a grid-stride
 *   loop, four independent loads in flight per iteration, and XORs them; a block's XOR goes
 *   to partial[block], so the loads cannot be elided and the result can be checked exactly
 *   (XOR is order-independent, so the check does not depend on the schedule).
 */
#include "gpu_port.h"

#include <stdint.h>

/* ---------------------------------------------------------------- kernels */
__global__ void probe_read_kernel(const uint4 *__restrict__ buf, /* buf: [n] x 16 B */
                                  size_t n, uint4 *__restrict__ partial /* [gridDim.x] */)
{
    uint4 acc = make_uint4(0, 0, 0, 0);
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = buf[i], b = buf[i + stride], c = buf[i + 2 * stride], d = buf[i + 3 * stride];
        acc.x ^= a.x ^ b.x ^ c.x ^ d.x;
        acc.y ^= a.y ^ b.y ^ c.y ^ d.y;
        acc.z ^= a.z ^ b.z ^ c.z ^ d.z;
        acc.w ^= a.w ^ b.w ^ c.w ^ d.w;
    }
    for (; i < n; i += stride) {
        uint4 a = buf[i];
        acc.x ^= a.x;
        acc.y ^= a.y;
        acc.z ^= a.z;
        acc.w ^= a.w;
    }
    for (int m = GPU_WARP_SIZE / 2; m > 0; m /= 2) {
        acc.x ^= GPU_SHFL_XOR(acc.x, m);
        acc.y ^= GPU_SHFL_XOR(acc.y, m);
        acc.z ^= GPU_SHFL_XOR(acc.z, m);
        acc.w ^= GPU_SHFL_XOR(acc.w, m);
    }
    __shared__ uint4 warp_acc[1024 / 32];
    int lane = threadIdx.x % GPU_WARP_SIZE, warp = threadIdx.x / GPU_WARP_SIZE;
    if (lane == 0)
        warp_acc[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        uint4 r = make_uint4(0, 0, 0, 0);
        for (int w = 0; w < (int)(blockDim.x / GPU_WARP_SIZE); w++) {
            r.x ^= warp_acc[w].x;
            r.y ^= warp_acc[w].y;
            r.z ^= warp_acc[w].z;
            r.w ^= warp_acc[w].w;
        }
        partial[blockIdx.x] = r;
    }
}

/* -------------------------------------------------------------- launchers */
extern "C" int opt_probe_read(const void *buf, size_t bytes, uint32_t *partial, int blocks,
                              void *stream)
{
    if (bytes % 16 || blocks <= 0 || ((uintptr_t)buf % 16))
        return OPT_EINVAL;
    const int threads = 256;
    probe_read_kernel<<<blocks, threads, 0, (hipStream_t)stream>>>(
        (const uint4 *)buf, bytes / 16, (uint4 *)partial);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}
