/* test_dsv4.c - DeepSeek V4 sparse decode (SPEC section 10): the 584-byte blocked FP8 format
 * (stride, byte positions, the quantizer's scale bytes, the round trip), the sparse attention
 * against a textbook oracle and the identities of VALIDATION.md (per-scope merge + sink ==
 * one softmax over the union; sink -inf == none; -1 padding and entries past len change
 * nothing; duplicates count twice; empty sets), and the harness path's generated inputs.
 *
 * Byte positions are computed here from the SPEC text, not through ref_dsv4_*_offset, so the
 * format is checked independently of the code that implements it.
 */
#include "ref_mla.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx.h"

enum { D = REF_DSV4_D };

/* ------------------------------------------------------------------ the format */

Test(format, block_stride_and_offsets)
{
    static const struct { int bs; size_t stride; } want[] = {{1, 1152}, {2, 1728}, {64, 37440}};
    for (int i = 0; i < 3; i++) {
        const int bs = want[i].bs;
        const size_t stride = ((size_t)bs * 584 + 575) / 576 * 576;
        cr_assert_eq(stride, want[i].stride);
        cr_assert_eq(ref_dsv4_block_stride(bs), want[i].stride, "bs %d", bs);
        cr_assert(stride >= (size_t)bs * 584 && stride % 576 == 0);
        for (int64_t slot = 0; slot < 3 * bs; slot++) {
            const int64_t blk = slot / bs, o = slot % bs;
            cr_assert_eq(ref_dsv4_data_offset(bs, slot), blk * stride + o * 576, "bs %d slot %lld",
                         bs, (long long)slot);
            cr_assert_eq(ref_dsv4_scale_offset(bs, slot), blk * stride + bs * 576 + o * 8);
        }
    }
}

/* A known row written into one slot lands on exactly the bytes SPEC names, and nowhere else. */
Test(format, byte_layout)
{
    static const int sizes[] = {1, 2, 64};
    float x[D];
    for (int d = 0; d < D; d++)
        x[d] = (float)((d % 2 ? -1 : 1) * (d + 1) * 0.25); /* tile t has amax 16 * (t + 1) */
    for (int si = 0; si < 3; si++) {
        const int bs = sizes[si];
        const size_t stride = ((size_t)bs * 584 + 575) / 576 * 576, bytes = 3 * stride;
        const int64_t slots[2] = {0, 2 * (int64_t)bs - 1}; /* first, and last of block 1 */
        for (int k = 0; k < 2; k++) {
            uint8_t *c = malloc(bytes);
            memset(c, 0xCD, bytes);
            const int64_t slot = slots[k], blk = slot / bs, o = slot % bs;
            ref_dsv4_quantize(x, c, bs, slot);
            const size_t data = blk * stride + o * 576, sc = blk * stride + bs * 576 + o * 8;
            uint8_t *want = malloc(bytes);
            memset(want, 0xCD, bytes);
            for (int t = 0; t < 7; t++) {
                double amax = 16.0 * (t + 1); /* 448 * 2^k >= amax: k = ceil(log2(amax / 448)) */
                int e = -30;
                while (448.0 * ldexp(1.0, e) < amax)
                    e++;
                want[sc + t] = (uint8_t)(e + 127);
                for (int d = 0; d < 64; d++)
                    want[data + 64 * t + d] = ref_f32_to_fp8e4m3(x[64 * t + d] / ldexpf(1.0f, e));
            }
            want[sc + 7] = 0;
            for (int d = 448; d < 512; d++) {
                const uint16_t b = ref_f32_to_bf16(x[d]);
                want[data + 448 + 2 * (d - 448)] = b & 0xFF;
                want[data + 449 + 2 * (d - 448)] = b >> 8;
            }
            for (size_t i = 0; i < bytes; i++)
                cr_assert_eq(c[i], want[i], "bs %d slot %lld: byte %zu is 0x%02x, want 0x%02x", bs,
                             (long long)slot, i, c[i], want[i]);
            free(c);
            free(want);
        }
    }
}

/* ------------------------------------------------------------------ quantizer */

/* The smallest k with 448 * 2^k >= max(amax, 1e-4), by search. */
static int brute_exponent(double amax)
{
    const double a = amax > 1e-4 ? amax : 1e-4;
    int k = -40;
    while (448.0 * ldexp(1.0, k) < a)
        k++;
    return k;
}

