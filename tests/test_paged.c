/* test_paged.c - the paged KV cache and the paths over it (SPEC sections 0, 1, 2, 5, 6, 7):
 * layout addressing, cache_write / gather_cache round trips, fp8 quantization, and the
 * identities of VALIDATION.md: paged (permuted table) == paged (identity table) == contiguous
 * mha_varlen; nhd == hnd == shuffled; chunked extend == one-pass extend for any budget;
 * prefill == extend with no context == mixed with one prefill request; decode == extend with
 * one new token; mixed == its routed decomposition. Then the path descriptors through the
 * harness API: NaN-filled unused slots, 64-bit offsets in a 32768-block pool, case checks.
 *
 * The contiguous yardstick is ref_mha_varlen over K/V computed here from the logical rows
 * (fp8: fp8(x / scale) * scale) without any cache addressing, so a wrong index cannot cancel.
 * Caches are NaN everywhere no token was written: any read past a length shows in the output.
 */
#include "hx_kvcache.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCALE (1.0 / 64)

/* ------------------------------------------------------------------- fixtures */

/* n elements of dt, N(0, sd) from the RNG keyed by key. */
static void *rows_new(ref_dtype dt, size_t n, uint64_t key, double sd)
{
    void *p = malloc(n * ref_dtype_size(dt) + 1);
    for (size_t i = 0; i < n; i++)
        ref_store(dt, p, i, sd * ref_rng_normal(key, i));
    return p;
}

/* What the cache holds for logical value x (src dtype), read back exactly. */
static double stored_value(ref_dtype kv, double x)
{
    if (kv == REF_FP8E4M3)
        return ref_round_to(REF_FP8E4M3, x / SCALE) * (double)(float)SCALE;
    return ref_round_to(kv, x);
}

enum { ALLOC_IDENTITY, ALLOC_PERMUTED, ALLOC_HIGH };

typedef struct fix {
    ref_kv_cache c;
    int32_t *bt; /* [n, max_blocks], unused entries -1 */
    int max_blocks;
} fix;

static void fix_free(fix *f)
{
    free(f->c.k);
    free(f->c.v);
    free(f->bt);
}

static void fill_nan(ref_dtype dt, void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ref_store(dt, p, i, NAN);
}

/* A cache of n sequences of lens[b] tokens, blocks handed out per alloc from a pool with
 * `extra` spare blocks, NaN everywhere, then the rows k, v [sum(lens), heads, d] (src dtype)
 * written by ref_cache_write. */
static void fix_build(fix *f, ref_kv_layout layout, ref_dtype dt, int bs, int heads, int d, int n,
                      const int32_t *lens, int alloc, int extra, ref_dtype src, const void *k,
                      const void *v)
{
    int needed = 0, total = 0;
    f->max_blocks = 1;
    for (int b = 0; b < n; b++) {
        const int nb = (lens[b] + bs - 1) / bs;
        needed += nb;
        total += lens[b];
        if (nb > f->max_blocks)
            f->max_blocks = nb;
    }
    const int pool = needed + extra;
    int32_t *ids = malloc(((size_t)pool + 1) * sizeof *ids);
    for (int i = 0; i < pool; i++)
        ids[i] = alloc == ALLOC_HIGH ? pool - 1 - i : i;
    if (alloc == ALLOC_PERMUTED)
        for (int i = pool - 1; i > 0; i--) {
            const int j = (int)ref_rng_range(0xB10C, (uint64_t)i, 0, i), t = ids[i];
            ids[i] = ids[j];
            ids[j] = t;
        }
    f->c = (ref_kv_cache){.layout = layout, .dtype = dt, .num_blocks = pool, .block_size = bs,
                          .heads = heads, .head_dim = d, .k_scale = (float)SCALE,
                          .v_scale = (float)SCALE};
    const size_t numel = ref_kv_numel(&f->c);
    f->c.k = malloc(numel * ref_dtype_size(dt));
    f->c.v = malloc(numel * ref_dtype_size(dt));
    fill_nan(dt, f->c.k, numel);
    fill_nan(dt, f->c.v, numel);
    f->bt = malloc((size_t)n * f->max_blocks * sizeof *f->bt);
    int64_t *slots = malloc(((size_t)total + 1) * sizeof *slots);
    for (int b = 0, next = 0, i = 0; b < n; b++) {
        for (int j = 0; j < f->max_blocks; j++)
            f->bt[b * f->max_blocks + j] = j < (lens[b] + bs - 1) / bs ? ids[next++] : -1;
        for (int p = 0; p < lens[b]; p++)
            slots[i++] = (int64_t)f->bt[b * f->max_blocks + p / bs] * bs + p % bs;
    }
    cr_assert_eq(ref_cache_write(&f->c, total, src, k, v, slots), REF_OK);
    free(slots);
    free(ids);
}

/* Exactly representable f64 copy of n elements. */
static double *to_f64(ref_dtype dt, const void *p, size_t n)
{
    double *o = malloc((n + 1) * sizeof *o);
    for (size_t i = 0; i < n; i++)
        o[i] = ref_load(dt, p, i);
    return o;
}

static void expect_same(const double *a, const double *b, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(a[i] == b[i] || (isnan(a[i]) && isnan(b[i])), "%s: element %zu: %.17g vs %.17g",
                  what, i, a[i], b[i]);
}

static void expect_close(const double *a, const double *b, size_t n, double tol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(a[i] == b[i] || fabs(a[i] - b[i]) <= tol, "%s: element %zu: %.17g vs %.17g",
                  what, i, a[i], b[i]);
}

static const char *const layout_names[] = {"nhd", "hnd", "shuffled"};

static int layout_ok(ref_kv_layout l, ref_dtype dt, int bs, int d)
{
    const int x = ref_kv_x(dt);
    return l != REF_KV_SHUFFLED || (bs % x == 0 && d % x == 0);
}

/* ------------------------------------------------------------------ addressing */

Test(kvcache, index_coords_roundtrip)
{
    static const ref_dtype dts[] = {REF_BF16, REF_FP8E4M3};
    for (int l = 0; l < 3; l++)
        for (int t = 0; t < 2; t++) {
            ref_kv_cache c = {.layout = (ref_kv_layout)l, .dtype = dts[t], .num_blocks = 3,
                              .block_size = 32, .heads = 3, .head_dim = 48};
            const size_t n = ref_kv_numel(&c);
            unsigned char *seen = calloc(n, 1);
            for (int is_v = 0; is_v < 2; is_v++) {
                memset(seen, 0, n);
                for (int64_t blk = 0; blk < 3; blk++)
                    for (int o = 0; o < 32; o++)
                        for (int h = 0; h < 3; h++)
                            for (int d = 0; d < 48; d++) {
                                const size_t i = ref_kv_index(&c, is_v, blk, o, h, d);
                                cr_assert(i < n && !seen[i], "%s: index %zu twice", layout_names[l], i);
                                seen[i] = 1;
                                int64_t b2;
                                int o2, h2, d2;
                                ref_kv_coords(&c, is_v, i, &b2, &o2, &h2, &d2);
                                cr_assert(b2 == blk && o2 == o && h2 == h && d2 == d,
                                          "%s v%d: (%lld %d %d %d) -> %zu -> (%lld %d %d %d)",
                                          layout_names[l], is_v, (long long)blk, o, h, d, i,
                                          (long long)b2, o2, h2, d2);
                            }
            }
            free(seen);
        }
}

/* SPEC section 0's table, written out element by element. */
Test(kvcache, layout_formulas)
{
    ref_kv_cache c = {.dtype = REF_BF16, .num_blocks = 4, .block_size = 16, .heads = 2,
                      .head_dim = 32};
    const int64_t n = 3, N = 4, bs = 16, H = 2, D = 32, x = 8;
    const int o = 13, h = 1, d = 21;
    c.layout = REF_KV_NHD;
    cr_assert_eq(ref_kv_index(&c, 0, n, o, h, d), (size_t)(((n * bs + o) * H + h) * D + d));
    c.layout = REF_KV_HND;
    cr_assert_eq(ref_kv_index(&c, 1, n, o, h, d), (size_t)(((n * H + h) * bs + o) * D + d));
    c.layout = REF_KV_SHUFFLED;
    cr_assert_eq(ref_kv_index(&c, 0, n, o, h, d),
                 (size_t)((((n * H + h) * (D / x) + d / x) * bs + o) * x + d % x));
    cr_assert_eq(ref_kv_index(&c, 1, n, o, h, d),
                 (size_t)((((n * H + h) * (bs / x) + o / x) * D + d) * x + o % x));
    int64_t s[5];
    cr_assert_eq(ref_kv_shape(&c, 0, s), 5);
    cr_assert(s[0] == N && s[1] == H && s[2] == D / x && s[3] == bs && s[4] == x);
    cr_assert_eq(ref_kv_shape(&c, 1, s), 5);
    cr_assert(s[0] == N && s[1] == H && s[2] == bs / x && s[3] == D && s[4] == x);
    cr_assert_eq(ref_kv_x(REF_FP8E4M3), 16);
    cr_assert_eq(ref_kv_x(REF_F16), 8);
}

