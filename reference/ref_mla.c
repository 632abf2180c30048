/* ref_mla.c - SPEC sections 8 and 9: absorbed MLA decode over a paged latent cache, and
 * non-absorbed MLA prefill (W_kvb decompression, 192/128 causal attention, chunked context
 * merged with the section 0 merge), plus the absorption helpers of section 9's identity.
 *
 * Every attention is one ref_attn call on rows gathered into contiguous f64 buffers, so the
 * masks, LSE and empty-set conventions are exactly the core's.
 */
#include "ref_mla.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------- conversions for hot loops */

float ref_fast_bf16_to_f32(uint16_t b)
{
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float ref_fast_fp8e4m3_to_f32(uint8_t b)
{
    const unsigned e = b >> 3 & 15u, m = b & 7u;
    float f;
    if (e == 15 && m == 7)
        f = NAN;
    else if (e == 0)
        f = (float)m * 0x1p-9f;
    else {
        const uint32_t u = (e + 120u) << 23 | m << 20; /* 2^(e - 7) * 1.m as f32 bits */
        memcpy(&f, &u, sizeof f);
    }
    return b & 0x80u ? -f : f;
}

/* Round to nearest even on the bit pattern: the carry out of the kept bits moves into the
 * exponent exactly as RNE moves to the next binade, and past the largest finite into inf. */
uint16_t ref_fast_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((u >> 16 & 0x8000u) | 0x7FC0u);
    u += 0x7FFFu + (u >> 16 & 1u);
    return (uint16_t)(u >> 16);
}

uint8_t ref_fast_f32_to_fp8e4m3(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint8_t sign = (uint8_t)(u >> 24 & 0x80u);
    u &= 0x7FFFFFFFu;
    if (u > 0x7F800000u)
        return sign | 0x7Fu;
    if (u >= 0x43E00000u) /* |f| >= 448, inf included: saturate */
        return sign | 0x7Eu;
    if (u < 0x3C800000u) { /* |f| < 2^-6: the subnormal grid, 2^-9 apart (scaling is exact) */
        float a;
        memcpy(&a, &u, sizeof a);
        return sign | (uint8_t)nearbyintf(a * 0x1p9f);
    }
    u += 0x7FFFFu + (u >> 20 & 1u); /* RNE to 3 mantissa bits */
    const uint32_t code = ((u >> 23) - 120u) << 3 | (u >> 20 & 7u);
    return sign | (uint8_t)(code > 0x7Eu ? 0x7Eu : code);
}

double ref_mla_default_scale(void)
{
    const double mscale = 0.1 * log(40.0) + 1.0;
    return mscale * mscale / sqrt(192.0);
}

/* A value on its way into a bf16 MMA: through f32, then bf16, as a kernel converts it. */
static double ref__to_bf16(double v)
{
    return ref_fast_bf16_to_f32(ref_fast_f32_to_bf16((float)v));
}

/* n elements of a buffer in dtype t from element i0, as f64 (bf16 without ref_load's cost). */
static void ref__load_n(ref_dtype t, const void *base, size_t i0, size_t n, double *dst)
{
    if (t == REF_BF16)
        for (size_t i = 0; i < n; i++)
            dst[i] = ref_fast_bf16_to_f32(((const uint16_t *)base)[i0 + i]);
    else
        for (size_t i = 0; i < n; i++)
            dst[i] = ref_load(t, base, i0 + i);
}

static int ref__cache_check(const ref_mla_cache *c)
{
    if (c->block_size <= 0 || c->num_blocks < 0 || (c->num_blocks > 0 && !c->data))
        return REF_EINVAL;
    if (!ref_dtype_is_float(c->dtype) || c->dtype == REF_E8M0)
        return REF_EDTYPE;
    if (c->dtype == REF_FP8E4M3 && !(c->k_scale > 0 && isfinite(c->k_scale)))
        return REF_EINVAL;
    return REF_OK;
}

