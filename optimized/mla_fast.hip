/* mla_fast.hip - SPEC section 8, absorbed MLA decode on the GPU, `split_kv` variant (issue 5).
 * NVIDIA only (GPU_HAS_MMA_SYNC): written with inline PTX mma.sync, movmatrix and cp.async;
 * elsewhere the kernels trap and opt_mla_decode_split_kv_unsupported() says why.
 *
 * Why the design: with 16 query heads a latent row (576 dims) feeds 16 x 1088 multiply-adds,
 * about 30 FLOP per bf16 byte and 60 per fp8 byte; at 80% of an H200's read bandwidth that is
 * 105 (bf16) and 210 (fp8) TFLOP/s, well past the ~67 TFLOP/s of f32 CUDA cores. So the math
 * runs on the tensor cores (bf16 mma.sync, f32 accumulation) with one block per 16 heads: every
 * latent row is read from memory once per sequence, not once per head.
 *
 * mla_fast_split_kernel: grid (head groups of 16, nblk), 4 warps. The batch's keys, laid end to
 *   end (sequence b at cu[b] .. cu[b] + len_b), are cut into nblk equal ranges, one per block
 *   row, so every block streams the same number of rows whatever the lengths (ragged batches
 *   included); a range that spans sequences is processed as one segment per sequence. Rows
 *   arrive in stages through cp.async (16-byte copies, a block-table lookup per row, rows past
 *   the segment zero-filled), several stages in flight. Per sub-tile of 16 keys each warp
 *   multiplies the 16 heads' queries with its quarter of the 576 dims (latent dims 128w ..
 *   128w + 127 plus one 16-dim k-step of the rope) into partial logits, which meet in shared
 *   memory; warp w then sums the four partials of heads 4w .. 4w + 3 in a fixed order and runs
 *   their online softmax (f32, exp2 with log2(e) folded into the scale, the running max moved
 *   only when it grows by a factor above 2^8, so rescales are rare), and writes their
 *   bf16-rounded probabilities and rescale factors back; after a second barrier every warp
 *   multiplies all 16 heads' probabilities with the value dims it already loaded (movmatrix
 *   transposes the key fragments into value fragments). Splitting the softmax four ways
 *   instead of running all of it in every warp took a quarter of the kernel's instructions
 *   (the partial sums, max and exp of 16 x 16 logits per warp) off the fp8 path, whose row
 *   rate, not its bytes, sets its time. fp8 codes are dequantized in registers: on sm_89+ the
 *   hardware converts each pair to f16 exactly and the fp8 path multiplies in f16 (queries
 *   scaled per head into f16 range: MLF__HWF8); elsewhere bit moves make code * 2^-120 in bf16
 *   and one bf16 multiply by 2^120 makes the code exactly; k_scale is applied to the logits and
 *   the output. Each (block, sequence) pair writes an f32
 *   partial (out / l, lse) to the workspace at slot block + sequence (unique: the pairs form
 *   a staircase) -- or, when the block's range holds the whole sequence, the final row.
 * mla_fast_combine_kernel: one block per (head, sequence); a sequence whose keys span several
 *   ranges has its partials merged with SPEC section 0's merge (max lse, weights
 *   exp(lse_i - max)), out rounded to bf16, and the lse written. No key: out = 0, lse = -inf; a
 *   NaN partial lse poisons the row. A sequence inside one range was finished by its block.
 *
 * Fragment layout (PTX m16n8k16, lane = 4 g + t): A a0 = (row g, k 2t, 2t+1), a1 = (row g + 8,
 * same k), a2 = (row g, k 2t + 8, 2t + 9), a3 = (row g + 8, those k); B b0 = (k 2t, 2t+1; col
 * g), b1 = (k 2t + 8, 2t + 9; col g); C c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = row g + 8.
 * A dot product may visit its k in any order, so each lane's k-slots are mapped to dims it can
 * load with one 16-byte read: see mlf__d4 and mlf__pos.
 *
 * Every offset into the cache, q, out and the workspace is computed in 64 bits.
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
    MLF__HG = 16,                    /* query heads per block: the M of one mma tile */
    MLF__THREADS = 128,              /* 4 warps */
    MLF__WARPS = 4,
    MLF__SUB = 16,                   /* keys per sub-tile: two mma n-tiles of 8 */
    MLF__ROW = 576,                  /* latent row [c_kv 512 | k_pe 64] */
    MLF__LAT = 512,
    MLF__SLOTS = 2,                  /* 64-dim latent slots per warp (4 k-steps each) */
    MLF__CPT = 9,                    /* 16-byte copies per thread per staged row share */
    /* The block's exchange area: latent_owner.h's, then the per-warp query-row magnitudes
     * [warp][16] (fp8 via f16), in f32 / u32 units. */
    MLF__X_QMAX = LAT_OWN_FLOATS,
    MLF__SBUF = (MLF__X_QMAX + MLF__WARPS * MLF__HG) * 4, /* bytes */
    MLF__NBLK_MAX = 1024,            /* block rows: bounds the workspace */
    MLF__ALIGN = 256,
};

/* Per cache dtype: row bytes in memory and in shared memory (bf16 rows padded by 64 bytes so
 * that rows r and r + 1 fall in opposite halves of the 32 banks, which makes the 16-byte
 * fragment reads conflict-free; 576-byte fp8 rows already are), rows per stage and stages
 * (three: two in flight while one is read, and room for three blocks per multiprocessor, whose
 * warps hide each other's latency). Both give 9 copies of 16 bytes per thread per stage. */
template <int KV> struct mlf__kv;
template <> struct mlf__kv<OPT_FP8E4M3> {
    enum { FP8 = 1, ROW_BYTES = 576, SROW = 576, ROWS = 32, STAGES = 3 };
};
template <> struct mlf__kv<OPT_BF16> {
    enum { FP8 = 0, ROW_BYTES = 1152, SROW = 1216, ROWS = 16, STAGES = 3 };
};

template <int KV> static constexpr size_t mlf__smem_bytes()
{
    return (size_t)mlf__kv<KV>::STAGES * mlf__kv<KV>::ROWS * mlf__kv<KV>::SROW + MLF__SBUF;
}

static_assert(mlf__kv<OPT_FP8E4M3>::ROW_BYTES / 16 ==
                  MLF__CPT * (MLF__THREADS / mlf__kv<OPT_FP8E4M3>::ROWS) &&
              mlf__kv<OPT_BF16>::ROW_BYTES / 16 == MLF__CPT * (MLF__THREADS / mlf__kv<OPT_BF16>::ROWS),
              "every thread copies the same share of a stage");
