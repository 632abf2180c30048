/* test_gpu_probe.c - the streaming-read probe reads every word exactly once (XOR check over
 * odd sizes and grid shapes), and rejects what it cannot do; the matrix primitive multiplies
 * ARANGE tiles exactly through its documented fragment layout. Label gpu. */
#include <stdlib.h>
#include <string.h>

#include <criterion/logging.h>

#include "gpu_main.h"
#include "ref.h"

static void check_probe(size_t bytes, int blocks)
{
    size_t n = bytes / 4;
    uint32_t *host = malloc(bytes), want[4] = {0, 0, 0, 0};
    cr_assert(host);
    for (size_t i = 0; i < n; i++) {
        host[i] = (uint32_t)ref_rng_u64(0x5eed, i);
        want[i % 4] ^= host[i];
    }
    void *dbuf = NULL, *dpart = NULL;
    cr_assert_eq(opt_alloc(&dbuf, bytes), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_alloc(&dpart, (size_t)blocks * 16), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_upload(dbuf, host, bytes), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_probe_read(dbuf, bytes, dpart, blocks, NULL), OPT_OK, "%s", opt_last_error());
    uint32_t *part = malloc((size_t)blocks * 16), got[4] = {0, 0, 0, 0};
    cr_assert(part);
    cr_assert_eq(opt_download(part, dpart, (size_t)blocks * 16), OPT_OK, "%s", opt_last_error());
    for (int b = 0; b < blocks; b++)
        for (int j = 0; j < 4; j++)
            got[j] ^= part[4 * b + j];
    for (int j = 0; j < 4; j++)
        cr_expect_eq(got[j], want[j], "bytes %zu blocks %d lane %d: %08x != %08x", bytes, blocks,
                     j, got[j], want[j]);
    opt_free(dbuf);
    opt_free(dpart);
    free(host);
    free(part);
}

Test(probe, xor_of_every_word)
{
    check_probe(16, 1);
    check_probe(16 * 1013, 3);
    check_probe(16 * 1013, 17);
    check_probe((size_t)64 << 20, 528);
    check_probe(((size_t)64 << 20) + 16 * 7, 1);
}

Test(probe, rejects_bad_arguments)
{
    void *d = NULL;
    cr_assert_eq(opt_alloc(&d, 64), OPT_OK);
    cr_expect_eq(opt_probe_read(d, 24, d, 1, NULL), OPT_EINVAL);
    cr_expect_eq(opt_probe_read((char *)d + 4, 16, d, 1, NULL), OPT_EINVAL);
    cr_expect_eq(opt_probe_read(d, 16, d, 0, NULL), OPT_EINVAL);
    opt_free(d);
}

/* A = arange(256) and B = arange(256) + 7 (mod 256) as 16x16 bf16, C0 = arange(256) / 4:
 * every value and every partial sum is an integer or quarter below 2^24, so f32 accumulation
 * is exact in any order and each element must equal the host's product bit for bit. A wrong
 * fragment coordinate moves values and shows as a mismatch at a named element. */
Test(mma, arange_tile_exact)
{
    uint16_t a[256], b[256];
    float c0[256], c[256];
    for (int i = 0; i < 256; i++) {
        a[i] = ref_f32_to_bf16((float)i);
        b[i] = ref_f32_to_bf16((float)((i + 7) % 256));
        c0[i] = (float)i / 4.0f;
    }
    void *da, *db, *dc0, *dc;
    cr_assert_eq(opt_alloc(&da, sizeof a), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_alloc(&db, sizeof b), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_alloc(&dc0, sizeof c0), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_alloc(&dc, sizeof c), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_upload(da, a, sizeof a), OPT_OK);
    cr_assert_eq(opt_upload(db, b, sizeof b), OPT_OK);
    cr_assert_eq(opt_upload(dc0, c0, sizeof c0), OPT_OK);
    cr_assert_eq(opt_mma_arange(da, db, dc0, dc, NULL), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_download(c, dc, sizeof c), OPT_OK, "%s", opt_last_error());
    int bad = 0;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            double want = c0[i * 16 + j];
            for (int k = 0; k < 16; k++)
                want += (double)(i * 16 + k) * (double)((k * 16 + j + 7) % 256);
            if ((double)c[i * 16 + j] != want && bad++ < 8)
                cr_log_error("C[%d][%d] = %.2f, want %.2f", i, j, c[i * 16 + j], want);
        }
    cr_expect_eq(bad, 0, "%d of 256 elements wrong", bad);
    opt_free(da), opt_free(db), opt_free(dc0), opt_free(dc);
}

