/* paged_decode.hip - SPEC section 5 on the GPU, `split_kv` variant (flash-decoding): the
 * context of every (sequence, KV head) is cut into splits that fill the GPU; each split's
 * partial result goes to a workspace in f32 and a second kernel merges them with SPEC
 * section 0's LSE merge. Every sum is f32; narrow types stay raw bits and are decoded in
 * registers (numerics.h, paged_kv.h). Every offset is computed in 64 bits.
 *
 * paged_decode_split_kernel: one block of 128 threads per (sequence, KV head, split, group of
 *   up to 8 query heads of that KV head): GQA packing, so a split's KV bytes are read from
 *   memory once for all the query heads that share them. The block's four 32-lane groups take
 *   chunks of 16 tokens (8 at head_dim 256) in turn; a lane group stages its chunk's K and V
 *   rows into shared memory with 16-byte loads in the cache's own layout (nhd, hnd, or AITER's
 *   shuffled layout, un-shuffled on the way in; no conversion pass), the next chunk's loads
 *   in flight in registers while it computes. fp8 codes become 16-bit floats in registers
 *   (code * 2^-120, exact); k_scale is applied once per logit and v_scale once per output.
 *   The math of a chunk has two engines. CUDA cores (any query dtype, every target): two
 *   lanes per token, each a half of the dot product for every packed head at once, the query
 *   in shared memory as f32; P.V with 8 output dims per lane, P kept in f32. mma.sync (NVIDIA
 *   sm_80+, bf16 queries, 4 or more heads per block, head_dim <= 128): S = Q K^T with Q in
 *   registers and K^T read from the staged rows, P (rounded to bf16) from S's accumulators as
 *   the A operand of O += P V, V's fragments through movmatrix transposes. Both keep an online
 *   softmax per lane group in base 2 (running max m, sum l, never exp(-inf - -inf)).
 *   The four groups' states are merged in shared memory; the split writes its
 *   normalised output and LSE (natural log) to the workspace, or, when it is its sequence's
 *   only split, the final out (rounded once, to nearest even, into the query dtype) and lse.
 * paged_decode_combine_kernel: one block per (sequence, query head) whose sequence has two or
 *   more splits: out = sum_s w_s o_s / sum_s w_s, w_s = exp(lse_s - max lse), lse = max +
 *   log(sum w_s): SPEC section 0's merge over all the splits at once (+inf reads as -inf).
 *
 * The split count comes from the batch, the head counts, the longest context the block table
 * holds and the SM count of the current device: about eight blocks per SM (two waves at the
 * usual residency), splits of at least 256 tokens, at most 64 of them. Empty sequences:
 * out = 0, lse = -inf.
 */
#include "paged_kv.h"
#include "paged_split.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

enum {
    PDS__THREADS = 128,
    PDS__LANES = 32,                    /* a lane group, the kernel's warp: a 64-wide CDNA
                                           wavefront holds two, and no exchange crosses one */
    PDS__GROUPS = PDS__THREADS / PDS__LANES,
    PDS__MAX_GB = 8,                    /* query heads per block; more heads, more blocks */
    PDS__SPLIT_ALIGN = 64,              /* split lengths are whole chunks of every group */
    PDS__MIN_SPLIT = 256,               /* tokens: shorter splits pay their fixed costs */
    PDS__BLOCKS_PER_SM = 8,             /* two waves of about four resident blocks */
    PDS__COMBINE_ROWS = 4,              /* combine: a warp per (sequence, head) row */
};

#define PDS__LOG2E 1.4426950408889634f
#define PDS__LN2 0.69314718055994531f

/* fp8 codes are staged as code * 2^-120; the query carries 2^60 of the difference and the
 * logit the other 2^60, and P carries 2^60 into P.V, so no product leaves the normal f32
 * range. Powers of two: every one of these scalings is exact. */
#define PDS__FP8_FIX 0x1p60f

/* Compile-time shape of one instantiation: cache element dtype KVT, head_dim D, GB query heads
 * per block (1, 4 or 8), shuffled layout or a row-major one (nhd and hnd differ only in
 * strides). Compile-time index math keeps the per-vector addresses out of registers. Shared memory holds the K and V rows of a chunk as 16-bit floats
 * (bf16 bits for bf16 and fp8 caches, f16 bits for f16), one row per token, padded by 16
 * bytes so that the lanes of a quarter-warp reading different rows hit different banks. */
template <int KVT, int D_, int GB_, bool SHUF_>
struct pds__cfg {
    static constexpr int KV = KVT, D = D_, GB = GB_;
    static constexpr bool SHUF = SHUF_;                         /* shuffled layout (else nhd, hnd) */
    static constexpr int ST = KVT == OPT_F16 ? OPT_F16 : OPT_BF16; /* staged 16-bit float */
    static constexpr int GES = KVT == OPT_FP8E4M3 ? 1 : 2;      /* bytes per cache element */
    static constexpr int GX = 16 / GES;                         /* elements per 16-byte vector */
    static constexpr int ROWP = D + 8;                          /* staged row pitch, elements */
    static constexpr int CH = D > 128 ? 8 : 16;                 /* tokens per chunk per group */
    static constexpr int LPT = PDS__LANES / CH;                 /* logit lanes per token */
    static constexpr int QKD = D / LPT;                         /* dims per logit lane */
    static constexpr int LPR = D / 8;                           /* P.V lanes per row */
    static constexpr int RPS = PDS__LANES / LPR;                /* P.V rows per step */
    static constexpr int GVR = D / GX;                          /* 16-byte vectors per row */
    static constexpr int NV = CH * GVR / PDS__LANES;            /* vectors per lane, K (and V) */
    /* Shuffled V vectors hold x consecutive tokens: they must lie in one chunk. */
    static constexpr bool SHUFFLED_OK = CH % GX == 0;
    static constexpr int VPT = PDS__LANES / GVR > 0 ? PDS__LANES / GVR : 1; /* rows per warp load */
    static constexpr int KV_ELEMS = PDS__GROUPS * 2 * CH * ROWP; /* staged K and V, all groups */
    static constexpr int MERGE_FLOATS = PDS__GROUPS * GB * (D + 2); /* reuses the staging area */
    static_assert(NV >= 1 && CH * GVR % PDS__LANES == 0, "whole vectors per lane");
    static_assert(QKD % 8 == 0 && PDS__LANES % LPR == 0 && CH % RPS == 0, "lane shapes");
    static_assert(MERGE_FLOATS * 4 <= KV_ELEMS * 2, "the merge fits in the staging area");
};

/* Element strides of one layout (SPEC section 0): a token's K row starts at
 * block * blk + head + offset * os_k, and its 16-byte vector c at + c * cs_k; V alike, except
 * in the shuffled layout, where os_v locates the first token of an x-token group, whose
 * vector c holds dim c of the group's x tokens at + c * cs_v. */
