/* cache_ops_vec.hip - the paged KV cache's data movement with 16-byte accesses (issue 5 item
 * 4): SPEC section 1, cache_write, and section 2, gather_cache. Values go through exactly the
 * rounding steps of cache_ops.hip's simple kernels (the paths are judged bit-exactly); only
 * the access pattern differs.
 *
 * The unit of work is one warp's: x consecutive token positions (x = 16 bytes of cache
 * elements: 8 bf16/f16, 16 fp8) of one kv head, K and V, and a part of the head_dim "pieces"
 * of 16 cache bytes each per tensor (x tokens x head_dim dims / x dims a piece): nb * w of
 * them (w = warp width), lane l taking pieces p0 + l, p0 + l + w, ... and issuing all its
 * loads, nb <= 4 pieces per tensor, 128 bytes a lane (bf16 rows of an fp8 cache: nb <= 2 of
 * 32 bytes), before the first store. nb is the most unless the job has fewer units than
 * CV__WARPS_PER_SM warps an SM, then halved until it has (or nb = 1): a small job spreads
 * over many warps and blocks rather than a few warps looping over whole heads. Which piece is
 * which (token t, chunk c of x dims) is chosen per layout so that a warp's loads and stores
 * are runs of whole 32-byte sectors:
 *   nhd, hnd           chunks fastest: t = p / (head_dim / x), c = p % (head_dim / x), so a
 *                      token's head row is contiguous on both sides;
 *   shuffled K         tokens fastest: t = p % x, c = p / x, so x lanes cover one chunk's x
 *                      contiguous tokens in the cache, and 64 contiguous row bytes a token;
 *   shuffled V         the cache's x tokens of dim p are one 16-byte piece (contiguous over
 *                      the lanes); x lanes transpose their x x x tile with warp shuffles
 *                      (log2 x exchange stages of 8 bytes each way a lane, then byte
 *                      permutes), after which lane l holds token p % x's chunk p / x, as
 *                      for shuffled K.
 * fp8 conversions are bit-exact: gather into bf16 with a power-of-two scale
 * 2^-117 .. 2^7 (the default 1/64 included) decodes with two bit operations and one f32
 * multiplication a code, exact (gc__fast_mul); other scales, f16 rows and pieces holding a
 * NaN code go through a 256-entry table per scale in shared memory, built with the same
 * arithmetic as the simple kernel; cache_write encodes two values an instruction where the
 * target converts to e4m3 in hardware, else branch-free in software (paged_kv.h's
 * pkv_f32x2_to_e4m3; both give num_f32_to_fp8e4m3's bits for every input). The per-piece
 * processing loops are not unrolled (the loaded pieces shift down a register array instead),
 * since after each cold-L2 flush every instruction of an unrolled body is fetched from DRAM
 * again.
 *
 * cache_write_vec: one block per tile of slabs * x input tokens (grid-stride over tiles). The
 *   block loads the tile's slots and turns them into element indices in shared memory, then
 *   one warp per (slab, head, part) moves K, and V but for shuffled V (fp8: f32 quotient
 *   x / scale, computed as x * (1 / scale) for a power-of-two scale, the same correctly
 *   rounded value). Shuffled tiles are 4 slabs (2) where the job has 4 (2) slabs an SM, else
 *   1: a small job takes partial groups at tile ends rather than leave SMs idle.
 *   Shuffled V: the tile's tokens are cut into segments, runs of consecutive slots inside one
 *   cache x-group (a prefill sequence's tokens give whole groups but at the sequence's and
 *   tile's ends), listed in shared memory; one warp per (segment, head, part) loads the
 *   segment's row chunks at the group lanes of their slots, transposes, and stores the
 *   segment's bytes of each dim's 16-byte piece (the whole piece for a whole group). A decode batch gives
 *   one-token segments, single-element stores.
 * gather_cache_vec: the gathered windows are cut into cache x-groups (x aligned token
 *   positions); group slot u of sequence b is u - (cu_out[b] / x + 2 b), a numbering that
 *   leaves room for the at most lens[b] / x + 2 groups of each window without a prefix pass.
 *   One block per run of G consecutive group slots (G from the size of the gather and the
 *   GPU: many small blocks for a small gather, fewer setups per byte for a large one). The
 *   block stages cu_out and starts in shared memory once (batch <= CV__MAX_SEQ; else it
 *   searches them in global memory), finds each position's sequence, output row and cache
 *   element indices, then one warp per (group, head, part) moves its x positions.
 */
#include "paged_kv.h"

#include <stdint.h>

