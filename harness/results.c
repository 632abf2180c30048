/* results.c - one result per (case, variant, device): the stdout table, JSON Lines, CSV.
 *
 * Files are written under a temporary name and renamed on success, so a crash or an error
 * never leaves a half-written result file where a plot or a compare would read it.
 * Numbers are printed in the C locale with %.9g; non-finite values become null (JSON) or an
 * empty field (CSV), which both readers treat as missing.
 */
#include "hx.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

int hx_writer_open(hx_writer *w, const char *path, hx_err *e)
{
    memset(w, 0, sizeof *w);
    if (strlen(path) >= sizeof w->path - 16)
        return hx_fail(e, HX_EUSAGE, "result file name too long: '%s'", path);
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp%ld", path, (long)getpid());
    w->f = fopen(w->tmp, "w");
    if (!w->f)
        return hx_fail(e, HX_EIO, "cannot write '%s': %s", w->tmp, strerror(errno));
    return HX_OK;
}

int hx_writer_close(hx_writer *w, int keep, hx_err *e)
{
    if (!w->f)
        return HX_OK;
    int bad = ferror(w->f) | (fclose(w->f) != 0);
    w->f = NULL;
    if (!keep || bad) {
        remove(w->tmp);
        return bad ? hx_fail(e, HX_EIO, "error writing '%s'", w->path) : HX_OK;
    }
    if (rename(w->tmp, w->path) != 0) {
        int err = errno;
        remove(w->tmp);
        return hx_fail(e, HX_EIO, "cannot rename '%s' to '%s': %s", w->tmp, w->path, strerror(err));
    }
    return HX_OK;
}

/* ---------------------------------------------------------------- table */
static void hx__cell(FILE *f, int width, const char *fmt, double v)
{
    if (isfinite(v))
        fprintf(f, fmt, width, v);
    else
        fprintf(f, "%*s", width, "-");
}

static void hx__time_cell(FILE *f, double ms)
{
    if (!isfinite(ms))
        fprintf(f, " %10s", "-");
    else if (ms < 1.0)
        fprintf(f, " %7.2f us", ms * 1e3);
    else if (ms < 1e3)
        fprintf(f, " %7.2f ms", ms);
    else
        fprintf(f, " %7.2f s ", ms * 1e-3);
}

void hx_table_header(FILE *f)
{
    fprintf(f, "%-36s %-10s %-21s %9s %9s %8s %10s %9s %9s %7s  %s\n", "case", "variant", "status",
            "max_abs", "cos_diff", "headroom", "median", "TFLOP/s", "GB/s", "%peak", "seed");
}

/* The output with the worst headroom gives the row's accuracy columns. */
static const hx_output_result *hx__worst_output(const hx_result *r)
{
    const hx_output_result *w = NULL;
    for (int i = 0; i < r->n_out; i++)
        if (!w || r->out[i].m.headroom > w->m.headroom || isnan(r->out[i].m.headroom))
            w = &r->out[i];
    return w;
}

void hx_table_row(FILE *f, const hx_result *r)
{
    fprintf(f, "%-36s %-10s %-21s", r->c->name, r->variant, hx_status_name(r->status));
    const hx_output_result *w = hx__worst_output(r);
    const hx_output_result *o = r->n_out ? &r->out[0] : NULL; /* "out": the cos_diff that matters */
    hx__cell(f, 10, " %*.2e", w ? w->m.max_abs : NAN);
    hx__cell(f, 10, " %*.1e", o ? o->m.cos_diff : NAN);
    hx__cell(f, 9, " %*.3f", w ? w->m.headroom : NAN);
    hx__time_cell(f, r->t.median_ms);
    hx__cell(f, 10, " %*.3f", r->tflops);
    hx__cell(f, 10, " %*.1f", r->gbps);
    if (isfinite(r->pct_peak))
        fprintf(f, " %6.1f%%", r->pct_peak);
    else
        fprintf(f, " %7s", "-");
    fprintf(f, "  0x%016llx\n", (unsigned long long)r->c->seed);
    if (r->message[0])
        fprintf(f, "    %s\n", r->message);
    else if (r->status != HX_PASS && w)
        fprintf(f, "    worst %s at %s: got %.9g, want %.9g (%zu bad, %zu non-finite mismatches, "
                   "%zu unwritten)\n",
                w->name, w->where, w->m.worst_got, w->m.worst_ref, w->m.n_bad,
                w->m.n_nonfinite_mismatch, w->m.n_unwritten);
}