Test(quantizer, scale_bytes)
{
    static const struct { double amax; int byte; } fixed[] = {
        {0.0, 105},   {1e-4, 105},  {1e-9, 105},  {448.0, 127}, {447.99, 127},
        {448.0001, 128}, {224.0, 126}, {1.0, 119},  {3.5, 120},   {896.0, 128},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        cr_assert_eq(ref_dsv4_scale_byte(fixed[i].amax), fixed[i].byte, "amax %g: %d, want %d",
                     fixed[i].amax, ref_dsv4_scale_byte(fixed[i].amax), fixed[i].byte);
    for (int i = 0; i < 20000; i++) {
        /* magnitudes from 1e-7 to 1e7, plus exact powers of two times 448 */
        double a = pow(10.0, 14.0 * ref_rng_uniform(7, (uint64_t)i) - 7.0);
        if (i % 10 == 0)
            a = 448.0 * ldexp(1.0, (int)(i / 10 % 40) - 20);
        a = (float)a;
        cr_assert_eq(ref_dsv4_scale_byte(a), brute_exponent(a) + 127, "amax %.9g", a);
    }
}

/* Half an fp8e4m3 step at y (the rounding error bound of RNE), for |y| <= 448. */
static double half_step(double y)
{
    y = fabs(y);
    if (y < 0x1p-6)
        return 0x1p-10; /* subnormals: step 2^-9 */
    int e;
    frexp(y, &e); /* y in [2^(e-1), 2^e): step 2^(e-1-3) */
    return ldexp(1.0, e - 5);
}

Test(quantizer, round_trip)
{
    const int bs = 2;
    uint8_t *c = calloc(1, 4 * ref_dsv4_block_stride(bs));
    static const double tile_sd[7] = {1.0, 0.0, 1e-6, 1e3, 3e-3, 1.0, 40.0};
    for (int r = 0; r < 8; r++) {
        float x[D];
        for (int d = 0; d < D; d++) {
            const double sd = d < 448 ? tile_sd[(d / 64 + r) % 7] : 1.0;
            x[d] =
                ref_bf16_to_f32(ref_f32_to_bf16((float)(sd * ref_rng_normal(11 + r, (uint64_t)d))));
        }
        if (r == 3)
            x[69] = 448.0f * 0.5f; /* tile 1's amax exactly 448 / 2: s = 1/2, code 448 */
        ref_dsv4_quantize(x, c, bs, r);
        double y[D];
        ref_dsv4_dequantize(c, bs, r, y);
        const uint8_t *sc = c + ref_dsv4_scale_offset(bs, r);
        for (int t = 0; t < 7; t++) {
            double amax = 0;
            for (int d = 0; d < 64; d++)
                amax = fmax(amax, fabs(x[64 * t + d]));
            cr_assert_eq(sc[t], brute_exponent(amax) + 127, "row %d tile %d", r, t);
            const double s = ldexp(1.0, sc[t] - 127);
            for (int d = 64 * t; d < 64 * t + 64; d++) {
                cr_assert(fabs(y[d] - x[d]) <= s * half_step(x[d] / s),
                          "row %d dim %d: %.9g -> %.9g", r, d, x[d], y[d]);
                cr_assert(ref_round_to(REF_BF16, y[d]) == y[d], "row %d dim %d not exact in bf16",
                          r, d);
            }
        }
        cr_assert_eq(sc[7], 0);
        for (int d = 448; d < D; d++)
            cr_assert(y[d] == x[d], "rope dim %d not bit-exact", d);
    }
    free(c);
}

/* ------------------------------------------------------------- sparse decode */

enum { T = 6, HQ = 4, WS = 10, WE = 12, BSS = 2, BSE = 64, NBS = 20, NBE = 2 };

typedef struct problem {
    uint16_t q[T * HQ * D];
    uint8_t *cs, *ce;                 /* the two caches, every row written */
    int32_t is[T * WS], ls[T], ie[T * WE], le[T];
    float sink[HQ];
    ref_dsv4_args a;
} problem;

static void problem_init(problem *p, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < T * HQ * D; i++)
        p->q[i] = ref_f32_to_bf16((float)ref_rng_normal(seed, (uint64_t)i));
    p->cs = malloc(NBS * ref_dsv4_block_stride(BSS));
    p->ce = malloc(NBE * ref_dsv4_block_stride(BSE));
    float x[D];
    for (int s = 0; s < NBS * BSS + NBE * BSE; s++) {
        for (int d = 0; d < D; d++)
            x[d] = ref_bf16_to_f32(
                ref_f32_to_bf16((float)ref_rng_normal(seed + 1, (uint64_t)s * D + d)));
        if (s < NBS * BSS)
            ref_dsv4_quantize(x, p->cs, BSS, s);
        else
            ref_dsv4_quantize(x, p->ce, BSE, s - NBS * BSS);
    }
    /* token t: some -1 holes, duplicates, len below the width, one token with no extra */
    for (int t = 0; t < T; t++) {
        p->ls[t] = t == 0 ? 1 : WS - t % 3;
        for (int k = 0; k < WS; k++)
            p->is[t * WS + k] =
                k % 4 == 3
                    ? -1
                    : (int32_t)ref_rng_range(seed + 2, (uint64_t)(t * WS + k), 0, NBS * BSS - 1);
        p->le[t] = t == 2 ? 0 : WE - t;
        for (int k = 0; k < WE; k++)
            p->ie[t * WE + k] =
                k == 5 ? p->ie[t * WE + 1]
                       : (int32_t)ref_rng_range(seed + 3, (uint64_t)(t * WE + k), 0, NBE * BSE - 1);
    }
    for (int h = 0; h < HQ; h++)
        p->sink[h] = (float)(2.0 * ref_rng_normal(seed + 4, (uint64_t)h));
    p->a = (ref_dsv4_args){
        .tokens = T, .hq = HQ, .q_dtype = REF_BF16, .q = p->q,
        .swa = {p->cs, NBS, BSS, p->is, p->ls, WS},
        .extra = {p->ce, NBE, BSE, p->ie, p->le, WE},
        .sink = p->sink, .scale = 1.0 / sqrt(512.0), .mode = REF_EXACT, .p_dtype = REF_F32,
    };
}