struct pds__geom {
    long long blk, head;
    int os_k, cs_k, os_v, cs_v;
};

/* ------------------------------------------------------------ 16-bit floats */
/* 8 staged 16-bit floats -> f32, exact. */
template <int ST>
__device__ __forceinline__ void pds__widen8(uint4 w, float (&f)[8])
{
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (ST == OPT_BF16) {
            f[2 * i] = num_bits_f32(u[i] << 16);
            f[2 * i + 1] = num_bits_f32(u[i] & 0xFFFF0000u);
        } else {
            f[2 * i] = gpu_f16_to_f32((uint16_t)u[i]);
            f[2 * i + 1] = gpu_f16_to_f32((uint16_t)(u[i] >> 16));
        }
    }
}

/* Element k (compile-time after unrolling) of 8 packed 16-bit values. */
__device__ __forceinline__ uint32_t pds__u16(uint4 v, int k)
{
    const uint32_t w = k < 2 ? v.x : k < 4 ? v.y : k < 6 ? v.z : v.w;
    return (w >> (16 * (k % 2))) & 0xFFFFu;
}

/* A running max as the subtrahend of exp: -inf (nothing seen, or only -inf logits) is taken
 * as 0, so that exp(-inf - 0) = 0 and never exp(-inf - -inf). */
__device__ __forceinline__ float pds__ref(float x)
{
    return x == -INFINITY ? 0.0f : x;
}

/* ------------------------------------------------------------ chunk staging */
/* Token positions are int: a sequence holds at most INT32_MAX tokens. */

/* The block id of token c0 + lane for lanes 0..CH-1 with a token (else 0): loaded a chunk
 * ahead of its use, so that the block-table latency hides behind a chunk of work. */
template <class C>
__device__ __forceinline__ int pds__block_id(const int32_t *__restrict__ bt, /* bt: [max_blocks] */
                                             int c0, int t_end, int bs, int lane)
{
    return lane < C::CH && c0 + lane < t_end ? bt[(c0 + lane) / bs] : 0;
}

/* Lanes 0..CH-1 locate the rows of tokens c0 + lane in block nb: K row start tk[lane] and V
 * row (shuffled: token group) start tv[lane], in elements. */
template <class C>
__device__ __forceinline__ void pds__locate(const pds__geom &g, int c0, int t_end, int nb, int bs,
                                            int lane, long long *tk /* [CH] */,
                                            long long *tv /* [CH] */)
{
    if (lane < C::CH && c0 + lane < t_end) {
        const long long base = (long long)nb * g.blk + g.head;
        const int o = (c0 + lane) % bs;
        tk[lane] = base + (long long)o * g.os_k;
        tv[lane] = base + (long long)o * g.os_v;
    }
}

/* Token i and 16-byte vector c of lane vector j (a compile-time constant after unrolling) of a
 * chunk. Row-major rows: consecutive lanes walk along a row. Shuffled K: along the tokens of
 * one dim group, adjacent in that layout. Shuffled V: i is the first token of an x-token group
 * and c the dim, consecutive lanes taking adjacent dims. */
template <class C>
__device__ __forceinline__ void pds__vec_k(int lane, int j, int &i, int &c)
{
    if (C::SHUF) {
        i = lane % C::CH;
        c = lane / C::CH + j * (PDS__LANES / C::CH);
    } else {
        i = lane / C::GVR + j * C::VPT;
        c = lane % C::GVR;
    }
}

template <class C>
__device__ __forceinline__ void pds__vec_v(int lane, int j, int &i, int &c)
{
    if (C::SHUF) {
        const int v = lane + PDS__LANES * j;
        i = v / C::D * C::GX;
        c = v % C::D;
    } else {
        pds__vec_k<C>(lane, j, i, c);
    }
}

/* Start the 16-byte loads of the chunk at c0 into registers, K (IS_V = 0) or V rows: zeros
 * past t_end (nothing past a sequence's length is read but the other tokens of a shuffled V
 * group, which the staging zeroes). t0: the chunk's row starts (tk or tv); cs: vector stride. */
template <class C, int IS_V>
__device__ __forceinline__ void pds__issue(const uint8_t *__restrict__ src, int cs, int c0, int t_end,
                                           int lane, const long long *t0 /* [CH] */,
                                           uint4 (&r)[C::NV])
{
#pragma unroll
    for (int j = 0; j < C::NV; j++) {
        int i, c;
        if (IS_V)
            pds__vec_v<C>(lane, j, i, c);
        else
            pds__vec_k<C>(lane, j, i, c);
        r[j] = c0 + i < t_end ? *(const uint4 *)(src + (t0[i] + c * cs) * C::GES)
                              : make_uint4(0u, 0u, 0u, 0u);
    }
}

/* x consecutive elements (one 16-byte cache vector) into staged row elements dst[0..x). */
template <class C>
__device__ __forceinline__ void pds__put_row(uint16_t *dst, uint4 v)
{
    if (C::KV == OPT_FP8E4M3) {
        uint4 lo, hi;
        pkv_fp8x16_16bit<false>(v, lo, hi);
        *(uint4 *)dst = lo;
        *(uint4 *)(dst + 8) = hi;
    } else {
        *(uint4 *)dst = v;
    }
}

/* Registers -> the group's staged rows [CH][ROWP] of K (IS_V = 0) or V. Rows past t_end hold
 * zeros (their registers are zero, and a shuffled V group's tokens past t_end are zeroed
 * here), so that P = 0 never meets a NaN in P.V. */
template <class C, int IS_V>
__device__ __forceinline__ void pds__stage(int c0, int t_end, int lane, const uint4 (&r)[C::NV],
                                           uint16_t *dst)
{
#pragma unroll
    for (int j = 0; j < C::NV; j++) {
        int i, c;
        if (IS_V && C::SHUF) {
            pds__vec_v<C>(lane, j, i, c);
            uint4 lo = r[j], hi = lo;
            if (C::KV == OPT_FP8E4M3)
                pkv_fp8x16_16bit<false>(r[j], lo, hi);
            const int n_ok = t_end - c0 - i; /* tokens of the group before t_end */
#pragma unroll
            for (int e = 0; e < C::GX; e++) {
                const uint32_t x = pds__u16(e < 8 ? lo : hi, e % 8);
                dst[(i + e) * C::ROWP + c] = (uint16_t)(e < n_ok ? x : 0u);
            }
        } else {
            pds__vec_k<C>(lane, j, i, c);
            pds__put_row<C>(dst + i * C::ROWP + c * C::GX, r[j]);
        }
    }
}

/* ------------------------------------------------------------ one chunk */
/* Logits of the chunk's token lane % CH for every packed head: lanes i and i + CH (and so on)
 * take consecutive QKD-dim pieces of the row and add up by shuffles, so every lane of the
 * token ends with the same s. q_s: [D][GB] f32 (GB == 1: [D]), pre-scaled. */