/* ----------------------------------------------------------------- JSON */
static void hx__jstr(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void hx__jnum(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.9g", v);
    else
        fputs("null", f);
}

static void hx__jkey(FILE *f, const char *k, int first)
{
    fprintf(f, "%s\"%s\":", first ? "" : ",", k);
}

static void hx__jlens(FILE *f, const char *k, const hx_lens *l)
{
    hx__jkey(f, k, 0);
    fputc('[', f);
    for (int i = 0; i < l->n; i++)
        fprintf(f, "%s%d", i ? "," : "", l->v[i]);
    fputc(']', f);
}

/* ------------------------------------------------------ error profile */
void hx_result_set_err_profile(hx_output_result *o, const hx_tensor *got, const hx_tensor *ref)
{
    o->prof_n = 0;
    if (!got || !ref || got->numel != ref->numel || got->ndim < 1 || !got->numel)
        return;
    const int axis = strcmp(o->name, "lse") == 0 && got->ndim >= 2 ? got->ndim - 1 : 0;
    const int64_t rows = got->shape[axis];
    size_t inner = 1;
    for (int d = axis + 1; d < got->ndim; d++)
        inner *= (size_t)got->shape[d];
    if (rows <= 0)
        return;
    const int n = rows < HX_PROF_MAX ? (int)rows : HX_PROF_MAX;
    for (int b = 0; b < n; b++)
        o->prof_max_abs[b] = o->prof_headroom[b] = 0;
    const double *r = ref->data;
    /* Each thread keeps its own buckets; maxima combine in any order to the same result. */
#pragma omp parallel
    {
        float mx[HX_PROF_MAX] = {0}, hr[HX_PROF_MAX] = {0};
#pragma omp for schedule(static)
        for (ptrdiff_t k = 0; k < (ptrdiff_t)got->numel; k++) {
            const size_t i = (size_t)k;
            const int b = (int)((int64_t)(i / inner % (size_t)rows) * n / rows);
            double err, ratio;
            if (hx_is_poison(got->dtype, got->data, i)) {
                err = ratio = INFINITY;
            } else {
                double g = ref_load(got->dtype, got->data, i);
                if (!isfinite(g) || !isfinite(r[i])) {
                    /* the same NaN or infinity on both sides is not an error (compare.c) */
                    if (isnan(g) ? isnan(r[i]) : g == r[i])
                        continue;
                    err = ratio = INFINITY;
                } else {
                    double lim = o->tol.atol + o->tol.rtol * fabs(r[i]);
                    err = fabs(g - r[i]);
                    ratio = lim > 0 ? err / lim : err > 0 ? INFINITY : 0;
                }
            }
            if (err > mx[b])
                mx[b] = (float)err;
            if (ratio > hr[b])
                hr[b] = (float)ratio;
        }
#pragma omp critical(hx__err_profile)
        for (int b = 0; b < n; b++) {
            if (mx[b] > o->prof_max_abs[b])
                o->prof_max_abs[b] = mx[b];
            if (hr[b] > o->prof_headroom[b])
                o->prof_headroom[b] = hr[b];
        }
    }
    o->prof_n = n;
    o->prof_axis = axis;
    o->prof_rows = rows;
}

/* Three significant digits: the profile is for plotting, and a record stays a few KiB. */
static void hx__jfloats(FILE *f, const char *k, const float *v, int n)
{
    hx__jkey(f, k, 0);
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        if (isfinite(v[i]))
            fprintf(f, "%.3g", (double)v[i]);
        else
            fputs("null", f);
    }
    fputc(']', f);
}

static void hx__jprofile(FILE *f, const hx_output_result *o)
{
    hx__jkey(f, "err_by_row", 0), fputc('{', f);
    hx__jkey(f, "axis", 1), fprintf(f, "%d", o->prof_axis);
    hx__jkey(f, "rows", 0), fprintf(f, "%lld", (long long)o->prof_rows);
    hx__jfloats(f, "max_abs", o->prof_max_abs, o->prof_n);
    hx__jfloats(f, "headroom", o->prof_headroom, o->prof_n);
    fputc('}', f);
}

