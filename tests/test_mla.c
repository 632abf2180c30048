/* test_mla.c - MLA decode (SPEC section 8) and prefill (section 9): against textbook oracles
 * that read the paged latent cache through the block table themselves, against ref_attn over
 * the gathered rows, and the identities of VALIDATION.md: absorbed == non-absorbed, chunked
 * context (any budget, 1 included) == one pass, permuted block table == identity; plus the
 * harness paths' generated inputs (NaN in every slot no sequence uses).
 *
 * Every cache here has NaN in its unused slots and in a spare block, so any read past a
 * sequence's length poisons the result.
 */
#include "ref_mla.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx.h"

enum { ROW = REF_MLA_ROW, LAT = REF_MLA_LAT, QK = REF_MLA_QK, DV = REF_MLA_V, MAXB = 8 };

/* n values of dtype t, sd * N(0, 1) rounded to t. */
static void *gen(ref_dtype t, size_t n, uint64_t key, double sd)
{
    void *p = malloc(n * ref_dtype_size(t) + 1);
    cr_assert(p);
    for (size_t i = 0; i < n; i++)
        ref_store(t, p, i, sd * ref_rng_normal(key, i));
    return p;
}

static double *nan_buf(size_t n)
{
    double *p = malloc(n * sizeof *p + 1);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

/* A paged latent cache of `batch` sequences, blocks handed out in a permuted order (or in
 * order), one spare block; every slot no sequence uses is NaN. */
typedef struct cache {
    ref_mla_cache c;
    int32_t bt[MAXB * 64];
    int max_blocks;
} cache;

static void cache_init(cache *k, int batch, const int32_t *lens, int bs, ref_dtype dt,
                       double k_scale, int permuted, uint64_t seed)
{
    memset(k, 0, sizeof *k);
    k->max_blocks = 1;
    int need = 0;
    for (int b = 0; b < batch; b++) {
        const int nb = (lens[b] + bs - 1) / bs;
        need += nb;
        k->max_blocks = nb > k->max_blocks ? nb : k->max_blocks;
    }
    cr_assert(batch <= MAXB && k->max_blocks <= 64);
    const int pool = need + 1;
    int32_t ids[512];
    cr_assert(pool <= 512);
    for (int i = 0; i < pool; i++)
        ids[i] = i;
    for (int i = pool - 1; permuted && i > 0; i--) {
        const int j = (int)ref_rng_range(seed, (uint64_t)i, 0, i), t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
    void *data = malloc((size_t)pool * bs * ROW * ref_dtype_size(dt));
    for (size_t i = 0; i < (size_t)pool * bs * ROW; i++)
        ref_store(dt, data, i, NAN);
    int next = 0;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < k->max_blocks; j++)
            k->bt[b * k->max_blocks + j] = j * bs < lens[b] ? ids[next++] : -1;
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < lens[b]; t++) {
            const size_t base = ((size_t)k->bt[b * k->max_blocks + t / bs] * bs + t % bs) * ROW;
            for (int d = 0; d < ROW; d++) {
                const double x = ref_rng_normal(seed + 1, ((size_t)b * 4096 + t) * ROW + d);
                ref_store(dt, data, base + d, dt == REF_FP8E4M3 ? x / k_scale : x);
            }
        }
    k->c = (ref_mla_cache){dt, data, pool, bs, k_scale};
}

static void cache_free(cache *k)
{
    free((void *)k->c.data);
}

/* Element d of token t of sequence b, as the contract reads it. */
static double cache_val(const cache *k, int b, int t, int d)
{
    const int bs = k->c.block_size;
    const size_t i = ((size_t)k->bt[b * k->max_blocks + t / bs] * bs + t % bs) * ROW + d;
    return ref_load(k->c.dtype, k->c.data, i) * (k->c.dtype == REF_FP8E4M3 ? k->c.k_scale : 1.0);
}

static void expect_close(const double *x, const double *y, size_t n, double tol, const char *tag)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = isfinite(y[i]) ? fmax(m, fabs(y[i])) : m;
    m = m > 0 ? m : 1;
    for (size_t i = 0; i < n; i++) {
        if (isinf(y[i])) {
            cr_assert(x[i] == y[i], "%s[%zu] = %g, want %g", tag, i, x[i], y[i]);
            continue;
        }
        cr_assert(fabs(x[i] - y[i]) <= tol * m, "%s[%zu] = %.17g, want %.17g", tag, i, x[i], y[i]);
    }
}

