/* dsv4_fast.hip - SPEC section 10, DeepSeek V4 sparse MLA decode on the GPU, `packed` variant
 * (issue 5). NVIDIA only (GPU_HAS_MMA_SYNC): written with inline PTX mma.sync, movmatrix and
 * cp.async; elsewhere the kernel traps and opt_dsv4_sparse_decode_packed_unsupported() says why.
 *
 * Why the design: the simple kernel reads and decodes each indexed 584-byte row once per query
 * head. Here a block serves a group of 16 heads (the M of one mma tile), so a row is fetched
 * and dequantized once per token and group, and the 16 dot products per row run on the tensor
 * cores (bf16 mma.sync, f32 accumulation).
 *
 * dsv4_fast_packed_kernel: grid (head groups of 16, tokens), three groups of 4 warps, each on
 *   a third of the token's entries with its own shared memory, barriers and online softmax,
 *   merged through shared memory at the end (SPEC section 0's merge): a batch of 128 tokens is
 *   one block per multiprocessor, and the groups multiply the warps that hide latency (the
 *   TP8 cases are latency-bound: ncu saw 2 active warps a scheduler, 0.44 eligible, with two
 *   groups; three, at 3 stages each and 168 registers, ran 7-13% faster on an H200,
 *   3.5% on the tiny early-positions case).
 *   The token's entries are those of the SWA scope, then those of the extra scope (entry k of
 *   a scope is used iff k < len and its index is not -1; an index used twice counts twice).
 *   Entries stream in stages of 32 through cp.async: per used entry its 576 data bytes
 *   (16-byte copies) and its 8 scale bytes, unused entries zero-filled and flagged; several
 *   stages are in flight and each thread looks its next index up one stage ahead. Per
 *   sub-tile of 16 entries each warp of a group owns 128 of the 512 dims (warp w: dims
 *   128 w .. 128 w + 127; warp 3's upper half is the bf16 rope): it dequantizes its dims in
 *   registers (e4m3 codes become bf16 code * 2^-120 by bit moves, and one bf16 multiply by
 *   2^(e8m0 - 7), the 64-dim tile's scale with the bias folded in, makes code * scale
 *   exactly), multiplies them with the 16 heads' queries into partial logits, which meet in
 *   shared memory; warp w sums the four partials of heads 4w .. 4w + 3 in a fixed order and
 *   runs their online softmax (latent_owner.h: f32, exp2 with log2(e) folded into the scale,
 *   the running max moved only when it grows by a factor above 2^8, so rescales are rare).
 *   The bf16-rounded probabilities, handed back through shared memory, then multiply the
 *   same dequantized registers transposed by movmatrix (V = K), into out for the warp's 128
 *   dims.
 *   At the end the sink is applied once: out *= 1 / (1 + exp(sink - lse)), lse without the
 *   sink; no used entry gives out = 0, lse = -inf (whatever the sink); sink +inf gives out = 0,
 *   -inf changes nothing. Output bf16 [T, Hq, 512], rounded once to nearest even; lse f32
 *   [Hq, T], natural log. A NaN code, scale or rope value poisons its row's logit (SPEC).
 *
 * Fragment layout (PTX m16n8k16, lane = 4 g + t): A a0 = (row g, k 2t, 2t+1), a1 = (row g + 8,
 * same k), a2 = (row g, k 2t + 8, 2t + 9), a3 = (row g + 8, those k); B b0 = (k 2t, 2t+1; col
 * g), b1 = (k 2t + 8, 2t + 9; col g); C c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = row g + 8.
 * A dot product may visit its k in any order, so each lane's k-slots are mapped to dims it can
 * load with one 16-byte read: see d4f__d4 and d4f__pos.
 *
 * Every offset into the caches, q and out is computed in 64 bits.
 */
#include "gpu_port.h"
#include "latent_owner.h"
#include "latent_wgmma.h"
#include "numerics.h"
#include "paged_kv.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

enum {
    D4F__HG = 16,                    /* query heads per block: the M of one mma tile */
    D4F__GROUPS = 3,                 /* warp groups per block, each on a third of the entries */
    D4F__GTHREADS = 128,             /* 4 warps per group */
    D4F__THREADS = D4F__GROUPS * D4F__GTHREADS,
    D4F__WARPS = 4,                  /* per group */
    D4F__SUB = 16,                   /* entries per sub-tile: two mma n-tiles of 8 */
    D4F__D = 512,                    /* latent dims, K = V */
    D4F__NOPE = 448,                 /* fp8 dims 0..447, then 64 bf16 rope dims */
    D4F__DATA = 576,                 /* data bytes per row */
    D4F__SCALES = 8,                 /* scale bytes per row: 7 e8m0 + 1 pad */
    D4F__TOKEN = 584,
    D4F__SLOTS = 2,                  /* 64-dim slots per warp (4 k-steps each) */
    D4F__ROWS = 32,                  /* entries per stage */
    D4F__STAGES = 3,
    D4F__TPR = D4F__GTHREADS / D4F__ROWS, /* loader threads per row */
    D4F__CPT = D4F__DATA / 16 / D4F__TPR, /* 16-byte copies per loader thread */
    D4F__KV_BYTES = D4F__STAGES * D4F__ROWS * D4F__DATA,
    D4F__SC_BYTES = D4F__STAGES * D4F__ROWS * D4F__SCALES,
    D4F__SBUF = LAT_OWN_FLOATS * 4,  /* a group's exchange area (latent_owner.h), bytes */
    D4F__GSMEM = D4F__KV_BYTES + D4F__SC_BYTES + D4F__SBUF + D4F__STAGES * D4F__ROWS, /* a group's */
    D4F__SMEM = D4F__GROUPS * D4F__GSMEM,
    D4F__MERGE = 2 + 2 + 2 * 8 * 4,  /* floats a lane hands over at the end: m, l, out */
};

