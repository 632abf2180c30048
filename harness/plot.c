/* plot.c - `attn-harness plot`: figures per GPU from result records, drawn by gnuplot.
 *
 * The C side picks and shapes the data; gnuplot scripts in plots/ draw it. For each figure this
 * file writes OUT/<slug>/<figure>.dat (whitespace-separated columns, blocks separated by two
 * blank lines for gnuplot's `index`) and runs `gnuplot -e "<variables>" plots/<figure>.gp`
 * twice, once per format (fmt='svg', fmt='png'; plots/common.gp sets the terminal).
 *   speedup   per GPU: each variant's speedup over `simple` per case, grouped by path
 *   roofline  per GPU: the run's measured ceilings and each (case, variant) as a point
 *   errpos    per GPU: worst err/tol along the token axis for the worst (case, variant)s
 *   speedup-gpus  across GPUs: speedup per (case, variant), one series per GPU
 * Only PASS records are timed points: the speed of a wrong answer is not plotted.
 */
#include "records.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HX__BASELINE "simple"   /* every path's first GPU variant (hx_path.variants) */
#define HX__CPU_CANDIDATE "emulated"

/* ------------------------------------------------------------ text */
typedef struct hx__sb {
    char *p;
    size_t n, cap;
    int oom;
} hx__sb;

static void hx__sbf(hx__sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hx__sbf(hx__sb *b, const char *fmt, ...)
{
    for (;;) {
        size_t room = b->cap - b->n;
        va_list ap;
        va_start(ap, fmt);
        int k = b->p ? vsnprintf(b->p + b->n, room, fmt, ap) : -1;
        va_end(ap);
        if (k >= 0 && (size_t)k < room) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? 2 * b->cap : 1024;
        while (k >= 0 && cap - b->n <= (size_t)k)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A gnuplot string literal: single quotes, '' for a quote inside. */
static void hx__sbq(hx__sb *b, const char *s)
{
    hx__sbf(b, "'");
    for (; *s; s++)
        hx__sbf(b, *s == '\'' ? "''" : "%c", *s);
    hx__sbf(b, "'");
}

/* array NAME[n] = ['a', 'b', ...]; */
static void hx__sbarr(hx__sb *b, const char *name, const char *const *v, int n)
{
    hx__sbf(b, "array %s[%d] = [", name, n > 0 ? n : 1);
    for (int i = 0; i < n; i++) {
        if (i)
            hx__sbf(b, ", ");
        hx__sbq(b, v[i]);
    }
    hx__sbf(b, n > 0 ? "]; " : "'']; ");
}

static void hx__sbiarr(hx__sb *b, const char *name, const int *v, int n)
{
    hx__sbf(b, "array %s[%d] = [", name, n > 0 ? n : 1);
    for (int i = 0; i < n; i++)
        hx__sbf(b, "%s%d", i ? ", " : "", v[i]);
    hx__sbf(b, n > 0 ? "]; " : "0]; ");
}

/* A .dat string column: double quotes (names never hold them; a device name might). */
static void hx__dstr(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++)
        fputc(*s == '"' ? '\'' : *s, f);
    fputc('"', f);
}

/* ------------------------------------------------------------ gnuplot */
typedef struct hx__ctx {
    const hx_plot_opts *o;
    const hx_recset *s;
    char scripts[1024];
    const char *prog;
    int n_figures;
} hx__ctx;

static int hx__readable(const char *dir, const char *file)
{
    char p[1100];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    return access(p, R_OK) == 0;
}

/* --scripts, else plots/ beside the build directory of this executable, else ./plots. */
static int hx__find_scripts(hx__ctx *x, hx_err *e)
{
    if (x->o->scripts) {
        snprintf(x->scripts, sizeof x->scripts, "%s", x->o->scripts);
        if (!hx__readable(x->scripts, "speedup.gp"))
            return hx_fail(e, HX_EUSAGE, "--scripts '%s': no speedup.gp there", x->o->scripts);
        return HX_OK;
    }
    char exe[900];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(x->scripts, sizeof x->scripts, "%s/../plots", exe);
            if (hx__readable(x->scripts, "speedup.gp"))
                return HX_OK;
        }
    }
    snprintf(x->scripts, sizeof x->scripts, "plots");
    if (hx__readable(x->scripts, "speedup.gp"))
        return HX_OK;
    return hx_fail(e, HX_ERUNTIME,
                   "cannot find the gnuplot scripts (plots/*.gp of the source tree): run from the "
                   "repository root or give --scripts DIR");
}

