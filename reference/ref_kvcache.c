/* ref_kvcache.c - the paged KV cache of SPEC section 0: addressing in the nhd, hnd and
 * shuffled layouts, exact element decoding (fp8 * per-tensor scale), and the two data
 * movement paths, cache_write (section 1) and gather_cache (section 2).
 *
 * Every offset is a size_t computed from 64-bit factors: a pool of 32768 blocks of 64 tokens
 * x 8 heads x 128 dims is already 2^31 elements, and a kernel that multiplies in 32 bits
 * reads the wrong block there; the reference must not share that bug.
 */
#include "ref_paged.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

int ref_kv_x(ref_dtype t)
{
    size_t s = ref_dtype_size(t);
    return s ? (int)(16 / s) : 0;
}

int ref_kv_check(const ref_kv_cache *c)
{
    if (!c)
        return REF_EINVAL;
    if (c->dtype != REF_BF16 && c->dtype != REF_F16 && c->dtype != REF_FP8E4M3)
        return REF_EDTYPE;
    /* An empty pool is a cache too: every sequence of such a batch is empty. */
    if (c->num_blocks < 0 || c->block_size <= 0 || c->heads <= 0 || c->head_dim <= 0 || !c->k ||
        !c->v)
        return REF_EINVAL;
    if (c->layout != REF_KV_NHD && c->layout != REF_KV_HND && c->layout != REF_KV_SHUFFLED)
        return REF_EINVAL;
    if (c->dtype == REF_FP8E4M3 &&
        !(isfinite(c->k_scale) && c->k_scale > 0 && isfinite(c->v_scale) && c->v_scale > 0))
        return REF_EINVAL;
    const int x = ref_kv_x(c->dtype);
    if (c->layout == REF_KV_SHUFFLED && (c->head_dim % x || c->block_size % x))
        return REF_ESHAPE;
    return REF_OK;
}

size_t ref_kv_numel(const ref_kv_cache *c)
{
    return (size_t)c->num_blocks * (size_t)c->block_size * (size_t)c->heads * (size_t)c->head_dim;
}

int ref_kv_shape(const ref_kv_cache *c, int is_v, int64_t shape[5])
{
    const int64_t n = c->num_blocks, bs = c->block_size, h = c->heads, d = c->head_dim;
    const int64_t x = ref_kv_x(c->dtype);
    switch (c->layout) {
    case REF_KV_NHD:
        shape[0] = n, shape[1] = bs, shape[2] = h, shape[3] = d;
        return 4;
    case REF_KV_HND:
        shape[0] = n, shape[1] = h, shape[2] = bs, shape[3] = d;
        return 4;
    case REF_KV_SHUFFLED:
        shape[0] = n, shape[1] = h;
        if (is_v)
            shape[2] = bs / x, shape[3] = d, shape[4] = x;
        else
            shape[2] = d / x, shape[3] = bs, shape[4] = x;
        return 5;
    }
    return 0;
}

size_t ref_kv_index(const ref_kv_cache *c, int is_v, int64_t block, int offset, int head, int dim)
{
    const size_t bs = (size_t)c->block_size, h = (size_t)c->heads, d = (size_t)c->head_dim;
    const size_t n = (size_t)block, o = (size_t)offset, hh = (size_t)head, dd = (size_t)dim;
    const size_t x = (size_t)ref_kv_x(c->dtype);
    switch (c->layout) {
    case REF_KV_NHD:
        return ((n * bs + o) * h + hh) * d + dd;
    case REF_KV_HND:
        return ((n * h + hh) * bs + o) * d + dd;
    case REF_KV_SHUFFLED:
        if (is_v) /* [N, H, bs/x, D, x]: x consecutive tokens of one dim are adjacent */
            return (((n * h + hh) * (bs / x) + o / x) * d + dd) * x + o % x;
        return (((n * h + hh) * (d / x) + dd / x) * bs + o) * x + dd % x; /* [N, H, D/x, bs, x] */
    }
    return 0;
}

void ref_kv_coords(const ref_kv_cache *c, int is_v, size_t index, int64_t *block, int *offset,
                   int *head, int *dim)
{
    const size_t bs = (size_t)c->block_size, h = (size_t)c->heads, d = (size_t)c->head_dim;
    const size_t x = (size_t)ref_kv_x(c->dtype);
    /* The block is the outermost extent in every layout. */
    *block = (int64_t)(index / (bs * h * d));
    size_t r = index % (bs * h * d);
    switch (c->layout) {
    case REF_KV_NHD:
        *offset = (int)(r / (h * d)), *head = (int)(r / d % h), *dim = (int)(r % d);
        break;
    case REF_KV_HND:
        *head = (int)(r / (bs * d)), *offset = (int)(r / d % bs), *dim = (int)(r % d);
        break;
    case REF_KV_SHUFFLED: {
        *head = (int)(r / (bs * d));
        size_t w = r % (bs * d);
        if (is_v) { /* [bs/x, D, x] */
            *offset = (int)(w / (d * x) * x + w % x);
            *dim = (int)(w / x % d);
        } else { /* [D/x, bs, x] */
            *dim = (int)(w / (bs * x) * x + w % x);
            *offset = (int)(w / x % bs);
        }
        break;
    }
    }
}

