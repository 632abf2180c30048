/* cache_ops_vec.hip - the paged KV cache's data movement with 16-byte accesses (issue 5 item
 * 4): SPEC section 1, cache_write, and section 2, gather_cache. Values go through exactly the
 * rounding steps of cache_ops.hip's simple kernels (the paths are judged bit-exactly); only
 * the access pattern differs.
 *
 * The unit of work is a "chunk": x consecutive dims of one (token, kv head), x = 16 bytes of
 * cache elements (8 bf16/f16, 16 fp8). In every layout but shuffled V a chunk is 16
 * contiguous bytes of the cache (nhd, hnd: part of a head_dim run; shuffled K: one x-group),
 * and x * 2 contiguous bytes of the row tensor, so it moves as one or two 16-byte accesses.
 * Shuffled V stores x consecutive tokens of one dim in 16 bytes, so there a thread moves the
 * tokens of one cache x-group together: x chunks of 16 contiguous bytes on the cache side
 * (x dims of x tokens), transposed in registers against the rows on the other side.
 * fp8 conversions are the costly part (software, bit-exact): gather decodes through a
 * 256-entry table per scale in shared memory, built with the same arithmetic, and the fp8 code
 * paths loop over tokens rather than unroll them, since after each cold-L2 flush every
 * instruction of an unrolled body is fetched from DRAM again.
 *
 * cache_write_vec: one block per tile of slabs * x tokens (grid-stride over tiles). The
 *   block first loads the tile's slots into shared memory. One thread per (x-token slab, head,
 *   chunk) copies or quantizes x chunks with 16-byte loads and stores. Shuffled V: the tile's
 *   tokens are cut into segments, runs of consecutive slots inside one cache x-group (a
 *   prefill sequence's tokens give whole groups but at the tile's and block's ends), and one
 *   thread per (head, chunk) walks the segments: loads the segment's rows, transposes them
 *   into the group's x chunks and stores the segment's bytes of each (the whole 16 bytes for
 *   a whole group). A decode batch gives one-token segments: single-element stores.
 *   fp8: fp8(x / scale) with the quotient in f32; for a power-of-two scale it is computed as
 *   x * (1 / scale), the same correctly rounded value without the division.
 * gather_cache_vec: the gathered windows are cut into cache x-groups (x aligned token
 *   positions); group slot u of sequence b is u - (cu_out[b] / x + 2 b), a numbering that
 *   leaves room for the at most lens[b] / x + 2 groups of each window without a prefix pass.
 *   One block per run of consecutive group slots: its threads first find each position's
 *   sequence (binary search), output row, physical block and offset, into shared memory; then
 *   one thread per (group, head, chunk) moves x chunks (16-byte loads, one or two 16-byte stores
 *   per row), and for shuffled V loads the group's x chunks of x tokens in one run of 16 * x
 *   bytes and writes each gathered token's row chunk.
 */
#include "paged_kv.h"

#include <stdint.h>

enum {
    CV__THREADS = 256,     /* most threads a block has */
    CV__UNITS = 128,       /* work units a block is sized for, at least */
    CV__MAX_ROWS = 256,    /* token positions a block handles: shared-memory tables */
    CV__MAX_GRID = 1 << 20 /* grid-stride loops cover the rest */
};

/* ------------------------------------------------------------ 16-byte words */
/* x of a cache element dtype (pkv_x, as a constant expression) and its byte width. */
template <int KVT>
struct cv__elem {
    static constexpr int X = KVT == OPT_FP8E4M3 ? 16 : 8;
    static constexpr int BYTES = KVT == OPT_FP8E4M3 ? 1 : 2;
};

__device__ inline void cv__ld16(const void *p, uint32_t *w)
{
    const uint4 r = *(const uint4 *)p;
    w[0] = r.x, w[1] = r.y, w[2] = r.z, w[3] = r.w;
}

__device__ inline void cv__st16(void *p, const uint32_t *w)
{
    *(uint4 *)p = make_uint4(w[0], w[1], w[2], w[3]);
}

/* Element e (of EB bytes) of a word array; e is a compile-time constant in the unrolled loops,
 * so the arrays stay in registers. cv__set ORs into zeroed words. */
template <int EB>
__device__ inline uint32_t cv__get(const uint32_t *w, int e)
{
    return EB == 1 ? (w[e / 4] >> (8 * (e % 4))) & 0xFFu : (w[e / 2] >> (16 * (e % 2))) & 0xFFFFu;
}