static int hx__on_path(const char *prog)
{
    if (strchr(prog, '/'))
        return access(prog, X_OK) == 0;
    const char *path = getenv("PATH");
    if (!path)
        return 0;
    for (const char *p = path; *p;) {
        size_t k = strcspn(p, ":");
        char full[1200];
        snprintf(full, sizeof full, "%.*s/%s", (int)k, k ? p : ".", prog);
        if (access(full, X_OK) == 0)
            return 1;
        p += k;
        if (*p == ':')
            p++;
    }
    return 0;
}

/* Draw one figure: `script` with `vars` into out.svg and out.png. */
static int hx__draw(hx__ctx *x, const char *script, const hx__sb *vars, const char *out, hx_err *e)
{
    static const char *const fmts[] = {"svg", "png"};
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", x->scripts, script);
    for (int i = 0; i < 2; i++) {
        hx__sb v = {0};
        hx__sbf(&v, "%sfmt='%s'; out=", vars->p ? vars->p : "", fmts[i]);
        hx__sbq(&v, out);
        hx__sbf(&v, "; scripts=");
        hx__sbq(&v, x->scripts);
        if (v.oom || vars->oom) {
            free(v.p);
            return hx_fail(e, HX_ENOMEM, "out of memory");
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            free(v.p);
            return hx_fail(e, HX_ERUNTIME, "cannot start gnuplot: %s", strerror(errno));
        }
        if (pid == 0) {
            execlp(x->prog, x->prog, "-e", v.p, path, (char *)NULL);
            fprintf(stderr, "attn-harness plot: cannot run '%s': %s\n", x->prog, strerror(errno));
            _exit(127);
        }
        free(v.p);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            continue;
        char file[1100];
        struct stat sst;
        snprintf(file, sizeof file, "%s.%s", out, fmts[i]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return hx_fail(e, HX_ERUNTIME, "gnuplot failed on %s (%s %d) drawing %s: see its "
                                           "messages above",
                           path, WIFEXITED(st) ? "exit" : "signal",
                           WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), file);
        if (stat(file, &sst) != 0 || sst.st_size == 0)
            return hx_fail(e, HX_ERUNTIME, "gnuplot wrote nothing to %s (%s)", file, path);
    }
    x->n_figures++;
    return HX_OK;
}

static FILE *hx__dat_open(const char *out, hx_err *e)
{
    char p[1100];
    snprintf(p, sizeof p, "%s.dat", out);
    FILE *f = fopen(p, "w");
    if (!f)
        hx_fail(e, HX_EIO, "cannot write '%s': %s", p, strerror(errno));
    return f;
}

static int hx__dat_close(FILE *f, const char *out, hx_err *e)
{
    int bad = ferror(f) | (fclose(f) != 0);
    return bad ? hx_fail(e, HX_EIO, "error writing '%s.dat'", out) : HX_OK;
}

/* ------------------------------------------------------------ record lookup */
typedef struct hx__strs {
    int n, cap;
    const char **v;
} hx__strs;

static int hx__strs_find(const hx__strs *l, const char *s)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s))
            return i;
    return -1;
}

/* Index of s in l, appended if new; -1 out of memory. */
static int hx__strs_add(hx__strs *l, const char *s)
{
    int i = hx__strs_find(l, s);
    if (i >= 0)
        return i;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        const char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n] = s;
    return l->n++;
}

static const hx_rec *hx__find(const hx_recset *s, const char *slug, const char *case_name,
                              const char *variant)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i].slug, slug) && !strcmp(s->v[i].case_name, case_name) &&
            !strcmp(s->v[i].variant, variant))
            return &s->v[i];
    return NULL;
}

static int hx__timed_pass(const hx_rec *r)
{
    return r && !strcmp(r->status, "PASS") && r->t.median_ms > 0 && isfinite(r->t.median_ms);
}

/* Median-time speedup of (case, variant) over the baseline on slug; NAN when not both timed. */
static double hx__speedup(const hx_recset *s, const char *slug, const char *case_name,
                          const char *variant)
{
    const hx_rec *b = hx__find(s, slug, case_name, HX__BASELINE),
                 *r = hx__find(s, slug, case_name, variant);
    return hx__timed_pass(b) && hx__timed_pass(r) ? b->t.median_ms / r->t.median_ms : NAN;
}

/* Cases of a slug grouped by path (paths in order of first appearance, cases in read order). */
static int hx__cases_by_path(const hx_recset *s, const char *slug, hx__strs *cases,
                             hx__strs *paths)
{
    hx__strs all = {0};
    int rc = 0;
    for (int i = 0; i < s->n && !rc; i++)
        if (!slug || !strcmp(s->v[i].slug, slug))
            rc = hx__strs_add(paths, s->v[i].path) < 0;
    for (int p = 0; p < paths->n && !rc; p++)
        for (int i = 0; i < s->n && !rc; i++)
            if ((!slug || !strcmp(s->v[i].slug, slug)) && !strcmp(s->v[i].path, paths->v[p]))
                rc = hx__strs_add(&all, s->v[i].case_name) < 0;
    *cases = all;
    return rc ? -1 : 0;
}