static_assert(mlf__smem_bytes<OPT_FP8E4M3>() <= 75 * 1024 && mlf__smem_bytes<OPT_BF16>() <= 75 * 1024,
              "three blocks per multiprocessor");

/* fp8 with the hardware's e4m3 -> f16 conversion (GPU_HAS_CVT_E4M3, sm_89+): the codes become
 * f16 fragments exactly, one instruction per pair (NaN codes NaN), and the fp8 path multiplies
 * in f16: each query head's row is scaled by a power of two into f16's range
 * (num_f16_range_scale) and that row's logits divided by it; P is rounded to bf16 as
 * everywhere, then to f16 (exact from 2^-24 up; P <= 2^8). Without it: the bf16 bit moves. */
#if defined(GPU_HAS_CVT_E4M3)
#define MLF__HWF8 1
#else
#define MLF__HWF8 0
#endif // GPU_HAS_CVT_E4M3

#if defined(GPU_HAS_MMA_SYNC)
/* ------------------------------------------------------------ dims of a fragment */
/* A lane's fragments for k-step js of a 64-dim slot cover 4 dims, d4 .. d4 + 3: fp8 slots are
 * one 16-byte read of dims base + 16 t .. + 15 (k-step js: the js-th 4 of them); bf16 slots two
 * 16-byte reads, dims base + 8 t .. + 7 and base + 32 + 8 t .. + 7 (two k-steps each). */
static __device__ constexpr int mlf__d4(int fp8, int base, int js, int t)
{
    return fp8 ? base + 16 * t + 4 * js : base + 32 * (js >> 1) + 8 * t + 4 * (js & 1);
}

/* Which of d4 .. d4 + 3 is k-slot half h (b0 / b1), element e (low / high 16 bits): bf16
 * pairs are adjacent in memory; the fp8 bit moves below yield bytes 0, 2 and 1, 3. The output
 * n-tile made from half h by movmatrix has the same dims, so out uses the same map. */
static __device__ constexpr int mlf__pos(int fp8, int h, int e)
{
    return fp8 && !MLF__HWF8 ? h + 2 * e : 2 * h + e;
}

/* --------------------------------------------------------------- PTX primitives */
/* The warp's 8x8 b16 matrix (lane 4 g + t holds row g, cols 2t, 2t+1) transposed in place. */
static __device__ __forceinline__ uint32_t mlf__trans(uint32_t x)
{
    uint32_t d;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(x));
    return d;
}

/* 16 bytes global -> shared, asynchronously; bytes = 0 writes zeros and reads nothing. */
static __device__ __forceinline__ void mlf__cp16(uint32_t dst, const void *src, int bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(dst), "l"(src), "r"(bytes) : "memory");
}

static __device__ __forceinline__ void mlf__cp_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> static __device__ __forceinline__ void mlf__cp_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}

/* ------------------------------------------------------------ fp8 in registers */
#if !MLF__HWF8 /* the bf16 bit moves of fp8 codes (without the hardware conversion) */
/* a * b per bf16 half (the -0 addend keeps the product's sign of zero). */
static __device__ __forceinline__ uint32_t mlf__bf16x2_mul(uint32_t a, uint32_t b)
{
    uint32_t d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
    return d;
}

/* Four e4m3 codes (bytes x0..x3 of w) as bf16 bit patterns s | (code & 0x7F) << 4, which read
 * as code * 2^-120 (normal or subnormal alike): even = (x0, x2), odd = (x1, x3). */
static __device__ __forceinline__ void mlf__fp8x4(uint32_t w, uint32_t &even, uint32_t &odd)
{
    odd = (w & 0x80008000u) | ((w >> 4) & 0x07F007F0u);
    even = ((w << 8) & 0x80008000u) | ((w << 4) & 0x07F007F0u);
}

/* Nonzero in bit 7 of a byte iff that byte of w is the e4m3 NaN (S.1111.111). */
static __device__ __forceinline__ uint32_t mlf__fp8_nan(uint32_t w)
{
    return (w & 0x7F7F7F7Fu) + 0x01010101u;
}
#endif // !MLF__HWF8

enum : uint32_t {
    MLF__BF16X2_2P120 = 0x7B807B80u, /* 2^120 in both halves */
    MLF__BF16X2_NAN = 0x7FC07FC0u,
};

/* The 8 B fragments (4 k-steps, b0 b1 each) of one 64-dim slot of the row at rp; for fp8,
 * nan gains bit 7 of some byte when a code is NaN (mlf__fp8_nan). */
template <int KV>
static __device__ __forceinline__ void mlf__load_slot(const uint8_t *rp, int warp, int sl, int t,
                                                      uint32_t (&kb)[8], uint32_t &nan)
{
    if (mlf__kv<KV>::FP8) {
        const uint4 v = *(const uint4 *)(rp + 128 * warp + 64 * sl + 16 * t);
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#if MLF__HWF8
        (void)nan;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            kb[2 * j] = gpu_e4m3x2_to_f16x2(w[j]);
            kb[2 * j + 1] = gpu_e4m3x2_hi_to_f16x2(w[j]);
        }
#else
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t even, odd;
            mlf__fp8x4(w[j], even, odd);
            nan |= mlf__fp8_nan(w[j]);
            kb[2 * j] = mlf__bf16x2_mul(even, MLF__BF16X2_2P120);
            kb[2 * j + 1] = mlf__bf16x2_mul(odd, MLF__BF16X2_2P120);
        }
#endif // MLF__HWF8
    } else {
        const uint4 a = *(const uint4 *)(rp + 256 * warp + 128 * sl + 16 * t);
        const uint4 b = *(const uint4 *)(rp + 256 * warp + 128 * sl + 64 + 16 * t);
        kb[0] = a.x, kb[1] = a.y, kb[2] = a.z, kb[3] = a.w;
        kb[4] = b.x, kb[5] = b.y, kb[6] = b.z, kb[7] = b.w;
    }
}

/* The rope k-step of warp w: dims mlf__rope_d4(w, t) .. + 3. */
template <int KV>
static __device__ __forceinline__ void mlf__load_rope(const uint8_t *rp, int warp, int t,
                                                      uint32_t (&kr)[2], uint32_t &nan)
{
    if (mlf__kv<KV>::FP8) {
        const uint32_t w = *(const uint32_t *)(rp + MLF__LAT + 16 * t + 4 * warp);
#if MLF__HWF8
        (void)nan;
        kr[0] = gpu_e4m3x2_to_f16x2(w);
        kr[1] = gpu_e4m3x2_hi_to_f16x2(w);
#else
        uint32_t even, odd;
        mlf__fp8x4(w, even, odd);
        nan |= mlf__fp8_nan(w);
        kr[0] = mlf__bf16x2_mul(even, MLF__BF16X2_2P120);
        kr[1] = mlf__bf16x2_mul(odd, MLF__BF16X2_2P120);
#endif // MLF__HWF8
    } else {
        const uint2 v = *(const uint2 *)(rp + 2 * MLF__LAT + 64 * (warp >> 1) + 16 * t + 8 * (warp & 1));
        kr[0] = v.x, kr[1] = v.y;
    }
}
#endif // GPU_HAS_MMA_SYNC