template <class C>
__device__ __forceinline__ void pds__logits(const uint16_t *k_s, const float *q_s, int lane,
                                            float (&s)[C::GB])
{
    constexpr int GB = C::GB;
    const int i = lane % C::CH, h = lane / C::CH;
    const uint16_t *row = k_s + i * C::ROWP + h * C::QKD;
    float s4[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* GB == 1: four chains instead of one */
#pragma unroll
    for (int g = 0; g < GB; g++)
        s[g] = 0.0f;
#pragma unroll
    for (int c = 0; c < C::QKD / 8; c++) {
        float k[8];
        pds__widen8<C::ST>(*(const uint4 *)(row + 8 * c), k);
        const int d0 = h * C::QKD + 8 * c;
        if (GB == 1) {
            const float4 qa = *(const float4 *)(q_s + d0), qb = *(const float4 *)(q_s + d0 + 4);
            s4[0] = fmaf(qa.x, k[0], s4[0]);
            s4[1] = fmaf(qa.y, k[1], s4[1]);
            s4[2] = fmaf(qa.z, k[2], s4[2]);
            s4[3] = fmaf(qa.w, k[3], s4[3]);
            s4[0] = fmaf(qb.x, k[4], s4[0]);
            s4[1] = fmaf(qb.y, k[5], s4[1]);
            s4[2] = fmaf(qb.z, k[6], s4[2]);
            s4[3] = fmaf(qb.w, k[7], s4[3]);
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) {
#pragma unroll
                for (int g4 = 0; g4 < GB / 4; g4++) {
                    const float4 qq = *(const float4 *)(q_s + (d0 + e) * GB + 4 * g4);
                    s[4 * g4 + 0] = fmaf(qq.x, k[e], s[4 * g4 + 0]);
                    s[4 * g4 + 1] = fmaf(qq.y, k[e], s[4 * g4 + 1]);
                    s[4 * g4 + 2] = fmaf(qq.z, k[e], s[4 * g4 + 2]);
                    s[4 * g4 + 3] = fmaf(qq.w, k[e], s[4 * g4 + 3]);
                }
            }
        }
    }
    if (GB == 1)
        s[0] = (s4[0] + s4[1]) + (s4[2] + s4[3]);
#pragma unroll
    for (int m = C::CH; m < PDS__LANES; m *= 2) {
#pragma unroll
        for (int g = 0; g < GB; g++)
            s[g] += GPU_SHFL_XOR(s[g], m);
    }
}

/* Online softmax step of one lane group over its chunk at c0: logits in base 2 (masked past
 * t_end), the chunk max by shuffles (identical on every lane, so the rescale branch is
 * uniform), rescale of l and acc when a max grows, P of the token into p_s [CH][GB] (times
 * pfix) and into each token's first lane's share of l. fmaxf skips NaN in the max; a NaN
 * logit then reaches l and acc through its P, as in the reference. */
template <class C>
__device__ __forceinline__ void pds__softmax(float (&s)[C::GB], float (&m)[C::GB], float (&l)[C::GB],
                                             float (&acc)[C::GB][8], int c0, int t_end,
                                             int lane, float kfix, float softcap, float pfix,
                                             float *p_s)
{
    constexpr int GB = C::GB;
    const int i = lane % C::CH;
    const bool ok = c0 + i < t_end;
    float cm[GB];
#pragma unroll
    for (int g = 0; g < GB; g++) {
        float x = s[g] * kfix;
        if (softcap > 0.0f)
            x = softcap * tanhf(x / softcap);
        s[g] = ok ? x * PDS__LOG2E : -INFINITY;
        cm[g] = s[g];
    }
#pragma unroll
    for (int msk = 1; msk < C::CH; msk *= 2) {
#pragma unroll
        for (int g = 0; g < GB; g++)
            cm[g] = fmaxf(cm[g], GPU_SHFL_XOR(cm[g], msk));
    }
    bool grow = false;
#pragma unroll
    for (int g = 0; g < GB; g++) {
        cm[g] = fmaxf(m[g], cm[g]);
        grow |= cm[g] > m[g];
    }
    if (grow) {
#pragma unroll
        for (int g = 0; g < GB; g++) {
            const float a = exp2f(m[g] - pds__ref(cm[g])); /* 1 where unchanged; 0 from -inf */
            l[g] *= a;
#pragma unroll
            for (int e = 0; e < 8; e++)
                acc[g][e] *= a;
            m[g] = cm[g];
        }
    }
    float p[GB];
#pragma unroll
    for (int g = 0; g < GB; g++)
        p[g] = exp2f(s[g] - pds__ref(m[g]));
    if (lane < C::CH) {
#pragma unroll
        for (int g = 0; g < GB; g++) {
            l[g] += p[g];
            p_s[i * GB + g] = p[g] * pfix;
        }
    }
}

/* P.V of the chunk: lane j % LPR owns output dims 8 (j % LPR) .. + 7 and takes rows
 * lane / LPR, + RPS, ...; acc holds f32 sums for every packed head. */
template <class C>
__device__ __forceinline__ void pds__pv(const uint16_t *v_s, const float *p_s, int lane,
                                        float (&acc)[C::GB][8])
{
    constexpr int GB = C::GB;
    const int j = lane % C::LPR, r = lane / C::LPR;
#pragma unroll
    for (int st = 0; st < C::CH / C::RPS; st++) {
        const int i = st * C::RPS + r;
        float v[8];
        pds__widen8<C::ST>(*(const uint4 *)(v_s + i * C::ROWP + 8 * j), v);
        if (GB == 1) {
            const float p = p_s[i];
#pragma unroll
            for (int e = 0; e < 8; e++)
                acc[0][e] = fmaf(p, v[e], acc[0][e]);
        } else {
#pragma unroll
            for (int g4 = 0; g4 < GB / 4; g4++) {
                const float4 pp = *(const float4 *)(p_s + i * GB + 4 * g4);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    acc[4 * g4 + 0][e] = fmaf(pp.x, v[e], acc[4 * g4 + 0][e]);
                    acc[4 * g4 + 1][e] = fmaf(pp.y, v[e], acc[4 * g4 + 1][e]);
                    acc[4 * g4 + 2][e] = fmaf(pp.z, v[e], acc[4 * g4 + 2][e]);
                    acc[4 * g4 + 3][e] = fmaf(pp.w, v[e], acc[4 * g4 + 3][e]);
                }
            }
        }
    }
}

/* ------------------------------------------------------------ compute engines */
/* The per-lane-group state and chunk math, in two builds of one interface:
 *   init      the query (q row q0 = head h0, gv heads), before the kernel's first barrier;
 *   chunk_qk  logits of the staged K rows, online softmax step, P;
 *   chunk_pv  P.V over the staged V rows;
 *   store     the group's m, l [GB] and unnormalised output [GB][D] into shared memory.
 * Logit = (dot * fix) * qmul with qmul = scale (times k_scale for fp8) and fix = 2^60 for fp8
 * (PDS__FP8_FIX), else 1; P enters P.V times fix. */