Test(kvcache, check_rejects)
{
    char buf[4];
    ref_kv_cache c = {.layout = REF_KV_SHUFFLED, .dtype = REF_FP8E4M3, .num_blocks = 1,
                      .block_size = 16, .heads = 1, .head_dim = 64, .k_scale = 1, .v_scale = 1,
                      .k = buf, .v = buf};
    cr_assert_eq(ref_kv_check(&c), REF_OK);
    c.head_dim = 56; /* a multiple of 8 (bf16's x) but not of 16 (fp8's) */
    cr_assert_eq(ref_kv_check(&c), REF_ESHAPE);
    c.dtype = REF_BF16;
    cr_assert_eq(ref_kv_check(&c), REF_OK);
    c.block_size = 12;
    cr_assert_eq(ref_kv_check(&c), REF_ESHAPE);
    c.layout = REF_KV_NHD;
    cr_assert_eq(ref_kv_check(&c), REF_OK);
    c.dtype = REF_F32;
    cr_assert_eq(ref_kv_check(&c), REF_EDTYPE);
    c.dtype = REF_FP8E4M3;
    c.v_scale = 0;
    cr_assert_eq(ref_kv_check(&c), REF_EINVAL);
    c.v_scale = INFINITY;
    cr_assert_eq(ref_kv_check(&c), REF_EINVAL);
}

/* ---------------------------------------------------------- cache_write / gather */

/* Written rows come back bit-exactly (fp8: as fp8(x / scale) * scale rounded to bf16), every
 * byte not written is unchanged, and -1 skips, in every layout and dtype. */
Test(cache_write, gather_roundtrip)
{
    static const ref_dtype dts[] = {REF_BF16, REF_F16, REF_FP8E4M3};
    const int heads = 2, d = 32, bs = 16, nblocks = 6, t = 40;
    const size_t row = (size_t)heads * d;
    for (int l = 0; l < 3; l++)
        for (int ti = 0; ti < 3; ti++) {
            const ref_dtype kv = dts[ti], src = kv == REF_F16 ? REF_F16 : REF_BF16;
            ref_kv_cache c = {.layout = (ref_kv_layout)l, .dtype = kv, .num_blocks = nblocks,
                              .block_size = bs, .heads = heads, .head_dim = d,
                              .k_scale = (float)SCALE, .v_scale = (float)SCALE};
            const size_t numel = ref_kv_numel(&c), bytes = numel * ref_dtype_size(kv);
            /* old contents: arbitrary bytes */
            c.k = malloc(bytes);
            c.v = malloc(bytes);
            for (size_t i = 0; i < bytes; i++) {
                ((unsigned char *)c.k)[i] = (unsigned char)ref_rng_u64(1, i);
                ((unsigned char *)c.v)[i] = (unsigned char)ref_rng_u64(2, i);
            }
            unsigned char *k0 = malloc(bytes), *v0 = malloc(bytes);
            memcpy(k0, c.k, bytes);
            memcpy(v0, c.v, bytes);
            void *k = rows_new(src, (size_t)t * row, 3, 1.0), *v = rows_new(src, (size_t)t * row, 4, 1.0);
            /* tokens to scattered slots; every fifth token skipped */
            int64_t slots[40];
            for (int i = 0; i < t; i++)
                slots[i] = i % 5 == 4 ? -1 : (int64_t)((i * 37 + 11) % (nblocks * bs));
            cr_assert_eq(ref_cache_write(&c, t, src, k, v, slots), REF_OK);

            /* every element: written ones hold the stored value, the rest their old bytes */
            const size_t es = ref_dtype_size(kv);
            unsigned char *written = calloc(numel, 1);
            for (int i = 0; i < t; i++) {
                if (slots[i] < 0)
                    continue;
                for (int h = 0; h < heads; h++)
                    for (int dd = 0; dd < d; dd++) {
                        const size_t ki = ref_kv_index(&c, 0, slots[i] / bs, (int)(slots[i] % bs), h, dd);
                        const size_t vi = ref_kv_index(&c, 1, slots[i] / bs, (int)(slots[i] % bs), h, dd);
                        const size_t si = (size_t)i * row + (size_t)h * d + dd;
                        written[ki] |= 1;
                        written[vi] |= 2;
                        const double want_k = stored_value(kv, ref_load(src, k, si));
                        const double want_v = stored_value(kv, ref_load(src, v, si));
                        const double sc = kv == REF_FP8E4M3 ? (double)(float)SCALE : 1.0;
                        cr_assert_eq(ref_load(kv, c.k, ki) * sc, want_k);
                        cr_assert_eq(ref_load(kv, c.v, vi) * sc, want_v);
                    }
            }
            for (size_t i = 0; i < numel; i++) {
                if (!(written[i] & 1))
                    cr_assert(memcmp((unsigned char *)c.k + i * es, k0 + i * es, es) == 0,
                              "%s %s: k element %zu changed", layout_names[l], ref_dtype_name(kv), i);
                if (!(written[i] & 2))
                    cr_assert(memcmp((unsigned char *)c.v + i * es, v0 + i * es, es) == 0,
                              "%s %s: v element %zu changed", layout_names[l], ref_dtype_name(kv), i);
            }

            /* gather_cache over a table that lists the blocks in order: token s is slot s */
            int32_t bt[6];
            for (int j = 0; j < nblocks; j++)
                bt[j] = j;
            const int32_t starts[1] = {0}, lens[1] = {nblocks * bs}, cu[2] = {0, nblocks * bs};
            double *gk = malloc((size_t)nblocks * bs * row * sizeof *gk);
            double *gv = malloc((size_t)nblocks * bs * row * sizeof *gv);
            cr_assert_eq(ref_gather_cache(&c, 1, bt, nblocks, starts, lens, cu, src, gk, gv), REF_OK);
            for (int i = 0; i < t; i++)
                for (size_t j = 0; slots[i] >= 0 && j < row; j++) {
                    const size_t si = (size_t)i * row + j, gi = (size_t)slots[i] * row + j;
                    cr_assert_eq(gk[gi], ref_round_to(src, stored_value(kv, ref_load(src, k, si))));
                    cr_assert_eq(gv[gi], ref_round_to(src, stored_value(kv, ref_load(src, v, si))));
                    if (kv != REF_FP8E4M3) /* same dtype: the row itself, bit for bit */
                        cr_assert_eq(gk[gi], ref_load(src, k, si));
                }
            free(gk);
            free(gv);
            free(written);
            free(k);
            free(v);
            free(k0);
            free(v0);
            free(c.k);
            free(c.v);
        }
}

/* A long write from a 16-bit source goes through a table of its 65536 codes: every code,
 * each in a slot of its own, stores what the per-element rule (ref_store) stores, for fp8 with
 * a scale that is not a power of two and for a 16-bit cache of the other type. */
Test(cache_write, long_writes_match_the_element_rule)
{
    const int t = 1024, d = 64; /* t * d = 65536: every bf16 or f16 code once */
    uint16_t *rows = malloc((size_t)t * d * sizeof *rows);
    for (int i = 0; i < t * d; i++)
        rows[i] = (uint16_t)i;
    int64_t *slots = malloc((size_t)t * sizeof *slots);
    for (int i = 0; i < t; i++)
        slots[i] = (i * 7) % t;
    static const struct {
        ref_dtype src, dst;
    } pairs[] = {{REF_BF16, REF_FP8E4M3}, {REF_F16, REF_FP8E4M3}, {REF_BF16, REF_F16}, {REF_F16, REF_BF16}};
    for (int p = 0; p < 4; p++) {
        const size_t es = ref_dtype_size(pairs[p].dst);
        ref_kv_cache c = {.layout = REF_KV_HND, .dtype = pairs[p].dst, .num_blocks = t / 16,
                          .block_size = 16, .heads = 1, .head_dim = d, .k_scale = 0.03f,
                          .v_scale = 1.0f};
        c.k = malloc((size_t)t * d * es);
        c.v = malloc((size_t)t * d * es);
        cr_assert_eq(ref_cache_write(&c, t, pairs[p].src, rows, rows, slots), REF_OK);
        for (int i = 0; i < t; i++)
            for (int j = 0; j < d; j++) {
                const double x = ref_load(pairs[p].src, rows, (size_t)i * d + j);
                unsigned char wk[2] = {0}, wv[2] = {0};
                ref_store(pairs[p].dst, wk, 0, pairs[p].dst == REF_FP8E4M3 ? x / (double)0.03f : x);
                ref_store(pairs[p].dst, wv, 0, x);
                const size_t ki = ref_kv_index(&c, 0, slots[i] / 16, (int)(slots[i] % 16), 0, j);
                const size_t vi = ref_kv_index(&c, 1, slots[i] / 16, (int)(slots[i] % 16), 0, j);
                cr_assert(memcmp((unsigned char *)c.k + ki * es, wk, es) == 0 &&
                              memcmp((unsigned char *)c.v + vi * es, wv, es) == 0,
                          "%s -> %s: code 0x%04X", ref_dtype_name(pairs[p].src),
                          ref_dtype_name(pairs[p].dst), rows[(size_t)i * d + j]);
            }
        free(c.k);
        free(c.v);
    }
    free(rows);
    free(slots);
}

