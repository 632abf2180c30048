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

/* Timing: events on a stream (NULL = default). opt_event_elapsed waits for `stop`. */
int opt_event_create(void **ev);
int opt_event_destroy(void *ev);
int opt_event_record(void *ev, void *stream);
int opt_event_elapsed(void *start, void *stop, float *ms);
/* Overwrite buf [bytes] on the device (evicts the L2 before a cold-cache timing). */
int opt_flush(void *buf, size_t bytes, int value, void *stream);
/* A kernel that does nothing: the timing self-test's floor. */
int opt_empty_kernel(void *stream);

/* Streaming-read probe (the roofline's read bandwidth): every 16-byte word of buf
 * [bytes / 16 x 16 B] is read once; block b XORs its words into partial[b] (so the loads
 * cannot be elided, and the result is checkable: the XOR of all partials is the XOR of all
 * words). bytes % 16 == 0; partial holds `blocks` uint32 x 4. */
int opt_probe_read(const void *buf, size_t bytes, uint32_t *partial, int blocks, void *stream);

/* Copy probe: dst[i] = src[i] over bytes / 16 words of 16 B (bytes % 16 == 0). */
int opt_probe_copy(void *dst, const void *src, size_t bytes, int blocks, void *stream);

/* Matrix-core probe: `blocks` blocks of 256 threads, each warp issuing `iters` x 8 independent
 * bf16 MMA tile products (f32 accumulate) on the primitive of gpu_port.h; sums go to sink
 * [blocks * 256] so nothing is elided. *flops receives the FLOPs this launch performs. */
int opt_probe_mma(int blocks, int iters, float *sink, double *flops, void *stream);

/* ------------------------------------------------------------------ dtypes
 * Element dtypes of launcher arguments; the values equal the reference's ref_dtype (checked
 * at compile time in the harness). Kernels keep narrow types as raw bits (numerics.h). */
enum { OPT_F32 = 0, OPT_BF16 = 2, OPT_F16 = 3, OPT_FP8E4M3 = 4 };

/* -------------------------------------------------------------- mha_varlen
 * SPEC section 4. q [tq, hq, dqk], k [tk, hkv, dqk], v [tk, hkv, dv] in `dtype`;
 * cu_q, cu_k [batch + 1] i32; out [tq, hq, dv] in `dtype`; lse [hq, tq] f32. */
typedef struct opt_varlen_args {
    int batch, tq, hq, hkv, dqk, dv;
    int dtype;
    const void *q, *k, *v;
    const int32_t *cu_q, *cu_k;
    float scale, softcap; /* softcap 0 = none */
    int causal, window_left;
    void *out;
    float *lse;
} opt_varlen_args;

/* simple: one block per (query token, head), keys streamed in tiles with an online softmax
 * in f32. Supports dqk, dv <= 256 and dtypes f32/bf16/f16. */
int opt_mha_varlen_simple(const opt_varlen_args *a, void *stream);

/* ------------------------------------------------------------ merge_states
 * SPEC section 3. oa, ob [t, h, d] in `dtype`; la, lb [h, t] f32 (+inf read as -inf);
 * out [t, h, d] in `dtype`; lse [h, t] f32. simple: one thread per output element. */
int opt_merge_states_simple(int t, int h, int d, int dtype, const void *oa, const void *ob,
                            const float *la, const float *lb, void *out, float *lse,
                            void *stream);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_OPT_H */
