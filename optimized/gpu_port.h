/* gpu_port.h - the only file that knows the GPU vendor.
 *
 * Kernels are written in HIP spelling and launched with <<<grid, block, smem, stream>>>.
 * - AMD (hipcc, -x hip): the real HIP headers.
 * - NVIDIA (nvcc, the .hip files compiled as CUDA): the few hip* runtime names this project
 *   uses are mapped to cuda* with typedefs and defines. HIP's own NVIDIA headers do not
 *   compile under CUDA 13, so they are never included.
 * Device facts are read through device attributes; the two vendors' device-property structs
 * differ in layout and are never mapped onto each other (gpu_device_name() is the one place
 * that reads a vendor's struct, for the name and arch strings no attribute carries).
 *
 * Capability macros (name the capability, not the vendor):
 *   GPU_WARP_SIZE        warp/wavefront width in device code (64 on CDNA, 32 on NVIDIA);
 *                        host code must query hipDeviceAttributeWarpSize at run time.
 *   GPU_SHFL_XOR(v, m)   full-warp butterfly shuffle.
 *   GPU_CHECK(call)      on failure, record "file:line: call: error" (opt_last_error())
 *                        and return OPT_EGPU from the enclosing int function.
 *   GPU_HAS_MMA_BF16     the warp-level matrix primitive below is available for this target:
 *                        gpu_mma_bf16_16x16x16(c, a, b): C[16x16] += A[16x16] B[16x16],
 *                        bf16 inputs, f32 accumulation, one warp (wavefront) per tile.
 *                        NVIDIA sm_80+: two mma.sync m16n8k16; CDNA (gfx90a/gfx940): one
 *                        v_mfma_f32_16x16x16bf16_1k. The logical tile is the same on both;
 *                        the fragments (which lane holds which element) differ, and are
 *                        given by the index helpers below -- the layout contract:
 *                          GPU_MMA_A_ELEMS / _B_ELEMS / _C_ELEMS elements per lane,
 *                          element e of A or B is the (e % 2) half (low first) of 32-bit
 *                          register e / 2 (packed bf16 pairs); element e of C is c[e];
 *                          gpu_mma_a_coord(lane, e, &row, &k)   A[row][k]
 *                          gpu_mma_b_coord(lane, e, &k, &col)   B[k][col]
 *                          gpu_mma_c_coord(lane, e, &row, &col) C[row][col]
 *                        NVIDIA (g = lane / 4, t = lane % 4): A e -> row g + 8 ((e/2) % 2),
 *                          k 2t + e % 2 + 8 (e / 4); B e -> k 2t + e % 2 + 8 ((e/2) % 2),
 *                          col g + 8 (e / 4); C e -> row g + 8 ((e/2) % 2),
 *                          col 2t + e % 2 + 8 (e / 4). (PTX m16n8k16 fragments, two n-halves.)
 *                        CDNA (r = lane % 16, q = lane / 16): A e -> row r, k 4q + e;
 *                          B e -> k 4q + e, col r; C e -> row 4q + e, col r.
 *                        On both vendors elements 2i and 2i + 1 of A and of B lie at k and
 *                        k + 1 (same row / column), so one 32-bit load fetches a register of
 *                        A from a row-major tile, or of B from a tile stored N x K; the
 *                        loaders gpu_mma_load_a / _b / _bt below place fragments from memory.
 *                        tests/test_gpu_probe.c multiplies ARANGE tiles through these helpers
 *                        and checks every element exactly (opt_mma_arange).
 *   GPU_HAS_MMA_SYNC     NVIDIA sm_80+ device code: the PTX warp instructions mma.sync
 *                        (m16n8k16, bf16 and f16, PTX's documented fragment layout), ldmatrix,
 *                        movmatrix and cp.async may be used inline; gpu_mma16816(), gpu_pack2(),
 *                        gpu_ldmatrix_x4(_trans)(), gpu_cp_async16() and friends below are the
 *                        shared spellings. Variants built on them are NVIDIA-only: elsewhere
 *                        their kernels trap and their unsupported() says so before any launch.
 *   GPU_HAS_WGMMA        NVIDIA sm_90a device code (the arch-specific Hopper target: defined
 *                        only in a compute_90a pass, __CUDA_ARCH_FEAT_SM90_ALL): warpgroup MMA
 *                        (wgmma.mma_async m64nNk16, N = 64 or 128, bf16/f16 in, f32 accumulate),
 *                        its fences, and the 128-byte-swizzle shared-memory tiles and matrix
 *                        descriptors it reads -- gpu_wgmma_ss(), gpu_wgmma_rs(), gpu_sw128_*()
 *                        below, whose layout contract is written there and checked element by
 *                        element by tests/test_gpu_probe.c (opt_wgmma_arange). A plain sm_90
 *                        image lacks it: variants built on it trap there, and their
 *                        unsupported() asks opt_wgmma_unsupported() first.
 *   GPU_HAS_CLUSTER      NVIDIA sm_90+ device code: thread-block clusters -- gpu_cluster_sync()
 *                        (every thread of every block of the cluster; writes to shared memory
 *                        before it are visible to the cluster's blocks after it) and
 *                        gpu_cluster_map() (a generic pointer to the same shared-memory
 *                        location in another block of the cluster). The host launches with
 *                        gpu_launch(..., cluster, ...) where gpu_cluster_ok() says the device and the
 *                        kernel's loaded image have clusters; elsewhere (AMD, pre-Hopper, or a
 *                        binary without sm_90 code) callers keep their cluster-free path.
 */
#ifndef ATTN_GPU_PORT_H
#define ATTN_GPU_PORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__HIP__) || defined(__HIP_PLATFORM_AMD__)
#define GPU_VENDOR_AMD 1
#include <hip/hip_runtime.h>