void hx_json_record(FILE *f, const hx_result *r, const hx_runinfo *ri)
{
    const hx_case *c = r->c;
    fputc('{', f);
    hx__jkey(f, "schema", 1), fputs("1", f);
    hx__jkey(f, "case", 0), hx__jstr(f, c->name);
    hx__jkey(f, "path", 0), hx__jstr(f, c->path->name);
    hx__jkey(f, "variant", 0), hx__jstr(f, r->variant);
    hx__jkey(f, "device", 0), hx__jstr(f, r->device);
    hx__jkey(f, "status", 0), hx__jstr(f, hx_status_name(r->status));
    hx__jkey(f, "message", 0), hx__jstr(f, r->message);
    hx__jkey(f, "seed", 0), fprintf(f, "\"0x%016llx\"", (unsigned long long)c->seed);

    hx__jkey(f, "params", 0), fputc('{', f);
    hx__jkey(f, "file", 1), hx__jstr(f, c->file);
    hx__jkey(f, "line", 0), fprintf(f, "%d", c->line);
    hx__jkey(f, "dtype", 0), hx__jstr(f, ref_dtype_name(c->dtype));
    hx__jkey(f, "batch", 0), fprintf(f, "%d", c->batch);
    hx__jkey(f, "heads_q", 0), fprintf(f, "%d", c->heads_q);
    hx__jkey(f, "heads_kv", 0), fprintf(f, "%d", c->heads_kv);
    hx__jkey(f, "head_dim", 0), fprintf(f, "%d", c->head_dim);
    hx__jkey(f, "head_dim_v", 0), fprintf(f, "%d", c->head_dim_v);
    hx__jkey(f, "tokens", 0), fprintf(f, "%d", c->tokens);
    hx__jlens(f, "seq_lens_q", &c->seq_lens_q);
    hx__jlens(f, "seq_lens_k", &c->seq_lens_k);
    hx__jkey(f, "scale", 0), hx__jnum(f, c->scale);
    hx__jkey(f, "softcap", 0), hx__jnum(f, c->softcap);
    hx__jkey(f, "causal", 0), fprintf(f, "%d", c->causal);
    hx__jkey(f, "window_left", 0), fprintf(f, "%d", c->window_left);
    if (c->context_lens.n)
        hx__jlens(f, "context_lens", &c->context_lens);
    if (c->layout >= 0)
        hx__jkey(f, "layout", 0), hx__jstr(f, hx_layout_name(c->layout));
    if (c->kv_dtype < REF_DTYPE_COUNT)
        hx__jkey(f, "kv_dtype", 0), hx__jstr(f, ref_dtype_name(c->kv_dtype));
    const struct { const char *k; int v; } ints[] = {
        {"block_size", c->block_size}, {"num_blocks", c->num_blocks},
        {"block_alloc", c->block_alloc}, {"chunk_tokens", c->chunk_tokens},
        {"window", c->window}, {"topk", c->topk}, {"compress_ratio", c->compress_ratio},
        {"swa_block_size", c->swa_block_size}, {"extra_block_size", c->extra_block_size},
        {"sink", c->sink},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i].v > 0 || (ints[i].v == 0 && (!strcmp(ints[i].k, "sink") ||
                                                 !strcmp(ints[i].k, "block_alloc"))))
            hx__jkey(f, ints[i].k, 0), fprintf(f, "%d", ints[i].v);
    if (c->k_scale > 0)
        hx__jkey(f, "k_scale", 0), hx__jnum(f, c->k_scale);
    if (c->v_scale > 0)
        hx__jkey(f, "v_scale", 0), hx__jnum(f, c->v_scale);
    if (c->positions.n)
        hx__jlens(f, "positions", &c->positions);
    hx__jkey(f, "tags", 0), hx__jstr(f, c->tags);
    fputc('}', f);

    hx__jkey(f, "outputs", 0), fputc('[', f);
    for (int i = 0; i < r->n_out; i++) {
        const hx_output_result *o = &r->out[i];
        const hx_metrics *m = &o->m;
        fputs(i ? ",{" : "{", f);
        hx__jkey(f, "name", 1), hx__jstr(f, o->name);
        hx__jkey(f, "status", 0), hx__jstr(f, hx_status_name(o->status));
        hx__jkey(f, "atol", 0), hx__jnum(f, o->tol.atol);
        hx__jkey(f, "rtol", 0), hx__jnum(f, o->tol.rtol);
        hx__jkey(f, "cos_tol", 0), hx__jnum(f, o->tol.cos_tol >= 0 ? o->tol.cos_tol : NAN);
        hx__jkey(f, "n", 0), fprintf(f, "%zu", m->n);
        hx__jkey(f, "n_bad", 0), fprintf(f, "%zu", m->n_bad);
        hx__jkey(f, "n_nonfinite_mismatch", 0), fprintf(f, "%zu", m->n_nonfinite_mismatch);
        hx__jkey(f, "n_unwritten", 0), fprintf(f, "%zu", m->n_unwritten);
        hx__jkey(f, "canary_ok", 0), fputs(m->canary_ok ? "true" : "false", f);
        hx__jkey(f, "cos_diff", 0), hx__jnum(f, m->cos_diff);
        hx__jkey(f, "cos_sim", 0), hx__jnum(f, m->cos_sim);
        hx__jkey(f, "max_abs", 0), hx__jnum(f, m->max_abs);
        hx__jkey(f, "max_rel", 0), hx__jnum(f, m->max_rel);
        hx__jkey(f, "mean_abs", 0), hx__jnum(f, m->mean_abs);
        hx__jkey(f, "rel_l2", 0), hx__jnum(f, m->rel_l2);
        hx__jkey(f, "headroom", 0), hx__jnum(f, m->headroom);
        hx__jkey(f, "worst", 0), fputc('{', f);
        hx__jkey(f, "index", 1), fprintf(f, "%zu", m->worst);
        hx__jkey(f, "where", 0), hx__jstr(f, o->where);
        hx__jkey(f, "got", 0), hx__jnum(f, m->worst_got);
        hx__jkey(f, "ref", 0), hx__jnum(f, m->worst_ref);
        fputc('}', f);
        if (o->prof_n > 0)
            hx__jprofile(f, o);
        fputc('}', f);
    }
    fputc(']', f);
    hx__jkey(f, "err_ratio", 0), hx__jnum(f, r->err_ratio);
    const int checks[2] = {r->deterministic, r->batch_invariant}; /* 1 held, -1 not, 0 unchecked */
    for (int i = 0; i < 2; i++)
        hx__jkey(f, i ? "batch_invariant" : "deterministic", 0),
            fputs(checks[i] > 0 ? "true" : checks[i] < 0 ? "false" : "null", f);
    hx__jkey(f, "timing", 0), fputc('{', f);
    hx__jkey(f, "samples", 1), fprintf(f, "%d", r->t.samples);
    hx__jkey(f, "median_ms", 0), hx__jnum(f, r->t.median_ms);
    hx__jkey(f, "min_ms", 0), hx__jnum(f, r->t.min_ms);
    hx__jkey(f, "max_ms", 0), hx__jnum(f, r->t.max_ms);
    hx__jkey(f, "stddev_ms", 0), hx__jnum(f, r->t.stddev_ms);
    fputc('}', f);
    hx__jkey(f, "flops", 0), hx__jnum(f, r->cost.flops);
    hx__jkey(f, "bytes", 0), hx__jnum(f, r->cost.bytes);
    hx__jkey(f, "tflops", 0), hx__jnum(f, r->tflops);
    hx__jkey(f, "gbps", 0), hx__jnum(f, r->gbps);
    hx__jkey(f, "pct_peak", 0), hx__jnum(f, r->pct_peak);
    hx__jkey(f, "peak", 0), hx__jstr(f, r->peak_name ? r->peak_name : "");
    hx__jkey(f, "reference", 0), fputc('{', f);
    hx__jkey(f, "seconds", 1), hx__jnum(f, r->ref_seconds);
    hx__jkey(f, "gflops", 0), hx__jnum(f, r->ref_gflops);
    fputc('}', f);
    hx__jkey(f, "run", 0), fputc('{', f);
    hx__jkey(f, "git_rev", 1), hx__jstr(f, ri->git_rev);
    hx__jkey(f, "build", 0), hx__jstr(f, ri->build);
    hx__jkey(f, "host", 0), hx__jstr(f, ri->host);
    hx__jkey(f, "started", 0), hx__jstr(f, ri->started);
    hx__jkey(f, "argv", 0), hx__jstr(f, ri->argv);
    hx__jkey(f, "dgemm_gflops", 0), hx__jnum(f, ri->dgemm_gflops);
    hx__jkey(f, "threads", 0), fprintf(f, "%d", ri->threads);
    hx__jkey(f, "blas", 0), hx__jstr(f, ri->blas ? ri->blas : "");
    if (ri->gpu) {
        const hx_gpu *g = ri->gpu;
        hx__jkey(f, "gpu", 0), fputc('{', f);
        hx__jkey(f, "index", 1), fprintf(f, "%d", g->index);
        hx__jkey(f, "name", 0), hx__jstr(f, g->name);
        hx__jkey(f, "arch", 0), hx__jstr(f, g->arch);
        hx__jkey(f, "multiprocessors", 0), fprintf(f, "%d", g->multiprocessors);
        hx__jkey(f, "warp_size", 0), fprintf(f, "%d", g->warp_size);
        hx__jkey(f, "l2_bytes", 0), fprintf(f, "%d", g->l2_bytes);
        hx__jkey(f, "runtime_version", 0), fprintf(f, "%d", g->runtime_version);
        hx__jkey(f, "driver_version", 0), fprintf(f, "%d", g->driver_version);
        hx__jkey(f, "read_gbps", 0), hx__jnum(f, g->read_gbps);
        hx__jkey(f, "copy_gbps", 0), hx__jnum(f, g->copy_gbps);
        hx__jkey(f, "mma_tflops", 0), hx__jnum(f, g->mma_tflops);
        fputc('}', f);
    }
    fputs("}}\n", f);
}

