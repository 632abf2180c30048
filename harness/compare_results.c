/* compare_results.c - `attn-harness compare BASE NEW`: per-(case, variant, device) speed and
 * accuracy drift between two sets of result records (not the numeric judge: that is compare.c).
 *
 * Speed: the ratio NEW/BASE of median times. A slowdown counts only when it is larger than the
 * noise both runs recorded: the combined relative spread sqrt((sd_b/med_b)^2 + (sd_n/med_n)^2).
 * Past --warn it is reported, past --fail it fails. A record with fewer than 2 samples (the
 * emulated CPU candidate is timed once) has no spread: its ratio is shown, never judged.
 * Accuracy: a status that stops passing is a failure whatever the times say; growth of max_abs
 * or cos_diff by --drift or more is reported even inside the tolerance.
 */
#include "records.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { V_SAME, V_FASTER, V_SLOWER, V_FAIL, V_UNTIMED, V_NEW, V_MISSING };
static const char *const hx__verdict_name[] = {"same", "faster", "SLOWER", "FAIL", "untimed",
                                               "new", "missing"};

typedef struct hx__row {
    const hx_rec *b, *n;   /* either may be NULL (missing, new) */
    double ratio, noise;   /* NEW/BASE median; combined relative spread (NAN: unknown) */
    int verdict;
    int status_regressed;  /* was PASS or skipped, is not */
    char note[320];        /* status change, accuracy drift */
    int drift;
} hx__row;

/* ------------------------------------------------------------ matching */
static int hx__cross; /* --cross-device: the key leaves the device out */

static int hx__key_cmp(const hx_rec *x, const hx_rec *y)
{
    int c = strcmp(x->case_name, y->case_name);
    if (!c)
        c = strcmp(x->variant, y->variant);
    if (!c && !hx__cross)
        c = strcmp(x->slug, y->slug);
    return c;
}

static const hx_recset *hx__sorting;

static int hx__idx_cmp(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    int c = hx__key_cmp(&hx__sorting->v[i], &hx__sorting->v[j]);
    return c ? c : (i > j) - (i < j);
}

static int *hx__sorted(const hx_recset *s)
{
    int *idx = malloc(((size_t)s->n + 1) * sizeof *idx);
    if (!idx)
        return NULL;
    for (int i = 0; i < s->n; i++)
        idx[i] = i;
    hx__sorting = s;
    qsort(idx, (size_t)s->n, sizeof *idx, hx__idx_cmp);
    return idx;
}

/* With --cross-device one side may not hold a (case, variant) twice: which would it be? */
static int hx__check_unique(const hx_recset *s, const int *idx, const char *side, hx_err *e)
{
    for (int k = 0; k + 1 < s->n; k++) {
        const hx_rec *a = &s->v[idx[k]], *b = &s->v[idx[k + 1]];
        if (!hx__key_cmp(a, b))
            return hx_fail(e, HX_EUSAGE,
                           "--cross-device: %s holds %s/%s on two devices (%s, %s): give one "
                           "device's records per side",
                           side, a->case_name, a->variant, a->slug, b->slug);
    }
    return HX_OK;
}

/* ------------------------------------------------------------ judging */
static double hx__spread(const hx_rec *r)
{
    if (r->t.samples < 2 || !isfinite(r->t.stddev_ms) || !(r->t.median_ms > 0))
        return NAN;
    return r->t.stddev_ms / r->t.median_ms;
}

/* Append to the row's notes, "; "-separated. */
static void hx__note(hx__row *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hx__note(hx__row *w, const char *fmt, ...)
{
    size_t k = strlen(w->note);
    if (k && k + 2 < sizeof w->note)
        memcpy(w->note + k, "; ", 3), k += 2;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->note + k, sizeof w->note - k, fmt, ap);
    va_end(ap);
}

