/* test_compare.c - the judge (harness/compare.c): each failure class is caught, and a
 * correct candidate passes with the metrics VALIDATION.md defines. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "hx.h"

/* A bf16 candidate and its f64 reference, both holding N(0,1) values exactly representable
 * in bf16 (so an unmodified candidate is exact). */
typedef struct pair {
    hx_tensors s;
    hx_tensor *got, *ref;
} pair;

static void make_pair(pair *p, ref_dtype dt, int n)
{
    memset(p, 0, sizeof *p);
    int64_t shape[2] = {n / 8, 8};
    p->got = hx_tensors_add(&p->s, "out", dt, 2, shape, NULL);
    p->ref = hx_tensors_add(&p->s, "ref", REF_F64, 2, shape, NULL);
    cr_assert(p->got && p->ref);
    for (int i = 0; i < n; i++) {
        double v = ref_round_to(dt, ref_rng_normal(7, (uint64_t)i));
        ref_store(dt, p->got->data, (size_t)i, v);
        ((double *)p->ref->data)[i] = v;
    }
}

static hx_status judge(pair *p, hx_metrics *m)
{
    return hx_compare(p->got, p->ref, hx_default_tol(p->got->dtype, 0, 0), m);
}

Test(compare, exact_candidate_passes)
{
    pair p;
    hx_metrics m;
    make_pair(&p, REF_BF16, 1024);
    cr_expect_eq(judge(&p, &m), HX_PASS);
    cr_expect_eq(m.n, 1024);
    cr_expect_eq(m.max_abs, 0.0);
    cr_expect_eq(m.cos_diff, 0.0);
    cr_expect_eq(m.headroom, 0.0);
    cr_expect(m.canary_ok);
    hx_tensors_free(&p.s);
}

Test(compare, nan_in_candidate_fails_nonfinite)
{
    pair p;
    hx_metrics m;
    make_pair(&p, REF_BF16, 1024);
    ref_store(REF_BF16, p.got->data, 77, NAN);
    cr_expect_eq(judge(&p, &m), HX_FAIL_NONFINITE);
    cr_expect_eq(m.n_nonfinite_mismatch, 1);
    cr_expect_eq(m.worst, 77);
    hx_tensors_free(&p.s);
}

Test(compare, matching_nonfinite_masks_pass)
{
    pair p;
    hx_metrics m;
    make_pair(&p, REF_F32, 64);
    ref_store(REF_F32, p.got->data, 3, -INFINITY);
    ((double *)p.ref->data)[3] = -INFINITY;
    ref_store(REF_F32, p.got->data, 5, NAN);
    ((double *)p.ref->data)[5] = NAN;
    cr_expect_eq(judge(&p, &m), HX_PASS);
    cr_expect_eq(m.n, 62, "non-finite elements are excluded from the metrics");
    /* +inf where -inf is expected is a mismatch */
    ref_store(REF_F32, p.got->data, 3, INFINITY);
    cr_expect_eq(judge(&p, &m), HX_FAIL_NONFINITE);
    /* a finite value where the reference is -inf (an empty row's lse) is a mismatch */
    ref_store(REF_F32, p.got->data, 3, 0.0);
    cr_expect_eq(judge(&p, &m), HX_FAIL_NONFINITE);
    hx_tensors_free(&p.s);
}

Test(compare, uniform_one_percent_scale_error_fails_cos_diff)
{
    pair p;
    hx_metrics m;
    make_pair(&p, REF_BF16, 4096);
    for (int i = 0; i < 4096; i++)
        ref_store(REF_BF16, p.got->data, (size_t)i, 1.01 * ((double *)p.ref->data)[i]);
    hx_status s = judge(&p, &m);
    cr_expect_eq(m.n_bad, 0, "1%% is inside 2 bf16 ulps elementwise: only cos_diff sees it");
    cr_expect_gt(m.cos_diff, 5e-6);
    cr_expect_eq(s, HX_FAIL_NUMERIC);
    hx_tensors_free(&p.s);
}

Test(compare, poisoned_element_fails_unwritten)
{
    pair p;
    hx_metrics m;
    make_pair(&p, REF_BF16, 256);
    uint16_t *g = p.got->data;
    hx_tensor_poison(p.got);
    for (int i = 0; i < 256; i++)
        if (i != 200)
            ref_store(REF_BF16, g, (size_t)i, ((double *)p.ref->data)[i]);
    cr_expect(hx_is_poison(REF_BF16, g, 200));
    cr_expect_eq(judge(&p, &m), HX_FAIL_UNWRITTEN);
    cr_expect_eq(m.n_unwritten, 1);
    hx_tensors_free(&p.s);
}

Test(compare, computed_nan_is_not_poison)
{
    /* A NaN the hardware produces (canonical payload) must read as non-finite, not unwritten. */
    float f = NAN;
    uint16_t b = ref_f32_to_bf16(f);
    cr_expect_not(hx_is_poison(REF_BF16, &b, 0));
    cr_expect_not(hx_is_poison(REF_F32, &f, 0));
    uint16_t h = ref_f32_to_f16(f);
    cr_expect_not(hx_is_poison(REF_F16, &h, 0));
}

Test(compare, write_past_the_end_fails_canary)
{
    pair p;
    hx_metrics m;
    make_pair(&p, REF_F32, 64);
    ((unsigned char *)p.got->data)[p.got->bytes + 3] ^= 1;
    cr_expect_eq(judge(&p, &m), HX_FAIL_CANARY);
    ((unsigned char *)p.got->data)[p.got->bytes + 3] ^= 1;
    ((unsigned char *)p.got->data)[-1] ^= 1;
    cr_expect_eq(judge(&p, &m), HX_FAIL_CANARY);
    ((unsigned char *)p.got->data)[-1] ^= 1;
    cr_expect_eq(judge(&p, &m), HX_PASS);
    hx_tensors_free(&p.s);
}