ref_request_kind ref_request_kind_of(int c, int n)
{
    return c == 0 ? REF_REQ_PREFILL : n == 1 ? REF_REQ_DECODE : REF_REQ_EXTEND;
}

const char *ref_request_kind_name(ref_request_kind k)
{
    static const char *const names[] = {"decode", "extend", "prefill"};
    return (unsigned)k < 3 ? names[k] : "?";
}

/* ------------------------------------------------------------------- reading rows */

/* The exact value of every bf16 and f16 code, from ref_load once per process: a long gather
 * then costs one table load per element instead of a decode. */
static double ref__bf16_values[65536], ref__f16_values[65536];
static pthread_once_t ref__values_once = PTHREAD_ONCE_INIT;

static void ref__values_init(void)
{
    for (unsigned i = 0; i < 65536; i++) {
        const uint16_t code = (uint16_t)i;
        ref__bf16_values[i] = ref_load(REF_BF16, &code, 0);
        ref__f16_values[i] = ref_load(REF_F16, &code, 0);
    }
}

/* How one cache tensor's codes become values: dequantized exactly, then rounded through
 * round_to. fp8's 256 values are tabulated per call with the scale and the rounding applied
 * (through ref_load and ref_round_to, so the table is exactly those functions); bf16/f16
 * caches are never scaled (the scale belongs to fp8), and read in their own dtype need no
 * rounding. */
typedef struct ref__decoder {
    ref_dtype dt, round_to;
    int round;
    const double *values16;
    double fp8[256];
} ref__decoder;

static void ref__decoder_init(ref__decoder *dc, ref_dtype dt, double scale, ref_dtype round_to)
{
    dc->dt = dt;
    dc->round_to = round_to;
    dc->round = round_to != REF_F64 && round_to != dt;
    if (dt != REF_FP8E4M3) {
        pthread_once(&ref__values_once, ref__values_init);
        dc->values16 = dt == REF_BF16 ? ref__bf16_values : ref__f16_values;
        return;
    }
    for (unsigned i = 0; i < 256; i++) {
        const uint8_t code = (uint8_t)i;
        const double x = ref_load(dt, &code, 0) * scale;
        dc->fp8[i] = round_to == REF_F64 ? x : ref_round_to(round_to, x);
    }
}

static inline double ref__decode(const ref__decoder *dc, const void *base, size_t i)
{
    if (dc->dt == REF_FP8E4M3)
        return dc->fp8[((const uint8_t *)base)[i]];
    uint16_t code;
    memcpy(&code, (const unsigned char *)base + 2 * i, 2);
    const double x = dc->values16[code];
    return dc->round ? ref_round_to(dc->round_to, x) : x;
}

/* Element offsets of dims 0..d-1 from dim 0 of a (block, offset, head): the index is linear in
 * the dim within one such row in every layout (shuffled K: (d/x)*bs*x + d%x; V: d*x), so a row
 * is its base index plus these. Derived from ref_kv_index itself. malloc'd. */
static size_t *ref__dim_offsets(const ref_kv_cache *c, int is_v)
{
    size_t *o = malloc((size_t)c->head_dim * sizeof *o);
    for (int d = 0; o && d < c->head_dim; d++)
        o[d] = ref_kv_index(c, is_v, 0, 0, 0, d) - ref_kv_index(c, is_v, 0, 0, 0, 0);
    return o;
}