Test(cache_write, bad_slots_write_nothing)
{
    unsigned char k[4 * 2 * 8], v[4 * 2 * 8];
    memset(k, 0x11, sizeof k);
    memset(v, 0x22, sizeof v);
    ref_kv_cache c = {.layout = REF_KV_NHD, .dtype = REF_FP8E4M3, .num_blocks = 2, .block_size = 4,
                      .heads = 2, .head_dim = 8, .k_scale = 1, .v_scale = 1, .k = k, .v = v};
    uint16_t rows[3 * 16];
    for (int i = 0; i < 3 * 16; i++)
        rows[i] = ref_f32_to_bf16(1.0f);
    const int64_t out_of_range[3] = {0, 8, 1}, below[3] = {0, -2, 1}, dup[3] = {5, -1, 5};
    cr_assert_eq(ref_cache_write(&c, 3, REF_BF16, rows, rows, out_of_range), REF_ERANGE);
    cr_assert_eq(ref_cache_write(&c, 3, REF_BF16, rows, rows, below), REF_ERANGE);
    cr_assert_eq(ref_cache_write(&c, 3, REF_BF16, rows, rows, dup), REF_EINVAL);
    for (size_t i = 0; i < sizeof k; i++)
        cr_assert(k[i] == 0x11 && v[i] == 0x22, "byte %zu written by a refused call", i);
    const int64_t skip[3] = {-1, -1, -1};
    cr_assert_eq(ref_cache_write(&c, 3, REF_BF16, rows, rows, skip), REF_OK);
    for (size_t i = 0; i < sizeof k; i++)
        cr_assert(k[i] == 0x11 && v[i] == 0x22, "byte %zu written for a -1 slot", i);
}

/* fp8 caches store fp8(x / scale): saturating at +-448 (never NaN from overflow, inf
 * included), NaN kept, ties to even; gathered back as code * scale. */
Test(cache_write, fp8_saturates_and_scales)
{
    static const float xs[] = {1000.0f, -1000.0f, INFINITY, -INFINITY, NAN, 3.0f, 0.0f,
                               -0.0f,   1.0625f,  1.1875f, 0.5f,      448.0f, 464.0f, 1e-9f};
    enum { N = sizeof xs / sizeof xs[0] };
    for (int si = 0; si < 2; si++) {
        const float scale = si ? 0.5f : 1.0f;
        uint8_t k[N], v[N];
        ref_kv_cache c = {.layout = REF_KV_NHD, .dtype = REF_FP8E4M3, .num_blocks = N,
                          .block_size = 1, .heads = 1, .head_dim = 1, .k_scale = scale,
                          .v_scale = 1.0f, .k = k, .v = v};
        float rows[N];
        int64_t slots[N];
        for (int i = 0; i < N; i++) {
            rows[i] = xs[i] * scale; /* exact: scale is a power of two */
            slots[i] = i;
        }
        cr_assert_eq(ref_cache_write(&c, N, REF_F32, rows, rows, slots), REF_OK);
        const uint8_t want[N] = {0x7E, 0xFE, 0x7E, 0xFE, 0x7F, 0x44, 0x00, 0x80,
                                 0x38, 0x3A, 0x30, 0x7E, 0x7E, 0x00};
        for (int i = 0; i < N; i++)
            cr_assert_eq(k[i], want[i], "scale %g: x = %g -> 0x%02X, want 0x%02X", (double)scale,
                         (double)xs[i], k[i], want[i]);
        /* v (scale 1) stored x * scale directly */
        cr_assert_eq(v[0], 0x7E);
        cr_assert_eq(v[5], si ? ref_f32_to_fp8e4m3(1.5f) : 0x44);
        /* gathered back: code * scale, rounded to bf16 (exact here) */
        int32_t bt[N];
        for (int i = 0; i < N; i++)
            bt[i] = i;
        const int32_t st[1] = {0}, ln[1] = {N}, cu[2] = {0, N};
        double gk[N], gv[N];
        cr_assert_eq(ref_gather_cache(&c, 1, bt, N, st, ln, cu, REF_BF16, gk, gv), REF_OK);
        cr_assert_eq(gk[0], 448.0 * scale);
        cr_assert_eq(gk[1], -448.0 * scale);
        cr_assert(isnan(gk[4]));
        cr_assert_eq(gk[5], 3.0 * scale);
        cr_assert_eq(gk[8], 1.0 * scale, "1.0625 ties to even 1.0");
        cr_assert_eq(gk[9], 1.25 * scale, "1.1875 ties to even 1.25");
    }
}

/* gather_cache windows [starts, starts + lens) of a permuted-table cache, in every layout:
 * the rows of the logical sequence, and bit-identical across layouts. */
Test(gather_cache, windows)
{
    const int n = 3, heads = 2, d = 32, bs = 16;
    const int32_t lens[3] = {40, 0, 77}, starts[3] = {3, 0, 16}, glen[3] = {30, 0, 61},
                  cu[4] = {0, 30, 30, 91};
    const size_t row = (size_t)heads * d;
    void *k = rows_new(REF_BF16, 117 * row, 5, 1.0), *v = rows_new(REF_BF16, 117 * row, 6, 1.0);
    double *first = NULL;
    for (int l = 0; l < 3; l++) {
        fix f;
        fix_build(&f, (ref_kv_layout)l, REF_BF16, bs, heads, d, n, lens, ALLOC_PERMUTED, 2, REF_BF16,
                  k, v);
        double *gk = malloc(91 * row * sizeof *gk), *gv = malloc(91 * row * sizeof *gv);
        cr_assert_eq(ref_gather_cache(&f.c, n, f.bt, f.max_blocks, starts, glen, cu, REF_BF16, gk, gv),
                     REF_OK);
        for (int b = 0, base = 0; b < n; base += lens[b], b++)
            for (int i = 0; i < glen[b]; i++)
                for (size_t j = 0; j < row; j++)
                    cr_assert_eq(gk[((size_t)cu[b] + i) * row + j],
                                 ref_load(REF_BF16, k, ((size_t)base + starts[b] + i) * row + j));
        if (!first)
            first = gk;
        else {
            expect_same(first, gk, 91 * row, layout_names[l]);
            free(gk);
        }
        free(gv);
        fix_free(&f);
    }
    /* a window past the table's blocks is refused */
    fix f;
    fix_build(&f, REF_KV_NHD, REF_BF16, bs, heads, d, n, lens, ALLOC_IDENTITY, 0, REF_BF16, k, v);
    const int32_t far[3] = {0, 0, 80}, flen[3] = {1, 0, 20}, fcu[4] = {0, 1, 1, 21};
    double *gk = malloc(21 * row * sizeof *gk), *gv = malloc(21 * row * sizeof *gv);
    cr_assert_eq(ref_gather_cache(&f.c, n, f.bt, f.max_blocks, far, flen, fcu, REF_BF16, gk, gv),
                 REF_ERANGE);
    free(gk);
    free(gv);
    fix_free(&f);
    free(first);
    free(k);
    free(v);
}

/* ------------------------------------------------ decode, extend, mixed vs contiguous */

/* One configuration of the sweep: n sequences, logical rows, and their exact f64 values. */
typedef struct sweep {
    ref_dtype kv, qdt;
    int hq, hkv, d, n;
    int32_t lens[4];
    void *q, *k, *v; /* q [n, hq, d] qdt; k, v [sum(lens), hkv, d] in qdt */
    double *qf, *kf, *vf; /* exact values: q, and K/V as the cache holds them */
    int total;
} sweep;

static void sweep_init(sweep *s, ref_dtype kv, int gqa, uint64_t key)
{
    static const int32_t lens[4] = {0, 1, 37, 130};
    memset(s, 0, sizeof *s);
    s->kv = kv;
    s->qdt = kv == REF_F16 ? REF_F16 : REF_BF16;
    s->hkv = 2;
    s->hq = 2 * gqa;
    s->d = 64;
    s->n = 4;
    memcpy(s->lens, lens, sizeof lens);
    s->total = 168;
    const size_t nk = (size_t)s->total * s->hkv * s->d, nq = (size_t)s->n * s->hq * s->d;
    s->q = rows_new(s->qdt, nq, key, 1.0);
    s->k = rows_new(s->qdt, nk, key + 1, 1.0);
    s->v = rows_new(s->qdt, nk, key + 2, 1.0);
    s->qf = to_f64(s->qdt, s->q, nq);
    s->kf = malloc(nk * sizeof *s->kf);
    s->vf = malloc(nk * sizeof *s->vf);
    for (size_t i = 0; i < nk; i++) {
        s->kf[i] = stored_value(kv, ref_load(s->qdt, s->k, i));
        s->vf[i] = stored_value(kv, ref_load(s->qdt, s->v, i));
    }
}

static void sweep_free(sweep *s)
{
    free(s->q), free(s->k), free(s->v), free(s->qf), free(s->kf), free(s->vf);
}

static ref_attn_opts opts_for(const sweep *s, ref_mode mode)
{
    return (ref_attn_opts){.scale = 1.0 / sqrt((double)s->d), .causal = 1, .window_left = -1,
                           .mode = mode, .p_dtype = s->qdt};
}

/* Decode of every sequence as contiguous mha_varlen (lq = 1) over the exact values. */
static void decode_contiguous(const sweep *s, ref_mode mode, const double *kf, const double *vf,
                              double *out, double *lse)
{
    int32_t cu_q[5] = {0}, cu_k[5] = {0};
    for (int b = 0; b < s->n; b++) {
        cu_q[b + 1] = b + 1;
        cu_k[b + 1] = cu_k[b] + s->lens[b];
    }
    const ref_varlen_args a = {.batch = s->n, .hq = s->hq, .hkv = s->hkv, .dqk = s->d, .dv = s->d,
                               .cu_q = cu_q, .cu_k = cu_k, .dtype = REF_F64, .q = s->qf,
                               .k = kf, .v = vf, .opts = opts_for(s, mode)};
    cr_assert_eq(ref_mha_varlen(&a, out, lse), REF_OK);
}

