/* records.h - result records read back from JSON Lines, for `plot` and `compare`.
 *
 * The records are those `attn-harness run --json` writes (results.c, hx_json_record) and
 * harness/peers/torch_peers.py writes in the same schema. The reader takes the fields the two
 * commands use, ignores every other key (so newer writers stay readable), and names file:line
 * and column for a line it cannot read.
 */
#ifndef ATTN_RECORDS_H
#define ATTN_RECORDS_H

#include "hx.h"

/* One output of a record (outputs[]). */
typedef struct hx_rec_out {
    char name[HX_NAME_MAX];
    char status[24];
    char where[160];     /* worst.where: the worst element in path coordinates */
    double atol, max_abs, cos_diff, headroom; /* NAN when null or absent */
    /* err_by_row (hx_result_set_err_profile): bucket i covers rows [i*rows/n, (i+1)*rows/n) of
     * the token axis `axis`; max |err| and worst err/tol per bucket, NAN where non-finite. */
    int prof_n, prof_axis;
    int64_t prof_rows;
    double *prof_max_abs, *prof_headroom; /* prof_n each, malloc'd; NULL when absent */
} hx_rec_out;

typedef struct hx_rec {
    char src[512];       /* the file it was read from */
    int line;            /* and its line */
    char case_name[HX_CASE_NAME_MAX], path[32], variant[48], device[96], status[24];
    char slug[96];       /* results/<slug>/: of run.gpu.name, else of device; "cpu" for the CPU */
    char message[256];
    hx_timing t;
    double flops, bytes, tflops, gbps, err_ratio;
    /* The run's measured peaks (run.gpu) and dgemm (run.dgemm_gflops); NAN when absent. */
    double read_gbps, copy_gbps, mma_tflops, dgemm_gflops;
    char git_rev[48];
    int n_out;
    hx_rec_out out[HX_MAX_OUTPUTS];
} hx_rec;

typedef struct hx_recset {
    int n, cap;
    hx_rec *v;
} hx_recset;

/* Append the records of a JSON Lines file, or of every *.jsonl under a directory (recursively,
 * in name order, so that of two runs named by their start time the later one is read last).
 * A line that is not a record: HX_EINPUT with "file:line: column C: ...". */
int hx_recs_load(hx_recset *s, const char *file_or_dir, hx_err *e);
/* Merge shards and repeated runs: keep the last record read of each (case, variant, slug),
 * in the order read; name the first few replaced ones on `warn`. Returns how many went. */
int hx_recs_dedup(hx_recset *s, const char *who, FILE *warn);
void hx_recs_free(hx_recset *s);

int hx_rec_status_ok(const char *status); /* PASS and the two skips, as hx_status_ok */
/* The worst output by headroom (NaN counts as worst); NULL without outputs. */
const hx_rec_out *hx_rec_worst_output(const hx_rec *r);
/* A device name as a results/ directory name: lower case, [a-z0-9-] (hx_device_slug's rule). */
void hx_slugify(const char *name, char *buf, size_t n);

/* ------------------------------------------------------------- the commands */
typedef struct hx_plot_opts {
    const char *out_dir;  /* figures in OUT/<slug>/, the combined one in OUT/; default "plots" */
    const char *scripts;  /* the gnuplot scripts; NULL = found next to the build (see plot.c) */
    const char *gnuplot;  /* the program; NULL = $GNUPLOT or "gnuplot" on PATH */
    int worst;            /* panels of the error-by-position figure (default 6) */
} hx_plot_opts;

/* `attn-harness plot`: 0, or a negative HX_E* (gnuplot missing or failing: HX_ERUNTIME). */
int hx_plot(const hx_plot_opts *o, char *const *srcs, int n_srcs, hx_err *e);

typedef struct hx_compare_opts {
    double warn, fail;    /* NEW/BASE median-time ratios: warn at, fail at (1.10, 1.15) */
    double drift;         /* accuracy drift: max_abs or cos_diff grown by this factor (1.5) */
    int cross_device;     /* match on (case, variant) only, e.g. to compare two GPUs */
    int quiet;            /* only rows that changed, and the summary */
    int missing_fails;    /* a BASE record absent from NEW fails (a lost shard, a crashed run) */
    const char *const *base, *const *new_; /* sources of each side: files or directories */
    int n_base, n_new;
} hx_compare_opts;

/* `attn-harness compare`: 0 no regression, 1 past --fail or a status regression, or a
 * negative HX_E* (bad file, nothing in common). */
int hx_compare_results(const hx_compare_opts *o, hx_err *e);

#endif /* ATTN_RECORDS_H */