enum {
    CV__THREADS = 256,      /* most threads a block has */
    CV__MAX_ROWS = 256,     /* token positions a block could take (the int-range check) */
    CV__MAX_POS = 128,      /* token positions a block takes: shared-memory tables */
    CV__MAX_SEQ = 256,      /* gather: sequences whose cu_out and starts a block stages */
    CV__NB = 4,             /* pieces a lane loads per tensor before storing (bf16 rows) */
    CV__WARPS_PER_SM = 16,  /* unit sizing: a job of fewer units splits heads into parts */
    CV__MAX_GRID = 1 << 20  /* grid-stride loops cover the rest */
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

/* Transposes the x x x tile held by x aligned lanes, x elements of 16 / x bytes a lane: lane
 * l's element at position q becomes lane q's element at position l. Stage k exchanges, with
 * lane l ^ k, the elements at positions whose bit k differs from l's (k = x/2, x/4 move whole
 * words; the 2- and 1-byte stages pack the half-words or bytes to send into two words).
 * Every lane of the warp must call it (shuffles). */
template <int X>
__device__ inline void cv__transpose(uint32_t *w, int lane)
{
    int k = X / 2;
#pragma unroll
    for (int m = 2; m >= 1; m /= 2, k /= 2) { /* word distance m within the lane */
        const bool up = lane & k;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (j & m)
                continue;
            const uint32_t r = GPU_SHFL_XOR(up ? w[j] : w[j | m], k);
            if (up)
                w[j] = r;
            else
                w[j | m] = r;
        }
    }
    { /* half-words: the lower lane sends its high halves, the upper its low ones */
        const bool up = lane & k;
        const uint32_t sel = up ? 0x5410u : 0x7632u;
        const uint32_t ra = GPU_SHFL_XOR(__byte_perm(w[0], w[1], sel), k);
        const uint32_t rb = GPU_SHFL_XOR(__byte_perm(w[2], w[3], sel), k);
        const uint32_t s0 = up ? 0x3254u : 0x5410u, s1 = up ? 0x3276u : 0x7610u;
        w[0] = __byte_perm(w[0], ra, s0), w[1] = __byte_perm(w[1], ra, s1);
        w[2] = __byte_perm(w[2], rb, s0), w[3] = __byte_perm(w[3], rb, s1);
        k /= 2;
    }
    if (X == 16) { /* bytes: the lower lane sends its odd bytes, the upper its even ones */
        const bool up = lane & k;
        const uint32_t sel = up ? 0x6420u : 0x7531u;
        const uint32_t ra = GPU_SHFL_XOR(__byte_perm(w[0], w[1], sel), k);
        const uint32_t rb = GPU_SHFL_XOR(__byte_perm(w[2], w[3], sel), k);
        const uint32_t s0 = up ? 0x3514u : 0x5240u, s1 = up ? 0x3716u : 0x7260u;
        w[0] = __byte_perm(w[0], ra, s0), w[1] = __byte_perm(w[1], ra, s1);
        w[2] = __byte_perm(w[2], rb, s0), w[3] = __byte_perm(w[3], rb, s1);
    }
}

/* ------------------------------------------------------------ a unit's pieces */
/* Where piece p of a unit is: token t of its x, chunk c (dims c * x .. c * x + x - 1); tf
 * (shuffled layouts) = tokens fastest, else chunks fastest (cpt = head_dim / x chunks a
 * token, cshift = log2 cpt when that is a power of two, else -1). */
struct cv__pieces {
    bool tf;
    int cpt, cshift;
};

__device__ inline cv__pieces cv__pieces_of(const opt_kv_cache &c, int x)
{
    const int cpt = c.head_dim / x;
    cv__pieces q = {c.layout == OPT_KV_SHUFFLED, cpt, (cpt & (cpt - 1)) ? -1 : (int)__ffs(cpt) - 1};
    return q;
}

template <int X>
__device__ inline void cv__piece(const cv__pieces &q, int p, int &t, int &ch)
{
    if (q.tf)
        t = p % X, ch = p / X;
    else if (q.cshift >= 0)
        t = p >> q.cshift, ch = p & (q.cpt - 1);
    else
        t = p / q.cpt, ch = p % q.cpt;
}

/* Element strides of a layout from a (block, offset, head 0, dim 0) index: hs per head, cs per
 * chunk of x dims (K, and V but shuffled; shuffled V moves by dim, x elements a dim). */
__device__ inline size_t cv__head_stride(const opt_kv_cache &c)
{
    const size_t d = (size_t)c.head_dim;
    return c.layout == OPT_KV_NHD ? d : (size_t)c.block_size * d; /* hnd, shuffled K and V */
}