/* Tokens [t0, t0 + n) of the sequence with block-table row bt as latent rows, each value exact
 * (fp8: code * k_scale, exact in f64); an f16 or f32 cache is rounded to bf16 when emulating a
 * kernel (its GEMMs take bf16). fp8 stays exact when emulating too: kernels multiply the codes,
 * exact in bf16, and put the one per-tensor k_scale on their f32 results (decode: logits and
 * output; prefill: the decompression GEMM's accumulators).
 *   dst: [n, 576] f64 */
static int ref__gather_latent(const ref_mla_cache *c, const int32_t *bt, int64_t t0, int n,
                              int emulate, double *dst)
{
    const int bs = c->block_size;
    double fp8[256]; /* code -> value */
    if (c->dtype == REF_FP8E4M3)
        for (int b = 0; b < 256; b++) {
            fp8[b] = ref_fast_fp8e4m3_to_f32((uint8_t)b) * c->k_scale;
        }
    for (int i = 0; i < n; i++) {
        const int64_t t = t0 + i;
        const int32_t blk = bt[t / bs];
        if (blk < 0 || blk >= c->num_blocks)
            return REF_ERANGE;
        const size_t base = ((size_t)blk * bs + (size_t)(t % bs)) * REF_MLA_ROW;
        double *row = dst + (size_t)i * REF_MLA_ROW;
        if (c->dtype == REF_FP8E4M3) {
            for (int d = 0; d < REF_MLA_ROW; d++)
                row[d] = fp8[((const uint8_t *)c->data)[base + d]];
            continue;
        }
        ref__load_n(c->dtype, c->data, base, REF_MLA_ROW, row);
        if (emulate && c->dtype != REF_BF16)
            for (int d = 0; d < REF_MLA_ROW; d++)
                row[d] = ref__to_bf16(row[d]);
    }
    return REF_OK;
}

/* dgemm inside our OpenMP threads: OpenBLAS must not fan out to its own pool from there (the
 * same guard as ref_attn's). */
static void ref__blas_single_thread(void)
{
    if (openblas_get_num_threads() != 1) {
#pragma omp critical(ref__blas_threads)
        openblas_set_num_threads(1);
    }
}

/* ------------------------------------------------------------------ decode */

int ref_mla_decode(const ref_mla_decode_args *a, double *out, double *lse)
{
    if (!a || a->batch < 0 || a->hq <= 0 || a->max_blocks < 0)
        return REF_EINVAL;
    if (a->batch > 0 && (!a->q || !a->block_table || !a->seq_lens || !out || !lse))
        return REF_EINVAL;
    if (!ref_dtype_is_float(a->q_dtype))
        return REF_EDTYPE;
    int err = ref__cache_check(&a->cache);
    if (err != REF_OK)
        return err;
    for (int b = 0; b < a->batch; b++)
        if (a->seq_lens[b] < 0 ||
            (int64_t)a->seq_lens[b] > (int64_t)a->max_blocks * a->cache.block_size)
            return REF_ESHAPE;

    const int hq = a->hq, batch = a->batch;
    const size_t es = ref_dtype_size(a->q_dtype);
    /* No mask: the rows of the query block are heads, not positions. */
    const ref_attn_opts o = {a->scale, 0.0, 0, -1, a->mode, a->p_dtype};
    int nomem = 0;
#pragma omp parallel if (!omp_in_parallel())
    {
        double *rows = NULL, *lh = malloc((size_t)hq * sizeof *lh);
        size_t cap = 0;
        if (!lh) {
#pragma omp atomic write
            nomem = 1;
        }
#pragma omp for schedule(dynamic)
        for (int b = 0; b < batch; b++) {
            const int len = a->seq_lens[b];
            if (!lh)
                continue;
            if ((size_t)len > cap) {
                free(rows);
                cap = (size_t)len;
                rows = malloc(cap * REF_MLA_ROW * sizeof *rows);
                if (!rows) {
                    cap = 0;
#pragma omp atomic write
                    nomem = 1;
                    continue;
                }
            }
            int rc = ref__gather_latent(&a->cache, a->block_table + (size_t)b * a->max_blocks, 0,
                                        len, a->mode == REF_EMULATE, rows);
            const ref_view qv = {a->q_dtype, (const char *)a->q + (size_t)b * hq * REF_MLA_ROW * es,
                                 REF_MLA_ROW, 0};
            const ref_view kv = {REF_F64, rows, REF_MLA_ROW, 0};
            if (rc == REF_OK)
                rc = ref_attn(hq, len, 1, 1, REF_MLA_ROW, REF_MLA_LAT, qv, kv, kv, &o,
                              out + (size_t)b * hq * REF_MLA_LAT, REF_MLA_LAT, lh, 0);
            if (rc != REF_OK) {
#pragma omp critical(ref__mla_err)
                err = err == REF_OK ? rc : err;
                continue;
            }
            for (int h = 0; h < hq; h++)
                lse[(size_t)h * batch + b] = lh[h];
        }
        free(rows);
        free(lh);
    }
    return nomem ? REF_ENOMEM : err;
}