#elif defined(__CUDACC__)
#define GPU_VENDOR_NVIDIA 1
#include <cuda_runtime.h>

typedef cudaError_t hipError_t;
typedef cudaStream_t hipStream_t;
typedef cudaEvent_t hipEvent_t;
typedef cudaDeviceAttr hipDeviceAttribute_t;
#define hipSuccess cudaSuccess
#define hipErrorInvalidValue cudaErrorInvalidValue
#define hipGetErrorString cudaGetErrorString
#define hipGetLastError cudaGetLastError
#define hipGetDeviceCount cudaGetDeviceCount
#define hipSetDevice cudaSetDevice
#define hipGetDevice cudaGetDevice
#define hipDeviceSynchronize cudaDeviceSynchronize
#define hipDeviceGetAttribute cudaDeviceGetAttribute
#define hipRuntimeGetVersion cudaRuntimeGetVersion
#define hipDriverGetVersion cudaDriverGetVersion
#define hipMemGetInfo cudaMemGetInfo
#define hipMalloc cudaMalloc
#define hipFree cudaFree
#define hipMemcpy cudaMemcpy
#define hipMemcpyAsync cudaMemcpyAsync
#define hipMemset cudaMemset
#define hipMemsetAsync cudaMemsetAsync
#define hipMemcpyHostToDevice cudaMemcpyHostToDevice
#define hipMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define hipMemcpyDeviceToDevice cudaMemcpyDeviceToDevice
#define hipStreamSynchronize cudaStreamSynchronize
#define hipEventCreate cudaEventCreate
#define hipEventDestroy cudaEventDestroy
#define hipEventRecord cudaEventRecord
#define hipEventSynchronize cudaEventSynchronize
#define hipEventElapsedTime cudaEventElapsedTime
#define hipDeviceAttributeMultiprocessorCount cudaDevAttrMultiProcessorCount
#define hipDeviceAttributeWarpSize cudaDevAttrWarpSize
#define hipDeviceAttributeL2CacheSize cudaDevAttrL2CacheSize
#define hipDeviceAttributeClockRate cudaDevAttrClockRate
#define hipDeviceAttributeMemoryClockRate cudaDevAttrMemoryClockRate
#define hipDeviceAttributeMemoryBusWidth cudaDevAttrGlobalMemoryBusWidth
#define hipDeviceAttributeComputeCapabilityMajor cudaDevAttrComputeCapabilityMajor
#define hipDeviceAttributeComputeCapabilityMinor cudaDevAttrComputeCapabilityMinor
#define hipDeviceAttributeMaxSharedMemoryPerBlock cudaDevAttrMaxSharedMemoryPerBlock
#define hipFuncSetAttribute cudaFuncSetAttribute
#define hipMemcpyFromSymbol cudaMemcpyFromSymbol
#define hipFuncAttributeMaxDynamicSharedMemorySize cudaFuncAttributeMaxDynamicSharedMemorySize
#define hipOccupancyMaxActiveBlocksPerMultiprocessor cudaOccupancyMaxActiveBlocksPerMultiprocessor

#else
#error "gpu_port.h is for GPU translation units (hipcc -x hip, or nvcc)"
#endif // vendor

/* A __device__ variable as hipMemcpyFromSymbol's symbol argument. */
#if defined(GPU_VENDOR_AMD)
#define GPU_SYMBOL(x) HIP_SYMBOL(x)
#else
#define GPU_SYMBOL(x) x
#endif // GPU_VENDOR_AMD

/* Reads the int __device__ variable `sym` of the device image the runtime picked for the
 * current device into *have (a capability flag the image was compiled with): true, or false
 * when no image loads there -- that error cleared, so it is not sticky and no later launch
 * check sees it. */
#define GPU_READ_IMAGE_FLAG(sym, have)                                                   \
    (hipMemcpyFromSymbol((have), GPU_SYMBOL(sym), sizeof(int)) == hipSuccess              \
         ? true                                                                          \
         : ((void)hipGetLastError(), false))

#include "opt.h"

/* ------------------------------------------------------- device-side capabilities */
#if defined(GPU_VENDOR_AMD)
#ifdef __AMDGCN_WAVEFRONT_SIZE
#define GPU_WARP_SIZE __AMDGCN_WAVEFRONT_SIZE
#else
#define GPU_WARP_SIZE 64
#endif // __AMDGCN_WAVEFRONT_SIZE
#define GPU_SHFL_XOR(v, m) __shfl_xor((v), (m))
#define GPU_SHFL32(v, l) __shfl((v), (l), 32) /* lane l of this thread's 32-lane group */
#else
#define GPU_WARP_SIZE 32
#define GPU_SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#define GPU_SHFL32(v, l) __shfl_sync(0xffffffffu, (v), (l))
#endif // GPU_VENDOR_AMD

/* A kernel compiled for a target that lacks what it needs stops the device loudly rather
 * than return garbage (DESIGN.md). */
#if defined(GPU_VENDOR_AMD)
#define GPU_TRAP() __builtin_trap()
#else
#define GPU_TRAP() __trap()
#endif // GPU_VENDOR_AMD

/* ------------------------------------------------------------ f16 <-> f32, one instruction */
/* IEEE binary16 <-> f32 with the hardware's conversions: f16 -> f32 is exact; f32 -> f16
 * rounds to nearest even, keeps subnormals, overflows to inf (every target here: AMD
 * v_cvt_f16_f32, NVIDIA cvt.rn.f16.f32). Every non-NaN input gives numerics.h's
 * num_f16_to_f32 / num_f32_to_f16 bits (the portable forms, ~10-20 integer operations each); a
 * NaN stays a NaN, its payload the hardware's. Streaming kernels of 16-bit data are bound by
 * those operations otherwise (merge_states f16 ran at 0.71 of copy bandwidth with them). */