static const char *hx__path_of(const hx_recset *s, const char *case_name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i].case_name, case_name))
            return s->v[i].path;
    return "";
}

/* ------------------------------------------------------------ bar charts */
/* Groups along x (cases, or case/variant), series of bars in each (variants, or GPUs). */
typedef struct hx__bars {
    hx__strs groups, gpath, series; /* gpath: each group's path, for the separators */
    double *val;                    /* [groups.n][series.n], NAN: no bar */
} hx__bars;

static int hx__speedup_figure(hx__ctx *x, const hx__bars *b, const char *out, const char *title,
                              hx_err *e)
{
    const int ng = b->groups.n, ns = b->series.n;
    double lo = 1, hi = 1;
    for (int i = 0; i < ng * ns; i++)
        if (isfinite(b->val[i]) && b->val[i] > 0)
            lo = fmin(lo, b->val[i]), hi = fmax(hi, b->val[i]);
    FILE *f = hx__dat_open(out, e);
    if (!f)
        return e->code;
    const double bw = 0.8 / ns;
    fprintf(f, "# %s\n# series blocks: x speedup xlo xhi ylo yhi label; then groups, "
               "path separators, path labels\n",
            title);
    for (int s = 0; s < ns; s++) {
        fprintf(f, "# %s\n", b->series.v[s]);
        for (int g = 0; g < ng; g++) {
            double v = b->val[g * ns + s];
            if (!(isfinite(v) && v > 0))
                continue;
            double xc = g + (s - (ns - 1) / 2.0) * bw;
            fprintf(f, "%.6g %.9g %.6g %.6g %.9g %.9g \"%.3g\"\n", xc, v, xc - 0.45 * bw,
                    xc + 0.45 * bw, fmin(v, 1), fmax(v, 1), v);
        }
        fputs("\n\n", f);
    }
    for (int g = 0; g < ng; g++) {
        fprintf(f, "%d 1 ", g);
        hx__dstr(f, b->groups.v[g]);
        fputc('\n', f);
    }
    int nsep = 0, npath = 0;
    for (int g = 1; g < ng; g++)
        if (strcmp(b->gpath.v[g], b->gpath.v[g - 1]) != 0) {
            fprintf(f, "%s%g\n", nsep ? "" : "\n\n", g - 0.5);
            nsep++;
        }
    for (int g = 0; g < ng;) {
        int k = g;
        while (k < ng && !strcmp(b->gpath.v[k], b->gpath.v[g]))
            k++;
        fprintf(f, "%s%g ", npath ? "" : "\n\n", (g + k - 1) / 2.0);
        hx__dstr(f, b->gpath.v[g]);
        fprintf(f, " %g\n", npath % 2 ? 5.0 : 2.5); /* alternate heights: narrow paths */
        npath++;
        g = k;
    }
    int rc = hx__dat_close(f, out, e);
    if (rc)
        return rc;
    hx__sb v = {0};
    /* the first rotated x label runs left of the plot: a left margin that holds it */
    size_t first = strlen(b->groups.v[0]);
    const int w = (int)fmin(6000, fmax(900, 220 + ng * fmax(30, 12.0 * ns + 14)));
    hx__sbf(&v, "dat='%s.dat'; w=%d; h=720; ns=%d; ng=%d; nsep=%d; npath=%d; ymin=%.6g; "
                "ymax=%.6g; lm=%d; ttl=",
            out, w, ns, ng, nsep, npath, lo / 2, hi * 6, (int)fmax(10, 0.6 * (double)first));
    hx__sbq(&v, title);
    hx__sbf(&v, "; ");
    hx__sbarr(&v, "st", b->series.v, ns);
    rc = hx__draw(x, "speedup.gp", &v, out, e);
    free(v.p);
    if (!rc)
        printf("  %s.{svg,png}: %d groups x %d series\n", out, ng, ns);
    return rc;
}

static void hx__bars_free(hx__bars *b)
{
    free(b->groups.v);
    free(b->gpath.v);
    free(b->series.v);
    free(b->val);
}