static void problem_free(problem *p)
{
    free(p->cs);
    free(p->ce);
}

static void run(const ref_dsv4_args *a, double *out, double *lse)
{
    const int err = ref_dsv4_sparse_decode(a, out, lse);
    cr_assert(err == REF_OK, "%s", ref_strerror(err));
}

/* The textbook definition in long double: every used entry of both scopes, in any order. */
static void oracle(const ref_dsv4_args *a, double *out, double *lse)
{
    for (int t = 0; t < a->tokens; t++) {
        int n = 0;
        double *rows = malloc((size_t)(a->swa.width + a->extra.width + 1) * D * sizeof *rows);
        const ref_dsv4_scope *sc[2] = {&a->swa, &a->extra};
        for (int s = 0; s < 2; s++)
            for (int k = 0; k < sc[s]->len[t]; k++) {
                const int32_t i = sc[s]->idx[t * sc[s]->width + k];
                if (i != -1)
                    ref_dsv4_dequantize(sc[s]->cache, sc[s]->block_size, i, rows + (size_t)n++ * D);
            }
        for (int h = 0; h < a->hq; h++) {
            long double *sv = malloc(((size_t)n + 1) * sizeof *sv), mx = -INFINITY, den = 0;
            for (int j = 0; j < n; j++) {
                long double dot = 0;
                for (int d = 0; d < D; d++)
                    dot +=
                        (long double)ref_load(a->q_dtype, a->q, ((size_t)t * a->hq + h) * D + d) *
                        rows[(size_t)j * D + d];
                sv[j] = a->scale * dot;
                mx = sv[j] > mx ? sv[j] : mx;
            }
            for (int j = 0; j < n; j++)
                den += expl(sv[j] - mx);
            const long double keys = den;
            if (a->sink && n > 0)
                den += expl((long double)a->sink[h] - mx);
            for (int d = 0; d < D; d++) {
                long double acc = 0;
                for (int j = 0; j < n; j++)
                    acc += expl(sv[j] - mx) * rows[(size_t)j * D + d];
                out[((size_t)t * a->hq + h) * D + d] = n ? (double)(acc / den) : 0.0;
            }
            lse[(size_t)h * a->tokens + t] = n ? (double)(mx + logl(keys)) : -INFINITY;
            free(sv);
        }
        free(rows);
    }
}

