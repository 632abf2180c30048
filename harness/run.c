/* run.c - the `run` engine: for each selected case, make inputs, compute the f64 reference,
 * run each candidate into poisoned, canary-guarded outputs, judge, and report.
 *
 * Candidates today: `emulated`, the reference in REF_EMULATE mode rounded to the output
 * dtypes, which says how far a kernel with the usual rounding points sits from the contract
 * and is the denominator of err_ratio. GPU variants join through the path's variant table.
 *
 * Reruns (a candidate whose verification passed): --determinism runs it again on the same
 * inputs into fresh poisoned outputs; --batch-invariance runs one request of the batch alone,
 * on inputs cut from the batch's. Either must reproduce the first run's outputs bit for bit;
 * where the candidate claims the property (hx_variant.nondeterministic / .batch_invariant)
 * a difference is FAIL_NONDETERMINISTIC, elsewhere it is recorded with a note.
 *
 * Test hook: ATTN_TEST_PERTURB=rerun (or =batch) flips one bit of every rerun's (or
 * one-request run's) first output before the comparison, so the failing side of both checks
 * is exercised without a faulty kernel.
 */
#include "run.h"
#include "attn_git_rev.h" // ATTN_GIT_REV, written at build time by cmake/git_rev.cmake

#ifdef ATTN_HAVE_GPU
#include "opt.h"
#endif // ATTN_HAVE_GPU

#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef ATTN_BUILD_INFO
#define ATTN_BUILD_INFO "unknown"
#endif

void hx_runinfo_init(hx_runinfo *ri, const char *argv_line)
{
    memset(ri, 0, sizeof *ri);
    snprintf(ri->git_rev, sizeof ri->git_rev, "%s", ATTN_GIT_REV);
    snprintf(ri->build, sizeof ri->build, "%s", ATTN_BUILD_INFO);
    if (gethostname(ri->host, sizeof ri->host) != 0)
        snprintf(ri->host, sizeof ri->host, "unknown");
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ri->started, sizeof ri->started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(ri->argv, sizeof ri->argv, "%s", argv_line);
    ri->threads = ref_threads();
    ri->blas = ref_blas_name();
    ri->dgemm_gflops = NAN;
}

/* ------------------------------------------------------------ input files */
static int hx__file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* --inputs DIR: replace generated inputs by DIR/<case>/<tensor>.npy where present. */
static int hx__load_inputs(const hx_case *c, const char *dir, hx_tensors *in, hx_err *e)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, c->name);
    if (!hx__file_exists(p))
        return hx_fail(e, HX_EINPUT, "--inputs: no directory '%s' for case [%s]", p, c->name);
    int loaded = 0;
    for (int i = 0; i < in->n; i++) {
        snprintf(p, sizeof p, "%s/%s/%s.npy", dir, c->name, in->t[i].name);
        if (!hx__file_exists(p))
            continue;
        if (hx_npy_load_into(p, &in->t[i], e)) /* the user's file: a usage error, exit 2 */
            return e->code = HX_EINPUT;
        loaded++;
    }
    if (!loaded)
        return hx_fail(e, HX_EINPUT, "--inputs: '%s/%s' holds none of the case's input tensors", dir,
                       c->name);
    return HX_OK;
}

/* --dump DIR: DIR/<case>/<prefix><tensor>.npy for every tensor of a set. */
static int hx__dump(const hx_case *c, const char *dir, const char *prefix, const hx_tensors *s,
                    hx_err *e)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, c->name);
    int rc = hx_mkdir_p(p, e);
    for (int i = 0; !rc && i < s->n; i++) {
        snprintf(p, sizeof p, "%s/%s/%s%s.npy", dir, c->name, prefix, s->t[i].name);
        rc = hx_npy_save(p, &s->t[i], e);
    }
    return rc;
}

/* ------------------------------------------------------------- judging */
static hx_tol hx__tol_for(const hx_case *c, const hx_tensor *t)
{
    hx_tol tol = hx_default_tol(t->dtype, strcmp(t->name, "lse") == 0, c->path->bit_exact);
    for (int i = 0; i < c->n_tol_override; i++) {
        if (strcmp(c->tol_override[i].output, t->name) != 0)
            continue;
        if (c->tol_override[i].has_atol)
            tol.atol = c->tol_override[i].tol.atol;
        if (c->tol_override[i].has_rtol)
            tol.rtol = c->tol_override[i].tol.rtol;
        if (c->tol_override[i].has_cos)
            tol.cos_tol = c->tol_override[i].tol.cos_tol;
    }
    return tol;
}

/* Judge every output of a candidate set against the f64 reference set. */
static void hx__judge(const hx_case *c, const hx_tensors *got, const hx_tensors *ref, hx_result *r)
{
    r->status = HX_PASS;
    r->n_out = 0;
    for (int i = 0; i < ref->n && r->n_out < HX_MAX_OUTPUTS; i++) {
        hx_output_result *o = &r->out[r->n_out++];
        const hx_tensor *rt = &ref->t[i], *gt = hx_tensors_get(got, rt->name);
        snprintf(o->name, sizeof o->name, "%s", rt->name);
        if (!gt) { /* a missing output is a failure, never a pass */
            o->status = HX_FAIL_UNWRITTEN;
            snprintf(o->where, sizeof o->where, "output missing");
        } else {
            o->tol = hx__tol_for(c, gt);
            o->status = hx_compare(gt, rt, o->tol, &o->m);
            c->path->locate(c, rt->name, o->m.worst, o->where, sizeof o->where);
            hx_result_set_err_profile(o, gt, rt); /* "err_by_row": the error-by-position plot */
        }
        r->status = hx_status_worst(r->status, o->status);
    }
}

/* Tensor bits, element by element (the first difference is reported in path coordinates). */
size_t hx_bits_diff(const hx_tensor *a, const hx_tensor *b, size_t *first)
{
    *first = 0;
    if (a->dtype != b->dtype || a->numel != b->numel)
        return a->numel > b->numel ? a->numel : b->numel;
    if (memcmp(a->data, b->data, a->bytes) == 0)
        return 0;
    const size_t esz = ref_dtype_size(a->dtype);
    const unsigned char *x = a->data, *y = b->data;
    size_t n = 0;
    for (size_t i = a->numel; i-- > 0;)
        if (memcmp(x + i * esz, y + i * esz, esz) != 0)
            *first = i, n++;
    return n;
}