/* ------------------------------------------------------------------ split kernel */
#if defined(GPU_HAS_MMA_SYNC)
/* ------------------------------------------------------------- segment results */
/* Where a segment's rows go: a segment that is its sequence's only one (it covers keys 0 ..
 * len - 1: `full`) writes the final row (out bf16 [batch, hq, 512], lse [hq, batch]), which the
 * combine then leaves alone; any other writes its f32 partial (out / l, lse) to slot `slot`. */
struct mlf__dst {
    float *part_o, *part_lse; /* [slots, hq, 512], [slots, hq] */
    uint16_t *out;
    float *lse;
    int batch;
};

/* v[0 .. N) as dims d .. d + N - 1 of head h's row (N = 2 or 4). */
template <int N>
static __device__ __forceinline__ void mlf__put(const mlf__dst &o, bool full, size_t slot, int b,
                                                int hq, int h, int d, const float (&v)[N])
{
    static_assert(N == 2 || N == 4, "pairs or quads");
    if (full) {
        uint16_t *p = o.out + ((size_t)b * hq + (size_t)h) * MLF__LAT + d;
        uint32_t w[N / 2];
#pragma unroll
        for (int k = 0; k < N / 2; k++)
            w[k] = (uint32_t)num_f32_to_bf16(v[2 * k]) | (uint32_t)num_f32_to_bf16(v[2 * k + 1]) << 16;
        if constexpr (N == 4)
            *(uint2 *)p = make_uint2(w[0], w[1]);
        else
            *(uint32_t *)p = w[0];
    } else {
        float *p = o.part_o + (slot * (size_t)hq + (size_t)h) * MLF__LAT + d;
        if constexpr (N == 4)
            *(float4 *)p = make_float4(v[0], v[1], v[2], v[3]);
        else
            *(float2 *)p = make_float2(v[0], v[1]);
    }
}

/* The row's LSE (natural log) from its running max m and sum l (log2 units). */
static __device__ __forceinline__ void mlf__put_lse(const mlf__dst &o, bool full, size_t slot, int b,
                                                    int hq, int h, float m, float l)
{
    const float v = l == 0.0f ? -INFINITY : (m + log2f(l)) * 0.6931471805599453f;
    if (full)
        o.lse[(size_t)h * o.batch + b] = v;
    else
        o.part_lse[slot * (size_t)hq + (size_t)h] = v;
}

/* Rope dims of warp w's k-step: the 64 rope dims are one fp8 slot (k-step w) or two bf16
 * chunks of 32 (chunk w / 2, k-step w % 2). */
static __device__ constexpr int mlf__rope_d4(int fp8, int warp, int t)
{
    return fp8 ? MLF__LAT + 16 * t + 4 * warp : MLF__LAT + 32 * (warp >> 1) + 8 * t + 4 * (warp & 1);
}

/* A (head pair) A fragment from 4 bf16 of row A and of row B at dims d4 .. d4 + 3. */
template <int FP8>
static __device__ __forceinline__ void mlf__afrag(uint2 ra, uint2 rb, uint32_t (&a)[4])
{
    const uint64_t x = (uint64_t)ra.x | (uint64_t)ra.y << 32, y = (uint64_t)rb.x | (uint64_t)rb.y << 32;
#define MLF__EL(v, h, e) ((uint32_t)((v) >> (16 * mlf__pos(FP8, h, e))) & 0xFFFFu)
    a[0] = MLF__EL(x, 0, 0) | MLF__EL(x, 0, 1) << 16;
    a[1] = MLF__EL(y, 0, 0) | MLF__EL(y, 0, 1) << 16;
    a[2] = MLF__EL(x, 1, 0) | MLF__EL(x, 1, 1) << 16;
    a[3] = MLF__EL(y, 1, 0) | MLF__EL(y, 1, 1) << 16;
#undef MLF__EL
}

/* One segment: keys k0 .. k1 - 1 of sequence b for heads 16 hg .. 16 hg + 15, into the
 * workspace's partial slot. Called by every thread of the block (it has barriers). */