#if defined(GPU_VENDOR_AMD)
__device__ __forceinline__ float gpu_f16_to_f32(uint16_t h)
{
    return (float)__builtin_bit_cast(_Float16, h);
}
__device__ __forceinline__ uint16_t gpu_f32_to_f16(float f)
{
    return __builtin_bit_cast(uint16_t, (_Float16)f);
}
#else
__device__ __forceinline__ float gpu_f16_to_f32(uint16_t h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;\n" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ uint16_t gpu_f32_to_f16(float f)
{
    uint16_t h;
    asm("cvt.rn.f16.f32 %0, %1;\n" : "=h"(h) : "f"(f));
    return h;
}
#endif // GPU_VENDOR_AMD

/* GPU_HAS_CVT_E4M3: OCP e4m3 (fp8e4m3fn, SPEC's fp8) <-> 16/32-bit floats in hardware, two
 * values an instruction: NVIDIA sm_89+ device code. (CDNA3's fp8 instructions convert the
 * e4m3fnuz format -- another bias, another NaN -- so AMD keeps the software forms.)
 *   gpu_f32x2_to_e4m3x2(lo, hi)  codes of lo (low byte) and hi, rounded to nearest even,
 *                                finite overflow and inf saturated to +-448, NaN to a NaN code
 *                                (cvt.rn.satfinite.e4m3x2.f32);
 *   gpu_e4m3x2_to_f16x2(c)       the two codes in c's low 16 bits (low byte first) as an f16
 *                                pair, exact -- every e4m3 value is an f16 one; NaN -> NaN
 *                                (cvt.rn.f16x2.e4m3x2);
 *   gpu_e4m3x2_hi_to_f16x2(c)    the same of c's high 16 bits (the half handed to the cvt as a
 *                                register half, not shifted down first). */
#if defined(GPU_VENDOR_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define GPU_HAS_CVT_E4M3 1
__device__ __forceinline__ uint32_t gpu_f32x2_to_e4m3x2(float lo, float hi)
{
    uint16_t r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ uint32_t gpu_e4m3x2_to_f16x2(uint32_t c)
{
    uint32_t r;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(r) : "h"((uint16_t)c));
    return r;
}
__device__ __forceinline__ uint32_t gpu_e4m3x2_hi_to_f16x2(uint32_t c)
{
    uint32_t r;
    asm("{\n.reg .b16 lo, hi;\nmov.b32 {lo, hi}, %1;\ncvt.rn.f16x2.e4m3x2 %0, hi;\n}\n" : "=r"(r) : "r"(c));
    return r;
}
#endif // sm_89+

/* ------------------------------------------------------------ matrix primitive */
#if defined(GPU_VENDOR_AMD) && (defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__))
#define GPU_HAS_MMA_BF16 1
#define GPU_MMA_A_REGS 2
#define GPU_MMA_B_REGS 2
#define GPU_MMA_C_REGS 4
typedef short gpu__bf16x4 __attribute__((ext_vector_type(4)));
typedef float gpu__f32x4 __attribute__((ext_vector_type(4)));
__device__ inline void gpu_mma_bf16_16x16x16(float (&c)[GPU_MMA_C_REGS],
                                             const uint32_t (&a)[GPU_MMA_A_REGS],
                                             const uint32_t (&b)[GPU_MMA_B_REGS])
{
    gpu__bf16x4 va, vb;
    __builtin_memcpy(&va, a, 8);
    __builtin_memcpy(&vb, b, 8);
    gpu__f32x4 vc = {c[0], c[1], c[2], c[3]};
    vc = __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(va, vb, vc, 0, 0, 0);
    c[0] = vc[0], c[1] = vc[1], c[2] = vc[2], c[3] = vc[3];
}
#define GPU_MMA_A_ELEMS 4
#define GPU_MMA_B_ELEMS 4
#define GPU_MMA_C_ELEMS 4
__device__ inline void gpu_mma_a_coord(int lane, int e, int *row, int *k)
{
    *row = lane % 16, *k = 4 * (lane / 16) + e;
}
__device__ inline void gpu_mma_b_coord(int lane, int e, int *k, int *col)
{
    *k = 4 * (lane / 16) + e, *col = lane % 16;
}
__device__ inline void gpu_mma_c_coord(int lane, int e, int *row, int *col)
{
    *row = 4 * (lane / 16) + e, *col = lane % 16;
}
#elif defined(GPU_VENDOR_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GPU_HAS_MMA_BF16 1
#define GPU_MMA_A_REGS 4
#define GPU_MMA_B_REGS 4
#define GPU_MMA_C_REGS 8
__device__ inline void gpu_mma_bf16_16x16x16(float (&c)[GPU_MMA_C_REGS],
                                             const uint32_t (&a)[GPU_MMA_A_REGS],
                                             const uint32_t (&b)[GPU_MMA_B_REGS])
{
    /* Columns 0-7 then 8-15 of C, sharing the A fragment. */
    for (int h = 0; h < 2; h++)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[4 * h + 0]), "+f"(c[4 * h + 1]), "+f"(c[4 * h + 2]), "+f"(c[4 * h + 3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[2 * h]), "r"(b[2 * h + 1]));
}
#define GPU_MMA_A_ELEMS 8
#define GPU_MMA_B_ELEMS 8
#define GPU_MMA_C_ELEMS 8
__device__ inline void gpu_mma_a_coord(int lane, int e, int *row, int *k)
{
    *row = lane / 4 + 8 * ((e / 2) % 2), *k = 2 * (lane % 4) + e % 2 + 8 * (e / 4);
}
__device__ inline void gpu_mma_b_coord(int lane, int e, int *k, int *col)
{
    *k = 2 * (lane % 4) + e % 2 + 8 * ((e / 2) % 2), *col = lane / 4 + 8 * (e / 4);
}
__device__ inline void gpu_mma_c_coord(int lane, int e, int *row, int *col)
{
    *row = lane / 4 + 8 * ((e / 2) % 2), *col = 2 * (lane % 4) + e % 2 + 8 * (e / 4);
}
#endif // matrix primitive