static void hx__accuracy(hx__row *w, double drift)
{
    const hx_rec *b = w->b, *n = w->n;
    const int was_ok = hx_rec_status_ok(b->status), is_ok = hx_rec_status_ok(n->status);
    if (strcmp(b->status, n->status) != 0) {
        w->status_regressed = was_ok && !is_ok;
        hx__note(w, "%s -> %s%s", b->status, n->status,
                 w->status_regressed ? " (regression)" : !was_ok && is_ok ? " (fixed)" : "");
    }
    for (int i = 0; i < n->n_out; i++) {
        const hx_rec_out *on = &n->out[i], *ob = NULL;
        for (int j = 0; j < b->n_out && !ob; j++)
            if (!strcmp(b->out[j].name, on->name))
                ob = &b->out[j];
        if (!ob)
            continue;
        /* max_abs: any growth by the factor, from zero included (a bit-exact path that is not) */
        if (isfinite(ob->max_abs) && isfinite(on->max_abs) && on->max_abs > 0 &&
            on->max_abs > drift * ob->max_abs) {
            if (ob->max_abs > 0)
                hx__note(w, "%s max_abs %.2e -> %.2e (x%.1f)", on->name, ob->max_abs, on->max_abs,
                         on->max_abs / ob->max_abs);
            else
                hx__note(w, "%s max_abs 0 -> %.2e (was exact)", on->name, on->max_abs);
            w->drift = 1;
        }
        /* cos_diff below 1e-12 is the rounding of its own formula in f64: not a signal */
        const double cb = fmax(ob->cos_diff, 1e-12);
        if (isfinite(ob->cos_diff) && isfinite(on->cos_diff) && on->cos_diff > drift * cb) {
            hx__note(w, "%s cos_diff %.1e -> %.1e (x%.1f)", on->name, ob->cos_diff, on->cos_diff,
                     on->cos_diff / cb);
            w->drift = 1;
        }
    }
}

static void hx__speed(hx__row *w, const hx_compare_opts *o)
{
    const hx_rec *b = w->b, *n = w->n;
    w->ratio = b->t.median_ms > 0 && n->t.median_ms > 0 ? n->t.median_ms / b->t.median_ms : NAN;
    const double sb = hx__spread(b), sn = hx__spread(n);
    w->noise = sqrt(sb * sb + sn * sn);
    if (!isfinite(w->ratio) || !isfinite(w->noise)) {
        w->verdict = V_UNTIMED;
        return;
    }
    /* Significant: beyond the spread either way. The recorded spread is a standard deviation,
     * which one slow outlier inflates; it may excuse a ratio up to the fail threshold, never
     * past it (the medians themselves are robust). */
    const double allow = w->noise < o->fail - 1 ? w->noise : o->fail - 1;
    const double up = 1 + allow;
    if (w->ratio >= o->fail && w->ratio > up)
        w->verdict = V_FAIL;
    else if (w->ratio >= o->warn && w->ratio > up)
        w->verdict = V_SLOWER;
    else if (w->ratio <= 1 / o->warn && w->ratio < 1 / up)
        w->verdict = V_FASTER;
    else
        w->verdict = V_SAME;
}

/* ------------------------------------------------------------ the table */
static void hx__time(char *buf, size_t n, double ms)
{
    if (!isfinite(ms))
        snprintf(buf, n, "-");
    else if (ms < 1.0)
        snprintf(buf, n, "%.2f us", ms * 1e3);
    else if (ms < 1e3)
        snprintf(buf, n, "%.2f ms", ms);
    else
        snprintf(buf, n, "%.2f s", ms * 1e-3);
}

static void hx__print_row(const hx__row *w, int wc, int wv, int wd)
{
    const hx_rec *r = w->n ? w->n : w->b;
    char tb[32], tn[32], ratio[16] = "-", noise[16] = "-";
    hx__time(tb, sizeof tb, w->b ? w->b->t.median_ms : NAN);
    hx__time(tn, sizeof tn, w->n ? w->n->t.median_ms : NAN);
    if (isfinite(w->ratio))
        snprintf(ratio, sizeof ratio, "%.3f", w->ratio);
    if (isfinite(w->noise))
        snprintf(noise, sizeof noise, "+-%.1f%%", 100 * w->noise);
    else if (isfinite(w->ratio))
        snprintf(noise, sizeof noise, "1 sample");
    const char *status = w->n ? w->n->status : w->b->status;
    printf("%-*s  %-*s  %-*s  %10s  %10s  %7s  %8s  %-7s  %-16s", wc, r->case_name, wv,
           r->variant, wd, r->slug, tb, tn, ratio, noise, hx__verdict_name[w->verdict], status);
    if (w->note[0])
        printf("  %s", w->note);
    putchar('\n');
}

/* ------------------------------------------------------------ the command */
static int hx__load_side(hx_recset *s, const char *const *src, int n, const char *side, hx_err *e)
{
    for (int i = 0; i < n; i++) {
        int rc = hx_recs_load(s, src[i], e);
        if (rc)
            return rc;
    }
    hx_recs_dedup(s, side, stderr);
    return HX_OK;
}