/* (a): per slug, every timed variant but the baseline and the CPU candidate, per case. */
static int hx__fig_speedup(hx__ctx *x, const char *slug, const char *dir, hx_err *e)
{
    const hx_recset *s = x->s;
    hx__bars b = {0};
    hx__strs cases = {0}, paths = {0};
    int rc = hx__cases_by_path(s, slug, &cases, &paths) ? hx_fail(e, HX_ENOMEM, "out of memory") : 0;
    for (int i = 0; i < s->n && !rc; i++) {
        const hx_rec *r = &s->v[i];
        if (strcmp(r->slug, slug) || !strcmp(r->variant, HX__BASELINE) ||
            !strcmp(r->variant, HX__CPU_CANDIDATE) ||
            !isfinite(hx__speedup(s, slug, r->case_name, r->variant)))
            continue;
        if (hx__strs_add(&b.series, r->variant) < 0)
            rc = hx_fail(e, HX_ENOMEM, "out of memory");
    }
    for (int c = 0; c < cases.n && !rc; c++) {
        int any = 0;
        for (int v = 0; v < b.series.n; v++)
            any |= isfinite(hx__speedup(s, slug, cases.v[c], b.series.v[v]));
        if (any && hx__strs_add(&b.groups, cases.v[c]) < 0)
            rc = hx_fail(e, HX_ENOMEM, "out of memory");
    }
    if (!rc && b.groups.n) {
        b.gpath.v = malloc((size_t)b.groups.n * sizeof *b.gpath.v);
        b.val = malloc((size_t)b.groups.n * (size_t)b.series.n * sizeof *b.val);
        if (!b.gpath.v || !b.val)
            rc = hx_fail(e, HX_ENOMEM, "out of memory");
        for (int g = 0; g < b.groups.n && !rc; g++)
            b.gpath.v[g] = hx__path_of(s, b.groups.v[g]);
        for (int g = 0; g < b.groups.n && !rc; g++)
            for (int v = 0; v < b.series.n; v++)
                b.val[g * b.series.n + v] = hx__speedup(s, slug, b.groups.v[g], b.series.v[v]);
    }
    if (!rc && !b.groups.n)
        printf("  speedup: no case with a PASS `%s` and another timed PASS variant: skipped\n",
               HX__BASELINE);
    if (!rc && b.groups.n) {
        char out[1024], title[256];
        snprintf(out, sizeof out, "%s/speedup", dir);
        snprintf(title, sizeof title,
                 "%s: speedup over `%s` (median time; above 1 is faster), PASS rows", slug,
                 HX__BASELINE);
        rc = hx__speedup_figure(x, &b, out, title, e);
    }
    free(cases.v);
    free(paths.v);
    hx__bars_free(&b);
    return rc;
}

/* (d): across slugs, per (case, variant) with a speedup on at least one, one series per GPU. */
static int hx__fig_speedup_gpus(hx__ctx *x, const hx__strs *slugs, hx_err *e)
{
    const hx_recset *s = x->s;
    hx__bars b = {0};
    hx__strs cases = {0}, paths = {0}, variants = {0};
    char **labels = NULL;
    int rc = hx__cases_by_path(s, NULL, &cases, &paths) ? hx_fail(e, HX_ENOMEM, "out of memory") : 0;
    for (int i = 0; i < s->n && !rc; i++)
        if (strcmp(s->v[i].variant, HX__BASELINE) && strcmp(s->v[i].variant, HX__CPU_CANDIDATE) &&
            hx__strs_add(&variants, s->v[i].variant) < 0)
            rc = hx_fail(e, HX_ENOMEM, "out of memory");
    for (int k = 0; k < slugs->n && !rc; k++)
        for (int i = 0; i < s->n && !rc; i++)
            if (!strcmp(s->v[i].slug, slugs->v[k]) &&
                isfinite(hx__speedup(s, slugs->v[k], s->v[i].case_name, s->v[i].variant)) &&
                hx__strs_add(&b.series, slugs->v[k]) < 0)
                rc = hx_fail(e, HX_ENOMEM, "out of memory");
    const int ng_max = cases.n * variants.n;
    labels = calloc((size_t)ng_max + 1, sizeof *labels);
    b.val = malloc(((size_t)ng_max * (size_t)b.series.n + 1) * sizeof *b.val);
    b.groups.v = calloc((size_t)ng_max + 1, sizeof *b.groups.v);
    b.gpath.v = calloc((size_t)ng_max + 1, sizeof *b.gpath.v);
    if (!rc && (!labels || !b.val || !b.groups.v || !b.gpath.v))
        rc = hx_fail(e, HX_ENOMEM, "out of memory");
    if (!rc && b.series.n < 2) {
        printf("speedup across GPUs: fewer than two GPUs with speedups: skipped\n");
        goto out;
    }
    for (int c = 0; c < cases.n && !rc; c++)
        for (int v = 0; v < variants.n && !rc; v++) {
            int any = 0, g = b.groups.n;
            for (int k = 0; k < b.series.n; k++) {
                double sp = hx__speedup(s, b.series.v[k], cases.v[c], variants.v[v]);
                b.val[g * b.series.n + k] = sp;
                any |= isfinite(sp);
            }
            if (!any)
                continue;
            size_t len = strlen(cases.v[c]) + strlen(variants.v[v]) + 2;
            if (!(labels[g] = malloc(len))) {
                rc = hx_fail(e, HX_ENOMEM, "out of memory");
                break;
            }
            snprintf(labels[g], len, "%s/%s", cases.v[c], variants.v[v]);
            b.groups.v[g] = labels[g];
            b.gpath.v[g] = hx__path_of(s, cases.v[c]);
            b.groups.n = b.gpath.n = g + 1;
        }
    if (!rc) {
        char out[1024], title[256];
        if ((rc = hx_mkdir_p(x->o->out_dir, e)))
            goto out;
        snprintf(out, sizeof out, "%s/speedup-gpus", x->o->out_dir);
        snprintf(title, sizeof title,
                 "speedup over `%s` per (case, variant), one series per GPU (median time, PASS rows)",
                 HX__BASELINE);
        printf("across GPUs:\n");
        rc = hx__speedup_figure(x, &b, out, title, e);
    }
out:
    for (int g = 0; labels && g < ng_max; g++)
        free(labels[g]);
    free(labels);
    free(cases.v);
    free(paths.v);
    free(variants.v);
    hx__bars_free(&b);
    return rc;
}