template <class C, bool MMA>
struct pds__engine;

/* CUDA cores, any query dtype: the query in shared memory as f32 (scaled), P in f32. */
template <class C>
struct pds__engine<C, false> {
    static constexpr int GB = C::GB;
    float m[GB], l[GB], acc[GB][8];

    __device__ __forceinline__ void init(const void *q, int q_dtype, size_t q0, int gv, float qmul,
                                         float fix, float *q_s, int tid, int lane)
    {
        for (int i = tid; i < C::D * GB; i += PDS__THREADS) {
            const int d = i / GB, g = i % GB;
            const float x = g < gv ? num_load_f32(q_dtype, q, q0 + (size_t)g * C::D + d) : 0.0f;
            q_s[i] = x * qmul * fix;
        }
#pragma unroll
        for (int g = 0; g < GB; g++) {
            m[g] = -INFINITY;
            l[g] = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e++)
                acc[g][e] = 0.0f;
        }
    }

    __device__ __forceinline__ void chunk_qk(const uint16_t *k_s, const float *q_s, float *p_s, int c0,
                                             int t_end, int lane, float fix, float softcap)
    {
        float sc[GB];
        pds__logits<C>(k_s, q_s, lane, sc);
        pds__softmax<C>(sc, m, l, acc, c0, t_end, lane, fix, softcap, fix, p_s);
    }

    __device__ __forceinline__ void chunk_pv(const uint16_t *v_s, const float *p_s, int lane)
    {
        pds__pv<C>(v_s, p_s, lane, acc);
    }

    /* acc summed over a group's row lanes, l over all its lanes. */
    __device__ __forceinline__ void store(float *m_w, float *l_w, float *a_w, int grp, int lane)
    {
#pragma unroll
        for (int msk = C::LPR; msk < PDS__LANES; msk *= 2) {
#pragma unroll
            for (int g = 0; g < GB; g++) {
#pragma unroll
                for (int e = 0; e < 8; e++)
                    acc[g][e] += GPU_SHFL_XOR(acc[g][e], msk);
            }
        }
#pragma unroll
        for (int msk = 1; msk < PDS__LANES; msk *= 2) {
#pragma unroll
            for (int g = 0; g < GB; g++)
                l[g] += GPU_SHFL_XOR(l[g], msk);
        }
        if (lane < C::LPR) {
#pragma unroll
            for (int g = 0; g < GB; g++) {
#pragma unroll
                for (int e = 0; e < 8; e++)
                    a_w[(grp * GB + g) * C::D + 8 * lane + e] = acc[g][e];
            }
        }
        if (lane == 0) {
#pragma unroll
            for (int g = 0; g < GB; g++) {
                m_w[grp * GB + g] = m[g];
                l_w[grp * GB + g] = l[g];
            }
        }
    }
};

#if defined(GPU_HAS_MMA_SYNC)
/* 8x8 16-bit transpose across the warp (movmatrix): lane l holds row l / 4, columns
 * 2 (l % 4) and + 1, before and after. */
__device__ __forceinline__ uint32_t pds__trans8x8(uint32_t x)
{
    uint32_t y;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
    return y;
}

/* Two f32 -> bf16 (round to nearest even), lo in the low half. */
__device__ __forceinline__ uint32_t pds__pack_bf16(float lo, float hi)
{
    return (uint32_t)num_f32_to_bf16(lo) | (uint32_t)num_f32_to_bf16(hi) << 16;
}

/* mma.sync m16n8k16 (bf16 in, f32 accumulate) whose A rows 8-15 are zero: c0, c1 (row g,
 * columns 2t and 2t + 1) += A B; the zero rows' results are dropped, so they cost no
 * registers across calls. a0, a2: A row g at k = 2t (+1) and 2t + 8 (+9); b0, b1: B at
 * k = 2t (+1) and 2t + 8 (+9), column g. */
__device__ __forceinline__ void pds__mma_row8(float &c0, float &c1, uint32_t a0, uint32_t a2,
                                              uint32_t b0, uint32_t b1)
{
    float d2, d3;
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%10,%11};"
        : "+f"(c0), "+f"(c1), "=f"(d2), "=f"(d3)
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1), "f"(0.0f), "f"(0.0f));
    asm("" : : "f"(d2), "f"(d3)); /* the dropped rows: a use, and no instruction */
}

/* mma.sync (NVIDIA sm_80+; PTX fragment layout, g = lane / 4, t = lane % 4) for bf16 queries
 * over bf16 or fp8 caches, D <= 128 (chunks of 16 tokens: two 8-token MMA tiles): MMA row g
 * is the block's head g (GB <= 8; rows 8-15 are zero). Logits: S = Q K^T with Q as the A
 * operand, held in registers for the whole split (bf16, times fix), and K^T as B, read straight
 * from the staged rows. The S accumulator is P's A operand (FlashAttention-2): P is rounded to
 * bf16, times fix, and O += P V takes V's B fragments from the staged rows through an 8x8
 * transpose. Lane (g, t) keeps the softmax state of head g. */
template <class C>
struct pds__engine<C, true> {
    static constexpr int GB = C::GB, KS = C::D / 16, RW = C::ROWP / 2; /* RW: words per row */
    static_assert(C::CH == 16 && C::D % 16 == 0 && GB <= 8, "two 8-token tiles, 16-dim steps");
    uint32_t qa[KS][2], pa[2];
    float m, l, qmul, o[KS][4]; /* o[ks]: head g, dims 16 ks + 2t (+1), 16 ks + 8 + 2t (+1) */

