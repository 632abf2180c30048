/* test_attn.c - the attention core (ref_attn), varlen prefill (ref_mha_varlen), merge
 * (ref_merge_row, ref_merge_states) and sink (ref_apply_sink_row) against a naive oracle and
 * the identities of VALIDATION.md.
 *
 * The oracle below is deliberately the textbook definition (per query: every key, mask, max,
 * exp, sum, weighted V) in long double, sharing no code or structure with the tiled online
 * softmax it checks. Shapes are small and odd so that tile edges, empty rows (lq > lk under a
 * causal mask) and GQA grouping are all exercised, and a few span several query and key tiles.
 */
#include "ref.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAXB = 8 };

/* ------------------------------------------------------------------- the oracle */

static int visible(int i, int j, int lq, int lk, int causal, int window)
{
    if (causal && j > i + (lk - lq))
        return 0;
    if (window >= 0 && j < i + (lk - lq) - window)
        return 0;
    return 1;
}

/* sink: [hq] extra logit with a zero value vector, or NULL. lse excludes the sink.
 * out: [Tq, hq, dv]   lse: [hq, Tq] */
static void oracle(const ref_varlen_args *a, const double *sink, double *out, double *lse)
{
    const int hq = a->hq, hkv = a->hkv, dqk = a->dqk, dv = a->dv;
    const int tq = a->cu_q[a->batch];
    for (int b = 0; b < a->batch; b++) {
        const int q0 = a->cu_q[b], k0 = a->cu_k[b];
        const int lq = a->cu_q[b + 1] - q0, lk = a->cu_k[b + 1] - k0;
        long double *s = malloc(((size_t)lk + 1) * sizeof *s);
        for (int i = 0; i < lq; i++)
            for (int h = 0; h < hq; h++) {
                const int kh = h / (hq / hkv);
                long double mx = -INFINITY;
                int n = 0;
                for (int j = 0; j < lk; j++) {
                    if (!visible(i, j, lq, lk, a->opts.causal, a->opts.window_left))
                        continue;
                    long double dot = 0;
                    for (int d = 0; d < dqk; d++)
                        dot += (long double)ref_load(a->dtype, a->q, ((size_t)(q0 + i) * hq + h) * dqk + d) *
                               ref_load(a->dtype, a->k, ((size_t)(k0 + j) * hkv + kh) * dqk + d);
                    long double x = a->opts.scale * dot;
                    if (a->opts.softcap > 0)
                        x = a->opts.softcap * tanhl(x / a->opts.softcap);
                    s[j] = x;
                    if (x > mx)
                        mx = x;
                    n++;
                }
                double *o = out + ((size_t)(q0 + i) * hq + h) * dv;
                if (sink && sink[h] > mx)
                    mx = sink[h];
                if (n == 0 && !sink) {
                    for (int d = 0; d < dv; d++)
                        o[d] = 0;
                    lse[(size_t)h * tq + q0 + i] = -INFINITY;
                    continue;
                }
                long double den = 0;
                for (int j = 0; j < lk; j++)
                    if (visible(i, j, lq, lk, a->opts.causal, a->opts.window_left))
                        den += expl(s[j] - mx);
                const long double keys = den;
                if (sink)
                    den += expl(sink[h] - mx);
                for (int d = 0; d < dv; d++) {
                    long double acc = 0;
                    for (int j = 0; j < lk; j++)
                        if (visible(i, j, lq, lk, a->opts.causal, a->opts.window_left))
                            acc += expl(s[j] - mx) *
                                   ref_load(a->dtype, a->v, ((size_t)(k0 + j) * hkv + kh) * dv + d);
                    o[d] = (double)(acc / den);
                }
                lse[(size_t)h * tq + q0 + i] = n ? (double)(mx + logl(keys)) : -INFINITY;
            }
        free(s);
    }
}

/* ------------------------------------------------------------------- problems */

typedef struct problem {
    ref_varlen_args a;
    int32_t cu_q[MAXB + 1], cu_k[MAXB + 1];
    void *q, *k, *v;
    double *out, *lse, *oref, *lref;
    size_t nout, nlse;
} problem;

/* A deterministic tensor of n elements in storage dtype t, read back exactly by ref_load. */
static void *gen(ref_dtype t, size_t n, uint64_t key)
{
    void *p = malloc(n * ref_dtype_size(t) + 1);
    cr_assert(p);
    for (size_t i = 0; i < n; i++)
        ref_store(t, p, i, ref_rng_normal(key, i));
    return p;
}