int ref_kv_gather_rows(const ref_kv_cache *c, const int32_t *bt, int max_blocks, int64_t t0,
                       int n, ref_dtype round_to, double *k, double *v)
{
    int err = ref_kv_check(c);
    if (err != REF_OK)
        return err;
    if (t0 < 0 || n < 0 || max_blocks < 0 || (n > 0 && (!bt || !k || !v)))
        return REF_EINVAL;
    if (n == 0)
        return REF_OK;
    const int64_t bs = c->block_size;
    if ((t0 + n - 1) / bs >= max_blocks)
        return REF_ERANGE;
    for (int64_t j = t0 / bs; j <= (t0 + n - 1) / bs; j++)
        if (bt[j] < 0 || bt[j] >= c->num_blocks)
            return REF_ERANGE;

    size_t *ok = ref__dim_offsets(c, 0), *ov = ref__dim_offsets(c, 1);
    if (!ok || !ov) {
        free(ok);
        free(ov);
        return REF_ENOMEM;
    }
    ref__decoder dk, dv;
    ref__decoder_init(&dk, c->dtype, c->k_scale, round_to);
    ref__decoder_init(&dv, c->dtype, c->v_scale, round_to);
    const int h = c->heads, d = c->head_dim;
    const int par = !omp_in_parallel() && (int64_t)n * h * d >= (1 << 16);
#pragma omp parallel for schedule(static) if (par)
    for (int i = 0; i < n; i++) {
        const int64_t t = t0 + i, blk = bt[t / bs];
        const int off = (int)(t % bs);
        for (int hh = 0; hh < h; hh++) {
            double *kr = k + ((size_t)i * h + hh) * d, *vr = v + ((size_t)i * h + hh) * d;
            const size_t kb = ref_kv_index(c, 0, blk, off, hh, 0), vb = ref_kv_index(c, 1, blk, off, hh, 0);
            for (int dd = 0; dd < d; dd++) {
                kr[dd] = ref__decode(&dk, c->k, kb + ok[dd]);
                vr[dd] = ref__decode(&dv, c->v, vb + ov[dd]);
            }
        }
    }
    free(ok);
    free(ov);
    return REF_OK;
}

int ref_kv_attend(const ref_kv_cache *c, const int32_t *bt, int max_blocks, int lk,
                  ref_dtype round_to, int nq, int hq, ref_view q, const ref_attn_opts *o,
                  double *out, double *lse, ptrdiff_t lse_head_stride)
{
    const int hkv = c->heads, d = c->head_dim;
    const size_t row = (size_t)hkv * d;
    double *k = malloc(((size_t)lk * row + 1) * sizeof *k); /* + 1: never malloc(0) */
    double *v = malloc(((size_t)lk * row + 1) * sizeof *v);
    int rc = k && v ? REF_OK : REF_ENOMEM;
    if (rc == REF_OK)
        rc = ref_kv_gather_rows(c, bt, max_blocks, 0, lk, round_to, k, v);
    if (rc == REF_OK) {
        const ref_view kv = {REF_F64, k, (ptrdiff_t)row, d}, vv = {REF_F64, v, (ptrdiff_t)row, d};
        rc = ref_attn(nq, lk, hq, hkv, d, d, q, kv, vv, o, out, (ptrdiff_t)hq * d, lse,
                      lse_head_stride);
    }
    free(k);
    free(v);
    return rc;
}

/* ------------------------------------------------------------------ cache_write */

/* How a source element becomes a cache code. Same dtype (not fp8): a copy. From a 16-bit
 * source: a table over its 65536 codes, built with ref_store (so exactly the generic rule
 * below) when the write is long enough to pay for it. Otherwise per element: fp8 stores
 * x / scale, the quotient rounded once to f32 by ref_store (a double quotient of two f32
 * values rounds to the correctly rounded f32 one) and then to fp8; other dtypes store x. */
typedef struct ref__encoder {
    ref_dtype src, dst;
    double scale;
    int copy;
    uint16_t *table; /* [65536] cache codes, or NULL */
} ref__encoder;

static void ref__encode_generic(const ref__encoder *en, void *dst, size_t di, const void *src,
                                size_t si)
{
    const double x = ref_load(en->src, src, si);
    ref_store(en->dst, dst, di, en->dst == REF_FP8E4M3 ? x / en->scale : x);
}

static int ref__encoder_init(ref__encoder *en, ref_dtype src, ref_dtype dst, double scale,
                             int64_t elements)
{
    *en = (ref__encoder){src, dst, scale, src == dst && dst != REF_FP8E4M3, NULL};
    if (en->copy || ref_dtype_size(src) != 2 || elements < 65536)
        return REF_OK;
    en->table = malloc(65536 * sizeof *en->table);
    if (!en->table)
        return REF_ENOMEM;
    for (unsigned i = 0; i < 65536; i++) {
        const uint16_t code = (uint16_t)i;
        uint16_t out = 0;
        ref__encode_generic(en, &out, 0, &code, 0);
        /* A one-byte code is the first byte of `out`, whatever the byte order. */
        en->table[i] = ref_dtype_size(dst) == 1 ? *(const uint8_t *)&out : out;
    }
    return REF_OK;
}

static inline void ref__encode(const ref__encoder *en, void *dst, size_t di, const void *src,
                               size_t si)
{
    const size_t es = ref_dtype_size(en->dst);
    if (en->copy) {
        memcpy((unsigned char *)dst + di * es, (const unsigned char *)src + si * es, es);
    } else if (en->table) {
        uint16_t code;
        memcpy(&code, (const unsigned char *)src + 2 * si, 2);
        if (es == 1)
            ((uint8_t *)dst)[di] = (uint8_t)en->table[code];
        else
            memcpy((unsigned char *)dst + 2 * di, &en->table[code], 2);
    } else {
        ref__encode_generic(en, dst, di, src, si);
    }
}