template <int KV>
static __device__ __forceinline__ void
mlf__segment(const uint16_t *__restrict__ q,          /* q: [batch, hq, 576] bf16 */
             const uint8_t *__restrict__ cache,       /* cache: [N, bs, 576] KV */
             const int32_t *__restrict__ bt,          /* bt: [max_blocks], sequence b's row */
             const mlf__dst &dst, bool full,          /* mlf__put */
             uint8_t *kv_s, float *sbuf, int b, int hq, int hg, int bs, int k0, int k1,
             size_t slot, float ks, float sl2)
{
    typedef mlf__kv<KV> T;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int hA = MLF__HG * hg + g, hB = hA + 8;
    lat_owner ow = lat_own_init(warp, lane, sl2); /* this warp's heads' softmax */

    /* Query fragments of this warp's dims, rows hA and hB (zero past hq). */
    uint32_t qf[MLF__SLOTS][4][4], qr[4];
    {
        const uint16_t *qa = q + ((size_t)b * hq + hA) * MLF__ROW;
        const uint16_t *qb = q + ((size_t)b * hq + hB) * MLF__ROW;
        const uint2 zero = {0u, 0u};
#pragma unroll
        for (int sl = 0; sl < MLF__SLOTS; sl++)
#pragma unroll
            for (int js = 0; js < 4; js++) {
                const int d4 = mlf__d4(T::FP8, 128 * warp + 64 * sl, js, t);
                mlf__afrag<T::FP8>(hA < hq ? *(const uint2 *)(qa + d4) : zero,
                                   hB < hq ? *(const uint2 *)(qb + d4) : zero, qf[sl][js]);
            }
        const int d4 = mlf__rope_d4(T::FP8, warp, t);
        mlf__afrag<T::FP8>(hA < hq ? *(const uint2 *)(qa + d4) : zero,
                           hB < hq ? *(const uint2 *)(qb + d4) : zero, qr);
    }

    /* fp8 through f16 (MLF__HWF8): rows hA and hB scaled into f16's range by the powers of two
     * sA, sB of their largest magnitude over all 576 dims (four warps' shares, met in shared
     * memory; numerics.h num_f16_range_scale, as paged_mma.h does), their logits divided by them
     * (by the head's owner: ow.sl). Registers a0, a2 of a fragment are row hA, a1, a3 row hB. */
    constexpr bool F16M = T::FP8 && MLF__HWF8;
    if constexpr (F16M) {
        uint32_t ma = 0, mb = 0;
        auto upd = [](uint32_t &mx, uint32_t x) { mx = max(mx, max(x & 0x7FFFu, (x >> 16) & 0x7FFFu)); };
#pragma unroll
        for (int sl = 0; sl < MLF__SLOTS; sl++)
#pragma unroll
            for (int js = 0; js < 4; js++) {
                upd(ma, qf[sl][js][0]), upd(ma, qf[sl][js][2]);
                upd(mb, qf[sl][js][1]), upd(mb, qf[sl][js][3]);
            }
        upd(ma, qr[0]), upd(ma, qr[2]), upd(mb, qr[1]), upd(mb, qr[3]);
#pragma unroll
        for (int d = 1; d < 4; d *= 2) {
            ma = max(ma, (uint32_t)GPU_SHFL_XOR((int)ma, d));
            mb = max(mb, (uint32_t)GPU_SHFL_XOR((int)mb, d));
        }
        uint32_t *qmax = (uint32_t *)sbuf + MLF__X_QMAX; /* [warp][16 rows] */
        if (t == 0)
            qmax[MLF__HG * warp + g] = ma, qmax[MLF__HG * warp + g + 8] = mb;
        __syncthreads();
        uint32_t mo = 0; /* the owner's head */
#pragma unroll
        for (int w2 = 0; w2 < MLF__WARPS; w2++) {
            ma = max(ma, qmax[MLF__HG * w2 + g]), mb = max(mb, qmax[MLF__HG * w2 + g + 8]);
            mo = max(mo, qmax[MLF__HG * w2 + ow.head]);
        }
        const float sA = num_f16_range_scale(num_bf16_to_f32((uint16_t)ma));
        const float sB = num_f16_range_scale(num_bf16_to_f32((uint16_t)mb));
        ow.sl = sl2 / num_f16_range_scale(num_bf16_to_f32((uint16_t)mo));
#pragma unroll
        for (int sl = 0; sl < MLF__SLOTS; sl++)
#pragma unroll
            for (int js = 0; js < 4; js++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    qf[sl][js][r] = pkv_bf16x2_to_f16x2(qf[sl][js][r], r % 2 ? sB : sA);
#pragma unroll
        for (int r = 0; r < 4; r++)
            qr[r] = pkv_bf16x2_to_f16x2(qr[r], r % 2 ? sB : sA);
    }

    float o[MLF__SLOTS][8][4];
#pragma unroll
    for (int sl = 0; sl < MLF__SLOTS; sl++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                o[sl][j][r] = 0.0f;

    /* Loader role: thread tid copies 16-byte chunks lsub, lsub + TPR, ... of stage row lrow. */
    constexpr int TPR = MLF__THREADS / T::ROWS;
    const int lrow = tid / TPR, lsub = tid % TPR;
    const int nst = (k1 - k0 + T::ROWS - 1) / T::ROWS;
    const uint32_t kv_base = (uint32_t)__cvta_generic_to_shared(kv_s);
    int nx = 0;                                   /* next stage to issue */
    int nx_key = k0 + lrow;                       /* this thread's row of stage nx */
    int nx_bi = nx_key / bs, nx_off = nx_key % bs; /* its block-table entry and row in the block */
    const int step_bi = T::ROWS / bs, step_off = T::ROWS % bs; /* a stage further on */
    int32_t nx_blk = nx_key < k1 ? bt[nx_bi] : 0; /* loaded a stage ahead of its use */
    int nx_st = 0;                                /* stage nx's buffer: nx % STAGES */
    /* A row past the segment copies no byte (size 0 zero-fills) from row 0 of block 0, so one
     * base address with immediate offsets serves the whole row. */
    auto issue = [&]() {
        if (nx < nst) {
            const bool ok = nx_key < k1;
            const uint8_t *src = cache + ((size_t)(ok ? nx_blk : 0) * (size_t)bs + (size_t)(ok ? nx_off : 0)) *
                                             (size_t)T::ROW_BYTES + 16 * lsub;
            const uint32_t dst = kv_base + (uint32_t)((nx_st * T::ROWS + lrow) * T::SROW + 16 * lsub);
            const int bytes = ok ? 16 : 0;
#pragma unroll
            for (int i = 0; i < MLF__CPT; i++)
                mlf__cp16(dst + 16 * TPR * i, src + 16 * TPR * i, bytes);
        }
        mlf__cp_commit(); /* empty groups too: wait_group counts stay uniform */
        nx++;
        nx_st = nx_st == T::STAGES - 1 ? 0 : nx_st + 1;
        nx_key += T::ROWS;
        nx_bi += step_bi, nx_off += step_off;
        if (nx_off >= bs)
            nx_bi++, nx_off -= bs;
        nx_blk = nx < nst && nx_key < k1 ? bt[nx_bi] : 0;
    };

#pragma unroll
    for (int p = 0; p < T::STAGES - 1; p++)
        issue();

    for (int s = 0, s_st = 0; s < nst; s++, s_st = s_st == T::STAGES - 1 ? 0 : s_st + 1) {
        mlf__cp_wait<T::STAGES - 2>(); /* stage s has landed (this thread's copies) */
        __syncthreads();               /* everyone's copies; stage s - 1's buffer is free */
        issue();
        const uint8_t *stg = kv_s + (size_t)s_st * T::ROWS * T::SROW;

#pragma unroll
        for (int u = 0; u < T::ROWS / MLF__SUB; u++) {
            const int kbase = k0 + s * T::ROWS + u * MLF__SUB;

            /* Key fragments: n-tile i holds keys kbase + 8 i + g (one row per lane group). A NaN
             * code NaNs one fragment of its row: the row's logit is then NaN for every head
             * (SPEC: a NaN logit poisons its row), and so is every output dim through P. */
            uint32_t kb[2][MLF__SLOTS][8], kr[2][2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const uint8_t *rp = stg + (size_t)(u * MLF__SUB + 8 * i + g) * T::SROW;
                uint32_t nan = 0;
#pragma unroll
                for (int sl = 0; sl < MLF__SLOTS; sl++)
                    mlf__load_slot<KV>(rp, warp, sl, t, kb[i][sl], nan);
                mlf__load_rope<KV>(rp, warp, t, kr[i], nan);
                if (T::FP8 && (nan & 0x80808080u))
                    kb[i][0][0] = MLF__BF16X2_NAN;
            }

            /* This warp's partial logits over its 144 dims. fp8: two accumulator chains per
             * n-tile (slot 0 + rope, slot 1), five and four MMAs deep instead of nine, then
             * added (bf16 keeps one: its registers are the tighter). */
            float acc[2][2][4];
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    acc[i][0][r] = acc[i][1][r] = 0.0f;
#pragma unroll
            for (int js = 0; js < 4; js++)
#pragma unroll
                for (int sl = 0; sl < MLF__SLOTS; sl++)
#pragma unroll
                    for (int i = 0; i < 2; i++)
                        gpu_mma16816<F16M>(acc[i][T::FP8 ? sl : 0], qf[sl][js], kb[i][sl][2 * js],
                                           kb[i][sl][2 * js + 1]);
#pragma unroll
            for (int i = 0; i < 2; i++)
                gpu_mma16816<F16M>(acc[i][0], qr, kr[i][0], kr[i][1]);
            if (T::FP8)
#pragma unroll
                for (int i = 0; i < 2; i++)
#pragma unroll
                    for (int r = 0; r < 4; r++)
                        acc[i][0][r] += acc[i][1][r];

            /* The four warps' partials meet in shared memory; each warp finishes the softmax
             * of its four heads (latent_owner.h), and every warp reads back P and the rescale
             * factors of its rows. */
            const float acc_s[2][4] = {{acc[0][0][0], acc[0][0][1], acc[0][0][2], acc[0][0][3]},
                                       {acc[1][0][0], acc[1][0][1], acc[1][0][2], acc[1][0][3]}};
            lat_own_put_partials(sbuf, warp, lane, acc_s);
            __syncthreads(); /* every partial is in; the previous P and alphas were read */
            lat_own_softmax<F16M>(sbuf, ow, lane, [&](int e) {
                return kbase + ow.key + e < k1; /* keys past the segment weigh nothing */
            });
            __syncthreads(); /* every owner's P and alpha are in */

            /* Mostly alpha is 1 in the whole warp: skip the rescale. */
            float alA, alB;
            lat_own_alpha(sbuf, g, alA, alB);
            if (__any_sync(0xffffffffu, alA != 1.0f || alB != 1.0f)) {
#pragma unroll
                for (int sl = 0; sl < MLF__SLOTS; sl++)
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        o[sl][j][0] *= alA, o[sl][j][1] *= alA;
                        o[sl][j][2] *= alB, o[sl][j][3] *= alB;
                    }
            }

            /* P times V: the owners' P is the A fragment, the transposed key fragments the B
             * ones. */
            uint32_t pa[4];
            lat_own_p(sbuf, lane, pa);
#pragma unroll
            for (int sl = 0; sl < MLF__SLOTS; sl++)
#pragma unroll
                for (int j = 0; j < 8; j++)
                    gpu_mma16816<F16M>(o[sl][j], pa, mlf__trans(kb[0][sl][j]), mlf__trans(kb[1][sl][j]));
        }
    }

    /* The owners' row sums go to every warp; each owner writes its head's LSE (natural log). */
    lat_own_sum(ow);
    lat_own_put_ml(sbuf, ow, lane);
    if ((lane & 0x13) == 0 && MLF__HG * hg + ow.head < hq)
        mlf__put_lse(dst, full, slot, b, hq, MLF__HG * hg + ow.head, ow.m, ow.l);
    mlf__cp_wait<0>();
    __syncthreads(); /* the sums are in; the next segment refills the stages */

    /* Partial result: out / l (times k_scale). */
    float mr[2], lr[2];
    lat_own_ml(sbuf, g, mr, lr);
    (void)mr;
    const float inv[2] = {lr[0] == 0.0f ? 0.0f : ks / lr[0], lr[1] == 0.0f ? 0.0f : ks / lr[1]};
    const int head[2] = {hA, hB};
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        if (head[rr] >= hq)
            continue;
#pragma unroll
        for (int sl = 0; sl < MLF__SLOTS; sl++)
#pragma unroll
            for (int js = 0; js < 4; js++) {
                float v[4];
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        v[mlf__pos(T::FP8, h, e)] = o[sl][2 * js + h][2 * rr + e] * inv[rr];
                mlf__put(dst, full, slot, b, hq, head[rr], mlf__d4(T::FP8, 128 * warp + 64 * sl, js, t), v);
            }
    }
}
#endif // GPU_HAS_MMA_SYNC