    __device__ __forceinline__ void init(const void *q, int q_dtype, size_t q0, int gv, float qmul_,
                                         float fix, float *q_s, int tid, int lane)
    {
        const int g = lane / 4, t = lane % 4;
        const uint16_t *qh = (const uint16_t *)q + q0 + (size_t)g * C::D;
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
#pragma unroll
            for (int i = 0; i < 2; i++) {
                uint32_t w = g < gv ? *(const uint32_t *)(qh + 16 * ks + 8 * i + 2 * t) : 0u;
                if (fix != 1.0f) /* bf16 times a power of two: exact */
                    w = pds__pack_bf16(num_bf16_to_f32((uint16_t)w) * fix,
                                       num_bf16_to_f32((uint16_t)(w >> 16)) * fix);
                qa[ks][i] = w;
            }
#pragma unroll
            for (int e = 0; e < 4; e++)
                o[ks][e] = 0.0f;
        }
        m = -INFINITY;
        l = 0.0f;
        qmul = qmul_;
    }

    __device__ __forceinline__ void chunk_qk(const uint16_t *k_s, const float *q_s, float *p_s, int c0,
                                             int t_end, int lane, float fix, float softcap)
    {
        const int g = lane / 4, t = lane % 4;
        const uint32_t *k32 = (const uint32_t *)k_s;
        float sv[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* tokens 2t, 2t + 1, 8 + 2t, 9 + 2t */
#pragma unroll 4
        for (int ks = 0; ks < KS; ks++) {
            pds__mma_row8(sv[0], sv[1], qa[ks][0], qa[ks][1], k32[g * RW + 8 * ks + t],
                          k32[g * RW + 8 * ks + 4 + t]);
            pds__mma_row8(sv[2], sv[3], qa[ks][0], qa[ks][1], k32[(g + 8) * RW + 8 * ks + t],
                          k32[(g + 8) * RW + 8 * ks + 4 + t]);
        }
        const int tok[4] = {2 * t, 2 * t + 1, 8 + 2 * t, 9 + 2 * t};
        float s2[4], cm = -INFINITY;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float x = sv[e] * fix * qmul;
            if (softcap > 0.0f)
                x = softcap * tanhf(x / softcap);
            s2[e] = c0 + tok[e] < t_end ? x * PDS__LOG2E : -INFINITY;
            cm = fmaxf(cm, s2[e]);
        }
        cm = fmaxf(cm, GPU_SHFL_XOR(cm, 1));
        cm = fmaxf(cm, GPU_SHFL_XOR(cm, 2));
        const float mn = fmaxf(m, cm);
        if (mn > m) { /* per head: lanes of different heads may disagree (no exchange inside) */
            const float a = exp2f(m - pds__ref(mn));
            l *= a;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
#pragma unroll
                for (int e = 0; e < 4; e++)
                    o[ks][e] *= a;
            }
            m = mn;
        }
        float p[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            p[e] = exp2f(s2[e] - pds__ref(m));
            l += p[e];
        }
        pa[0] = pds__pack_bf16(p[0] * fix, p[1] * fix);
        pa[1] = pds__pack_bf16(p[2] * fix, p[3] * fix);
    }

    __device__ __forceinline__ void chunk_pv(const uint16_t *v_s, const float *p_s, int lane)
    {
        const int g = lane / 4, t = lane % 4;
        const uint32_t *v32 = (const uint32_t *)v_s;
#pragma unroll 4
        for (int ks = 0; ks < KS; ks++) { /* output dims 16 ks .. + 7, then 16 ks + 8 .. + 15 */
#pragma unroll
            for (int h = 0; h < 2; h++)
                pds__mma_row8(o[ks][2 * h], o[ks][2 * h + 1], pa[0], pa[1],
                              pds__trans8x8(v32[g * RW + 8 * ks + 4 * h + t]),
                              pds__trans8x8(v32[(g + 8) * RW + 8 * ks + 4 * h + t]));
        }
    }

    __device__ __forceinline__ void store(float *m_w, float *l_w, float *a_w, int grp, int lane)
    {
        const int g = lane / 4, t = lane % 4;
        l += GPU_SHFL_XOR(l, 1);
        l += GPU_SHFL_XOR(l, 2);
        if (g < GB) {
            float *row = a_w + (grp * GB + g) * C::D;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                row[16 * ks + 2 * t] = o[ks][0];
                row[16 * ks + 2 * t + 1] = o[ks][1];
                row[16 * ks + 8 + 2 * t] = o[ks][2];
                row[16 * ks + 9 + 2 * t] = o[ks][3];
            }
            if (t == 0) {
                m_w[grp * GB + g] = m;
                l_w[grp * GB + g] = l;
            }
        }
    }
};

constexpr bool pds__mma_built = true;
#else
constexpr bool pds__mma_built = false; /* MMA requests run on the CUDA-core engine */
#endif // GPU_HAS_MMA_SYNC

/* ------------------------------------------------------------ split kernel */
/* Resident blocks per SM the register budget aims at: three (168 registers at most on NVIDIA),
 * enough loads in flight per SM to keep memory busy; two for the CUDA-core engine over 16-bit
 * shuffled layouts, whose transposing V staging would spill at 168. (The MMA engine's row
 * layouts fit 128: four.) */
constexpr int pds__min_blocks(int kvt, bool shuf, bool mma)
{
    return shuf && kvt != OPT_FP8E4M3 && !mma ? 2 : 3;
}

/* Grid: batch * hkv * n_split * n_hg blocks (head group fastest: the blocks that read the same
 * KV run together and share it through L2), block PDS__THREADS. SHUF: the cache layout is
 * shuffled (else nhd or hnd, told apart by cache.layout). MMA: bf16 queries, and the build has
 * the MMA engine (else the CUDA-core engine runs, for any query dtype). */