static ref_decode_args decode_args(const sweep *s, const fix *f, ref_mode mode)
{
    return (ref_decode_args){.batch = s->n, .hq = s->hq, .dtype = s->qdt, .q = s->q, .cache = f->c,
                             .block_table = f->bt, .max_blocks = f->max_blocks,
                             .seq_lens = s->lens, .opts = opts_for(s, mode)};
}

/* Layouts x kv dtypes x block sizes x GQA ratios: paged decode (permuted table) is
 * bit-identical to the identity table and to contiguous mha_varlen, in every layout; under
 * REF_EMULATE it equals mha_varlen's emulation over K/V rounded to the query dtype. The NaN
 * of every unused slot never reaches an output. */
Test(decode, sweep_paged_eq_contiguous)
{
    static const ref_dtype kvs[] = {REF_BF16, REF_F16, REF_FP8E4M3};
    static const int bss[] = {1, 2, 16, 61, 64}, gqas[] = {1, 4, 8};
    int cfg = 0;
    for (int ti = 0; ti < 3; ti++)
        for (int gi = 0; gi < 3; gi++) {
            sweep s;
            sweep_init(&s, kvs[ti], gqas[gi], 100u * (uint64_t)(ti * 3 + gi));
            const size_t no = (size_t)s.n * s.hq * s.d, nl = (size_t)s.hq * s.n;
            double *co = malloc(no * sizeof *co), *cl = malloc(nl * sizeof *cl);
            double *eo = malloc(no * sizeof *eo), *el = malloc(nl * sizeof *el);
            double *po = malloc(no * sizeof *po), *pl = malloc(nl * sizeof *pl);
            decode_contiguous(&s, REF_EXACT, s.kf, s.vf, co, cl);
            /* emulation: a kernel's MMA reads K/V in the query dtype */
            const size_t nk = (size_t)s.total * s.hkv * s.d;
            double *kr = malloc(nk * sizeof *kr), *vr = malloc(nk * sizeof *vr);
            for (size_t i = 0; i < nk; i++) {
                kr[i] = ref_round_to(s.qdt, s.kf[i]);
                vr[i] = ref_round_to(s.qdt, s.vf[i]);
            }
            decode_contiguous(&s, REF_EMULATE, kr, vr, eo, el);
            for (int bi = 0; bi < 5; bi++)
                for (int l = 0; l < 3; l++) {
                    if (!layout_ok((ref_kv_layout)l, s.kv, bss[bi], s.d))
                        continue;
                    for (int alloc = ALLOC_IDENTITY; alloc <= ALLOC_PERMUTED; alloc++) {
                        char tag[128];
                        snprintf(tag, sizeof tag, "%s %s bs %d gqa %d %s", layout_names[l],
                                 ref_dtype_name(s.kv), bss[bi], gqas[gi],
                                 alloc == ALLOC_PERMUTED ? "permuted" : "identity");
                        fix f;
                        fix_build(&f, (ref_kv_layout)l, s.kv, bss[bi], s.hkv, s.d, s.n, s.lens,
                                  alloc, 3, s.qdt, s.k, s.v);
                        ref_decode_args a = decode_args(&s, &f, REF_EXACT);
                        cr_assert_eq(ref_paged_decode(&a, po, pl), REF_OK, "%s", tag);
                        expect_same(po, co, no, tag);
                        expect_same(pl, cl, nl, tag);
                        for (size_t i = 0; i < no; i++)
                            cr_assert(isfinite(po[i]), "%s: NaN reached out[%zu]", tag, i);
                        a.opts.mode = REF_EMULATE;
                        cr_assert_eq(ref_paged_decode(&a, po, pl), REF_OK, "%s", tag);
                        expect_same(po, eo, no, tag);
                        expect_same(pl, el, nl, tag);
                        fix_free(&f);
                        cfg++;
                    }
                }
            free(kr), free(vr), free(co), free(cl), free(eo), free(el), free(po), free(pl);
            sweep_free(&s);
        }
    /* per kv dtype and ratio: nhd and hnd at 5 block sizes, shuffled at 2; two tables */
    cr_assert_eq(cfg, 3 * 3 * (2 * 5 + 2) * 2, "every legal combination ran");
}

/* seq_len 0: out = 0 and lse = -inf exactly; the sequence's (empty) table row is never read. */
Test(decode, empty_sequence)
{
    sweep s;
    sweep_init(&s, REF_BF16, 4, 7);
    fix f;
    fix_build(&f, REF_KV_NHD, REF_BF16, 16, s.hkv, s.d, s.n, s.lens, ALLOC_PERMUTED, 0, s.qdt, s.k, s.v);
    const size_t no = (size_t)s.n * s.hq * s.d, nl = (size_t)s.hq * s.n;
    double *o = malloc(no * sizeof *o), *l = malloc(nl * sizeof *l);
    ref_decode_args a = decode_args(&s, &f, REF_EXACT);
    cr_assert_eq(ref_paged_decode(&a, o, l), REF_OK);
    for (int h = 0; h < s.hq; h++) {
        cr_assert(l[(size_t)h * s.n] == -INFINITY);
        for (int d = 0; d < s.d; d++)
            cr_assert(o[(size_t)h * s.d + d] == 0.0 && !signbit(o[(size_t)h * s.d + d]));
    }
    /* a table entry outside the pool is refused, not read */
    f.bt[2 * f.max_blocks] = f.c.num_blocks;
    cr_assert_eq(ref_paged_decode(&a, o, l), REF_ERANGE);
    free(o), free(l);
    fix_free(&f);
    sweep_free(&s);
}

/* Extend problems: requests with contexts in the cache and new rows given contiguously. */
typedef struct ext {
    int n, hq, hkv, d, tn;
    int32_t ctx[4], cu_q[5];
    void *q, *kn, *vn; /* q [tn, hq, d], k_new, v_new [tn, hkv, d], bf16 */
    void *kc, *vc;     /* contexts [sum(ctx), hkv, d], bf16 */
    fix f;
} ext;

static void ext_init(ext *e, ref_kv_layout layout, ref_dtype kv, int bs, const int32_t *ctx,
                     const int32_t *newn, int n, uint64_t key)
{
    memset(e, 0, sizeof *e);
    e->n = n, e->hq = 4, e->hkv = 2, e->d = 32;
    int tc = 0;
    for (int b = 0; b < n; b++) {
        e->ctx[b] = ctx[b];
        e->cu_q[b + 1] = e->cu_q[b] + newn[b];
        tc += ctx[b];
    }
    e->tn = e->cu_q[n];
    const size_t row = (size_t)e->hkv * e->d;
    e->q = rows_new(REF_BF16, (size_t)e->tn * e->hq * e->d, key, 1.0);
    e->kn = rows_new(REF_BF16, (size_t)e->tn * row, key + 1, 1.0);
    e->vn = rows_new(REF_BF16, (size_t)e->tn * row, key + 2, 1.0);
    e->kc = rows_new(REF_BF16, (size_t)tc * row, key + 3, 1.0);
    e->vc = rows_new(REF_BF16, (size_t)tc * row, key + 4, 1.0);
    fix_build(&e->f, layout, kv, bs, e->hkv, e->d, n, e->ctx, ALLOC_PERMUTED, 1, REF_BF16, e->kc, e->vc);
}

static void ext_free(ext *e)
{
    free(e->q), free(e->kn), free(e->vn), free(e->kc), free(e->vc);
    fix_free(&e->f);
}

static ref_extend_args ext_args(const ext *e, ref_mode mode)
{
    return (ref_extend_args){
        .batch = e->n, .hq = e->hq, .dtype = REF_BF16, .q = e->q, .k_new = e->kn, .v_new = e->vn,
        .cu_q = e->cu_q, .context_lens = e->ctx, .cache = e->f.c, .block_table = e->f.bt,
        .max_blocks = e->f.max_blocks,
        .opts = {.scale = 1.0 / sqrt((double)e->d), .causal = 1, .window_left = -1, .mode = mode,
                 .p_dtype = REF_BF16}};
}

/* Chunked extend with budgets 1, 7, 64, 32768 == one-pass extend (to 1e-12), and one-pass
 * extend == contiguous mha_varlen over concat(context, new) (bit-identical). */
