/* probe.hip - micro-benchmark kernels for the roofline command (MEASURE.md).
 *
 * probe_read: streaming read bandwidth. Each thread reads 16-byte words in a grid-stride
 *   loop, four independent loads in flight per iteration, and XORs them; a block's XOR goes
 *   to partial[block], so the loads cannot be elided and the result can be checked exactly
 *   (XOR is order-independent, so the check does not depend on the schedule).
 * probe_copy: copy bandwidth, 16-byte words, grid-stride, four words in flight.
 * probe_mma: matrix-core throughput of gpu_port.h's bf16 primitive: every warp keeps eight
 *   independent accumulator tiles so the pipeline never waits on a dependency.
 */
#include "gpu_port.h"

#include <stdint.h>

/* ---------------------------------------------------------------- kernels */
#define PROBE_READ_INFLIGHT 8

__global__ void probe_read_kernel(const uint4 *__restrict__ buf, /* buf: [n] x 16 B */
                                  size_t n, uint4 *__restrict__ partial /* [gridDim.x] */)
{
    uint4 acc = make_uint4(0, 0, 0, 0);
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    /* PROBE_READ_INFLIGHT independent 16-byte loads per thread before any is used. */
    for (; i + (PROBE_READ_INFLIGHT - 1) * stride < n; i += PROBE_READ_INFLIGHT * stride) {
        uint4 w[PROBE_READ_INFLIGHT];
#pragma unroll
        for (int u = 0; u < PROBE_READ_INFLIGHT; u++)
            w[u] = buf[i + u * stride];
#pragma unroll
        for (int u = 0; u < PROBE_READ_INFLIGHT; u++) {
            acc.x ^= w[u].x;
            acc.y ^= w[u].y;
            acc.z ^= w[u].z;
            acc.w ^= w[u].w;
        }
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

__global__ void probe_copy_kernel(uint4 *__restrict__ dst, /* dst: [n] x 16 B */
                                  const uint4 *__restrict__ src, /* src: [n] x 16 B */
                                  size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
        dst[i] = a;
        dst[i + stride] = b;
        dst[i + 2 * stride] = c;
        dst[i + 3 * stride] = d;
    }
    for (; i < n; i += stride)
        dst[i] = src[i];
}

#define PROBE_MMA_CHAINS 8

__global__ void probe_mma_kernel(int iters, float *__restrict__ sink /* [grid * block] */)
{
#if defined(GPU_HAS_MMA_BF16)
    uint32_t a[GPU_MMA_A_REGS], b[GPU_MMA_B_REGS];
    /* Small bf16 values (0x3a00 ~ 4.9e-4) keep the sums finite over any iteration count. */
    for (int r = 0; r < GPU_MMA_A_REGS; r++)
        a[r] = 0x3a003a00u + threadIdx.x % 3;
    for (int r = 0; r < GPU_MMA_B_REGS; r++)
        b[r] = 0x3a003a00u + threadIdx.x % 5;
    float c[PROBE_MMA_CHAINS][GPU_MMA_C_REGS] = {};
    for (int it = 0; it < iters; it++)
#pragma unroll
        for (int k = 0; k < PROBE_MMA_CHAINS; k++)
            gpu_mma_bf16_16x16x16(c[k], a, b);
    float s = 0;
#pragma unroll
    for (int k = 0; k < PROBE_MMA_CHAINS; k++)
#pragma unroll
        for (int r = 0; r < GPU_MMA_C_REGS; r++)
            s += c[k][r];
    sink[(size_t)blockIdx.x * blockDim.x + threadIdx.x] = s;
#else
    GPU_TRAP();
#endif // GPU_HAS_MMA_BF16
}

/* One warp: C = A B + C0 for one 16x16x16 tile, every fragment element placed through the
 * primitive's index helpers (gpu_port.h), so the test checks the layout contract as well as
 * the arithmetic. a, b: bf16 bits, row-major 16x16; c0, c: f32 row-major 16x16. */
__global__ void probe_mma_arange_kernel(const uint16_t *a, const uint16_t *b, const float *c0,
                                        float *c)
{
#if defined(GPU_HAS_MMA_BF16)
    const int lane = threadIdx.x;
    uint32_t af[GPU_MMA_A_REGS] = {}, bf[GPU_MMA_B_REGS] = {};
    float cf[GPU_MMA_C_REGS];
    for (int e = 0; e < GPU_MMA_A_ELEMS; e++) {
        int row, kk;
        gpu_mma_a_coord(lane, e, &row, &kk);
        af[e / 2] |= (uint32_t)a[row * 16 + kk] << (16 * (e % 2));
    }
    for (int e = 0; e < GPU_MMA_B_ELEMS; e++) {
        int kk, col;
        gpu_mma_b_coord(lane, e, &kk, &col);
        bf[e / 2] |= (uint32_t)b[kk * 16 + col] << (16 * (e % 2));
    }
    for (int e = 0; e < GPU_MMA_C_ELEMS; e++) {
        int row, col;
        gpu_mma_c_coord(lane, e, &row, &col);
        cf[e] = c0[row * 16 + col];
    }
    gpu_mma_bf16_16x16x16(cf, af, bf);
    for (int e = 0; e < GPU_MMA_C_ELEMS; e++) {
        int row, col;
        gpu_mma_c_coord(lane, e, &row, &col);
        c[row * 16 + col] = cf[e];
    }
#else
    (void)a, (void)b, (void)c0, (void)c;
    GPU_TRAP();
#endif // GPU_HAS_MMA_BF16
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

extern "C" int opt_probe_copy(void *dst, const void *src, size_t bytes, int blocks, void *stream)
{
    if (bytes % 16 || blocks <= 0 || ((uintptr_t)dst % 16) || ((uintptr_t)src % 16))
        return OPT_EINVAL;
    probe_copy_kernel<<<blocks, 256, 0, (hipStream_t)stream>>>((uint4 *)dst, (const uint4 *)src,
                                                               bytes / 16);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

extern "C" int opt_probe_mma(int blocks, int iters, float *sink, double *flops, void *stream)
{
    if (blocks <= 0 || iters <= 0)
        return OPT_EINVAL;
    const int threads = 256;
    int dev = 0, warp = 0;
    GPU_CHECK(hipGetDevice(&dev));
    GPU_CHECK(hipDeviceGetAttribute(&warp, hipDeviceAttributeWarpSize, dev));
    probe_mma_kernel<<<blocks, threads, 0, (hipStream_t)stream>>>(iters, sink);
    GPU_CHECK(hipGetLastError());
    *flops = (double)blocks * (threads / warp) * iters * PROBE_MMA_CHAINS * 2.0 * 16 * 16 * 16;
    return OPT_OK;
}

extern "C" int opt_mma_arange(const uint16_t *a, const uint16_t *b, const float *c0, float *c,
                              void *stream)
{
    if (!a || !b || !c0 || !c)
        return OPT_EINVAL;
    int dev = 0, warp = 0;
    GPU_CHECK(hipGetDevice(&dev));
    GPU_CHECK(hipDeviceGetAttribute(&warp, hipDeviceAttributeWarpSize, dev));
    probe_mma_arange_kernel<<<1, warp, 0, (hipStream_t)stream>>>(a, b, c0, c);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}