static void expect_close(const double *x, const double *y, size_t n, double tol, const char *tag)
{
    for (size_t i = 0; i < n; i++) {
        if (isinf(y[i])) {
            cr_assert(x[i] == y[i], "%s[%zu] = %g, want %g", tag, i, x[i], y[i]);
            continue;
        }
        cr_assert(fabs(x[i] - y[i]) <= tol * fmax(1.0, fabs(y[i])), "%s[%zu] = %.17g, want %.17g",
                  tag, i, x[i], y[i]);
    }
}

static double out_[T * HQ * D], lse_[HQ * T], out2[T * HQ * D], lse2[HQ * T];

Test(sparse, oracle)
{
    problem p;
    problem_init(&p, 21);
    run(&p.a, out_, lse_);
    oracle(&p.a, out2, lse2);
    expect_close(out_, out2, T * HQ * D, 1e-12, "out");
    expect_close(lse_, lse2, HQ * T, 1e-12, "lse");
    problem_free(&p);
}

/* Per scope (sink off), merged with the section 0 merge, then the sink once. */
Test(sparse, per_scope_merge_then_sink)
{
    problem p;
    problem_init(&p, 22);
    run(&p.a, out_, lse_);
    static double os[T * HQ * D], ls[HQ * T], oe[T * HQ * D], le[HQ * T];
    ref_dsv4_args a = p.a;
    const int32_t zero[T] = {0};
    a.sink = NULL;
    a.extra.len = zero;
    run(&a, os, ls);
    a = p.a;
    a.sink = NULL;
    a.swa.len = zero;
    run(&a, oe, le);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < HQ; h++) {
            double o[D], l;
            const size_t r = ((size_t)t * HQ + h) * D, li = (size_t)h * T + t;
            ref_merge_row(D, os + r, ls[li], oe + r, le[li], o, &l);
            ref_apply_sink_row(D, o, l, p.sink[h]);
            cr_assert(fabs(l - lse_[li]) <= 1e-12 * fmax(1, fabs(l)), "lse token %d head %d", t, h);
            for (int d = 0; d < D; d++)
                cr_assert(fabs(o[d] - out_[r + d]) <= 1e-12, "token %d head %d dim %d", t, h, d);
        }
    problem_free(&p);
}

Test(sparse, sink_infinities)
{
    problem p;
    problem_init(&p, 23);
    ref_dsv4_args a = p.a;
    a.sink = NULL;
    run(&a, out_, lse_);
    float s[HQ];
    for (int h = 0; h < HQ; h++)
        s[h] = -INFINITY;
    a.sink = s;
    run(&a, out2, lse2);
    cr_assert(!memcmp(out_, out2, sizeof out_) && !memcmp(lse_, lse2, sizeof lse_),
              "sink = -inf differs from no sink");
    for (int h = 0; h < HQ; h++)
        s[h] = INFINITY;
    run(&a, out2, lse2);
    for (size_t i = 0; i < T * HQ * D; i++)
        cr_assert(out2[i] == 0.0, "sink = +inf left out[%zu] = %g", i, out2[i]);
    cr_assert(!memcmp(lse_, lse2, sizeof lse_), "the sink changed lse");
    problem_free(&p);
}

/* Wider rows with -1 holes and, past len, indices that are in range (rows full of NaN bytes):
 * bit-identical results. */
Test(sparse, padding_and_entries_past_len)
{
    problem p;
    problem_init(&p, 24);
    run(&p.a, out_, lse_);
    enum { W2 = 3 * WE };
    int32_t ie[T * W2], le[T];
    const int64_t nan_slot = NBE * BSE; /* one more block, all 0xFF */
    uint8_t *ce = malloc((NBE + 1) * ref_dsv4_block_stride(BSE));
    memcpy(ce, p.ce, NBE * ref_dsv4_block_stride(BSE));
    memset(ce + NBE * ref_dsv4_block_stride(BSE), 0xFF, ref_dsv4_block_stride(BSE));
    for (int t = 0; t < T; t++) {
        int k2 = 0;
        for (int k = 0; k < p.le[t]; k++) {
            ie[t * W2 + k2++] = -1;
            ie[t * W2 + k2++] = p.ie[t * WE + k];
        }
        le[t] = k2;
        for (; k2 < W2; k2++)
            ie[t * W2 + k2] = (int32_t)(nan_slot + k2 % BSE);
    }
    ref_dsv4_args a = p.a;
    a.extra = (ref_dsv4_scope){ce, NBE + 1, BSE, ie, le, W2};
    run(&a, out2, lse2);
    cr_assert(!memcmp(out_, out2, sizeof out_) && !memcmp(lse_, lse2, sizeof lse_),
              "padding or entries past len changed the result");
    free(ce);
    problem_free(&p);
}