Test(compare, one_element_off_is_located)
{
    pair p;
    hx_metrics m;
    make_pair(&p, REF_BF16, 1024);
    double r = ((double *)p.ref->data)[513];
    ref_store(REF_BF16, p.got->data, 513, r + 0.5);
    cr_expect_eq(judge(&p, &m), HX_FAIL_NUMERIC);
    cr_expect_eq(m.n_bad, 1);
    cr_expect_eq(m.worst, 513);
    cr_expect_gt(m.headroom, 1.0);
    cr_expect_float_eq(m.max_abs, fabs(ref_round_to(REF_BF16, r + 0.5) - r), 1e-12);
    hx_tensors_free(&p.s);
}

/* Past one 64K-element chunk the judge runs chunks in parallel: counts add up across chunks,
 * the worst element is the first of equal worst ones (as an in-order scan finds it), an
 * unwritten element in a late chunk is seen, and the cos sums cover every chunk. */
Test(compare, chunked_judge_combines_in_order)
{
    pair p;
    hx_metrics m;
    const int n = 3 * 65536 + 8 * 1000;
    make_pair(&p, REF_F32, n);
    const hx_tol tol = {1e-3, 0, -1}; /* atol only: equal errors, equal ratios */
    const size_t bad[3] = {150000, 70000, 200000}; /* chunks 2, 1, 3: the same error each */
    for (int k = 0; k < 3; k++)
        ((double *)p.ref->data)[bad[k]] = ref_load(REF_F32, p.got->data, bad[k]) + 1.0;
    cr_expect_eq(hx_compare(p.got, p.ref, tol, &m), HX_FAIL_NUMERIC);
    cr_expect_eq(m.n, (size_t)n);
    cr_expect_eq(m.n_bad, 3);
    cr_expect_eq(m.worst, 70000); /* the first of the three equal worst ratios */
    cr_expect_gt(m.cos_diff, 0.0);
    hx_tensor_poison(p.got);
    ref_store(REF_F32, p.got->data, 0, 0.0); /* all but element 0 unwritten */
    cr_expect_eq(hx_compare(p.got, p.ref, tol, &m), HX_FAIL_UNWRITTEN);
    cr_expect_eq(m.n_unwritten, (size_t)n - 1);
    hx_tensors_free(&p.s);
}

Test(compare, headroom_is_err_over_tol)
{
    pair p;
    hx_metrics m;
    make_pair(&p, REF_F32, 64);
    hx_tol tol = {1e-3, 0, -1};
    ((double *)p.ref->data)[10] = ref_load(REF_F32, p.got->data, 10) + 5e-4;
    cr_expect_eq(hx_compare(p.got, p.ref, tol, &m), HX_PASS);
    cr_expect_float_eq(m.headroom, 0.5, 1e-6);
    hx_tensors_free(&p.s);
}

Test(compare, bit_exact_profile_rejects_any_difference)
{
    pair p;
    hx_metrics m;
    make_pair(&p, REF_BF16, 64);
    hx_tol t = hx_default_tol(REF_BF16, 0, 1);
    cr_expect_eq(hx_compare(p.got, p.ref, t, &m), HX_PASS);
    uint16_t *g = p.got->data;
    g[9] ^= 1; /* one ulp */
    cr_expect_eq(hx_compare(p.got, p.ref, t, &m), HX_FAIL_NUMERIC);
    g[9] ^= 1;
    ((double *)p.ref->data)[11] = 0.0;
    g[11] = 0x8000; /* -0 where +0 is expected: equal values, different bits */
    cr_expect_eq(hx_compare(p.got, p.ref, t, &m), HX_FAIL_NUMERIC);
    g[11] = 0x0000;
    cr_expect_eq(hx_compare(p.got, p.ref, t, &m), HX_PASS);
    hx_tensors_free(&p.s);
}

Test(compare, default_profiles)
{
    hx_tol b = hx_default_tol(REF_BF16, 0, 0), h = hx_default_tol(REF_F16, 0, 0),
           l = hx_default_tol(REF_F32, 1, 0);
    cr_expect_eq(b.atol, 1e-3);
    cr_expect_eq(b.rtol, 1.0 / 64);
    cr_expect_eq(b.cos_tol, 5e-6);
    cr_expect_eq(h.atol, 2e-4);
    cr_expect_eq(h.rtol, 1.0 / 512);
    cr_expect_eq(l.atol, 1e-5);
    cr_expect_eq(l.rtol, 1.0 / 8192);
    cr_expect_lt(l.cos_tol, 0);
}

Test(compare, status_severity)
{
    cr_expect_eq(hx_status_worst(HX_PASS, HX_FAIL_NUMERIC), HX_FAIL_NUMERIC);
    cr_expect_eq(hx_status_worst(HX_FAIL_CANARY, HX_FAIL_NUMERIC), HX_FAIL_CANARY);
    cr_expect_eq(hx_status_worst(HX_SKIP_NO_GPU, HX_PASS), HX_SKIP_NO_GPU);
    cr_expect_eq(hx_status_worst(HX_ERROR, HX_FAIL_CANARY), HX_ERROR);
    cr_expect(hx_status_ok(HX_SKIP_UNSUPPORTED));
    cr_expect_not(hx_status_ok(HX_FAIL_UNWRITTEN));
    cr_expect_str_eq(hx_status_name(HX_FAIL_UNWRITTEN), "FAIL_UNWRITTEN");
}