/* 576-byte rows: rows r and r + 1 fall in opposite halves of the 32 banks, so the 16-byte
 * fragment reads (2 rows x 64 bytes per quarter warp) are conflict-free without padding. */
static_assert(D4F__DATA % 128 == 64, "conflict-free row stride");
static_assert(D4F__CPT * D4F__TPR * 16 == D4F__DATA, "every loader thread copies 9 chunks");
static_assert(D4F__SMEM <= 227 * 1024, "one block per multiprocessor");
static_assert((D4F__KV_BYTES + D4F__SC_BYTES) % 16 == 0 && D4F__GSMEM % 16 == 0,
              "16-byte aligned exchange buffers");
static_assert(D4F__MERGE * D4F__GTHREADS * 4 <= D4F__KV_BYTES, "the merge fits a group's stages");
static_assert(D4F__GTHREADS == 128, "d4f__group_sync counts 128 threads");

#if defined(GPU_HAS_MMA_SYNC)
/* ------------------------------------------------------------ dims of a fragment */
/* A lane's fragments for k-step js of a 64-dim slot cover 4 dims, d4 .. d4 + 3: fp8 slots
 * (a scale tile: base 64 c) are one 16-byte read of dims base + 16 t .. + 15; the bf16 rope
 * slot two 16-byte reads, dims base + 8 t .. + 7 and base + 32 + 8 t .. + 7. */
static __device__ constexpr int d4f__d4(int fp8, int base, int js, int t)
{
    return fp8 ? base + 16 * t + 4 * js : base + 32 * (js >> 1) + 8 * t + 4 * (js & 1);
}

/* Which of d4 .. d4 + 3 is k-slot half h (b0 / b1), element e (low / high 16 bits): bf16
 * pairs are adjacent in memory; the fp8 bit moves below yield bytes 0, 2 and 1, 3. The output
 * n-tile made from half h by movmatrix has the same dims, so out uses the same map. */
static __device__ constexpr int d4f__pos(int fp8, int h, int e)
{
    return fp8 ? h + 2 * e : 2 * h + e;
}

/* The factor the sink puts on a row with LSE lse_v (natural log, without the sink), as the
 * reference applies it: 1 / (1 + exp(sink - lse)); no sink or -inf changes nothing, NaN
 * poisons, +inf or an infinite lse (the empty set) gives 0. */
static __device__ __forceinline__ float d4f__sink_factor(const float *sink, int h, float lse_v)
{
    if (!sink)
        return 1.0f;
    const float sk = sink[h];
    if (sk == -INFINITY)
        return 1.0f;
    if (isnan(sk))
        return sk;
    if (sk != INFINITY && lse_v != INFINITY && lse_v != -INFINITY)
        return 1.0f / (1.0f + expf(sk - lse_v));
    return 0.0f;
}

/* ceil(bs * 584 / 576) * 576 bytes. */
static __device__ __forceinline__ size_t d4f__stride(int block_size)
{
    return ((size_t)block_size * D4F__TOKEN + D4F__DATA - 1) / D4F__DATA * D4F__DATA;
}

/* --------------------------------------------------------------- PTX primitives */
/* d += A B: m16n8k16, bf16 inputs, f32 accumulation (layout in the file header). */
static __device__ __forceinline__ void d4f__mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* The warp's 8x8 b16 matrix (lane 4 g + t holds row g, cols 2t, 2t+1) transposed in place. */
static __device__ __forceinline__ uint32_t d4f__trans(uint32_t x)
{
    uint32_t d;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(x));
    return d;
}

/* 16 (8) bytes global -> shared, asynchronously; bytes = 0 writes zeros and reads nothing. */
static __device__ __forceinline__ void d4f__cp16(uint32_t dst, const void *src, int bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(dst), "l"(src), "r"(bytes) : "memory");
}

static __device__ __forceinline__ void d4f__cp8(uint32_t dst, const void *src, int bytes)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n"
                 :: "r"(dst), "l"(src), "r"(bytes) : "memory");
}

static __device__ __forceinline__ void d4f__cp_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> static __device__ __forceinline__ void d4f__cp_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}

/* bf16x2 of (lo, hi), each rounded to nearest even. */
static __device__ __forceinline__ uint32_t d4f__bf16x2(float lo, float hi)
{
    uint32_t d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}


/* a * b per bf16 half (the -0 addend keeps the product's sign of zero). */
static __device__ __forceinline__ uint32_t d4f__bf16x2_mul(uint32_t a, uint32_t b)
{
    uint32_t d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
    return d;
}

enum : uint32_t {
    D4F__BF16X2_2P120 = 0x7B807B80u, /* 2^120 in both halves */
    D4F__BF16X2_NAN = 0x7FC07FC0u,
};