__device__ inline size_t cv__chunk_stride(const opt_kv_cache &c, int x)
{
    return c.layout == OPT_KV_SHUFFLED ? (size_t)c.block_size * x : (size_t)x;
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
    return DT == OPT_BF16 ? num_f32_to_bf16(f) : gpu_f32_to_f16(f);
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

/* Row bits of DT as the f32 quotient x / scale that is encoded to fp8 (as cache_write simple
 * computes it). */
template <int DT>
__device__ inline float cv__quotient(uint32_t bits, const cv__quant &q)
{
    const float f = DT == OPT_BF16 ? num_bf16_to_f32((uint16_t)bits) : gpu_f16_to_f32((uint16_t)bits);
    return q.pow2 ? f * q.inv : f / q.scale;
}

/* The two 16-bit row elements of word x as two fp8 codes (low byte first). */
template <int DT>
__device__ inline uint32_t cv__encode2(uint32_t x, const cv__quant &q)
{
    return pkv_f32x2_to_e4m3(cv__quotient<DT>(x & 0xFFFFu, q), cv__quotient<DT>(x >> 16, q));
}

/* 16 row elements (32 bytes) as 16 fp8 codes (16 bytes), one output word at a time. */
template <int DT>
__device__ inline void cv__encode16(const uint32_t *p, const cv__quant &q, uint32_t *w)
{
#pragma unroll
    for (int e = 0; e < 4; e++)
        w[e] = cv__encode2<DT>(p[2 * e], q) | cv__encode2<DT>(p[2 * e + 1], q) << 16;
}

/* Launch shape: SMs of the current device (cached per device id). */
static int cv__sms(void)
{
    static int known[64];
    int dev = 0, n = 0;
    if (hipGetDevice(&dev) != hipSuccess)
        return 1;
    if (dev >= 0 && dev < 64 && known[dev] > 0)
        return known[dev];
    if (hipDeviceGetAttribute(&n, hipDeviceAttributeMultiprocessorCount, dev) != hipSuccess || n < 1)
        n = 1;
    if (dev >= 0 && dev < 64)
        known[dev] = n;
    return n;
}

/* Runs of x tokens (slabs, groups) a block takes, in [at_least, most]: enough blocks to fill
 * the GPU once, `resident` blocks an SM (a small job: one run a block, every block's loads in
 * flight at once), and the fewer setups the more runs there are. `resident`: blocks of the
 * kernel that fit on an SM (gpu_resident_blocks). The grid is then at most one wave: a grid
 * sized for more blocks than fit leaves a second, partial wave whose blocks run after the
 * rest (an fp8 gather sized for 4 blocks an SM where 3 fit ran 1.3 waves). */
static int cv__per_block(int64_t runs, int at_least, int most, int resident)
{
    const int64_t want = (int64_t)cv__sms() * resident;
    int64_t g = (runs + want - 1) / want;
    if (g < at_least)
        g = at_least;
    if (g > most)
        g = most;
    return g < 1 ? 1 : (int)g;
}

/* Pieces a lane takes per unit, at most `most`: fewer (a unit then covers 1/2, 1/4 .. of a
 * head's pieces) while the job's runs * heads * parts units come to fewer than CV__WARPS_PER_SM
 * warps an SM, so that a small job spreads over the GPU instead of a few warps' loops. */
static int cv__lane_pieces(int64_t runs, int heads, int head_dim, int most)
{
    const int64_t want = (int64_t)cv__sms() * CV__WARPS_PER_SM, pieces = head_dim; /* a run's */
    int nb = most;
    while (nb > 1 && runs * heads * ((pieces + (int64_t)GPU_WARP_SIZE * nb - 1) /
                                     ((int64_t)GPU_WARP_SIZE * nb)) < want)
        nb /= 2;
    return nb;
}

static int64_t cv__parts(int head_dim, int nb)
{
    const int64_t pw = (int64_t)GPU_WARP_SIZE * nb;
    return (head_dim + pw - 1) / pw;
}

/* One warp (64 threads: two NVIDIA warps, one AMD wavefront) per unit, up to CV__THREADS. */
static unsigned cv__threads(int64_t units)
{
    const int64_t t = (units * 32 + 63) / 64 * 64;
    return (unsigned)(t < CV__THREADS ? t : CV__THREADS);
}

/* ---------------------------------------------------------------- cache_write */
/* Tables of a tile's tokens i in [0, slabs * x): s_ok[i] = the token is written (slot >= 0,
 * inside the tile); s_kb[i] = element index of (block, offset, head 0, dim 0) in K, and in V
 * but shuffled; s_vb[i] (shuffled) = V's index of the slot's x-group (offset rounded down to
 * x); s_seg: the segments' first tokens, s_len their lengths. */

/* (slab, head) of K in any layout, and of V in nhd/hnd. bf16/f16 caches: CV__NB pieces of
 * 16 bytes a lane and tensor loaded, then stored; fp8: half as many, of 32 row bytes. */
template <int DT, int KVT>
__device__ inline void cw__unit(const opt_kv_cache &c, const uint16_t *__restrict__ k,
                                const uint16_t *__restrict__ v, /* k, v: [tokens, heads, head_dim] */
                                const cv__quant &kq, const cv__quant &vq, const int *s_ok,
                                const size_t *s_kb, int64_t t0, int slab, int head, int p0,
                                int p1, int lane)
{
    constexpr int X = cv__elem<KVT>::X, KB = cv__elem<KVT>::BYTES, W = GPU_WARP_SIZE;
    constexpr bool FP8 = KVT != DT;
    constexpr int NB = FP8 ? CV__NB / 2 : CV__NB, RW = FP8 ? 8 : 4; /* pieces, row words */
    const int d = c.head_dim, h = c.heads;
    const bool both = c.layout != OPT_KV_SHUFFLED; /* V here too (same element index as K) */
    const cv__pieces pq = cv__pieces_of(c, X);
    const size_t hs = cv__head_stride(c) * head, cs = cv__chunk_stride(c, X);
    char *ck = (char *)c.k, *cvv = (char *)c.v;
    const int *ok = s_ok + slab * X;
    const size_t *kb = s_kb + slab * X;
    const size_t row0 = ((size_t)(t0 + slab * X) * h + head) * d, rs = (size_t)h * d;
    for (int b0 = p0; b0 < p1; b0 += NB * W) {
        uint32_t kw[NB][RW], vw[NB][RW];
#pragma unroll
        for (int i = 0; i < NB; i++) {
            const int p = b0 + lane + i * W;
#pragma unroll
            for (int e = 0; e < RW; e++)
                kw[i][e] = vw[i][e] = 0;
            int t = 0, ch = 0;
            if (p < p1)
                cv__piece<X>(pq, p, t, ch);
            if (p < p1 && ok[t]) {
                const size_t r = row0 + (size_t)t * rs + (size_t)ch * X;
                cv__ld16(k + r, kw[i]);
                if (FP8)
                    cv__ld16(k + r + 8, kw[i] + 4 * FP8);
                if (both) {
                    cv__ld16(v + r, vw[i]);
                    if (FP8)
                        cv__ld16(v + r + 8, vw[i] + 4 * FP8);
                }
            }
        }
#pragma unroll 1
        for (int i = 0; i < NB && b0 + i * W < p1; i++) {
            const int p = b0 + lane + i * W;
            int t = 0, ch = 0;
            if (p < p1)
                cv__piece<X>(pq, p, t, ch);
            if (p < p1 && ok[t]) {
                const size_t e = kb[t] + hs + (size_t)ch * cs;
                uint32_t w[4];
                if (FP8)
                    cv__encode16<DT>(kw[0], kq, w);
                cv__st16(ck + e * KB, FP8 ? w : kw[0]);
                if (both) {
                    if (FP8)
                        cv__encode16<DT>(vw[0], vq, w);
                    cv__st16(cvv + e * KB, FP8 ? w : vw[0]);
                }
            }
#pragma unroll
            for (int j = 0; j + 1 < NB; j++)
#pragma unroll
                for (int e = 0; e < RW; e++)
                    kw[j][e] = kw[j + 1][e], vw[j][e] = vw[j + 1][e];
        }
    }
}

/* (segment, head) of shuffled V: tile tokens i .. i + len - 1, consecutive slots at lanes
 * [a, a + len) of one cache x-group, whose pieces (dim p: x tokens, 16 bytes) are
 * contiguous. Lane l loads token i + (l % x - a)'s row chunk p / x (dims p - l % x ..), codes it
 * (fp8), the x lanes transpose, and lane l stores the segment's bytes of dim p's piece. */
template <int DT, int KVT>
__device__ inline void cw__v_segment(const opt_kv_cache &c,
                                     const uint16_t *__restrict__ v, /* v: [tokens, heads, head_dim] */
                                     const cv__quant &vq, int64_t gbase, int64_t t0, int i, int a,
                                     int len, int head, int p0, int p1, int lane)
{
    constexpr int X = cv__elem<KVT>::X, KB = cv__elem<KVT>::BYTES, W = GPU_WARP_SIZE;
    constexpr bool FP8 = KVT != DT;
    constexpr int NB = FP8 ? CV__NB / 2 : CV__NB, RW = FP8 ? 8 : 4;
    const int d = c.head_dim, h = c.heads;
    const int j = lane % X, b = a + len;
    const bool mine = j >= a && j < b;
    char *dst = (char *)c.v + ((size_t)gbase + cv__head_stride(c) * head) * KB;
    const uint16_t *row = v + ((size_t)(t0 + i + (mine ? j - a : 0)) * h + head) * d;
    for (int b0 = p0; b0 < p1; b0 += NB * W) {
        uint32_t vw[NB][RW];
#pragma unroll
        for (int n = 0; n < NB; n++) {
            const int p = b0 + lane + n * W;
#pragma unroll
            for (int e = 0; e < RW; e++)
                vw[n][e] = 0;
            if (p < p1 && mine) {
                cv__ld16(row + (p - j), vw[n]);
                if (FP8)
                    cv__ld16(row + (p - j) + 8, vw[n] + 4 * FP8);
            }
        }
#pragma unroll 1
        for (int n = 0; n < NB && b0 + n * W < p1; n++) {
            const int p = b0 + lane + n * W;
            uint32_t w[4] = {vw[0][0], vw[0][1], vw[0][2], vw[0][3]};
            if (FP8)
                cv__encode16<DT>(vw[0], vq, w);
            cv__transpose<X>(w, lane);
            if (p < p1)
                cv__st16_range(dst + (size_t)p * X * KB, w, a * KB, b * KB);
#pragma unroll
            for (int m = 0; m + 1 < NB; m++)
#pragma unroll
                for (int e = 0; e < RW; e++)
                    vw[m][e] = vw[m + 1][e];
        }
    }
}

/* DT: dtype of k, v (bf16/f16); KVT: the cache's (DT or fp8). A tile is slabs * x tokens. */
template <int DT, int KVT>
__global__ void __launch_bounds__(CV__THREADS)
cache_write_vec_kernel(const uint16_t *__restrict__ k,            /* k: [tokens, heads, head_dim] */
                       const uint16_t *__restrict__ v,            /* v: [tokens, heads, head_dim] */
                       const int64_t *__restrict__ slot_mapping, /* slot_mapping: [tokens] */
                       opt_kv_cache cache, int tokens, int slabs, int nb)
{
    constexpr int X = cv__elem<KVT>::X, W = GPU_WARP_SIZE;
    __shared__ size_t s_kb[CV__MAX_POS], s_vb[CV__MAX_POS];
    __shared__ int64_t s_slot[CV__MAX_POS];
    __shared__ int s_ok[CV__MAX_POS], s_seg[CV__MAX_POS], s_len[CV__MAX_POS], s_nseg;
    const int h = cache.heads, bs = cache.block_size;
    const cv__quant kq = cv__quant_of(KVT == OPT_FP8E4M3 ? *cache.k_scale : 1.0f);
    const cv__quant vq = cv__quant_of(KVT == OPT_FP8E4M3 ? *cache.v_scale : 1.0f);
    const bool shuffled = cache.layout == OPT_KV_SHUFFLED;
    const int nt = slabs * X, lane = threadIdx.x % W, warp = threadIdx.x / W;
    const int nwarps = blockDim.x / W, d = cache.head_dim;
    const int pw = nb * W, parts = (d + pw - 1) / pw, hp = h * parts; /* pieces a unit */
    for (int64_t t0 = (int64_t)blockIdx.x * nt; t0 < tokens; t0 += (int64_t)gridDim.x * nt) {
        const int n = tokens - t0 < nt ? (int)(tokens - t0) : nt;
        __syncthreads(); /* the previous tile's units are done with the tables */
        if (threadIdx.x == 0)
            s_nseg = 0;
        for (int i = threadIdx.x; i < nt; i += blockDim.x) {
            const int64_t s = i < n ? slot_mapping[t0 + i] : -1;
            const int64_t blk = s >= 0 ? s / bs : 0;
            const int off = s >= 0 ? (int)(s % bs) : 0;
            s_slot[i] = s;
            s_ok[i] = s >= 0;
            s_kb[i] = pkv_index(cache, 0, blk, off, 0, 0);
            /* bs % x == 0 (shuffled): the group is x consecutive offsets of one block. */
            s_vb[i] = shuffled ? pkv_index(cache, 1, blk, off - off % X, 0, 0) : 0;
        }
        __syncthreads();
        if (shuffled) {
            /* A segment starts at a written token whose slot starts a group or does not
             * follow the previous token's, and runs while the slots do, inside the group. */
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                const int64_t s = s_slot[i];
                if (s >= 0 && (i == 0 || s % X == 0 || s_slot[i - 1] != s - 1)) {
                    const int room = X - (int)(s % X);
                    int len = 1;
                    while (len < room && i + len < n && s_slot[i + len] == s + len)
                        len++;
                    const int q = atomicAdd(&s_nseg, 1);
                    s_seg[q] = i;
                    s_len[q] = len;
                }
            }
            __syncthreads();
        }
        /* (slab, head) units of K, and of V but for shuffled V. */
        for (int u = warp; u < slabs * hp; u += nwarps) {
            const int slab = u / hp, head = u % hp / parts, p0 = u % parts * pw;
            if (slab * X < n)
                cw__unit<DT, KVT>(cache, k, v, kq, vq, s_ok, s_kb, t0, slab, head, p0,
                                  min(d, p0 + pw), lane);
        }
        if (!shuffled)
            continue;
        for (int u = warp; u < s_nseg * hp; u += nwarps) {
            const int q = u / hp, head = u % hp / parts, p0 = u % parts * pw, i = s_seg[q];
            cw__v_segment<DT, KVT>(cache, v, vq, (int64_t)s_vb[i], t0, i, (int)(s_slot[i] % X),
                                   s_len[q], head, p0, min(d, p0 + pw), lane);
        }
    }
}