/* ----------------------------------------------------------------- prefill */

static int ref__prefill_check(const ref_mla_prefill_args *a)
{
    if (!a || a->batch < 0 || a->hq <= 0 || a->max_blocks < 0 || !a->cu_q)
        return REF_EINVAL;
    if (!ref_dtype_is_float(a->dtype) || !ref_dtype_is_float(a->kv_round))
        return REF_EDTYPE;
    if (a->cu_q[0] != 0)
        return REF_ESHAPE;
    for (int b = 0; b < a->batch; b++)
        if (a->cu_q[b + 1] < a->cu_q[b])
            return REF_ESHAPE;
    if (a->cu_q[a->batch] > 0 && (!a->q || !a->c_kv || !a->k_pe || !a->w_kvb))
        return REF_EINVAL;
    int has_ctx = 0;
    for (int b = 0; a->context_lens && b < a->batch; b++) {
        if (a->context_lens[b] < 0 ||
            (int64_t)a->context_lens[b] > (int64_t)a->max_blocks * a->cache.block_size)
            return REF_ESHAPE;
        has_ctx |= a->context_lens[b] > 0;
    }
    if (!has_ctx)
        return REF_OK;
    if (!a->block_table)
        return REF_EINVAL;
    return ref__cache_check(&a->cache);
}

static int ref__ctx_len(const ref_mla_prefill_args *a, int b)
{
    return a->context_lens ? a->context_lens[b] : 0;
}

/* Rows [j0, j0 + n) of the new tokens' latent: [c_kv | k_pe].   dst: [n, 576] f64 */
static void ref__new_latent(const ref_mla_prefill_args *a, int64_t j0, int n, double *dst)
{
    for (int i = 0; i < n; i++) {
        double *row = dst + (size_t)i * REF_MLA_ROW;
        ref__load_n(a->dtype, a->c_kv, (size_t)(j0 + i) * REF_MLA_LAT, REF_MLA_LAT, row);
        ref__load_n(a->dtype, a->k_pe, (size_t)(j0 + i) * REF_MLA_ROPE, REF_MLA_ROPE,
                    row + REF_MLA_LAT);
    }
}

/* W_kvb decoded once per call.   returns [hq * 256, 512] f64, or NULL */
static double *ref__load_w(int hq, ref_dtype dt, const void *w)
{
    const size_t n = (size_t)hq * REF_MLA_WROWS * REF_MLA_LAT;
    double *wf = malloc(n * sizeof *wf);
    if (wf)
        ref__load_n(dt, w, 0, n, wf);
    return wf;
}

/* Tokens per dgemm of the decompression: enough work items for the threads, a bounded
 * scratch ([DT, hq * 256] f64 per thread). */
enum { REF__DT = 128 };

/* v rounded through dtype rd (REF_F64: unchanged). */
static double ref__round(ref_dtype rd, double v)
{
    return rd == REF_F64 ? v : rd == REF_BF16 ? ref__to_bf16(v) : ref_round_to(rd, v);
}

/* Per-head K and V from latent rows: k_h = [W_UK_h c_kv | k_pe], v_h = W_UV_h c_kv, one dgemm
 * [n, 512] x [512, hq * 256] per token block, each value -- k_pe's included: K is stored whole
 * in rd -- rounded through dtype rd (and kept in f64: ref_attn reads f64 fastest).
 *   lat: [n, 576] f64   w: [hq * 256, 512] f64   k: [n, hq, 192] f64   v: [n, hq, 128] f64 */