/* ------------------------------------------------------------ dequantization */
/* The 8 B fragments (4 k-steps, b0 b1 each) of an fp8 tile slot from the lane's 16 codes v and
 * the tile's e8m0 byte e: code * 2^(e - 127), exact. Four codes (bytes x0..x3 of a word) as
 * bf16 bit patterns s | (code & 0x7F) << 4 read as code * 2^-120, normal or subnormal alike:
 * even = (x0, x2), odd = (x1, x3). One multiply by 2^(e - 7) finishes while that is a normal
 * bf16 (e <= 134); larger scales (no lane of the warp has one in practice: a vote skips them)
 * take 2^120 and then 2^(e - 127) (e = 0xFF: NaN). nan gains bit 7 of some byte when a code
 * is NaN (S.1111.111). */
static __device__ __forceinline__ void d4f__fp8_slot(uint4 v, uint32_t e, uint32_t (&kb)[8],
                                                     uint32_t &nan)
{
    const int two = e > 134u;
    const uint32_t m1 = two ? D4F__BF16X2_2P120 : ((e + 120u) << 7) * 0x00010001u;
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint32_t odd = (w[j] & 0x80008000u) | ((w[j] >> 4) & 0x07F007F0u);
        const uint32_t even = ((w[j] << 8) & 0x80008000u) | ((w[j] << 4) & 0x07F007F0u);
        nan |= (w[j] & 0x7F7F7F7Fu) + 0x01010101u;
        kb[2 * j] = d4f__bf16x2_mul(even, m1);
        kb[2 * j + 1] = d4f__bf16x2_mul(odd, m1);
    }
    if (__any_sync(0xffffffffu, two)) {
        const uint32_t m2 = !two ? 0x3F803F80u /* 1 */
                                 : e == 0xFFu ? D4F__BF16X2_NAN : (e << 7) * 0x00010001u;
#pragma unroll
        for (int j = 0; j < 8; j++)
            kb[j] = d4f__bf16x2_mul(kb[j], m2);
    }
}

/* A (head pair) A fragment from 4 bf16 of row A and of row B at dims d4 .. d4 + 3. */
template <int FP8>
static __device__ __forceinline__ void d4f__afrag(uint2 ra, uint2 rb, uint32_t (&a)[4])
{
    const uint64_t x = (uint64_t)ra.x | (uint64_t)ra.y << 32, y = (uint64_t)rb.x | (uint64_t)rb.y << 32;
#define D4F__EL(v, h, e) ((uint32_t)((v) >> (16 * d4f__pos(FP8, h, e))) & 0xFFFFu)
    a[0] = D4F__EL(x, 0, 0) | D4F__EL(x, 0, 1) << 16;
    a[1] = D4F__EL(y, 0, 0) | D4F__EL(y, 0, 1) << 16;
    a[2] = D4F__EL(x, 1, 0) | D4F__EL(x, 1, 1) << 16;
    a[3] = D4F__EL(y, 1, 0) | D4F__EL(y, 1, 1) << 16;
#undef D4F__EL
}

/* Barrier of warp group grp alone (named barrier 1 + grp; 0 is __syncthreads). */
static __device__ __forceinline__ void d4f__group_sync(int grp)
{
    asm volatile("bar.sync %0, 128;\n" :: "r"(1 + grp) : "memory");
}
#endif // GPU_HAS_MMA_SYNC