#if defined(GPU_HAS_MMA_BF16)
/* Fragment loaders (any memory space, 16-bit elements): A [16][16] at p, A[row][k] =
 * p[row * ld + k]; B [16][16] row-major, B[k][col] = p[k * ld + col]; or B stored N x K (bt),
 * B[k][col] = p[col * ld + k] -- K of S = Q K^T, W of X W^T. A and bt read one 32-bit word per
 * register (p 4-byte aligned, ld even); row-major B reads its pairs from two rows. */
__device__ __forceinline__ void gpu_mma_load_a(uint32_t (&a)[GPU_MMA_A_REGS], const uint16_t *p,
                                               int ld)
{
    for (int e = 0; e < GPU_MMA_A_ELEMS; e += 2) {
        int row, k;
        gpu_mma_a_coord((int)(threadIdx.x % GPU_WARP_SIZE), e, &row, &k);
        a[e / 2] = *(const uint32_t *)(p + row * ld + k);
    }
}
__device__ __forceinline__ void gpu_mma_load_b(uint32_t (&b)[GPU_MMA_B_REGS], const uint16_t *p,
                                               int ld)
{
    for (int e = 0; e < GPU_MMA_B_ELEMS; e += 2) {
        int k, col;
        gpu_mma_b_coord((int)(threadIdx.x % GPU_WARP_SIZE), e, &k, &col);
        b[e / 2] = (uint32_t)p[k * ld + col] | (uint32_t)p[(k + 1) * ld + col] << 16;
    }
}
__device__ __forceinline__ void gpu_mma_load_bt(uint32_t (&b)[GPU_MMA_B_REGS], const uint16_t *p,
                                                int ld)
{
    for (int e = 0; e < GPU_MMA_B_ELEMS; e += 2) {
        int k, col;
        gpu_mma_b_coord((int)(threadIdx.x % GPU_WARP_SIZE), e, &k, &col);
        b[e / 2] = *(const uint32_t *)(p + col * ld + k);
    }
}
#endif // GPU_HAS_MMA_BF16

/* ---------------------------------------------- NVIDIA sm_80+ warp instructions */
#if defined(GPU_VENDOR_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GPU_HAS_MMA_SYNC 1
/* d[4] += a[4] b[2]: one m16n8k16 with f32 accumulation; F16 selects f16 inputs, else bf16.
 * Fragments as PTX documents them (g = lane / 4, t = lane % 4): a0,a1 row g k 2t..2t+1;
 * a2,a3 row g+8; a4..a7 the same at k + 8. b0,b1 k 2t..2t+1 col g; b2,b3 k + 8. d0,d1 row g
 * col 2t..2t+1; d2,d3 row g + 8. A C fragment of S = Q K^T, packed in pairs, is thus the
 * A fragment of P for P V (the FlashAttention-2 register trick). */
template <bool F16>
__device__ __forceinline__ void gpu_mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1)
{
    if (F16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
/* 2^x by the MUFU instruction (ex2.approx.ftz: relative error 2^-22, results below 2^-126
 * flush to 0 -- softmax weights that small vanish next to the row's largest, which is >= 1). */
__device__ __forceinline__ float gpu_exp2_approx(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
/* Two f32 -> one packed pair of f16 (F16) or bf16, each rounded to nearest even, lo in the
 * low half (cvt.rn.{f16,bf16}x2.f32). */
template <bool F16>
__device__ __forceinline__ uint32_t gpu_pack2(float lo, float hi)
{
    uint32_t r;
    if (F16)
        asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    else
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
/* Four 8x8 b16 matrices from shared memory; lane i gives the address of row i % 8 of matrix
 * i / 8 and receives, in register j, row lane / 4, columns 2 (lane % 4) .. +1 of matrix j
 * (.trans: of matrix j transposed). */
__device__ __forceinline__ void gpu_ldmatrix_x4(uint32_t (&r)[4], uint32_t saddr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(saddr));
}
__device__ __forceinline__ void gpu_ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t saddr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(saddr));
}
/* 16-byte global -> shared copy, bypassing L1; bytes < 16 zero-fills the rest (0: all zero,
 * the source is not read). */
__device__ __forceinline__ void gpu_cp_async16(uint32_t saddr, const void *src, int bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr), "l"(src),
                 "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void gpu_cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
/* Wait until at most N committed groups are still in flight. */
template <int N> __device__ __forceinline__ void gpu_cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ uint32_t gpu_smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}
#endif // NVIDIA sm_80+

/* ------------------------------------------------ NVIDIA sm_90+ block clusters */
#if defined(GPU_VENDOR_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define GPU_HAS_CLUSTER 1
/* Barrier of every thread of the cluster, release / acquire: shared-memory writes before it
 * are seen by any block of the cluster after it. */