static double *nan_buf(size_t n)
{
    double *p = malloc(n * sizeof *p + 1);
    cr_assert(p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

static void problem_init(problem *p, int batch, const int *lq, const int *lk, int hq, int hkv,
                         int dqk, int dv, ref_dtype t, uint64_t seed)
{
    cr_assert(batch <= MAXB);
    memset(p, 0, sizeof *p);
    for (int b = 0; b < batch; b++) {
        p->cu_q[b + 1] = p->cu_q[b] + lq[b];
        p->cu_k[b + 1] = p->cu_k[b] + lk[b];
    }
    const size_t tq = (size_t)p->cu_q[batch], tk = (size_t)p->cu_k[batch];
    p->q = gen(t, tq * hq * dqk, seed * 3 + 1);
    p->k = gen(t, tk * hkv * dqk, seed * 3 + 2);
    p->v = gen(t, tk * hkv * dv, seed * 3 + 3);
    p->nout = tq * hq * dv;
    p->nlse = tq * hq;
    p->out = nan_buf(p->nout);
    p->lse = nan_buf(p->nlse);
    p->oref = nan_buf(p->nout);
    p->lref = nan_buf(p->nlse);
    p->a = (ref_varlen_args){batch, hq, hkv, dqk, dv, p->cu_q, p->cu_k, t, p->q, p->k, p->v,
                             {1.0 / sqrt(dqk), 0.0, 0, -1, REF_EXACT, REF_F32}};
}

static void problem_free(problem *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->out);
    free(p->lse);
    free(p->oref);
    free(p->lref);
}

static double max_abs(const double *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

/* out within tol of max |ref|; lse within tol (relative past 1), and -inf exactly where the
 * reference has it. Written !(err <= tol) so that NaN (an unwritten poison) fails. */
static void expect_close(const double *out, const double *ref, size_t n, const double *lse,
                         const double *lref, size_t nl, double tol, const char *tag)
{
    const double scale = max_abs(ref, n) > 0 ? max_abs(ref, n) : 1.0;
    for (size_t i = 0; i < n; i++)
        cr_assert(!(fabs(out[i] - ref[i]) > tol * scale) && !isnan(out[i]),
                  "%s: out[%zu] = %.17g, oracle %.17g", tag, i, out[i], ref[i]);
    for (size_t i = 0; i < nl; i++) {
        if (isinf(lref[i])) {
            cr_assert(lse[i] == lref[i], "%s: lse[%zu] = %.17g, oracle %.17g", tag, i, lse[i], lref[i]);
            continue;
        }
        const double tl = tol * (fabs(lref[i]) > 1 ? fabs(lref[i]) : 1.0);
        cr_assert(fabs(lse[i] - lref[i]) <= tl, "%s: lse[%zu] = %.17g, oracle %.17g", tag, i, lse[i],
                  lref[i]);
    }
}

static void run_vs_oracle(problem *p, double tol, const char *tag)
{
    const int err = ref_mha_varlen(&p->a, p->out, p->lse);
    cr_assert(err == REF_OK, "%s: %s", tag, ref_strerror(err));
    oracle(&p->a, NULL, p->oref, p->lref);
    expect_close(p->out, p->oref, p->nout, p->lse, p->lref, p->nlse, tol, tag);
}

/* ------------------------------------------------------------------ vs oracle */

Test(attn, oracle_sweep)
{
    static const int lens[] = {1, 3, 17, 33, 130};
    static const int windows[] = {-1, 0, 5};
    int idx = 0;
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++)
            for (int causal = 0; causal < 2; causal++)
                for (int w = 0; w < 3; w++, idx++) {
                    const int gqa4 = idx % 2, mla = idx % 3 != 0, bf16 = idx % 5 < 2, cap = idx % 7 < 3;
                    problem p;
                    problem_init(&p, 1, &lens[a], &lens[b], 4, gqa4 ? 1 : 4, mla ? 24 : 16, 16,
                                 bf16 ? REF_BF16 : REF_F32, (uint64_t)idx);
                    p.a.opts.causal = causal;
                    p.a.opts.window_left = windows[w];
                    if (cap) {
                        p.a.opts.scale = 1.0; /* logits of order 5, so the cap bends them */
                        p.a.opts.softcap = 3.0;
                    }
                    char tag[160];
                    snprintf(tag, sizeof tag, "lq %d lk %d causal %d window %d gqa4 %d mla %d bf16 %d cap %d",
                             lens[a], lens[b], causal, windows[w], gqa4, mla, bf16, cap);
                    run_vs_oracle(&p, 1e-12, tag);
                    problem_free(&p);
                }
}

/* Several query tiles and key tiles, with the band edges (causal diagonal, window start) and
 * empty rows falling inside tiles rather than on their boundaries. */
Test(attn, oracle_multi_tile)
{
    static const struct {
        int lq, lk, causal, window;
    } s[] = {
        {600, 600, 1, -1}, {600, 600, 1, 300}, {300, 700, 1, 200},
        {700, 300, 1, -1}, {520, 520, 0, 130}, {270, 1100, 1, -1},
    };
    for (int i = 0; i < (int)(sizeof s / sizeof s[0]); i++) {
        problem p;
        problem_init(&p, 1, &s[i].lq, &s[i].lk, 2, 1, 24, 16, i % 2 ? REF_BF16 : REF_F32, 100u + i);
        p.a.opts.causal = s[i].causal;
        p.a.opts.window_left = s[i].window;
        char tag[96];
        snprintf(tag, sizeof tag, "lq %d lk %d causal %d window %d", s[i].lq, s[i].lk, s[i].causal,
                 s[i].window);
        run_vs_oracle(&p, 1e-12, tag);
        problem_free(&p);
    }
}

Test(attn, varlen_batch)
{
    /* empty query and key sequences, lq < lk, lq > lk, one token */
    static const int lq[] = {17, 0, 5, 33, 1, 130, 3};
    static const int lk[] = {17, 9, 0, 130, 1, 33, 40};
    for (int causal = 0; causal < 2; causal++) {
        problem p;
        problem_init(&p, 7, lq, lk, 8, 2, 24, 16, REF_BF16, 7u + causal);
        p.a.opts.causal = causal;
        p.a.opts.window_left = causal ? 20 : -1;
        p.a.opts.softcap = causal ? 0.0 : 2.5;
        run_vs_oracle(&p, 1e-12, causal ? "varlen causal window 20" : "varlen softcap");
        /* the lk = 0 sequence: out exactly 0, lse exactly -inf */
        for (int i = p.cu_q[2]; i < p.cu_q[3]; i++)
            for (int h = 0; h < 8; h++) {
                cr_assert(p.lse[(size_t)h * p.cu_q[7] + i] == -INFINITY);
                for (int d = 0; d < 16; d++)
                    cr_assert(p.out[((size_t)i * 8 + h) * 16 + d] == 0.0);
            }
        problem_free(&p);
    }
}

Test(attn, empty_rows_exact)
{
    const int lq = 40, lk = 9; /* causal bottom-right: the first 31 queries see nothing */
    problem p;
    problem_init(&p, 1, &lq, &lk, 2, 2, 16, 16, REF_F32, 11);
    p.a.opts.causal = 1;
    cr_assert(ref_mha_varlen(&p.a, p.out, p.lse) == REF_OK);
    for (int i = 0; i < lq; i++)
        for (int h = 0; h < 2; h++) {
            const double l = p.lse[(size_t)h * lq + i];
            cr_assert(i < lq - lk ? l == -INFINITY : isfinite(l), "row %d lse %g", i, l);
            for (int d = 0; d < 16 && i < lq - lk; d++)
                cr_assert(p.out[((size_t)i * 2 + h) * 16 + d] == 0.0);
        }
    problem_free(&p);
}

/* A NaN in a visible key reaches exactly the rows that see it, also when it is the only key a
 * row sees (window 0), and never rows that mask it. */
Test(attn, nan_key_poisons_its_rows)
{
    const int n = 300, bad = 5;
    for (int window = -1; window <= 0; window++) {
        problem p;
        problem_init(&p, 1, &n, &n, 1, 1, 16, 16, REF_F32, 121);
        ((float *)p.k)[bad * 16 + 3] = NAN;
        p.a.opts.causal = 1;
        p.a.opts.window_left = window;
        cr_assert(ref_mha_varlen(&p.a, p.out, p.lse) == REF_OK);
        for (int i = 0; i < n; i++) {
            const int sees = i >= bad && (window < 0 || i - window <= bad);
            cr_assert(sees ? isnan(p.lse[i]) && isnan(p.out[i * 16])
                           : isfinite(p.lse[i]) && isfinite(p.out[i * 16]),
                      "window %d row %d lse %g", window, i, p.lse[i]);
        }
        problem_free(&p);
    }
}

/* ref_attn on strided views (padded heads and rows, an lse stride past lq) equals the
 * contiguous varlen result, and writes nothing outside its view. */
Test(attn, strided_views)
{
    const int lq = 37, lk = 150, hq = 4, hkv = 2, dqk = 24, dv = 16, pad = 5;
    problem p;
    problem_init(&p, 1, &lq, &lk, hq, hkv, dqk, dv, REF_F32, 21);
    p.a.opts.causal = 1;
    p.a.opts.window_left = 60;
    cr_assert(ref_mha_varlen(&p.a, p.out, p.lse) == REF_OK);

    const ptrdiff_t qhs = dqk + pad, qrs = hq * qhs, khs = dqk + pad, krs = hkv * khs + pad;
    const ptrdiff_t vhs = dv + pad, vrs = hkv * vhs, ors = hq * dv + pad, lhs = lq + pad;
    float *q = calloc((size_t)lq * qrs, sizeof *q), *k = calloc((size_t)lk * krs, sizeof *k),
          *v = calloc((size_t)lk * vrs, sizeof *v);
    double *out = malloc((size_t)lq * ors * sizeof *out), *lse = malloc((size_t)hq * lhs * sizeof *lse);
    for (int i = 0; i < lq; i++)
        for (int h = 0; h < hq; h++)
            for (int d = 0; d < dqk; d++)
                q[i * qrs + h * qhs + d] = ((const float *)p.q)[(i * hq + h) * dqk + d];
    for (int j = 0; j < lk; j++)
        for (int h = 0; h < hkv; h++) {
            for (int d = 0; d < dqk; d++)
                k[j * krs + h * khs + d] = ((const float *)p.k)[(j * hkv + h) * dqk + d];
            for (int d = 0; d < dv; d++)
                v[j * vrs + h * vhs + d] = ((const float *)p.v)[(j * hkv + h) * dv + d];
        }
    for (size_t i = 0; i < (size_t)lq * ors; i++)
        out[i] = 12345.0;
    for (size_t i = 0; i < (size_t)hq * lhs; i++)
        lse[i] = 12345.0;
    const ref_view qv = {REF_F32, q, qrs, qhs}, kv = {REF_F32, k, krs, khs}, vv = {REF_F32, v, vrs, vhs};
    cr_assert(ref_attn(lq, lk, hq, hkv, dqk, dv, qv, kv, vv, &p.a.opts, out, ors, lse, lhs) == REF_OK);
    for (int i = 0; i < lq; i++) {
        for (int h = 0; h < hq; h++) {
            for (int d = 0; d < dv; d++)
                cr_assert(out[i * ors + h * dv + d] == p.out[(i * hq + h) * dv + d]);
            cr_assert(lse[h * lhs + i] == p.lse[h * lq + i]);
        }
        for (int c = hq * dv; c < ors; c++)
            cr_assert(out[i * ors + c] == 12345.0, "row padding written");
    }
    for (int h = 0; h < hq; h++)
        for (int i = lq; i < lhs; i++)
            cr_assert(lse[h * lhs + i] == 12345.0, "lse padding written");
    free(q);
    free(k);
    free(v);
    free(out);
    free(lse);
    problem_free(&p);
}

/* A path that parallelises over sequences calls ref_attn inside its own parallel region, where
 * the core runs serially: every bit must be the same as the core's own threading gives. */
Test(attn, inside_parallel_region)
{
    static const int lq[] = {130, 17, 300, 1}, lk[] = {130, 40, 300, 33};
    problem p;
    problem_init(&p, 4, lq, lk, 4, 1, 24, 16, REF_BF16, 111);
    p.a.opts.causal = 1;
    cr_assert(ref_mha_varlen(&p.a, p.out, p.lse) == REF_OK);
    const size_t es = ref_dtype_size(REF_BF16);
    const int hq = 4, hkv = 1, dqk = 24, dv = 16, tq = p.cu_q[4];
    int errs = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : errs)
    for (int b = 0; b < 4; b++) {
        const int q0 = p.cu_q[b], k0 = p.cu_k[b];
        const ref_view q = {REF_BF16, (const char *)p.q + (size_t)q0 * hq * dqk * es, hq * dqk, dqk};
        const ref_view k = {REF_BF16, (const char *)p.k + (size_t)k0 * hkv * dqk * es, hkv * dqk, dqk};
        const ref_view v = {REF_BF16, (const char *)p.v + (size_t)k0 * hkv * dv * es, hkv * dv, dv};
        errs += ref_attn(lq[b], lk[b], hq, hkv, dqk, dv, q, k, v, &p.a.opts,
                         p.oref + (size_t)q0 * hq * dv, hq * dv, p.lref + q0, tq) != REF_OK;
    }
    cr_assert(errs == 0);
    cr_assert(!memcmp(p.out, p.oref, p.nout * sizeof *p.out));
    cr_assert(!memcmp(p.lse, p.lref, p.nlse * sizeof *p.lse));
    problem_free(&p);
}