Test(extend, chunked_eq_onepass_eq_contiguous)
{
    static const int32_t ctx[4] = {0, 5, 130, 61}, newn[4] = {1, 3, 40, 17};
    static const int budgets[] = {1, 7, 64, 32768};
    static const ref_dtype kvs[] = {REF_BF16, REF_FP8E4M3};
    for (int l = 0; l < 3; l++)
        for (int ti = 0; ti < 2; ti++) {
            ext e;
            ext_init(&e, (ref_kv_layout)l, kvs[ti], 16, ctx, newn, 4, 40u + (uint64_t)(l * 2 + ti));
            const size_t no = (size_t)e.tn * e.hq * e.d, nl = (size_t)e.hq * e.tn;
            double *o1 = malloc(no * sizeof *o1), *l1 = malloc(nl * sizeof *l1);
            double *o2 = malloc(no * sizeof *o2), *l2 = malloc(nl * sizeof *l2);
            ref_extend_args a = ext_args(&e, REF_EXACT);
            cr_assert_eq(ref_extend(&a, o1, l1), REF_OK);

            /* contiguous: per request [context rows (as stored) | new rows] */
            const size_t row = (size_t)e.hkv * e.d;
            int32_t cu_k[5] = {0};
            for (int b = 0; b < 4; b++)
                cu_k[b + 1] = cu_k[b] + ctx[b] + newn[b];
            double *kf = malloc((size_t)cu_k[4] * row * sizeof *kf), *vf = malloc((size_t)cu_k[4] * row * sizeof *vf);
            for (int b = 0, cbase = 0; b < 4; cbase += ctx[b], b++) {
                for (size_t i = 0; i < (size_t)ctx[b] * row; i++) {
                    kf[(size_t)cu_k[b] * row + i] = stored_value(kvs[ti], ref_load(REF_BF16, e.kc, (size_t)cbase * row + i));
                    vf[(size_t)cu_k[b] * row + i] = stored_value(kvs[ti], ref_load(REF_BF16, e.vc, (size_t)cbase * row + i));
                }
                for (size_t i = 0; i < (size_t)newn[b] * row; i++) {
                    kf[((size_t)cu_k[b] + ctx[b]) * row + i] = ref_load(REF_BF16, e.kn, (size_t)e.cu_q[b] * row + i);
                    vf[((size_t)cu_k[b] + ctx[b]) * row + i] = ref_load(REF_BF16, e.vn, (size_t)e.cu_q[b] * row + i);
                }
            }
            double *qf = to_f64(REF_BF16, e.q, no);
            const ref_varlen_args va = {.batch = 4, .hq = e.hq, .hkv = e.hkv, .dqk = e.d, .dv = e.d,
                                        .cu_q = e.cu_q, .cu_k = cu_k, .dtype = REF_F64, .q = qf,
                                        .k = kf, .v = vf, .opts = a.opts};
            cr_assert_eq(ref_mha_varlen(&va, o2, l2), REF_OK);
            expect_same(o1, o2, no, "extend vs contiguous out");
            expect_same(l1, l2, nl, "extend vs contiguous lse");

            for (int bi = 0; bi < 4; bi++) {
                char tag[96];
                snprintf(tag, sizeof tag, "%s %s budget %d", layout_names[l],
                         ref_dtype_name(kvs[ti]), budgets[bi]);
                cr_assert_eq(ref_extend_chunked(&a, budgets[bi], REF_F64, o2, l2), REF_OK, "%s", tag);
                expect_close(o2, o1, no, 1e-12, tag);
                expect_close(l2, l1, nl, 1e-12, tag);
            }
            /* stored partials (bf16 out, f32 lse) stay within bf16 rounding of the truth */
            cr_assert_eq(ref_extend_chunked(&a, 7, REF_BF16, o2, l2), REF_OK);
            expect_close(o2, o1, no, 0x1p-6, "bf16 partials");
            expect_close(l2, l1, nl, 1e-5, "f32 partial lse");
            free(o1), free(l1), free(o2), free(l2), free(kf), free(vf), free(qf);
            ext_free(&e);
        }
}

/* Prefill of a batch == extend with empty contexts (one pass and chunked) == mixed with only
 * prefill requests, bit-identical. */
Test(identity, prefill_eq_extend_eq_mixed)
{
    static const int32_t ctx[3] = {0, 0, 0}, newn[3] = {17, 1, 130};
    ext e;
    ext_init(&e, REF_KV_NHD, REF_BF16, 16, ctx, newn, 3, 77);
    const size_t no = (size_t)e.tn * e.hq * e.d, nl = (size_t)e.hq * e.tn;
    double *o1 = malloc(no * sizeof *o1), *l1 = malloc(nl * sizeof *l1);
    double *o2 = malloc(no * sizeof *o2), *l2 = malloc(nl * sizeof *l2);
    const ref_extend_args a = ext_args(&e, REF_EXACT);
    const ref_varlen_args va = {.batch = 3, .hq = e.hq, .hkv = e.hkv, .dqk = e.d, .dv = e.d,
                                .cu_q = e.cu_q, .cu_k = e.cu_q, .dtype = REF_BF16, .q = e.q,
                                .k = e.kn, .v = e.vn,
                                .opts = {.scale = a.opts.scale, .causal = 1, .window_left = -1}};
    cr_assert_eq(ref_mha_varlen(&va, o1, l1), REF_OK);
    cr_assert_eq(ref_extend(&a, o2, l2), REF_OK);
    expect_same(o2, o1, no, "extend c = 0");
    expect_same(l2, l1, nl, "extend c = 0 lse");
    cr_assert_eq(ref_extend_chunked(&a, 5, REF_F64, o2, l2), REF_OK);
    expect_same(o2, o1, no, "chunked c = 0");

    /* mixed: the new rows in the cache */
    for (int l = 0; l < 3; l++) {
        fix f;
        fix_build(&f, (ref_kv_layout)l, REF_BF16, 16, e.hkv, e.d, 3, newn, ALLOC_PERMUTED, 0, REF_BF16,
                  e.kn, e.vn);
        const ref_mixed_args m = {.batch = 3, .hq = e.hq, .dtype = REF_BF16, .q = e.q,
                                  .cu_q = e.cu_q, .context_lens = ctx, .cache = f.c,
                                  .block_table = f.bt, .max_blocks = f.max_blocks, .opts = a.opts};
        cr_assert_eq(ref_mixed(&m, o2, l2), REF_OK);
        expect_same(o2, o1, no, layout_names[l]);
        expect_same(l2, l1, nl, layout_names[l]);
        fix_free(&f);
    }
    free(o1), free(l1), free(o2), free(l2);
    ext_free(&e);
}

/* Decode over c + 1 cached tokens == extend with c cached and 1 new == mixed decode requests,
 * bit-identical (also under REF_EMULATE). */
Test(identity, decode_eq_extend_n1)
{
    static const int32_t ctx[3] = {1, 40, 200}, one[3] = {1, 1, 1}, all[3] = {2, 41, 201};
    for (int mode = REF_EXACT; mode <= REF_EMULATE; mode++) {
        ext e;
        ext_init(&e, REF_KV_HND, REF_FP8E4M3, 16, ctx, one, 3, 91);
        const size_t row = (size_t)e.hkv * e.d, no = (size_t)3 * e.hq * e.d, nl = (size_t)e.hq * 3;
        /* the decode cache holds each context followed by its new row */
        uint16_t *k = malloc(244 * row * 2), *v = malloc(244 * row * 2);
        for (int b = 0, c0 = 0, d0 = 0; b < 3; c0 += ctx[b], d0 += all[b], b++) {
            memcpy(k + (size_t)d0 * row, (uint16_t *)e.kc + (size_t)c0 * row, (size_t)ctx[b] * row * 2);
            memcpy(v + (size_t)d0 * row, (uint16_t *)e.vc + (size_t)c0 * row, (size_t)ctx[b] * row * 2);
            /* the new row as a kernel reads it from an fp8 cache: quantized */
            for (size_t i = 0; i < row; i++) {
                ref_store(REF_BF16, k, ((size_t)d0 + ctx[b]) * row + i,
                          stored_value(REF_FP8E4M3, ref_load(REF_BF16, e.kn, (size_t)b * row + i)));
                ref_store(REF_BF16, v, ((size_t)d0 + ctx[b]) * row + i,
                          stored_value(REF_FP8E4M3, ref_load(REF_BF16, e.vn, (size_t)b * row + i)));
            }
        }
        /* ... and extend takes the same quantized values as its new rows */
        for (size_t i = 0; i < 3 * row; i++) {
            ref_store(REF_BF16, e.kn, i, stored_value(REF_FP8E4M3, ref_load(REF_BF16, e.kn, i)));
            ref_store(REF_BF16, e.vn, i, stored_value(REF_FP8E4M3, ref_load(REF_BF16, e.vn, i)));
        }
        fix f;
        fix_build(&f, REF_KV_HND, REF_FP8E4M3, 16, e.hkv, e.d, 3, all, ALLOC_PERMUTED, 2, REF_BF16, k, v);
        double *o1 = malloc(no * sizeof *o1), *l1 = malloc(nl * sizeof *l1);
        double *o2 = malloc(no * sizeof *o2), *l2 = malloc(nl * sizeof *l2);
        const ref_extend_args a = ext_args(&e, (ref_mode)mode);
        cr_assert_eq(ref_extend(&a, o1, l1), REF_OK);
        const ref_decode_args da = {.batch = 3, .hq = e.hq, .dtype = REF_BF16, .q = e.q, .cache = f.c,
                                    .block_table = f.bt, .max_blocks = f.max_blocks,
                                    .seq_lens = all, .opts = a.opts};
        cr_assert_eq(ref_paged_decode(&da, o2, l2), REF_OK);
        expect_same(o2, o1, no, "decode vs extend");
        expect_same(l2, l1, nl, "decode vs extend lse");
        const ref_mixed_args m = {.batch = 3, .hq = e.hq, .dtype = REF_BF16, .q = e.q,
                                  .cu_q = e.cu_q, .context_lens = ctx, .cache = f.c,
                                  .block_table = f.bt, .max_blocks = f.max_blocks, .opts = a.opts};
        cr_assert_eq(ref_mixed(&m, o2, l2), REF_OK);
        expect_same(o2, o1, no, "mixed decode vs extend");
        free(o1), free(l1), free(o2), free(l2), free(k), free(v);
        fix_free(&f);
        ext_free(&e);
    }
}