__device__ __forceinline__ void gpu_cluster_sync(void)
{
    asm volatile("barrier.cluster.arrive.release.aligned;\n"
                 "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
/* p (this block's shared memory) as the same offset in block `rank` of the cluster, as a
 * generic pointer that ordinary loads read (distributed shared memory). */
template <class T> __device__ __forceinline__ const T *gpu_cluster_map(const T *p, unsigned rank)
{
    uint64_t r;
    asm volatile("mapa.u64 %0, %1, %2;\n" : "=l"(r) : "l"((uint64_t)p), "r"(rank));
    return (const T *)r;
}
#endif // NVIDIA sm_90+

/* ------------------------------------------- NVIDIA sm_90a warpgroup instructions */
#if defined(GPU_VENDOR_NVIDIA) && defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GPU_HAS_WGMMA 1
/* Warpgroup MMA (PTX wgmma.mma_async): the four consecutive warps 4q..4q+3 of a block (a
 * warpgroup; its thread i = threadIdx.x % 128, w = i / 32, g = (i % 32) / 4, t = i % 4)
 * compute D[64 x N] (+)= A[64 x 16] B[16 x N] together and asynchronously. Layout contract:
 *
 * Registers.
 *   D (f32, N / 2 per thread): d[j] is row 16w + g + 8 ((j / 2) % 2), column 8 (j / 4) + 2t +
 *     j % 2 (gpu_wgmma_c_coord) -- in each warp, mma.sync's m16n8 C fragment repeated over the
 *     N / 8 column blocks.
 *   A from registers (4 x 32 bits, each a pair of 16-bit values, low half first): element e
 *     (register e / 2) is row 16w + g + 8 ((e / 2) % 2), k 2t + e % 2 + 8 (e / 4)
 *     (gpu_wgmma_a_coord) -- mma.sync's m16n8k16 A fragment. Hence D's columns 16c..16c+15
 *     packed as the pairs (d[8c], d[8c+1]), (d[8c+2], d[8c+3]), (d[8c+4], d[8c+5]),
 *     (d[8c+6], d[8c+7]) are A's registers 0-3 of a k16 step over those columns: the
 *     accumulator of S = Q K^T becomes the A operand of O += P V without leaving its thread.
 *
 * Shared memory: the SW128 tile of R rows x C 16-bit columns (R a multiple of 8, C of 64; base
 * 1024-byte aligned) is C / 64 panels of R x 64, panel p at byte p R 128; in a panel, row r
 * takes the 128 bytes at r 128 and its 16-byte chunk c (columns 8c..8c+7 of the panel) sits at
 * chunk position c ^ (r % 8): gpu_sw128_chunk(R, r, column / 8). Eight rows make a 1024-byte
 * atom, the period of the hardware's 128-byte swizzle (address bits 4-6 XOR bits 7-9, so atoms
 * must start 1024-aligned; descriptors then carry base offset 0). One storage, two readings:
 *   K-major (rows = M or N, columns = K; A = Q [rows x dqk], B = K [keys x dqk] of S = Q K^T,
 *     no transpose): k16 step s of rows r0..: start = base + (s / 4) R 128 + r0 128 + (s % 4)
 *     32 bytes, stride byte offset (next 8 rows) 1024, leading byte offset unused (16)
 *     -- gpu_sw128_kmajor_desc(base, R, r0, s).
 *   MN-major (rows = K, columns = N; B = V [keys x dv] of O = P V, transpose flag 1): k16 step
 *     s: start = base + s 2048 bytes (16 rows), stride byte offset (next 8 rows of K) 1024,
 *     leading byte offset (next 64 columns of N: the next panel) R 128
 *     -- gpu_sw128_mnmajor_desc(base, R, s).
 *   Descriptor bits (gpu_wgmma_desc): 0-13 start address >> 4, 16-29 leading byte offset >> 4,
 *   32-45 stride byte offset >> 4, 49-51 base offset (0), 62-63 swizzle mode (1 = 128B).
 *
 * Ordering. wgmma reads shared memory through the async proxy: each thread that wrote a tile
 * (st.shared, or cp.async after its cp.async.wait_group) runs gpu_fence_proxy_async() before
 * the barrier that precedes the wgmma. gpu_wgmma_fence() goes before the first wgmma of a batch
 * whose accumulators or A registers ordinary instructions wrote; gpu_wgmma_commit() closes a
 * batch and gpu_wgmma_wait<n>() waits until at most n batches are in flight; gpu_wgmma_keep()
 * on the accumulators (and A registers) after that wait keeps the compiler from reading them
 * before it or recycling them while the MMA still runs. All 128 threads of the warpgroup
 * execute every one of these together (.sync.aligned). */
__device__ __forceinline__ void gpu_wgmma_c_coord(int i, int j, int *row, int *col)
{
    *row = 16 * (i / 32) + (i % 32) / 4 + 8 * ((j / 2) % 2);
    *col = 8 * (j / 4) + 2 * (i % 4) + j % 2;
}
__device__ __forceinline__ void gpu_wgmma_a_coord(int i, int e, int *row, int *k)
{
    *row = 16 * (i / 32) + (i % 32) / 4 + 8 * ((e / 2) % 2);
    *k = 2 * (i % 4) + e % 2 + 8 * (e / 4);
}
/* Byte offset, in an SW128 tile of `rows` rows, of the 16-byte chunk ch (columns 8ch..8ch+7)
 * of row r. */
__device__ __forceinline__ uint32_t gpu_sw128_chunk(int rows, int r, int ch)
{
    return (uint32_t)((ch / 8) * rows * 128 + r * 128 + (((ch % 8) ^ (r % 8)) << 4));
}
__device__ __forceinline__ uint64_t gpu_wgmma_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo)
{
    return (uint64_t)((saddr & 0x3FFFFu) >> 4) | (uint64_t)((lbo >> 4) & 0x3FFFu) << 16 |
           (uint64_t)((sbo >> 4) & 0x3FFFu) << 32 | (uint64_t)1 << 62;
}
__device__ __forceinline__ uint64_t gpu_sw128_kmajor_desc(uint32_t base, int rows, int r0, int s)
{
    return gpu_wgmma_desc(base + (uint32_t)((s / 4) * rows * 128 + r0 * 128 + (s % 4) * 32), 16,
                          1024);
}
__device__ __forceinline__ uint64_t gpu_sw128_mnmajor_desc(uint32_t base, int rows, int s)
{
    return gpu_wgmma_desc(base + (uint32_t)(s * 2048), (uint32_t)(rows * 128), 1024);
}
__device__ __forceinline__ void gpu_fence_proxy_async(void)
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void gpu_wgmma_fence(void)
{
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void gpu_wgmma_commit(void)
{
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void gpu_wgmma_wait(void)
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int M> __device__ __forceinline__ void gpu_wgmma_keep(float (&r)[M])
{
#pragma unroll
    for (int i = 0; i < M; i++)
        asm volatile("" : "+f"(r[i])::"memory");
}
template <int M> __device__ __forceinline__ void gpu_wgmma_keep(uint32_t (&r)[M])
{
#pragma unroll
    for (int i = 0; i < M; i++)
        asm volatile("" : "+r"(r[i])::"memory");
}

/* cp.async rows [0, ROWS) of a tile whose global row r starts at src + r * stride (16-bit
 * elements) into the SW128 tile at shared address s (D columns); rows >= valid are zero-filled.
 * NTH threads (this one is tid; in the warp-specialized kernels a producer warpgroup) take
 * consecutive 16-byte chunks of a row:
 * coalesced reads, and each 8 of them fill one 128-byte swizzled row segment without bank
 * conflicts. A thread keeps its chunk column and steps RS rows (a multiple of the swizzle's
 * 8-row period) per round, so its shared and global addresses advance by constants. Rows of
 * D / 8 chunks wider than CH are copied CH chunks (a part) at a time. The loops stay rolled: a
 * producer warpgroup has few registers (setmaxnreg), and unrolled they spilled. No commit. */
template <int D, int ROWS, int NTH>
__device__ __forceinline__ void gpu_sw128_copy(uint32_t s, const uint16_t *src, size_t stride,
                                               int valid, int tid)
{
    constexpr int CH = (D / 8) % 16 == 0 ? 16 : 8, PARTS = D / 8 / CH, RS = NTH / CH;
    static_assert(D % 64 == 0 && (D / 8) % CH == 0 && RS % 8 == 0 && ROWS % RS == 0,
                  "gpu_sw128_copy: whole rounds of rows, each a multiple of the swizzle period");
    const int r = tid / CH, ch = tid % CH;
#pragma unroll 1
    for (int part = 0; part < PARTS; part++) {
        const uint32_t sd = s + gpu_sw128_chunk(ROWS, r, ch + part * CH);
        const uint16_t *g = src + (size_t)r * stride + (ch + part * CH) * 8;
        if (valid >= ROWS) { /* a whole tile (uniform over the block): no per-row tests */
#pragma unroll 1
            for (int u = 0; u < ROWS / RS; u++) {
                gpu_cp_async16(sd + (uint32_t)(u * RS * 128), g, 16);
                g += (size_t)RS * stride;
            }
        } else {
#pragma unroll 1
            for (int u = 0; u < ROWS / RS; u++) {
                const bool ok = r + RS * u < valid;
                gpu_cp_async16(sd + (uint32_t)(u * RS * 128), ok ? g : src, ok ? 16 : 0);
                g += (size_t)RS * stride;
            }
        }
    }
}

/* Warp specialization (sm_90a). A block's warpgroups take roles -- one copies tiles, the others
 * multiply -- and hand shared-memory stages to each other through mbarriers (64-bit words in
 * shared memory, address `bar`): a phase completes when `count` arrivals have been made, and
 * gpu_mbar_wait(bar, parity) returns once the phase of that parity has completed (a stage's
 * n-th fill is phase n, so parity n % 2). An arrival releases what the arriving thread did
 * before it (CTA scope) and the completed wait acquires it. Init by one thread, then
 * gpu_mbar_init_fence() and a block barrier before any use. Named barriers 1 .. 15
 * (gpu_bar_sync: wait until `n` threads arrived, counting this one; gpu_bar_arrive: count
 * without waiting) order warpgroups among themselves without the whole block.
 * gpu_setmaxnreg_inc/dec<R> move a warpgroup's registers to R a thread (a multiple of 8 in
 * 24 .. 256); they act only in a kernel with __launch_bounds__(threads, 1), each role a branch
 * of one if/else (else ptxas warns C7508 and ignores them). */
__device__ __forceinline__ void gpu_mbar_init(uint32_t bar, unsigned count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void gpu_mbar_init_fence(void)
{
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void gpu_mbar_arrive(uint32_t bar)
{
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar)
                 : "memory");
}
/* cp.async straight into an mbarrier stage ring. The producer's gpu_cp_async_mbar_arrive(bar)
 * is an arrival on `bar` made when every cp.async this thread issued before it has landed; the
 * thread goes on at once, with no commit group (the barrier's count must include it: noinc,
 * the arrival is one of the phase's `count`). The consumer's gpu_mbar_wait_landed(bar, parity)
 * waits for the phase and then fences the landed bytes into the async proxy, which wgmma reads
 * through. A producer ends with gpu_cp_async_wait_all(), so no thread leaves with copies in
 * flight (wait_group would not see copies outside a commit group). */
__device__ __forceinline__ void gpu_cp_async_mbar_arrive(uint32_t bar)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void gpu_cp_async_wait_all(void)
{
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}
__device__ __forceinline__ void gpu_mbar_wait(uint32_t bar, int parity)
{
    asm volatile("{\n.reg .pred done;\nGPU_MBAR_WAIT_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra GPU_MBAR_WAIT_%=;\n}\n" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}
__device__ __forceinline__ void gpu_mbar_wait_landed(uint32_t bar, int parity)
{
    gpu_mbar_wait(bar, parity);
    gpu_fence_proxy_async();
}
__device__ __forceinline__ void gpu_bar_sync(int id, int n)
{
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void gpu_bar_arrive(int id, int n)
{
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
template <int R> __device__ __forceinline__ void gpu_setmaxnreg_inc(void)
{
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R> __device__ __forceinline__ void gpu_setmaxnreg_dec(void)
{
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}

/* The accumulator operand lists: d[0..31] or d[0..63], read and written. */
#define GPU__WG_D8(i)                                                                       \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
        "+f"(d[i + 6]), "+f"(d[i + 7])
#define GPU__WG_D32 GPU__WG_D8(0), GPU__WG_D8(8), GPU__WG_D8(16), GPU__WG_D8(24)
#define GPU__WG_D64 GPU__WG_D32, GPU__WG_D8(32), GPU__WG_D8(40), GPU__WG_D8(48), GPU__WG_D8(56)
#define GPU__WG_R32                                                                   \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, " \
    "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define GPU__WG_R64                                                                        \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
    "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "  \
    "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "  \
    "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
/* A and B from shared memory (descriptors da, db), A K-major; transpose flag TB for B (0:
 * K-major, 1: MN-major); `acc` 0 overwrites D. */
#define GPU__WGMMA_SS(NS, T, REGS, IA, IB, IP, IT, ...)                                      \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" IP ", 0;\n"                           \
                 "wgmma.mma_async.sync.aligned.m64n" NS "k16.f32." T "." T " " REGS ", %" IA \
                 ", %" IB ", p, 1, 1, 0, %" IT ";\n}\n"                                      \
                 : __VA_ARGS__                                                               \
                 : "l"(da), "l"(db), "r"(acc), "n"(TB))
/* A from registers a[0..3], B from shared memory; transpose flag TB for B (1: MN-major). */
#define GPU__WGMMA_RS(NS, T, REGS, IA, IB, IP, IT, ...)                                       \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" IP ", 0;\n"                            \
                 "wgmma.mma_async.sync.aligned.m64n" NS "k16.f32." T "." T " " REGS ", {%" IA \
                 "}, %" IB ", p, 1, 1, %" IT ";\n}\n"                                         \
                 : __VA_ARGS__                                                                \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc), "n"(TB))

/* d[N / 2] (+)= A B for the warpgroup, N = 64 or 128, f16 (F16) or bf16 inputs; B K-major
 * (TB = 0) or MN-major (TB = 1). */
template <int N, bool F16, int TB = 0>
__device__ __forceinline__ void gpu_wgmma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, int acc)
{
    static_assert(N == 64 || N == 128, "gpu_wgmma_ss: N = 64 or 128");
    if constexpr (N == 64) {
        if constexpr (F16)
            GPU__WGMMA_SS("64", "f16", GPU__WG_R32, "32", "33", "34", "35", GPU__WG_D32);
        else
            GPU__WGMMA_SS("64", "bf16", GPU__WG_R32, "32", "33", "34", "35", GPU__WG_D32);
    } else {
        if constexpr (F16)
            GPU__WGMMA_SS("128", "f16", GPU__WG_R64, "64", "65", "66", "67", GPU__WG_D64);
        else
            GPU__WGMMA_SS("128", "bf16", GPU__WG_R64, "64", "65", "66", "67", GPU__WG_D64);
    }
}
template <int N, bool F16, int TB>
__device__ __forceinline__ void gpu_wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db,
                                             int acc)
{
    static_assert(N == 64 || N == 128, "gpu_wgmma_rs: N = 64 or 128");
    if constexpr (N == 64) {
        if constexpr (F16)
            GPU__WGMMA_RS("64", "f16", GPU__WG_R32, "32, %33, %34, %35", "36", "37", "38",
                          GPU__WG_D32);
        else
            GPU__WGMMA_RS("64", "bf16", GPU__WG_R32, "32, %33, %34, %35", "36", "37", "38",
                          GPU__WG_D32);
    } else {
        if constexpr (F16)
            GPU__WGMMA_RS("128", "f16", GPU__WG_R64, "64, %65, %66, %67", "68", "69", "70",
                          GPU__WG_D64);
        else
            GPU__WGMMA_RS("128", "bf16", GPU__WG_R64, "64, %65, %66, %67", "68", "69", "70",
                          GPU__WG_D64);
    }
}
#endif // NVIDIA sm_90a

/* ------------------------------------------------------------ error recording */
/* Defined in device.hip: stores "file:line: call: runtime message" for opt_last_error(). */
int gpu_record_error(hipError_t err, const char *call, const char *file, int line);

#define GPU_CHECK(call)                                                       \
    do {                                                                      \
        hipError_t gpu_check_err__ = (call);                                  \
        if (gpu_check_err__ != hipSuccess)                                    \
            return gpu_record_error(gpu_check_err__, #call, __FILE__, __LINE__); \
    } while (0)

/* Name and architecture strings of device `dev` (e.g. "NVIDIA H100 80GB HBM3", "sm_90";
 * "AMD Instinct MI300X", "gfx942:sramecc+:xnack-"). */
static inline hipError_t gpu_device_name(int dev, char *name, size_t n_name, char *arch,
                                         size_t n_arch)
{
#if defined(GPU_VENDOR_AMD)
    hipDeviceProp_t p;
    hipError_t err = hipGetDeviceProperties(&p, dev);
    if (err == hipSuccess) {
        snprintf(name, n_name, "%s", p.name);
        snprintf(arch, n_arch, "%s", p.gcnArchName);
    }
#else
    cudaDeviceProp p;
    cudaError_t err = cudaGetDeviceProperties(&p, dev);
    if (err == cudaSuccess) {
        snprintf(name, n_name, "%s", p.name);
        snprintf(arch, n_arch, "sm_%d%d", p.major, p.minor);
    }
#endif // GPU_VENDOR_AMD
    return err;
}

/* The current device's warp (wavefront) width into *w, for launch shapes: OPT_OK or OPT_EGPU
 * (gpu_record_error). */
static inline int gpu_warp_size(int *w)
{
    int dev = 0;
    GPU_CHECK(hipGetDevice(&dev));
    GPU_CHECK(hipDeviceGetAttribute(w, hipDeviceAttributeWarpSize, dev));
    return OPT_OK;
}

/* Once per device and kernel: ask the runtime how many blocks of `threads` threads and smem
 * bytes of dynamic shared memory of kern fit on an SM (raising kern's dynamic shared-memory
 * limit to smem first when smem > 0). cache: the caller's static int[64] for this kernel (0
 * until asked). *resident: that count (>= 1). Launchers size their grids by it. */
static inline int gpu_resident_blocks(const void *kern, int threads, int smem, int *cache,
                                      int *resident)
{
    int dev = 0;
    GPU_CHECK(hipGetDevice(&dev));
    int res = dev >= 0 && dev < 64 ? cache[dev] : 0;
    if (res <= 0) {
        if (smem > 0)
            GPU_CHECK(hipFuncSetAttribute(kern, hipFuncAttributeMaxDynamicSharedMemorySize, smem));
        GPU_CHECK(hipOccupancyMaxActiveBlocksPerMultiprocessor(&res, kern, threads, smem));
        res = res < 1 ? 1 : res;
        if (dev >= 0 && dev < 64)
            cache[dev] = res;
    }
    *resident = res;
    return OPT_OK;
}

#if defined(GPU_VENDOR_NVIDIA)
/* A launch configuration of grid x block threads, smem bytes, on stream, in clusters of
 * `cluster` consecutive blocks (attr: its storage; cluster <= 1: no cluster attribute). */
static inline cudaLaunchConfig_t gpu__launch_config(unsigned grid, unsigned block, size_t smem,
                                                    hipStream_t stream, unsigned cluster,
                                                    cudaLaunchAttribute *attr)
{
    attr->id = cudaLaunchAttributeClusterDimension;
    attr->val.clusterDim.x = cluster, attr->val.clusterDim.y = 1, attr->val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg;
    cfg.gridDim = dim3(grid), cfg.blockDim = dim3(block), cfg.dynamicSmemBytes = smem;
    cfg.stream = stream, cfg.attrs = attr, cfg.numAttrs = cluster > 1 ? 1 : 0;
    return cfg;
}
#endif // GPU_VENDOR_NVIDIA

/* Whether kern may be launched in clusters of `cluster` (2 .. 8) blocks of `threads` threads
 * and smem bytes of dynamic shared memory on the current device without losing resident
 * blocks: the device has cluster launch, kern's loaded image is sm_90 code or newer (an image
 * built for older targets lacks the GPU_HAS_CLUSTER paths), and the runtime fits as many
 * blocks in clusters as `resident` (blocks per SM) * SMs. Asked once per device, kernel and
 * cluster size; cache: the caller's static int[64 * 8] for this kernel (0 until asked, then
 * 1 no, 2 yes). AMD: never. */
static inline int gpu_cluster_ok(const void *kern, int threads, int smem, int cluster, int resident,
                                 int *cache, bool *ok)
{
    *ok = false;
#if defined(GPU_VENDOR_NVIDIA)
    if (cluster < 2 || cluster > 8)
        return OPT_OK;
    int dev = 0;
    GPU_CHECK(hipGetDevice(&dev));
    int v = dev >= 0 && dev < 64 ? cache[dev * 8 + cluster - 1] : 0;
    if (v == 0) {
        int has = 0, sms = 0;
        GPU_CHECK(cudaDeviceGetAttribute(&has, cudaDevAttrClusterLaunch, dev));
        GPU_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        cudaFuncAttributes fa;
        GPU_CHECK(cudaFuncGetAttributes(&fa, kern));
        int fits = 0;
        if (has && fa.binaryVersion >= 90) {
            cudaLaunchAttribute attr;
            const cudaLaunchConfig_t cfg = gpu__launch_config(
                (unsigned)(cluster * sms * resident), (unsigned)threads, (size_t)smem, 0,
                (unsigned)cluster, &attr);
            /* A query the runtime refuses means no clusters (the caller's other path), not a
             * failed launch: its error is cleared. */
            if (cudaOccupancyMaxActiveClusters(&fits, kern, &cfg) != cudaSuccess) {
                fits = 0;
                (void)cudaGetLastError();
            }
        }
        v = fits * cluster >= sms * resident ? 2 : 1;
        if (dev >= 0 && dev < 64)
            cache[dev * 8 + cluster - 1] = v;
    }
    *ok = v == 2;
#else
    (void)kern, (void)threads, (void)smem, (void)cluster, (void)resident, (void)cache;
#endif // GPU_VENDOR_NVIDIA
    return OPT_OK;
}

/* kern<<<grid, block, smem, stream>>>(args...), in clusters of `cluster` consecutive blocks
 * when cluster > 1 (grid % cluster == 0, cluster <= 8, the portable size; only where
 * gpu_cluster_ok() said yes). The launch's error, as hipGetLastError() would give it. */
template <class... P, class... A>
static inline hipError_t gpu_launch(void (*kern)(P...), unsigned grid, unsigned block, size_t smem,
                                    hipStream_t stream, unsigned cluster, A... args)
{
#if defined(GPU_VENDOR_NVIDIA)
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = gpu__launch_config(grid, block, smem, stream, cluster, &attr);
    return cudaLaunchKernelEx(&cfg, kern, ((P)args)...);
#else
    if (cluster > 1)
        return hipErrorInvalidValue;
    hipLaunchKernelGGL(kern, dim3(grid), dim3(block), smem, stream, ((P)args)...);
    return hipGetLastError();
#endif // GPU_VENDOR_NVIDIA
}

#endif /* ATTN_GPU_PORT_H */