static int ref__decompress(int n, int hq, const double *lat, const double *w, ref_dtype rd,
                           double *k, double *v)
{
    ref__blas_single_thread();
    const int nblk = (n + REF__DT - 1) / REF__DT, wr = hq * REF_MLA_WROWS;
    int nomem = 0;
#pragma omp parallel if (!omp_in_parallel())
    {
        double *tmp = malloc((size_t)REF__DT * wr * sizeof *tmp);
        if (!tmp) {
#pragma omp atomic write
            nomem = 1;
        }
#pragma omp for schedule(static)
        for (int ib = 0; ib < nblk; ib++) {
            if (!tmp)
                continue;
            const int j0 = ib * REF__DT, nj = n - j0 < REF__DT ? n - j0 : REF__DT;
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nj, wr, REF_MLA_LAT, 1.0,
                        lat + (size_t)j0 * REF_MLA_ROW, REF_MLA_ROW, w, REF_MLA_LAT, 0.0, tmp, wr);
            for (int j = 0; j < nj; j++) {
                const double *t = tmp + (size_t)j * wr;
                const double *pe = lat + (size_t)(j0 + j) * REF_MLA_ROW + REF_MLA_LAT;
                for (int h = 0; h < hq; h++) {
                    double *kr = k + ((size_t)(j0 + j) * hq + h) * REF_MLA_QK;
                    double *vr = v + ((size_t)(j0 + j) * hq + h) * REF_MLA_V;
                    for (int d = 0; d < REF_MLA_NOPE; d++)
                        kr[d] = ref__round(rd, t[h * REF_MLA_WROWS + d]);
                    for (int d = 0; d < REF_MLA_ROPE; d++)
                        kr[REF_MLA_NOPE + d] = ref__round(rd, pe[d]);
                    for (int d = 0; d < REF_MLA_V; d++)
                        vr[d] = ref__round(rd, t[h * REF_MLA_WROWS + REF_MLA_NOPE + d]);
                }
            }
        }
        free(tmp);
    }
    return nomem ? REF_ENOMEM : REF_OK;
}

/* Attention of request b's new queries over n latent rows (decompressed here).
 *   lat: [n, 576] f64   out: rows of [Tq, hq, 128] from the request's first query   lse: [hq, ld]
 */
static int ref__attend_latent(const ref_mla_prefill_args *a, int b, const double *lat, int n,
                              const double *w, int causal, double *out, double *lse, ptrdiff_t ld)
{
    const int hq = a->hq, q0 = a->cu_q[b], lq = a->cu_q[b + 1] - q0;
    const size_t nq = (size_t)lq * hq * REF_MLA_QK;
    double *k = malloc(((size_t)n * hq + 1) * REF_MLA_QK * sizeof *k);
    double *v = malloc(((size_t)n * hq + 1) * REF_MLA_V * sizeof *v);
    double *q = malloc((nq + 1) * sizeof *q); /* decoded once, not once per key tile */
    int err = k && v && q ? ref__decompress(n, hq, lat, w, a->kv_round, k, v) : REF_ENOMEM;
    if (err == REF_OK) {
        ref__load_n(a->dtype, a->q, (size_t)q0 * hq * REF_MLA_QK, nq, q);
        const ref_view qv = {REF_F64, q, (ptrdiff_t)hq * REF_MLA_QK, REF_MLA_QK};
        const ref_view kv = {REF_F64, k, (ptrdiff_t)hq * REF_MLA_QK, REF_MLA_QK};
        const ref_view vv = {REF_F64, v, (ptrdiff_t)hq * REF_MLA_V, REF_MLA_V};
        const ref_attn_opts o = {a->scale, 0.0, causal, -1, a->mode, a->p_dtype};
        err = ref_attn(lq, n, hq, hq, REF_MLA_QK, REF_MLA_V, qv, kv, vv, &o, out,
                       (ptrdiff_t)hq * REF_MLA_V, lse, ld);
    }
    free(k);
    free(v);
    free(q);
    return err;
}