/* ------------------------------------------------------------ conversions */

static int same(double a, double b)
{
    return (isnan(a) && isnan(b)) || (a == b && signbit(a) == signbit(b));
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The fast conversions against ref.h's on every code, on a sweep of f32 bit patterns, and at
 * and beside every rounding tie of both formats. */
Test(conv, fast_equals_reference)
{
    for (uint32_t b = 0; b < 65536; b++)
        cr_assert(same(ref_fast_bf16_to_f32((uint16_t)b), ref_bf16_to_f32((uint16_t)b)),
                  "bf16 0x%04x", b);
    for (uint32_t b = 0; b < 256; b++)
        cr_assert(same(ref_fast_fp8e4m3_to_f32((uint8_t)b), ref_fp8e4m3_to_f32((uint8_t)b)),
                  "fp8 0x%02x", b);

    enum { NX = 5 };
    for (uint64_t i = 0; i < (1ull << 32); i += 4099) {
        float x[NX] = {from_bits((uint32_t)i)};
        int n = 1;
        if (i < 65536 * 4099ull) { /* a bf16 tie (and its neighbours), and a bf16 value */
            const uint32_t b = (uint32_t)(i / 4099);
            x[n++] = from_bits(b << 16 | 0x8000u);
            x[n++] = from_bits((b << 16 | 0x8000u) - 1);
            x[n++] = from_bits((b << 16 | 0x8000u) + 1);
            x[n++] = from_bits(b << 16);
        }
        for (int k = 0; k < n; k++) {
            cr_assert_eq(ref_fast_f32_to_bf16(x[k]), ref_f32_to_bf16(x[k]), "bf16 of %a",
                         (double)x[k]);
            cr_assert_eq(ref_fast_f32_to_fp8e4m3(x[k]), ref_f32_to_fp8e4m3(x[k]), "fp8 of %a",
                         (double)x[k]);
        }
    }
    /* fp8 ties: the midpoint of every pair of neighbouring codes, and its f32 neighbours */
    for (int c = 0; c < 0x7E; c++)
        for (int sgn = 0; sgn < 2; sgn++) {
            const float m =
                (ref_fp8e4m3_to_f32((uint8_t)c) + ref_fp8e4m3_to_f32((uint8_t)(c + 1))) / 2;
            const float x[3] = {sgn ? -m : m, nextafterf(sgn ? -m : m, 0),
                                nextafterf(sgn ? -m : m, INFINITY)};
            for (int k = 0; k < 3; k++)
                cr_assert_eq(ref_fast_f32_to_fp8e4m3(x[k]), ref_f32_to_fp8e4m3(x[k]), "fp8 of %a",
                             (double)x[k]);
        }
}

/* ------------------------------------------------------------------ decode */

enum { B = 4, HQ = 5 };
static const int32_t dec_lens[B] = {0, 1, 37, 300};

/* Per (sequence, head): every cached token, textbook softmax in long double. */
static void decode_oracle(const ref_mla_decode_args *a, const cache *k, double *out, double *lse)
{
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->hq; h++) {
            const int n = a->seq_lens[b];
            long double *s = malloc(((size_t)n + 1) * sizeof *s), mx = -INFINITY, den = 0;
            for (int j = 0; j < n; j++) {
                long double dot = 0;
                for (int d = 0; d < ROW; d++)
                    dot +=
                        (long double)ref_load(a->q_dtype, a->q, ((size_t)b * a->hq + h) * ROW + d) *
                        cache_val(k, b, j, d);
                s[j] = a->scale * dot;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j < n; j++)
                den += expl(s[j] - mx);
            for (int d = 0; d < LAT; d++) {
                long double acc = 0;
                for (int j = 0; j < n; j++)
                    acc += expl(s[j] - mx) * cache_val(k, b, j, d);
                out[((size_t)b * a->hq + h) * LAT + d] = n ? (double)(acc / den) : 0.0;
            }
            lse[(size_t)h * a->batch + b] = n ? (double)(mx + logl(den)) : -INFINITY;
            free(s);
        }
}