static void hx__result_init(hx_result *r, const hx_case *c, const char *variant, const char *device)
{
    memset(r, 0, sizeof *r);
    r->c = c;
    snprintf(r->variant, sizeof r->variant, "%s", variant);
    snprintf(r->device, sizeof r->device, "%s", device);
    r->err_ratio = r->tflops = r->gbps = r->pct_peak = NAN;
    r->t.median_ms = r->t.min_ms = r->t.max_ms = r->t.stddev_ms = NAN;
    r->ref_seconds = r->ref_gflops = NAN;
    r->cost = c->path->cost(c);
}

/* -------------------------------------------------------------- progress
 * One line on stderr per step (case, then candidate): cases done/total, the current
 * case/candidate, elapsed time and ETA. On a terminal the line is redrawn in place (\r);
 * otherwise every step is its own line, for CI logs. The ETA adds two measured rates: the
 * CPU part of a case (inputs, reference, emulated) in seconds per unit of SPEC.md's cost
 * (flops + bytes), and the GPU part in seconds per GPU row (timing dominates it, whatever
 * the case's size), applied to what remains, less the time already spent on the current case. */
typedef struct hx__progress {
    int on, tty, total, done;
    double t_start, t_case, t_gpu0;   /* run start, current case start, its GPU part's start */
    double w_done, cpu_done, g_done, gpu_done; /* cost and seconds of the finished cases */
    double w_left, g_left;            /* cost and GPU rows of the unfinished ones */
    double w_cur, g_cur;              /* the current case's */
} hx__progress;