/* --------------------------------------------------------- wgmma segment (sm_90a) */
/* The `wgmma` variant's segment: 64 query heads per block on latent_wgmma.h's engine (why and
 * how there), split_kv's key ranges, partials and combine around it. bf16 rows are copied
 * into the engine's SW128 key tiles as they are; fp8 rows are staged raw and decoded by the
 * thread that copied them (paged_kv.h's pkv_fp8x8_bf16, exact; NaN codes stay NaN); k_scale
 * goes on the logits and the output. */
template <int KV> static constexpr int mlw__raw_bytes()
{
    return mlf__kv<KV>::FP8 ? LWG_BN * MLF__ROW : 0;
}
template <int KV> static constexpr int mlw__smem_bytes()
{
    return lwg_smem_bytes(MLF__ROW / 64, mlw__raw_bytes<KV>());
}
static_assert(mlw__smem_bytes<OPT_BF16>() <= 227 * 1024 && mlw__smem_bytes<OPT_FP8E4M3>() <= 227 * 1024,
              "one block's shared memory");

#if defined(GPU_HAS_WGMMA)
/* The engine's loader over keys k0 .. k1 - 1 of one sequence's paged latent cache. */
template <int KV> struct mlw__loader {
    static constexpr bool RAW = mlf__kv<KV>::FP8;
    static constexpr int RAW_BYTES = mlw__raw_bytes<KV>();
    static constexpr int CH = mlf__kv<KV>::ROW_BYTES / 16; /* 16-byte chunks per row */
    const uint8_t *cache;
    const int32_t *bt;
    int bs, k0, k1;
    int32_t nx_blk; /* this thread's row's block of the next tile, read a tile ahead */

    __device__ void start()
    {
        const int key = k0 + (int)(threadIdx.x >> 2);
        nx_blk = key < k1 ? bt[key / bs] : 0;
    }
    __device__ void issue(int j, uint32_t dst)
    {
        const int r = threadIdx.x >> 2, sub = threadIdx.x & 3;
        const int key = k0 + j * LWG_BN + r;
        const bool ok = key < k1;
        const uint8_t *src = ok ? cache + ((size_t)nx_blk * (size_t)bs + (size_t)(key % bs)) *
                                              (size_t)mlf__kv<KV>::ROW_BYTES
                                : cache;
        nx_blk = key + LWG_BN < k1 ? bt[(key + LWG_BN) / bs] : 0;
#pragma unroll
        for (int u = 0; u < CH / 4; u++) {
            const int ch = sub + 4 * u;
            gpu_cp_async16(dst + (RAW ? r * MLF__ROW + 16 * ch : gpu_sw128_chunk(64, r, ch)),
                           src + (ok ? 16 * ch : 0), ok ? 16 : 0);
        }
    }
    __device__ void decode(int j, const uint8_t *raw, uint8_t *tile)
    {
        (void)j;
        const int r = threadIdx.x >> 2, sub = threadIdx.x & 3;
#pragma unroll
        for (int u = 0; u < CH / 4; u++) {
            const int ch = sub + 4 * u;
            const uint4 w = *(const uint4 *)(raw + r * MLF__ROW + 16 * ch);
            *(uint4 *)(tile + gpu_sw128_chunk(64, r, 2 * ch)) = pkv_fp8x8_bf16(w.x, w.y, 1.0f);
            *(uint4 *)(tile + gpu_sw128_chunk(64, r, 2 * ch + 1)) = pkv_fp8x8_bf16(w.z, w.w, 1.0f);
        }
    }
    __device__ bool valid(int j, int c) const { return k0 + j * LWG_BN + c < k1; }
};

