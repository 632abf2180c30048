/* test_gpu_probe.c - the streaming-read probe reads every word exactly once (XOR check over
 * odd sizes and grid shapes), and rejects what it cannot do; the matrix primitive multiplies
 * ARANGE tiles exactly through its documented fragment layout; paged_decode mma's cluster
 * merge gives the bits of its workspace + combine path. Label gpu. */
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

/* ------------------------------------------------------------------ conversions */
static int conv_is_nan32(uint32_t u) { return (u & 0x7FFFFFFFu) > 0x7F800000u; }
static int conv_is_nan16(uint32_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu); }
static uint32_t conv_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float conv_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* Runs op over in[0 .. n) on the device and counts the results that differ from want(); a NaN
 * the reference gives may come back as any NaN for ops 0 and 1 (the hardware's payload). */
static int conv_check(int op, const uint32_t *in, size_t n)
{
    uint32_t *out = malloc(n * 4);
    cr_assert(out);
    void *din, *dout;
    cr_assert_eq(opt_alloc(&din, n * 4), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_alloc(&dout, n * 4), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_upload(din, in, n * 4), OPT_OK);
    cr_assert_eq(opt_convert_probe(op, din, dout, n, NULL), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_download(out, dout, n * 4), OPT_OK, "%s", opt_last_error());
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t want;
        int nan_ok = 0;
        if (op == 0) {
            want = conv_bits(ref_f16_to_f32((uint16_t)in[i]));
            nan_ok = conv_is_nan32(want) && conv_is_nan32(out[i]);
        } else if (op == 1) {
            want = ref_f32_to_f16(conv_float(in[i]));
            nan_ok = conv_is_nan16(want) && conv_is_nan16(out[i]);
        } else {
            want = ref_f32_to_fp8e4m3(conv_float(in[i])); /* NaN codes too: sign and all */
        }
        if (out[i] != want && !nan_ok && bad++ < 8)
            cr_log_error("op %d: input 0x%08x gives 0x%x, want 0x%x", op, in[i], out[i], want);
    }
    opt_free(din), opt_free(dout);
    free(out);
    return bad;
}

/* The hardware conversions kernels use (gpu_port.h gpu_f16_to_f32 / gpu_f32_to_f16 and
 * paged_kv.h pkv_f32x2_to_e4m3, opt_convert_probe) against the reference's independent ones
 * (ref_dtype.c), bit for bit: every f16 value widened; narrowed to f16 and to fp8, every bf16
 * value as an f32 (zeros, subnormals, inf and NaN of both signs), every tie halfway between two
 * f16 values and between two fp8 values (round to nearest even decides them), and 2^20 random
 * f32 bit patterns. The fp8 codes must match NaN signs included. */
Test(convert, hardware_conversions_match_reference)
{
    const size_t nrand = (size_t)1 << 20, n = 65536 + 65536 + 2 * 256 + nrand;
    uint32_t *in = malloc(n * 4);
    cr_assert(in);
    size_t m = 0;
    for (uint32_t b = 0; b < 65536; b++)
        in[m++] = b << 16; /* every bf16 value */
    for (uint32_t h = 0; h < 65536; h++) { /* f16 ties: halfway to the next magnitude */
        const double a = ref_f16_to_f32((uint16_t)h), b = ref_f16_to_f32((uint16_t)(h + 1));
        if ((h & 0x7C00u) == 0x7C00u) /* inf, NaN: themselves */
            in[m++] = conv_bits((float)a);
        else if ((h & 0x7FFFu) == 0x7BFFu) /* +-65520: the tie between 65504 and overflow */
            in[m++] = conv_bits((float)(a * 65520.0 / 65504.0));
        else /* exact in f32 (12 significant bits) */
            in[m++] = conv_bits((float)((a + b) / 2));
    }
    for (uint32_t c = 0; c < 256; c++) { /* fp8 ties, and the code itself */
        const double a = ref_fp8e4m3_to_f32((uint8_t)c), b = ref_fp8e4m3_to_f32((uint8_t)((c & 0x80u) | ((c + 1) & 0x7Fu)));
        in[m++] = conv_bits((float)a);
        in[m++] = conv_bits((c & 0x7Fu) >= 0x7Eu ? (float)a * 1.0625f : (float)((a + b) / 2));
    }
    uint64_t s = 0x9E3779B97F4A7C15ull; /* xorshift64 */
    for (size_t i = 0; i < nrand; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        in[m++] = (uint32_t)(s >> 32);
    }
    cr_assert_eq(m, n);
    int bad = 0;
    uint32_t *lo = malloc(65536 * 4);
    cr_assert(lo);
    for (uint32_t h = 0; h < 65536; h++)
        lo[h] = h;
    bad += conv_check(0, lo, 65536);
    free(lo);
    bad += conv_check(1, in, n);
    bad += conv_check(2, in, n);
    cr_expect_eq(bad, 0, "%d conversions differ from the reference's", bad);
    free(in);
}

