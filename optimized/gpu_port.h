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
 *                        v_mfma_f32_16x16x16bf16_1k. Fragments are opaque per lane:
 *                        GPU_MMA_A_REGS / _B_REGS 32-bit registers of packed bf16 pairs,
 *                        GPU_MMA_C_REGS floats. Which tile element each register holds is a
 *                        per-vendor contract that the kernels of issue 6 add with their
 *                        fragment index helpers; the roofline needs only the throughput.
 *   GPU_HAS_MMA_SYNC     NVIDIA sm_80+ device code: the PTX warp instructions mma.sync
 *                        (m16n8k16, bf16, with PTX's documented fragment layout), movmatrix
 *                        and cp.async may be used inline. Variants built on them are
 *                        NVIDIA-only: elsewhere their kernels trap and their unsupported()
 *                        says so before any launch.
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
#else
#define GPU_WARP_SIZE 32
#define GPU_SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
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
#endif // matrix primitive

#if defined(GPU_VENDOR_NVIDIA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GPU_HAS_MMA_SYNC 1
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