/* A mixed step in arrival order == the routed design: requests reordered to
 * [decode : extend : prefill], decode through ref_paged_decode, extends through chunked
 * extend, prefills through mha_varlen, scattered back (to 1e-12: the chunked merge). */
Test(identity, mixed_eq_routed)
{
    enum { R = 7 };
    static const int32_t ctx[R] = {50, 0, 33, 300, 0, 9, 120}, newn[R] = {1, 40, 1, 25, 1, 12, 1};
    const int hq = 8, hkv = 2, d = 64, bs = 16;
    const size_t row = (size_t)hkv * d;
    int32_t cu[R + 1] = {0}, all[R];
    int tall = 0;
    for (int r = 0; r < R; r++) {
        cu[r + 1] = cu[r] + newn[r];
        all[r] = ctx[r] + newn[r];
        tall += all[r];
    }
    const int t = cu[R];
    void *q = rows_new(REF_BF16, (size_t)t * hq * d, 300, 1.0);
    void *k = rows_new(REF_BF16, (size_t)tall * row, 301, 1.0), *v = rows_new(REF_BF16, (size_t)tall * row, 302, 1.0);
    fix f;
    fix_build(&f, REF_KV_SHUFFLED, REF_BF16, bs, hkv, d, R, all, ALLOC_PERMUTED, 4, REF_BF16, k, v);
    const ref_attn_opts o = {.scale = 1.0 / sqrt(d), .softcap = 20.0, .window_left = -1};
    const ref_mixed_args m = {.batch = R, .hq = hq, .dtype = REF_BF16, .q = q, .cu_q = cu,
                              .context_lens = ctx, .cache = f.c, .block_table = f.bt,
                              .max_blocks = f.max_blocks, .opts = o};
    const size_t no = (size_t)t * hq * d, nl = (size_t)hq * t;
    double *o1 = malloc(no * sizeof *o1), *l1 = malloc(nl * sizeof *l1);
    double *o2 = malloc(no * sizeof *o2), *l2 = malloc(nl * sizeof *l2);
    cr_assert_eq(ref_mixed(&m, o1, l1), REF_OK);

    for (int kind = REF_REQ_DECODE; kind <= REF_REQ_PREFILL; kind++) {
        int ids[R], nr = 0;
        for (int r = 0; r < R; r++)
            if ((int)ref_request_kind_of(ctx[r], newn[r]) == kind)
                ids[nr++] = r;
        cr_assert(nr > 0);
        /* the slice: its queries, tables, lengths and new rows, contiguous */
        int32_t scu[R + 1] = {0}, sctx[R], sall[R], *sbt = malloc((size_t)nr * f.max_blocks * sizeof *sbt);
        for (int i = 0; i < nr; i++) {
            scu[i + 1] = scu[i] + newn[ids[i]];
            sctx[i] = ctx[ids[i]];
            sall[i] = all[ids[i]];
            memcpy(sbt + (size_t)i * f.max_blocks, f.bt + (size_t)ids[i] * f.max_blocks,
                   (size_t)f.max_blocks * sizeof *sbt);
        }
        const int st = scu[nr];
        uint16_t *sq = malloc((size_t)st * hq * d * 2), *skn = malloc((size_t)st * row * 2),
                 *svn = malloc((size_t)st * row * 2);
        for (int i = 0; i < nr; i++) {
            const int r = ids[i];
            memcpy(sq + (size_t)scu[i] * hq * d, (uint16_t *)q + (size_t)cu[r] * hq * d, (size_t)newn[r] * hq * d * 2);
            int base = 0;
            for (int j = 0; j < r; j++)
                base += all[j];
            memcpy(skn + (size_t)scu[i] * row, (uint16_t *)k + ((size_t)base + ctx[r]) * row, (size_t)newn[r] * row * 2);
            memcpy(svn + (size_t)scu[i] * row, (uint16_t *)v + ((size_t)base + ctx[r]) * row, (size_t)newn[r] * row * 2);
        }
        double *so = malloc((size_t)st * hq * d * sizeof *so), *sl = malloc((size_t)hq * st * sizeof *sl);
        if (kind == REF_REQ_DECODE) {
            const ref_decode_args a = {.batch = nr, .hq = hq, .dtype = REF_BF16, .q = sq, .cache = f.c,
                                       .block_table = sbt, .max_blocks = f.max_blocks,
                                       .seq_lens = sall, .opts = o};
            cr_assert_eq(ref_paged_decode(&a, so, sl), REF_OK);
        } else if (kind == REF_REQ_EXTEND) {
            /* the extend path's cache holds the contexts; here the same cache, read to c */
            const ref_extend_args a = {.batch = nr, .hq = hq, .dtype = REF_BF16, .q = sq,
                                       .k_new = skn, .v_new = svn, .cu_q = scu,
                                       .context_lens = sctx, .cache = f.c, .block_table = sbt,
                                       .max_blocks = f.max_blocks, .opts = o};
            cr_assert_eq(ref_extend_chunked(&a, 64, REF_F64, so, sl), REF_OK);
        } else {
            const ref_varlen_args a = {.batch = nr, .hq = hq, .hkv = hkv, .dqk = d, .dv = d,
                                       .cu_q = scu, .cu_k = scu, .dtype = REF_BF16, .q = sq,
                                       .k = skn, .v = svn,
                                       .opts = {.scale = o.scale, .softcap = o.softcap, .causal = 1,
                                                .window_left = -1}};
            cr_assert_eq(ref_mha_varlen(&a, so, sl), REF_OK);
        }
        for (int i = 0; i < nr; i++) /* scatter back */
            for (int j = 0; j < newn[ids[i]]; j++) {
                const int dst = cu[ids[i]] + j, src = scu[i] + j;
                memcpy(o2 + (size_t)dst * hq * d, so + (size_t)src * hq * d, (size_t)hq * d * sizeof *o2);
                for (int h = 0; h < hq; h++)
                    l2[(size_t)h * t + dst] = sl[(size_t)h * st + src];
            }
        free(sbt), free(sq), free(skn), free(svn), free(so), free(sl);
    }
    expect_close(o2, o1, no, 1e-12, "routed out");
    expect_close(l2, l1, nl, 1e-12, "routed lse");
    free(o1), free(l1), free(o2), free(l2), free(q), free(k), free(v);
    fix_free(&f);
}

/* ----------------------------------------------------------- 64-bit offsets */

/* A pool of 32768 blocks of 64 tokens x 8 heads x 256 dims of fp8: 2^32 elements per cache,
 * so every block id above 16383 sits past 2^31 elements (and bytes). With the highest ids
 * handed out, cache_write, gather and decode must agree bit-for-bit with a small pool. The
 * big caches are calloc'd and only the used blocks are ever touched, so the 8 GiB stay
 * virtual. */
Test(overflow, high_block_ids_in_a_4g_pool)
{
    const int nblocks = 32768, bs = 64, hkv = 8, d = 256, hq = 8, n = 2;
    const int32_t lens[2] = {100, 70};
    const size_t row = (size_t)hkv * d;
    void *k = rows_new(REF_BF16, 170 * row, 11, 1.0), *v = rows_new(REF_BF16, 170 * row, 12, 1.0);
    void *q = rows_new(REF_BF16, (size_t)n * hq * d, 13, 1.0);
    for (int l = 0; l < 3; l++) {
        fix small;
        fix_build(&small, (ref_kv_layout)l, REF_FP8E4M3, bs, hkv, d, n, lens, ALLOC_IDENTITY, 0,
                  REF_BF16, k, v);
        ref_kv_cache big = small.c;
        big.num_blocks = nblocks;
        big.k = calloc(ref_kv_numel(&big), 1);
        big.v = calloc(ref_kv_numel(&big), 1);
        cr_assert(big.k && big.v, "4 GiB of virtual memory");
        cr_assert(ref_kv_index(&big, 1, nblocks - 3, 0, 0, 0) > (size_t)INT32_MAX);
        /* table: the highest ids, as block_alloc = high hands them out */
        int32_t bt[2 * 2] = {nblocks - 1, nblocks - 2, nblocks - 3, nblocks - 4};
        int64_t slots[170];
        for (int b = 0, i = 0; b < n; b++)
            for (int p = 0; p < lens[b]; p++)
                slots[i++] = (int64_t)bt[b * 2 + p / bs] * bs + p % bs;
        cr_assert_eq(ref_cache_write(&big, 170, REF_BF16, k, v, slots), REF_OK);
        /* the bytes landed where the 64-bit address says, byte for byte as in the small pool */
        const size_t blk = (size_t)bs * row;
        cr_assert(memcmp((char *)big.k + (size_t)(nblocks - 1) * blk, small.c.k, blk) == 0);

        const ref_attn_opts o = {.scale = 1.0 / 16, .window_left = -1};
        double o1[2 * 8 * 256], l1[16], o2[2 * 8 * 256], l2[16];
        ref_decode_args a = {.batch = n, .hq = hq, .dtype = REF_BF16, .q = q, .cache = small.c,
                             .block_table = small.bt, .max_blocks = small.max_blocks,
                             .seq_lens = lens, .opts = o};
        cr_assert_eq(ref_paged_decode(&a, o1, l1), REF_OK);
        a.cache = big;
        a.block_table = bt;
        a.max_blocks = 2;
        cr_assert_eq(ref_paged_decode(&a, o2, l2), REF_OK);
        expect_same(o2, o1, sizeof o1 / sizeof o1[0], layout_names[l]);
        expect_same(l2, l1, 16, layout_names[l]);

        const int32_t st[2] = {60, 0}, gl[2] = {40, 70}, cu[3] = {0, 40, 110};
        double *g1 = malloc(2 * 110 * row * sizeof *g1), *g2 = malloc(2 * 110 * row * sizeof *g2);
        cr_assert_eq(ref_gather_cache(&small.c, n, small.bt, small.max_blocks, st, gl, cu, REF_BF16,
                                      g1, g1 + 110 * row), REF_OK);
        cr_assert_eq(ref_gather_cache(&big, n, bt, 2, st, gl, cu, REF_BF16, g2, g2 + 110 * row), REF_OK);
        expect_same(g2, g1, 2 * 110 * row, "gather");
        free(g1), free(g2), free(big.k), free(big.v);
        fix_free(&small);
    }
    free(k), free(v), free(q);
}

