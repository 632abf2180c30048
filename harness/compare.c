/* compare.c - judging a candidate output against the f64 reference (VALIDATION.md).
 *
 * Order of verdicts, most severe first: bytes outside the buffer changed (FAIL_CANARY), an
 * element never written (FAIL_UNWRITTEN), a NaN/inf where the reference has none or the other
 * way round (FAIL_NONFINITE), then the numeric rule |g - r| <= atol + rtol*|r| on every
 * finite element plus the whole-tensor cos_diff bound (FAIL_NUMERIC).
 */
#include "hx.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const char *const hx__status_names[HX_STATUS_COUNT] = {
    "PASS",           "FAIL_NUMERIC",     "FAIL_NONFINITE", "FAIL_UNWRITTEN",
    "FAIL_CANARY",    "SKIP_UNSUPPORTED", "SKIP_NO_GPU",    "ERROR",
    "FAIL_NONDETERMINISTIC",
};

const char *hx_status_name(hx_status s)
{
    return (unsigned)s < HX_STATUS_COUNT ? hx__status_names[s] : "?";
}

int hx_status_ok(hx_status s)
{
    return s == HX_PASS || s == HX_SKIP_UNSUPPORTED || s == HX_SKIP_NO_GPU;
}

/* Severity: ERROR > CANARY > UNWRITTEN > NONFINITE > NUMERIC > NONDETERMINISTIC > skips >
 * PASS (a wrong output is reported before an unrepeatable one). */
static int hx__severity(hx_status s)
{
    static const int rank[HX_STATUS_COUNT] = {
        [HX_PASS] = 0,           [HX_SKIP_NO_GPU] = 1,    [HX_SKIP_UNSUPPORTED] = 2,
        [HX_FAIL_NONDETERMINISTIC] = 3,
        [HX_FAIL_NUMERIC] = 4,   [HX_FAIL_NONFINITE] = 5, [HX_FAIL_UNWRITTEN] = 6,
        [HX_FAIL_CANARY] = 7,    [HX_ERROR] = 8,
    };
    return (unsigned)s < HX_STATUS_COUNT ? rank[s] : 8;
}

hx_status hx_status_worst(hx_status a, hx_status b)
{
    return hx__severity(a) >= hx__severity(b) ? a : b;
}

hx_tol hx_default_tol(ref_dtype dt, int is_lse, int bit_exact)
{
    hx_tol t;
    if (bit_exact)
        t = (hx_tol){0, 0, -1};
    else if (is_lse)
        t = (hx_tol){1e-5, 0x1p-13, -1}; /* FlashMLA's lse bar */
    else if (dt == REF_BF16)
        t = (hx_tol){1e-3, 0x1p-6, 5e-6}; /* FlashMLA decode tests; 2 bf16 ulps */
    else if (dt == REF_F16)
        t = (hx_tol){2e-4, 0x1p-9, 1e-6}; /* 2 f16 ulps */
    else
        t = (hx_tol){1e-5, 0x1p-13, 1e-8}; /* f32 output: f32 accumulation over long rows */
    return t;
}

/* Same non-finite class: both NaN, or the same infinity. */
static int hx__same_nonfinite(double g, double r)
{
    if (isnan(g) || isnan(r))
        return isnan(g) && isnan(r);
    return g == r;
}

static int hx__same_bits(ref_dtype dt, const void *data, size_t i, double ref)
{
    unsigned char want[8];
    size_t esz = ref_dtype_size(dt);
    ref_store(dt, want, 0, ref);
    return memcmp((const unsigned char *)data + i * esz, want, esz) == 0;
}

/* One chunk's share of hx_compare: counts, extremes, the first worst element and the sums. */
typedef struct hx__cmp_acc {
    size_t n, n_unwritten, n_nonfinite_mismatch, n_bad, worst;
    double max_abs, max_rel, worst_ratio, worst_got, worst_ref;
    double s_gr, s_gg_rr, s_dd, s_rr, s_abs;
} hx__cmp_acc;