/* ------------------------------------------------------------------ identities */

/* Multiples of 1/4 in [-2, 2]: every dot product and its power-of-two scaling are exact, so an
 * exact result can be demanded. */
static void fill_quarters(problem *p, size_t nq, size_t nk, size_t nv)
{
    for (size_t i = 0; i < nq; i++)
        ref_store(p->a.dtype, p->q, i, (double)ref_rng_range(31, i, -8, 8) / 4);
    for (size_t i = 0; i < nk; i++)
        ref_store(p->a.dtype, p->k, i, (double)ref_rng_range(32, i, -8, 8) / 4);
    for (size_t i = 0; i < nv; i++)
        ref_store(p->a.dtype, p->v, i, (double)ref_rng_range(33, i, -8, 8) / 4);
}

/* One visible key: out = V of that key and lse = its logit, both exactly. Causal with
 * window 0 leaves each query exactly the key on its diagonal; lk = 1 leaves every query the
 * only key. */
Test(identity, one_valid_key)
{
    static const struct {
        int lq, lk, causal, window;
    } s[] = {{300, 300, 1, 0}, {3, 1, 0, -1}, {130, 1, 0, 5}};
    for (int c = 0; c < 3; c++) {
        const int hq = 4, hkv = 2, d = 16;
        problem p;
        problem_init(&p, 1, &s[c].lq, &s[c].lk, hq, hkv, d, d, REF_BF16, 41);
        fill_quarters(&p, (size_t)s[c].lq * hq * d, (size_t)s[c].lk * hkv * d, (size_t)s[c].lk * hkv * d);
        p.a.opts = (ref_attn_opts){0.125, 0.0, s[c].causal, s[c].window, REF_EXACT, REF_F32};
        cr_assert(ref_mha_varlen(&p.a, p.out, p.lse) == REF_OK);
        for (int i = 0; i < s[c].lq; i++)
            for (int h = 0; h < hq; h++) {
                const int j = s[c].lk == 1 ? 0 : i, kh = h / (hq / hkv);
                double dot = 0;
                for (int x = 0; x < d; x++)
                    dot += ref_load(REF_BF16, p.q, ((size_t)i * hq + h) * d + x) *
                           ref_load(REF_BF16, p.k, ((size_t)j * hkv + kh) * d + x);
                cr_assert(p.lse[(size_t)h * s[c].lq + i] == 0.125 * dot, "case %d row %d head %d", c, i, h);
                for (int x = 0; x < d; x++)
                    cr_assert(p.out[((size_t)i * hq + h) * d + x] ==
                                  ref_load(REF_BF16, p.v, ((size_t)j * hkv + kh) * d + x),
                              "case %d row %d head %d dim %d", c, i, h, x);
            }
        problem_free(&p);
    }
}

