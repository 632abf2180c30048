/* opt.h - libattn_opt's C ABI: GPU launchers and device facts, plain C types only.
 * Kernels never see harness types. Every function returns OPT_OK (0) or a negative OPT_E*
 * code; opt_last_error() then says which call failed, where, and the runtime's message. */
#ifndef ATTN_OPT_H
#define ATTN_OPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { OPT_OK = 0, OPT_EGPU = -1, OPT_EINVAL = -2 };

const char *opt_last_error(void);
const char *opt_backend(void); /* "cuda" or "hip" */

typedef struct opt_device_info {
    char name[256];
    char arch[64];
    int multiprocessors; /* SMs (NVIDIA) or CUs (AMD) */
    int warp_size;
    int l2_bytes;
    int clock_khz, mem_clock_khz, mem_bus_bits;
    int cc_major, cc_minor;
    int smem_per_block;
    int runtime_version, driver_version;
    size_t mem_total, mem_free;
} opt_device_info;

int opt_device_count(int *n); /* 0 devices (not an error) when no GPU or no driver */
int opt_device_query(int dev, opt_device_info *out);
int opt_set_device(int dev);

/* Device memory for tests and the harness's device layer. */
int opt_alloc(void **p, size_t bytes);
int opt_free(void *p);
int opt_upload(void *dst, const void *src, size_t bytes);
int opt_download(void *dst, const void *src, size_t bytes);
int opt_synchronize(void);

/* Streaming-read probe (the roofline's read bandwidth): every 16-byte word of buf
 * [bytes / 16 x 16 B] is read once; block b XORs its words into partial[b] (so the loads
 * cannot be elided, and the result is checkable: the XOR of all partials is the XOR of all
 * words). bytes % 16 == 0; partial holds `blocks` uint32 x 4. */
int opt_probe_read(const void *buf, size_t bytes, uint32_t *partial, int blocks, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_OPT_H */