static ref_mla_decode_args decode_args(const cache *k, const void *q, ref_dtype qt,
                                       const int32_t *lens)
{
    return (ref_mla_decode_args){
        .batch = B, .hq = HQ, .q_dtype = qt, .q = q, .cache = k->c, .block_table = k->bt,
        .max_blocks = k->max_blocks, .seq_lens = lens, .scale = ref_mla_default_scale(),
        .mode = REF_EXACT, .p_dtype = REF_F32,
    };
}

static double dout[B * HQ * LAT], dlse[HQ * B], dout2[B * HQ * LAT], dlse2[HQ * B];

Test(decode, oracle_bf16_and_fp8)
{
    static const ref_dtype dts[2] = {REF_BF16, REF_FP8E4M3};
    for (int i = 0; i < 2; i++) {
        cache k;
        cache_init(&k, B, dec_lens, 16, dts[i], 0.0125, 1, 31 + i);
        void *q = gen(REF_BF16, (size_t)B * HQ * ROW, 33, 0.3);
        const ref_mla_decode_args a = decode_args(&k, q, REF_BF16, dec_lens);
        const int err = ref_mla_decode(&a, dout, dlse);
        cr_assert(err == REF_OK, "%s", ref_strerror(err));
        decode_oracle(&a, &k, dout2, dlse2);
        expect_close(dout, dout2, B * HQ * LAT, 1e-12, ref_dtype_name(dts[i]));
        expect_close(dlse, dlse2, HQ * B, 1e-12, "lse");
        for (int h = 0; h < HQ; h++)
            cr_assert(dlse[h * B] == -INFINITY && dout[h * LAT] == 0.0, "empty sequence");
        free(q);
        cache_free(&k);
    }
}

/* ref_attn over the rows gathered here into the standard [lk, 1, 576] layout, query heads as
 * heads (the decode hands them to ref_attn as query rows). */
Test(decode, equals_ref_attn_over_gathered_rows)
{
    cache k;
    cache_init(&k, B, dec_lens, 16, REF_FP8E4M3, 0.0125, 1, 41);
    void *q = gen(REF_BF16, (size_t)B * HQ * ROW, 43, 0.3);
    const ref_mla_decode_args a = decode_args(&k, q, REF_BF16, dec_lens);
    cr_assert(ref_mla_decode(&a, dout, dlse) == REF_OK);
    for (int b = 0; b < B; b++) {
        const int n = dec_lens[b];
        double *rows = malloc(((size_t)n + 1) * ROW * sizeof *rows), o[HQ * LAT], l[HQ];
        for (int j = 0; j < n; j++)
            for (int d = 0; d < ROW; d++)
                rows[(size_t)j * ROW + d] = cache_val(&k, b, j, d);
        const ref_view qv = {REF_BF16, (const uint16_t *)q + (size_t)b * HQ * ROW, HQ * ROW, ROW};
        const ref_view kv = {REF_F64, rows, ROW, ROW};
        const ref_attn_opts o_ = {a.scale, 0, 0, -1, REF_EXACT, REF_F32};
        cr_assert(ref_attn(1, n, HQ, 1, ROW, LAT, qv, kv, kv, &o_, o, HQ * LAT, l, 1) == REF_OK);
        for (int h = 0; h < HQ; h++) {
            cr_assert(n ? fabs(l[h] - dlse[h * B + b]) <= 1e-13 * fabs(l[h])
                        : dlse[h * B + b] == l[h]);
            for (int d = 0; d < LAT; d++)
                cr_assert(fabs(o[h * LAT + d] - dout[((size_t)b * HQ + h) * LAT + d]) <= 1e-13,
                          "seq %d head %d dim %d", b, h, d);
        }
        free(rows);
    }
    free(q);
    cache_free(&k);
}

Test(decode, permuted_table_equals_identity)
{
    cache kp, ki;
    cache_init(&kp, B, dec_lens, 8, REF_BF16, 1.0, 1, 51);
    cache_init(&ki, B, dec_lens, 8, REF_BF16, 1.0, 0, 51);
    void *q = gen(REF_BF16, (size_t)B * HQ * ROW, 53, 0.3);
    ref_mla_decode_args a = decode_args(&kp, q, REF_BF16, dec_lens);
    cr_assert(ref_mla_decode(&a, dout, dlse) == REF_OK);
    a = decode_args(&ki, q, REF_BF16, dec_lens);
    cr_assert(ref_mla_decode(&a, dout2, dlse2) == REF_OK);
    cr_assert(!memcmp(dout, dout2, sizeof dout) && !memcmp(dlse, dlse2, sizeof dlse));
    free(q);
    cache_free(&kp);
    cache_free(&ki);
}