Test(convert, rejects_bad_arguments)
{
    cr_expect_eq(opt_convert_probe(3, NULL, NULL, 0, NULL), OPT_EINVAL);
    cr_expect_eq(opt_convert_probe(2, (const uint32_t *)8, (uint32_t *)8, 3, NULL), OPT_EINVAL);
    cr_expect_eq(opt_convert_probe(0, NULL, NULL, 4, NULL), OPT_EINVAL);
    cr_expect_eq(opt_convert_probe(1, NULL, NULL, 0, NULL), OPT_OK);
}

/* paged_decode mma's cluster merge (Hopper) against its workspace + combine path: the same
 * bits in out and lse. GQA 16 (hq 32 over 2 KV heads), head_dim 128, bf16 nhd, 64 sequences
 * of up to 2048 keys -- the shape whose plan takes two splits in one wave -- with ragged
 * lengths: empty, inside one split (written by its block), across both. The block tables
 * point into a pool of 256 pages (sequences share pages; the kernel only reads them). Skips
 * where the launch did not take clusters (pre-Hopper, AMD, or a plan of another shape). */
Test(probe, decode_cluster_merge_bits, .timeout = 120)
{
    opt_device_info info;
    cr_assert_eq(opt_device_query(0, &info), OPT_OK, "%s", opt_last_error());
    if (opt_paged_decode_mma_unsupported(128, OPT_BF16, OPT_BF16, info.cc_major))
        cr_skip_test("paged_decode mma does not run here");
    enum { B = 64, HQ = 32, HKV = 2, D = 128, BS = 16, MAXB = 128, POOL = 256 };
    const size_t n_cache = (size_t)POOL * BS * HKV * D, n_q = (size_t)B * HQ * D;
    uint16_t *hk = malloc(n_cache * 2), *hv = malloc(n_cache * 2), *hq = malloc(n_q * 2);
    int32_t *bt = malloc(sizeof(int32_t) * B * MAXB), lens[B];
    cr_assert(hk && hv && hq && bt);
    for (size_t i = 0; i < n_cache; i++) {
        hk[i] = ref_f32_to_bf16((float)((int)(ref_rng_u64(0xc1a5, i) % 2001) - 1000) / 1000.0f);
        hv[i] = ref_f32_to_bf16((float)((int)(ref_rng_u64(0xc1a6, i) % 2001) - 1000) / 1000.0f);
    }
    for (size_t i = 0; i < n_q; i++)
        hq[i] = ref_f32_to_bf16((float)((int)(ref_rng_u64(0xc1a7, i) % 2001) - 1000) / 500.0f);
    for (int b = 0; b < B; b++) {
        lens[b] = b == 3 ? 0 : b % 7 == 1 ? 1 + (int)(ref_rng_u64(0xc1a8, b) % 900)
                                          : MAXB * BS - (int)(ref_rng_u64(0xc1a9, b) % 1000);
        for (int j = 0; j < MAXB; j++)
            bt[b * MAXB + j] = (int32_t)(ref_rng_u64(0xc1aa, (uint64_t)b * MAXB + j) % POOL);
    }
    void *dk, *dv, *dq, *dbt, *dlens, *dscale, *dout[2], *dlse[2], *ws;
    const size_t ws_bytes = opt_paged_decode_mma_workspace(B, HQ, HKV, D, MAXB, BS);
    cr_assert_eq(opt_alloc(&dk, n_cache * 2), OPT_OK);
    cr_assert_eq(opt_alloc(&dv, n_cache * 2), OPT_OK);
    cr_assert_eq(opt_alloc(&dq, n_q * 2), OPT_OK);
    cr_assert_eq(opt_alloc(&dbt, sizeof(int32_t) * B * MAXB), OPT_OK);
    cr_assert_eq(opt_alloc(&dlens, sizeof lens), OPT_OK);
    cr_assert_eq(opt_alloc(&dscale, 4), OPT_OK);
    cr_assert_eq(opt_alloc(&ws, ws_bytes ? ws_bytes : 16), OPT_OK);
    for (int r = 0; r < 2; r++) {
        cr_assert_eq(opt_alloc(&dout[r], n_q * 2), OPT_OK);
        cr_assert_eq(opt_alloc(&dlse[r], sizeof(float) * B * HQ), OPT_OK);
    }
    cr_assert_eq(opt_upload(dk, hk, n_cache * 2), OPT_OK);
    cr_assert_eq(opt_upload(dv, hv, n_cache * 2), OPT_OK);
    cr_assert_eq(opt_upload(dq, hq, n_q * 2), OPT_OK);
    cr_assert_eq(opt_upload(dbt, bt, sizeof(int32_t) * B * MAXB), OPT_OK);
    cr_assert_eq(opt_upload(dlens, lens, sizeof lens), OPT_OK);
    opt_paged_decode_args a = {.batch = B, .hq = HQ, .dtype = OPT_BF16, .q = dq,
                               .block_table = dbt, .max_blocks = MAXB, .seq_lens = dlens,
                               .scale = 0.08838834764831845f, .softcap = 0.0f};
    a.cache = (opt_kv_cache){.layout = OPT_KV_NHD, .dtype = OPT_BF16, .block_size = BS,
                             .heads = HKV, .head_dim = D, .k = dk, .v = dv,
                             .k_scale = dscale, .v_scale = dscale};
    int used[2];
    const int was = opt_paged_decode_mma_clusters(-1);
    for (int r = 0; r < 2; r++) { /* r = 0: clusters allowed; 1: workspace + combine */
        opt_paged_decode_mma_clusters(r == 0);
        a.out = dout[r], a.lse = dlse[r];
        cr_assert_eq(opt_paged_decode_mma(&a, ws, ws_bytes, NULL), OPT_OK, "%s", opt_last_error());
        used[r] = opt_paged_decode_mma_used_clusters();
        cr_assert_eq(opt_synchronize(), OPT_OK, "%s", opt_last_error());
    }
    opt_paged_decode_mma_clusters(was);
    cr_expect_eq(used[1], 0, "clusters were refused, yet the launch used them");
    uint16_t *o[2] = {malloc(n_q * 2), malloc(n_q * 2)};
    float *l[2] = {malloc(sizeof(float) * B * HQ), malloc(sizeof(float) * B * HQ)};
    cr_assert(o[0] && o[1] && l[0] && l[1]);
    for (int r = 0; r < 2; r++) {
        cr_assert_eq(opt_download(o[r], dout[r], n_q * 2), OPT_OK);
        cr_assert_eq(opt_download(l[r], dlse[r], sizeof(float) * B * HQ), OPT_OK);
    }
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n_q; i++)
        if (o[0][i] != o[1][i] && !bad++)
            first = i;
    cr_expect_eq(bad, 0, "%zu of %zu out elements differ (first: %zu, %04x vs %04x)", bad, n_q,
                 first, o[0][first], o[1][first]);
    cr_expect_eq(memcmp(l[0], l[1], sizeof(float) * B * HQ), 0, "lse differs");
    for (int r = 0; r < 2; r++) {
        opt_free(dout[r]), opt_free(dlse[r]);
        free(o[r]), free(l[r]);
    }
    opt_free(dk), opt_free(dv), opt_free(dq), opt_free(dbt), opt_free(dlens), opt_free(dscale);
    opt_free(ws);
    free(hk), free(hv), free(hq), free(bt);
    if (!used[0])
        cr_skip_test("this device and plan did not take clusters: nothing to compare (%s)", info.name);
}
