/* dsv4_sparse_decode.c - path descriptor for DeepSeek V4 sparse MLA decode (SPEC section 10):
 * a sliding-window scope and an extra (compressed, top-k) scope over 584-byte blocked FP8
 * latent caches, with a per-head attention sink.
 *
 * Inputs  q [T, Hq, 512] bf16;
 *         swa_cache [Ns, stride(swa_block_size)] u8, swa_idx [T, window] i32, swa_len [T] i32;
 *         extra_cache [Ne, stride(extra_block_size)] u8, extra_idx [T, topk] i32,
 *         extra_len [T] i32; sink [Hq] f32.
 *         (stride(bs) = ceil(bs * 584 / 576) * 576; an index is a flat slot of its scope's cache.)
 * Outputs out [T, Hq, 512] bf16, lse [Hq, T] f32.
 *
 * Case design (SPEC's "context for case design"): token t decodes at position p = positions[t].
 * Its SWA entries are positions max(0, p - window + 1) .. p ascending, position x at offset
 * x % bs of the block its own block table gives logical block x / bs (blocks from a pool
 * permuted by the case seed, as a paged cache with freed out-of-window blocks); swa_len is
 * their count. Its compressed history has (p + 1) / compress_ratio entries (entry j, rotated
 * at position j * compress_ratio, exists once position (j + 1) * ratio - 1 is reached), entry
 * j at logical slot j of its own block table; extra_idx holds min(available, topk) of them
 * drawn at random, in random order, and extra_len their count. Rows are padded with -1.
 * Every indexed row holds an sd-1 bf16 normal quantized by the reference quantizer; every
 * other byte of both caches is 0xFF (NaN in fp8, bf16 and e8m0), so a kernel that reads a row
 * it was not given produces NaN.
 */
#include "hx.h"
#include "ref_mla.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct ds__counts {
    int64_t swa, extra; /* used entries of one token */
} ds__counts;

static ds__counts ds__entries(const hx_case *c, int64_t p)
{
    const int64_t avail = (p + 1) / c->compress_ratio;
    const ds__counts n = {p + 1 < c->window ? p + 1 : c->window, avail < c->topk ? avail : c->topk};
    return n;
}

static int ds__check(hx_case *c, hx_err *e)
{
    if (!c->positions.set)
        return hx_case_fail(e, c, NULL, "missing key 'positions' (position of each decode token)");
    if (!c->heads_q)
        c->heads_q = 64;
    if (!c->window)
        c->window = 128;
    if (!c->topk)
        c->topk = 512;
    if (!c->compress_ratio)
        c->compress_ratio = 4;
    if (!c->swa_block_size)
        c->swa_block_size = 64;
    if (!c->extra_block_size)
        c->extra_block_size = 64;
    if (c->sink < 0)
        c->sink = HX_SINK_RANDOM;
    if (c->scale == 0)
        c->scale = 1.0 / sqrt((double)REF_DSV4_D);
    c->batch = c->positions.n;
    c->heads_kv = 1;
    c->head_dim = c->head_dim_v = REF_DSV4_D;
    c->dtype = REF_BF16;
    return HX_OK;
}

/* Add a u8 cache of `pool` blocks, every byte 0xFF. */
static hx_tensor *ds__cache(const hx_case *c, hx_tensors *in, const char *name, int pool, int bs,
                            hx_err *e)
{
    if ((int64_t)pool * bs > INT32_MAX) {
        hx_case_fail(e, c, NULL, "%s: %lld slots do not fit i32 indices", name,
                     (long long)pool * bs);
        return NULL;
    }
    const int64_t shape[2] = {pool, (int64_t)ref_dsv4_block_stride(bs)};
    hx_tensor *t = hx_tensors_add(in, name, REF_U8, 2, shape, e);
    if (t)
        memset(t->data, 0xFF, t->bytes);
    return t;
}