/* One segment (keys k0 .. k1 - 1 of sequence b, heads 64 hg ..): the final rows or partial
 * slot `slot` (mlf__put). Called by every thread of the block (barriers). */
template <int KV>
static __device__ __forceinline__ void
mlw__segment(const uint16_t *__restrict__ q, const uint8_t *__restrict__ cache,
             const int32_t *__restrict__ bt, const mlf__dst &dst, bool full, uint8_t *smem,
             int b, int hq, int hg, int bs, int k0, int k1, size_t slot, float ks, float sl2)
{
    typedef mlw__loader<KV> L;
    const lwg_smem<MLF__ROW / 64, L> sm = lwg_smem_of<MLF__ROW / 64, L>(smem);
    const int h0 = LWG_HG * hg;
    lwg_load_q(sm, q + ((size_t)b * hq + (size_t)h0) * MLF__ROW, MLF__ROW, hq - h0);
    L ld = {cache, bt, bs, k0, k1, 0};
    ld.start();
    float o[2][64], m[2], l[2];
    lwg_attend<MLF__ROW / 64>(ld, sm, (k1 - k0 + LWG_BN - 1) / LWG_BN, sl2, o, m, l);

    const int wg = threadIdx.x >> 7, i = threadIdx.x & 127, t = i & 3;
    const int wrow = 16 * (i >> 5) + ((i & 31) >> 2);
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int h = h0 + wrow + 8 * r;
        if (h >= hq)
            continue;
        const float inv = l[r] == 0.0f ? 0.0f : ks / l[r];
#pragma unroll
        for (int c = 0; c < 2; c++)
#pragma unroll
            for (int n = 0; n < 16; n++) {
                const float v[2] = {o[c][4 * n + 2 * r] * inv, o[c][4 * n + 2 * r + 1] * inv};
                mlf__put(dst, full, slot, b, hq, h, 256 * wg + 128 * c + 8 * n + 2 * t, v);
            }
        if (wg == 0 && t == 0)
            mlf__put_lse(dst, full, slot, b, hq, h, m[r], l[r]);
    }
}
#endif // GPU_HAS_WGMMA

/* Grid (head groups, nblk). WG = 0 (split_kv): groups of 16 heads, block MLF__THREADS, dynamic
 * shared memory mlf__smem_bytes<KV>(); WG = 1 (wgmma): groups of 64, LWG_THREADS,
 * mlw__smem_bytes<KV>(). */
template <int KV, int WG>
__global__ void __launch_bounds__(WG ? LWG_THREADS : MLF__THREADS, WG ? 1 : 3)
mla_fast_split_kernel(const uint16_t *__restrict__ q,           /* q: [batch, hq, 576] bf16 */
                      const uint8_t *__restrict__ cache,        /* cache: [N, bs, 576] KV */
                      const float *__restrict__ k_scale,        /* k_scale: [1] (fp8 only) */
                      const int32_t *__restrict__ block_table,  /* block_table: [batch, max_blocks] */
                      const int32_t *__restrict__ seq_lens,     /* seq_lens: [batch] */
                      float *__restrict__ part_o,               /* part_o: [nblk + batch, hq, 512] */
                      float *__restrict__ part_lse,             /* part_lse: [nblk + batch, hq] */
                      long long *__restrict__ cu,               /* cu: [batch + 1] key offsets */
                      uint16_t *__restrict__ out,               /* out: [batch, hq, 512] bf16 */
                      float *__restrict__ lse,                  /* lse: [hq, batch] */
                      int batch, int hq, int block_size, int max_blocks, float scale)
{
#if defined(GPU_HAS_MMA_SYNC)
#if !defined(GPU_HAS_WGMMA)
    if (WG) {
        GPU_TRAP();
        return;
    }
#endif // GPU_HAS_WGMMA
    extern __shared__ __align__(16) uint8_t mlf__smem[];
    typedef mlf__kv<KV> T;
    uint8_t *kv_s = mlf__smem;
    float *sbuf = (float *)(mlf__smem + (size_t)T::STAGES * T::ROWS * T::SROW);
    const int lane = threadIdx.x & 31;
    const int nblk = (int)gridDim.y, blk = (int)blockIdx.y;
    const float ks = T::FP8 ? *k_scale : 1.0f;
    const float sl2 = scale * ks * 1.4426950408889634f; /* logit -> log2 units */

    /* Every warp scans the lengths itself (same values, so the block stays in step). */
    long long tot = 0;
    for (int b = lane; b < batch; b += 32)
        tot += seq_lens[b] > 0 ? seq_lens[b] : 0;
    for (int d = 16; d > 0; d /= 2)
        tot += __shfl_xor_sync(0xffffffffu, tot, d);
    const long long lo = (long long)blk * tot / nblk, hi = (long long)(blk + 1) * tot / nblk;
    const int cu_block = blockIdx.x == 0 && blockIdx.y == 0; /* also publishes cu */
    if (cu_block && threadIdx.x == 0)
        cu[batch] = tot;

    long long run = 0; /* key offset of sequence b0 */
    for (int b0 = 0; b0 < batch && (run < hi || cu_block); b0 += 32) {
        const int b = b0 + lane;
        const int v = b < batch && seq_lens[b] > 0 ? seq_lens[b] : 0;
        long long inc = v;
        for (int d = 1; d < 32; d *= 2) {
            const long long y = __shfl_up_sync(0xffffffffu, inc, d);
            if (lane >= d)
                inc += y;
        }
        const long long cub = run + inc - v;
        if (cu_block && threadIdx.x < 32 && b < batch)
            cu[b] = cub;
        unsigned ov = __ballot_sync(0xffffffffu, v > 0 && cub < hi && cub + v > lo);
        while (ov) {
            const int j = __ffs(ov) - 1;
            ov &= ov - 1;
            const long long cj = __shfl_sync(0xffffffffu, cub, j);
            const int lj = __shfl_sync(0xffffffffu, v, j);
            const int k0 = (int)((lo > cj ? lo : cj) - cj);
            const int k1 = (int)((hi < cj + lj ? hi : cj + lj) - cj);
            const int32_t *bt = block_table + (size_t)(b0 + j) * (size_t)max_blocks;
            const size_t slot = (size_t)blk + (size_t)(b0 + j);
            const mlf__dst dst = {part_o, part_lse, out, lse, batch};
            const bool full = k0 == 0 && k1 == lj; /* the sequence's only segment */
#if defined(GPU_HAS_WGMMA)
            if constexpr (WG != 0) {
                mlw__segment<KV>(q, cache, bt, dst, full, mlf__smem, b0 + j, hq, (int)blockIdx.x,
                                 block_size, k0, k1, slot, ks, sl2);
                continue;
            }
#endif // GPU_HAS_WGMMA
            mlf__segment<KV>(q, cache, bt, dst, full, kv_s, sbuf, b0 + j, hq,
                             (int)blockIdx.x, block_size, k0, k1, slot, ks, sl2);
        }
        run += __shfl_sync(0xffffffffu, inc, 31);
    }
#else
    GPU_TRAP();
#endif // GPU_HAS_MMA_SYNC
}