/* ---------------------------------------------------------------- gather_cache */
/* Tables of a block's token positions p in [0, G * x) (group p / x, lane p % x): s_row[p] =
 * output row, or -1 where the position is outside its sequence's window; s_kb[p] = element
 * index of (block, offset, head 0, dim 0) in K (and V but shuffled) for a row; s_vb[g]
 * (shuffled) = V's index of group g, s_gv[g] = whether any of the group's rows exist. fp8
 * caches: lut = the output bits of each code, K's [0, 256) and V's [256, 512). */

/* The multiplier of gc__put's fast fp8 -> bf16 decode for scale s, or 0 where there is none.
 * For s = 2^k, -117 <= k <= 7: the f32 whose bits are the code's magnitude bits moved 20
 * places up (its exponent field the code's, a subnormal f32 for a subnormal code) and the sign
 * 24 is code * 2^-120 exactly, and times 2^(120 + k) (a normal f32) it is code * s exactly: a
 * normal f32 (|code| >= 2^-9 but zero) with 3 mantissa bits, so its top half is the bf16 that
 * rounding code * s to f32 then bf16 gives (pkv_load, num_f32_to_bf16). NaN codes excepted:
 * gc__put sends a piece holding one to the table. (f32 subnormals are not flushed: neither
 * build asks for it.) */
