/* gpu.c - the harness's view of the GPU: device count and facts for `info` (and, from
 * issue 4 on, the device layer). Compiles to "no GPU" when built without a backend. */
#include "run.h"

#ifdef ATTN_HAVE_GPU
#include "opt.h"

const char *hx_gpu_backend(void)
{
    return opt_backend();
}

int hx_gpu_count(void)
{
    int n = 0;
    opt_device_count(&n);
    return n;
}

void hx_gpu_describe(int dev, FILE *f)
{
    opt_device_info d;
    if (opt_device_query(dev, &d) != OPT_OK) {
        fprintf(f, "  [%d] error: %s\n", dev, opt_last_error());
        return;
    }
    fprintf(f, "  [%d] %s (%s): %d SMs/CUs, warp %d, L2 %.1f MiB, %.0f MHz core, memory %.0f MHz x "
               "%d bit, %.1f GiB (%.1f free), smem/block %d KiB, runtime %d, driver %d\n",
            dev, d.name, d.arch, d.multiprocessors, d.warp_size, d.l2_bytes / 1048576.0,
            d.clock_khz / 1e3, d.mem_clock_khz / 1e3, d.mem_bus_bits, d.mem_total / 1073741824.0,
            d.mem_free / 1073741824.0, d.smem_per_block / 1024, d.runtime_version, d.driver_version);
}

#else

const char *hx_gpu_backend(void)
{
    return "none";
}

int hx_gpu_count(void)
{
    return 0;
}

void hx_gpu_describe(int dev, FILE *f)
{
    (void)dev;
    (void)f;
}

#endif // ATTN_HAVE_GPU

void hx_device_slug(char *buf, size_t n)
{
    char name[256] = "cpu";
#ifdef ATTN_HAVE_GPU
    opt_device_info d;
    if (hx_gpu_count() > 0 && opt_device_query(0, &d) == OPT_OK)
        snprintf(name, sizeof name, "%s", d.name);
#endif // ATTN_HAVE_GPU
    size_t k = 0;
    for (const char *p = name; *p && k + 1 < n; p++) {
        char ch = *p;
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
            buf[k++] = ch;
        else if (k > 0 && buf[k - 1] != '-')
            buf[k++] = '-';
    }
    while (k > 0 && buf[k - 1] == '-')
        k--;
    buf[k] = '\0';
}
