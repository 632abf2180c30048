/* device.hip - device facts through attributes, device memory, and the error record behind
 * GPU_CHECK. No kernels here. */
#include "gpu_port.h"

#include <string.h>

static thread_local char opt__last_error[512];

int gpu_record_error(hipError_t err, const char *call, const char *file, int line)
{
    snprintf(opt__last_error, sizeof opt__last_error, "%s:%d: %s: %s", file, line, call,
             hipGetErrorString(err));
    return OPT_EGPU;
}

extern "C" const char *opt_last_error(void)
{
    return opt__last_error;
}

extern "C" const char *opt_backend(void)
{
#if defined(GPU_VENDOR_AMD)
    return "hip";
#else
    return "cuda";
#endif // GPU_VENDOR_AMD
}

extern "C" int opt_device_count(int *n)
{
    *n = 0;
    /* No driver or no device is a normal state for CPU-only machines, not an error. */
    if (hipGetDeviceCount(n) != hipSuccess) {
        *n = 0;
        (void)hipGetLastError();
    }
    return OPT_OK;
}

extern "C" int opt_set_device(int dev)
{
    GPU_CHECK(hipSetDevice(dev));
    return OPT_OK;
}

extern "C" int opt_device_query(int dev, opt_device_info *o)
{
    memset(o, 0, sizeof *o);
    GPU_CHECK(gpu_device_name(dev, o->name, sizeof o->name, o->arch, sizeof o->arch));
    struct {
        hipDeviceAttribute_t attr;
        int *dst;
    } attrs[] = {
        {hipDeviceAttributeMultiprocessorCount, &o->multiprocessors},
        {hipDeviceAttributeWarpSize, &o->warp_size},
        {hipDeviceAttributeL2CacheSize, &o->l2_bytes},
        {hipDeviceAttributeClockRate, &o->clock_khz},
        {hipDeviceAttributeMemoryClockRate, &o->mem_clock_khz},
        {hipDeviceAttributeMemoryBusWidth, &o->mem_bus_bits},
        {hipDeviceAttributeComputeCapabilityMajor, &o->cc_major},
        {hipDeviceAttributeComputeCapabilityMinor, &o->cc_minor},
        {hipDeviceAttributeMaxSharedMemoryPerBlock, &o->smem_per_block},
    };
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++)
        GPU_CHECK(hipDeviceGetAttribute(attrs[i].dst, attrs[i].attr, dev));
    GPU_CHECK(hipRuntimeGetVersion(&o->runtime_version));
    GPU_CHECK(hipDriverGetVersion(&o->driver_version));
    int cur = 0;
    GPU_CHECK(hipGetDevice(&cur));
    GPU_CHECK(hipSetDevice(dev));
    GPU_CHECK(hipMemGetInfo(&o->mem_free, &o->mem_total));
    GPU_CHECK(hipSetDevice(cur));
    return OPT_OK;
}

extern "C" int opt_alloc(void **p, size_t bytes)
{
    GPU_CHECK(hipMalloc(p, bytes));
    return OPT_OK;
}

extern "C" int opt_free(void *p)
{
    GPU_CHECK(hipFree(p));
    return OPT_OK;
}

extern "C" int opt_upload(void *dst, const void *src, size_t bytes)
{
    GPU_CHECK(hipMemcpy(dst, src, bytes, hipMemcpyHostToDevice));
    return OPT_OK;
}

extern "C" int opt_download(void *dst, const void *src, size_t bytes)
{
    GPU_CHECK(hipMemcpy(dst, src, bytes, hipMemcpyDeviceToHost));
    return OPT_OK;
}

extern "C" int opt_synchronize(void)
{
    GPU_CHECK(hipDeviceSynchronize());
    return OPT_OK;
}

/* ------------------------------------------------------------------ timing */
__global__ void empty_kernel() {}

extern "C" int opt_event_create(void **ev)
{
    hipEvent_t e;
    GPU_CHECK(hipEventCreate(&e));
    *ev = (void *)e;
    return OPT_OK;
}

extern "C" int opt_event_destroy(void *ev)
{
    GPU_CHECK(hipEventDestroy((hipEvent_t)ev));
    return OPT_OK;
}

extern "C" int opt_event_record(void *ev, void *stream)
{
    GPU_CHECK(hipEventRecord((hipEvent_t)ev, (hipStream_t)stream));
    return OPT_OK;
}

extern "C" int opt_event_elapsed(void *start, void *stop, float *ms)
{
    GPU_CHECK(hipEventSynchronize((hipEvent_t)stop));
    GPU_CHECK(hipEventElapsedTime(ms, (hipEvent_t)start, (hipEvent_t)stop));
    return OPT_OK;
}

extern "C" int opt_empty_kernel(void *stream)
{
    empty_kernel<<<1, 1, 0, (hipStream_t)stream>>>();
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}