template <int DT, int KVT>
__device__ inline float gc__fast_mul(float s)
{
    const uint32_t b = num_f32_bits(s), e = (b >> 23) & 0xFFu;
    if (DT != OPT_BF16 || KVT != OPT_FP8E4M3 || (b & 0x807FFFFFu) || e < 127 - 117 || e > 127 + 7)
        return 0.0f;
    return num_bits_f32((e + 120u) << 23);
}

/* Piece bits to an output row chunk: 16 bytes of the same dtype (N = 4 words), or 4 N fp8
 * codes into 8 N bytes (N = 4: a piece, two stores; N = 2: half a piece, one store), by the
 * multiplier m (gc__fast_mul, nonzero) when no code is a NaN, else through the table. */
template <int DT, int KVT, int N = 4>
__device__ inline void gc__put(uint16_t *o, const uint32_t *ch, const uint16_t *lut, float m)
{
    if (KVT == DT) {
        cv__st16(o, ch);
    } else {
        uint32_t r[2 * N];
        /* A byte whose low 7 bits are all set (0x7F, 0xFF: NaN) carries into its top bit. */
        uint32_t nan = 0;
#pragma unroll
        for (int e = 0; e < N; e++)
            nan |= ((ch[e] & 0x7F7F7F7Fu) + 0x01010101u) & 0x80808080u;
        if (m != 0.0f && nan == 0) {
#pragma unroll
            for (int e = 0; e < N; e++) {
                const uint32_t wd = ch[e];
                const float f0 = num_bits_f32((wd << 20 & 0x07F00000u) | (wd << 24 & 0x80000000u)) * m;
                const float f1 = num_bits_f32((wd << 12 & 0x07F00000u) | (wd << 16 & 0x80000000u)) * m;
                const float f2 = num_bits_f32((wd << 4 & 0x07F00000u) | (wd << 8 & 0x80000000u)) * m;
                const float f3 = num_bits_f32((wd >> 4 & 0x07F00000u) | (wd & 0x80000000u)) * m;
                r[2 * e] = __byte_perm(num_f32_bits(f0), num_f32_bits(f1), 0x7632);
                r[2 * e + 1] = __byte_perm(num_f32_bits(f2), num_f32_bits(f3), 0x7632);
            }
        } else {
#pragma unroll
            for (int e = 0; e < 2 * N; e++) {
                const uint32_t wd = ch[e / 2] >> (16 * (e % 2));
                r[e] = lut[wd & 0xFFu] | (uint32_t)lut[(wd >> 8) & 0xFFu] << 16;
            }
        }
#pragma unroll
        for (int e = 0; e < N / 2; e++)
            cv__st16(o + 8 * e, r + 4 * e);
    }
}