template <int EB>
__device__ inline void cv__set(uint32_t *w, int e, uint32_t v)
{
    if (EB == 1)
        w[e / 4] |= v << (8 * (e % 4));
    else
        w[e / 2] |= v << (16 * (e % 2));
}

/* Bytes [lo, hi) of the 16-byte word w to the 16-byte aligned dst: the whole word in one
 * store, else whole 32-bit words where the range covers them and single bytes at its ends.
 * Other threads own the other bytes (disjoint), so nothing outside the range is touched. */
__device__ inline void cv__st16_range(char *dst, const uint32_t *w, int lo, int hi)
{
    if (lo == 0 && hi == 16) {
        cv__st16(dst, w);
        return;
    }
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const int a = 4 * q;
        if (lo <= a && a + 4 <= hi) {
            *(uint32_t *)(dst + a) = w[q];
        } else {
            for (int b = lo > a ? lo : a; b < (hi < a + 4 ? hi : a + 4); b++)
                dst[b] = (char)(w[q] >> (8 * (b - a)));
        }
    }
}

/* ------------------------------------------------------------ element codes */
/* A cache code as the bits of row dtype DT: a copy for a cache of DT; fp8 is code * scale in
 * f32, rounded to nearest even into DT (pkv_load then num_store_f32, as gather simple does). */
template <int DT, int KVT>
__device__ inline uint32_t cv__decode(uint32_t code, float scale)
{
    if (KVT == DT)
        return code;
    const float f = num_fp8e4m3_to_f32((uint8_t)code) * scale;
    return DT == OPT_BF16 ? num_f32_to_bf16(f) : num_f32_to_f16(f);
}

/* An fp8 quantization scale. For a power of two s = 2^k (normal, with a normal reciprocal),
 * x / s and x * 2^-k have the same exact value, so the two correctly rounded f32 operations
 * give the same result for every x (zeros, subnormals, overflow, inf and NaN included). */
typedef struct cv__quant {
    float scale, inv;
    bool pow2;
} cv__quant;

__device__ inline cv__quant cv__quant_of(float s)
{
    const uint32_t b = num_f32_bits(s), e = (b >> 23) & 0xFFu;
    cv__quant q = {s, 1.0f / s, (b & 0x7FFFFFu) == 0 && e >= 1 && e <= 253};
    return q;
}

/* Row bits of DT as a cache code: a copy, or fp8(x / scale) with the quotient in f32 (as
 * cache_write simple does). */
template <int DT, int KVT>
__device__ inline uint32_t cv__encode(uint32_t bits, const cv__quant &q)
{
    if (KVT == DT)
        return bits;
    const float f = DT == OPT_BF16 ? num_bf16_to_f32((uint16_t)bits) : num_f16_to_f32((uint16_t)bits);
    float x;
    if (q.pow2)
        x = f * q.inv;
    else
        x = f / q.scale;
    return num_f32_to_fp8e4m3(x);
}

/* ---------------------------------------------------------------- cache_write */
/* Tables of a tile's tokens i in [0, slabs * x): s_slot[i] = -1 for no write (slot -1, or
 * past the last token); s_blk, s_off: the slot's block and offset; s_seg[i]: the length of
 * the segment that starts at token i (shuffled V), 0 where none starts. */

/* (slab, head, chunk) of K in any layout, or V in nhd/hnd: x tokens, 16-byte stores.
 * bf16/f16 caches (copies): tokens in batches of 8, all loads of a batch in flight before its
 * first store. fp8: one token at a time with the next one's row chunk (32 bytes) loaded ahead,
 * and the 16 codes made 4 at a time (one output word) in a loop, to keep the body small. */