template <int KVT, int D, int GB, bool SHUF, bool MMA>
__global__ void __launch_bounds__(PDS__THREADS, pds__min_blocks(KVT, SHUF, MMA && pds__mma_built))
paged_decode_split_kernel(const void *__restrict__ q,               /* q: [batch, hq, D] */
                          int q_dtype, opt_kv_cache cache,
                          const int32_t *__restrict__ block_table,  /* block_table: [batch, max_blocks] */
                          const int32_t *__restrict__ seq_lens,     /* seq_lens: [batch] */
                          void *__restrict__ out,                   /* out: [batch, hq, D] */
                          float *__restrict__ lse,                  /* lse: [hq, batch] */
                          float *__restrict__ ws_o,                 /* ws_o: [batch, hq, n_split, D] */
                          float *__restrict__ ws_lse,               /* ws_lse: [batch, hq, n_split] */
                          int batch, int hq, int max_blocks, int n_hg, int n_split,
                          int split_tokens, float scale, float softcap)
{
    using C = pds__cfg<KVT, D, GB, SHUF>;
    using E = pds__engine<C, MMA && pds__mma_built>;
    __shared__ float4 q_s4[D * GB / 4];
    __shared__ uint4 kv_s4[C::KV_ELEMS / 8];
    __shared__ float4 p_s4[PDS__GROUPS * C::CH * GB / 4];
    __shared__ long long tok_s[PDS__GROUPS * 2 * C::CH];

    const int hkv = cache.heads, gq = hq / hkv, tid = threadIdx.x;
    long long bid = blockIdx.x;
    const int hg = (int)(bid % n_hg);
    bid /= n_hg;
    const int s = (int)(bid % n_split);
    bid /= n_split;
    const int kh = (int)(bid % hkv), b = (int)(bid / hkv);
    const int h0 = kh * gq + hg * PDS__MAX_GB; /* first query head of the block */
    const int gv = gq - hg * PDS__MAX_GB < GB ? gq - hg * PDS__MAX_GB : GB; /* heads served */
    const int len = seq_lens[b];
    const int n_valid = len <= 0 ? 0 : (int)(((long long)len + split_tokens - 1) / split_tokens);

    if (n_valid == 0) { /* empty attended set: out = 0, lse = -inf, from split 0 */
        for (int i = tid; s == 0 && i < gv * D; i += PDS__THREADS) {
            num_store_f32(q_dtype, out, ((size_t)b * hq + h0 + i / D) * D + i % D, 0.0f);
            if (i % D == 0)
                lse[(size_t)(h0 + i / D) * batch + b] = -INFINITY;
        }
        return;
    }
    if (s >= n_valid)
        return;
    if (SHUF && !C::SHUFFLED_OK)
        GPU_TRAP(); /* the launcher refuses it */

    /* Tokens [t_begin, t_end) of the sequence; positions fit int (seq_lens are i32). */
    const int t_begin = (int)((long long)s * split_tokens);
    const int t_end = (int)((long long)len < (long long)t_begin + split_tokens
                                ? (long long)len
                                : (long long)t_begin + split_tokens);
    const int n_chunks = (t_end - t_begin + C::CH - 1) / C::CH;
    const int n_it = (n_chunks + PDS__GROUPS - 1) / PDS__GROUPS;

    constexpr bool fp8 = KVT == OPT_FP8E4M3;
    const float qmul = fp8 ? scale * *cache.k_scale : scale, fix = fp8 ? PDS__FP8_FIX : 1.0f;
    float *q_s = (float *)q_s4;
    const int lane = tid % PDS__LANES, grp = tid / PDS__LANES;
    E eng;
    eng.init(q, q_dtype, ((size_t)b * hq + h0) * D, gv, qmul, fix, q_s, tid, lane);

    pds__geom geo;
    const int bs = cache.block_size;
    geo.blk = (long long)bs * hkv * D;
    if (SHUF) {
        geo.head = (long long)kh * bs * D;
        geo.os_k = C::GX;
        geo.cs_k = bs * C::GX;
        geo.os_v = D; /* a group's first token o, a multiple of x: (o / x) * D * x */
        geo.cs_v = C::GX;
    } else if (cache.layout == OPT_KV_NHD) {
        geo.head = (long long)kh * D;
        geo.os_k = geo.os_v = hkv * D;
        geo.cs_k = geo.cs_v = C::GX;
    } else {
        geo.head = (long long)kh * bs * D;
        geo.os_k = geo.os_v = D;
        geo.cs_k = geo.cs_v = C::GX;
    }

    uint16_t *k_s = (uint16_t *)kv_s4 + grp * 2 * C::CH * C::ROWP;
    uint16_t *v_s = k_s + C::CH * C::ROWP;
    float *p_s = (float *)p_s4 + grp * C::CH * GB;
    long long *tk = tok_s + grp * 2 * C::CH, *tv = tk + C::CH;
    const int32_t *bt = block_table + (size_t)b * max_blocks;
    const uint8_t *kc = (const uint8_t *)cache.k, *vc = (const uint8_t *)cache.v;

    /* Group grp takes chunks grp, grp + 4, ...: chunk it starts at c0. Every group runs the
     * same n_it iterations, so the barriers (which also order a group's own shared-memory
     * exchanges, there being no portable warp barrier) line up. One chunk ahead, K loads fly
     * while the logits are computed and V loads while P.V is: one register set at a time. */
    const int step = PDS__GROUPS * C::CH;
    int c0 = t_begin + grp * C::CH;
    uint4 r[C::NV];
    pds__locate<C>(geo, c0, t_end, pds__block_id<C>(bt, c0, t_end, bs, lane), bs, lane, tk, tv);
    int nb = pds__block_id<C>(bt, c0 + step, t_end, bs, lane);
    __syncthreads();
    pds__issue<C, 0>(kc, geo.cs_k, c0, t_end, lane, tk, r);
    pds__stage<C, 0>(c0, t_end, lane, r, k_s);
    pds__issue<C, 1>(vc, geo.cs_v, c0, t_end, lane, tv, r);
    pds__stage<C, 1>(c0, t_end, lane, r, v_s);
    __syncthreads(); /* row starts read before they are rewritten */
    pds__locate<C>(geo, c0 + step, t_end, nb, bs, lane, tk, tv);
    nb = pds__block_id<C>(bt, c0 + 2 * step, t_end, bs, lane);
    __syncthreads();

    for (int it = 0; it < n_it; it++, c0 += step) {
        /* Staged: chunk it's rows; tk, tv: chunk it + 1's row starts. Chunks past t_end load
         * nothing (the launcher keeps c0 + 3 * step inside int). */
        const bool more = it + 1 < n_it, live = c0 < t_end;
        const int c1 = c0 + step;
        if (more)
            pds__issue<C, 0>(kc, geo.cs_k, c1, t_end, lane, tk, r);
        if (live)
            eng.chunk_qk(k_s, q_s, p_s, c0, t_end, lane, fix, softcap);
        __syncthreads(); /* p_s written, k_s read */
        if (more) {
            pds__stage<C, 0>(c1, t_end, lane, r, k_s);
            pds__issue<C, 1>(vc, geo.cs_v, c1, t_end, lane, tv, r);
        }
        if (live)
            eng.chunk_pv(v_s, p_s, lane);
        __syncthreads(); /* v_s read, tk and tv read */
        if (more) {
            pds__stage<C, 1>(c1, t_end, lane, r, v_s);
            pds__locate<C>(geo, c1 + step, t_end, nb, bs, lane, tk, tv);
            nb = pds__block_id<C>(bt, c1 + 2 * step, t_end, bs, lane);
        }
        __syncthreads(); /* chunk it + 1 staged, its successor located */
    }

    float *m_w = (float *)kv_s4;                 /* m_w: [GROUPS][GB] */
    float *l_w = m_w + PDS__GROUPS * GB;         /* l_w: [GROUPS][GB] */
    float *a_w = l_w + PDS__GROUPS * GB;         /* a_w: [GROUPS][GB][D] */
    eng.store(m_w, l_w, a_w, grp, lane);
    __syncthreads();

    /* Merge the groups (a group that saw nothing has m = -inf, l = 0, acc = 0, weight 0);
     * a sum of 0 only when every logit was -inf: the empty-set convention then. */
    const float vmul = fp8 ? *cache.v_scale : 1.0f;
    for (int i = tid; i < gv * D; i += PDS__THREADS) {
        const int g = i / D, d = i % D;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < PDS__GROUPS; w++)
            mx = fmaxf(mx, m_w[w * GB + g]);
        const float mr = pds__ref(mx);
        float sl = 0.0f, so = 0.0f;
#pragma unroll
        for (int w = 0; w < PDS__GROUPS; w++) {
            const float f = exp2f(m_w[w * GB + g] - mr);
            sl += f * l_w[w * GB + g];
            so += f * a_w[(w * GB + g) * D + d];
        }
        float o = 0.0f, ls = -INFINITY;
        if (sl != 0.0f) {
            o = so / sl;
            if (fp8)
                o = o * fix * vmul;
            ls = (mr + log2f(sl)) * PDS__LN2;
        }
        const int h = h0 + g;
        if (n_valid == 1) {
            num_store_f32(q_dtype, out, ((size_t)b * hq + h) * D + d, o);
            if (d == 0)
                lse[(size_t)h * batch + b] = ls;
        } else {
            const size_t row = ((size_t)b * hq + h) * n_split + s;
            ws_o[row * D + d] = o;
            if (d == 0)
                ws_lse[row] = ls;
        }
    }
}