/* An sd-1 row generated in bf16, keyed by its slot, through the reference quantizer. */
static void ds__write_row(uint8_t *cache, int bs, int64_t slot, uint64_t key)
{
    float x[REF_DSV4_D];
    for (int d = 0; d < REF_DSV4_D; d++)
        x[d] = ref_fast_bf16_to_f32(
            ref_fast_f32_to_bf16((float)ref_rng_normal(key, (uint64_t)slot * REF_DSV4_D + d)));
    ref_dsv4_quantize(x, cache, bs, slot);
}

static int ds__make_inputs(const hx_case *c, hx_tensors *in, hx_err *e)
{
    const int T = c->positions.n, hq = c->heads_q, W = c->window, K = c->topk;
    const int bss = c->swa_block_size, bse = c->extra_block_size;
    const int32_t *pos = c->positions.v;
    const int64_t sq[3] = {T, hq, REF_DSV4_D}, sw[2] = {T, W}, sk[2] = {T, K}, st[1] = {T},
                  sh[1] = {hq};
    hx_tensors tmp = {0}; /* the scopes' block tables: how slots were handed out, not inputs */
    int32_t *span = malloc(2 * sizeof(int32_t) * (size_t)(T ? T : 1)), *avail = span + T;
    if (!span)
        return hx_fail(e, HX_ENOMEM, "[%s] out of memory", c->name);
    for (int t = 0; t < T; t++) {
        const int64_t first = pos[t] - ds__entries(c, pos[t]).swa + 1;
        span[t] = (int32_t)((pos[t] / bss - first / bss + 1) * bss);
        avail[t] = (int32_t)((pos[t] + 1) / c->compress_ratio);
    }
    int pool_s = 0, pool_e = 0, rc = HX_OK;
    hx_tensor *q = hx_tensors_add(in, "q", REF_BF16, 3, sq, e);
    const hx_tensor *bts =
        q ? hx_make_block_table(c, &tmp, "swa_block_table", span, T, bss, &pool_s, e) : NULL;
    const hx_tensor *bte =
        bts ? hx_make_block_table(c, &tmp, "extra_block_table", avail, T, bse, &pool_e, e) : NULL;
    hx_tensor *cs = bte ? ds__cache(c, in, "swa_cache", pool_s, bss, e) : NULL;
    hx_tensor *is = cs ? hx_tensors_add(in, "swa_idx", REF_I32, 2, sw, e) : NULL;
    hx_tensor *ls = is ? hx_tensors_add(in, "swa_len", REF_I32, 1, st, e) : NULL;
    hx_tensor *ce = ls ? ds__cache(c, in, "extra_cache", pool_e, bse, e) : NULL;
    hx_tensor *ie = ce ? hx_tensors_add(in, "extra_idx", REF_I32, 2, sk, e) : NULL;
    hx_tensor *le = ie ? hx_tensors_add(in, "extra_len", REF_I32, 1, st, e) : NULL;
    hx_tensor *sink = le ? hx_tensors_add(in, "sink", REF_F32, 1, sh, e) : NULL;
    if (!sink) {
        rc = e->code;
        goto out;
    }
    hx_tensor_fill_normal(q, c->seed, 1.0 / (c->scale * sqrt((double)REF_DSV4_D)));

    const uint64_t ks = c->seed ^ ref_hash_str("swa_cache"),
                   ke = c->seed ^ ref_hash_str("extra_cache");
    const uint64_t kpick = c->seed ^ ref_hash_str("extra_idx");
    const int32_t *ts = bts->data, *te = bte->data;
    const int64_t mbs = bts->shape[1], mbe = bte->shape[1];
    int32_t *idx_s = is->data, *len_s = ls->data, *idx_e = ie->data, *len_e = le->data;
    int nomem = 0;
#pragma omp parallel
    {
        int32_t *perm = NULL;
        int cap = 0;
#pragma omp for schedule(dynamic)
        for (int t = 0; t < T; t++) {
            const int64_t p = pos[t];
            const ds__counts n = ds__entries(c, p);
            const int64_t first = p - n.swa + 1, fb = first / bss;
            for (int k = 0; k < W; k++) {
                int32_t slot = -1;
                if (k < n.swa) {
                    const int64_t x = first + k;
                    slot = (int32_t)(ts[t * mbs + x / bss - fb] * (int64_t)bss + x % bss);
                    ds__write_row(cs->data, bss, slot, ks);
                }
                idx_s[(size_t)t * W + k] = slot;
            }
            len_s[t] = (int32_t)n.swa;

            /* A partial Fisher-Yates shuffle of the available entries: a random subset in
             * random order, as a top-k returns it. */
            if (avail[t] > cap) {
                free(perm);
                cap = avail[t];
                perm = malloc(sizeof *perm * (size_t)cap);
                if (!perm) {
                    cap = 0;
#pragma omp atomic write
                    nomem = 1;
                    continue;
                }
            }
            for (int j = 0; j < avail[t]; j++)
                perm[j] = j;
            for (int k = 0; k < K; k++) {
                int32_t slot = -1;
                if (k < n.extra) {
                    const int64_t r = ref_rng_range(kpick, (uint64_t)t * K + k, k, avail[t] - 1);
                    const int32_t j = perm[r];
                    perm[r] = perm[k];
                    perm[k] = j;
                    slot = (int32_t)(te[t * mbe + j / bse] * (int64_t)bse + j % bse);
                    ds__write_row(ce->data, bse, slot, ke);
                }
                idx_e[(size_t)t * K + k] = slot;
            }
            len_e[t] = (int32_t)n.extra;
        }
        free(perm);
    }
    if (nomem) {
        rc = hx_fail(e, HX_ENOMEM, "[%s] out of memory drawing the extra indices", c->name);
        goto out;
    }

    float *s = sink->data;
    const uint64_t key = c->seed ^ ref_hash_str("sink");
    for (int h = 0; h < hq; h++)
        s[h] = c->sink == HX_SINK_RANDOM    ? (float)(2.0 * ref_rng_normal(key, (uint64_t)h))
               : c->sink == HX_SINK_POS_INF ? INFINITY
                                            : -INFINITY; /* none: -inf has no effect */
out:
    hx_tensors_free(&tmp);
    free(span);
    return rc;
}

