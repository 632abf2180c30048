/* run.h - the `run` subcommand's engine, and the GPU facts the CLI prints. */
#ifndef ATTN_RUN_H
#define ATTN_RUN_H

#include "hx.h"

typedef struct hx_run_opts {
    const char *filter;  /* glob on "case" or "case/variant"; NULL = all */
    const char *variant; /* only this variant; NULL = all */
    int cpu_only;
    uint64_t seed;       /* XORed into every case seed */
    int shard_i, shard_n;
    const char *json, *csv, *dump, *inputs;
    int progress;        /* progress lines on stderr */
} hx_run_opts;

/* Load every file, run every selected case; 0 when every row is PASS or a skip, 1 when a
 * check failed, or a negative HX_E* for usage, case-file or I/O errors. */
int hx_run(const hx_run_opts *o, char *const *files, int n_files, const char *argv_line, hx_err *e);

/* Fill the parts of hx_runinfo that do not depend on the run's cases. */
void hx_runinfo_init(hx_runinfo *ri, const char *argv_line);

/* GPU facts (gpu.c): number of devices (0 without a GPU build or device) and a description. */
int hx_gpu_count(void);
void hx_gpu_describe(int dev, FILE *f);
const char *hx_gpu_backend(void);
/* results/<slug>/: device 0's name, lower case, [a-z0-9-] only; "cpu" without a GPU. */
void hx_device_slug(char *buf, size_t n);

#endif /* ATTN_RUN_H */