/* q = 0 makes every logit 0: out = mean of the visible V rows, lse = log n exactly (the row
 * sum stays an exact integer). The causal case gives every row a different n, across key
 * tiles. */
Test(identity, equal_scores)
{
    const int lq = 400, lk = 700, hq = 2, hkv = 1, d = 16;
    for (int causal = 0; causal < 2; causal++) {
        problem p;
        problem_init(&p, 1, &lq, &lk, hq, hkv, d, d, REF_F32, 51);
        memset(p.q, 0, (size_t)lq * hq * d * sizeof(float));
        p.a.opts.causal = causal;
        cr_assert(ref_mha_varlen(&p.a, p.out, p.lse) == REF_OK);
        for (int i = 0; i < lq; i++) {
            const int n = causal ? i + (lk - lq) + 1 : lk;
            for (int h = 0; h < hq; h++) {
                cr_assert(p.lse[(size_t)h * lq + i] == log((double)n), "row %d", i);
                for (int x = 0; x < d; x++) {
                    long double sum = 0;
                    for (int j = 0; j < n; j++)
                        sum += ref_load(REF_F32, p.v, (size_t)j * d + x);
                    cr_assert(fabs(p.out[((size_t)i * hq + h) * d + x] - (double)(sum / n)) <= 1e-14,
                              "row %d dim %d", i, x);
                }
            }
        }
        problem_free(&p);
    }
}