/* ---------------------------------------------------------------------- kernel */
/* Grid (ceil(hq / 16), tokens), block D4F__THREADS, dynamic shared memory D4F__SMEM. */
__global__ void __launch_bounds__(D4F__THREADS, 1)
dsv4_fast_packed_kernel(const uint16_t *__restrict__ q,         /* q: [tokens, hq, 512] bf16 */
                        const uint8_t *__restrict__ swa_cache,  /* swa_cache: [Ns, stride(swa_bs)] */
                        const int32_t *__restrict__ swa_idx,    /* swa_idx: [tokens, swa_width] */
                        const int32_t *__restrict__ swa_len,    /* swa_len: [tokens] */
                        const uint8_t *__restrict__ ext_cache,  /* ext_cache: [Ne, stride(ext_bs)] */
                        const int32_t *__restrict__ ext_idx,    /* ext_idx: [tokens, ext_width] */
                        const int32_t *__restrict__ ext_len,    /* ext_len: [tokens] */
                        const float *__restrict__ sink,         /* sink: [hq], or NULL */
                        uint16_t *__restrict__ out,             /* out: [tokens, hq, 512] bf16 */
                        float *__restrict__ lse,                /* lse: [hq, tokens] */
                        int tokens, int hq, int swa_bs, int swa_width, int ext_bs, int ext_width,
                        float scale)
{
#if defined(GPU_HAS_MMA_SYNC)
    extern __shared__ __align__(16) uint8_t d4f__smem[];
    const int grp = threadIdx.x / D4F__GTHREADS;
    uint8_t *kv_s = d4f__smem + grp * D4F__GSMEM;               /* [STAGES][ROWS][576] */
    uint8_t *sc_s = kv_s + D4F__KV_BYTES;                       /* [STAGES][ROWS][8] */
    float *sbuf = (float *)(sc_s + D4F__SC_BYTES);              /* latent_owner.h's area */
    uint8_t *ok_s = (uint8_t *)(sbuf + D4F__SBUF / 4);          /* [STAGES][ROWS] used entry */

    const int tid = threadIdx.x % D4F__GTHREADS, lane = tid & 31, warp = tid >> 5, g = lane >> 2,
              t = lane & 3;
    const int hg = blockIdx.x, tok = blockIdx.y;
    const int hA = D4F__HG * hg + g, hB = hA + 8;
    const int n_swa = swa_len[tok], n = n_swa + ext_len[tok];
    /* This group's entries: whole stages, the first share to group 0. */
    const int share = (n + D4F__GROUPS * D4F__ROWS - 1) / (D4F__GROUPS * D4F__ROWS) * D4F__ROWS;
    const int e_beg = grp * share, e_end = n < e_beg + share ? n : e_beg + share;
    const size_t swa_stride = d4f__stride(swa_bs), ext_stride = d4f__stride(ext_bs);
    const float sl2 = scale * 1.4426950408889634f; /* logit -> log2 units */

    /* Warp w's slots: fp8 tiles 2w, 2w + 1; warp 3's second slot is the bf16 rope. */
    const int rope1 = warp == D4F__WARPS - 1;

    /* Query fragments of this warp's dims, rows hA and hB (zero past hq). */
    uint32_t qf[D4F__SLOTS][4][4];
    {
        const uint16_t *qa = q + ((size_t)tok * hq + hA) * D4F__D;
        const uint16_t *qb = q + ((size_t)tok * hq + hB) * D4F__D;
        const uint2 zero = {0u, 0u};
#pragma unroll
        for (int sl = 0; sl < D4F__SLOTS; sl++)
#pragma unroll
            for (int js = 0; js < 4; js++) {
                const int fp8 = !(rope1 && sl == 1);
                const int d4 = d4f__d4(fp8, fp8 ? 64 * (2 * warp + sl) : D4F__NOPE, js, t);
                const uint2 ra = hA < hq ? *(const uint2 *)(qa + d4) : zero;
                const uint2 rb = hB < hq ? *(const uint2 *)(qb + d4) : zero;
                if (fp8)
                    d4f__afrag<1>(ra, rb, qf[sl][js]);
                else
                    d4f__afrag<0>(ra, rb, qf[sl][js]);
            }
    }

    float o[D4F__SLOTS][8][4];
#pragma unroll
    for (int sl = 0; sl < D4F__SLOTS; sl++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                o[sl][j][r] = 0.0f;
    lat_owner ow = lat_own_init(warp, lane, sl2); /* this warp's heads' softmax */

    /* Loader role: thread tid copies chunks lsub, lsub + 4, ... of stage row lrow (and, for
     * lsub == 0, the row's scale bytes and used flag). Entry e: SWA entry e, then extra entry
     * e - n_swa. */
    const int lrow = tid / D4F__TPR, lsub = tid % D4F__TPR;
    const int nst = e_end > e_beg ? (e_end - e_beg + D4F__ROWS - 1) / D4F__ROWS : 0;
    const uint32_t kv_base = (uint32_t)__cvta_generic_to_shared(kv_s);
    const uint32_t sc_base = (uint32_t)__cvta_generic_to_shared(sc_s);
    auto index_of = [&](int e) -> int32_t {
        if (e >= e_end)
            return -1;
        return e < n_swa ? swa_idx[(size_t)tok * swa_width + e]
                         : ext_idx[(size_t)tok * ext_width + (e - n_swa)];
    };
    int nx = 0;                              /* next stage to issue */
    int32_t nx_slot = index_of(e_beg + lrow); /* its row's index, loaded a stage ahead of use */
    auto issue = [&]() {
        if (nx < nst) {
            const int e = e_beg + nx * D4F__ROWS + lrow, ok = nx_slot != -1, in_swa = e < n_swa;
            const uint8_t *row = swa_cache, *sc = swa_cache;
            if (ok) {
                const int bs = in_swa ? swa_bs : ext_bs;
                const uint8_t *blk = (in_swa ? swa_cache : ext_cache) +
                                     (size_t)(nx_slot / bs) * (in_swa ? swa_stride : ext_stride);
                row = blk + (size_t)(nx_slot % bs) * D4F__DATA;
                sc = blk + (size_t)bs * D4F__DATA + (size_t)(nx_slot % bs) * D4F__SCALES;
            }
            const int buf_row = (nx % D4F__STAGES) * D4F__ROWS + lrow;
            const uint32_t dst = kv_base + (uint32_t)(buf_row * D4F__DATA);
#pragma unroll
            for (int i = 0; i < D4F__CPT; i++) {
                const int c = lsub + D4F__TPR * i;
                d4f__cp16(dst + 16 * c, row + (ok ? 16 * c : 0), ok ? 16 : 0);
            }
            if (lsub == 0) {
                d4f__cp8(sc_base + (uint32_t)(buf_row * D4F__SCALES), sc, ok ? 8 : 0);
                ok_s[buf_row] = (uint8_t)ok; /* its buffer's last reader passed a barrier */
            }
        }
        d4f__cp_commit(); /* empty groups too: wait_group counts stay uniform */
        nx++;
        nx_slot = nx < nst ? index_of(e_beg + nx * D4F__ROWS + lrow) : -1;
    };

#pragma unroll
    for (int p = 0; p < D4F__STAGES - 1; p++)
        issue();

    for (int s = 0; s < nst; s++) {
        d4f__cp_wait<D4F__STAGES - 2>(); /* stage s has landed (this thread's copies) */
        d4f__group_sync(grp);            /* the group's copies; stage s - 1's buffer is free */
        issue();
        const int buf = s % D4F__STAGES;
        const uint8_t *stg = kv_s + (size_t)buf * D4F__ROWS * D4F__DATA;
        const uint8_t *stg_sc = sc_s + (size_t)buf * D4F__ROWS * D4F__SCALES;
        const uint8_t *stg_ok = ok_s + buf * D4F__ROWS;

#pragma unroll
        for (int u = 0; u < D4F__ROWS / D4F__SUB; u++) {
            /* Key fragments: n-tile i holds entry row u * 16 + 8 i + g (one row per lane group).
             * A NaN code NaNs one fragment of its row: the row's logit is then NaN for every
             * head (SPEC: a NaN logit poisons its row), and so is every output dim through P. */
            uint32_t kb[2][D4F__SLOTS][8];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int r = u * D4F__SUB + 8 * i + g;
                const uint8_t *rp = stg + (size_t)r * D4F__DATA;
                const int c0 = 2 * warp;
                uint32_t nan = 0;
                d4f__fp8_slot(*(const uint4 *)(rp + 64 * c0 + 16 * t), stg_sc[r * D4F__SCALES + c0],
                              kb[i][0], nan);
                if (rope1) {
                    const uint4 a = *(const uint4 *)(rp + D4F__NOPE + 16 * t);
                    const uint4 b = *(const uint4 *)(rp + D4F__NOPE + 64 + 16 * t);
                    kb[i][1][0] = a.x, kb[i][1][1] = a.y, kb[i][1][2] = a.z, kb[i][1][3] = a.w;
                    kb[i][1][4] = b.x, kb[i][1][5] = b.y, kb[i][1][6] = b.z, kb[i][1][7] = b.w;
                } else {
                    d4f__fp8_slot(*(const uint4 *)(rp + 64 * (c0 + 1) + 16 * t),
                                  stg_sc[r * D4F__SCALES + c0 + 1], kb[i][1], nan);
                }
                if (nan & 0x80808080u)
                    kb[i][0][0] = D4F__BF16X2_NAN;
            }

            /* This warp's partial logits over its 128 dims. */
            float acc[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    acc[i][r] = 0.0f;
#pragma unroll
            for (int sl = 0; sl < D4F__SLOTS; sl++)
#pragma unroll
                for (int js = 0; js < 4; js++)
#pragma unroll
                    for (int i = 0; i < 2; i++)
                        d4f__mma(acc[i], qf[sl][js], kb[i][sl][2 * js], kb[i][sl][2 * js + 1]);

            /* The four warps' partials meet in the group's shared memory; each warp finishes
             * the softmax of its four heads (latent_owner.h; unused entries weigh nothing),
             * and every warp reads back P and the rescale factors of its rows. */
            lat_own_put_partials(sbuf, warp, lane, acc);
            d4f__group_sync(grp); /* every partial is in; the previous P and alphas were read */
            lat_own_softmax<false>(sbuf, ow, lane, [&](int e) {
                return stg_ok[u * D4F__SUB + ow.key + e] != 0;
            });
            d4f__group_sync(grp); /* every owner's P and alpha are in */

            /* Mostly alpha is 1 in the whole warp: skip the rescale. */
            float alA, alB;
            lat_own_alpha(sbuf, g, alA, alB);
            if (__any_sync(0xffffffffu, alA != 1.0f || alB != 1.0f)) {
#pragma unroll
                for (int sl = 0; sl < D4F__SLOTS; sl++)
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        o[sl][j][0] *= alA, o[sl][j][1] *= alA;
                        o[sl][j][2] *= alB, o[sl][j][3] *= alB;
                    }
            }

            /* P (bf16, as every flash kernel rounds it) times V = K: the owners' P is the A
             * fragment, the transposed key fragments the B ones. */
            uint32_t pa[4];
            lat_own_p(sbuf, lane, pa);
#pragma unroll
            for (int sl = 0; sl < D4F__SLOTS; sl++)
#pragma unroll
                for (int j = 0; j < 8; j++)
                    d4f__mma(o[sl][j], pa, d4f__trans(kb[0][sl][j]), d4f__trans(kb[1][sl][j]));
        }
    }
    d4f__cp_wait<0>(); /* no copy outlives the block */
    /* The owners' (m, l) to the lanes holding their rows. */
    lat_own_sum(ow);
    lat_own_put_ml(sbuf, ow, lane);
    d4f__group_sync(grp);
    float m[2], l[2]; /* rows hA, hB */
    lat_own_ml(sbuf, g, m, l);

    /* Groups 1 .. GROUPS - 1 hand (m, l, out) to the lane of group 0 that holds the same rows
     * and dims, each through its own stage buffers, idle once every warp of the block passes
     * this barrier (a whole-block barrier, not a group's named one: compute-sanitizer racecheck
     * reported the named-barrier form as 6 hazards on this hand-over); group 0 merges them in
     * group order. */
    __syncthreads();
    if (grp != 0) {
        float *mbuf = (float *)(d4f__smem + grp * D4F__GSMEM); /* [D4F__MERGE][GTHREADS] */
        mbuf[0 * D4F__GTHREADS + tid] = m[0], mbuf[1 * D4F__GTHREADS + tid] = m[1];
        mbuf[2 * D4F__GTHREADS + tid] = l[0], mbuf[3 * D4F__GTHREADS + tid] = l[1];
#pragma unroll
        for (int sl = 0; sl < D4F__SLOTS; sl++)
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    mbuf[(4 + (sl * 8 + j) * 4 + r) * D4F__GTHREADS + tid] = o[sl][j][r];
    }
    __syncthreads();
    if (grp != 0)
        return;
    /* The merge: weights exp2(m_i - max), a max of -inf taken against 0 as in the tiles. */
    for (int g2 = 1; g2 < D4F__GROUPS; g2++) {
        const float *mbuf = (const float *)(d4f__smem + g2 * D4F__GSMEM);
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            const float m1 = mbuf[rr * D4F__GTHREADS + tid], l1 = mbuf[(2 + rr) * D4F__GTHREADS + tid];
            const float mx = fmaxf(m[rr], m1), mu = mx == -INFINITY ? 0.0f : mx;
            const float a0 = exp2f(m[rr] - mu), a1 = exp2f(m1 - mu);
            l[rr] = l[rr] * a0 + l1 * a1;
            m[rr] = mx;
#pragma unroll
            for (int sl = 0; sl < D4F__SLOTS; sl++)
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        o[sl][j][2 * rr + e] = o[sl][j][2 * rr + e] * a0 +
                                               mbuf[(4 + (sl * 8 + j) * 4 + 2 * rr + e) * D4F__GTHREADS + tid] * a1;
        }
    }

    /* lse without the sink, then the sink as the reference applies it: -inf changes nothing,
     * NaN poisons, +inf or an infinite lse (the empty set) gives 0. */
    const int head[2] = {hA, hB};
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        if (head[rr] >= hq)
            continue;
        const float lse_v =
            l[rr] == 0.0f ? -INFINITY : (m[rr] + log2f(l[rr])) * 0.6931471805599453f;
        const float f = d4f__sink_factor(sink, head[rr], lse_v);
        const float inv = l[rr] == 0.0f ? 0.0f : 1.0f / l[rr];
        uint16_t *dst = out + ((size_t)tok * hq + (size_t)head[rr]) * D4F__D;
