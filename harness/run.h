/* run.h - the `run` subcommand's engine, and the GPU facts the CLI prints. */
#ifndef ATTN_RUN_H
#define ATTN_RUN_H

#include "hx.h"

typedef struct hx_run_opts {
    const char *filter;  /* glob on "case" or "case/variant"; NULL = all */
    const char *variant; /* only this variant; NULL = all */
    const char *path;    /* only cases of this path; NULL = all */
    int cpu_only;
    uint64_t seed;       /* XORed into every case seed */
    int shard_i, shard_n;
    const char *json, *csv, *dump, *inputs;
    int progress;        /* progress lines on stderr */
    int device;          /* GPU index */
    int warmup, iters;   /* untimed launches; minimum timed samples */
    int hot;             /* no L2 flush between samples */
    int no_timing;       /* verification launches only: no peaks, no timing (sanitizers) */
    int determinism;     /* rerun every passing candidate; outputs must be bit-identical */
    int batch_invariance;/* rerun one request alone; its outputs must be its batch slice's */
    double kernel_timeout; /* seconds any one wait for the GPU may take; 0 = no limit */
} hx_run_opts;

/* Load every file, run every selected case; 0 when every row is PASS or a skip, 1 when a
 * check failed, or a negative HX_E* for usage, case-file or I/O errors. */
int hx_run(const hx_run_opts *o, char *const *files, int n_files, const char *argv_line, hx_err *e);

/* Fill the parts of hx_runinfo that do not depend on the run's cases. */
void hx_runinfo_init(hx_runinfo *ri, const char *argv_line);

/* The bit-for-bit comparison behind --determinism and --batch-invariance: how many elements
 * of a and b differ in any bit (every element, if dtype or element count differ); *first
 * receives the flat index of the first that does. */
size_t hx_bits_diff(const hx_tensor *a, const hx_tensor *b, size_t *first);

/* ------------------------------------------------------------- the GPU (gpu.c)
 * Available only in a GPU build (ATTN_HAVE_GPU); hx_gpu_count() is 0 otherwise. */
typedef int (*hx_launch_fn)(void *ctx); /* one timed unit of work: 0 or an OPT_E* code */

typedef struct hx_time_opts {
    int warmup;      /* untimed launches first (MEASURE.md: 5) */
    int min_samples; /* at least this many timed launches (20) ... */
    double min_ms;   /* ... and at least this much GPU time (100 ms) */
    int hot;         /* 1: no L2 flush between samples */
    void *flush_buf; /* >= 2x L2, overwritten before each cold sample */
    size_t flush_bytes;
} hx_time_opts;

int hx_gpu_open(int index, hx_gpu *g, hx_err *e);
int hx_gpu_measure_peaks(hx_gpu *g, hx_err *e);
int hx_gpu_time(hx_launch_fn fn, void *ctx, const hx_time_opts *o, hx_timing *t, hx_err *e);
/* MEASURE.md's self-test: an empty kernel's median time, and a timed large copy's bandwidth
 * as a fraction of the measured copy peak. */
int hx_gpu_selftest(const hx_gpu *g, void *flush, size_t flush_bytes, double *empty_us,
                    double *copy_ratio, hx_err *e);
int hx_dev_upload(const hx_tensors *h, hx_dtensors *d, hx_err *e);
int hx_dev_download(const hx_dtensors *d, hx_tensors *h, hx_err *e);
/* Upload h again into the existing device buffers of the same names (fresh poisoned outputs
 * for a rerun); workspaces are left as they are. */
int hx_dev_refill(const hx_tensors *h, hx_dtensors *d, hx_err *e);
/* Wait for the device, at most the timeout (hx_gpu_set_timeout; 0 = no limit). Past it the
 * device is marked hung: hx_gpu_hung() says so for the rest of the process, and the device
 * layer makes no further call that could block on it (no frees). */
int hx_gpu_wait(hx_err *e);
void hx_dev_free(hx_dtensors *d);
/* Add a device scratch buffer named "workspace" (no host twin: never downloaded or judged). */
int hx_dev_add_workspace(hx_dtensors *d, size_t bytes, hx_err *e);
/* Sorted samples -> median, min, max, stddev (sorts ms in place). */
void hx_timing_from_samples(double *ms, int n, hx_timing *t);

/* `attn-harness roofline`: peaks and the timing self-test on device `dev`; an exit code. */
int hx_roofline(int dev);

/* The watchdog's limit in seconds (default 60; 0 = none), and whether it fired. Both exist
 * in CPU-only builds (no-ops there). */
void hx_gpu_set_timeout(double seconds);
int hx_gpu_hung(void);

/* GPU facts: number of devices (0 without a GPU build or device) and a description. */
int hx_gpu_count(void);
void hx_gpu_describe(int dev, FILE *f);
const char *hx_gpu_backend(void);
/* results/<slug>/: device 0's name, lower case, [a-z0-9-] only; "cpu" without a GPU. */
void hx_device_slug(char *buf, size_t n);

#endif /* ATTN_RUN_H */