int hx_compare_results(const hx_compare_opts *o, hx_err *e)
{
    hx_recset b = {0}, n = {0};
    hx__row *rows = NULL;
    int *ib = NULL, *in = NULL, rc;
    hx__cross = o->cross_device;
    if ((rc = hx__load_side(&b, o->base, o->n_base, "compare (BASE)", e)) ||
        (rc = hx__load_side(&n, o->new_, o->n_new, "compare (NEW)", e)))
        goto out;
    ib = hx__sorted(&b);
    in = hx__sorted(&n);
    rows = calloc((size_t)b.n + (size_t)n.n + 1, sizeof *rows);
    if (!ib || !in || !rows) {
        rc = hx_fail(e, HX_ENOMEM, "out of memory");
        goto out;
    }
    if (o->cross_device &&
        ((rc = hx__check_unique(&b, ib, "BASE", e)) || (rc = hx__check_unique(&n, in, "NEW", e))))
        goto out;

    /* Walk both sorted lists; each NEW record's row goes where NEW read it, missing ones last. */
    int n_rows = 0, n_match = 0;
    char *b_used = calloc((size_t)b.n + 1, 1);
    if (!b_used) {
        rc = hx_fail(e, HX_ENOMEM, "out of memory");
        goto out;
    }
    for (int x = 0, y = 0; y < n.n; y++) {
        const hx_rec *rn = &n.v[in[y]];
        while (x < b.n && hx__key_cmp(&b.v[ib[x]], rn) < 0)
            x++;
        hx__row w = {.n = rn, .ratio = NAN, .noise = NAN, .verdict = V_NEW};
        if (x < b.n && !hx__key_cmp(&b.v[ib[x]], rn)) {
            w.b = &b.v[ib[x]];
            b_used[ib[x]] = 1;
            n_match++;
            hx__speed(&w, o);
            hx__accuracy(&w, o->drift);
        } else if (!hx_rec_status_ok(rn->status)) {
            hx__note(&w, "new, not passing");
        }
        rows[in[y]] = w;
    }
    n_rows = n.n;
    for (int i = 0; i < b.n; i++)
        if (!b_used[i])
            rows[n_rows++] = (hx__row){.b = &b.v[i], .ratio = NAN, .noise = NAN,
                                       .verdict = V_MISSING};
    free(b_used);
    if (!n_match) {
        rc = hx_fail(e, HX_EINPUT,
                     "BASE (%d records) and NEW (%d records) have no (case, variant, device) in "
                     "common%s",
                     b.n, n.n, o->cross_device ? "" : " (two devices? --cross-device matches on "
                                                      "case and variant only)");
        goto out;
    }

    int wc = 4, wv = 7, wd = 6;
    for (int i = 0; i < n_rows; i++) {
        const hx_rec *r = rows[i].n ? rows[i].n : rows[i].b;
        wc = (int)fmax(wc, (double)strlen(r->case_name));
        wv = (int)fmax(wv, (double)strlen(r->variant));
        wd = (int)fmax(wd, (double)strlen(r->slug));
    }
    printf("%-*s  %-*s  %-*s  %10s  %10s  %7s  %8s  %-7s  %-16s  %s\n", wc, "case", wv, "variant",
           wd, "device", "base", "new", "new/base", "noise", "verdict", "status", "notes");
    int cnt[7] = {0}, n_reg = 0, n_drift = 0, n_geo = 0;
    double log_sum = 0;
    for (int i = 0; i < n_rows; i++) {
        const hx__row *w = &rows[i];
        cnt[w->verdict]++;
        n_reg += w->status_regressed;
        n_drift += w->drift;
        if (w->verdict <= V_FAIL) {
            log_sum += log(w->ratio);
            n_geo++;
        }
        int changed = (w->verdict != V_SAME && w->verdict != V_UNTIMED) || w->note[0];
        if (!o->quiet || changed)
            hx__print_row(w, wc, wv, wd);
    }
    const int failed = cnt[V_FAIL] > 0 || n_reg > 0 || (o->missing_fails && cnt[V_MISSING] > 0);
    printf("\ncompare: %d matched: %d faster, %d slower (%d past --fail %.2f), %d same, %d "
           "untimed; %d new, %d missing; ",
           n_match, cnt[V_FASTER], cnt[V_SLOWER] + cnt[V_FAIL], cnt[V_FAIL], o->fail, cnt[V_SAME],
           cnt[V_UNTIMED], cnt[V_NEW], cnt[V_MISSING]);
    if (n_geo)
        printf("geomean new/base %.3f over %d timed rows; ", exp(log_sum / n_geo), n_geo);
    else
        printf("no timed rows (>= 2 samples on both sides); ");
    printf("%d status regressions, %d accuracy drifts (x%.2f) -> %s\n", n_reg, n_drift, o->drift,
           failed ? "FAIL" : "ok");
    rc = failed ? 1 : 0;
out:
    free(rows);
    free(ib);
    free(in);
    hx_recs_free(&b);
    hx_recs_free(&n);
    return rc;
}
