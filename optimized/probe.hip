/* probe.hip - micro-benchmark kernels for the roofline command (MEASURE.md).
 *
 * probe_read: streaming read bandwidth (and opt_flush's read pass). Each thread reads 16-byte
 *   words in a grid-stride loop, eight independent loads in flight per iteration, and XORs
 *   them; a block's XOR goes
 *   to partial[block], so the loads cannot be elided and the result can be checked exactly
 *   (XOR is order-independent, so the check does not depend on the schedule).
 * probe_copy: copy bandwidth, 16-byte words, grid-stride, four words in flight.
 * probe_mma: matrix-core throughput of gpu_port.h's bf16 primitive: every warp keeps eight
 *   independent accumulator tiles so the pipeline never waits on a dependency.
 * probe_mma_arange, probe_wgmma_arange: the layout contracts of the matrix primitives (the
 *   warp-level one, and Hopper's warpgroup MMA with its swizzled shared tiles) on exact inputs.
 * probe_convert: the conversions kernels share (gpu_port.h's f16 ones, paged_kv.h's fp8
 *   encode) over caller-given bit patterns, for the host to compare with numerics.h.
 */
#include "gpu_port.h"
#include "paged_kv.h"

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
        if (partial) /* NULL: opt_flush's read pass (a run-time test: the loads stay) */
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
    uint32_t af[GPU_MMA_A_REGS], bf[GPU_MMA_B_REGS];
    float cf[GPU_MMA_C_REGS];
    gpu_mma_load_a(af, a, 16); /* the loaders the kernels use: checked here with the layout */
    gpu_mma_load_b(bf, b, 16);
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

/* Two warpgroups: c [128][N] = a [128][K] times B, every operand placed through gpu_port.h's
 * wgmma helpers exactly as mha_wgmma.hip places them (SW128 tiles filled by cp.async, fenced
 * into the async proxy; descriptors per k16 step; warpgroup q takes rows 64q .. 64q + 63):
 *   mode 0, S = Q K^T: a [128][K] and b [N][K] row-major, both K-major SW128 tiles; c = a b^T.
 *   mode 1, O = P V:   a [128][K] straight into A registers (gpu_wgmma_a_coord), b [K][N]
 *                      row-major, an SW128 tile read MN-major (transpose flag); c = a b.
 *   mode 2, O = P V with P from shared memory (as mla_decode wgmma): a as in mode 0, b as in
 *                      mode 1; c = a b.
 * a, b: 16-bit bits; c: f32 row-major [128][N], placed through gpu_wgmma_c_coord. */
template <int N, int K, bool F16>
__global__ void __launch_bounds__(256)
probe_wgmma_arange_kernel(int mode, const uint16_t *a, const uint16_t *b, float *c)
{
#if defined(GPU_HAS_WGMMA)
    extern __shared__ uint4 probe__smem[];
    const uint32_t sa = (gpu_smem_addr(probe__smem) + 1023u) & ~1023u;
    const uint32_t sb = sa + 128 * K * 2;
    const int wg = threadIdx.x / 128, i = threadIdx.x % 128;
    if (mode != 1)
        for (int ch = threadIdx.x; ch < 128 * K / 8; ch += 256)
            gpu_cp_async16(sa + gpu_sw128_chunk(128, ch / (K / 8), ch % (K / 8)), a + ch * 8, 16);
    const int brows = mode == 0 ? N : K, bch = (mode == 0 ? K : N) / 8;
    for (int ch = threadIdx.x; ch < brows * bch; ch += 256)
        gpu_cp_async16(sb + gpu_sw128_chunk(brows, ch / bch, ch % bch), b + ch * 8, 16);
    gpu_cp_async_commit();
    gpu_cp_async_wait<0>();
    gpu_fence_proxy_async();
    __syncthreads();

    float d[N / 2];
    for (int j = 0; j < N / 2; j++)
        d[j] = 0.0f;
    if (mode == 0) {
        gpu_wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < K / 16; ks++)
            gpu_wgmma_ss<N, F16>(d, gpu_sw128_kmajor_desc(sa, 128, 64 * wg, ks),
                                 gpu_sw128_kmajor_desc(sb, N, 0, ks), ks > 0);
        /* Committed and waited for inside each branch: where the branches join, the compiler
         * may move accumulators between registers, which must not happen under a running MMA. */
        gpu_wgmma_commit();
        gpu_wgmma_wait<0>();
        gpu_wgmma_keep(d);
    } else if (mode == 2) {
        gpu_wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < K / 16; ks++)
            gpu_wgmma_ss<N, F16, 1>(d, gpu_sw128_kmajor_desc(sa, 128, 64 * wg, ks),
                                    gpu_sw128_mnmajor_desc(sb, K, ks), 1);
        gpu_wgmma_commit();
        gpu_wgmma_wait<0>();
        gpu_wgmma_keep(d);
    } else {
        uint32_t af[K / 16][4];
#pragma unroll
        for (int ks = 0; ks < K / 16; ks++)
#pragma unroll
            for (int e = 0; e < 8; e++) {
                int row, kk;
                gpu_wgmma_a_coord(i, e, &row, &kk);
                const uint32_t bits = a[(64 * wg + row) * K + 16 * ks + kk];
                af[ks][e / 2] = e % 2 ? af[ks][e / 2] | bits << 16 : bits;
            }
        gpu_wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < K / 16; ks++)
            gpu_wgmma_rs<N, F16, 1>(d, af[ks], gpu_sw128_mnmajor_desc(sb, K, ks), 1);
        gpu_wgmma_commit();
        gpu_wgmma_wait<0>();
        gpu_wgmma_keep(d);
    }
    for (int j = 0; j < N / 2; j++) {
        int row, col;
        gpu_wgmma_c_coord(i, j, &row, &col);
        c[(64 * wg + row) * N + col] = d[j];
    }
