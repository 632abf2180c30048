/* registry.c - the path registry (one line per path) and helpers shared by path descriptors. */
#include "hx.h"

#include <stdlib.h>
#include <string.h>

extern const hx_path hx_path_mha_varlen;
extern const hx_path hx_path_mla_decode;
extern const hx_path hx_path_mla_prefill;
extern const hx_path hx_path_dsv4_sparse_decode;
extern const hx_path hx_path_merge_states;
extern const hx_path hx_path_cache_write;
extern const hx_path hx_path_extend;
extern const hx_path hx_path_gather_cache;
extern const hx_path hx_path_mixed;
extern const hx_path hx_path_paged_decode;

const hx_path *const hx_paths[] = {
    &hx_path_merge_states,
    &hx_path_cache_write,
    &hx_path_extend,
    &hx_path_gather_cache,
    &hx_path_mixed,
    &hx_path_paged_decode,
    &hx_path_mha_varlen,
    &hx_path_mla_decode,
    &hx_path_mla_prefill,
    &hx_path_dsv4_sparse_decode,
};
const int hx_n_paths = (int)(sizeof hx_paths / sizeof hx_paths[0]);

const hx_path *hx_path_find(const char *name)
{
    for (int i = 0; i < hx_n_paths; i++)
        if (strcmp(hx_paths[i]->name, name) == 0)
            return hx_paths[i];
    return NULL;
}

int hx_check_positive(hx_err *e, const hx_case *c, const char *key, int v)
{
    if (v > 0)
        return HX_OK;
    if (!hx_case_key_line(c, key))
        return hx_case_fail(e, c, NULL, "missing key '%s' (a positive integer) for path '%s'", key,
                            c->path->name);
    return hx_case_fail(e, c, key, "must be a positive integer, got %d", v);
}

int32_t *hx_cu_from_lens(const hx_lens *l)
{
    int32_t *cu = malloc(sizeof(int32_t) * (size_t)(l->n + 1));
    if (!cu)
        return NULL;
    cu[0] = 0;
    for (int i = 0; i < l->n; i++)
        cu[i + 1] = cu[i] + l->v[i];
    return cu;
}

hx_tensor *hx_make_cu_tensor(hx_tensors *in, const char *name, const hx_lens *l, hx_err *e)
{
    int64_t shape[1] = {l->n + 1};
    hx_tensor *t = hx_tensors_add(in, name, REF_I32, 1, shape, e);
    if (!t)
        return NULL;
    int32_t *cu = t->data;
    cu[0] = 0;
    for (int i = 0; i < l->n; i++)
        cu[i + 1] = cu[i] + l->v[i];
    return t;
}

int hx_check_cu_tensor(const hx_case *c, const hx_tensors *in, const char *name, const hx_lens *l,
                       hx_err *e)
{
    const hx_tensor *t = hx_tensors_get(in, name);
    if (!t || t->dtype != REF_I32 || t->numel != (size_t)l->n + 1)
        return hx_fail(e, HX_ECASE, "[%s] input '%s' must be i32 [%d]", c->name, name, l->n + 1);
    const int32_t *cu = t->data;
    if (cu[0] != 0)
        return hx_fail(e, HX_ECASE, "[%s] %s[0] = %d, must be 0", c->name, name, cu[0]);
    for (int i = 0; i < l->n; i++)
        if (cu[i + 1] - cu[i] != l->v[i])
            return hx_fail(e, HX_ECASE,
                           "[%s] %s gives sequence %d length %lld but the case says %d "
                           "(cu_seqlens must be non-decreasing and match the case's lengths)",
                           c->name, name, i, (long long)cu[i + 1] - cu[i], l->v[i]);
    return HX_OK;
}

int64_t hx_lens_total(const hx_lens *l)
{
    int64_t t = 0;
    for (int i = 0; i < l->n; i++)
        t += l->v[i];
    return t;
}

int hx_add_attn_outputs(hx_tensors *out, const char *name, ref_dtype dtype, int64_t tokens,
                        int64_t heads, int64_t dim, hx_err *e)
{
    const int64_t so[3] = {tokens, heads, dim}, sl[2] = {heads, tokens};
    if (!hx_tensors_add(out, name, dtype, 3, so, e) || !hx_tensors_add(out, "lse", REF_F32, 2, sl, e))
        return e->code;
    return HX_OK;
}

void hx_locate_attn(const char *name, size_t i, int64_t tokens, int64_t heads, int64_t dim,
                    int64_t *token, int64_t *head, int64_t *d)
{
    if (strcmp(name, "lse") == 0) {
        *head = (int64_t)i / tokens, *token = (int64_t)i % tokens, *d = -1;
    } else {
        *token = (int64_t)i / (heads * dim);
        *head = (int64_t)i / dim % heads, *d = (int64_t)i % dim;
    }
}

