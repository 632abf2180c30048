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
 */
#ifndef ATTN_GPU_PORT_H
#define ATTN_GPU_PORT_H

#include <stddef.h>
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