/* Hopper's warpgroup MMA through the layout helpers of gpu_port.h (opt_wgmma_arange): both
 * operand orders mha_wgmma and mla_decode wgmma use -- S = Q K^T (A and B K-major in
 * 128-byte-swizzled tiles) and O = P V (A from registers or from a K-major tile, B read
 * MN-major) -- for every (n, k) in {64, 128}^2, bf16 and f16,
 * two warpgroups over 128 rows (the second starting at row 64 of the tile, as in the kernel).
 * The values are small integers (|a| <= 5, |b| <= 6): exact in both dtypes, every partial sum
 * below 2^12, so each element must equal the host product bit for bit; a wrong swizzle,
 * descriptor offset or fragment coordinate moves values and shows at a named element. Skipped
 * where opt_wgmma_unsupported() gives a reason (not an sm_90 device, or no sm_90a image). */
static uint16_t wg_bits(int f16, int x)
{
    return f16 ? ref_f32_to_f16((float)x) : ref_f32_to_bf16((float)x);
}

static int wg_a(int i, int kk) { return (i * 3 + kk * 5) % 11 - 5; }
static int wg_b(int kk, int j) { return (kk * 7 + j * 2 + kk * j) % 13 - 6; } /* B[k][j] */

static int check_wgmma(int mode, int n, int k, int f16)
{
    uint16_t *a = malloc(sizeof *a * 128 * k), *b = malloc(sizeof *b * (size_t)n * k);
    float *c = malloc(sizeof *c * 128 * n);
    cr_assert(a && b && c);
    for (int i = 0; i < 128; i++)
        for (int kk = 0; kk < k; kk++)
            a[i * k + kk] = wg_bits(f16, wg_a(i, kk));
    for (int kk = 0; kk < k; kk++)
        for (int j = 0; j < n; j++) /* mode 0: b [n][k] (K-major); modes 1, 2: b [k][n] */
            b[mode == 0 ? j * k + kk : kk * n + j] = wg_bits(f16, wg_b(kk, j));
    void *da, *db, *dc;
    cr_assert_eq(opt_alloc(&da, sizeof *a * 128 * k), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_alloc(&db, sizeof *b * (size_t)n * k), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_alloc(&dc, sizeof *c * 128 * n), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_upload(da, a, sizeof *a * 128 * k), OPT_OK);
    cr_assert_eq(opt_upload(db, b, sizeof *b * (size_t)n * k), OPT_OK);
    cr_assert_eq(opt_flush(dc, sizeof *c * 128 * n, 0xff, NULL), OPT_OK); /* NaN poison */
    cr_assert_eq(opt_wgmma_arange(mode, n, k, f16, da, db, dc, NULL), OPT_OK, "%s",
                 opt_last_error());
    cr_assert_eq(opt_download(c, dc, sizeof *c * 128 * n), OPT_OK, "%s", opt_last_error());
    int bad = 0;
    for (int i = 0; i < 128; i++)
        for (int j = 0; j < n; j++) {
            double want = 0;
            for (int kk = 0; kk < k; kk++)
                want += (double)wg_a(i, kk) * wg_b(kk, j);
            if ((double)c[i * n + j] != want && bad++ < 8)
                cr_log_error("mode %d n %d k %d %s: C[%d][%d] = %.1f, want %.1f", mode, n, k,
                             f16 ? "f16" : "bf16", i, j, c[i * n + j], want);
        }
    cr_expect_eq(bad, 0, "mode %d (%s) n %d k %d %s: %d of %d elements wrong", mode,
                 mode == 0 ? "S = Q K^T" : mode == 1 ? "O = P V" : "O = P V, P shared", n, k,
                 f16 ? "f16" : "bf16", bad, 128 * n);
    opt_free(da), opt_free(db), opt_free(dc);
    free(a), free(b), free(c);
    return bad;
}

Test(wgmma, swizzled_layouts_exact)
{
    opt_device_info d;
    cr_assert_eq(opt_device_query(0, &d), OPT_OK, "%s", opt_last_error());
    const char *why = opt_wgmma_unsupported(d.cc_major);
    if (why)
        cr_skip_test("%s", why);
    for (int mode = 0; mode < 3; mode++)
        for (int f16 = 0; f16 < 2; f16++)
            for (int n = 64; n <= 128; n *= 2)
                for (int k = 64; k <= 128; k *= 2)
                    check_wgmma(mode, n, k, f16);
}