static int ds__check_scope(const hx_case *c, const hx_tensors *in, const char *scope, int bs,
                           int width, hx_err *e)
{
    const int T = c->positions.n;
    char name[3][HX_NAME_MAX];
    snprintf(name[0], sizeof name[0], "%s_cache", scope);
    snprintf(name[1], sizeof name[1], "%s_idx", scope);
    snprintf(name[2], sizeof name[2], "%s_len", scope);
    const hx_tensor *cache = hx_tensors_get(in, name[0]), *idx = hx_tensors_get(in, name[1]),
                    *len = hx_tensors_get(in, name[2]);
    const int64_t stride = (int64_t)ref_dsv4_block_stride(bs);
    if (!cache || cache->dtype != REF_U8 || cache->ndim != 2 || cache->shape[1] != stride)
        return hx_fail(e, HX_ECASE, "[%s] input '%s' must be u8 [num_blocks, %lld] (block size %d)",
                       c->name, name[0], (long long)stride, bs);
    if (!idx || idx->dtype != REF_I32 || idx->ndim != 2 || idx->shape[0] != T ||
        idx->shape[1] != width)
        return hx_fail(e, HX_ECASE, "[%s] input '%s' must be i32 [%d, %d]", c->name, name[1], T,
                       width);
    if (!len || len->dtype != REF_I32 || len->numel != (size_t)T)
        return hx_fail(e, HX_ECASE, "[%s] input '%s' must be i32 [%d]", c->name, name[2], T);
    const int64_t slots = cache->shape[0] * bs;
    const int32_t *iv = idx->data, *lv = len->data;
    for (int t = 0; t < T; t++) {
        if (lv[t] < 0 || lv[t] > width)
            return hx_fail(e, HX_ECASE, "[%s] %s[%d] = %d is outside [0, %d]", c->name, name[2], t,
                           lv[t], width);
        for (int k = 0; k < lv[t]; k++)
            if (iv[(size_t)t * width + k] < -1 || iv[(size_t)t * width + k] >= slots)
                return hx_fail(e, HX_ECASE,
                               "[%s] %s[%d][%d] = %d is neither -1 nor a slot of the %lld in %s",
                               c->name, name[1], t, k, iv[(size_t)t * width + k], (long long)slots,
                               name[0]);
    }
    return HX_OK;
}