/* ------------------------------------------------------ the path descriptors */

static char tmp_ini[64];

static void cleanup(void)
{
    if (tmp_ini[0])
        unlink(tmp_ini);
}

/* Load one case from text (run seed `seed`): HX_OK and the case, or the error. */
static int load_case(const char *text, uint64_t seed, hx_caselist *l, hx_err *e)
{
    if (tmp_ini[0])
        unlink(tmp_ini);
    strcpy(tmp_ini, "/tmp/test_paged_XXXXXX");
    const int fd = mkstemp(tmp_ini);
    cr_assert(fd >= 0);
    const size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    return hx_cases_load(tmp_ini, seed, l, e);
}

/* A case run as `run` does: inputs, their check, the f64 reference and the emulation. */
typedef struct ran {
    hx_caselist l;
    hx_tensors in, ref, emu;
} ran;

static void run_case(ran *r, const char *text, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    hx_err e = {0};
    cr_assert_eq(load_case(text, seed, &r->l, &e), HX_OK, "%s", e.msg);
    const hx_case *c = &r->l.v[0];
    hx_tensors tpl = {0};
    cr_assert_eq(c->path->make_inputs(c, &r->in, &e), HX_OK, "%s", e.msg);
    cr_assert_eq(c->path->check_inputs(c, &r->in, &e), HX_OK, "%s", e.msg);
    cr_assert_eq(c->path->make_outputs(c, &tpl, &e), HX_OK, "%s", e.msg);
    cr_assert_eq(hx_tensors_clone_shape(&tpl, REF_F64, &r->ref, &e), HX_OK);
    cr_assert_eq(hx_tensors_clone_shape(&tpl, REF_F64, &r->emu, &e), HX_OK);
    cr_assert_eq(c->path->reference(c, &r->in, &r->ref, REF_EXACT, &e), HX_OK, "%s", e.msg);
    cr_assert_eq(c->path->reference(c, &r->in, &r->emu, REF_EMULATE, &e), HX_OK, "%s", e.msg);
    hx_tensors_free(&tpl);
}

static void ran_free(ran *r)
{
    hx_tensors_free(&r->in);
    hx_tensors_free(&r->ref);
    hx_tensors_free(&r->emu);
    hx_cases_free(&r->l);
}

static size_t count_nan(const hx_tensor *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->numel; i++)
        n += isnan(ref_load(t->dtype, t->data, i));
    return n;
}

/* Every slot no token occupies holds NaN (in used and spare blocks), the cache tensors have
 * SPEC's shapes, and no NaN reaches an output. */
Test(paths, unused_slots_are_nan, .fini = cleanup)
{
    static const char *const texts[] = {
        "[d]\npath = paged_decode\nheads_q = 8\nheads_kv = 2\nhead_dim = 64\nseq_lens = 0,1,17,40\n"
        "num_blocks = 9\nlayout = shuffled\nkv_dtype = fp8e4m3\n",
        "[e]\npath = extend\nheads_q = 4\nhead_dim = 32\nseq_lens = 3,1\ncontext_lens = 22,0\n"
        "layout = hnd\nblock_size = 5\nchunk_tokens = 6\n",
        "[m]\npath = mixed\nheads_q = 4\nheads_kv = 1\nhead_dim = 32\nseq_lens = 1,9,3\n"
        "context_lens = 30,0,7\nkv_dtype = fp8e4m3\nnum_blocks = 12\n",
        "[g]\npath = gather_cache\nheads_kv = 2\nhead_dim = 16\ncontext_lens = 33,0,5\n"
        "seq_lens = 10,0,5\nblock_size = 8\nlayout = shuffled\ndtype = f16\n",
    };
    static const int64_t cached[] = {58, 22, 50, 38};
    for (int i = 0; i < 4; i++) {
        ran r;
        run_case(&r, texts[i], 0);
        const hx_case *c = &r.l.v[0];
        const hx_tensor *k = hx_tensors_get(&r.in, "k_cache"), *v = hx_tensors_get(&r.in, "v_cache");
        int64_t want[5];
        const ref_kv_cache kc = hx_kv_cache(c, &r.in);
        const int nd = ref_kv_shape(&kc, 0, want);
        cr_assert_eq(k->ndim, nd);
        for (int j = 0; j < nd; j++)
            cr_assert_eq(k->shape[j], want[j]);
        const size_t slots = (size_t)k->shape[0] * c->block_size, row = (size_t)c->heads_kv * c->head_dim;
        cr_assert_eq(count_nan(k), (slots - (size_t)cached[i]) * row, "%s", c->name);
        cr_assert_eq(count_nan(v), (slots - (size_t)cached[i]) * row, "%s", c->name);
        for (int o = 0; o < r.ref.n; o++)
            for (size_t j = 0; j < r.ref.t[o].numel; j++) {
                const double x = ((double *)r.ref.t[o].data)[j];
                cr_assert(!isnan(x) && (isfinite(x) || strcmp(r.ref.t[o].name, "lse") == 0),
                          "%s: %s[%zu] = %g", c->name, r.ref.t[o].name, j, x);
            }
        ran_free(&r);
    }
}

/* cache_write through its descriptor: the expected caches equal the inputs except at the
 * slots of slot_mapping, which hold the new rows; padding tokens (-1) change nothing. */
Test(paths, cache_write_expected_caches, .fini = cleanup)
{
    for (int fp8 = 0; fp8 < 2; fp8++) {
        ran r;
        run_case(&r,
                 fp8 ? "[w]\npath = cache_write\nheads_kv = 2\nhead_dim = 32\nseq_lens = 3,0,17\n"
                       "context_lens = 5,2,40\ntokens = 24\nlayout = shuffled\nkv_dtype = fp8e4m3\n"
                       "k_scale = 0.03\n"
                     : "[w]\npath = cache_write\nheads_kv = 2\nhead_dim = 32\nseq_lens = 3,0,17\n"
                       "context_lens = 5,2,40\ntokens = 24\nlayout = hnd\nblock_size = 7\n",
                 0);
        const hx_case *c = &r.l.v[0];
        cr_assert_eq(c->tokens, 24);
        cr_assert_eq(c->k_scale, fp8 ? (double)0.03f : 0.0, "fp8 scales are read as f32");
        const hx_tensor *sm = hx_tensors_get(&r.in, "slot_mapping");
        const int64_t *s = sm->data;
        int pad = 0;
        for (int i = 0; i < 24; i++)
            pad += s[i] == -1;
        cr_assert_eq(pad, 4);
        const ref_kv_cache kc = hx_kv_cache(c, &r.in);
        const hx_tensor *kin = hx_tensors_get(&r.in, "k_cache"), *kn = hx_tensors_get(&r.in, "k");
        const double *kout = hx_tensors_get(&r.ref, "k_cache")->data;
        const double *kemu = hx_tensors_get(&r.emu, "k_cache")->data;
        unsigned char *written = calloc(kin->numel, 1);
        for (int i = 0; i < 24; i++)
            for (int h = 0; s[i] >= 0 && h < c->heads_kv; h++)
                for (int d = 0; d < c->head_dim; d++) {
                    const size_t ki = ref_kv_index(&kc, 0, s[i] / c->block_size,
                                                   (int)(s[i] % c->block_size), h, d);
                    written[ki] = 1;
                    const double x = ref_load(c->dtype, kn->data, ((size_t)i * c->heads_kv + h) * c->head_dim + d);
                    const double want = fp8 ? ref_round_to(REF_FP8E4M3, x / (double)(float)0.03) : x;
                    cr_assert_eq(kout[ki], want);
                }
        for (size_t i = 0; i < kin->numel; i++) {
            if (!written[i])
                cr_assert_eq(kout[i], ref_load(c->kv_dtype, kin->data, i), "element %zu", i);
            cr_assert(kemu[i] == kout[i] || (isnan(kemu[i]) && isnan(kout[i])));
        }
        free(written);
        ran_free(&r);
    }
}

/* block_alloc = high in a pool of 32768 blocks gives the highest ids and the same outputs as
 * the identity allocation (same inputs: the run seed makes the two cases' seeds equal). */