int ref_mla_prefill(const ref_mla_prefill_args *a, double *out, double *lse)
{
    int err = ref__prefill_check(a);
    if (err != REF_OK)
        return err;
    if (!out || !lse)
        return REF_EINVAL;
    const int hq = a->hq;
    const int64_t tq = a->cu_q[a->batch];
    double *w = tq ? ref__load_w(hq, a->dtype, a->w_kvb) : NULL;
    if (tq && !w)
        return REF_ENOMEM;
    for (int b = 0; b < a->batch && err == REF_OK; b++) {
        const int q0 = a->cu_q[b], lq = a->cu_q[b + 1] - q0, lc = ref__ctx_len(a, b);
        if (lq == 0)
            continue;
        double *lat = malloc(((size_t)lc + lq) * REF_MLA_ROW * sizeof *lat);
        if (!lat) {
            err = REF_ENOMEM;
            break;
        }
        if (lc > 0)
            err = ref__gather_latent(&a->cache, a->block_table + (size_t)b * a->max_blocks, 0, lc,
                                     a->mode == REF_EMULATE, lat);
        ref__new_latent(a, q0, lq, lat + (size_t)lc * REF_MLA_ROW);
        if (err == REF_OK)
            err = ref__attend_latent(a, b, lat, lc + lq, w, 1, out + (size_t)q0 * hq * REF_MLA_V,
                                     lse + q0, tq);
        free(lat);
    }
    free(w);
    return err;
}

/* What a stored partial result holds: out rounded to dt, lse to f32 (REF_F64: unchanged).
 *   o: [lq, hq, 128] (rows of out)   l: [hq, ld] from the request's first query */
static void ref__round_partial(ref_dtype dt, int lq, int hq, double *o, double *l, ptrdiff_t ld)
{
    if (dt == REF_F64)
        return;
    for (size_t i = 0; i < (size_t)lq * hq * REF_MLA_V; i++)
        o[i] = ref__round(dt, o[i]);
    for (int h = 0; h < hq; h++)
        for (int i = 0; i < lq; i++)
            l[h * ld + i] = (float)l[h * ld + i];
}

int ref_mla_prefill_chunked(const ref_mla_prefill_args *a, int chunk_tokens,
                            ref_dtype partial_dtype, double *out, double *lse)
{
    int err = ref__prefill_check(a);
    if (err != REF_OK)
        return err;
    if (!out || !lse || chunk_tokens <= 0 || !ref_dtype_is_float(partial_dtype))
        return REF_EINVAL;
    const int hq = a->hq;
    const int64_t tq = a->cu_q[a->batch];
    double *w = tq ? ref__load_w(hq, a->dtype, a->w_kvb) : NULL;
    if (tq && !w)
        return REF_ENOMEM;

    /* Step 1: the new tokens, causal. */
    for (int b = 0; b < a->batch && err == REF_OK; b++) {
        const int q0 = a->cu_q[b], lq = a->cu_q[b + 1] - q0;
        if (lq == 0)
            continue;
        double *lat = malloc((size_t)lq * REF_MLA_ROW * sizeof *lat);
        if (!lat) {
            err = REF_ENOMEM;
            break;
        }
        ref__new_latent(a, q0, lq, lat);
        err = ref__attend_latent(a, b, lat, lq, w, 1, out + (size_t)q0 * hq * REF_MLA_V, lse + q0,
                                 tq);
        ref__round_partial(partial_dtype, lq, hq, out + (size_t)q0 * hq * REF_MLA_V, lse + q0, tq);
        free(lat);
    }

    /* Step 2: the contexts end to end, cut every chunk_tokens tokens; a request's pieces are
     * merged in order, and requests are independent, so request-major order is the same math
     * as chunk-major. */
    int64_t off = 0;
    for (int b = 0; b < a->batch && err == REF_OK; b++) {
        const int q0 = a->cu_q[b], lq = a->cu_q[b + 1] - q0, nc = ref__ctx_len(a, b);
        for (int s = 0; s < nc && lq > 0 && err == REF_OK;) {
            const int64_t cut = ((off + s) / chunk_tokens + 1) * chunk_tokens;
            const int e = cut - off < nc ? (int)(cut - off) : nc, n = e - s;
            double *lat = malloc((size_t)n * REF_MLA_ROW * sizeof *lat);
            double *oc = malloc((size_t)lq * hq * REF_MLA_V * sizeof *oc);
            double *lc = malloc((size_t)hq * lq * sizeof *lc);
            err = lat && oc && lc ? REF_OK : REF_ENOMEM;
            if (err == REF_OK)
                err = ref__gather_latent(&a->cache, a->block_table + (size_t)b * a->max_blocks, s,
                                         n, a->mode == REF_EMULATE, lat);
            if (err == REF_OK)
                err = ref__attend_latent(a, b, lat, n, w, 0, oc, lc, lq);
            if (err == REF_OK) {
                ref__round_partial(partial_dtype, lq, hq, oc, lc, lq);
                for (int i = 0; i < lq; i++)
                    for (int h = 0; h < hq; h++) {
                        double *o = out + ((size_t)(q0 + i) * hq + h) * REF_MLA_V;
                        double *l = lse + (size_t)h * tq + q0 + i;
                        ref_merge_row(REF_MLA_V, o, *l, oc + ((size_t)i * hq + h) * REF_MLA_V,
                                      lc[(size_t)h * lq + i], o, l);
                    }
                ref__round_partial(partial_dtype, lq, hq, out + (size_t)q0 * hq * REF_MLA_V,
                                   lse + q0, tq);
            }
            free(lat);
            free(oc);
            free(lc);
            s = e;
        }
        off += nc;
    }
    free(w);
    return err;
}