/* REF_EMULATE keeps the fp8 latent exact (code * k_scale): every kernel multiplies the codes,
 * exact in bf16, and applies the one per-tensor k_scale to its f32 logits and output. With P
 * left exact (p_dtype f64) it is bit-identical to the exact decode of the same cache -- and a
 * cache of bf16-rounded values differs (k_scale 0.0125 is not a power of two), so the test
 * would see the rounding come back. */
Test(decode, emulate_keeps_fp8_latent_exact)
{
    cache k8, kb;
    cache_init(&k8, B, dec_lens, 16, REF_FP8E4M3, 0.0125, 0, 61);
    cache_init(&kb, B, dec_lens, 16, REF_BF16, 1.0, 0, 61);
    for (size_t i = 0; i < (size_t)k8.c.num_blocks * 16 * ROW; i++)
        ref_store(REF_BF16, (void *)kb.c.data, i,
                  ref_round_to(REF_BF16, ref_load(REF_FP8E4M3, k8.c.data, i) * 0.0125));
    void *q = gen(REF_BF16, (size_t)B * HQ * ROW, 63, 0.3);
    ref_mla_decode_args a = decode_args(&k8, q, REF_BF16, dec_lens);
    a.mode = REF_EMULATE;
    a.p_dtype = REF_F64;
    cr_assert(ref_mla_decode(&a, dout, dlse) == REF_OK);
    a = decode_args(&k8, q, REF_BF16, dec_lens);
    cr_assert(ref_mla_decode(&a, dout2, dlse2) == REF_OK);
    cr_assert(!memcmp(dout, dout2, sizeof dout) && !memcmp(dlse, dlse2, sizeof dlse));
    a = decode_args(&kb, q, REF_BF16, dec_lens);
    cr_assert(ref_mla_decode(&a, dout2, dlse2) == REF_OK);
    cr_assert(memcmp(dout, dout2, sizeof dout) != 0, "the bf16-rounded latent gives the same output");
    free(q);
    cache_free(&k8);
    cache_free(&kb);
}