/* Attention over all keys == merge of attention over two disjoint halves (non-causal varlen on
 * each half), for every row. */
Test(identity, merge_of_halves)
{
    const int lq = 33, lk = 301, half = 130, hq = 4, hkv = 1, dqk = 24, dv = 16;
    problem p;
    problem_init(&p, 1, &lq, &lk, hq, hkv, dqk, dv, REF_BF16, 61);
    p.a.opts.softcap = 4.0;
    cr_assert(ref_mha_varlen(&p.a, p.out, p.lse) == REF_OK);

    const size_t es = ref_dtype_size(REF_BF16);
    const int32_t cua[2] = {0, half}, cub[2] = {0, lk - half}, cuq[2] = {0, lq};
    ref_varlen_args a = p.a, b = p.a;
    a.cu_q = b.cu_q = cuq;
    a.cu_k = cua;
    b.cu_k = cub;
    b.k = (const char *)p.k + (size_t)half * hkv * dqk * es;
    b.v = (const char *)p.v + (size_t)half * hkv * dv * es;
    double *oa = nan_buf(p.nout), *ob = nan_buf(p.nout), *la = nan_buf(p.nlse), *lb = nan_buf(p.nlse);
    cr_assert(ref_mha_varlen(&a, oa, la) == REF_OK);
    cr_assert(ref_mha_varlen(&b, ob, lb) == REF_OK);
    for (int i = 0; i < lq; i++)
        for (int h = 0; h < hq; h++) {
            const size_t r = ((size_t)i * hq + h) * dv, l = (size_t)h * lq + i;
            double o[16], lse;
            ref_merge_row(dv, oa + r, la[l], ob + r, lb[l], o, &lse);
            cr_assert(fabs(lse - p.lse[l]) <= 1e-13 * fabs(p.lse[l]) + 1e-13);
            for (int x = 0; x < dv; x++)
                cr_assert(fabs(o[x] - p.out[r + x]) <= 1e-13, "row %d head %d dim %d", i, h, x);
        }
    free(oa);
    free(ob);
    free(la);
    free(lb);
    problem_free(&p);
}

