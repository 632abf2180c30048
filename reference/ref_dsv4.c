/* ref_dsv4.c - SPEC section 10: the DeepSeek V4 584-byte blocked FP8 latent cache (offsets,
 * the reference quantizer, the exact decoder) and sparse decode over a sliding-window scope
 * plus an extra (compressed / top-k) scope, with the per-head attention sink.
 *
 * Per token, the used entries of both scopes are decoded into one contiguous f64 block and
 * attended by one ref_attn call (V = K), so "one softmax over the union, duplicates counted
 * as often as they appear" is literally what is computed.
 */
#include "ref_mla.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

size_t ref_dsv4_block_stride(int block_size)
{
    return ((size_t)block_size * REF_DSV4_TOKEN + REF_DSV4_DATA - 1) / REF_DSV4_DATA *
           REF_DSV4_DATA;
}

size_t ref_dsv4_data_offset(int block_size, int64_t slot)
{
    return (size_t)(slot / block_size) * ref_dsv4_block_stride(block_size) +
           (size_t)(slot % block_size) * REF_DSV4_DATA;
}

size_t ref_dsv4_scale_offset(int block_size, int64_t slot)
{
    return (size_t)(slot / block_size) * ref_dsv4_block_stride(block_size) +
           (size_t)block_size * REF_DSV4_DATA + (size_t)(slot % block_size) * REF_DSV4_SCALES;
}

uint8_t ref_dsv4_scale_byte(double amax)
{
    /* A NaN amax fails the comparison and takes the floor; the NaN itself still reaches its
     * fp8 code. Past e8m0's range (only an infinite f32 amax gets there) the largest scale. */
    const double v = (amax > 1e-4 ? amax : 1e-4) / 448.0;
    if (!(v <= 0x1p127))
        return 254;
    /* v = m * 2^e with m in [0.5, 1): ceil(log2 v) is e, or e - 1 when v is a power of two.
     * The quotient cannot round onto a power of two from below: amax has at most 53 bits. */
    int e;
    const double m = frexp(v, &e);
    const int k = m == 0.5 ? e - 1 : e;
    return (uint8_t)(k + 127);
}

void ref_dsv4_quantize(const float *x, uint8_t *cache, int block_size, int64_t slot)
{
    uint8_t *row = cache + ref_dsv4_data_offset(block_size, slot);
    uint8_t *sc = cache + ref_dsv4_scale_offset(block_size, slot);
    for (int t = 0; t < REF_DSV4_TILES; t++) {
        const float *xt = x + t * REF_DSV4_TILE;
        float amax = 0;
        for (int d = 0; d < REF_DSV4_TILE; d++)
            amax = fabsf(xt[d]) > amax ? fabsf(xt[d]) : amax;
        const uint8_t byte = ref_dsv4_scale_byte(amax);
        const float s = ldexpf(1.0f, (int)byte - 127);
        for (int d = 0; d < REF_DSV4_TILE; d++)
            row[t * REF_DSV4_TILE + d] = ref_fast_f32_to_fp8e4m3(xt[d] / s);
        sc[t] = byte;
    }
    sc[REF_DSV4_TILES] = 0;
    /* Little-endian bf16, as the GPU reads it. */
    for (int d = REF_DSV4_NOPE; d < REF_DSV4_D; d++) {
        const uint16_t b = ref_fast_f32_to_bf16(x[d]);
        row[REF_DSV4_NOPE + 2 * (d - REF_DSV4_NOPE)] = (uint8_t)(b & 0xFF);
        row[REF_DSV4_NOPE + 2 * (d - REF_DSV4_NOPE) + 1] = (uint8_t)(b >> 8);
    }
}

void ref_dsv4_dequantize(const uint8_t *cache, int block_size, int64_t slot, double *x)
{
    const uint8_t *row = cache + ref_dsv4_data_offset(block_size, slot);
    const uint8_t *sc = cache + ref_dsv4_scale_offset(block_size, slot);
    for (int t = 0; t < REF_DSV4_TILES; t++) {
        const double s = ref_e8m0_to_f64(sc[t]);
        for (int d = t * REF_DSV4_TILE; d < (t + 1) * REF_DSV4_TILE; d++)
            x[d] = ref_fast_fp8e4m3_to_f32(row[d]) * s;
    }
    for (int d = REF_DSV4_NOPE; d < REF_DSV4_D; d++) {
        const int o = REF_DSV4_NOPE + 2 * (d - REF_DSV4_NOPE);
        x[d] = ref_fast_bf16_to_f32((uint16_t)(row[o] | row[o + 1] << 8));
    }
}