static void hx__duration(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, n, "?");
    else if (s < 60)
        snprintf(buf, n, "%.1f s", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static double hx__eta(const hx__progress *p, double now)
{
    if (!p->done)
        return NAN;
    double cpu = p->w_done > 0 ? p->cpu_done / p->w_done * p->w_left
                               : p->cpu_done / p->done * (p->total - p->done);
    double gpu = p->g_done > 0 ? p->gpu_done / p->g_done * p->g_left : 0;
    double eta = cpu + gpu - (now - p->t_case);
    return eta > 0 ? eta : 0;
}

static void hx__progress_step(hx__progress *p, const hx_case *c, const char *step)
{
    if (!p || !p->on)
        return;
    const double now = hx_now();
    char el[32], eta[32];
    hx__duration(now - p->t_start, el, sizeof el);
    hx__duration(hx__eta(p, now), eta, sizeof eta);
    fprintf(stderr, "%s[%d/%d] %s/%s  elapsed %s  ETA %s%s", p->tty ? "\r" : "", p->done + 1,
            p->total, c->name, step, el, eta, p->tty ? "\033[K" : "\n");
    fflush(stderr);
}

/* On a terminal: blank the progress line before stdout writes over it. */
static void hx__progress_clear(const hx__progress *p)
{
    if (p && p->on && p->tty) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

/* ---------------------------------------------------------------- output */
typedef struct hx__sink {
    hx_writer json, csv;
    const hx_runinfo *ri;
    hx__progress *prog;
    int n_rows, n_failed;
} hx__sink;

static void hx__emit(hx__sink *s, const hx_result *r)
{
    hx__progress_clear(s->prog);
    hx_table_row(stdout, r);
    fflush(stdout);
    if (s->json.f)
        hx_json_record(s->json.f, r, s->ri);
    if (s->csv.f)
        hx_csv_row(s->csv.f, r, s->ri);
    /* Every record reaches the file as it is made: a run that is killed leaves whole records
     * in the temporary file, one that is interrupted keeps them under the final name. */
    if (s->json.f)
        fflush(s->json.f);
    if (s->csv.f)
        fflush(s->csv.f);
    s->n_rows++;
    if (!hx_status_ok(r->status))
        s->n_failed++;
}

/* SIGINT / SIGTERM (Ctrl-C, `timeout`): the first one lets the case under way finish, then the
 * run stops and keeps what it wrote; one more, a second or later, ends the process at once
 * (default action). Repeats within that second are the same request, not a second one:
 * `timeout` signals the command and then its whole process group, so a run under it gets its
 * TERM twice at once -- which, taken as the second request, lost the records of runs a timeout
 * stopped (seen on the device: FILE.tmp<pid> left behind, no "interrupted" line). */
static volatile sig_atomic_t hx__stop_signal;
static struct timespec hx__stop_at; /* the first one's CLOCK_MONOTONIC time */

static void hx__on_stop_signal(int sig)
{
    struct timespec now; /* clock_gettime, signal and raise are async-signal-safe */
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!hx__stop_signal) {
        hx__stop_at = now;
        hx__stop_signal = sig;
        return;
    }
    if ((double)(now.tv_sec - hx__stop_at.tv_sec) + 1e-9 * (double)(now.tv_nsec - hx__stop_at.tv_nsec) < 1.0)
        return;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ------------------------------------------------------------ one case */
typedef struct hx__refspeed {
    const hx_case *c;
    double seconds, gflops;
} hx__refspeed;

/* What every case of a run shares. */
typedef struct hx__env {
    const hx_run_opts *o;
    const hx_runinfo *ri;
    hx__sink *s;
    const hx_gpu *gpu;  /* NULL: no GPU variants run (CPU-only build, no device, --cpu-only) */
    void *flush;
    size_t flush_bytes;
    hx__progress *prog;
    const char *perturb; /* ATTN_TEST_PERTURB: "rerun", "batch" or NULL */
} hx__env;

static int hx__selected(const hx_run_opts *o, const hx_case *c, const char *variant)
{
    if (o->variant && strcmp(o->variant, variant) != 0)
        return 0;
    if (!o->filter)
        return 1;
    char key[HX_CASE_NAME_MAX + 64];
    snprintf(key, sizeof key, "%s/%s", c->name, variant);
    return hx_glob_match(o->filter, c->name) || hx_glob_match(o->filter, key);
}

static int hx__case_selected(const hx_run_opts *o, const hx_case *c)
{
    if (o->path && strcmp(o->path, c->path->name) != 0)
        return 0;
    if (hx__selected(o, c, "emulated"))
        return 1;
    for (int i = 0; i < c->path->n_variants; i++)
        if (hx__selected(o, c, c->path->variants[i].name))
            return 1;
    return 0;
}

static void hx__row_error(hx__sink *s, const hx_case *c, const char *variant, const hx_err *e)
{
    hx_result r;
    hx__result_init(&r, c, variant, "cpu");
    r.status = HX_ERROR;
    snprintf(r.message, sizeof r.message, "%s", e->msg);
    hx__emit(s, &r);
}

/* An output is poisoned, unless it is also an input (an in-place path such as cache_write,
 * whose kernel writes some slots of the caches it is given): then it starts as that input,
 * and the bit-exact comparison sees every byte the kernel should not have touched. */
static void hx__output_init(hx_tensor *t, const hx_tensors *in)
{
    const hx_tensor *src = hx_tensors_get(in, t->name);
    if (src && src->bytes == t->bytes)
        memcpy(t->data, src->data, t->bytes);
    else
        hx_tensor_poison(t);
}

/* ---------------------------------------------------------------- reruns */
/* The test hook: one bit of the first output of a `which` rerun flipped. */
static void hx__perturb(const hx__env *env, const char *which, hx_tensors *got)
{
    if (env->perturb && strcmp(env->perturb, which) == 0 && got->n && got->t[0].bytes)
        *(unsigned char *)got->t[0].data ^= 1;
}

/* `got` (a rerun) against `want` (the first run's outputs, or the request's slice of them),
 * bit for bit. Records the check in *held (1 held, -1 not); a difference fails the row when
 * the candidate claims the property (`unclaimed` NULL), else it becomes a note saying so. */
static void hx__verdict(const hx_case *c, const hx_tensors *want, const hx_tensors *got,
                        const char *what, const char *unclaimed, int *held, hx_result *r)
{
    *held = 1;
    for (int i = 0; i < want->n; i++) {
        const hx_tensor *w = &want->t[i], *g = hx_tensors_get(got, w->name);
        size_t first = 0, n = g ? hx_bits_diff(w, g, &first) : w->numel;
        if (!n)
            continue;
        char where[160] = "?", msg[640];
        c->path->locate(c, w->name, first, where, sizeof where);
        snprintf(msg, sizeof msg, "%s: %zu of %zu elements of '%s' differ, first at %s: %.9g, was %.9g",
                 what, n, w->numel, w->name, where,
                 g && first < g->numel ? ref_load(g->dtype, g->data, first) : NAN,
                 ref_load(w->dtype, w->data, first));
        *held = -1;
        if (!unclaimed) {
            r->status = hx_status_worst(r->status, HX_FAIL_NONDETERMINISTIC);
            snprintf(r->message, sizeof r->message, "%s", msg);
        } else {
            size_t k = strlen(r->message);
            snprintf(r->message + k, sizeof r->message - k, "%snote: %s (%s)", k ? "; " : "", msg,
                     unclaimed);
        }
        return;
    }
}

/* The emulated candidate's outputs: reference(REF_EMULATE) rounded to the output dtypes, in
 * outputs initialised as a kernel's are. */
static int hx__emulate(const hx_case *c, const hx_tensors *in, hx_tensors *out, hx_err *e)
{
    hx_tensors emu64 = {0};
    int rc = c->path->make_outputs(c, out, e);
    if (!rc)
        rc = hx_tensors_clone_shape(out, REF_F64, &emu64, e);
    if (!rc)
        rc = c->path->reference(c, in, &emu64, REF_EMULATE, e);
    for (int i = 0; !rc && i < out->n; i++) {
        hx_tensor *t = &out->t[i];
        const double *v = emu64.t[i].data;
        hx__output_init(t, in);
#pragma omp parallel for schedule(static)
        for (ptrdiff_t j = 0; j < (ptrdiff_t)t->numel; j++)
            ref_store(t->dtype, t->data, (size_t)j, v[j]);
    }
    hx_tensors_free(&emu64);
    return rc;
}

/* ------------------------------------------------------ batch invariance
 * One request of the batch run alone. Its case is the batch's with every per-request list cut
 * to that request; its inputs are cut from the batch's by the rules below (so they hold the
 * very values the batch run read; shared tensors such as KV caches stay whole); its outputs
 * must equal its slice of the batch's outputs bit for bit. The request is the one with the
 * longest lists (the most work; the first such). Paths not listed have no batch of
 * independent requests (cache_write, gather_cache, merge_states) or are not covered yet
 * (mixed, mla_prefill): the check is "not applicable" there and the record says null. */
enum {
    HX__BI_WHOLE, /* shared by every request: kept whole */
    HX__BI_REQ,   /* dim 0 is the request */
    HX__BI_TQ,    /* dim 0 is the packed query tokens (seq_lens_q) */
    HX__BI_TK,    /* dim 0 is the packed key tokens (seq_lens_k) */
    HX__BI_CUQ,   /* cu_seqlens over seq_lens_q: becomes [0, len] */
    HX__BI_CUK,   /* same over seq_lens_k */
    HX__BI_TABLE, /* block table: the request's row, as wide as its own blocks need */
    HX__BI_REQ1,  /* dim 1 is the request (lse [Hq, B]) */
    HX__BI_TQ1,   /* dim 1 is the packed query tokens (lse [Hq, Tq]) */
    HX__BI_COUNT
};
static const char *const hx__bi_kinds[HX__BI_COUNT] = {"whole", "req", "tq", "tk", "cuq",
                                                       "cuk", "table", "req1", "tq1"};

static const struct hx__bi_path {
    const char *path;
    const char *rules;  /* "tensor:kind ..." for every input and output */
    int table_context;  /* a block-table row covers context_lens (else seq_lens) */
} hx__bi_paths[] = {
    {"mha_varlen", "q:tq k:tk v:tk cu_seqlens_q:cuq cu_seqlens_k:cuk out:tq lse:tq1", 0},
    {"paged_decode",
     "q:req block_table:table seq_lens:req k_cache:whole v_cache:whole k_scale:whole "
     "v_scale:whole out:req lse:req1", 0},
    {"extend",
     "q:tq k_new:tq v_new:tq cu_seqlens_q:cuq context_lens:req block_table:table k_cache:whole "
     "v_cache:whole k_scale:whole v_scale:whole out:tq lse:tq1", 1},
    {"mla_decode",
     "q:req block_table:table seq_lens:req kv_cache:whole k_scale:whole out_lat:req lse:req1", 0},
    {"dsv4_sparse_decode",
     "q:req swa_cache:whole swa_idx:req swa_len:req extra_cache:whole extra_idx:req "
     "extra_len:req sink:whole out:req lse:req1", 0},
};

typedef struct hx__sub {
    const struct hx__bi_path *bp;
    const hx_case *batch;
    hx_case c;     /* the one-request case; its lists point into the batch case's */
    int req, n_req;
    hx_tensors in; /* cut inputs (the first n_cut), then the whole ones, aliased */
    int n_cut;
} hx__sub;

static int hx__bi_kind(const struct hx__bi_path *bp, const char *name)
{
    const size_t n = strlen(name);
    for (const char *r = bp->rules; *r;) {
        const size_t len = strcspn(r, " ");
        const char *colon = memchr(r, ':', len);
        if (colon && (size_t)(colon - r) == n && strncmp(r, name, n) == 0)
            for (int k = 0; k < HX__BI_COUNT; k++)
                if (strlen(hx__bi_kinds[k]) == len - n - 1 &&
                    strncmp(colon + 1, hx__bi_kinds[k], len - n - 1) == 0)
                    return k;
        r += len;
        r += *r == ' ';
    }
    return -1;
}

/* dst = src[start[0] : start[0] + dst->shape[0], start[1] : ..., ...] */
static void hx__box_copy(const hx_tensor *src, hx_tensor *dst, const int64_t *start)
{
    const size_t esz = ref_dtype_size(src->dtype);
    const int nd = src->ndim;
    if (!dst->numel)
        return;
    const size_t last = (size_t)dst->shape[nd - 1], rows = dst->numel / last;
    for (size_t row = 0; row < rows; row++) {
        int64_t idx[HX_MAX_DIMS];
        size_t rem = row, off = 0;
        for (int d = nd - 2; d >= 0; d--) {
            idx[d] = (int64_t)(rem % (size_t)dst->shape[d]);
            rem /= (size_t)dst->shape[d];
        }
        for (int d = 0; d < nd - 1; d++)
            off = off * (size_t)src->shape[d] + (size_t)(idx[d] + start[d]);
        off = off * (size_t)src->shape[nd - 1] + (size_t)start[nd - 1];
        memcpy((char *)dst->data + row * last * esz, (const char *)src->data + off * esz, last * esz);
    }
}

/* Tensor t of the batch cut to the request by its rule, added to dst under the same name. */
static int hx__bi_cut(const hx__sub *s, const hx_tensor *t, hx_tensors *dst, hx_err *e)
{
    const hx_case *c = s->batch;
    const int kind = hx__bi_kind(s->bp, t->name), r = s->req;
    if (kind < 0)
        return hx_fail(e, HX_ERUNTIME,
                       "batch invariance: tensor '%s' of path %s has no rule (harness/run.c)",
                       t->name, s->bp->path);
    const hx_lens *l = kind == HX__BI_TK || kind == HX__BI_CUK ? &c->seq_lens_k
                       : kind == HX__BI_TABLE && s->bp->table_context ? &c->context_lens
                                                                       : &c->seq_lens_q;
    int64_t off = 0, total = 0, shape[HX_MAX_DIMS], start[HX_MAX_DIMS] = {0};
    for (int i = 0; i < l->n; i++)
        off += i < r ? l->v[i] : 0, total += l->v[i];
    for (int d = 0; d < t->ndim; d++)
        shape[d] = t->shape[d];
    const int dim = kind == HX__BI_REQ1 || kind == HX__BI_TQ1;
    const int64_t want = kind == HX__BI_REQ || kind == HX__BI_REQ1 || kind == HX__BI_TABLE
                             ? s->n_req
                         : kind == HX__BI_CUQ || kind == HX__BI_CUK ? s->n_req + 1
                                                                    : total;
    char sh[64];
    hx_tensor_shape_str(t, sh, sizeof sh);
    if (kind != HX__BI_WHOLE && (t->ndim <= dim || t->shape[dim] != want ||
                                 (kind == HX__BI_TABLE && t->ndim != 2) ||
                                 ((kind == HX__BI_CUQ || kind == HX__BI_CUK) && t->dtype != REF_I32)))
        return hx_fail(e, HX_ERUNTIME,
                       "batch invariance: tensor '%s' %s of path %s does not follow its rule '%s' "
                       "(harness/run.c)",
                       t->name, sh, s->bp->path, hx__bi_kinds[kind]);
    switch (kind) {
    case HX__BI_REQ:
    case HX__BI_REQ1:
        shape[dim] = 1, start[dim] = r;
        break;
    case HX__BI_TQ:
    case HX__BI_TK:
    case HX__BI_TQ1:
        shape[dim] = l->v[r], start[dim] = off;
        break;
    case HX__BI_TABLE: {
        const int64_t nb = ((int64_t)l->v[r] + c->block_size - 1) / c->block_size;
        shape[0] = 1, start[0] = r, shape[1] = nb > 1 ? nb : 1;
        if (shape[1] > t->shape[1])
            return hx_fail(e, HX_ERUNTIME, "batch invariance: '%s' %s is narrower than request %d's %lld blocks",
                           t->name, sh, r, (long long)shape[1]);
        break;
    }
    case HX__BI_CUQ:
    case HX__BI_CUK:
        shape[0] = 2;
        break;
    default:
        break;
    }
    hx_tensor *d = hx_tensors_add(dst, t->name, t->dtype, t->ndim, shape, e);
    if (!d)
        return e->code;
    if (kind == HX__BI_CUQ || kind == HX__BI_CUK) {
        const int32_t *cu = t->data;
        int32_t *o = d->data;
        o[0] = 0, o[1] = cu[r + 1] - cu[r];
        if (o[1] != l->v[r])
            return hx_fail(e, HX_ERUNTIME, "batch invariance: '%s' gives request %d %d tokens, the case %d",
                           t->name, r, o[1], l->v[r]);
    } else {
        hx__box_copy(t, d, start);
    }
    return HX_OK;
}

static void hx__sub_free(hx__sub *s)
{
    s->in.n = s->n_cut; /* the whole tensors are the batch's */
    hx_tensors_free(&s->in);
    s->n_cut = 0;
}

/* The one-request case and its inputs; *na says why the check does not apply (no batch of
 * independent requests, or a batch of one), with HX_OK. */
static int hx__sub_make(const hx_case *c, const hx_tensors *in, hx__sub *s, const char **na,
                        hx_err *e)
{
    memset(s, 0, sizeof *s);
    *na = NULL;
    for (size_t i = 0; i < sizeof hx__bi_paths / sizeof hx__bi_paths[0]; i++)
        if (strcmp(hx__bi_paths[i].path, c->path->name) == 0)
            s->bp = &hx__bi_paths[i];
    if (!s->bp) {
        *na = "not a batch of independent requests, or not covered";
        return HX_OK;
    }
    s->batch = c;
    s->c = *c;
    hx_lens *lists[] = {&s->c.seq_lens_q, &s->c.seq_lens_k, &s->c.context_lens, &s->c.positions};
    const int n_lists = (int)(sizeof lists / sizeof lists[0]);
    for (int i = 0; i < n_lists; i++)
        s->n_req = lists[i]->n > s->n_req ? lists[i]->n : s->n_req;
    if (s->n_req < 2) {
        *na = "a batch of one request";
        return HX_OK;
    }
    int64_t best = -1;
    for (int r = 0; r < s->n_req; r++) {
        int64_t w = 0;
        for (int i = 0; i < n_lists; i++)
            w += lists[i]->n == s->n_req ? lists[i]->v[r] : 0;
        if (w > best)
            best = w, s->req = r;
    }
    for (int i = 0; i < n_lists; i++)
        if (lists[i]->n == s->n_req)
            lists[i]->v += s->req, lists[i]->n = 1;
    if (s->c.batch > 0)
        s->c.batch = 1;
    int rc = HX_OK;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (int i = 0; i < in->n && !rc; i++) {
            const int whole = hx__bi_kind(s->bp, in->t[i].name) == HX__BI_WHOLE;
            if (pass == 0 && !whole)
                rc = hx__bi_cut(s, &in->t[i], &s->in, e);
            else if (pass == 1 && whole && s->in.n < HX_MAX_TENSORS)
                s->in.t[s->in.n++] = in->t[i];
        }
        if (pass == 0)
            s->n_cut = s->in.n;
    }
    /* The path's own check of the cut inputs: a wrong rule shows here, not as a false verdict. */
    if (!rc && c->path->check_inputs)
        rc = c->path->check_inputs(&s->c, &s->in, e);
    if (rc)
        hx__sub_free(s);
    return rc;
}

/* The request's slice of the batch's outputs. */
static int hx__sub_slice_outputs(const hx__sub *s, const hx_tensors *out, hx_tensors *want,
                                 hx_err *e)
{
    int rc = HX_OK;
    for (int i = 0; i < out->n && !rc; i++)
        rc = hx__bi_cut(s, &out->t[i], want, e);
    return rc;
}

static void hx__sub_what(const hx__sub *s, char *buf, size_t n)
{
    snprintf(buf, n, "batch invariance: request %d of %d run alone", s->req, s->n_req);
}

#ifdef ATTN_HAVE_GPU
static const hx_output_result *hx__find_output(const hx_result *r, const char *name)
{
    for (int i = 0; i < r->n_out; i++)
        if (strcmp(r->out[i].name, name) == 0)
            return &r->out[i];
    return NULL;
}

/* Throughput and % of the measured peak: against the roofline of the GPU's measured read
 * bandwidth and matrix throughput (whichever bounds this case's cost), or against copy
 * bandwidth for pure data movement (no FLOPs). */
static void hx__derive(hx_result *r, const hx_gpu *g)
{
    double s = r->t.median_ms * 1e-3;
    if (!(s > 0))
        return;
    r->tflops = r->cost.flops / s * 1e-12;
    r->gbps = r->cost.bytes / s * 1e-9;
    if (r->cost.flops <= 0) {
        r->pct_peak = 100.0 * r->gbps / g->copy_gbps;
        r->peak_name = "copy_bw";
        return;
    }
    double t_mem = r->cost.bytes / (g->read_gbps * 1e9), t_mma = r->cost.flops / (g->mma_tflops * 1e12);
    r->pct_peak = 100.0 * fmax(t_mem, t_mma) / s;
    r->peak_name = t_mma > t_mem ? "mma" : "read_bw";
}

typedef struct hx__launch {
    const hx_variant *v;
    const hx_case *c;
    const hx_dtensors *in;
    hx_dtensors *out;
} hx__launch;

static int hx__launch_fn(void *p)
{
    hx__launch *l = p;
    return l->v->run(l->c, l->in, l->out, NULL);
}

/* Launch into dout and wait (the watchdog), then bring the outputs home. */
static int hx__gpu_launch(const hx_case *c, const hx_variant *v, const hx_dtensors *din,
                          hx_dtensors *dout, hx_tensors *out, hx_err *e)
{
    const int lrc = v->run(c, din, dout, NULL);
    if (lrc == OPT_EINVAL) /* a launcher's argument check: opt_last_error() is not about it */
        return hx_fail(e, HX_ERUNTIME,
                       "launch: the %s launcher rejected its arguments (OPT_EINVAL) although "
                       "unsupported() let the case through",
                       v->name);
    if (lrc)
        return hx_fail(e, HX_ERUNTIME, "launch: %s", opt_last_error());
    int rc = hx_gpu_wait(e);
    return rc ? rc : hx_dev_download(dout, out, e);
}

/* --determinism: the variant again, on the same device inputs, into fresh poisoned outputs. */
static int hx__gpu_rerun(const hx__env *env, const hx_case *c, const hx_tensors *in,
                         const hx_variant *v, const hx_dtensors *din, const hx_tensors *out,
                         hx_dtensors *dout, hx_result *r, hx_err *e)
{
    hx_tensors again = {0};
    int rc = c->path->make_outputs(c, &again, e);
    for (int i = 0; !rc && i < again.n; i++)
        hx__output_init(&again.t[i], in);
    if (!rc)
        rc = hx_dev_refill(&again, dout, e);
    if (!rc)
        rc = hx__gpu_launch(c, v, din, dout, &again, e);
    if (!rc) {
        char why[256];
        snprintf(why, sizeof why, "declared nondeterministic: %s",
                 v->nondeterministic ? v->nondeterministic : "");
        hx__perturb(env, "rerun", &again);
        hx__verdict(c, out, &again, "nondeterministic: a rerun",
                    v->nondeterministic ? why : NULL, &r->deterministic, r);
    }
    hx_tensors_free(&again);
    return rc;
}

/* --batch-invariance: one request alone. Its cut inputs go up; the whole ones (caches) are
 * the batch's device buffers, shared through a view that is never freed itself. */
static int hx__gpu_sub(const hx__env *env, const hx_case *c, const hx_tensors *in,
                       const hx_variant *v, const hx_dtensors *din, const hx_tensors *out,
                       hx_result *r, hx_err *e)
{
    hx__sub s;
    const char *na;
    int rc = hx__sub_make(c, in, &s, &na, e);
    if (rc || na)
        return rc;
    if (v->unsupported && v->unsupported(&s.c, env->gpu)) { /* not applicable to this variant */
        hx__sub_free(&s);
        return HX_OK;
    }
    hx_tensors want = {0}, got = {0}, cut = s.in;
    hx_dtensors dcut = {0}, dout = {0};
    cut.n = s.n_cut;
    rc = hx_dev_upload(&cut, &dcut, e);
    hx_dtensors view = dcut;
    for (int i = s.n_cut; !rc && i < s.in.n; i++)
        for (int j = 0; j < din->n; j++)
            if (strcmp(din->t[j].name, s.in.t[i].name) == 0 && view.n < HX_MAX_TENSORS)
                view.t[view.n++] = din->t[j];
    if (!rc)
        rc = c->path->make_outputs(&s.c, &got, e);
    for (int i = 0; !rc && i < got.n; i++)
        hx__output_init(&got.t[i], &s.in);
    if (!rc)
        rc = hx_dev_upload(&got, &dout, e);
    if (!rc && v->workspace)
        rc = hx_dev_add_workspace(&dout, v->workspace(&s.c), e);
    if (!rc)
        rc = hx__gpu_launch(&s.c, v, &view, &dout, &got, e);
    if (!rc)
        rc = hx__sub_slice_outputs(&s, out, &want, e);
    if (!rc) {
        char what[128];
        hx__sub_what(&s, what, sizeof what);
        hx__perturb(env, "batch", &got);
        hx__verdict(&s.c, &want, &got, what,
                    v->batch_invariant ? NULL : "not claimed by the variant", &r->batch_invariant,
                    r);
    }
    hx_dev_free(&dcut);
    hx_dev_free(&dout);
    hx_tensors_free(&want);
    hx_tensors_free(&got);
    hx__sub_free(&s);
    return rc;
}

/* Verification launch into fresh poisoned, guarded outputs, judge, then time. */
static void hx__run_gpu_variant(const hx__env *env, const hx_case *c, const hx_tensors *in,
                                const hx_variant *v, const hx_dtensors *din,
                                const hx_tensors *ref, hx_result *r)
{
    hx_err e = {0};
    hx_tensors out = {0};
    hx_dtensors dout = {0};
    int rc = c->path->make_outputs(c, &out, &e);
    for (int i = 0; !rc && i < out.n; i++)
        hx__output_init(&out.t[i], in);
    if (!rc)
        rc = hx_dev_upload(&out, &dout, &e);
    if (!rc && v->workspace)
        rc = hx_dev_add_workspace(&dout, v->workspace(c), &e);
    if (!rc)
        rc = hx__gpu_launch(c, v, din, &dout, &out, &e);
    if (!rc)
        hx__judge(c, &out, ref, r);
    if (!rc && r->status == HX_PASS && env->o->determinism)
        rc = hx__gpu_rerun(env, c, in, v, din, &out, &dout, r, &e);
    if (!rc && r->status == HX_PASS && env->o->batch_invariance)
        rc = hx__gpu_sub(env, c, in, v, din, &out, r, &e);
    if (!rc && !env->o->no_timing) {
        hx__launch l = {v, c, din, &dout};
        hx_time_opts to = {.warmup = env->o->warmup, .min_samples = env->o->iters, .min_ms = 100,
                           .hot = env->o->hot, .flush_buf = env->flush,
                           .flush_bytes = env->flush_bytes};
        rc = hx_gpu_time(hx__launch_fn, &l, &to, &r->t, &e);
        if (!rc)
            hx__derive(r, env->gpu);
    }
    if (rc) {
        r->status = HX_ERROR;
        snprintf(r->message, sizeof r->message, "%s", e.msg);
    }
    if (env->o->dump && !rc) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s.", v->name);
        if (hx__dump(c, env->o->dump, prefix, &out, &e))
            fprintf(stderr, "attn-harness: %s\n", e.msg);
    }
    hx_dev_free(&dout);
    hx_tensors_free(&out);
}
#endif // ATTN_HAVE_GPU