/* ------------------------------------------------------------ combine kernel */
/* A warp per (sequence, query head) row: grid ceil(batch * hq / PDS__COMBINE_ROWS) blocks.
 * Sequences with one split (or none) were finished by the split kernel. */
template <int D>
__global__ void __launch_bounds__(32 * PDS__COMBINE_ROWS)
paged_decode_combine_kernel(const float *__restrict__ ws_o,       /* ws_o: [batch, hq, n_split, D] */
                            const float *__restrict__ ws_lse,     /* ws_lse: [batch, hq, n_split] */
                            const int32_t *__restrict__ seq_lens, /* seq_lens: [batch] */
                            void *__restrict__ out,               /* out: [batch, hq, D] */
                            float *__restrict__ lse,              /* lse: [hq, batch] */
                            int out_dtype, int batch, int hq, int n_split, int split_tokens)
{
    const long long row = (long long)blockIdx.x * PDS__COMBINE_ROWS + threadIdx.x / 32;
    if (row >= (long long)batch * hq)
        return;
    const int b = (int)(row / hq), h = (int)(row % hq);
    const int len = seq_lens[b];
    const int nv = len <= 0 ? 0 : (int)(((long long)len + split_tokens - 1) / split_tokens);
    if (nv <= 1)
        return;
    psplit_merge_row<D>(ws_o, ws_lse, (size_t)row * n_split, nv, threadIdx.x % 32, out, out_dtype,
                        (size_t)row * D, lse + (size_t)h * batch + b);
}

/* ------------------------------------------------------- shared split machinery */
psplit_plan psplit_make_plan(int batch, int hq, int hkv, int head_dim, long long max_tokens, int sms,
                             int heads_per_block, int blocks_per_sm, int min_split, int align)
{
    psplit_plan p;
    const int gq = hq / hkv;
    p.n_hg = (gq + heads_per_block - 1) / heads_per_block;
    max_tokens = max_tokens < 1 ? 1 : max_tokens > PSPLIT_MAX_TOKENS ? PSPLIT_MAX_TOKENS : max_tokens;
    const long long sm = sms < 1 || sms > PSPLIT_PLAN_MAX_SMS ? PSPLIT_PLAN_MAX_SMS : sms;
    const long long per_split = (long long)batch * hkv * p.n_hg;
    long long n = ((long long)blocks_per_sm * sm + per_split - 1) / per_split;
    long long cap = max_tokens / min_split;
    cap = cap < 1 ? 1 : cap > PSPLIT_MAX_SPLITS ? PSPLIT_MAX_SPLITS : cap;
    n = n < 1 ? 1 : n > cap ? cap : n;
    long long st = (max_tokens + n - 1) / n;
    st = (st + align - 1) / align * align;
    p.split_tokens = (int)st;
    p.n_split = (int)((max_tokens + st - 1) / st);
    p.ws_bytes = p.n_split > 1
                     ? (size_t)batch * (size_t)hq * (size_t)p.n_split * ((size_t)head_dim + 1) * sizeof(float)
                     : 0;
    return p;
}