/* ----------------------------------------------------------- sparse decode */

static int ref__scope_check(const ref_dsv4_scope *s, int tokens)
{
    if (s->width < 0 || s->block_size <= 0 || s->num_blocks < 0)
        return REF_EINVAL;
    if (tokens > 0 && (!s->len || (s->width > 0 && !s->idx)))
        return REF_EINVAL;
    if (s->num_blocks > 0 && !s->cache)
        return REF_EINVAL;
    const int64_t slots = s->num_blocks * s->block_size;
    for (int t = 0; t < tokens; t++) {
        if (s->len[t] < 0 || s->len[t] > s->width)
            return REF_ESHAPE;
        for (int k = 0; k < s->len[t]; k++) {
            const int32_t i = s->idx[(size_t)t * s->width + k];
            if (i < -1 || i >= slots)
                return REF_ERANGE;
        }
    }
    return REF_OK;
}

/* Used entries of token t in one scope. */
static int ref__count(const ref_dsv4_scope *s, int t)
{
    int n = 0;
    for (int k = 0; k < s->len[t]; k++)
        n += s->idx[(size_t)t * s->width + k] != -1;
    return n;
}

/* Decode token t's used rows of one scope into dst, in index order; returns the row count.
 *   dst: [count, 512] f64 */
static int ref__gather(const ref_dsv4_scope *s, int t, int emulate, double *dst)
{
    int n = 0;
    for (int k = 0; k < s->len[t]; k++) {
        const int32_t i = s->idx[(size_t)t * s->width + k];
        if (i == -1)
            continue;
        double *row = dst + (size_t)n++ * REF_DSV4_D;
        ref_dsv4_dequantize(s->cache, s->block_size, i, row);
        /* The MMA input dtype; exact for every value the quantizer writes. */
        if (emulate)
            for (int d = 0; d < REF_DSV4_D; d++)
                row[d] = ref_fast_bf16_to_f32(ref_fast_f32_to_bf16((float)row[d]));
    }
    return n;
}

int ref_dsv4_sparse_decode(const ref_dsv4_args *a, double *out, double *lse)
{
    if (!a || a->tokens < 0 || a->hq <= 0)
        return REF_EINVAL;
    if (a->tokens > 0 && (!a->q || !out || !lse))
        return REF_EINVAL;
    if (!ref_dtype_is_float(a->q_dtype))
        return REF_EDTYPE;
    int err = ref__scope_check(&a->swa, a->tokens);
    if (err == REF_OK)
        err = ref__scope_check(&a->extra, a->tokens);
    if (err != REF_OK)
        return err;

    const int hq = a->hq, T = a->tokens, emulate = a->mode == REF_EMULATE;
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
        for (int t = 0; t < T; t++) {
            const int n = ref__count(&a->swa, t) + ref__count(&a->extra, t);
            if (!lh)
                continue;
            if ((size_t)n > cap) {
                free(rows);
                cap = (size_t)n;
                rows = malloc(cap * REF_DSV4_D * sizeof *rows);
                if (!rows) {
                    cap = 0;
#pragma omp atomic write
                    nomem = 1;
                    continue;
                }
            }
            const int ns = ref__gather(&a->swa, t, emulate, rows);
            ref__gather(&a->extra, t, emulate, rows + (size_t)ns * REF_DSV4_D);
            const ref_view qv = {a->q_dtype, (const char *)a->q + (size_t)t * hq * REF_DSV4_D * es,
                                 REF_DSV4_D, 0};
            const ref_view kv = {REF_F64, rows, REF_DSV4_D, 0};
            double *ot = out + (size_t)t * hq * REF_DSV4_D;
            const int rc = ref_attn(hq, n, 1, 1, REF_DSV4_D, REF_DSV4_D, qv, kv, kv, &o, ot,
                                    REF_DSV4_D, lh, 0);
            if (rc != REF_OK) {
#pragma omp critical(ref__dsv4_err)
                err = err == REF_OK ? rc : err;
                continue;
            }
            for (int h = 0; h < hq; h++) {
                lse[(size_t)h * T + t] = lh[h];
                if (a->sink)
                    ref_apply_sink_row(REF_DSV4_D, ot + (size_t)h * REF_DSV4_D, lh[h], a->sink[h]);
            }
        }
        free(rows);
        free(lh);
    }
    return nomem ? REF_ENOMEM : err;
}
