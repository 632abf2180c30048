/* run.c - the `run` engine: for each selected case, make inputs, compute the f64 reference,
 * run each candidate into poisoned, canary-guarded outputs, judge, and report.
 *
 * Candidates today: `emulated`, the reference in REF_EMULATE mode rounded to the output
 * dtypes, which says how far a kernel with the usual rounding points sits from the contract
 * and is the denominator of err_ratio. GPU variants join through the path's variant table.
 */
#include "run.h"

#ifdef ATTN_HAVE_GPU
#include "opt.h"
#endif // ATTN_HAVE_GPU

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef ATTN_GIT_REV
#define ATTN_GIT_REV "unknown"
#endif
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

/* ---------------------------------------------------------------- output */
typedef struct hx__sink {
    hx_writer json, csv;
    const hx_runinfo *ri;
    int n_rows, n_failed;
} hx__sink;

static void hx__emit(hx__sink *s, const hx_result *r)
{
    hx_table_row(stdout, r);
    fflush(stdout);
    if (s->json.f)
        hx_json_record(s->json.f, r, s->ri);
    if (s->csv.f)
        hx_csv_row(s->csv.f, r, s->ri);
    s->n_rows++;
    if (!hx_status_ok(r->status))
        s->n_failed++;
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
    if (!rc && (v->run(c, din, &dout, NULL) || opt_synchronize()))
        rc = hx_fail(&e, HX_ERUNTIME, "launch: %s", opt_last_error());
    if (!rc)
        rc = hx_dev_download(&dout, &out, &e);
    if (!rc)
        hx__judge(c, &out, ref, r);
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
        if (!env->gpu) {
            r.status = HX_SKIP_NO_GPU;
            snprintf(r.message, sizeof r.message, "no GPU (backend %s, %d device(s))",
                     hx_gpu_backend(), hx_gpu_count());
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

/* The emulated-precision reference as a candidate: reference(REF_EMULATE), rounded to the
 * output dtypes, judged like a kernel. Its max_abs is err_ratio's denominator. */
static int hx__run_emulated(const hx__env *env, const hx_case *c, const hx_tensors *in,
                            const hx_tensors *ref, const hx__refspeed *speed, hx_result *r)
{
    const hx_path *p = c->path;
    hx_err e = {0};
    hx_tensors out = {0}, emu64 = {0};
    hx__result_init(r, c, "emulated", "cpu");
    r->ref_seconds = speed->seconds;
    r->ref_gflops = speed->gflops;
    double t0 = hx_now();
    int rc = p->make_outputs(c, &out, &e);
    if (!rc)
        rc = hx_tensors_clone_shape(&out, REF_F64, &emu64, &e);
    if (!rc)
        rc = p->reference(c, in, &emu64, REF_EMULATE, &e);
    double dt = hx_now() - t0;
    if (!rc) {
        for (int i = 0; i < out.n; i++) {
            hx_tensor *t = &out.t[i];
            const double *v = emu64.t[i].data;
            hx__output_init(t, in);
            for (size_t j = 0; j < t->numel; j++)
                ref_store(t->dtype, t->data, j, v[j]);
        }
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
    }
    hx_tensors_free(&out);
    hx_tensors_free(&emu64);
    return HX_OK;
}

static int hx__run_case(const hx__env *env, const hx_case *c, hx__refspeed *speed)
{
    const hx_run_opts *o = env->o;
    hx_err e = {0};
    hx_tensors in = {0}, tpl = {0}, ref = {0};
    const hx_path *p = c->path;
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
    if (want_emu || want_gpu)
        hx__run_emulated(env, c, &in, &ref, speed, &emu);
    if (want_emu)
        hx__emit(env->s, &emu);
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
    hx__sink s = {.ri = &ri};
    hx_gpu gpu;
    hx__env env = {.o = o, .ri = &ri, .s = &s};
    hx__refspeed *speed = NULL;
    if ((rc = hx__gpu_setup(o, &gpu, &env, e)))
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
    int n_sel = 0;
    for (int k = 0; k < cases.n; k++)
        n_sel += k % o->shard_n == o->shard_i && hx__case_selected(o, &cases.v[k]);

    hx_table_header(stdout);
    double t_start = hx_now();
    int done = 0;
    for (int k = 0; k < cases.n && !rc; k++) {
        const hx_case *c = &cases.v[k];
        if (k % o->shard_n != o->shard_i || !hx__case_selected(o, c))
            continue;
        if (o->progress) {
            double el = hx_now() - t_start;
            fprintf(stderr, "[%d/%d] %s (%s)  elapsed %.1f s", done + 1, n_sel, c->name,
                    c->path->name, el);
            if (done > 0)
                fprintf(stderr, ", ETA %.0f s", el / done * (n_sel - done));
            fputc('\n', stderr);
        }
        rc = hx__run_case(&env, c, &speed[done]);
        done++;
    }
    if (rc) {
        hx_fail(e, rc, "run stopped: bad input files (see above)");
        goto out;
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
    if (env.flush)
        opt_free(env.flush);
#endif // ATTN_HAVE_GPU
    free(speed);
    hx_cases_free(&cases);
    if (rc)
        return rc;
    return s.n_failed ? 1 : 0;
}