#else
    (void)mode, (void)a, (void)b, (void)c;
    GPU_TRAP();
#endif // GPU_HAS_WGMMA
}

/* -------------------------------------------------------------- launchers */
/* Cold and clean L2 before a timed launch: overwrite buf (everything cached before is evicted,
 * dirty lines written back), then read it back, so that the L2 ends up holding clean lines of
 * buf only. Without the read pass the L2 would be left full of buf's dirty lines, and the
 * timed kernel would pay their write-back (up to the L2's size of DRAM writes) inside its
 * window, none of it the kernel's: on an H100, paged_decode over perf-decode.ini (150-540 MB
 * reads) timed 3-17% faster once the read pass was added (docs/CHOICES.md, Timing). */
extern "C" int opt_flush(void *buf, size_t bytes, int value, void *stream)
{
    GPU_CHECK(hipMemsetAsync(buf, value, bytes, (hipStream_t)stream));
    probe_read_kernel<<<1024, 256, 0, (hipStream_t)stream>>>((const uint4 *)buf, bytes / 16, NULL);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

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
    int warp = 0, rc = gpu_warp_size(&warp);
    if (rc != OPT_OK)
        return rc;
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
    int warp = 0, rc = gpu_warp_size(&warp);
    if (rc != OPT_OK)
        return rc;
    probe_mma_arange_kernel<<<1, warp, 0, (hipStream_t)stream>>>(a, b, c0, c);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

template <int N, int K, bool F16>
static int probe__wgmma_arange(int mode, const uint16_t *a, const uint16_t *b, float *c,
                               hipStream_t stream)
{
    const int bytes = 128 * K * 2 + N * K * 2 + 1024; /* A, B, alignment to 1024 */
    GPU_CHECK(hipFuncSetAttribute((const void *)probe_wgmma_arange_kernel<N, K, F16>,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, bytes));
    probe_wgmma_arange_kernel<N, K, F16><<<1, 256, bytes, stream>>>(mode, a, b, c);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

template <bool F16>
static int probe__wgmma_shape(int mode, int n, int k, const uint16_t *a, const uint16_t *b,
                              float *c, hipStream_t s)
{
    if (n == 64)
        return k == 64 ? probe__wgmma_arange<64, 64, F16>(mode, a, b, c, s)
                       : probe__wgmma_arange<64, 128, F16>(mode, a, b, c, s);
    return k == 64 ? probe__wgmma_arange<128, 64, F16>(mode, a, b, c, s)
                   : probe__wgmma_arange<128, 128, F16>(mode, a, b, c, s);
}

extern "C" int opt_wgmma_arange(int mode, int n, int k, int f16, const uint16_t *a,
                                const uint16_t *b, float *c, void *stream)
{
    if (mode < 0 || mode > 2 || (n != 64 && n != 128) || (k != 64 && k != 128) || !a || !b || !c)
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    return f16 ? probe__wgmma_shape<true>(mode, n, k, a, b, c, s)
               : probe__wgmma_shape<false>(mode, n, k, a, b, c, s);
}

/* ------------------------------------------------------------- conversions */
/* op 0: out = f32 bits of gpu_f16_to_f32(low 16 bits of in); 1: gpu_f32_to_f16(in as f32);
 * 2: pkv_f32x2_to_e4m3 of the pair (in[2i], in[2i + 1]) into out[2i] and out[2i + 1]. */
__global__ void probe_convert_kernel(int op, const uint32_t *__restrict__ in,
                                     uint32_t *__restrict__ out, size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (op == 0) {
            out[i] = num_f32_bits(gpu_f16_to_f32((uint16_t)in[i]));
        } else if (op == 1) {
            out[i] = gpu_f32_to_f16(num_bits_f32(in[i]));
        } else if (i % 2 == 0 && i + 1 < n) {
            const uint32_t c = pkv_f32x2_to_e4m3(num_bits_f32(in[i]), num_bits_f32(in[i + 1]));
            out[i] = c & 0xFFu;
            out[i + 1] = c >> 8 & 0xFFu;
        }
    }
}

extern "C" int opt_convert_probe(int op, const uint32_t *in, uint32_t *out, size_t n, void *stream)
{
    if (op < 0 || op > 2 || (n > 0 && (!in || !out)) || (op == 2 && n % 2))
        return OPT_EINVAL;
    if (n == 0)
        return OPT_OK;
    const size_t blocks = (n + 255) / 256;
    probe_convert_kernel<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, (hipStream_t)stream>>>(
        op, in, out, n);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}