int ref_cache_write(const ref_kv_cache *c, int64_t t, ref_dtype src_dtype, const void *k,
                    const void *v, const int64_t *slot_mapping)
{
    int err = ref_kv_check(c);
    if (err != REF_OK)
        return err;
    if (t < 0 || (t > 0 && (!k || !v || !slot_mapping)))
        return REF_EINVAL;
    if (!ref_dtype_is_float(src_dtype))
        return REF_EDTYPE;
    const int64_t nslots = (int64_t)c->num_blocks * c->block_size;
    /* Checked in full before any write, so a bad mapping leaves the cache untouched; with no
     * duplicates the writes are independent and may run in parallel. */
    unsigned char *seen = calloc((size_t)(nslots + 7) / 8, 1);
    if (!seen)
        return REF_ENOMEM;
    for (int64_t i = 0; i < t && err == REF_OK; i++) {
        const int64_t s = slot_mapping[i];
        if (s == -1)
            continue;
        if (s < -1 || s >= nslots)
            err = REF_ERANGE;
        else if (seen[s / 8] >> (s % 8) & 1)
            err = REF_EINVAL;
        else
            seen[s / 8] |= (unsigned char)(1u << (s % 8));
    }
    free(seen);
    if (err != REF_OK)
        return err;

    const int h = c->heads, d = c->head_dim, bs = c->block_size;
    ref__encoder ek, ev;
    size_t *ok = ref__dim_offsets(c, 0), *ov = ref__dim_offsets(c, 1);
    err = ok && ov ? REF_OK : REF_ENOMEM;
    if (err == REF_OK)
        err = ref__encoder_init(&ek, src_dtype, c->dtype, c->k_scale, t * h * d);
    if (err == REF_OK && (err = ref__encoder_init(&ev, src_dtype, c->dtype, c->v_scale, t * h * d)))
        free(ek.table);
    if (err != REF_OK) {
        free(ok);
        free(ov);
        return err;
    }
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && t * h * d >= (1 << 16))
    for (int64_t i = 0; i < t; i++) {
        const int64_t s = slot_mapping[i];
        if (s < 0)
            continue;
        const int64_t blk = s / bs;
        const int off = (int)(s % bs);
        for (int hh = 0; hh < h; hh++) {
            const size_t kb = ref_kv_index(c, 0, blk, off, hh, 0), vb = ref_kv_index(c, 1, blk, off, hh, 0);
            const size_t si = ((size_t)i * h + hh) * d;
            for (int dd = 0; dd < d; dd++) {
                ref__encode(&ek, c->k, kb + ok[dd], k, si + dd);
                ref__encode(&ev, c->v, vb + ov[dd], v, si + dd);
            }
        }
    }
    free(ek.table);
    free(ev.table);
    free(ok);
    free(ov);
    return REF_OK;
}

/* ----------------------------------------------------------------- gather_cache */

int ref_gather_cache(const ref_kv_cache *c, int batch, const int32_t *block_table, int max_blocks,
                     const int32_t *starts, const int32_t *lens, const int32_t *cu_out,
                     ref_dtype out_dtype, double *k, double *v)
{
    int err = ref_kv_check(c);
    if (err != REF_OK)
        return err;
    if (batch < 0 || max_blocks < 0 || !cu_out || (batch > 0 && (!block_table || !starts || !lens)))
        return REF_EINVAL;
    if (!ref_dtype_is_float(out_dtype))
        return REF_EDTYPE;
    if (cu_out[0] != 0)
        return REF_ESHAPE;
    for (int b = 0; b < batch; b++) {
        if (starts[b] < 0 || lens[b] < 0)
            return REF_EINVAL;
        if ((int64_t)cu_out[b + 1] - cu_out[b] != lens[b])
            return REF_ESHAPE;
    }
    if (cu_out[batch] > 0 && (!k || !v))
        return REF_EINVAL;

    const size_t row = (size_t)c->heads * c->head_dim;
    /* Per sequence: the gather itself goes serial inside this region. */
#pragma omp parallel for schedule(dynamic) if (!omp_in_parallel() && batch > 1)
    for (int b = 0; b < batch; b++) {
        int rc = ref_kv_gather_rows(c, block_table + (size_t)b * max_blocks, max_blocks, starts[b],
                                    lens[b], out_dtype, k + (size_t)cu_out[b] * row,
                                    v + (size_t)cu_out[b] * row);
        if (rc != REF_OK) {
#pragma omp critical(ref__gather_err)
            if (err == REF_OK)
                err = rc;
        }
    }
    return err;
}