/* Every GPU variant of the case's path: a row each (run, skipped with the reason, or no GPU). */
static void hx__run_variants(const hx__env *env, const hx_case *c, const hx_tensors *in,
                             const hx_tensors *ref, const hx_result *emu)
{
    const hx_path *p = c->path;
#ifdef ATTN_HAVE_GPU
    hx_dtensors din = {0};
    int uploaded = 0;
#endif // ATTN_HAVE_GPU
    for (int i = 0; i < p->n_variants; i++) {
        const hx_variant *v = &p->variants[i];
        if (env->o->cpu_only || !hx__selected(env->o, c, v->name))
            continue;
        hx_result r;
        hx__result_init(&r, c, v->name, env->gpu ? env->gpu->name : "none");
        const char *why = env->gpu && v->unsupported ? v->unsupported(c, env->gpu) : NULL;
        hx__progress_step(env->prog, c, v->name);
        if (!env->gpu) {
            r.status = HX_SKIP_NO_GPU;
            snprintf(r.message, sizeof r.message, "no GPU (backend %s, %d device(s))",
                     hx_gpu_backend(), hx_gpu_count());
        } else if (hx_gpu_hung()) {
            r.status = HX_SKIP_NO_GPU;
            snprintf(r.message, sizeof r.message,
                     "GPU unusable: an earlier kernel exceeded --kernel-timeout %g s", env->o->kernel_timeout);
        } else if (why) {
            r.status = HX_SKIP_UNSUPPORTED;
            snprintf(r.message, sizeof r.message, "%s", why);
        } else {
#ifdef ATTN_HAVE_GPU
            hx_err e = {0};
            if (!uploaded && hx_dev_upload(in, &din, &e)) {
                r.status = HX_ERROR;
                snprintf(r.message, sizeof r.message, "%s", e.msg);
            } else {
                uploaded = 1;
                hx__run_gpu_variant(env, c, in, v, &din, ref, &r);
                const hx_output_result *go = hx__find_output(&r, "out"),
                                       *eo = emu ? hx__find_output(emu, "out") : NULL;
                if (go && eo && eo->m.max_abs > 0)
                    r.err_ratio = go->m.max_abs / eo->m.max_abs;
            }
#endif // ATTN_HAVE_GPU
        }
        hx__emit(env->s, &r);
    }
#ifdef ATTN_HAVE_GPU
    hx_dev_free(&din);
#else
    (void)in, (void)ref, (void)emu;
#endif // ATTN_HAVE_GPU
}