Test(decode, bad_arguments)
{
    cache k;
    cache_init(&k, B, dec_lens, 16, REF_FP8E4M3, 0.0125, 1, 71);
    void *q = gen(REF_BF16, (size_t)B * HQ * ROW, 73, 0.3);
    int32_t lens[B], bt[MAXB * 64];
    ref_mla_decode_args a;
#define EXPECT_ERR(code, mutate)                                                   \
    do {                                                                           \
        a = decode_args(&k, q, REF_BF16, lens);                                    \
        memcpy(lens, dec_lens, sizeof lens);                                       \
        memcpy(bt, k.bt, sizeof bt);                                               \
        a.block_table = bt;                                                        \
        mutate;                                                                    \
        const int e_ = ref_mla_decode(&a, dout, dlse);                             \
        cr_assert(e_ == (code), "%s: got %s", #mutate, ref_strerror(e_));          \
    } while (0)
    EXPECT_ERR(REF_OK, (void)0);
    EXPECT_ERR(REF_ESHAPE, lens[2] = k.max_blocks * 16 + 1);
    EXPECT_ERR(REF_ESHAPE, lens[1] = -1);
    EXPECT_ERR(REF_ERANGE, bt[3 * k.max_blocks + 1] = (int32_t)k.c.num_blocks);
    EXPECT_ERR(REF_ERANGE, bt[3 * k.max_blocks] = -1);
    EXPECT_ERR(REF_EINVAL, a.cache.k_scale = 0);
    EXPECT_ERR(REF_EINVAL, a.cache.block_size = 0);
    EXPECT_ERR(REF_EINVAL, a.hq = 0);
    EXPECT_ERR(REF_EDTYPE, a.cache.dtype = REF_I32);
    EXPECT_ERR(REF_EDTYPE, a.q_dtype = REF_U8);
    EXPECT_ERR(REF_EINVAL, a.scale = NAN);
#undef EXPECT_ERR
    free(q);
    cache_free(&k);
}

/* ----------------------------------------------------------------- prefill */

typedef struct prefill {
    int batch, hq;
    int32_t cu[MAXB + 1], ctx[MAXB];
    void *q, *ckv, *kpe, *w;
    cache k;
    ref_mla_prefill_args a;
    size_t nout, nlse;
} prefill;

static void prefill_init(prefill *p, int batch, const int *ctx, const int *lq, int hq, int bs,
                         ref_dtype kv_round, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->batch = batch;
    p->hq = hq;
    for (int b = 0; b < batch; b++) {
        p->cu[b + 1] = p->cu[b] + lq[b];
        p->ctx[b] = ctx[b];
    }
    const size_t tq = (size_t)p->cu[batch];
    p->q = gen(REF_BF16, tq * hq * QK, seed, 0.5);
    p->ckv = gen(REF_BF16, tq * LAT, seed + 1, 1.0);
    p->kpe = gen(REF_BF16, tq * REF_MLA_ROPE, seed + 2, 1.0);
    p->w = gen(REF_BF16, (size_t)hq * REF_MLA_WROWS * LAT, seed + 3, 1.0 / sqrt(512.0));
    cache_init(&p->k, batch, p->ctx, bs, REF_BF16, 1.0, 1, seed + 4);
    p->nout = tq * hq * DV;
    p->nlse = (size_t)hq * tq;
    p->a = (ref_mla_prefill_args){
        .batch = batch, .hq = hq, .dtype = REF_BF16, .q = p->q, .c_kv = p->ckv, .k_pe = p->kpe,
        .w_kvb = p->w, .cu_q = p->cu, .context_lens = p->ctx, .cache = p->k.c,
        .block_table = p->k.bt, .max_blocks = p->k.max_blocks, .kv_round = kv_round,
        .scale = ref_mla_default_scale(), .mode = REF_EXACT, .p_dtype = REF_F32,
    };
}

static void prefill_free(prefill *p)
{
    free(p->q);
    free(p->ckv);
    free(p->kpe);
    free(p->w);
    cache_free(&p->k);
}

/* Latent row j of request b (context from the cache, then the new tokens). */
static double latent(const prefill *p, int b, int j, int d)
{
    if (j < p->ctx[b])
        return cache_val(&p->k, b, j, d);
    const size_t t = (size_t)p->cu[b] + (j - p->ctx[b]);
    return d < LAT ? ref_load(REF_BF16, p->ckv, t * LAT + d)
                   : ref_load(REF_BF16, p->kpe, t * REF_MLA_ROPE + d - LAT);
}

/* Decompression and attention from the definitions, in long double. */
static void prefill_oracle(const prefill *p, double *out, double *lse)
{
    const int hq = p->hq, tq = p->cu[p->batch];
    for (int b = 0; b < p->batch; b++) {
        const int n = p->ctx[b] + p->cu[b + 1] - p->cu[b];
        double *k = malloc(((size_t)n * hq + 1) * QK * sizeof *k),
               *v = malloc(((size_t)n * hq + 1) * DV * sizeof *v);
        for (int j = 0; j < n; j++)
            for (int h = 0; h < hq; h++) {
                for (int r = 0; r < REF_MLA_WROWS; r++) {
                    long double s = 0;
                    for (int c = 0; c < LAT; c++)
                        s += (long double)ref_load(REF_BF16, p->w,
                                                   ((size_t)h * REF_MLA_WROWS + r) * LAT + c) *
                             latent(p, b, j, c);
                    const double x = ref_round_to(p->a.kv_round, (double)s);
                    if (r < REF_MLA_NOPE)
                        k[((size_t)j * hq + h) * QK + r] = x;
                    else
                        v[((size_t)j * hq + h) * DV + r - REF_MLA_NOPE] = x;
                }
                for (int d = 0; d < REF_MLA_ROPE; d++) /* K is stored whole in kv_round */
                    k[((size_t)j * hq + h) * QK + REF_MLA_NOPE + d] =
                        ref_round_to(p->a.kv_round, latent(p, b, j, LAT + d));
            }
        for (int i = p->cu[b]; i < p->cu[b + 1]; i++)
            for (int h = 0; h < hq; h++) {
                const int nk = p->ctx[b] + (i - p->cu[b]) + 1; /* causal, bottom-right */
                long double *s = malloc((size_t)nk * sizeof *s), mx = -INFINITY, den = 0;
                for (int j = 0; j < nk; j++) {
                    long double dot = 0;
                    for (int d = 0; d < QK; d++)
                        dot +=
                            (long double)ref_load(REF_BF16, p->q, ((size_t)i * hq + h) * QK + d) *
                            k[((size_t)j * hq + h) * QK + d];
                    s[j] = p->a.scale * dot;
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < nk; j++)
                    den += expl(s[j] - mx);
                for (int d = 0; d < DV; d++) {
                    long double acc = 0;
                    for (int j = 0; j < nk; j++)
                        acc += expl(s[j] - mx) * v[((size_t)j * hq + h) * DV + d];
                    out[((size_t)i * hq + h) * DV + d] = (double)(acc / den);
                }
                lse[(size_t)h * tq + i] = (double)(mx + logl(den));
                free(s);
            }
        free(k);
        free(v);
    }
}

Test(prefill, oracle)
{
    static const int ctx[2] = {13, 0}, lq[2] = {5, 3};
    static const ref_dtype rounds[2] = {REF_F64, REF_BF16};
    for (int r = 0; r < 2; r++) {
        prefill p;
        prefill_init(&p, 2, ctx, lq, 2, 4, rounds[r], 81);
        double *o = nan_buf(p.nout), *l = nan_buf(p.nlse), *oo = nan_buf(p.nout),
               *ol = nan_buf(p.nlse);
        const int err = ref_mla_prefill(&p.a, o, l);
        cr_assert(err == REF_OK, "%s", ref_strerror(err));
        prefill_oracle(&p, oo, ol);
        expect_close(o, oo, p.nout, 1e-12, ref_dtype_name(rounds[r]));
        expect_close(l, ol, p.nlse, 1e-12, "lse");
        free(o);
        free(l);
        free(oo);
        free(ol);
        prefill_free(&p);
    }
}

/* SPEC section 6's algorithm with any chunk budget equals one pass over context + new. */
Test(prefill, chunked_equals_one_pass)
{
    static const int ctx[3] = {0, 50, 130}, lq[3] = {7, 1, 20};
    static const int budgets[] = {1, 2, 7, 64, 179, 1000};
    prefill p;
    prefill_init(&p, 3, ctx, lq, 2, 16, REF_BF16, 91);
    double *o = nan_buf(p.nout), *l = nan_buf(p.nlse), *oc = nan_buf(p.nout), *lc = nan_buf(p.nlse);
    cr_assert(ref_mla_prefill(&p.a, o, l) == REF_OK);
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
        const int err = ref_mla_prefill_chunked(&p.a, budgets[i], REF_F64, oc, lc);
        cr_assert(err == REF_OK, "%s", ref_strerror(err));
        expect_close(oc, o, p.nout, 1e-12, "out");
        expect_close(lc, l, p.nlse, 1e-12, "lse");
    }
    /* partials stored in bf16 / f32: each merge's operands and result carry one rounding */
    cr_assert(ref_mla_prefill_chunked(&p.a, 7, REF_BF16, oc, lc) == REF_OK);
    expect_close(oc, o, p.nout, 0x1p-6, "out, bf16 partials");
    expect_close(lc, l, p.nlse, 1e-6, "lse, f32 partials");
    cr_assert(ref_mla_prefill_chunked(&p.a, 0, REF_F64, oc, lc) == REF_EINVAL);
    free(o);
    free(l);
    free(oc);
    free(lc);
    prefill_free(&p);
}