/* ------------------------------------------------------------ roofline */
/* The last finite value of a peak among the slug's records (the newest run read last). */
static double hx__peak(const hx_recset *s, const char *slug, size_t offset)
{
    double v = NAN;
    for (int i = 0; i < s->n; i++) {
        double p = *(const double *)((const char *)&s->v[i] + offset);
        if (!strcmp(s->v[i].slug, slug) && isfinite(p) && p > 0)
            v = p;
    }
    return v;
}

/* A ceiling min(x * bw, top) over [x0, x1] as a polyline block (bw in TB/s, top in TFLOP/s). */
static void hx__ceiling(FILE *f, double bw, double top, double x0, double x1)
{
    if (isfinite(bw)) {
        double ridge = isfinite(top) ? top / bw : INFINITY;
        fprintf(f, "%.6g %.6g\n", x0, fmin(x0 * bw, top));
        if (ridge > x0 && ridge < x1)
            fprintf(f, "%.6g %.6g\n", ridge, top);
        fprintf(f, "%.6g %.6g\n", x1, fmin(x1 * bw, top));
    } else {
        fprintf(f, "%.6g %.6g\n%.6g %.6g\n", x0, top, x1, top);
    }
    fputs("\n\n", f);
}

static int hx__fig_roofline(hx__ctx *x, const char *slug, const char *dir, hx_err *e)
{
    const hx_recset *s = x->s;
    const double read = hx__peak(s, slug, offsetof(hx_rec, read_gbps)) * 1e-3,
                 copy = hx__peak(s, slug, offsetof(hx_rec, copy_gbps)) * 1e-3,
                 mma = hx__peak(s, slug, offsetof(hx_rec, mma_tflops)),
                 dgemm = hx__peak(s, slug, offsetof(hx_rec, dgemm_gflops)) * 1e-3;
    const int gpu = isfinite(read) || isfinite(copy) || isfinite(mma);
    hx__strs variants = {0};
    double x0 = INFINITY, x1 = 0, y0 = INFINITY, y1 = 0;
    int n_pts = 0, n_move = 0, rc = 0;
    for (int i = 0; i < s->n && !rc; i++) {
        const hx_rec *r = &s->v[i];
        if (strcmp(r->slug, slug) || (gpu && !strcmp(r->variant, HX__CPU_CANDIDATE)) ||
            !hx__timed_pass(r) || !(r->tflops > 0))
            continue;
        if (!(r->flops > 0 && r->bytes > 0)) {
            n_move++;
            continue;
        }
        double ai = r->flops / r->bytes;
        x0 = fmin(x0, ai), x1 = fmax(x1, ai), y0 = fmin(y0, r->tflops), y1 = fmax(y1, r->tflops);
        n_pts++;
        if (hx__strs_add(&variants, r->variant) < 0)
            rc = hx_fail(e, HX_ENOMEM, "out of memory");
    }
    if (rc || !n_pts) {
        if (!rc)
            printf("  roofline: no timed PASS record with FLOPs: skipped\n");
        free(variants.v);
        return rc;
    }
    const double top = gpu ? mma : dgemm;
    if (isfinite(top) && isfinite(read)) {
        x0 = fmin(x0, top / read), x1 = fmax(x1, top / read);
    }
    x0 /= 4, x1 *= 4;
    if (isfinite(top))
        y1 = fmax(y1, top);
    y0 = fmin(y0, isfinite(read) ? x0 * read : y0) / 3, y1 *= 3;

    char out[1024];
    snprintf(out, sizeof out, "%s/roofline", dir);
    FILE *f = hx__dat_open(out, e);
    if (!f) {
        free(variants.v);
        return e->code;
    }
    const char *ct[3];
    char cbuf[3][96];
    int nc = 0;
    fprintf(f, "# %s: ceilings (x = FLOP/byte, y = TFLOP/s), then one block per variant: "
               "x y case\n",
            slug);
    if (isfinite(read)) {
        snprintf(cbuf[nc], sizeof cbuf[nc], "read %.0f GB/s%s", read * 1e3,
                 isfinite(top) ? " (measured)" : "");
        hx__ceiling(f, read, top, x0, x1);
        ct[nc] = cbuf[nc], nc++;
    }
    if (isfinite(copy)) {
        snprintf(cbuf[nc], sizeof cbuf[nc], "copy %.0f GB/s", copy * 1e3);
        hx__ceiling(f, copy, top, x0, x1);
        ct[nc] = cbuf[nc], nc++;
    }
    if (isfinite(top)) {
        if (gpu)
            snprintf(cbuf[nc], sizeof cbuf[nc], "bf16 mma %.0f TFLOP/s", top);
        else
            snprintf(cbuf[nc], sizeof cbuf[nc], "OpenBLAS dgemm %.1f GFLOP/s", top * 1e3);
        hx__ceiling(f, NAN, top, x0, x1);
        ct[nc] = cbuf[nc], nc++;
    }
    for (int v = 0; v < variants.n; v++) {
        for (int i = 0; i < s->n; i++) {
            const hx_rec *r = &s->v[i];
            if (strcmp(r->slug, slug) || strcmp(r->variant, variants.v[v]) || !hx__timed_pass(r) ||
                !(r->tflops > 0) || !(r->flops > 0 && r->bytes > 0))
                continue;
            fprintf(f, "%.9g %.9g ", r->flops / r->bytes, r->tflops);
            hx__dstr(f, r->case_name);
            fputc('\n', f);
        }
        fputs("\n\n", f);
    }
    rc = hx__dat_close(f, out, e);
    if (!rc) {
        hx__sb v = {0};
        char title[256];
        snprintf(title, sizeof title, "%s: roofline, measured ceilings of the run%s", slug,
                 n_move ? " (data movement, no FLOPs: see speedup)" : "");
        hx__sbf(&v, "dat='%s.dat'; w=1100; h=720; nc=%d; nv=%d; labels=%d; xmin=%.6g; "
                    "xmax=%.6g; ymin=%.6g; ymax=%.6g; ttl=",
                out, nc, variants.n, n_pts <= 40, x0, x1, y0, y1);
        hx__sbq(&v, title);
        hx__sbf(&v, "; ");
        hx__sbarr(&v, "ct", ct, nc);
        hx__sbarr(&v, "vt", variants.v, variants.n);
        rc = hx__draw(x, "roofline.gp", &v, out, e);
        free(v.p);
        if (!rc)
            printf("  %s.{svg,png}: %d points, %d variants, %d ceilings%s\n", out, n_pts,
                   variants.n, nc, gpu ? "" : " (CPU: dgemm)");
    }
    free(variants.v);
    return rc;
}