/* The emulated candidate's claims. Determinism: the reference's OpenMP work items are whole
 * (head, query tile) or (sequence, head) units, each computed by one thread in a fixed order
 * (single-threaded dgemm inside), so the thread count and schedule change nothing. Batch
 * invariance: those units are per sequence, except in extend, whose emulated pipeline cuts
 * the batch's contexts laid end to end into chunks (docs/CHOICES.md): a request's chunk
 * boundaries move with the requests before it. */
static const char *hx__emulated_batch_variance(const hx_case *c)
{
    return strcmp(c->path->name, "extend") == 0
               ? "not claimed: emulated extend chunks the batch's contexts laid end to end"
               : NULL;
}

/* --determinism and --batch-invariance for the emulated candidate; `out` is its first run. */
static void hx__emulated_reruns(const hx__env *env, const hx_case *c, const hx_tensors *in,
                                const hx_tensors *out, hx_result *r)
{
    hx_err e = {0};
    int rc = HX_OK;
    if (env->o->determinism) {
        hx_tensors again = {0};
        rc = hx__emulate(c, in, &again, &e);
        if (!rc) {
            hx__perturb(env, "rerun", &again);
            hx__verdict(c, out, &again, "nondeterministic: a rerun", NULL, &r->deterministic, r);
        }
        hx_tensors_free(&again);
    }
    if (!rc && env->o->batch_invariance) {
        hx__sub s;
        const char *na;
        rc = hx__sub_make(c, in, &s, &na, &e);
        if (!rc && !na) {
            hx_tensors want = {0}, got = {0};
            char what[128];
            hx__sub_what(&s, what, sizeof what);
            rc = hx__sub_slice_outputs(&s, out, &want, &e);
            if (!rc)
                rc = hx__emulate(&s.c, &s.in, &got, &e);
            if (!rc) {
                hx__perturb(env, "batch", &got);
                hx__verdict(&s.c, &want, &got, what, hx__emulated_batch_variance(c),
                            &r->batch_invariant, r);
            }
            hx_tensors_free(&want);
            hx_tensors_free(&got);
            hx__sub_free(&s);
        }
    }
    if (rc) {
        r->status = HX_ERROR;
        snprintf(r->message, sizeof r->message, "%s", e.msg);
    }
}