/* Row layouts (nhd, hnd) of an fp8 cache gathered into 16-bit rows: gc__unit's work, but a
 * lane takes half pieces -- 8 codes (an 8-byte load) into 8 row elements (one 16-byte store)
 * -- so that each store instruction of the warp writes whole 32-byte sectors. With whole
 * pieces a lane's 32 output bytes took two 16-byte stores 16 bytes apart: every sector was
 * written half by one instruction and half by the next, twice the write requests (ncu on the
 * 32K nhd gather: 40% of the sectors excessive). Lanes 2 i, 2 i + 1 take the halves of one
 * piece; a lane loads 2 CV__NB halves per tensor before the first store, the bytes of CV__NB
 * pieces. */
template <int DT, int KVT>
__device__ inline void gc__unit_half(const opt_kv_cache &c, uint16_t *__restrict__ k,
                                     uint16_t *__restrict__ v, /* k, v: [rows, heads, head_dim] */
                                     const uint16_t *lut, float km, float vm, const int *row,
                                     const size_t *kb, int head, int p0, int p1, int lane)
{
    constexpr int X = cv__elem<KVT>::X, W = GPU_WARP_SIZE, NH = 2 * CV__NB;
    static_assert(KVT == OPT_FP8E4M3 && DT != KVT, "an fp8 cache into 16-bit rows");
    const int d = c.head_dim;
    const cv__pieces pq = cv__pieces_of(c, X);
    const size_t hs = cv__head_stride(c) * head;
    const uint8_t *ck = (const uint8_t *)c.k, *cvv = (const uint8_t *)c.v;
    const size_t rs = (size_t)c.heads * d, o0 = (size_t)head * d;
    const int q1 = 2 * p1;
    for (int b0 = 2 * p0; b0 < q1; b0 += NH * W) {
        uint32_t kw[NH][2], vw[NH][2];
#pragma unroll
        for (int i = 0; i < NH; i++) {
            const int q = b0 + lane + i * W;
            kw[i][0] = kw[i][1] = vw[i][0] = vw[i][1] = 0;
            int t = 0, ch = 0;
            if (q < q1)
                cv__piece<X>(pq, q >> 1, t, ch);
            if (q < q1 && row[t] >= 0) {
                const size_t e = kb[t] + hs + (size_t)ch * X + 8 * (q & 1);
                const uint2 a = *(const uint2 *)(ck + e), b = *(const uint2 *)(cvv + e);
                kw[i][0] = a.x, kw[i][1] = a.y, vw[i][0] = b.x, vw[i][1] = b.y;
            }
        }
#pragma unroll 1
        for (int i = 0; i < NH && b0 + i * W < q1; i++) {
            const int q = b0 + lane + i * W;
            int t = 0, ch = 0;
            if (q < q1)
                cv__piece<X>(pq, q >> 1, t, ch);
            const int r = q < q1 ? row[t] : -1;
            if (r >= 0) {
                const size_t o = (size_t)r * rs + o0 + (size_t)ch * X + 8 * (q & 1);
                gc__put<DT, KVT, 2>(k + o, kw[0], lut, km);
                gc__put<DT, KVT, 2>(v + o, vw[0], lut + 256, vm);
            }
#pragma unroll
            for (int j = 0; j + 1 < NH; j++) {
                kw[j][0] = kw[j + 1][0], kw[j][1] = kw[j + 1][1];
                vw[j][0] = vw[j + 1][0], vw[j][1] = vw[j + 1][1];
            }
        }
    }
}