/* ---------------------------------------------------------------- combine kernel */
/* Grid (hq, batch), block MLF__THREADS: 4 latent dims per thread. */
__global__ void __launch_bounds__(MLF__THREADS)
mla_fast_combine_kernel(const float *__restrict__ part_o,      /* part_o: [nblk + batch, hq, 512] */
                        const float *__restrict__ part_lse,    /* part_lse: [nblk + batch, hq] */
                        const long long *__restrict__ cu,      /* cu: [batch + 1] */
                        const int32_t *__restrict__ seq_lens,  /* seq_lens: [batch] */
                        uint16_t *__restrict__ out,            /* out: [batch, hq, 512] bf16 */
                        float *__restrict__ lse,               /* lse: [hq, batch] */
                        int batch, int hq, int nblk)
{
    const int h = blockIdx.x, b = blockIdx.y, d0 = 4 * threadIdx.x;
    const long long len = seq_lens[b] > 0 ? seq_lens[b] : 0, tot = cu[batch], cub = cu[b];
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, lse_v = -INFINITY;
    if (len > 0) {
        /* The blocks whose key ranges hold keys cub and cub + len - 1, and every one between:
         * block i covers [i tot / nblk, (i + 1) tot / nblk). */
        const long long i0 = ((cub + 1) * nblk - 1) / tot, i1 = ((cub + len) * nblk - 1) / tot;
        if (i0 == i1)
            return; /* one block's range holds the whole sequence: its segment wrote the row */
        float mx = -INFINITY;
        int nan = 0;
        for (long long i = i0; i <= i1; i++) {
            const float v = part_lse[(size_t)(i + b) * (size_t)hq + (size_t)h];
            nan |= isnan(v);
            mx = fmaxf(mx, v);
        }
        if (nan) {
            acc[0] = acc[1] = acc[2] = acc[3] = lse_v = NAN;
        } else if (mx != -INFINITY) {
            float den = 0.0f;
            for (long long i = i0; i <= i1; i++) {
                const size_t s = (size_t)(i + b) * (size_t)hq + (size_t)h;
                const float w = expf(part_lse[s] - mx);
                const float4 x = *(const float4 *)(part_o + s * MLF__LAT + d0);
                den += w;
                acc[0] += w * x.x, acc[1] += w * x.y, acc[2] += w * x.z, acc[3] += w * x.w;
            }
#pragma unroll
            for (int r = 0; r < 4; r++)
                acc[r] /= den;
            lse_v = mx + logf(den);
        }
    }
    uint16_t *dst = out + ((size_t)b * hq + h) * MLF__LAT + d0;
#pragma unroll
    for (int r = 0; r < 4; r++)
        dst[r] = num_f32_to_bf16(acc[r]);
    if (threadIdx.x == 0)
        lse[(size_t)h * batch + b] = lse_v;
}

/* --------------------------------------------------------------------- launcher */
/* The workspace: per partial slot (nblk + batch of them) out [hq, 512] f32 and lse [hq] f32,
 * then the key offsets cu [batch + 1] i64; each segment MLF__ALIGN-aligned. */
typedef struct mlf__ws {
    float *part_o, *part_lse;
    long long *cu;
    size_t bytes;
} mlf__ws;

static size_t mlf__align(size_t n)
{
    return (n + MLF__ALIGN - 1) / MLF__ALIGN * MLF__ALIGN;
}

static mlf__ws mlf__ws_layout(void *base, int batch, int hq, int nblk)
{
    char *p = (char *)base;
    const size_t slots = (size_t)nblk + (size_t)batch;
    mlf__ws w;
    size_t off = 0;
    w.part_o = (float *)(p + off);
    off += mlf__align(slots * (size_t)hq * MLF__LAT * sizeof(float));
    w.part_lse = (float *)(p + off);
    off += mlf__align(slots * (size_t)hq * sizeof(float));
    w.cu = (long long *)(p + off);
    off += mlf__align(((size_t)batch + 1) * sizeof(long long));
    w.bytes = off;
    return w;
}

/* The two variants' shapes: heads per block, threads, blocks per multiprocessor. */
typedef struct mlf__shape {
    int hg, threads, per_sm;
} mlf__shape;
static const mlf__shape MLF__SPLIT = {MLF__HG, MLF__THREADS, 3}, MLF__WGMMA = {LWG_HG, LWG_THREADS, 1};

/* Block rows of the key space. When the batch's (sequence, head group) pairs fill 3/4 to all of
 * a wave at k sequences per block row (k dividing the batch), batch / k rows: equal lengths then
 * give every row k whole sequences, whose rows are written final with no partial and no
 * combine (and ragged lengths still get equal key ranges). Otherwise head groups x rows fill
 * `per_sm` blocks per multiprocessor (the kernel's occupancy) with equal ranges, at most
 * MLF__NBLK_MAX / groups rows. */