/* The emulated-precision reference as a candidate: reference(REF_EMULATE), rounded to the
 * output dtypes, judged like a kernel. Its max_abs is err_ratio's denominator. */
static int hx__run_emulated(const hx__env *env, const hx_case *c, const hx_tensors *in,
                            const hx_tensors *ref, const hx__refspeed *speed, int reruns,
                            hx_result *r)
{
    hx_err e = {0};
    hx_tensors out = {0};
    hx__result_init(r, c, "emulated", "cpu");
    r->ref_seconds = speed->seconds;
    r->ref_gflops = speed->gflops;
    double t0 = hx_now();
    int rc = hx__emulate(c, in, &out, &e);
    double dt = hx_now() - t0;
    if (!rc) {
        hx__judge(c, &out, ref, r);
        r->t.samples = 1;
        r->t.median_ms = r->t.min_ms = r->t.max_ms = dt * 1e3;
        r->t.stddev_ms = 0;
        r->tflops = r->cost.flops / dt * 1e-12;
        r->gbps = r->cost.bytes / dt * 1e-9;
        if (isfinite(env->ri->dgemm_gflops) && r->cost.flops > 0) {
            r->pct_peak = 100.0 * r->tflops * 1e3 / env->ri->dgemm_gflops;
            r->peak_name = "dgemm";
        }
        if (env->o->dump)
            rc = hx__dump(c, env->o->dump, "emulated.", &out, &e);
    }
    if (rc) {
        r->status = HX_ERROR;
        snprintf(r->message, sizeof r->message, "%s", e.msg);
    } else if (r->status == HX_PASS && reruns) {
        hx__emulated_reruns(env, c, in, &out, r);
    }
    hx_tensors_free(&out);
    return HX_OK;
}