Test(identity, merge_infinite_lse)
{
    const double oa[3] = {0.25, -1.5, 3.0}, ob[3] = {-7.0, 0.125, 1e-3};
    double o[3], lse;
    static const double empties[] = {-INFINITY, INFINITY};
    for (int e = 0; e < 2; e++) {
        ref_merge_row(3, oa, empties[e], ob, 0.7, o, &lse);
        cr_assert(lse == 0.7 && !memcmp(o, ob, sizeof o), "a empty (%g)", empties[e]);
        ref_merge_row(3, oa, -2.5, ob, empties[e], o, &lse);
        cr_assert(lse == -2.5 && !memcmp(o, oa, sizeof o), "b empty (%g)", empties[e]);
        for (int f = 0; f < 2; f++) {
            ref_merge_row(3, oa, empties[e], ob, empties[f], o, &lse);
            cr_assert(lse == -INFINITY && o[0] == 0.0 && o[1] == 0.0 && o[2] == 0.0);
        }
    }
    /* a NaN lse is never read as empty */
    ref_merge_row(3, oa, NAN, ob, -INFINITY, o, &lse);
    cr_assert(isnan(lse) && isnan(o[0]));
    ref_merge_row(3, oa, 0.5, ob, NAN, o, &lse);
    cr_assert(isnan(lse) && isnan(o[0]));
    /* equal weights: the plain mean and log 2 */
    ref_merge_row(3, oa, 1.0, ob, 1.0, o, &lse);
    cr_assert(lse == 1.0 + log(2.0));
    for (int x = 0; x < 3; x++)
        cr_assert(o[x] == (oa[x] + ob[x]) / 2);
}

/* ref_merge_states is ref_merge_row over every (token, head), reading the partial outputs in
 * their storage dtype and the f32 lses as given (+-inf included). */