/* SPEC section 9: absorbed decode of each new token over [c_kv | k_pe] (the cache holding the
 * context and the new rows), un-absorbed with W_UV, equals the non-absorbed prefill. */
Test(prefill, absorbed_equals_non_absorbed)
{
    enum { C = 40, N = 25, H = 3 };
    const int ctx[1] = {C}, lq[1] = {N};
    prefill p;
    prefill_init(&p, 1, ctx, lq, H, 16, REF_F64, 101);
    /* a cache holding all C + N rows of the one sequence: the prefill reads its first C */
    const int32_t all[1] = {C + N};
    cache k;
    cache_init(&k, 1, all, 16, REF_BF16, 1.0, 1, 105);
    for (int t = 0; t < N; t++) {
        const size_t base = ((size_t)k.bt[(C + t) / 16] * 16 + (C + t) % 16) * ROW;
        for (int d = 0; d < ROW; d++)
            ref_store(REF_BF16, (void *)k.c.data, base + d, latent(&p, 0, C + t, d));
    }
    for (int t = 0; t < C; t++) {
        const size_t base = ((size_t)k.bt[t / 16] * 16 + t % 16) * ROW;
        for (int d = 0; d < ROW; d++)
            ref_store(REF_BF16, (void *)k.c.data, base + d, latent(&p, 0, t, d));
    }
    p.a.cache = k.c;
    p.a.block_table = k.bt;
    p.a.max_blocks = k.max_blocks;
    double *o = nan_buf(p.nout), *l = nan_buf(p.nlse);
    cr_assert(ref_mla_prefill(&p.a, o, l) == REF_OK);

    double *qa = nan_buf((size_t)N * H * ROW), *ol = nan_buf((size_t)N * H * LAT),
           *ll = nan_buf(H * N), *ou = nan_buf(p.nout);
    cr_assert(ref_mla_absorb_q(N, H, REF_BF16, p.q, REF_BF16, p.w, qa) == REF_OK);
    int32_t lens[N], *bt = malloc(sizeof(int32_t) * N * k.max_blocks);
    for (int i = 0; i < N; i++) {
        lens[i] = C + i + 1;
        memcpy(bt + (size_t)i * k.max_blocks, k.bt, sizeof(int32_t) * k.max_blocks);
    }
    const ref_mla_decode_args a = {
        .batch = N, .hq = H, .q_dtype = REF_F64, .q = qa, .cache = k.c, .block_table = bt,
        .max_blocks = k.max_blocks, .seq_lens = lens, .scale = p.a.scale, .mode = REF_EXACT,
        .p_dtype = REF_F32,
    };
    cr_assert(ref_mla_decode(&a, ol, ll) == REF_OK);
    cr_assert(ref_mla_unabsorb_out(N, H, ol, REF_BF16, p.w, ou) == REF_OK);
    expect_close(ou, o, p.nout, 1e-10, "out");
    expect_close(ll, l, p.nlse, 1e-10, "lse"); /* [H, N] both */
    free(o);
    free(l);
    free(qa);
    free(ol);
    free(ll);
    free(ou);
    free(bt);
    cache_free(&k);
    prefill_free(&p);
}

