/* hx.h - the harness: cases, named tensor sets, paths, comparison, results.
 *
 * Data flows one way (DESIGN.md): case file -> hx_case -> the path makes named input
 * tensors -> the reference computes f64 outputs -> each candidate (the emulated-precision
 * reference, GPU variants) writes storage-dtype outputs into poisoned, canary-guarded
 * buffers -> hx_compare -> one hx_result -> table, JSON Lines, CSV.
 * Only main() exits; everything else returns 0 or a negative HX_E* code with an hx_err
 * that says where and how to fix it.
 */
#ifndef ATTN_HX_H
#define ATTN_HX_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ref.h"

/* ---------------------------------------------------------------------- errors */
/* name, code, text, process exit code */
#define HX_ERRORS(X)                                  \
    X(HX_OK, 0, "ok", 0)                              \
    X(HX_EUSAGE, -1, "usage error", 2)                \
    X(HX_ECASE, -2, "case file error", 2)             \
    X(HX_EIO, -3, "file error", 3)                    \
    X(HX_EINPUT, -6, "bad input file", 2)             \
    X(HX_ENOMEM, -4, "out of memory", 3)              \
    X(HX_ERUNTIME, -5, "runtime error", 3)

enum {
#define HX__ENUM(name, code, text, exitc) name = code,
    HX_ERRORS(HX__ENUM)
#undef HX__ENUM
};

typedef struct hx_err {
    int code;
    char msg[1024];
} hx_err;

