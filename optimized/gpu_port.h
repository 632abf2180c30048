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
 *                        tests/test_gpu_probe.c multiplies ARANGE tiles through these helpers
 *                        and checks every element exactly (opt_mma_arange).
 *   GPU_HAS_MMA_SYNC     NVIDIA sm_80+ device code: the PTX warp instructions mma.sync
 *                        (m16n8k16, bf16 and f16, PTX's documented fragment layout), ldmatrix,
 *                        movmatrix and cp.async may be used inline; gpu_mma16816(), gpu_pack2(),
 *                        gpu_ldmatrix_x4(_trans)(), gpu_cp_async16() and friends below are the
 *                        shared spellings. Variants built on them are NVIDIA-only: elsewhere
 *                        their kernels trap and their unsupported() says so before any launch.
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
#define hipFuncAttributeMaxDynamicSharedMemorySize cudaFuncAttributeMaxDynamicSharedMemorySize

#else
#error "gpu_port.h is for GPU translation units (hipcc -x hip, or nvcc)"
#endif // vendor

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

#endif /* ATTN_GPU_PORT_H */