/* ------------------------------------------------------------------ CSV */
static void hx__cnum(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, ",%.9g", v);
    else if (isinf(v))
        fputs(v > 0 ? ",inf" : ",-inf", f);
    else
        fputs(",", f);
}

/* Names never hold commas or quotes (case names are [A-Za-z0-9_.-]); device names might. */
static void hx__cstr(FILE *f, const char *s, int first)
{
    if (!first)
        fputc(',', f);
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void hx_csv_header(FILE *f)
{
    fputs("device,case,path,variant,status,dtype,batch,heads_q,heads_kv,head_dim,head_dim_v,"
          "tokens_q,flops,bytes,median_ms,min_ms,max_ms,stddev_ms,samples,tflops,gbps,pct_peak,"
          "peak,out_max_abs,out_cos_diff,out_headroom,lse_max_abs,lse_headroom,err_ratio,"
          "ref_seconds,ref_gflops,seed,git_rev\n",
          f);
}

static const hx_output_result *hx__output(const hx_result *r, const char *name)
{
    for (int i = 0; i < r->n_out; i++)
        if (strcmp(r->out[i].name, name) == 0)
            return &r->out[i];
    return NULL;
}

void hx_csv_row(FILE *f, const hx_result *r, const hx_runinfo *ri)
{
    const hx_case *c = r->c;
    long long tq = 0;
    for (int i = 0; i < c->seq_lens_q.n; i++)
        tq += c->seq_lens_q.v[i];
    if (!c->seq_lens_q.n)
        tq = c->tokens;
    hx__cstr(f, r->device, 1);
    hx__cstr(f, c->name, 0);
    hx__cstr(f, c->path->name, 0);
    hx__cstr(f, r->variant, 0);
    hx__cstr(f, hx_status_name(r->status), 0);
    hx__cstr(f, ref_dtype_name(c->dtype), 0);
    fprintf(f, ",%d,%d,%d,%d,%d,%lld", c->batch, c->heads_q, c->heads_kv, c->head_dim,
            c->head_dim_v, tq);
    hx__cnum(f, r->cost.flops);
    hx__cnum(f, r->cost.bytes);
    hx__cnum(f, r->t.median_ms);
    hx__cnum(f, r->t.min_ms);
    hx__cnum(f, r->t.max_ms);
    hx__cnum(f, r->t.stddev_ms);
    fprintf(f, ",%d", r->t.samples);
    hx__cnum(f, r->tflops);
    hx__cnum(f, r->gbps);
    hx__cnum(f, r->pct_peak);
    hx__cstr(f, r->peak_name ? r->peak_name : "", 0);
    const hx_output_result *o = hx__output(r, "out"), *l = hx__output(r, "lse");
    hx__cnum(f, o ? o->m.max_abs : NAN);
    hx__cnum(f, o ? o->m.cos_diff : NAN);
    hx__cnum(f, o ? o->m.headroom : NAN);
    hx__cnum(f, l ? l->m.max_abs : NAN);
    hx__cnum(f, l ? l->m.headroom : NAN);
    hx__cnum(f, r->err_ratio);
    hx__cnum(f, r->ref_seconds);
    hx__cnum(f, r->ref_gflops);
    fprintf(f, ",0x%016llx", (unsigned long long)c->seed);
    hx__cstr(f, ri->git_rev, 0);
    fputc('\n', f);
}