#pragma unroll
        for (int sl = 0; sl < D4F__SLOTS; sl++)
#pragma unroll
            for (int js = 0; js < 4; js++) {
                const int fp8 = !(rope1 && sl == 1);
                float v[4]; /* d4f__pos with a constant dtype each: v stays in registers */
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float y = o[sl][2 * js + h][2 * rr + e] * inv * f;
                        if (fp8)
                            v[d4f__pos(1, h, e)] = y;
                        else
                            v[d4f__pos(0, h, e)] = y;
                    }
                const uint2 pk = {d4f__bf16x2(v[0], v[1]), d4f__bf16x2(v[2], v[3])};
                *(uint2 *)(dst + d4f__d4(fp8, fp8 ? 64 * (2 * warp + sl) : D4F__NOPE, js, t)) = pk;
            }
        if (warp == 0 && t == 0)
            lse[(size_t)head[rr] * tokens + tok] = lse_v;
    }
#else
    GPU_TRAP();
#endif // GPU_HAS_MMA_SYNC
}

/* -------------------------------------------------------------------- launcher */
/* ----------------------------------------------------------- wgmma kernel (sm_90a) */
/* dsv4_fast_wgmma_kernel: grid (head groups of 64, tokens), 256 threads: latent_wgmma.h's
 * engine (why and how there) over the token's entries -- the SWA scope's, then the extra
 * scope's, in tiles of 64 (entry k of a scope is used iff k < len and its index is not -1; an
 * index used twice counts twice). Each row is staged raw (576 data bytes, 8 scale bytes; unused
 * entries zero-filled and flagged unused), the thread that copied it decodes it into the bf16
 * tile: e4m3 codes times the tile's 2^(e8m0 - 127) by paged_kv.h's pkv_fp8x8_bf16 (exact: 4
 * significant bits); rope dims copied.
 * Then the sink once, as packed: out = O / l times d4f__sink_factor, lse without the sink. */