Test(prefill, bad_arguments)
{
    static const int ctx[2] = {13, 0}, lq[2] = {5, 3};
    prefill p;
    prefill_init(&p, 2, ctx, lq, 2, 4, REF_BF16, 111);
    double *o = nan_buf(p.nout), *l = nan_buf(p.nlse);
    ref_mla_prefill_args a;
    int32_t cu[3], cl[2], bt[MAXB * 64];
#define EXPECT_ERR(code, mutate)                                                   \
    do {                                                                           \
        a = p.a;                                                                   \
        memcpy(cu, p.cu, sizeof cu);                                               \
        memcpy(cl, p.ctx, sizeof cl);                                              \
        memcpy(bt, p.k.bt, sizeof bt);                                             \
        a.cu_q = cu;                                                               \
        a.context_lens = cl;                                                       \
        a.block_table = bt;                                                        \
        mutate;                                                                    \
        const int e_ = ref_mla_prefill(&a, o, l);                                  \
        cr_assert(e_ == (code), "%s: got %s", #mutate, ref_strerror(e_));          \
    } while (0)
    EXPECT_ERR(REF_OK, (void)0);
    EXPECT_ERR(REF_OK, a.context_lens = NULL);
    EXPECT_ERR(REF_ESHAPE, cu[1] = 9);
    EXPECT_ERR(REF_ESHAPE, cu[0] = 1);
    EXPECT_ERR(REF_ESHAPE, cl[0] = p.k.max_blocks * 4 + 1);
    EXPECT_ERR(REF_ERANGE, bt[1] = (int32_t)p.k.c.num_blocks);
    EXPECT_ERR(REF_EINVAL, a.w_kvb = NULL);
    EXPECT_ERR(REF_EINVAL, a.hq = 0);
    EXPECT_ERR(REF_EDTYPE, a.kv_round = REF_I64);
    EXPECT_ERR(REF_EDTYPE, a.dtype = REF_U8);
#undef EXPECT_ERR
    free(o);
    free(l);
    prefill_free(&p);
}

/* ------------------------------------------------------ the harness paths' inputs */

static char tmp_ini[64];

static void rm_tmp(void)
{
    if (tmp_ini[0])
        unlink(tmp_ini);
}

static hx_caselist load(const char *text)
{
    strcpy(tmp_ini, "/tmp/test_mla_XXXXXX");
    const int fd = mkstemp(tmp_ini);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    hx_caselist l = {0};
    hx_err e = {0};
    cr_assert_eq(hx_cases_load(tmp_ini, 0, &l, &e), HX_OK, "%s", e.msg);
    return l;
}

/* Exactly the slots of the cached tokens hold finite rows; every other slot of the pool is
 * NaN; check_inputs accepts the inputs and the reference runs on them. */
Test(path, generated_latent_caches, .fini = rm_tmp)
{
    hx_caselist l =
        load("[d16]\npath = mla_decode\nheads_q = 4\nseq_lens = 0,17,33\nblock_size = 16\n"
             "num_blocks = 8\n"
             "[d8]\npath = mla_decode\nheads_q = 4\nseq_lens = 5,40\nkv_dtype = fp8e4m3\n"
             "block_size = 4\n"
             "[p]\npath = mla_prefill\nheads_q = 2\nseq_lens = 3,4\ncontext_lens = 20,0\n"
             "block_size = 8\nchunk_tokens = 7\n");
    cr_assert_eq(l.n, 3);
    for (int i = 0; i < l.n; i++) {
        const hx_case *c = &l.v[i];
        hx_tensors in = {0}, out = {0};
        hx_err e = {0};
        cr_assert_eq(c->path->make_inputs(c, &in, &e), HX_OK, "%s", e.msg);
        cr_assert_eq(c->path->check_inputs(c, &in, &e), HX_OK, "%s", e.msg);
        const hx_tensor *kv = hx_tensors_get(&in, "kv_cache");
        const hx_lens *lens = i < 2 ? &c->seq_lens_q : &c->context_lens;
        int64_t cached = 0, finite = 0;
        for (int b = 0; b < lens->n; b++)
            cached += lens->v[b];
        for (int64_t s = 0; s < kv->shape[0] * kv->shape[1]; s++) {
            int f = 0;
            for (int d = 0; d < ROW; d++)
                f += isfinite(ref_load(kv->dtype, kv->data, (size_t)s * ROW + d)) != 0;
            cr_assert(f == 0 || f == ROW, "%s slot %lld: %d finite dims", c->name, (long long)s, f);
            finite += f == ROW;
        }
        cr_assert_eq(finite, cached, "%s: %lld finite rows for %lld cached tokens", c->name,
                     (long long)finite, (long long)cached);
        if (i == 0)
            cr_assert_eq(kv->shape[0], 8);
        if (i == 1)
            cr_assert(*(const float *)hx_tensors_get(&in, "k_scale")->data == 0.0125f);
        /* check_inputs refuses a block id outside the pool */
        const hx_tensor *btt = hx_tensors_get(&in, "block_table");
        int b = 0;
        while (lens->v[b] == 0)
            b++;
        int32_t *bt = (int32_t *)btt->data + b * btt->shape[1];
        const int32_t keep = *bt;
        *bt = (int32_t)kv->shape[0];
        cr_assert_eq(c->path->check_inputs(c, &in, &e), HX_ECASE, "%s", c->name);
        *bt = keep;
        cr_assert_eq(c->path->make_outputs(c, &out, &e), HX_OK);
        hx_tensors ref = {0};
        cr_assert_eq(hx_tensors_clone_shape(&out, REF_F64, &ref, &e), HX_OK);
        for (int m = 0; m < 2; m++) {
            cr_assert_eq(c->path->reference(c, &in, &ref, m ? REF_EMULATE : REF_EXACT, &e), HX_OK,
                         "%s", e.msg);
            const hx_tensor *o = &ref.t[0];
            for (size_t j = 0; j < o->numel; j++)
                cr_assert(isfinite(((const double *)o->data)[j]), "%s: non-finite out", c->name);
        }
        hx_tensors_free(&in);
        hx_tensors_free(&out);
        hx_tensors_free(&ref);
    }
    hx_cases_free(&l);
}