Test(identity, merge_states_rows)
{
    const int t = 37, h = 3, d = 20;
    static const ref_dtype types[] = {REF_F64, REF_BF16};
    for (int ti = 0; ti < 2; ti++) {
        const ref_dtype dt = types[ti];
        void *oa = gen(dt, (size_t)t * h * d, 71), *ob = gen(dt, (size_t)t * h * d, 72);
        float *la = malloc((size_t)h * t * sizeof *la), *lb = malloc((size_t)h * t * sizeof *lb);
        for (int i = 0; i < h * t; i++) {
            la[i] = (float)(3 * ref_rng_normal(73, i));
            lb[i] = (float)(3 * ref_rng_normal(74, i));
            if (i % 7 == 0)
                la[i] = i % 2 ? INFINITY : -INFINITY;
            if (i % 5 == 0)
                lb[i] = i % 3 ? -INFINITY : INFINITY;
        }
        double *out = nan_buf((size_t)t * h * d), *lse = nan_buf((size_t)h * t);
        cr_assert(ref_merge_states(t, h, d, dt, oa, ob, la, lb, out, lse) == REF_OK);
        for (int i = 0; i < t; i++)
            for (int hh = 0; hh < h; hh++) {
                double ra[20], rb[20], ro[20], rl;
                const size_t row = ((size_t)i * h + hh) * d, l = (size_t)hh * t + i;
                for (int c = 0; c < d; c++) {
                    ra[c] = ref_load(dt, oa, row + c);
                    rb[c] = ref_load(dt, ob, row + c);
                }
                ref_merge_row(d, ra, la[l], rb, lb[l], ro, &rl);
                cr_assert(!memcmp(ro, out + row, sizeof ro) && !memcmp(&rl, &lse[l], sizeof rl),
                          "%s token %d head %d", ref_dtype_name(dt), i, hh);
            }
        free(oa);
        free(ob);
        free(la);
        free(lb);
        free(out);
        free(lse);
    }
}

Test(identity, sink)
{
    const int lq = 45, lk = 33, hq = 4, hkv = 2, d = 16; /* causal: 12 rows see no key */
    const double sinks[4] = {-1.0, 0.5, 3.0, 10.0};
    problem p;
    problem_init(&p, 1, &lq, &lk, hq, hkv, d, d, REF_F32, 81);
    p.a.opts.causal = 1;
    cr_assert(ref_mha_varlen(&p.a, p.out, p.lse) == REF_OK);
    double *o = malloc(p.nout * sizeof *o);

    memcpy(o, p.out, p.nout * sizeof *o);
    for (int i = 0; i < lq; i++)
        for (int h = 0; h < hq; h++)
            ref_apply_sink_row(d, o + ((size_t)i * hq + h) * d, p.lse[(size_t)h * lq + i], -INFINITY);
    cr_assert(!memcmp(o, p.out, p.nout * sizeof *o), "sink = -inf changed the output");

    for (int i = 0; i < lq; i++)
        for (int h = 0; h < hq; h++)
            ref_apply_sink_row(d, o + ((size_t)i * hq + h) * d, p.lse[(size_t)h * lq + i], INFINITY);
    for (size_t i = 0; i < p.nout; i++)
        cr_assert(o[i] == 0.0, "sink = +inf left out[%zu] = %g", i, o[i]);

    memcpy(o, p.out, p.nout * sizeof *o);
    for (int i = 0; i < lq; i++)
        for (int h = 0; h < hq; h++)
            ref_apply_sink_row(d, o + ((size_t)i * hq + h) * d, p.lse[(size_t)h * lq + i], sinks[h]);
    oracle(&p.a, sinks, p.oref, p.lref);
    expect_close(o, p.oref, p.nout, p.lse, p.lref, p.nlse, 1e-12, "finite sink");
    free(o);
    problem_free(&p);
}

/* ---------------------------------------------------------------- emulate mode */

/* Rounding P to bf16 moves out by about 2^-9 of max |V| at most, must move it somewhat, and
 * leaves lse untouched (the row sum keeps the unrounded P). */