static int hx__run_case(const hx__env *env, const hx_case *c, hx__refspeed *speed)
{
    const hx_run_opts *o = env->o;
    hx_err e = {0};
    hx_tensors in = {0}, tpl = {0}, ref = {0};
    const hx_path *p = c->path;
    hx__progress_step(env->prog, c, "reference");
    int rc = p->make_inputs(c, &in, &e);
    if (!rc && o->inputs)
        rc = hx__load_inputs(c, o->inputs, &in, &e);
    if (!rc && p->check_inputs)
        rc = p->check_inputs(c, &in, &e);
    if (!rc)
        rc = p->make_outputs(c, &tpl, &e);
    if (!rc)
        rc = hx_tensors_clone_shape(&tpl, REF_F64, &ref, &e);
    if (rc == HX_EINPUT || rc == HX_ECASE)
        goto done; /* the user's files are wrong: stop the run, as for a bad case file */
    if (!rc) {
        double t0 = hx_now();
        rc = p->reference(c, &in, &ref, REF_EXACT, &e);
        speed->c = c;
        speed->seconds = hx_now() - t0;
        speed->gflops = p->cost(c).flops / speed->seconds * 1e-9;
    }
    if (!rc && o->dump && !(rc = hx__dump(c, o->dump, "", &in, &e)))
        rc = hx__dump(c, o->dump, "ref.", &ref, &e);
    if (rc) {
        hx__row_error(env->s, c, "reference", &e);
        rc = HX_OK;
        goto done;
    }
    hx_result emu;
    int want_gpu = env->gpu && !o->cpu_only && p->n_variants > 0;
    int want_emu = hx__selected(o, c, "emulated");
    if (want_emu)
        hx__progress_step(env->prog, c, "emulated");
    if (want_emu || want_gpu)
        hx__run_emulated(env, c, &in, &ref, speed, want_emu, &emu);
    if (want_emu)
        hx__emit(env->s, &emu);
    if (env->prog)
        env->prog->t_gpu0 = hx_now();
    hx__run_variants(env, c, &in, &ref, want_emu || want_gpu ? &emu : NULL);
done:
    if (rc)
        fprintf(stderr, "attn-harness: %s\n", e.msg);
    hx_tensors_free(&in);
    hx_tensors_free(&tpl);
    hx_tensors_free(&ref);
    return rc;
}

/* ------------------------------------------------------------ the run */
/* What the progress line's ETA weighs a case by: SPEC.md's cost (flops + bytes) for its CPU
 * part, and the GPU rows it will time. */
static double hx__case_cost(const hx_case *c)
{
    const hx_cost k = c->path->cost(c);
    return k.flops + k.bytes;
}

static double hx__case_gpu_rows(const hx__env *env, const hx_case *c)
{
    int n = 0;
    for (int i = 0; env->gpu && !env->o->cpu_only && i < c->path->n_variants; i++) {
        const hx_variant *v = &c->path->variants[i];
        n += hx__selected(env->o, c, v->name) && !(v->unsupported && v->unsupported(c, env->gpu));
    }
    return n;
}

/* Open the GPU, measure its peaks, allocate the L2 flush buffer (once per run). */
static int hx__gpu_setup(const hx_run_opts *o, hx_gpu *gpu, hx__env *env, hx_err *e)
{
#ifdef ATTN_HAVE_GPU
    if (o->cpu_only || hx_gpu_count() == 0)
        return HX_OK;
    int rc = hx_gpu_open(o->device, gpu, e);
    if (!rc && !o->no_timing)
        rc = hx_gpu_measure_peaks(gpu, e);
    if (rc)
        return rc;
    env->flush_bytes = (size_t)gpu->l2_bytes * 2 > ((size_t)64 << 20) ? (size_t)gpu->l2_bytes * 2
                                                                     : (size_t)64 << 20;
    if (opt_alloc(&env->flush, env->flush_bytes))
        return hx_fail(e, HX_ERUNTIME, "L2 flush buffer: %s", opt_last_error());
    env->gpu = gpu;
    fprintf(stderr, "attn-harness: %s (%s, %d SMs/CUs); measured peaks: read %.0f GB/s, copy %.0f "
                    "GB/s, bf16 mma %.0f TFLOP/s\n",
            gpu->name, gpu->arch, gpu->multiprocessors, gpu->read_gbps, gpu->copy_gbps,
            gpu->mma_tflops);
#else
    (void)o, (void)gpu, (void)env, (void)e;
#endif // ATTN_HAVE_GPU
    return HX_OK;
}