int psplit_check_args(const opt_paged_decode_args *a)
{
    if (!a || a->batch < 0)
        return OPT_EINVAL;
    const opt_kv_cache *c = &a->cache;
    if (a->dtype != OPT_BF16 && a->dtype != OPT_F16)
        return OPT_EINVAL;
    if (c->dtype != a->dtype && c->dtype != OPT_FP8E4M3)
        return OPT_EINVAL;
    if (c->dtype == OPT_FP8E4M3 && (!c->k_scale || !c->v_scale))
        return OPT_EINVAL;
    if (c->layout != OPT_KV_NHD && c->layout != OPT_KV_HND && c->layout != OPT_KV_SHUFFLED)
        return OPT_EINVAL;
    const int x = pkv_x(c->dtype);
    if (c->block_size <= 0 || c->heads <= 0 || (c->layout == OPT_KV_SHUFFLED && c->block_size % x != 0))
        return OPT_EINVAL;
    if (a->hq <= 0 || a->hq % c->heads != 0 || a->max_blocks < 0 ||
        (long long)a->max_blocks * c->block_size > PSPLIT_MAX_TOKENS)
        return OPT_EINVAL;
    if (!(a->softcap >= 0.0f && a->softcap <= FLT_MAX) || !(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->batch > 0 && (!a->q || !c->k || !c->v || !a->block_table || !a->seq_lens || !a->out || !a->lse))
        return OPT_EINVAL;
    return OPT_OK;
}

int psplit_sm_count(int *sms)
{
    static int known[64];
    int dev = 0, n = 0;
    GPU_CHECK(hipGetDevice(&dev));
    if (dev >= 0 && dev < 64 && known[dev] > 0) {
        *sms = known[dev];
        return OPT_OK;
    }
    GPU_CHECK(hipDeviceGetAttribute(&n, hipDeviceAttributeMultiprocessorCount, dev));
    n = n > 0 ? n : 1;
    if (dev >= 0 && dev < 64)
        known[dev] = n;
    *sms = n;
    return OPT_OK;
}

int psplit_combine(const psplit_plan &p, const float *ws_o, const float *ws_lse,
                   const int32_t *seq_lens, void *out, float *lse, int out_dtype, int batch, int hq,
                   int head_dim, hipStream_t stream)
{
    if (p.n_split <= 1 || batch == 0)
        return OPT_OK;
    const unsigned grid = (unsigned)(((long long)batch * hq + PDS__COMBINE_ROWS - 1) / PDS__COMBINE_ROWS);
    const dim3 block(32 * PDS__COMBINE_ROWS);
    if (head_dim == 64)
        paged_decode_combine_kernel<64><<<grid, block, 0, stream>>>(ws_o, ws_lse, seq_lens, out, lse,
                                                                    out_dtype, batch, hq, p.n_split, p.split_tokens);
    else if (head_dim == 128)
        paged_decode_combine_kernel<128><<<grid, block, 0, stream>>>(ws_o, ws_lse, seq_lens, out, lse,
                                                                     out_dtype, batch, hq, p.n_split, p.split_tokens);
    else if (head_dim == 256)
        paged_decode_combine_kernel<256><<<grid, block, 0, stream>>>(ws_o, ws_lse, seq_lens, out, lse,
                                                                     out_dtype, batch, hq, p.n_split, p.split_tokens);
    else
        return OPT_EINVAL;
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* --------------------------------------------------------------- launcher */
/* How split_kv cuts a problem: gb heads per block (1, 4 or PDS__MAX_GB) and the shared plan. */
struct pds__plan : psplit_plan {
    int gb;
};

static pds__plan pds__make_plan(int batch, int hq, int hkv, int head_dim, long long max_tokens,
                                int sms)
{
    pds__plan p;
    static_cast<psplit_plan &>(p) =
        psplit_make_plan(batch, hq, hkv, head_dim, max_tokens, sms, PDS__MAX_GB, PDS__BLOCKS_PER_SM,
                         PDS__MIN_SPLIT, PDS__SPLIT_ALIGN);
    const int gq = hq / hkv;
    p.gb = gq == 1 ? 1 : gq <= 4 ? 4 : PDS__MAX_GB;
    return p;
}

template <int KVT, int D, int GB, bool SHUF, bool MMA>
static int pds__launch_one(const opt_paged_decode_args *a, const pds__plan &p, float *ws_o,
                           float *ws_lse, unsigned grid, hipStream_t stream)
{
    paged_decode_split_kernel<KVT, D, GB, SHUF, MMA><<<grid, PDS__THREADS, 0, stream>>>(
        a->q, a->dtype, a->cache, a->block_table, a->seq_lens, a->out, a->lse, ws_o, ws_lse,
        a->batch, a->hq, a->max_blocks, p.n_hg, p.n_split, p.split_tokens, a->scale, a->softcap);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* The MMA engine takes bf16 queries over bf16 or fp8 caches, head_dim <= 128, 4 or more heads
 * per block (one head per block stays on CUDA cores: its MMA rows would be 15/16 idle). */
template <int KVT, int D, int GB, bool SHUF>
static int pds__launch(const opt_paged_decode_args *a, const pds__plan &p, float *ws_o,
                       float *ws_lse, unsigned grid, hipStream_t stream)
{
    constexpr bool mma = KVT != OPT_F16 && D <= 128 && GB >= 4;
    if (mma && a->dtype == OPT_BF16)
        return pds__launch_one<KVT, D, GB, SHUF, mma>(a, p, ws_o, ws_lse, grid, stream);
    return pds__launch_one<KVT, D, GB, SHUF, false>(a, p, ws_o, ws_lse, grid, stream);
}

template <int KVT, int D, bool SHUF>
static int pds__launch_gb(const opt_paged_decode_args *a, const pds__plan &p, float *ws_o,
                          float *ws_lse, unsigned grid, hipStream_t stream)
{
    return p.gb == 1   ? pds__launch<KVT, D, 1, SHUF>(a, p, ws_o, ws_lse, grid, stream)
           : p.gb == 4 ? pds__launch<KVT, D, 4, SHUF>(a, p, ws_o, ws_lse, grid, stream)
                       : pds__launch<KVT, D, PDS__MAX_GB, SHUF>(a, p, ws_o, ws_lse, grid, stream);
}

template <int KVT, int D>
static int pds__launch_layout(const opt_paged_decode_args *a, const pds__plan &p, float *ws_o,
                              float *ws_lse, unsigned grid, hipStream_t stream)
{
    return a->cache.layout == OPT_KV_SHUFFLED
               ? pds__launch_gb<KVT, D, true>(a, p, ws_o, ws_lse, grid, stream)
               : pds__launch_gb<KVT, D, false>(a, p, ws_o, ws_lse, grid, stream);
}

template <int KVT>
static int pds__launch_d(const opt_paged_decode_args *a, const pds__plan &p, float *ws_o,
                         float *ws_lse, unsigned grid, hipStream_t stream)
{
    return a->cache.head_dim == 64    ? pds__launch_layout<KVT, 64>(a, p, ws_o, ws_lse, grid, stream)
           : a->cache.head_dim == 128 ? pds__launch_layout<KVT, 128>(a, p, ws_o, ws_lse, grid, stream)
                                      : pds__launch_layout<KVT, 256>(a, p, ws_o, ws_lse, grid, stream);
}

extern "C" const char *opt_paged_decode_split_kv_unsupported(int head_dim, int kv_dtype, int layout)
{
    if (head_dim != 64 && head_dim != 128 && head_dim != 256)
        return "split_kv is built for head_dim 64, 128 and 256 (whole 16-byte vectors per lane, "
               "8 output dims per lane)";
    if (head_dim > 128 && kv_dtype == OPT_FP8E4M3 && layout == OPT_KV_SHUFFLED)
        return "split_kv stages 8-token chunks at head_dim 256: a shuffled fp8 V vector holds "
               "16 tokens";
    return NULL;
}

extern "C" size_t opt_paged_decode_split_kv_workspace(int batch, int hq, int hkv, int head_dim,
                                                      int max_blocks, int block_size)
{
    if (batch <= 0 || hq <= 0 || hkv <= 0 || hq % hkv != 0 || head_dim <= 0)
        return 0;
    return pds__make_plan(batch, hq, hkv, head_dim, (long long)max_blocks * block_size, 0).ws_bytes;
}

/* seq_lens[b] <= max_blocks * block_size and the block-table entries they use inside the pool
 * (SPEC section 5): they live on the device, so the launcher cannot check that. */
extern "C" int opt_paged_decode_split_kv(const opt_paged_decode_args *a, void *workspace,
                                         size_t workspace_bytes, void *stream)
{
    if (psplit_check_args(a) != OPT_OK ||
        opt_paged_decode_split_kv_unsupported(a->cache.head_dim, a->cache.dtype, a->cache.layout))
        return OPT_EINVAL;
    if (a->batch == 0)
        return OPT_OK;
    const opt_kv_cache *c = &a->cache;

    int sms = 0;
    int rc = psplit_sm_count(&sms);
    if (rc)
        return rc;
    const pds__plan p = pds__make_plan(a->batch, a->hq, c->heads, c->head_dim,
                                       (long long)a->max_blocks * c->block_size, sms);
    if (p.ws_bytes > workspace_bytes || (p.ws_bytes && !workspace))
        return OPT_EINVAL;
    const long long blocks = (long long)a->batch * c->heads * p.n_hg * p.n_split;
    if (blocks > INT32_MAX || (long long)a->batch * a->hq > INT32_MAX)
        return OPT_EINVAL;
    float *ws_o = (float *)workspace;
    float *ws_lse = ws_o ? ws_o + (size_t)a->batch * a->hq * p.n_split * c->head_dim : NULL;
    const hipStream_t st = (hipStream_t)stream;
    const unsigned grid = (unsigned)blocks;
    rc = c->dtype == OPT_FP8E4M3 ? pds__launch_d<OPT_FP8E4M3>(a, p, ws_o, ws_lse, grid, st)
         : c->dtype == OPT_BF16  ? pds__launch_d<OPT_BF16>(a, p, ws_o, ws_lse, grid, st)
                                 : pds__launch_d<OPT_F16>(a, p, ws_o, ws_lse, grid, st);
    if (rc)
        return rc;
    return psplit_combine(p, ws_o, ws_lse, a->seq_lens, a->out, a->lse, a->dtype, a->batch, a->hq,
                          c->head_dim, st);
}