static int mlf__nblk(int batch, int hq, mlf__shape sh, int multiprocessors)
{
    const int groups = (hq + sh.hg - 1) / sh.hg, cap = MLF__NBLK_MAX / groups;
    const int wave = sh.per_sm * multiprocessors;
    if (batch > 0) {
        const long long k = ((long long)batch * groups + wave - 1) / wave;
        const long long rows = batch / k;
        if (batch % k == 0 && 4 * rows * groups >= 3LL * wave)
            return (int)rows;
    }
    const int want = wave / groups;
    return want < 1 ? 1 : want > cap ? (cap < 1 ? 1 : cap) : want;
}

/* Workspace for any device: at most max(MLF__NBLK_MAX / groups, batch) block rows. */
static size_t mlf__workspace(int batch, int hq, mlf__shape sh)
{
    if (batch < 0 || hq <= 0)
        return 0;
    const int by_sms = mlf__nblk(0, hq, sh, MLF__NBLK_MAX); /* no batch: the SM-count rule */
    return mlf__ws_layout(NULL, batch, hq, by_sms > batch ? by_sms : batch).bytes;
}

extern "C" size_t opt_mla_decode_split_kv_workspace(int batch, int hq)
{
    return mlf__workspace(batch, hq, MLF__SPLIT);
}

extern "C" size_t opt_mla_decode_wgmma_workspace(int batch, int hq)
{
    return mlf__workspace(batch, hq, MLF__WGMMA);
}

extern "C" const char *opt_mla_decode_split_kv_unsupported(int batch, int hq, int cc_major)
{
#if defined(GPU_VENDOR_NVIDIA)
    if (cc_major < 8)
        return "split_kv is written with mma.sync (bf16), movmatrix and cp.async: NVIDIA sm_80 "
               "or newer";
    if (batch > 65535 || hq > 65535)
        return "split_kv's combine grid is (heads, sequences): at most 65535 sequences and heads";
    return NULL;
#else
    (void)batch, (void)hq, (void)cc_major;
    return "split_kv is written with NVIDIA PTX (mma.sync, movmatrix, cp.async); this backend "
           "has no such variant yet";
#endif // GPU_VENDOR_NVIDIA
}

extern "C" const char *opt_mla_decode_wgmma_unsupported(int batch, int hq, int cc_major)
{
    const char *why = opt_wgmma_unsupported(cc_major);
    if (why)
        return why;
    if (batch > 65535 || hq > 65535)
        return "wgmma's combine grid is (heads, sequences): at most 65535 sequences and heads";
    return NULL;
}

template <int KV, int WG>
static int mlf__launch(const opt_mla_decode_args *a, const mlf__ws *w, int nblk, hipStream_t stream)
{
    const mlf__shape sh = WG ? MLF__WGMMA : MLF__SPLIT;
    const int bytes = WG ? mlw__smem_bytes<KV>() : (int)mlf__smem_bytes<KV>();
    GPU_CHECK(hipFuncSetAttribute((const void *)mla_fast_split_kernel<KV, WG>,
                                  hipFuncAttributeMaxDynamicSharedMemorySize, bytes));
    const dim3 grid((unsigned)((a->hq + sh.hg - 1) / sh.hg), (unsigned)nblk);
    mla_fast_split_kernel<KV, WG><<<grid, sh.threads, bytes, stream>>>(
        (const uint16_t *)a->q, (const uint8_t *)a->cache.data, a->cache.k_scale, a->block_table,
        a->seq_lens, w->part_o, w->part_lse, w->cu, (uint16_t *)a->out, a->lse, a->batch, a->hq,
        a->cache.block_size, a->max_blocks, a->scale);
    GPU_CHECK(hipGetLastError());
    const dim3 cgrid((unsigned)a->hq, (unsigned)a->batch);
    mla_fast_combine_kernel<<<cgrid, MLF__THREADS, 0, stream>>>(
        w->part_o, w->part_lse, w->cu, a->seq_lens, (uint16_t *)a->out, a->lse, a->batch, a->hq,
        nblk);
    GPU_CHECK(hipGetLastError());
    return OPT_OK;
}

/* seq_lens[b] <= max_blocks * block_size and every used block id inside the pool: device data,
 * so the launcher cannot check that. */
static int mlf__run(const opt_mla_decode_args *a, void *workspace, size_t workspace_bytes,
                    void *stream, int wg)
{
    if (!a || a->batch < 0 || a->batch > 65535 || a->hq <= 0 || a->hq > 65535 || a->max_blocks < 0)
        return OPT_EINVAL;
    if (!(a->scale >= -FLT_MAX && a->scale <= FLT_MAX))
        return OPT_EINVAL;
    if (a->batch == 0)
        return OPT_OK;
    if (!a->q || !a->block_table || !a->seq_lens || !a->out || !a->lse || !workspace ||
        !a->cache.data || a->cache.block_size <= 0)
        return OPT_EINVAL;
    if (a->cache.dtype != OPT_BF16 && !(a->cache.dtype == OPT_FP8E4M3 && a->cache.k_scale))
        return OPT_EINVAL;
    int dev = 0, sms = 0;
    GPU_CHECK(hipGetDevice(&dev));
    GPU_CHECK(hipDeviceGetAttribute(&sms, hipDeviceAttributeMultiprocessorCount, dev));
    const int nblk = mlf__nblk(a->batch, a->hq, wg ? MLF__WGMMA : MLF__SPLIT, sms);
    const mlf__ws w = mlf__ws_layout(workspace, a->batch, a->hq, nblk);
    if (workspace_bytes < w.bytes)
        return OPT_EINVAL;
    const hipStream_t s = (hipStream_t)stream;
    if (a->cache.dtype == OPT_FP8E4M3)
        return wg ? mlf__launch<OPT_FP8E4M3, 1>(a, &w, nblk, s) : mlf__launch<OPT_FP8E4M3, 0>(a, &w, nblk, s);
    return wg ? mlf__launch<OPT_BF16, 1>(a, &w, nblk, s) : mlf__launch<OPT_BF16, 0>(a, &w, nblk, s);
}

extern "C" int opt_mla_decode_split_kv(const opt_mla_decode_args *a, void *workspace,
                                       size_t workspace_bytes, void *stream)
{
    return mlf__run(a, workspace, workspace_bytes, stream, 0);
}

extern "C" int opt_mla_decode_wgmma(const opt_mla_decode_args *a, void *workspace,
                                    size_t workspace_bytes, void *stream)
{
    return mlf__run(a, workspace, workspace_bytes, stream, 1);
}