/* (group, head): K's and V's pieces, CV__NB a lane and tensor loaded before the first store. */
template <int DT, int KVT>
__device__ inline void gc__unit(const opt_kv_cache &c, uint16_t *__restrict__ k,
                                uint16_t *__restrict__ v, /* k, v: [rows, heads, head_dim] */
                                const uint16_t *lut, float km, float vm, const int *row,
                                const size_t *kb, size_t vgroup, int head, int p0, int p1,
                                int lane)
{
    constexpr int X = cv__elem<KVT>::X, KB = cv__elem<KVT>::BYTES, W = GPU_WARP_SIZE;
    constexpr int NB = CV__NB;
    const int d = c.head_dim;
    const bool shuffled = c.layout == OPT_KV_SHUFFLED;
    const cv__pieces pq = cv__pieces_of(c, X);
    const size_t hs = cv__head_stride(c) * head, cs = cv__chunk_stride(c, X);
    const char *ck = (const char *)c.k, *cvv = (const char *)c.v;
    const char *vg = cvv + (vgroup + hs) * KB; /* shuffled V: dim p's piece at vg + 16 p */
    const size_t rs = (size_t)c.heads * d, o0 = (size_t)head * d;
    for (int b0 = p0; b0 < p1; b0 += NB * W) {
        uint32_t kw[NB][4], vw[NB][4];
#pragma unroll
        for (int i = 0; i < NB; i++) {
            const int p = b0 + lane + i * W;
#pragma unroll
            for (int e = 0; e < 4; e++)
                kw[i][e] = vw[i][e] = 0;
            int t = 0, ch = 0;
            if (p < p1)
                cv__piece<X>(pq, p, t, ch);
            if (p < p1 && row[t] >= 0) {
                const size_t e = kb[t] + hs + (size_t)ch * cs;
                cv__ld16(ck + e * KB, kw[i]);
                if (!shuffled)
                    cv__ld16(cvv + e * KB, vw[i]);
            }
            if (p < p1 && shuffled)
                cv__ld16(vg + (size_t)p * 16, vw[i]);
        }
#pragma unroll 1
        for (int i = 0; i < NB && b0 + i * W < p1; i++) {
            const int p = b0 + lane + i * W;
            if (shuffled)
                cv__transpose<X>(vw[0], lane);
            int t = 0, ch = 0;
            if (p < p1)
                cv__piece<X>(pq, p, t, ch);
            const int r = p < p1 ? row[t] : -1;
            if (r >= 0) {
                const size_t o = (size_t)r * rs + o0 + (size_t)ch * X;
                gc__put<DT, KVT>(k + o, kw[0], lut, km);
                gc__put<DT, KVT>(v + o, vw[0], lut + (KVT == DT ? 0 : 256), vm);
            }
#pragma unroll
            for (int j = 0; j + 1 < NB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    kw[j][e] = kw[j + 1][e], vw[j][e] = vw[j + 1][e];
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

/* The last b with base(b) <= u; base(batch) = slots > u closes the last sequence. */
template <int X>
__device__ inline int gc__find(const int32_t *cu_out, int batch, int64_t u)
{
    int lo = 0, hi = batch;
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        if (gc__base<X>(cu_out, mid) <= u)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
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
                        int batch, int max_blocks, int groups, int nb)
{
    constexpr int X = cv__elem<KVT>::X, W = GPU_WARP_SIZE;
    __shared__ int s_row[CV__MAX_POS];
    __shared__ size_t s_kb[CV__MAX_POS], s_vb[CV__MAX_POS / X];
    __shared__ int s_gv[CV__MAX_POS / X];
    __shared__ int32_t s_cu[CV__MAX_SEQ + 1], s_st[CV__MAX_SEQ];
    __shared__ uint16_t s_lut[KVT == DT ? 1 : 512];
    const int h = cache.heads, bs = cache.block_size;
    const int lane = threadIdx.x % W, warp = threadIdx.x / W, nwarps = blockDim.x / W;
    const int d = cache.head_dim, pw = nb * W, parts = (d + pw - 1) / pw, hp = h * parts;
    float km = 0.0f, vm = 0.0f;
    /* Both ordered before their first use by the barrier that opens the loop below. */
    if (KVT != DT) {
        const float ks = *cache.k_scale, vs = *cache.v_scale;
        km = gc__fast_mul<DT, KVT>(ks), vm = gc__fast_mul<DT, KVT>(vs);
        for (int i = threadIdx.x; i < 512; i += blockDim.x)
            s_lut[i] = (uint16_t)cv__decode<DT, KVT>((uint32_t)i & 0xFFu, i < 256 ? ks : vs);
    }
    const bool staged = batch <= CV__MAX_SEQ;
    if (staged)
        for (int i = threadIdx.x; i <= batch; i += blockDim.x) {
            s_cu[i] = cu_out[i];
            if (i < batch)
                s_st[i] = starts[i];
        }
    const int32_t *cu = staged ? s_cu : cu_out, *st = staged ? s_st : starts;
    const int64_t slots = gc__base<X>(cu_out, batch);
    const bool shuffled = cache.layout == OPT_KV_SHUFFLED;
    for (int64_t u0 = (int64_t)blockIdx.x * groups; u0 < slots; u0 += (int64_t)gridDim.x * groups) {
        __syncthreads(); /* the previous groups' units are done with the tables */
        for (int p = threadIdx.x; p < groups * X; p += blockDim.x) {
            const int64_t u = u0 + p / X;
            int row = -1, gv = 0;
            size_t kb = 0, vb = 0;
            if (u < slots) {
                const int b = gc__find<X>(cu, batch, u);
                const int64_t s = st[b], len = cu[b + 1] - cu[b];
                const int64_t g0 = (s / X + (u - gc__base<X>(cu, b))) * X, pos = g0 + p % X;
                if (len > 0 && g0 < s + len) {
                    gv = 1;
                    /* A position of the window in the same group: with bs % x == 0
                     * (shuffled), in the same block as every position of the group. */
                    const int64_t pc = pos < s ? s : pos < s + len ? pos : s + len - 1;
                    const int64_t blk = block_table[(size_t)b * max_blocks + (size_t)(pc / bs)];
                    const int off = (int)(pc % bs);
                    if (pc == pos) {
                        row = cu[b] + (int)(pos - s);
                        kb = pkv_index(cache, 0, blk, off, 0, 0);
                    }
                    if (shuffled)
                        vb = pkv_index(cache, 1, blk, off - off % X, 0, 0);
                }
            }
            s_row[p] = row;
            s_kb[p] = kb;
            if (p % X == 0) {
                s_vb[p / X] = vb;
                s_gv[p / X] = gv;
            }
        }
        __syncthreads();
        for (int w = warp; w < groups * hp; w += nwarps) {
            const int g = w / hp, head = w % hp / parts, p0 = w % parts * pw;
            if (!s_gv[g])
                continue;
            if (KVT != DT && !shuffled) { /* KVT is fp8 here (a plain if: hipcc is C++14) */
                gc__unit_half<DT, OPT_FP8E4M3>(cache, k, v, s_lut, km, vm, s_row + g * X,
                                               s_kb + g * X, head, p0, min(d, p0 + pw), lane);
                continue;
            }
            gc__unit<DT, KVT>(cache, k, v, s_lut, km, vm, s_row + g * X, s_kb + g * X, s_vb[g], head,
                              p0, min(d, p0 + pw), lane);
        }
    }
}

/* --------------------------------------------------------------- launchers */
/* What the vec kernels need beyond cache_ops.hip's checks (repeated here: a known layout, an
 * element dtype of `dtype` or fp8 with both scales, positive sizes, shuffled extents divisible
 * by x): head_dim a multiple of x (chunks), 16-byte aligned tensors, and (token, head,
 * chunk) counts of CV__MAX_ROWS tokens that fit in int. */
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

template <int DT, int KVT>
static int cw__launch(const opt_cache_write_args *a, hipStream_t stream)
{
    constexpr int X = cv__elem<KVT>::X;
    constexpr int NB = KVT == DT ? CV__NB : CV__NB / 2;
    /* Shuffled V segments are cut at tile ends into partial x-groups: longer tiles keep
     * most groups whole, as long as there are tiles enough for every SM (a small job takes
     * one slab a tile and the partial groups). */
    const bool shuffled = a->cache.layout == OPT_KV_SHUFFLED;
    const int64_t runs = ((int64_t)a->tokens + X - 1) / X, sms = cv__sms();
    const int at_least = !shuffled ? 1 : runs >= 4 * sms ? 4 : runs >= 2 * sms ? 2 : 1;
    /* Register use differs by instantiation (64-124 a thread on sm_90): 2-4 blocks an SM. */
    static int known[64];
    int resident = 1;
    const int rc = gpu_resident_blocks((const void *)cache_write_vec_kernel<DT, KVT>, CV__THREADS,
                                       0, known, &resident);
    if (rc)
        return rc;
    const int slabs = cv__per_block(runs, at_least, CV__MAX_POS / X, resident);
    const int nb = cv__lane_pieces(runs, a->cache.heads, a->cache.head_dim, NB);
    const int64_t tiles = (runs + slabs - 1) / slabs;
    const unsigned grid = (unsigned)(tiles < CV__MAX_GRID ? tiles : CV__MAX_GRID);
    /* Shuffled: about as many V segment units as K units. */
    const int64_t units = (int64_t)slabs * a->cache.heads * cv__parts(a->cache.head_dim, nb) *
                          (shuffled ? 2 : 1);
    cache_write_vec_kernel<DT, KVT><<<grid, cv__threads(units), 0, stream>>>(
        (const uint16_t *)a->k, (const uint16_t *)a->v, a->slot_mapping, a->cache, a->tokens,
        slabs, nb);
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
    const int64_t slots = (int64_t)a->rows / X + 2 * (int64_t)a->batch; /* gc__base(batch) */
    static int known[64];
    int resident = 1;
    const int rc = gpu_resident_blocks((const void *)gather_cache_vec_kernel<DT, KVT>, CV__THREADS,
                                       0, known, &resident);
    if (rc)
        return rc;
    const int groups = cv__per_block(slots, 1, CV__MAX_POS / X, resident);
    const int nb = cv__lane_pieces(slots, a->cache.heads, a->cache.head_dim, CV__NB);
    const int64_t blocks = (slots + groups - 1) / groups;
    const unsigned grid = (unsigned)(blocks < CV__MAX_GRID ? blocks : CV__MAX_GRID);
    const int64_t units = (int64_t)groups * a->cache.heads * cv__parts(a->cache.head_dim, nb);
    gather_cache_vec_kernel<DT, KVT><<<grid, cv__threads(units), 0, stream>>>(
        a->cache, a->block_table, a->starts, a->cu_out, (uint16_t *)a->k, (uint16_t *)a->v,
        a->batch, a->max_blocks, groups, nb);
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