/* The same slot twice in one row: two equal logits, so out is unchanged and lse grows by
 * log 2; across scopes, a slot of equal content counts twice as well. */
Test(sparse, duplicates_count_twice)
{
    problem p;
    problem_init(&p, 25);
    int32_t one[T], two[T], i1[T * WE], i2[T * WE], none[T] = {0};
    for (int t = 0; t < T; t++) {
        one[t] = 1;
        two[t] = 2;
        i1[t * WE] = i2[t * WE] = i2[t * WE + 1] = 7 + t;
    }
    ref_dsv4_args a = p.a;
    a.sink = NULL;
    a.swa.len = none;
    a.extra.idx = i1;
    a.extra.len = one;
    run(&a, out_, lse_);
    a.extra.idx = i2;
    a.extra.len = two;
    run(&a, out2, lse2);
    for (size_t i = 0; i < T * HQ; i++)
        cr_assert(fabs(lse2[i] - (lse_[i] + log(2.0))) <= 1e-13 * fmax(1, fabs(lse_[i])), "lse %zu",
                  i);
    for (size_t i = 0; i < T * HQ * D; i++)
        cr_assert(out2[i] == out_[i], "out %zu", i);

    /* the same row in both scopes == one scope holding it twice */
    uint8_t *cs = malloc(ref_dsv4_block_stride(BSS) * NBS);
    memcpy(cs, p.cs, ref_dsv4_block_stride(BSS) * NBS);
    int32_t is[T * WS];
    for (int t = 0; t < T; t++) {
        double row[D];
        float x[D];
        ref_dsv4_dequantize(p.ce, BSE, 7 + t, row);
        for (int d = 0; d < D; d++)
            x[d] = (float)row[d];
        ref_dsv4_quantize(x, cs, BSS, t);
        is[t * WS] = t;
    }
    a.swa = (ref_dsv4_scope){cs, NBS, BSS, is, one, WS};
    a.extra.idx = i1;
    a.extra.len = one;
    run(&a, out_, lse_);
    cr_assert(!memcmp(out_, out2, sizeof out_) && !memcmp(lse_, lse2, sizeof lse_),
              "a row in both scopes differs from the row twice in one");
    free(cs);
    problem_free(&p);
}

/* Both scopes empty (len 0, or every used entry -1): out = 0, lse = -inf, with or without a
 * finite sink; a +inf sink keeps the 0. */
Test(sparse, empty_sets)
{
    problem p;
    problem_init(&p, 26);
    int32_t zero[T] = {0}, full_s[T], full_e[T], neg_s[T * WS], neg_e[T * WE];
    for (int t = 0; t < T; t++) {
        full_s[t] = WS;
        full_e[t] = WE;
    }
    for (int i = 0; i < T * WS; i++)
        neg_s[i] = -1;
    for (int i = 0; i < T * WE; i++)
        neg_e[i] = -1;
    float sinks[3][HQ];
    for (int h = 0; h < HQ; h++) {
        sinks[0][h] = p.sink[h];
        sinks[1][h] = INFINITY;
        sinks[2][h] = -INFINITY;
    }
    for (int form = 0; form < 2; form++)
        for (int s = 0; s < 4; s++) {
            ref_dsv4_args a = p.a;
            if (form == 0) {
                a.swa.len = zero;
                a.extra.len = zero;
            } else {
                a.swa = (ref_dsv4_scope){p.cs, NBS, BSS, neg_s, full_s, WS};
                a.extra = (ref_dsv4_scope){p.ce, NBE, BSE, neg_e, full_e, WE};
            }
            a.sink = s < 3 ? sinks[s] : NULL;
            run(&a, out_, lse_);
            for (size_t i = 0; i < T * HQ * D; i++)
                cr_assert(out_[i] == 0.0, "form %d sink %d: out[%zu] = %g", form, s, i, out_[i]);
            for (size_t i = 0; i < T * HQ; i++)
                cr_assert(lse_[i] == -INFINITY, "form %d sink %d: lse %g", form, s, lse_[i]);
        }
    /* one lonely token among others: only its row is empty */
    ref_dsv4_args a = p.a;
    int32_t ls[T], le[T];
    memcpy(ls, p.ls, sizeof ls);
    memcpy(le, p.le, sizeof le);
    ls[3] = le[3] = 0;
    a.swa.len = ls;
    a.extra.len = le;
    run(&a, out_, lse_);
    for (int h = 0; h < HQ; h++) {
        cr_assert(lse_[(size_t)h * T + 3] == -INFINITY);
        cr_assert(isfinite(lse_[(size_t)h * T + 2]));
        for (int d = 0; d < D; d++)
            cr_assert(out_[((size_t)3 * HQ + h) * D + d] == 0.0);
    }
    problem_free(&p);
}