int hx_run(const hx_run_opts *o, char *const *files, int n_files, const char *argv_line, hx_err *e)
{
    hx_caselist cases = {0};
    int rc = HX_OK;
    for (int i = 0; i < n_files && !rc; i++)
        rc = hx_cases_load(files[i], o->seed, &cases, e);
    if (rc) {
        hx_cases_free(&cases);
        return rc;
    }

    hx_runinfo ri;
    hx_runinfo_init(&ri, argv_line);
    ri.dgemm_gflops = ref_dgemm_gflops(1024, 0.3);
    hx__progress prog = {.on = o->progress, .tty = isatty(2)};
    hx__sink s = {.ri = &ri, .prog = &prog};
    hx_gpu gpu;
    hx__env env = {.o = o, .ri = &ri, .s = &s, .prog = &prog, .perturb = getenv("ATTN_TEST_PERTURB")};
    hx__refspeed *speed = NULL;
    /* The peak measurement (about a second of known kernels) waits under a bound of its own, so
     * that a short --kernel-timeout meant for the candidates cannot end the run before a row. */
    const double kt = o->kernel_timeout;
    hx_gpu_set_timeout(kt > 0 && kt < 60 ? 60 : kt);
    rc = hx__gpu_setup(o, &gpu, &env, e);
    hx_gpu_set_timeout(kt);
    if (rc)
        goto out;
    ri.gpu = env.gpu;

    if (o->json && (rc = hx_writer_open(&s.json, o->json, e)))
        goto out;
    if (o->csv && (rc = hx_writer_open(&s.csv, o->csv, e)))
        goto out;
    if (s.csv.f)
        hx_csv_header(s.csv.f);

    speed = calloc((size_t)cases.n + 1, sizeof *speed);
    if (!speed) {
        rc = hx_fail(e, HX_ENOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < cases.n; k++) {
        const hx_case *c = &cases.v[k];
        if (k % o->shard_n != o->shard_i || !hx__case_selected(o, c))
            continue;
        prog.total++;
        prog.w_left += hx__case_cost(c);
        prog.g_left += hx__case_gpu_rows(&env, c);
    }

    hx_table_header(stdout);
    prog.t_start = hx_now();
    int done = 0;
    hx__stop_signal = 0;
    /* sigaction, not signal(): under _POSIX_C_SOURCE glibc's signal() is System V's, whose
     * handler is reset to the default action as it is called -- so a repeat killed the run. */
    struct sigaction stop = {0}, old_int, old_term;
    stop.sa_handler = hx__on_stop_signal;
    stop.sa_flags = SA_RESTART;
    sigemptyset(&stop.sa_mask);
    sigaction(SIGINT, NULL, &old_int);
    sigaction(SIGTERM, NULL, &old_term);
    if (old_int.sa_handler != SIG_IGN) /* ignored (nohup, a background job): stays ignored */
        sigaction(SIGINT, &stop, NULL);
    if (old_term.sa_handler != SIG_IGN)
        sigaction(SIGTERM, &stop, NULL);
    for (int k = 0; k < cases.n && !rc && !hx__stop_signal; k++) {
        const hx_case *c = &cases.v[k];
        if (k % o->shard_n != o->shard_i || !hx__case_selected(o, c))
            continue;
        const double w = hx__case_cost(c), g = hx__case_gpu_rows(&env, c);
        prog.t_case = hx_now();
        prog.t_gpu0 = NAN;
        rc = hx__run_case(&env, c, &speed[done]);
        const double t_end = hx_now(), t_gpu0 = isnan(prog.t_gpu0) ? t_end : prog.t_gpu0;
        prog.w_done += w, prog.w_left -= w, prog.g_done += g, prog.g_left -= g;
        prog.cpu_done += t_gpu0 - prog.t_case;
        prog.gpu_done += t_end - t_gpu0;
        prog.done = ++done;
    }
    hx__progress_clear(&prog);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc) {
        hx_fail(e, rc, "run stopped: bad input files (see above)");
        goto out;
    }
    const int stopped = hx__stop_signal;
    if (stopped) {
        fprintf(stderr, "attn-harness: interrupted (signal %d) after %d of %d cases", stopped,
                done, prog.total);
        if (o->json || o->csv)
            fprintf(stderr, "; their records are kept in %s%s%s", o->json ? o->json : "",
                    o->json && o->csv ? " and " : "", o->csv ? o->csv : "");
        fputc('\n', stderr);
    }

    printf("\nreference speed (f64, %d threads, %s; OpenBLAS dgemm measured now: %.1f GFLOP/s)\n",
           ri.threads, ri.blas, ri.dgemm_gflops);
    printf("%-36s %10s %10s %9s\n", "case", "seconds", "GFLOP/s", "%dgemm");
    for (int i = 0; i < done; i++) {
        if (!speed[i].c)
            continue;
        printf("%-36s %10.3f %10.2f", speed[i].c->name, speed[i].seconds, speed[i].gflops);
        if (speed[i].gflops > 0)
            printf(" %8.1f%%\n", 100.0 * speed[i].gflops / ri.dgemm_gflops);
        else
            printf(" %9s\n", "-");
    }
    printf("\n%d rows, %d not passing\n", s.n_rows, s.n_failed);
    if (!s.n_rows)
        fprintf(stderr, "attn-harness: no case/variant matched (filter '%s', variant '%s')\n",
                o->filter ? o->filter : "*", o->variant ? o->variant : "*");
out:;
    hx_err e2 = {0};
    int keep = rc == HX_OK;
    int rc1 = hx_writer_close(&s.json, keep, &e2);
    int rc2 = hx_writer_close(&s.csv, keep, &e2);
    if (!rc && (rc1 || rc2)) {
        *e = e2;
        rc = e2.code;
    }
#ifdef ATTN_HAVE_GPU
    if (env.flush && !hx_gpu_hung()) /* hung: freeing would wait for the kernel */
        opt_free(env.flush);
#endif // ATTN_HAVE_GPU
    free(speed);
    hx_cases_free(&cases);
    if (rc)
        return rc;
    if (hx__stop_signal)
        return 128 + hx__stop_signal; /* the shell's code for a run ended by that signal */
    return s.n_failed ? 1 : 0;
}