static int ds__check_inputs(const hx_case *c, const hx_tensors *in, hx_err *e)
{
    const hx_tensor *sink = hx_tensors_get(in, "sink");
    if (!sink || sink->dtype != REF_F32 || sink->numel != (size_t)c->heads_q)
        return hx_fail(e, HX_ECASE, "[%s] input 'sink' must be f32 [%d]", c->name, c->heads_q);
    int rc = ds__check_scope(c, in, "swa", c->swa_block_size, c->window, e);
    return rc ? rc : ds__check_scope(c, in, "extra", c->extra_block_size, c->topk, e);
}

static int ds__make_outputs(const hx_case *c, hx_tensors *out, hx_err *e)
{
    return hx_add_attn_outputs(out, "out", REF_BF16, c->positions.n, c->heads_q, REF_DSV4_D, e);
}

static ref_dsv4_scope ds__scope(const hx_tensors *in, const char *cache, const char *idx,
                                const char *len, int bs)
{
    const hx_tensor *ct = hx_tensors_get(in, cache), *it = hx_tensors_get(in, idx);
    const ref_dsv4_scope s = {ct->data, ct->shape[0], bs, it->data, hx_tensors_get(in, len)->data,
                              (int)it->shape[1]};
    return s;
}

static int ds__reference(const hx_case *c, const hx_tensors *in, hx_tensors *out, ref_mode mode,
                         hx_err *e)
{
    const ref_dsv4_args a = {
        .tokens = c->positions.n, .hq = c->heads_q,
        .q_dtype = REF_BF16, .q = hx_tensors_get(in, "q")->data,
        .swa = ds__scope(in, "swa_cache", "swa_idx", "swa_len", c->swa_block_size),
        .extra = ds__scope(in, "extra_cache", "extra_idx", "extra_len", c->extra_block_size),
        .sink = hx_tensors_get(in, "sink")->data,
        .scale = c->scale, .mode = mode, .p_dtype = REF_BF16,
    };
    int rc = ref_dsv4_sparse_decode(&a, hx_tensors_get(out, "out")->data,
                                    hx_tensors_get(out, "lse")->data);
    if (rc)
        return hx_fail(e, HX_ERUNTIME, "[%s] reference: %s", c->name, ref_strerror(rc));
    return HX_OK;
}

/* Bytes count each token's rows once (the generated indices have no duplicates): 584 per row,
 * data and scales. */
static hx_cost ds__cost(const hx_case *c)
{
    double rows = 0;
    for (int t = 0; t < c->positions.n; t++) {
        const ds__counts n = ds__entries(c, c->positions.v[t]);
        rows += (double)(n.swa + n.extra);
    }
    const double T = c->positions.n, hq = c->heads_q;
    hx_cost k = {
        .flops = 2.0 * rows * hq * (2 * REF_DSV4_D),
        .bytes = 2.0 * T * hq * REF_DSV4_D + rows * REF_DSV4_TOKEN +
                 4.0 * (T * (c->window + c->topk + 2) + hq) + T * hq * (2.0 * REF_DSV4_D + 4.0),
    };
    return k;
}

static void ds__locate(const hx_case *c, const char *name, size_t i, char *buf, size_t n)
{
    const size_t T = c->positions.n;
    if (strcmp(name, "lse") == 0) {
        snprintf(buf, n, "token %zu (position %d) head %zu", i % T, c->positions.v[i % T], i / T);
        return;
    }
    const size_t t = i / ((size_t)c->heads_q * REF_DSV4_D), d = i % REF_DSV4_D;
    const ds__counts e = ds__entries(c, c->positions.v[t]);
    char part[24];
    if (d < REF_DSV4_NOPE)
        snprintf(part, sizeof part, "fp8 tile %zu", d / REF_DSV4_TILE);
    else
        snprintf(part, sizeof part, "bf16 rope");
    snprintf(buf, n, "token %zu (position %d; %lld swa + %lld extra rows) head %zu dim %zu (%s)", t,
             c->positions.v[t], (long long)e.swa, (long long)e.extra,
             i / REF_DSV4_D % (size_t)c->heads_q, d, part);
}