/* ------------------------------------------------------------ error by position */
static double hx__rec_headroom(const hx_rec *r)
{
    const hx_rec_out *w = hx_rec_worst_output(r);
    return !w ? -1 : isnan(w->headroom) ? INFINITY : w->headroom;
}

static int hx__has_profile(const hx_rec *r)
{
    for (int i = 0; i < r->n_out; i++)
        if (r->out[i].prof_n > 0)
            return 1;
    return 0;
}

static const hx_recset *hx__by_headroom_set;

static int hx__by_headroom(const void *a, const void *b)
{
    double x = hx__rec_headroom(&hx__by_headroom_set->v[*(const int *)a]),
           y = hx__rec_headroom(&hx__by_headroom_set->v[*(const int *)b]);
    return (x < y) - (x > y);
}

/* One block of the errpos data: worst err/tol per bucket, a step per bucket (the last one
 * closed at the end of the axis); non-finite buckets go to column 3 at `mark`. */
static void hx__profile_block(FILE *f, const hx_rec_out *o, double floor, double mark)
{
    for (int k = 0; k <= o->prof_n; k++) {
        const int b = k < o->prof_n ? k : o->prof_n - 1;
        const double h = o->prof_headroom[b];
        fprintf(f, "%lld ", (long long)(k * o->prof_rows / o->prof_n));
        if (isfinite(h))
            fprintf(f, "%.4g NaN\n", fmax(h, floor));
        else
            fprintf(f, "NaN %.4g\n", mark);
    }
    fputs("\n\n", f);
}