Test(paths, high_block_ids_same_outputs, .fini = cleanup)
{
    static const char *const fmt = "[%s]\npath = paged_decode\nheads_q = 4\nheads_kv = 1\n"
                                   "head_dim = 32\nseq_lens = 5,40,17\nblock_size = 2\n"
                                   "num_blocks = 32768\nblock_alloc = %s\nlayout = hnd\n";
    char a[512], b[512];
    snprintf(a, sizeof a, fmt, "hi", "high");
    snprintf(b, sizeof b, fmt, "id", "identity");
    ran rh, ri;
    run_case(&rh, a, 0);
    run_case(&ri, b, ref_hash_str("hi") ^ ref_hash_str("id"));
    cr_assert_eq(rh.l.v[0].seed, ri.l.v[0].seed);
    const hx_tensor *bt = hx_tensors_get(&rh.in, "block_table");
    const int32_t *ids = bt->data;
    cr_assert_eq(ids[0], 32767);
    for (size_t i = 0; i < bt->numel; i++)
        cr_assert(ids[i] == -1 || ids[i] >= 32768 - 33, "id %d", ids[i]);
    for (int o = 0; o < 2; o++) {
        expect_same(rh.ref.t[o].data, ri.ref.t[o].data, rh.ref.t[o].numel, rh.ref.t[o].name);
        expect_same(rh.emu.t[o].data, ri.emu.t[o].data, rh.emu.t[o].numel, rh.emu.t[o].name);
    }
    ran_free(&rh);
    ran_free(&ri);
}

/* The extend descriptor: f64 truth is the one-pass extend; its emulation runs the chunked
 * algorithm and stays within the bf16 profile of it. */
Test(paths, extend_emulation_is_chunked, .fini = cleanup)
{
    ran r;
    run_case(&r,
             "[x]\npath = extend\nheads_q = 4\nheads_kv = 2\nhead_dim = 64\nseq_lens = 7,30\n"
             "context_lens = 300,45\nchunk_tokens = 50\n",
             0);
    cr_assert_eq(r.l.v[0].chunk_tokens, 50);
    const hx_tensor *o = hx_tensors_get(&r.ref, "out"), *oe = hx_tensors_get(&r.emu, "out");
    const double *a = o->data, *b = oe->data;
    int differ = 0;
    for (size_t i = 0; i < o->numel; i++) {
        cr_assert(fabs(a[i] - b[i]) <= 1.5e-2 + 0x1p-6 * fabs(a[i]), "out[%zu] %g vs %g", i, a[i], b[i]);
        differ |= a[i] != b[i];
    }
    cr_assert(differ, "the emulation rounds somewhere");
    ran_free(&r);
}

/* check() fills the documented defaults and names the key at fault. */
Test(paths, check_defaults_and_errors, .fini = cleanup)
{
    hx_caselist l = {0};
    hx_err e = {0};
    cr_assert_eq(load_case("[c]\npath = paged_decode\nheads_q = 8\nhead_dim = 64\nseq_lens = 9\n"
                           "kv_dtype = fp8e4m3\n",
                           0, &l, &e),
                 HX_OK, "%s", e.msg);
    const hx_case *c = &l.v[0];
    cr_assert_eq(c->layout, HX_LAYOUT_NHD);
    cr_assert_eq(c->block_size, 16);
    cr_assert_eq(c->block_alloc, HX_ALLOC_PERMUTED);
    cr_assert_eq(c->dtype, REF_BF16);
    cr_assert_eq(c->heads_kv, 8);
    cr_assert_eq(c->k_scale, 1.0 / 64);
    cr_assert_eq(c->v_scale, 1.0 / 64);
    cr_assert_eq(c->scale, 0.125);
    hx_cases_free(&l);

    cr_assert_eq(load_case("[c]\npath = extend\nheads_q = 8\nhead_dim = 64\nseq_lens = 9\n"
                           "context_lens = 3\n",
                           0, &l, &e),
                 HX_OK, "%s", e.msg);
    cr_assert_eq(l.v[0].chunk_tokens, 32768);
    cr_assert_eq(l.v[0].kv_dtype, REF_BF16);
    hx_cases_free(&l);

    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"[c]\npath = paged_decode\nheads_q = 8\nhead_dim = 56\nseq_lens = 9\nlayout = shuffled\n"
         "kv_dtype = fp8e4m3\n",
         ":4: [c] key 'head_dim': 56 is not a multiple of x = 16"},
        {"[c]\npath = paged_decode\nheads_q = 8\nhead_dim = 64\nseq_lens = 9\nlayout = shuffled\n"
         "block_size = 12\n",
         ":7: [c] key 'block_size': 12 is not a multiple of x = 8"},
        {"[c]\npath = paged_decode\nheads_q = 8\nhead_dim = 64\nseq_lens = 9\nkv_dtype = f16\n",
         "key 'kv_dtype': 'f16' is not a cache dtype for dtype bf16"},
        {"[c]\npath = paged_decode\nheads_q = 8\nhead_dim = 64\nseq_lens = 9\nk_scale = 0.5\n",
         "key 'k_scale': only fp8e4m3 caches are scaled"},
        {"[c]\npath = paged_decode\nheads_q = 8\nhead_dim = 64\nseq_lens = 9\nkv_dtype = fp8e4m3\n"
         "v_scale = 1e-300\n",
         "key 'v_scale': 1e-300 is not a normal f32"},
        {"[c]\npath = extend\nheads_q = 8\nhead_dim = 64\nseq_lens = 9,0\ncontext_lens = 3\n",
         "key 'seq_lens': request 1 has 0 new tokens"},
        {"[c]\npath = mixed\nheads_q = 8\nhead_dim = 64\nseq_lens = 9\n",
         "missing key 'context_lens'"},
        {"[c]\npath = gather_cache\nheads_kv = 2\nhead_dim = 64\ncontext_lens = 9,4\nseq_lens = 9,5\n",
         "key 'seq_lens': sequence 1 gathers 5 tokens but holds context_lens = 4"},
        {"[c]\npath = cache_write\nheads_kv = 2\nhead_dim = 64\nseq_lens = 9,4\ntokens = 12\n",
         "key 'tokens': 12 is fewer than the 13 new tokens"},
        {"[c]\npath = paged_decode\nheads_q = 8\nhead_dim = 64\nseq_lens = 40,9\nnum_blocks = 3\n",
         "key 'num_blocks': 3 blocks cannot hold"},
        {"[c]\npath = paged_decode\nheads_q = 8\nhead_dim = 64\nseq_lens = 9\nchunk_tokens = 3\n",
         "key 'chunk_tokens' is not used by path 'paged_decode'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hx_err e2 = {0};
        hx_caselist l2 = {0};
        int rc = load_case(bad[i].text, 0, &l2, &e2);
        if (rc == HX_OK) { /* num_blocks is checked when the block table is made */
            hx_tensors in = {0};
            rc = l2.v[0].path->make_inputs(&l2.v[0], &in, &e2);
            hx_tensors_free(&in);
        }
        cr_assert_eq(rc, HX_ECASE, "case %zu: rc %d (%s)", i, rc, e2.msg);
        cr_assert(strstr(e2.msg, bad[i].needle), "case %zu: '%s' lacks '%s'", i, e2.msg, bad[i].needle);
        hx_cases_free(&l2);
    }
}

/* check_inputs refuses loaded index tensors that would read outside the cache. */
Test(paths, check_inputs_refuses_bad_indices, .fini = cleanup)
{
    ran r;
    run_case(&r, "[w]\npath = cache_write\nheads_kv = 1\nhead_dim = 16\nseq_lens = 3,2\n", 0);
    const hx_case *c = &r.l.v[0];
    hx_err e = {0};
    int64_t *s = hx_tensors_get(&r.in, "slot_mapping")->data;
    const int64_t keep = s[1];
    s[1] = s[0];
    cr_assert_eq(c->path->check_inputs(c, &r.in, &e), HX_ECASE);
    cr_assert(strstr(e.msg, "slot_mapping[0] and [1] are both slot"), "%s", e.msg);
    s[1] = 32;
    cr_assert_eq(c->path->check_inputs(c, &r.in, &e), HX_ECASE);
    cr_assert(strstr(e.msg, "outside [-1, 32)"), "%s", e.msg);
    s[1] = keep;
    cr_assert_eq(c->path->check_inputs(c, &r.in, &e), HX_OK);
    ran_free(&r);

    run_case(&r, "[m]\npath = mixed\nheads_q = 2\nhead_dim = 16\nseq_lens = 3,1\ncontext_lens = 0,4\n", 0);
    c = &r.l.v[0];
    hx_tensor *kn = hx_tensors_get(&r.in, "k_new");
    ref_store(REF_BF16, kn->data, 33, 5.0);
    cr_assert_eq(c->path->check_inputs(c, &r.in, &e), HX_ECASE);
    cr_assert(strstr(e.msg, "k_new of request 0 token 1 head 0 dim 1 differs"), "%s", e.msg);
    int32_t *bt = hx_tensors_get(&r.in, "block_table")->data;
    bt[0] = -1;
    cr_assert_eq(c->path->check_inputs(c, &r.in, &e), HX_ECASE);
    cr_assert(strstr(e.msg, "outside the pool"), "%s", e.msg);
    ran_free(&r);
}