/* Emulation changes P only: every dequantized value is exact in bf16, so the logits and lse
 * are bit-identical, and P in f32 moves out by f32 rounding alone. */
Test(sparse, emulate_mode)
{
    problem p;
    problem_init(&p, 27);
    run(&p.a, out_, lse_);
    ref_dsv4_args a = p.a;
    a.mode = REF_EMULATE;
    a.p_dtype = REF_F32;
    run(&a, out2, lse2);
    cr_assert(!memcmp(lse_, lse2, sizeof lse_));
    expect_close(out2, out_, T * HQ * D, 1e-6, "out (P in f32)");
    a.p_dtype = REF_BF16;
    run(&a, out2, lse2);
    cr_assert(!memcmp(lse_, lse2, sizeof lse_));
    double diff = 0;
    for (size_t i = 0; i < T * HQ * D; i++)
        diff = fmax(diff, fabs(out2[i] - out_[i]));
    cr_assert(diff > 0 && diff <= 0x1p-8 * 4.0, "P in bf16 moved out by %g", diff);
    problem_free(&p);
}

Test(sparse, bad_arguments)
{
    problem p;
    problem_init(&p, 28);
    ref_dsv4_args a;
    int32_t bad[T * WE], len[T];
#define EXPECT_ERR(code, mutate)                                                    \
    do {                                                                            \
        a = p.a;                                                                    \
        memcpy(bad, p.ie, sizeof bad);                                              \
        memcpy(len, p.le, sizeof len);                                              \
        a.extra.idx = bad;                                                          \
        a.extra.len = len;                                                          \
        mutate;                                                                     \
        const int e_ = ref_dsv4_sparse_decode(&a, out_, lse_);                      \
        cr_assert(e_ == (code), "%s: got %s", #mutate, ref_strerror(e_));           \
    } while (0)
    EXPECT_ERR(REF_OK, (void)0);
    EXPECT_ERR(REF_ERANGE, bad[WE + 2] = NBE * BSE);
    EXPECT_ERR(REF_ERANGE, bad[WE + 2] = -2);
    EXPECT_ERR(REF_OK, (len[1] = 2, bad[WE + 2] = NBE * BSE)); /* past len: never read */
    EXPECT_ERR(REF_ESHAPE, len[4] = WE + 1);
    EXPECT_ERR(REF_ESHAPE, len[4] = -1);
    EXPECT_ERR(REF_EINVAL, a.hq = 0);
    EXPECT_ERR(REF_EINVAL, a.tokens = -1);
    EXPECT_ERR(REF_EINVAL, a.swa.block_size = 0);
    EXPECT_ERR(REF_EINVAL, a.extra.cache = NULL);
    EXPECT_ERR(REF_EDTYPE, a.q_dtype = REF_I32);
#undef EXPECT_ERR
    cr_assert(ref_dsv4_sparse_decode(NULL, out_, lse_) == REF_EINVAL);
    problem_free(&p);
}

/* ------------------------------------------------------ the harness path's inputs */

static char tmp_ini[64];

static void rm_tmp(void)
{
    if (tmp_ini[0])
        unlink(tmp_ini);
}

/* SPEC's case design: SWA = the last min(p + 1, window) positions, the extra scope
 * min((p + 1) / ratio, topk) distinct entries, -1 padding, len = count; every indexed row
 * decodes to finite values and every other row of both caches to NaN; check_inputs accepts
 * the result. */
Test(path, generated_inputs, .fini = rm_tmp)
{
    static const char text[] =
        "[t]\npath = dsv4_sparse_decode\nheads_q = 8\npositions = 0,2,3,126,127,130,700,5000\n"
        "window = 16\ntopk = 40\ncompress_ratio = 4\nswa_block_size = 8\nextra_block_size = 2\n";
    strcpy(tmp_ini, "/tmp/test_dsv4_XXXXXX");
    const int fd = mkstemp(tmp_ini);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    hx_caselist l = {0};
    hx_err e = {0};
    cr_assert_eq(hx_cases_load(tmp_ini, 0, &l, &e), HX_OK, "%s", e.msg);
    const hx_case *c = &l.v[0];
    hx_tensors in = {0};
    cr_assert_eq(c->path->make_inputs(c, &in, &e), HX_OK, "%s", e.msg);
    cr_assert_eq(c->path->check_inputs(c, &in, &e), HX_OK, "%s", e.msg);

    const char *scope[2] = {"swa", "extra"};
    const int bs[2] = {8, 2}, width[2] = {16, 40};
    for (int s = 0; s < 2; s++) {
        char n[32];
        snprintf(n, sizeof n, "%s_cache", scope[s]);
        const hx_tensor *cache = hx_tensors_get(&in, n);
        snprintf(n, sizeof n, "%s_idx", scope[s]);
        const int32_t *idx = hx_tensors_get(&in, n)->data;
        snprintf(n, sizeof n, "%s_len", scope[s]);
        const int32_t *len = hx_tensors_get(&in, n)->data;
        const int64_t slots = cache->shape[0] * bs[s];
        char *indexed = calloc((size_t)slots, 1);
        for (int t = 0; t < 8; t++) {
            const int p = c->positions.v[t];
            const int want =
                s == 0 ? (p + 1 < 16 ? p + 1 : 16) : ((p + 1) / 4 < 40 ? (p + 1) / 4 : 40);
            cr_assert_eq(len[t], want, "%s token %d (p %d): len %d", scope[s], t, p, len[t]);
            for (int k = 0; k < width[s]; k++) {
                const int32_t i = idx[t * width[s] + k];
                if (k >= len[t]) {
                    cr_assert_eq(i, -1, "%s token %d entry %d is not padding", scope[s], t, k);
                    continue;
                }
                cr_assert(i >= 0 && i < slots);
                cr_assert(!indexed[i], "%s slot %d indexed twice", scope[s], i);
                indexed[i] = 1;
                /* SWA: position first + k sits at offset (first + k) % bs */
                if (s == 0)
                    cr_assert_eq(i % 8, (p - len[t] + 1 + k) % 8, "swa token %d entry %d", t, k);
            }
        }
        for (int64_t i = 0; i < slots; i++) {
            double row[D];
            ref_dsv4_dequantize(cache->data, bs[s], i, row);
            int finite = 0;
            for (int d = 0; d < D; d++)
                finite += isfinite(row[d]) != 0;
            cr_assert_eq(finite, indexed[i] ? D : 0, "%s slot %lld: %d finite dims", scope[s],
                         (long long)i, finite);
        }
        free(indexed);
    }
    /* check_inputs refuses an index outside the cache and a length past the row width */
    int32_t *ie = hx_tensors_get(&in, "extra_idx")->data,
            *le = hx_tensors_get(&in, "extra_len")->data;
    const int32_t keep = ie[7 * 40];
    ie[7 * 40] = (int32_t)(hx_tensors_get(&in, "extra_cache")->shape[0] * 2);
    cr_assert_eq(c->path->check_inputs(c, &in, &e), HX_ECASE);
    cr_assert(strstr(e.msg, "extra_idx[7][0]"), "%s", e.msg);
    ie[7 * 40] = keep;
    le[7] = 41;
    cr_assert_eq(c->path->check_inputs(c, &in, &e), HX_ECASE);
    cr_assert(strstr(e.msg, "extra_len[7]"), "%s", e.msg);
    hx_tensors_free(&in);
    hx_cases_free(&l);
}