Test(attn, emulate_mode)
{
    const int lq = 300, lk = 300, hq = 2, hkv = 1, d = 16;
    problem p;
    problem_init(&p, 1, &lq, &lk, hq, hkv, d, d, REF_BF16, 91);
    p.a.opts.causal = 1;
    cr_assert(ref_mha_varlen(&p.a, p.out, p.lse) == REF_OK);
    p.a.opts.mode = REF_EMULATE;
    p.a.opts.p_dtype = REF_BF16;
    cr_assert(ref_mha_varlen(&p.a, p.oref, p.lref) == REF_OK);
    double vmax = 0, diff = 0;
    for (size_t i = 0; i < (size_t)lk * hkv * d; i++)
        vmax = fmax(vmax, fabs(ref_load(REF_BF16, p.v, i)));
    for (size_t i = 0; i < p.nout; i++)
        diff = fmax(diff, fabs(p.out[i] - p.oref[i]));
    cr_assert(diff <= 0x1p-8 * vmax, "emulate differs by %g (max |v| %g)", diff, vmax);
    cr_assert(diff > 1e-6, "emulate identical to exact (diff %g)", diff);
    cr_assert(!memcmp(p.lse, p.lref, p.nlse * sizeof *p.lse), "emulate changed lse");

    /* P in f16 (3 more mantissa bits) errs about 8x less; in f32, by f32 rounding only. */
    double diff16 = 0, diff32 = 0;
    p.a.opts.p_dtype = REF_F16;
    cr_assert(ref_mha_varlen(&p.a, p.oref, p.lref) == REF_OK);
    for (size_t i = 0; i < p.nout; i++)
        diff16 = fmax(diff16, fabs(p.out[i] - p.oref[i]));
    p.a.opts.p_dtype = REF_F32;
    cr_assert(ref_mha_varlen(&p.a, p.oref, p.lref) == REF_OK);
    for (size_t i = 0; i < p.nout; i++)
        diff32 = fmax(diff32, fabs(p.out[i] - p.oref[i]));
    cr_assert(diff16 <= 0x1p-11 * vmax && diff16 > 0, "f16 P: %g", diff16);
    cr_assert(diff32 <= 0x1p-22 * vmax, "f32 P: %g", diff32);
    problem_free(&p);
}

/* ---------------------------------------------------------------- bad arguments */

Test(attn, bad_arguments)
{
    const int lq = 3, lk = 5;
    problem p;
    problem_init(&p, 1, &lq, &lk, 4, 2, 16, 16, REF_F32, 101);
    ref_varlen_args a;
#define EXPECT_ERR(code, mutate)                                                     \
    do {                                                                             \
        a = p.a;                                                                     \
        mutate;                                                                      \
        const int e_ = ref_mha_varlen(&a, p.out, p.lse);                             \
        cr_assert(e_ == (code), "%s: got %s", #mutate, ref_strerror(e_));            \
    } while (0)
    EXPECT_ERR(REF_OK, (void)0);
    EXPECT_ERR(REF_EINVAL, a.hq = 0);
    EXPECT_ERR(REF_EINVAL, a.hkv = -1);
    EXPECT_ERR(REF_EINVAL, a.dqk = 0);
    EXPECT_ERR(REF_EINVAL, a.dv = -16);
    EXPECT_ERR(REF_EINVAL, a.batch = -1);
    EXPECT_ERR(REF_EINVAL, a.cu_k = NULL);
    EXPECT_ERR(REF_EINVAL, a.opts.window_left = -2);
    EXPECT_ERR(REF_EINVAL, a.opts.softcap = -1.0);
    EXPECT_ERR(REF_EINVAL, a.opts.scale = NAN);
    EXPECT_ERR(REF_EINVAL, a.opts.mode = (ref_mode)7);
    EXPECT_ERR(REF_ESHAPE, a.hkv = 3);
    EXPECT_ERR(REF_EDTYPE, a.dtype = REF_I32);
    const int32_t bad0[2] = {1, 3}, neg[3] = {0, 3, 2};
    EXPECT_ERR(REF_ESHAPE, a.cu_q = bad0);
    EXPECT_ERR(REF_ESHAPE, a.cu_k = bad0);
    EXPECT_ERR(REF_ESHAPE, (a.batch = 2, a.cu_k = neg));
#undef EXPECT_ERR
    cr_assert(ref_mha_varlen(NULL, p.out, p.lse) == REF_EINVAL);
    cr_assert(ref_mha_varlen(&p.a, NULL, p.lse) == REF_EINVAL);

    const ref_view v = {REF_F32, p.q, 64, 16};
    cr_assert(ref_attn(-1, 5, 4, 2, 16, 16, v, v, v, &p.a.opts, p.out, 64, p.lse, 3) == REF_EINVAL);
    cr_assert(ref_attn(3, 5, 4, 3, 16, 16, v, v, v, &p.a.opts, p.out, 64, p.lse, 3) == REF_ESHAPE);
    cr_assert(ref_attn(3, 5, 4, 2, 16, 16, v, v, v, NULL, p.out, 64, p.lse, 3) == REF_EINVAL);

    const float l[1] = {0};
    cr_assert(ref_merge_states(1, 1, 0, REF_F32, p.q, p.q, l, l, p.out, p.lse) == REF_EINVAL);
    cr_assert(ref_merge_states(-1, 1, 4, REF_F32, p.q, p.q, l, l, p.out, p.lse) == REF_EINVAL);
    cr_assert(ref_merge_states(1, 1, 4, REF_I64, p.q, p.q, l, l, p.out, p.lse) == REF_EDTYPE);
    problem_free(&p);
}