template <int DT, int KVT>
__device__ inline void cw__rows(const opt_kv_cache &c, int is_v,
                                const uint16_t *__restrict__ src, /* src: [tokens, heads, head_dim] */
                                const cv__quant &qs, const int64_t *s_slot, const int64_t *s_blk,
                                const int *s_off, int64_t t0, int slab, int head, int chunk)
{
    constexpr int X = cv__elem<KVT>::X, KB = cv__elem<KVT>::BYTES;
    const size_t h = (size_t)c.heads, d = (size_t)c.head_dim;
    char *dst = (char *)(is_v ? c.v : c.k);
    const uint16_t *row0 = src + (((size_t)(t0 + slab * X) * h + head) * d + (size_t)chunk * X);
    const size_t row_stride = h * d; /* elements from one token to the next */
    if (KVT == DT) {
        uint32_t p[8][4];
#pragma unroll
        for (int l = 0; l < 8; l++) {
            p[l][0] = p[l][1] = p[l][2] = p[l][3] = 0;
            if (s_slot[slab * X + l] >= 0)
                cv__ld16(row0 + l * row_stride, p[l]);
        }
#pragma unroll
        for (int l = 0; l < 8; l++) {
            const int i = slab * X + l;
            if (s_slot[i] >= 0)
                cv__st16(dst + pkv_index(c, is_v, s_blk[i], s_off[i], head, chunk * X) * KB, p[l]);
        }
    } else {
        uint32_t nxt[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (s_slot[slab * X] >= 0) {
            cv__ld16(row0, &nxt[0]);
            cv__ld16(row0 + 8, &nxt[4]);
        }
#pragma unroll 1
        for (int l = 0; l < X; l++) {
            const int i = slab * X + l;
            uint32_t p[8];
#pragma unroll
            for (int e = 0; e < 8; e++)
                p[e] = nxt[e];
            if (l + 1 < X && s_slot[i + 1] >= 0) {
                cv__ld16(row0 + (l + 1) * row_stride, &nxt[0]);
                cv__ld16(row0 + (l + 1) * row_stride + 8, &nxt[4]);
            }
            if (s_slot[i] < 0)
                continue;
            /* Output word q holds elements 4q .. 4q + 3 = the halves of p[2q], p[2q + 1]:
             * each step codes p[0], p[1], then shifts both arrays by one word. */
            uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll 1
            for (int q = 0; q < 4; q++) {
                const uint32_t word = cv__encode<DT, KVT>(p[0] & 0xFFFFu, qs) |
                                      cv__encode<DT, KVT>(p[0] >> 16, qs) << 8 |
                                      cv__encode<DT, KVT>(p[1] & 0xFFFFu, qs) << 16 |
                                      cv__encode<DT, KVT>(p[1] >> 16, qs) << 24;
#pragma unroll
                for (int e = 0; e < 6; e++)
                    p[e] = p[e + 2];
                w[0] = w[1], w[1] = w[2], w[2] = w[3], w[3] = word;
            }
            cv__st16(dst + pkv_index(c, is_v, s_blk[i], s_off[i], head, chunk * X) * KB, w);
        }
    }
}

/* (segment, head, chunk) of shuffled V: tokens i .. i + len - 1 of the tile, consecutive slots
 * at lanes [a, a + len) of one cache x-group, whose x chunks (dims chunk * x + j, 16 bytes of
 * x tokens each) are contiguous. The row side goes in passes of JP dims, x tokens x 16 bytes
 * (bf16 cache: 8 dims) or x 8 bytes (fp8: 4 dims of 16 tokens) in registers at a time, and
 * within a pass one dim at a time (x codes per step, not JP * x, in the body). */
template <int DT, int KVT>
__device__ inline void cw__v_segment(const opt_kv_cache &c,
                                     const uint16_t *__restrict__ src, /* src: [tokens, heads, head_dim] */
                                     const cv__quant &qs, const int64_t *s_slot, const int64_t *s_blk,
                                     const int *s_off, int64_t t0, int i, int len, int head, int chunk)
{
    constexpr int X = cv__elem<KVT>::X, KB = cv__elem<KVT>::BYTES;
    constexpr int JP = X == 8 ? 8 : 4;
    const size_t h = (size_t)c.heads, d = (size_t)c.head_dim;
    const int a = (int)(s_slot[i] % X), b = a + len;
    const int64_t i0 = (int64_t)i - a; /* tile index of lane 0 (negative when the segment starts inside) */
    /* bs % x == 0: the group is x consecutive offsets of one block. */
    const size_t base = pkv_index(c, 1, s_blk[i], s_off[i] - a, head, chunk * X);
    char *dst = (char *)c.v + base * KB;
#pragma unroll 1
    for (int j0 = 0; j0 < X; j0 += JP) {
        uint32_t p[X][JP / 2];
#pragma unroll
        for (int l = 0; l < X; l++) {
#pragma unroll
            for (int q = 0; q < JP / 2; q++)
                p[l][q] = 0;
            if (l >= a && l < b) {
                const uint16_t *s = src + (((size_t)(t0 + i0 + l) * h + head) * d + (size_t)chunk * X + j0);
                if (JP == 8) {
                    cv__ld16(s, p[l]);
                } else {
                    const uint2 r = *(const uint2 *)s;
                    p[l][0] = r.x, p[l][1] = r.y;
                }
            }
        }
        /* One dim at a time: each token's next element is shifted down to the low half of
         * p[l][0]. */
#pragma unroll 1
        for (int j = 0; j < JP; j++) {
            uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
            for (int l = 0; l < X; l++) {
                /* Lanes outside the segment are not coded (a partial group at a tile's or
                 * a block's end); the condition is the same for a warp's threads, which
                 * share the segment. */
                if (l >= a && l < b)
                    cv__set<KB>(w, l, cv__encode<DT, KVT>(p[l][0] & 0xFFFFu, qs));
#pragma unroll
                for (int q = 0; q < JP / 2; q++)
                    p[l][q] = (p[l][q] >> 16) | (q + 1 < JP / 2 ? p[l][q + 1] << 16 : 0u);
            }
            cv__st16_range(dst + (size_t)(j0 + j) * X * KB, w, a * KB, b * KB);
        }
    }
}

/* DT: dtype of k, v (bf16/f16); KVT: the cache's (DT or fp8). A tile is slabs * x tokens. */
template <int DT, int KVT>
__global__ void __launch_bounds__(CV__THREADS)
cache_write_vec_kernel(const uint16_t *__restrict__ k,            /* k: [tokens, heads, head_dim] */
                       const uint16_t *__restrict__ v,            /* v: [tokens, heads, head_dim] */
                       const int64_t *__restrict__ slot_mapping, /* slot_mapping: [tokens] */
                       opt_kv_cache cache, int tokens, int slabs)
{
    constexpr int X = cv__elem<KVT>::X;
    __shared__ int64_t s_slot[CV__MAX_ROWS], s_blk[CV__MAX_ROWS];
    __shared__ int s_off[CV__MAX_ROWS], s_seg[CV__MAX_ROWS];
    const int h = cache.heads, dc = cache.head_dim / X;
    const cv__quant kq = cv__quant_of(KVT == OPT_FP8E4M3 ? *cache.k_scale : 1.0f);
    const cv__quant vq = cv__quant_of(KVT == OPT_FP8E4M3 ? *cache.v_scale : 1.0f);
    const bool shuffled = cache.layout == OPT_KV_SHUFFLED;
    const int nt = slabs * X, per_slab = h * dc;
    for (int64_t t0 = (int64_t)blockIdx.x * nt; t0 < tokens; t0 += (int64_t)gridDim.x * nt) {
        const int n = tokens - t0 < nt ? (int)(tokens - t0) : nt;
        __syncthreads(); /* the previous tile's units are done with the tables */
        for (int i = threadIdx.x; i < nt; i += blockDim.x) {
            const int64_t s = i < n ? slot_mapping[t0 + i] : -1;
            s_slot[i] = s;
            s_blk[i] = s >= 0 ? s / cache.block_size : 0;
            s_off[i] = s >= 0 ? (int)(s % cache.block_size) : 0;
        }
        __syncthreads();
        if (shuffled) {
            /* A segment starts at a written token whose slot starts a group or does not
             * follow the previous token's, and runs while the slots do, inside the group. */
            for (int i = threadIdx.x; i < nt; i += blockDim.x) {
                const int64_t s = s_slot[i];
                int len = 0;
                if (s >= 0 && (i == 0 || s % X == 0 || s_slot[i - 1] != s - 1)) {
                    const int room = X - (int)(s % X);
                    len = 1;
                    while (len < room && i + len < n && s_slot[i + len] == s + len)
                        len++;
                }
                s_seg[i] = len;
            }
            __syncthreads();
        }
        /* (slab, head, chunk) units of K, and of V but for shuffled V. */
        const int nrows = (shuffled ? 1 : 2) * slabs * per_slab;
        for (int u = threadIdx.x; u < nrows; u += blockDim.x) {
            const int is_v = u >= slabs * per_slab;
            const int w = is_v ? u - slabs * per_slab : u;
            const int chunk = w % dc, q = w / dc, head = q % h, i = q / h;
            cw__rows<DT, KVT>(cache, is_v, is_v ? v : k, is_v ? vq : kq, s_slot, s_blk, s_off, t0,
                              i, head, chunk);
        }
        if (!shuffled)
            continue;
        /* Shuffled V: (token, head, chunk) units, live where a segment starts at the token
         * (a warp's threads share the token while h * head_dim / x >= 32). */
        for (int u = threadIdx.x; u < n * per_slab; u += blockDim.x) {
            const int i = u / per_slab, len = s_seg[i];
            if (!len)
                continue;
            const int w = u - i * per_slab, chunk = w % dc, head = w / dc;
            cw__v_segment<DT, KVT>(cache, v, vq, s_slot, s_blk, s_off, t0, i, len, head, chunk);
        }
    }
}

/* ---------------------------------------------------------------- gather_cache */
/* Tables of a block's token positions p in [0, groups * x) (group p / x, lane p % x):
 * s_row[p] = output row, or -1 where the position is outside its sequence's window;
 * s_blk[p], s_off[p] = its physical block and offset. fp8 caches: lut = the output bits of
 * each code, K's [0, 256) and V's [256, 512). */

/* (group, head, chunk) of K in any layout, or V in nhd/hnd: one 16-byte chunk per token.
 * Copies: all x loads in flight before the first store. fp8: one token at a time with the
 * next one's chunk loaded ahead, each code through the table. */
template <int DT, int KVT>
__device__ inline void gc__rows(const opt_kv_cache &c, int is_v, uint16_t *__restrict__ out,
                                const uint16_t *lut, const int *s_row, const int *s_blk,
                                const int *s_off, int group, int head, int chunk)
{
    constexpr int X = cv__elem<KVT>::X, KB = cv__elem<KVT>::BYTES;
    const size_t h = (size_t)c.heads, d = (size_t)c.head_dim;
    const char *src = (const char *)(is_v ? c.v : c.k);
    if (KVT == DT) {
        uint32_t ch[X][4];
#pragma unroll
        for (int l = 0; l < X; l++) {
            const int p = group * X + l;
            if (s_row[p] >= 0)
                cv__ld16(src + pkv_index(c, is_v, s_blk[p], s_off[p], head, chunk * X) * KB, ch[l]);
        }
#pragma unroll
        for (int l = 0; l < X; l++) {
            const int row = s_row[group * X + l];
            if (row >= 0)
                cv__st16(out + (((size_t)row * h + head) * d + (size_t)chunk * X), ch[l]);
        }
    } else {
        uint32_t nxt[4] = {0, 0, 0, 0};
        int p = group * X;
        if (s_row[p] >= 0)
            cv__ld16(src + pkv_index(c, is_v, s_blk[p], s_off[p], head, chunk * X) * KB, nxt);
#pragma unroll 1
        for (int l = 0; l < X; l++, p++) {
            const uint32_t ch[4] = {nxt[0], nxt[1], nxt[2], nxt[3]};
            if (l + 1 < X && s_row[p + 1] >= 0)
                cv__ld16(src + pkv_index(c, is_v, s_blk[p + 1], s_off[p + 1], head, chunk * X) * KB, nxt);
            const int row = s_row[p];
            if (row < 0)
                continue;
            uint32_t r[X / 2];
#pragma unroll
            for (int e = 0; e < X / 2; e++)
                r[e] = lut[cv__get<1>(ch, 2 * e)] | (uint32_t)lut[cv__get<1>(ch, 2 * e + 1)] << 16;
            uint16_t *o = out + (((size_t)row * h + head) * d + (size_t)chunk * X);
#pragma unroll
            for (int q = 0; q < X / 8; q++)
                cv__st16(o + 8 * q, &r[4 * q]);
        }
    }
}

/* (group, head, chunk) of shuffled V: the group's x chunks (dims chunk * x + j, x tokens
 * each) are one run of 16 * x bytes of a single block (bs % x == 0); lanes outside the window
 * are loaded with it but never written out. fp8: in two halves of 8 dims (8 chunks, 128
 * bytes), tokens 4 at a time (one word of every chunk), each code through the table. */
template <int DT, int KVT>
__device__ inline void gc__v_group(const opt_kv_cache &c, uint16_t *__restrict__ out,
                                   const uint16_t *lut, const int *s_row, const int *s_blk,
                                   const int *s_off, int group, int head, int chunk)
{
    constexpr int X = cv__elem<KVT>::X, KB = cv__elem<KVT>::BYTES;
    const size_t h = (size_t)c.heads, d = (size_t)c.head_dim;
    int a = 0;
    while (a < X && s_row[group * X + a] < 0)
        a++;
    if (a == X)
        return;
    const int p = group * X + a;
    const char *src =
        (const char *)c.v + pkv_index(c, 1, s_blk[p], s_off[p] - a, head, chunk * X) * KB;
    if (KVT == DT) {
        uint32_t ch[X][4];
#pragma unroll
        for (int j = 0; j < X; j++)
            cv__ld16(src + (size_t)j * 16, ch[j]);
#pragma unroll
        for (int l = 0; l < X; l++) {
            const int row = s_row[group * X + l];
            if (row < 0)
                continue;
            uint32_t r[X / 2];
#pragma unroll
            for (int e = 0; e < X / 2; e++)
                r[e] = 0;
#pragma unroll
            for (int j = 0; j < X; j++)
                cv__set<2>(r, j, cv__get<KB>(ch[j], l));
            cv__st16(out + (((size_t)row * h + head) * d + (size_t)chunk * X), r);
        }
    } else {
#pragma unroll 1
        for (int j0 = 0; j0 < X; j0 += 8) {
            uint32_t ch[8][4];
#pragma unroll
            for (int j = 0; j < 8; j++)
                cv__ld16(src + (size_t)(j0 + j) * 16, ch[j]);
#pragma unroll 1
            for (int l0 = 0; l0 < X; l0 += 4) {
#pragma unroll
                for (int t = 0; t < 4; t++) {
                    const int row = s_row[group * X + l0 + t];
                    if (row < 0)
                        continue;
                    uint32_t r[4];
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        r[e] = lut[(ch[2 * e][0] >> (8 * t)) & 0xFFu] |
                               (uint32_t)lut[(ch[2 * e + 1][0] >> (8 * t)) & 0xFFu] << 16;
                    cv__st16(out + (((size_t)row * h + head) * d + (size_t)chunk * X + j0), r);
                }
                /* The next 4 tokens' bytes into word 0 of every chunk. */
#pragma unroll
                for (int j = 0; j < 8; j++)
                    ch[j][0] = ch[j][1], ch[j][1] = ch[j][2], ch[j][2] = ch[j][3];
            }
        }
    }
}

/* Group slot numbering: sequence b owns slots [base(b), base(b + 1)), base(b) = cu_out[b] / x
 * + 2 b. Its window [s, s + len) touches floor((s + len - 1) / x) - floor(s / x) + 1 <=
 * floor(len / x) + 2 groups, and base(b + 1) - base(b) >= floor(len / x) + 2: every group
 * has a slot, and slot base(b) + j is group floor(s / x) + j (unused when past the window). */
template <int X>
__device__ inline int64_t gc__base(const int32_t *cu_out, int b)
{
    return (int64_t)cu_out[b] / X + 2 * (int64_t)b;
}

/* DT: dtype of the output k, v (bf16/f16); KVT: the cache's (DT or fp8). */
template <int DT, int KVT>
__global__ void __launch_bounds__(CV__THREADS)
gather_cache_vec_kernel(opt_kv_cache cache,
                        const int32_t *__restrict__ block_table, /* block_table: [batch, max_blocks] */
                        const int32_t *__restrict__ starts,      /* starts: [batch] */
                        const int32_t *__restrict__ cu_out,      /* cu_out: [batch + 1] */
                        uint16_t *__restrict__ k,                /* k: [rows, heads, head_dim] */
                        uint16_t *__restrict__ v,                /* v: [rows, heads, head_dim] */
                        int batch, int max_blocks, int groups)
{
    constexpr int X = cv__elem<KVT>::X;
    __shared__ int s_row[CV__MAX_ROWS], s_blk[CV__MAX_ROWS], s_off[CV__MAX_ROWS];
    __shared__ uint16_t s_lut[KVT == DT ? 1 : 512];
    const uint16_t *k_lut = s_lut, *v_lut = s_lut + (KVT == DT ? 0 : 256);
    const int h = cache.heads, dc = cache.head_dim / X;
    if (KVT != DT) {
        /* Ordered before the first use by the barrier that opens the loop below. */
        const float ks = *cache.k_scale, vs = *cache.v_scale;
        for (int i = threadIdx.x; i < 512; i += blockDim.x)
            s_lut[i] = (uint16_t)cv__decode<DT, KVT>((uint32_t)i & 0xFFu, i < 256 ? ks : vs);
    }
    const int64_t slots = gc__base<X>(cu_out, batch);
    const int npos = groups * X, per_group = h * dc;
    for (int64_t u0 = (int64_t)blockIdx.x * groups; u0 < slots; u0 += (int64_t)gridDim.x * groups) {
        __syncthreads(); /* the previous groups' units are done with the tables */
        for (int p = threadIdx.x; p < npos; p += blockDim.x) {
            const int64_t u = u0 + p / X;
            int row = -1, blk = 0, off = 0;
            if (u < slots) {
                /* The last b with base(b) <= u; base(batch) = slots > u closes the last one. */
                int lo = 0, hi = batch;
                while (hi - lo > 1) {
                    const int mid = lo + (hi - lo) / 2;
                    if (gc__base<X>(cu_out, mid) <= u)
                        lo = mid;
                    else
                        hi = mid;
                }
                const int64_t s = starts[lo], len = cu_out[lo + 1] - cu_out[lo];
                const int64_t pos = (s / X + (u - gc__base<X>(cu_out, lo))) * X + p % X;
                if (pos >= s && pos < s + len) {
                    row = cu_out[lo] + (int)(pos - s);
                    blk = block_table[(size_t)lo * max_blocks + (size_t)(pos / cache.block_size)];
                    off = (int)(pos % cache.block_size);
                }
            }
            s_row[p] = row;
            s_blk[p] = blk;
            s_off[p] = off;
        }
        __syncthreads();
        for (int u = threadIdx.x; u < 2 * groups * per_group; u += blockDim.x) {
            const int is_v = u >= groups * per_group;
            const int w = is_v ? u - groups * per_group : u;
            const int chunk = w % dc, q = w / dc, head = q % h, group = q / h;
            if (!is_v)
                gc__rows<DT, KVT>(cache, 0, k, k_lut, s_row, s_blk, s_off, group, head, chunk);
            else if (cache.layout != OPT_KV_SHUFFLED)
                gc__rows<DT, KVT>(cache, 1, v, v_lut, s_row, s_blk, s_off, group, head, chunk);
            else
                gc__v_group<DT, KVT>(cache, v, v_lut, s_row, s_blk, s_off, group, head, chunk);
        }
    }
}

/* --------------------------------------------------------------- launchers */
/* What the vec kernels need beyond cache_ops.hip's checks (repeated here: a known layout, an
 * element dtype of `dtype` or fp8 with both scales, positive sizes, shuffled extents divisible
 * by x): head_dim a multiple of x (chunks), 16-byte aligned tensors, and (token, head,
 * chunk) counts of a block's CV__MAX_ROWS tokens that fit in int. */
static int cv__check(const opt_kv_cache *c, int dtype, const void *a, const void *b)
{
    if (dtype != OPT_BF16 && dtype != OPT_F16)
        return OPT_EINVAL;
    if (c->dtype != dtype && c->dtype != OPT_FP8E4M3)
        return OPT_EINVAL;
    if (c->dtype == OPT_FP8E4M3 && (!c->k_scale || !c->v_scale))
        return OPT_EINVAL;
    if (c->block_size <= 0 || c->heads <= 0 || c->head_dim <= 0 || !c->k || !c->v)
        return OPT_EINVAL;
    if (c->layout != OPT_KV_NHD && c->layout != OPT_KV_HND && c->layout != OPT_KV_SHUFFLED)
        return OPT_EINVAL;
    const int x = pkv_x(c->dtype);
    if (c->head_dim % x || (c->layout == OPT_KV_SHUFFLED && c->block_size % x))
        return OPT_EINVAL;
    if (((uintptr_t)c->k | (uintptr_t)c->v | (uintptr_t)a | (uintptr_t)b) % 16)
        return OPT_EINVAL;
    if ((int64_t)c->heads * (c->head_dim / x) * CV__MAX_ROWS > INT32_MAX)
        return OPT_EINVAL;
    return OPT_OK;
}

/* Units per x-token slab or group, K and V: a block takes enough of them for CV__UNITS
 * threads' work, up to CV__MAX_ROWS positions, and as many threads as units up to CV__THREADS. */
static int cv__per_block(int per_group, int x, int at_least)
{
    int g = CV__UNITS / per_group;
    if (g < at_least)
        g = at_least;
    if (g > CV__MAX_ROWS / x)
        g = CV__MAX_ROWS / x;
    return g < 1 ? 1 : g;
}

static unsigned cv__threads(int64_t units)
{
    const int64_t t = (units + 31) / 32 * 32;
    return (unsigned)(t < CV__THREADS ? t : CV__THREADS);
}

template <int DT, int KVT>
static int cw__launch(const opt_cache_write_args *a, hipStream_t stream)
{
    constexpr int X = cv__elem<KVT>::X;
    const int per_slab = 2 * a->cache.heads * (a->cache.head_dim / X);
    /* Shuffled V segments are cut at tile ends into partial x-groups; two slabs at least
     * keep most groups whole. */
    const int slabs = cv__per_block(per_slab, X, a->cache.layout == OPT_KV_SHUFFLED ? 2 : 1);
    const int64_t tiles = ((int64_t)a->tokens + slabs * X - 1) / (slabs * X);
    const unsigned grid = (unsigned)(tiles < CV__MAX_GRID ? tiles : CV__MAX_GRID);
    cache_write_vec_kernel<DT, KVT><<<grid, cv__threads((int64_t)slabs * per_slab), 0, stream>>>(
        (const uint16_t *)a->k, (const uint16_t *)a->v, a->slot_mapping, a->cache, a->tokens, slabs);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

extern "C" int opt_cache_write_vec(const opt_cache_write_args *a, void *stream)
{
    if (!a || a->tokens < 0)
        return OPT_EINVAL;
    int rc = cv__check(&a->cache, a->dtype, a->k, a->v);
    if (rc)
        return rc;
    if (a->tokens == 0)
        return OPT_OK;
    if (!a->k || !a->v || !a->slot_mapping)
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    const int fp8 = a->cache.dtype == OPT_FP8E4M3;
    if (a->dtype == OPT_BF16)
        return fp8 ? cw__launch<OPT_BF16, OPT_FP8E4M3>(a, s) : cw__launch<OPT_BF16, OPT_BF16>(a, s);
    return fp8 ? cw__launch<OPT_F16, OPT_FP8E4M3>(a, s) : cw__launch<OPT_F16, OPT_F16>(a, s);
}

template <int DT, int KVT>
static int gc__launch(const opt_gather_cache_args *a, hipStream_t stream)
{
    constexpr int X = cv__elem<KVT>::X;
    const int per_group = 2 * a->cache.heads * (a->cache.head_dim / X);
    const int groups = cv__per_block(per_group, X, 1);
    const int64_t slots = (int64_t)a->rows / X + 2 * (int64_t)a->batch; /* gc__base(batch) */
    const int64_t blocks = (slots + groups - 1) / groups;
    const unsigned grid = (unsigned)(blocks < CV__MAX_GRID ? blocks : CV__MAX_GRID);
    gather_cache_vec_kernel<DT, KVT><<<grid, cv__threads((int64_t)groups * per_group), 0, stream>>>(
        a->cache, a->block_table, a->starts, a->cu_out, (uint16_t *)a->k, (uint16_t *)a->v,
        a->batch, a->max_blocks, groups);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* cu_out must be the prefix sums of lens, and every window inside its sequence's cached
 * tokens (SPEC section 2): they live on the device, so the launcher cannot check that. */
extern "C" int opt_gather_cache_vec(const opt_gather_cache_args *a, void *stream)
{
    if (!a || a->batch < 0 || a->rows < 0 || a->max_blocks < 0 || (a->rows > 0 && a->batch == 0))
        return OPT_EINVAL;
    int rc = cv__check(&a->cache, a->dtype, a->k, a->v);
    if (rc)
        return rc;
    if (a->rows == 0)
        return OPT_OK;
    if (!a->block_table || !a->starts || !a->cu_out)
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    const int fp8 = a->cache.dtype == OPT_FP8E4M3;
    if (a->dtype == OPT_BF16)
        return fp8 ? gc__launch<OPT_BF16, OPT_FP8E4M3>(a, s) : gc__launch<OPT_BF16, OPT_BF16>(a, s);
    return fp8 ? gc__launch<OPT_F16, OPT_FP8E4M3>(a, s) : gc__launch<OPT_F16, OPT_F16>(a, s);
}