void hx_locate_varlen(const hx_lens *l, int64_t token, int *seq, int64_t *pos)
{
    int64_t start = 0;
    for (int b = 0; b < l->n; b++) {
        if (token < start + l->v[b]) {
            *seq = b;
            *pos = token - start;
            return;
        }
        start += l->v[b];
    }
    *seq = -1;
    *pos = token;
}

int64_t hx_visible_keys(int64_t lq, int64_t lk, int64_t i, int causal, int window_left)
{
    int64_t off = lk - lq, lo = 0, hi = lk - 1;
    if (causal && i + off < hi)
        hi = i + off;
    if (window_left >= 0 && i + off - window_left > lo)
        lo = i + off - window_left;
    return hi >= lo ? hi - lo + 1 : 0;
}

const char *hx_layout_name(int layout)
{
    static const char *const names[] = {"nhd", "hnd", "shuffled"};
    return layout >= 0 && layout < 3 ? names[layout] : "?";
}

hx_tensor *hx_make_block_table(const hx_case *c, hx_tensors *in, const char *name,
                               const int32_t *lens, int n, int block_size, int *pool_blocks,
                               hx_err *e)
{
    int64_t max_blocks = 1, needed = 0;
    for (int b = 0; b < n; b++) {
        int64_t nb = ((int64_t)lens[b] + block_size - 1) / block_size;
        needed += nb;
        if (nb > max_blocks)
            max_blocks = nb;
    }
    int64_t pool = c->num_blocks > 0 ? c->num_blocks : needed;
    if (pool < needed) {
        hx_case_fail(e, c, "num_blocks", "%d blocks cannot hold the %lld blocks the sequences need",
                     c->num_blocks, (long long)needed);
        return NULL;
    }
    if (pool > INT32_MAX) {
        hx_case_fail(e, c, NULL, "%lld blocks do not fit i32 block ids", (long long)pool);
        return NULL;
    }
    int64_t shape[2] = {n, max_blocks};
    hx_tensor *t = hx_tensors_add(in, name, REF_I32, 2, shape, e);
    if (!t)
        return NULL;
    /* Ids handed out in order from `ids`: a permutation of the pool (permuted), 0.. (identity),
     * or the top of the pool, highest first (high: offsets past 2^31 bytes in big pools). */
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(pool ? pool : 1));
    if (!ids) {
        hx_fail(e, HX_ENOMEM, "out of memory for a block table of %lld blocks", (long long)pool);
        return NULL;
    }
    int alloc = c->block_alloc < 0 ? HX_ALLOC_PERMUTED : c->block_alloc;
    for (int64_t i = 0; i < pool; i++)
        ids[i] = (int32_t)(alloc == HX_ALLOC_HIGH ? pool - 1 - i : i);
    if (alloc == HX_ALLOC_PERMUTED) {
        uint64_t key = c->seed ^ ref_hash_str(name);
        for (int64_t i = pool - 1; i > 0; i--) {
            int64_t j = ref_rng_range(key, (uint64_t)i, 0, i);
            int32_t tmp = ids[i];
            ids[i] = ids[j];
            ids[j] = tmp;
        }
    }
    int32_t *bt = t->data;
    int64_t next = 0;
    for (int b = 0; b < n; b++) {
        int64_t nb = ((int64_t)lens[b] + block_size - 1) / block_size;
        for (int64_t j = 0; j < max_blocks; j++)
            bt[b * max_blocks + j] = j < nb ? ids[next++] : -1;
    }
    free(ids);
    *pool_blocks = (int)pool;
    return t;
}

int hx_check_block_table(const hx_case *c, const hx_tensors *in, const char *name,
                         const int32_t *lens, int n, int block_size, int pool_blocks, hx_err *e)
{
    const hx_tensor *t = hx_tensors_get(in, name);
    if (!t || t->dtype != REF_I32 || t->ndim != 2 || t->shape[0] != n)
        return hx_fail(e, HX_ECASE, "[%s] input '%s' must be i32 [%d, max_blocks]", c->name, name, n);
    const int32_t *bt = t->data;
    int64_t mb = t->shape[1];
    for (int b = 0; b < n; b++) {
        int64_t nb = ((int64_t)lens[b] + block_size - 1) / block_size;
        if (nb > mb)
            return hx_fail(e, HX_ECASE, "[%s] %s has %lld columns; sequence %d needs %lld blocks",
                           c->name, name, (long long)mb, b, (long long)nb);
        for (int64_t j = 0; j < nb; j++)
            if (bt[b * mb + j] < 0 || bt[b * mb + j] >= pool_blocks)
                return hx_fail(e, HX_ECASE,
                               "[%s] %s[%d][%lld] = %d is outside the pool of %d blocks", c->name,
                               name, b, (long long)j, bt[b * mb + j], pool_blocks);
    }
    return HX_OK;
}