enum {
    D4W__PANELS = D4F__D / 64,                            /* K = V = 512 dims: 8 panels */
    D4W__RAW = LWG_BN * (D4F__DATA + D4F__SCALES) + LWG_BN, /* data, scales, used flags */
    D4W__SMEM = lwg_smem_bytes(D4W__PANELS, D4W__RAW),
};
static_assert(D4W__SMEM <= 227 * 1024, "one block's shared memory");
static_assert(D4W__RAW % 16 == 0, "16-byte aligned raw stages");

#if defined(GPU_HAS_WGMMA)
/* The engine's loader over one token's entries. Raw stage: data [64][576], scales [64][8],
 * used flags [64]. */
struct d4w__loader {
    static constexpr bool RAW = true;
    static constexpr int RAW_BYTES = D4W__RAW;
    const uint8_t *swa_cache, *ext_cache;
    const int32_t *swa_idx, *ext_idx; /* this token's rows */
    size_t swa_stride, ext_stride;
    int swa_bs, ext_bs, n_swa, n;
    uint8_t *gen;        /* the engine's shared base: generic ... */
    uint32_t base;       /* ... and shared-space address */
    uint32_t raw0;       /* raw stage 0 */
    int32_t nx_idx;      /* this thread's row's index in the next tile, read a tile ahead */