/* ------------------------------------------------------------ GPU variants */
#ifdef ATTN_HAVE_GPU
#include "opt.h"

static const char *ds__simple_unsupported(const hx_case *c, const hx_gpu *g)
{
    (void)g;
    if (c->heads_q > 65535)
        return "simple puts query heads on the grid's y dimension: at most 65535";
    return NULL;
}

static opt_dsv4_args ds__args(const hx_case *c, const hx_dtensors *in, hx_dtensors *out)
{
    opt_dsv4_args a = {
        .tokens = c->positions.n, .hq = c->heads_q, .q = hx_dptr(in, "q"),
        .swa = {.cache = hx_dptr(in, "swa_cache"), .block_size = c->swa_block_size,
                .idx = hx_dptr(in, "swa_idx"), .len = hx_dptr(in, "swa_len"), .width = c->window},
        .extra = {.cache = hx_dptr(in, "extra_cache"), .block_size = c->extra_block_size,
                  .idx = hx_dptr(in, "extra_idx"), .len = hx_dptr(in, "extra_len"),
                  .width = c->topk},
        .sink = hx_dptr(in, "sink"), .scale = (float)c->scale,
        .out = hx_dptr(out, "out"), .lse = hx_dptr(out, "lse"),
    };
    return a;
}

static int ds__simple_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_dsv4_args a = ds__args(c, in, out);
    return opt_dsv4_sparse_decode_simple(&a, stream);
}

static const char *ds__packed_unsupported(const hx_case *c, const hx_gpu *g)
{
    return opt_dsv4_sparse_decode_packed_unsupported(c->positions.n, c->heads_q, g->cc_major);
}

static int ds__packed_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_dsv4_args a = ds__args(c, in, out);
    return opt_dsv4_sparse_decode_packed(&a, stream);
}

static const char *ds__wgmma_unsupported(const hx_case *c, const hx_gpu *g)
{
    return opt_dsv4_sparse_decode_wgmma_unsupported(c->positions.n, c->heads_q, g->cc_major);
}

static int ds__wgmma_run(const hx_case *c, const hx_dtensors *in, hx_dtensors *out, void *stream)
{
    const opt_dsv4_args a = ds__args(c, in, out);
    return opt_dsv4_sparse_decode_wgmma(&a, stream);
}

static const hx_variant ds__variants[] = {
    {.name = "simple",
     .summary = "one block per (token, head) over the used SWA then extra entries, FP8 rows "
                "decoded in registers, online softmax in f32, sink once",
     .unsupported = ds__simple_unsupported,
     .run = ds__simple_run,
     .batch_invariant = 1},
    {.name = "packed",
     .summary = "one block per (token, 16 heads) on the tensor cores (mma.sync): each indexed "
                "row read and dequantized once per token and group, online softmax, sink once",
     .unsupported = ds__packed_unsupported,
     .run = ds__packed_run,
     .batch_invariant = 1},
    {.name = "wgmma",
     .summary = "Hopper warpgroup MMA (sm_90a): one block per (token, 64 heads), indexed rows "
                "staged in shared memory and decoded to bf16 there, S and P.V by wgmma, sink once",
     .unsupported = ds__wgmma_unsupported,
     .run = ds__wgmma_run,
     .batch_invariant = 1},
};
#endif // ATTN_HAVE_GPU

const hx_path hx_path_dsv4_sparse_decode = {
    .name = "dsv4_sparse_decode",
    .summary = "DeepSeek V4 sparse MLA decode: SWA + extra scope over 584-byte FP8 caches, sink",
    .keys = "batch heads_q positions window topk compress_ratio swa_block_size extra_block_size "
            "sink scale",
    .outputs = "out lse",
    .check = ds__check,
    .make_inputs = ds__make_inputs,
    .check_inputs = ds__check_inputs,
    .make_outputs = ds__make_outputs,
    .reference = ds__reference,
    .cost = ds__cost,
    .locate = ds__locate,
    HX_VARIANTS(ds__variants),
};
