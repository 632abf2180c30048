/* test_determinism.c - the bit-for-bit comparison behind --determinism and --batch-invariance
 * (hx_bits_diff): equal tensors agree, and every kind of difference a numeric comparison
 * would forgive is caught (one ulp, -0 vs +0, another NaN payload, another dtype or size).
 * The CLI side (reruns, one request alone, the records) is tests/cli_determinism.sh. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "run.h"

static hx_tensors set;

static void cleanup(void)
{
    hx_tensors_free(&set);
}

static hx_tensor *tensor(const char *name, ref_dtype dt, int64_t n)
{
    hx_err e = {0};
    hx_tensor *t = hx_tensors_add(&set, name, dt, 1, &n, &e);
    cr_assert(t, "%s", e.msg);
    for (int64_t i = 0; i < n; i++)
        ref_store(dt, t->data, (size_t)i, sin((double)i));
    return t;
}

Test(bits_diff, equal_tensors_agree, .fini = cleanup)
{
    hx_tensor *a = tensor("a", REF_BF16, 1000), *b = tensor("b", REF_BF16, 1000);
    size_t first = 99;
    cr_expect_eq(hx_bits_diff(a, b, &first), 0);
    cr_expect_eq(first, 0);
}

Test(bits_diff, one_ulp_is_a_difference, .fini = cleanup)
{
    hx_tensor *a = tensor("a", REF_BF16, 1000), *b = tensor("b", REF_BF16, 1000);
    ((uint16_t *)b->data)[617] ^= 1;
    ((uint16_t *)b->data)[901] ^= 1;
    size_t first = 0;
    cr_expect_eq(hx_bits_diff(a, b, &first), 2);
    cr_expect_eq(first, 617, "the first differing element, not the last");
}

Test(bits_diff, signed_zero_and_nan_payloads_differ, .fini = cleanup)
{
    hx_tensor *a = tensor("a", REF_F32, 4), *b = tensor("b", REF_F32, 4);
    float *x = a->data, *y = b->data;
    x[1] = 0.0f, y[1] = -0.0f;                        /* equal as numbers */
    uint32_t q1 = 0x7fc00001u, q2 = 0x7fc00002u;      /* two quiet NaNs */
    memcpy(&x[3], &q1, 4), memcpy(&y[3], &q2, 4);
    size_t first = 0;
    cr_expect_eq(hx_bits_diff(a, b, &first), 2);
    cr_expect_eq(first, 1);
    memcpy(&y[3], &q1, 4);                            /* the same NaN bits: identical */
    y[1] = 0.0f;
    cr_expect_eq(hx_bits_diff(a, b, &first), 0);
}

Test(bits_diff, another_dtype_or_size_differs_everywhere, .fini = cleanup)
{
    hx_tensor *a = tensor("a", REF_F16, 8), *b = tensor("b", REF_BF16, 8), *c = tensor("c", REF_F16, 9);
    size_t first = 5;
    cr_expect_eq(hx_bits_diff(a, b, &first), 8);
    cr_expect_eq(first, 0);
    cr_expect_eq(hx_bits_diff(a, c, &first), 9);
}