/* Record an error (printf format) and return its code; a NULL e is allowed. */
int hx_fail(hx_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *hx_strerror(int code);
int hx_exit_code(int code); /* 0, 2 or 3 (DESIGN.md) */

/* --------------------------------------------------------------------- tensors */
#define HX_MAX_DIMS 6
#define HX_MAX_TENSORS 24
#define HX_NAME_MAX 32
#define HX_GUARD 256          /* canary bytes on each side of every host buffer */
#define HX_CANARY_BYTE 0xA7u

typedef struct hx_tensor {
    char name[HX_NAME_MAX];
    ref_dtype dtype;
    int ndim;
    int64_t shape[HX_MAX_DIMS];
    size_t numel, bytes;
    void *data; /* host; HX_GUARD canary bytes lie on either side */
} hx_tensor;

typedef struct hx_tensors {
    int n;
    hx_tensor t[HX_MAX_TENSORS];
} hx_tensors;

/* Add a zero-filled tensor with canaries around it. Fails on a duplicate name. */
hx_tensor *hx_tensors_add(hx_tensors *s, const char *name, ref_dtype dt, int ndim,
                          const int64_t *shape, hx_err *e);
hx_tensor *hx_tensors_get(const hx_tensors *s, const char *name);
/* Same names and shapes in dtype dt (f64 for reference outputs). */
int hx_tensors_clone_shape(const hx_tensors *src, ref_dtype dt, hx_tensors *dst, hx_err *e);
void hx_tensors_free(hx_tensors *s);
void hx_tensor_shape_str(const hx_tensor *t, char *buf, size_t n); /* "[4, 8, 128]" */

int hx_tensor_canary_ok(const hx_tensor *t);
/* Fill with the poison of its dtype: a NaN whose payload no arithmetic produces. */
void hx_tensor_poison(hx_tensor *t);
int hx_is_poison(ref_dtype dt, const void *data, size_t i);
/* Fill a float tensor, generated in its storage dtype: element i = round(sd * N(0,1)) from
 * the counter-based RNG keyed by (key, tensor name). */
void hx_tensor_fill_normal(hx_tensor *t, uint64_t key, double sd);

/* ----------------------------------------------------------------------- cases */
#define HX_CASE_NAME_MAX 96
#define HX_MAX_OUTPUTS 4

typedef struct hx_tol {
    double atol, rtol, cos_tol; /* cos_tol < 0: not applied */
} hx_tol;

/* A sequence-length specification as written ("3000..4096", "4096,17,0", "512*3,1"),
 * expanded per sequence once the batch size is known. */
#define HX_LENS_TEXT_MAX 200
typedef struct hx_lens {
    int set;                     /* given in the case file */
    int line;                    /* where */
    char text[HX_LENS_TEXT_MAX]; /* as written */
    int n;                       /* values after expansion (== batch) */
    int32_t *v;                  /* malloc'd; freed by hx_case_free */
} hx_lens;

typedef struct hx_case {
    char name[HX_CASE_NAME_MAX];
    char file[256];
    int line;                     /* line of the [section] header */
    const struct hx_path *path;
    uint64_t seed;                /* ref_hash_str(name) ^ run seed: every input comes from it */

    /* shape parameters (0 = not given; the path's check() fills defaults) */
    int batch, heads_q, heads_kv, head_dim, head_dim_v, tokens;
    hx_lens seq_lens_q, seq_lens_k;

    /* attention options */
    double scale;    /* 0 = not given (default 1/sqrt(Dqk)) */
    double softcap;  /* 0 = none */
    int causal;      /* -1 = not given */
    int window_left; /* -1 = none */
    ref_dtype dtype; /* storage of q, k, v and out; REF_DTYPE_COUNT = not given */

    /* paged KV cache (SPEC section 0) */
    hx_lens context_lens;   /* cached tokens per request (extend, mixed, mla_prefill) */
    int layout;             /* HX_LAYOUT_*; -1 = not given */
    ref_dtype kv_dtype;     /* cache element dtype; REF_DTYPE_COUNT = not given */
    int block_size;
    int num_blocks;         /* physical blocks in the pool; 0 = as many as needed */
    int block_alloc;        /* HX_ALLOC_*: how block ids are handed out; -1 = not given */
    double k_scale, v_scale;/* fp8 per-tensor scales; 0 = not given */
    int chunk_tokens;       /* extend / mla_prefill: context tokens per chunk; 0 = default */

    /* DeepSeek V4 sparse decode (SPEC section 10) */
    hx_lens positions;      /* position p of each decode token */
    int window;             /* SWA window; 0 = default (128) */
    int topk;               /* extra-scope index row width K */
    int compress_ratio;     /* extra scope: one compressed entry per this many positions */
    int swa_block_size, extra_block_size;
    int sink;               /* HX_SINK_*; -1 = not given */

    char tags[128];

    /* tolerance overrides per output; loosening one needs tol_reason */
    struct {
        char output[HX_NAME_MAX];
        int line;
        int has_atol, has_rtol, has_cos;
        hx_tol tol;
    } tol_override[HX_MAX_OUTPUTS];
    int n_tol_override;
    char tol_reason[256];

    /* which keys were given and on which line, for messages */
    uint64_t keys_given;
    int key_line[64];
} hx_case;

enum { HX_LAYOUT_NHD, HX_LAYOUT_HND, HX_LAYOUT_SHUFFLED };          /* key layout */
enum { HX_ALLOC_PERMUTED, HX_ALLOC_IDENTITY, HX_ALLOC_HIGH };     /* key block_alloc */
enum { HX_SINK_NONE, HX_SINK_RANDOM, HX_SINK_POS_INF, HX_SINK_NEG_INF }; /* key sink */
const char *hx_layout_name(int layout); /* "nhd", "hnd", "shuffled" */

typedef struct hx_caselist {
    int n, cap;
    hx_case *v;
} hx_caselist;

/* Parse one INI case file and append its cases (validated by each path's check()).
 * Errors name file:line, the key, and what is accepted. */
int hx_cases_load(const char *file, uint64_t run_seed, hx_caselist *out, hx_err *e);
/* The same for case-file text in memory (len bytes, NUL not needed); messages name it `name`. */
int hx_cases_load_text(const char *name, const char *text, size_t len, uint64_t run_seed,
                       hx_caselist *out, hx_err *e);
void hx_cases_free(hx_caselist *l);
void hx_case_free(hx_case *c);
/* Was key `key` given in the case file? Its line, or 0. */
int hx_case_key_line(const hx_case *c, const char *key);
/* An error about a case, prefixed "file:line: [case]" (line of key if given, else header). */
int hx_case_fail(hx_err *e, const hx_case *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Expand l->text to n values (ranges drawn from the case seed and the key name); errors name
 * the key's line. A one-value spec broadcasts; a list must have 1 or n values. */
int hx_lens_expand(const hx_case *c, const char *key, hx_lens *l, int n, hx_err *e);
/* Copy of a lens (same text and values), for defaults such as seq_lens_k = seq_lens_q. */
int hx_lens_copy(hx_lens *dst, const hx_lens *src, hx_err *e);

/* ------------------------------------------------------------------ the GPU
 * Device copies of a tensor set. Every device buffer mirrors its host buffer byte for byte,
 * canary guards included: outputs go up poisoned and guarded and come back whole, so the
 * host judge sees unwritten elements and out-of-bounds writes made on the device. */
typedef struct hx_dtensor {
    char name[HX_NAME_MAX];
    void *base; /* device allocation: HX_GUARD + bytes + HX_GUARD */
    void *ptr;  /* = base + HX_GUARD: what kernels get */
    size_t bytes;
} hx_dtensor;

typedef struct hx_dtensors {
    int n;
    hx_dtensor t[HX_MAX_TENSORS];
} hx_dtensors;

void *hx_dptr(const hx_dtensors *s, const char *name); /* NULL if absent */

/* The device a run uses, its facts and the peaks measured on it in this process. */
typedef struct hx_gpu {
    int index;
    char name[256], arch[64];
    int multiprocessors, warp_size, l2_bytes, cc_major, cc_minor, smem_per_block;
    int runtime_version, driver_version;
    size_t mem_total;
    double read_gbps, copy_gbps, mma_tflops; /* measured peaks (roofline); NAN until measured */
} hx_gpu;

/* ----------------------------------------------------------------------- paths */
/* One GPU kernel design for a path. */
typedef struct hx_variant {
    const char *name;    /* "simple", "split_kv", "mma", ... */
    const char *summary;
    /* NULL when the variant runs this case on this GPU, else the reason it cannot. */
    const char *(*unsupported)(const struct hx_case *c, const hx_gpu *g);
    /* Launch into the device outputs; 0 or an OPT_E* code (opt_last_error() says why). */
    int (*run)(const struct hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream);
    /* Optional: bytes of device scratch the kernel needs; the harness allocates it once per
     * (case, variant), outside the timed window, as hx_dptr(out, "workspace"). */
    size_t (*workspace)(const struct hx_case *c);
    /* NULL: two launches on the same inputs give bit-identical outputs (--determinism checks
     * it; a difference is FAIL_NONDETERMINISTIC). Else why they may not ("split-KV combine
     * order depends on atomics"): a difference is then recorded, not failed. */
    const char *nondeterministic;
    /* 1: a request's outputs do not depend on the rest of the batch (--batch-invariance
     * reruns one request alone and requires its slice of the batch's outputs, bit for bit). */
    int batch_invariant;
} hx_variant;

typedef struct hx_cost {
    double flops; /* SPEC.md cost model: unmasked keys only */
    double bytes; /* every input byte read once + every output byte written */
} hx_cost;

typedef struct hx_path {
    const char *name;
    const char *summary;
    const char *keys;    /* space-separated case keys it takes (beyond path/tags/tolerances) */
    const char *outputs; /* space-separated output tensor names ("out lse") */
    int bit_exact;    /* data movement: compared bit-exactly (profile 0/0) */
    /* Validate a parsed case and fill defaults; messages through hx_case_fail. */
    int (*check)(hx_case *c, hx_err *e);
    /* Allocate and generate the named inputs in their storage dtypes. */
    int (*make_inputs)(const hx_case *c, hx_tensors *in, hx_err *e);
    /* Validate inputs that may have been loaded from files (index tensors, lengths). */
    int (*check_inputs)(const hx_case *c, const hx_tensors *in, hx_err *e);
    /* Allocate the outputs in the storage dtypes a kernel writes. */
    int (*make_outputs)(const hx_case *c, hx_tensors *out, hx_err *e);
    /* Compute the outputs into f64 tensors shaped like make_outputs' (same names). */
    int (*reference)(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                     hx_err *e);
    hx_cost (*cost)(const hx_case *c);
    /* Decode flat element `i` of output `name` into path coordinates ("seq 2 token 17 ..."). */
    void (*locate)(const hx_case *c, const char *name, size_t i, char *buf, size_t n);
    const hx_variant *variants; /* GPU kernels; the first is the path's baseline */
    int n_variants;
} hx_path;

/* In a path descriptor: `HX_VARIANTS(table)` names its GPU variant table, which exists only in
 * GPU builds (it calls the kernels' launchers). */
#ifdef ATTN_HAVE_GPU
#define HX_VARIANTS(table) .variants = table, .n_variants = (int)(sizeof table / sizeof table[0])
#else
#define HX_VARIANTS(table) .variants = NULL, .n_variants = 0
#endif // ATTN_HAVE_GPU

extern const hx_path *const hx_paths[];
extern const int hx_n_paths;
const hx_path *hx_path_find(const char *name);

/* Helpers shared by path descriptors */
int hx_check_positive(hx_err *e, const hx_case *c, const char *key, int v);
int32_t *hx_cu_from_lens(const hx_lens *l); /* [n + 1] prefix sums, malloc'd */
/* An i32 [n + 1] cu_seqlens input from lengths, and the check that a (possibly loaded) one
 * agrees with the case's lengths. */
hx_tensor *hx_make_cu_tensor(hx_tensors *in, const char *name, const hx_lens *l, hx_err *e);
int hx_check_cu_tensor(const hx_case *c, const hx_tensors *in, const char *name, const hx_lens *l,
                       hx_err *e);
/* Sum of the lengths (tokens of a packed varlen batch). */
int64_t hx_lens_total(const hx_lens *l);
/* The outputs of an attention path: `name` [tokens, heads, dim] in `dtype` and lse [heads,
 * tokens] f32. 0 or e->code. */
int hx_add_attn_outputs(hx_tensors *out, const char *name, ref_dtype dtype, int64_t tokens,
                        int64_t heads, int64_t dim, hx_err *e);
/* Flat element i of such an output (name "lse": [heads, tokens], else [tokens, heads, dim])
 * -> token, head and dim (-1 for lse). */
void hx_locate_attn(const char *name, size_t i, int64_t tokens, int64_t heads, int64_t dim,
                    int64_t *token, int64_t *head, int64_t *d);
/* Token `token` of a packed varlen batch -> (sequence, position in it); seq = -1 if past the end. */
void hx_locate_varlen(const hx_lens *l, int64_t token, int *seq, int64_t *pos);
/* A block table [n, max_blocks] i32 for sequences of lens[b] tokens in blocks of block_size:
 * ids from a pool of c->num_blocks (default: exactly as many as needed), handed out per
 * c->block_alloc (permuted by the case seed, identity, or the highest ids first); unused
 * entries are -1. *pool_blocks receives the pool size. */
hx_tensor *hx_make_block_table(const hx_case *c, hx_tensors *in, const char *name,
                               const int32_t *lens, int n, int block_size, int *pool_blocks,
                               hx_err *e);
/* The check of a (possibly loaded) block table: every used entry inside the pool. */
int hx_check_block_table(const hx_case *c, const hx_tensors *in, const char *name,
                         const int32_t *lens, int n, int block_size, int pool_blocks, hx_err *e);
/* Keys visible to query i of a (lq, lk) sequence under SPEC section 4's masks. */
int64_t hx_visible_keys(int64_t lq, int64_t lk, int64_t i, int causal, int window_left);

/* ------------------------------------------------------------------ comparison */
typedef enum hx_status {
    HX_PASS,
    HX_FAIL_NUMERIC,
    HX_FAIL_NONFINITE,
    HX_FAIL_UNWRITTEN,
    HX_FAIL_CANARY,
    HX_SKIP_UNSUPPORTED,
    HX_SKIP_NO_GPU,
    HX_ERROR,
    HX_FAIL_NONDETERMINISTIC, /* --determinism / --batch-invariance: outputs not bit-identical */
    HX_STATUS_COUNT
} hx_status;
const char *hx_status_name(hx_status s);
int hx_status_ok(hx_status s); /* PASS and the two skips */
/* The more severe of two statuses (for a case made of several outputs). */
hx_status hx_status_worst(hx_status a, hx_status b);

/* Default profile (VALIDATION.md) for an output of storage dtype dt. */
hx_tol hx_default_tol(ref_dtype dt, int is_lse, int bit_exact);

typedef struct hx_metrics {
    size_t n;                 /* elements compared */
    size_t n_bad;             /* failing |g - r| <= atol + rtol*|r| (NaN fails) */
    size_t n_nonfinite_mismatch;
    size_t n_unwritten;       /* still holding the poison */
    int canary_ok;
    double cos_diff, cos_sim, max_abs, max_rel, mean_abs, rel_l2;
    double headroom;          /* worst err / tol (> 1 fails) */
    size_t worst;             /* flat index of the worst element (largest err / tol) */
    double worst_got, worst_ref;
} hx_metrics;

/* Compare candidate `got` (storage dtype) against f64 `ref` of the same element count. */
hx_status hx_compare(const hx_tensor *got, const hx_tensor *ref, hx_tol tol, hx_metrics *m);

/* -------------------------------------------------------------------- results */
typedef struct hx_timing {
    int samples;
    double median_ms, min_ms, max_ms, stddev_ms; /* NAN when not timed */
} hx_timing;

#define HX_PROF_MAX 256 /* buckets of an error profile */

typedef struct hx_output_result {
    char name[HX_NAME_MAX];
    hx_status status;
    hx_tol tol;
    hx_metrics m;
    char where[160]; /* decoded worst element */
    /* Optional error profile along the token axis, written as "err_by_row" when prof_n > 0:
     * bucket i covers rows [i*prof_rows/prof_n, (i+1)*prof_rows/prof_n); max |g - r| and the
     * worst err/tol in it (+inf for a non-finite mismatch or an unwritten element). */
    int prof_n, prof_axis;
    int64_t prof_rows;
    float prof_max_abs[HX_PROF_MAX], prof_headroom[HX_PROF_MAX];
} hx_output_result;

typedef struct hx_result {
    const hx_case *c;
    char variant[48];
    char device[96];       /* "cpu" or the GPU's name */
    hx_status status;
    char message[1024];    /* why skipped / error text; empty on pass */
    int n_out;
    hx_output_result out[HX_MAX_OUTPUTS];
    double err_ratio;      /* NAN when not applicable */
    hx_timing t;
    hx_cost cost;
    double tflops, gbps;   /* NAN when not timed */
    double pct_peak;       /* % of the relevant measured peak, NAN if none */
    const char *peak_name; /* "dgemm", "read_bw", ... */
    double ref_seconds;    /* wall time of the f64 reference for this case */
    double ref_gflops;     /* its throughput under SPEC.md's cost model */
    /* 1 held, -1 did not hold, 0 not checked (zero-initialised records stay "not checked") */
    int deterministic;     /* --determinism: a rerun's outputs bit-identical */
    int batch_invariant;   /* --batch-invariance: one request alone == its slice of the batch */
} hx_result;

/* Facts about this run written into every record. */
typedef struct hx_runinfo {
    const hx_gpu *gpu; /* NULL for a CPU-only run */
    char git_rev[48];
    char build[160];   /* backend, compiler, flags */
    char host[96];
    char started[32];  /* ISO 8601 UTC */
    char argv[1024];   /* repro command */
    double dgemm_gflops;
    int threads;
    const char *blas;
} hx_runinfo;

typedef struct hx_writer {
    FILE *f;
    char path[512], tmp[520]; /* written to tmp, renamed on close */
} hx_writer;

int hx_writer_open(hx_writer *w, const char *path, hx_err *e);
int hx_writer_close(hx_writer *w, int keep, hx_err *e); /* keep = 0: remove the temp file */

void hx_table_header(FILE *f);
void hx_table_row(FILE *f, const hx_result *r);
void hx_json_record(FILE *f, const hx_result *r, const hx_runinfo *ri);
/* Fill o's error profile from a judged output (o->tol set): max |err| and worst err/tol per
 * bucket of at most HX_PROF_MAX consecutive rows of the token axis, which is the last axis of
 * `lse` ([heads, tokens]) and the first of every other output ([tokens, ...], [blocks, ...]). */
void hx_result_set_err_profile(hx_output_result *o, const hx_tensor *got, const hx_tensor *ref);
void hx_csv_header(FILE *f);
void hx_csv_row(FILE *f, const hx_result *r, const hx_runinfo *ri);

/* ------------------------------------------------------------------------- npy */
/* Save any tensor as .npy (bf16 as '<u2' raw bits, fp8/e8m0 as '|u1' raw bytes). */
int hx_npy_save(const char *path, const hx_tensor *t, hx_err *e);
/* Load into an existing tensor: the shape must match exactly; the dtype must match, or be
 * '<f4' for a narrow float tensor (rounded to nearest even on load), '<V2'/'<u2' for bf16. */
int hx_npy_load_into(const char *path, hx_tensor *t, hx_err *e);
/* The same for the bytes of a .npy file in memory; messages name it `name`. */
int hx_npy_load_mem(const char *name, const void *data, size_t len, hx_tensor *t, hx_err *e);

/* ---------------------------------------------------------------------- utils */
double hx_now(void);        /* monotonic seconds */
int hx_mkdir_p(const char *dir, hx_err *e);
int hx_glob_match(const char *pattern, const char *s); /* fnmatch, no FNM flags */

#endif /* ATTN_HX_H */