static int hx__fig_errpos(hx__ctx *x, const char *slug, const char *dir, hx_err *e)
{
    const hx_recset *s = x->s;
    int gpu = 0, nc = 0, rc = 0;
    for (int i = 0; i < s->n; i++)
        gpu |= !strcmp(s->v[i].slug, slug) && hx__has_profile(&s->v[i]) &&
               strcmp(s->v[i].variant, HX__CPU_CANDIDATE) != 0;
    int *cand = malloc(((size_t)s->n + 1) * sizeof *cand);
    if (!cand)
        return hx_fail(e, HX_ENOMEM, "out of memory");
    /* With GPU variants profiled, the panels are theirs and the emulated candidate is the
     * dashed line in each; on the CPU the emulated rows are the panels. */
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i].slug, slug) && hx__has_profile(&s->v[i]) &&
            !(gpu && !strcmp(s->v[i].variant, HX__CPU_CANDIDATE)))
            cand[nc++] = i;
    if (!nc) {
        printf("  errpos: no record carries err_by_row (runs before it was recorded, or PyTorch "
               "peers): skipped\n");
        free(cand);
        return HX_OK;
    }
    hx__by_headroom_set = s;
    qsort(cand, (size_t)nc, sizeof *cand, hx__by_headroom);
    const int np = nc < x->o->worst ? nc : x->o->worst;

    /* the panels' records and their emulated twins; the y range over what is drawn */
    const hx_rec *pr[12], *pe[12];
    double lo = INFINITY, hi = 1;
    for (int p = 0; p < np; p++) {
        pr[p] = &s->v[cand[p]];
        pe[p] = gpu ? hx__find(s, slug, pr[p]->case_name, HX__CPU_CANDIDATE) : NULL;
        for (int k = 0; k < 2; k++) {
            const hx_rec *r = k ? pe[p] : pr[p];
            for (int i = 0; r && i < r->n_out; i++)
                for (int b = 0; b < r->out[i].prof_n; b++) {
                    double h = r->out[i].prof_headroom[b];
                    if (isfinite(h) && h > 0)
                        lo = fmin(lo, h), hi = fmax(hi, h);
                }
        }
    }
    /* room above the data for the key */
    const double floor = isfinite(lo) ? fmax(lo / 2, 1e-8) : 1e-3, top = hi * 40, mark = hi * 2;

    char out[1024];
    snprintf(out, sizeof out, "%s/errpos", dir);
    FILE *f = hx__dat_open(out, e);
    free(cand);
    if (!f)
        return e->code;
    const char *ptitle[12], *xlab[12], *stitle[12 * 2 * HX_MAX_OUTPUTS];
    char ptbuf[12][512], xlbuf[12][256], stbuf[12 * 2 * HX_MAX_OUTPUTS][64];
    int pfirst[12], pcount[12], sdash[12 * 2 * HX_MAX_OUTPUTS], scolor[12 * 2 * HX_MAX_OUTPUTS];
    int ns = 0;
    fprintf(f, "# %s: worst err/tol per bucket of the token axis (x = first row of the bucket); "
               "column 3: a non-finite or unwritten element there\n",
            slug);
    for (int p = 0; p < np; p++) {
        const hx_rec *r = pr[p];
        const hx_rec_out *w = hx_rec_worst_output(r);
        pfirst[p] = ns;
        size_t xl = (size_t)snprintf(xlbuf[p], sizeof xlbuf[p], "position (first of a bucket):");
        for (int k = 0; k < 2; k++) {
            const hx_rec *q = k ? pe[p] : r;
            for (int i = 0; q && i < q->n_out; i++) {
                const hx_rec_out *o = &q->out[i];
                if (o->prof_n <= 0)
                    continue;
                fprintf(f, "# %s/%s %s\n", q->case_name, q->variant, o->name);
                hx__profile_block(f, o, floor, mark);
                snprintf(stbuf[ns], sizeof stbuf[ns], "%s%s", o->name, k ? " (emulated)" : "");
                stitle[ns] = stbuf[ns];
                sdash[ns] = k;
                scolor[ns] = i + 1;
                ns++;
                if (!k && xl < sizeof xlbuf[p])
                    xl += (size_t)snprintf(xlbuf[p] + xl, sizeof xlbuf[p] - xl, "%s %s of %s (%lld)",
                                           i ? "," : "", o->prof_axis ? "columns" : "rows",
                                           o->name, (long long)o->prof_rows);
            }
        }
        pcount[p] = ns - pfirst[p];
        snprintf(ptbuf[p], sizeof ptbuf[p], "%s / %s: %s, worst %s at %s (err/tol %.3g)",
                 r->case_name, r->variant, r->status, w ? w->name : "-", w ? w->where : "-",
                 w ? w->headroom : NAN);
        ptitle[p] = ptbuf[p];
        xlab[p] = xlbuf[p];
    }
    rc = hx__dat_close(f, out, e);
    if (!rc) {
        const int cols = np == 1 ? 1 : 2, rows = (np + cols - 1) / cols;
        hx__sb v = {0};
        char title[256];
        snprintf(title, sizeof title,
                 "%s: error by position, the %d worst (case, variant) by err/tol (fails above 1)",
                 slug, np);
        hx__sbf(&v, "dat='%s.dat'; w=%d; h=%d; np=%d; cols=%d; rows=%d; ymin=%.4g; ymax=%.4g; "
                    "ttl=",
                out, cols == 1 ? 800 : 1400, 60 + 340 * rows, np, cols, rows, floor, top);
        hx__sbq(&v, title);
        hx__sbf(&v, "; ");
        hx__sbarr(&v, "pt", ptitle, np);
        hx__sbarr(&v, "xl", xlab, np);
        hx__sbiarr(&v, "pf", pfirst, np);
        hx__sbiarr(&v, "pc", pcount, np);
        hx__sbarr(&v, "st", stitle, ns);
        hx__sbiarr(&v, "sd", sdash, ns);
        hx__sbiarr(&v, "sc", scolor, ns);
        rc = hx__draw(x, "errpos.gp", &v, out, e);
        free(v.p);
        if (!rc)
            printf("  %s.{svg,png}: %d panels, worst err/tol %.3g\n", out, np,
                   hx__rec_headroom(pr[0]));
    }
    return rc;
}