static void hx__compare_range(const hx_tensor *got, const double *r, hx_tol tol, int bit_exact,
                              size_t lo, size_t hi, hx__cmp_acc *a)
{
    memset(a, 0, sizeof *a);
    a->worst_ratio = -1;
    a->worst_got = a->worst_ref = NAN;
    for (size_t i = lo; i < hi; i++) {
        if (hx_is_poison(got->dtype, got->data, i)) {
            a->n_unwritten++;
            continue;
        }
        double g = ref_load(got->dtype, got->data, i), ri = r[i];
        if (!isfinite(g) || !isfinite(ri)) {
            if (!hx__same_nonfinite(g, ri)) {
                a->n_nonfinite_mismatch++;
                if (a->worst_ratio < INFINITY) {
                    a->worst_ratio = INFINITY;
                    a->worst = i;
                    a->worst_got = g;
                    a->worst_ref = ri;
                }
            }
            continue;
        }
        double err = fabs(g - ri), lim = tol.atol + tol.rtol * fabs(ri);
        /* Bit-exact profile: the bits must be the reference's value stored in the candidate's
         * dtype, which also tells -0 from +0. */
        if (bit_exact && !hx__same_bits(got->dtype, got->data, i, ri))
            err = fmax(err, 1e-300);
        double ratio = err <= lim ? (lim > 0 ? err / lim : 0) : (lim > 0 ? err / lim : INFINITY);
        if (!(err <= lim))
            a->n_bad++;
        if (ratio > a->worst_ratio) {
            a->worst_ratio = ratio;
            a->worst = i;
            a->worst_got = g;
            a->worst_ref = ri;
        }
        if (err > a->max_abs)
            a->max_abs = err;
        double rel = err / fmax(fabs(ri), 1e-30);
        if (rel > a->max_rel)
            a->max_rel = rel;
        a->n++;
        a->s_abs += err;
        a->s_gr += g * ri;
        a->s_gg_rr += g * g + ri * ri;
        a->s_dd += (g - ri) * (g - ri);
        a->s_rr += ri * ri;
    }
}

/* Elements per chunk. The chunks are judged in parallel and their results combined in chunk
 * order: the same sums, the same first worst element, whatever the thread count. */
enum { HX__CMP_CHUNK = 1 << 16 };

hx_status hx_compare(const hx_tensor *got, const hx_tensor *ref, hx_tol tol, hx_metrics *m)
{
    const int bit_exact = tol.atol == 0 && tol.rtol == 0;
    memset(m, 0, sizeof *m);
    m->canary_ok = hx_tensor_canary_ok(got);
    m->worst_got = m->worst_ref = NAN;
    const double *r = ref->data;
    size_t n = got->numel < ref->numel ? got->numel : ref->numel;
    const size_t nch = n ? (n + HX__CMP_CHUNK - 1) / HX__CMP_CHUNK : 1;
    hx__cmp_acc one, *acc = nch > 1 ? malloc(nch * sizeof *acc) : NULL;
    const size_t nacc = acc ? nch : 1;
    if (!acc) /* one chunk, or out of memory: judge in one piece */
        hx__compare_range(got, r, tol, bit_exact, 0, n, acc = &one);
    else {
#pragma omp parallel for schedule(dynamic, 4)
        for (ptrdiff_t c = 0; c < (ptrdiff_t)nch; c++) {
            const size_t lo = (size_t)c * HX__CMP_CHUNK;
            const size_t hi = lo + HX__CMP_CHUNK < n ? lo + HX__CMP_CHUNK : n;
            hx__compare_range(got, r, tol, bit_exact, lo, hi, &acc[c]);
        }
    }
    double s_gr = 0, s_gg_rr = 0, s_dd = 0, s_rr = 0, s_abs = 0, worst_ratio = -1;
    for (size_t c = 0; c < nacc; c++) {
        const hx__cmp_acc *a = &acc[c];
        m->n += a->n;
        m->n_unwritten += a->n_unwritten;
        m->n_nonfinite_mismatch += a->n_nonfinite_mismatch;
        m->n_bad += a->n_bad;
        if (a->worst_ratio > worst_ratio) {
            worst_ratio = a->worst_ratio;
            m->worst = a->worst;
            m->worst_got = a->worst_got;
            m->worst_ref = a->worst_ref;
        }
        m->max_abs = a->max_abs > m->max_abs ? a->max_abs : m->max_abs;
        m->max_rel = a->max_rel > m->max_rel ? a->max_rel : m->max_rel;
        s_abs += a->s_abs;
        s_gr += a->s_gr;
        s_gg_rr += a->s_gg_rr;
        s_dd += a->s_dd;
        s_rr += a->s_rr;
    }
    if (acc != &one)
        free(acc);
    m->headroom = worst_ratio < 0 ? 0 : worst_ratio;
    m->mean_abs = m->n ? s_abs / (double)m->n : 0;
    m->cos_diff = s_gg_rr > 0 ? 1.0 - 2.0 * s_gr / s_gg_rr : 0.0;
    m->cos_sim = 1.0 - m->cos_diff;
    m->rel_l2 = s_rr > 0 ? sqrt(s_dd / s_rr) : (s_dd > 0 ? INFINITY : 0.0);

    if (got->numel != ref->numel)
        return HX_ERROR;
    if (!m->canary_ok)
        return HX_FAIL_CANARY;
    if (m->n_unwritten)
        return HX_FAIL_UNWRITTEN;
    if (m->n_nonfinite_mismatch)
        return HX_FAIL_NONFINITE;
    if (m->n_bad || (tol.cos_tol >= 0 && !(m->cos_diff <= tol.cos_tol)))
        return HX_FAIL_NUMERIC;
    return HX_PASS;
}