/* -------------------------------------------------------------- absorption */

int ref_mla_absorb_q(int n, int hq, ref_dtype dtype, const void *q, ref_dtype w_dtype,
                     const void *w_kvb, double *q_abs)
{
    if (n < 0 || hq <= 0 || (n > 0 && (!q || !w_kvb || !q_abs)))
        return REF_EINVAL;
    if (!ref_dtype_is_float(dtype) || !ref_dtype_is_float(w_dtype))
        return REF_EDTYPE;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < hq; h++) {
            const size_t qb = ((size_t)i * hq + h) * REF_MLA_QK;
            double *qa = q_abs + ((size_t)i * hq + h) * REF_MLA_ROW;
            for (int c = 0; c < REF_MLA_LAT; c++) {
                double s = 0;
                for (int r = 0; r < REF_MLA_NOPE; r++)
                    s += ref_load(w_dtype, w_kvb,
                                  ((size_t)h * REF_MLA_WROWS + r) * REF_MLA_LAT + c) *
                         ref_load(dtype, q, qb + r);
                qa[c] = s;
            }
            for (int d = 0; d < REF_MLA_ROPE; d++)
                qa[REF_MLA_LAT + d] = ref_load(dtype, q, qb + REF_MLA_NOPE + d);
        }
    return REF_OK;
}

int ref_mla_unabsorb_out(int n, int hq, const double *o_lat, ref_dtype w_dtype, const void *w_kvb,
                         double *out)
{
    if (n < 0 || hq <= 0 || (n > 0 && (!o_lat || !w_kvb || !out)))
        return REF_EINVAL;
    if (!ref_dtype_is_float(w_dtype))
        return REF_EDTYPE;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < hq; h++) {
            const double *ol = o_lat + ((size_t)i * hq + h) * REF_MLA_LAT;
            for (int r = 0; r < REF_MLA_V; r++) {
                const size_t wb = ((size_t)h * REF_MLA_WROWS + REF_MLA_NOPE + r) * REF_MLA_LAT;
                double s = 0;
                for (int c = 0; c < REF_MLA_LAT; c++)
                    s += ref_load(w_dtype, w_kvb, wb + c) * ol[c];
                out[((size_t)i * hq + h) * REF_MLA_V + r] = s;
            }
        }
    return REF_OK;
}