    __device__ int32_t index_of(int e) const
    {
        return e >= n ? -1 : e < n_swa ? swa_idx[e] : ext_idx[e - n_swa];
    }
    __device__ void start() { nx_idx = index_of((int)(threadIdx.x >> 2)); }
    __device__ void issue(int j, uint32_t dst)
    {
        const int r = threadIdx.x >> 2, sub = threadIdx.x & 3;
        const int e = j * LWG_BN + r;
        const int32_t idx = nx_idx;
        const bool ok = idx != -1, in_swa = e < n_swa;
        nx_idx = index_of(e + LWG_BN);
        const uint8_t *row = swa_cache, *sc = swa_cache;
        if (ok) {
            const int bs = in_swa ? swa_bs : ext_bs;
            const uint8_t *blk = (in_swa ? swa_cache : ext_cache) +
                                 (size_t)(idx / bs) * (in_swa ? swa_stride : ext_stride);
            row = blk + (size_t)(idx % bs) * D4F__DATA;
            sc = blk + (size_t)bs * D4F__DATA + (size_t)(idx % bs) * D4F__SCALES;
        }
#pragma unroll
        for (int u = 0; u < D4F__DATA / 16 / 4; u++) {
            const int ch = sub + 4 * u;
            gpu_cp_async16(dst + r * D4F__DATA + 16 * ch, row + (ok ? 16 * ch : 0), ok ? 16 : 0);
        }
        if (sub == 0) {
            d4f__cp8(dst + LWG_BN * D4F__DATA + r * D4F__SCALES, sc, ok ? 8 : 0);
            /* read after the next two barriers; its previous readers passed them */
            gen[dst - base + LWG_BN * (D4F__DATA + D4F__SCALES) + r] = (uint8_t)ok;
        }
    }
    __device__ void decode(int j, const uint8_t *raw, uint8_t *tile)
    {
        (void)j;
        const int r = threadIdx.x >> 2, sub = threadIdx.x & 3;
        const uint8_t *sc = raw + LWG_BN * D4F__DATA + r * D4F__SCALES;
#pragma unroll
        for (int u = 0; u < D4F__DATA / 16 / 4; u++) {
            const int ch = sub + 4 * u;
            const uint4 w = *(const uint4 *)(raw + r * D4F__DATA + 16 * ch);
            if (ch < D4F__NOPE / 16) { /* 16 fp8 dims of 64-dim tile ch / 4 */
                const uint32_t e8 = sc[ch / 4];
                const float mul = e8 == 255u ? __int_as_float(0x7FC00000)
                                             : e8 == 0u ? 0x1p-127f : __uint_as_float(e8 << 23);
                *(uint4 *)(tile + gpu_sw128_chunk(64, r, 2 * ch)) = pkv_fp8x8_bf16(w.x, w.y, mul);
                *(uint4 *)(tile + gpu_sw128_chunk(64, r, 2 * ch + 1)) = pkv_fp8x8_bf16(w.z, w.w, mul);
            } else { /* 8 bf16 rope dims */
                *(uint4 *)(tile + gpu_sw128_chunk(64, r, D4F__NOPE / 8 + (ch - D4F__NOPE / 16))) = w;
            }
        }
    }
    __device__ bool valid(int j, int c) const
    {
        return gen[raw0 - base + (j & 1) * lwg_raw_stride(RAW_BYTES) + LWG_BN * (D4F__DATA + D4F__SCALES) +
                   c] != 0;
    }
};
#endif // GPU_HAS_WGMMA

/* Grid (ceil(hq / 64), tokens), block LWG_THREADS, dynamic shared memory D4W__SMEM. */
__global__ void __launch_bounds__(LWG_THREADS, 1)
dsv4_fast_wgmma_kernel(const uint16_t *__restrict__ q,          /* q: [tokens, hq, 512] bf16 */
                       const uint8_t *__restrict__ swa_cache,   /* swa_cache: [Ns, stride(swa_bs)] */
                       const int32_t *__restrict__ swa_idx,     /* swa_idx: [tokens, swa_width] */
                       const int32_t *__restrict__ swa_len,     /* swa_len: [tokens] */
                       const uint8_t *__restrict__ ext_cache,   /* ext_cache: [Ne, stride(ext_bs)] */
                       const int32_t *__restrict__ ext_idx,     /* ext_idx: [tokens, ext_width] */
                       const int32_t *__restrict__ ext_len,     /* ext_len: [tokens] */
                       const float *__restrict__ sink,          /* sink: [hq], or NULL */
                       uint16_t *__restrict__ out,              /* out: [tokens, hq, 512] bf16 */
                       float *__restrict__ lse,                 /* lse: [hq, tokens] */
                       int tokens, int hq, int swa_bs, int swa_width, int ext_bs, int ext_width,
                       float scale)
{
#if defined(GPU_HAS_WGMMA)
    extern __shared__ __align__(16) uint8_t d4w__smem[];
    typedef d4w__loader L;
    const lwg_smem<D4W__PANELS, L> sm = lwg_smem_of<D4W__PANELS, L>(d4w__smem);
    const int tok = blockIdx.y, h0 = LWG_HG * (int)blockIdx.x;
    lwg_load_q(sm, q + ((size_t)tok * hq + (size_t)h0) * D4F__D, D4F__D, hq - h0);
    const int n_swa = swa_len[tok];
    L ld = {swa_cache, ext_cache, swa_idx + (size_t)tok * swa_width,
            ext_idx + (size_t)tok * ext_width, d4f__stride(swa_bs), d4f__stride(ext_bs), swa_bs,
            ext_bs, n_swa, n_swa + ext_len[tok], sm.gen, sm.base, sm.raw(0), 0};
    ld.start();
    float o[2][64], m[2], l[2];
    lwg_attend<D4W__PANELS>(ld, sm, (ld.n + LWG_BN - 1) / LWG_BN, scale * 1.4426950408889634f, o, m,
                            l);

    const int wg = threadIdx.x >> 7, i = threadIdx.x & 127, t = i & 3;
    const int wrow = 16 * (i >> 5) + ((i & 31) >> 2);
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int h = h0 + wrow + 8 * r;
        if (h >= hq)
            continue;
        const float lse_v = l[r] == 0.0f ? -INFINITY : (m[r] + log2f(l[r])) * 0.6931471805599453f;
        const float f = d4f__sink_factor(sink, h, lse_v);
        const float inv = l[r] == 0.0f ? 0.0f : f / l[r];
        uint16_t *dst = out + ((size_t)tok * hq + (size_t)h) * D4F__D + 256 * wg + 2 * t;
#pragma unroll
        for (int c = 0; c < 2; c++)
#pragma unroll
            for (int n = 0; n < 16; n++)
                *(uint32_t *)(dst + 128 * c + 8 * n) =
                    gpu_pack2<false>(o[c][4 * n + 2 * r] * inv, o[c][4 * n + 2 * r + 1] * inv);
        if (wg == 0 && t == 0)
            lse[(size_t)h * tokens + tok] = lse_v;
    }