/* ------------------------------------------------------------ the command */
int hx_plot(const hx_plot_opts *o, char *const *srcs, int n_srcs, hx_err *e)
{
    hx_recset s = {0};
    hx__strs slugs = {0};
    hx__ctx x = {.o = o, .s = &s};
    int rc = HX_OK;
    for (int i = 0; i < n_srcs && !rc; i++)
        rc = hx_recs_load(&s, srcs[i], e);
    if (rc)
        goto out;
    hx_recs_dedup(&s, "plot", stderr);
    if (!s.n) {
        rc = hx_fail(e, HX_EINPUT, "plot: the result files hold no records");
        goto out;
    }
    const char *env = getenv("GNUPLOT");
    x.prog = o->gnuplot ? o->gnuplot : env && *env ? env : "gnuplot";
    if (!hx__on_path(x.prog)) {
        rc = hx_fail(e, HX_ERUNTIME,
                     "plot: gnuplot not found ('%s'): scripts/deps.sh installs gnuplot-nox, or "
                     "give --gnuplot PROG",
                     x.prog);
        goto out;
    }
    if ((rc = hx__find_scripts(&x, e)))
        goto out;
    for (int i = 0; i < s.n && !rc; i++)
        if (hx__strs_add(&slugs, s.v[i].slug) < 0)
            rc = hx_fail(e, HX_ENOMEM, "out of memory");
    printf("plot: %d records, %d device(s); scripts %s, gnuplot '%s'\n", s.n, slugs.n, x.scripts,
           x.prog);
    for (int k = 0; k < slugs.n && !rc; k++) {
        char dir[896]; /* room for "/speedup.dat" in the 1024 of a file name */
        snprintf(dir, sizeof dir, "%s/%s", o->out_dir, slugs.v[k]);
        int n = 0;
        for (int i = 0; i < s.n; i++)
            n += !strcmp(s.v[i].slug, slugs.v[k]);
        printf("%s (%d records):\n", slugs.v[k], n);
        if (!(rc = hx_mkdir_p(dir, e)) && !(rc = hx__fig_speedup(&x, slugs.v[k], dir, e)) &&
            !(rc = hx__fig_roofline(&x, slugs.v[k], dir, e)))
            rc = hx__fig_errpos(&x, slugs.v[k], dir, e);
    }
    if (!rc && slugs.n > 1)
        rc = hx__fig_speedup_gpus(&x, &slugs, e);
    if (!rc)
        printf("plot: %d figures (.svg and .png) under %s/\n", x.n_figures, o->out_dir);
out:
    free(slugs.v);
    hx_recs_free(&s);
    return rc;
}