#else
    (void)q, (void)swa_cache, (void)swa_idx, (void)swa_len, (void)ext_cache, (void)ext_idx;
    (void)ext_len, (void)sink, (void)out, (void)lse, (void)tokens, (void)hq, (void)swa_bs;
    (void)swa_width, (void)ext_bs, (void)ext_width, (void)scale;
    GPU_TRAP();
#endif // GPU_HAS_WGMMA
}

extern "C" const char *opt_dsv4_sparse_decode_packed_unsupported(int tokens, int hq, int cc_major)
{
#if defined(GPU_VENDOR_NVIDIA)
    if (cc_major < 8)
        return "packed is written with mma.sync (bf16), movmatrix and cp.async: NVIDIA sm_80 "
               "or newer";
    if (tokens > 65535)
        return "packed puts tokens on the grid's y dimension: at most 65535";
    (void)hq;
    return NULL;
#else
    (void)tokens, (void)hq, (void)cc_major;
    return "packed is written with NVIDIA PTX (mma.sync, movmatrix, cp.async); this backend has "
           "no such variant yet";
#endif // GPU_VENDOR_NVIDIA
}

extern "C" const char *opt_dsv4_sparse_decode_wgmma_unsupported(int tokens, int hq, int cc_major)
{
    const char *why = opt_wgmma_unsupported(cc_major);
    if (why)
        return why;
    if (tokens > 65535)
        return "wgmma puts tokens on the grid's y dimension: at most 65535";
    (void)hq;
    return NULL;
}

static int d4f__scope_ok(const opt_dsv4_scope *s)
{
    return s->block_size > 0 && s->width >= 0 && s->cache && s->len && (s->width == 0 || s->idx);
}

/* len[t] in [0, width] and every used index a slot inside its cache: device data, so the
 * launcher cannot check that. */
extern "C" int opt_dsv4_sparse_decode_packed(const opt_dsv4_args *a, void *stream)
{
    if (!a || a->tokens < 0 || a->tokens > 65535 || a->hq <= 0)
        return OPT_EINVAL;
    if (!(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->tokens == 0)
        return OPT_OK;
    if (!a->q || !a->out || !a->lse || !d4f__scope_ok(&a->swa) || !d4f__scope_ok(&a->extra))
        return OPT_EINVAL;
    GPU_CHECK(hipFuncSetAttribute((const void *)dsv4_fast_packed_kernel,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, D4F__SMEM));
    const dim3 grid((unsigned)((a->hq + D4F__HG - 1) / D4F__HG), (unsigned)a->tokens);
    dsv4_fast_packed_kernel<<<grid, D4F__THREADS, D4F__SMEM, (hipStream_t)stream>>>(
        (const uint16_t *)a->q, a->swa.cache, a->swa.idx, a->swa.len, a->extra.cache,
        a->extra.idx, a->extra.len, a->sink, (uint16_t *)a->out, a->lse, a->tokens, a->hq,
        a->swa.block_size, a->swa.width, a->extra.block_size, a->extra.width, a->scale);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

extern "C" int opt_dsv4_sparse_decode_wgmma(const opt_dsv4_args *a, void *stream)
{
    if (!a || a->tokens < 0 || a->tokens > 65535 || a->hq <= 0)
        return OPT_EINVAL;
    if (!(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->tokens == 0)
        return OPT_OK;
    if (!a->q || !a->out || !a->lse || !d4f__scope_ok(&a->swa) || !d4f__scope_ok(&a->extra))
        return OPT_EINVAL;
    GPU_CHECK(hipFuncSetAttribute((const void *)dsv4_fast_wgmma_kernel,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, D4W__SMEM));
    const dim3 grid((unsigned)((a->hq + LWG_HG - 1) / LWG_HG), (unsigned)a->tokens);
    dsv4_fast_wgmma_kernel<<<grid, LWG_THREADS, D4W__SMEM, (hipStream_t)stream>>>(
        (const uint16_t *)a->q, a->swa.cache, a->swa.idx, a->swa.len, a->extra.cache,
        a->extra.idx, a->extra.len, a->sink, (uint16_t *)a->out, a->lse, a->tokens, a->hq,
        a->swa.block_size, a->swa.width, a->extra.block_size, a->extra.width, a->scale);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}
