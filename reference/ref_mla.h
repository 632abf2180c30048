/* ref_mla.h - libattn_ref, the MLA family: DeepSeek V3/R1 absorbed MLA decode over a paged
 * latent cache (SPEC section 8), non-absorbed MLA prefill with W_kvb decompression and chunked
 * context (section 9), and DeepSeek V4 sparse decode over the 584-byte blocked FP8 latent cache
 * (section 10), with that format's reference quantizer and exact decoder.
 *
 * Same rules as ref.h: every path is built on ref_attn (f64 accumulation, exact decoding of the
 * storage dtypes), no printing, REF_OK or a negative REF_E* code. Cache offsets are 64-bit.
 *
 * Every path here has one latent KV head read by all query heads (MQA), so the query heads of
 * one token are handed to ref_attn as the rows of one query block: that turns Hq matrix-vector
 * products into one matrix product per key tile, and is the same math.
 *
 * REF_EMULATE models a kernel's rounding points: each K/V value is rounded to bf16 (the MMA
 * input dtype) before the products, and P to p_dtype before P.V. For a bf16 cache and for the
 * DSv4 format (fp8 * 2^k is exact in bf16) the first rounding changes nothing.
 */
#ifndef ATTN_REF_MLA_H
#define ATTN_REF_MLA_H

#include "ref.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------ conversions for hot loops
 * ref.h's conversions are written to be checked by reading and cost tens of ns per value;
 * these return the same results (test_mla compares them on every bf16 and fp8 code, on
 * sweeps of f32 bit patterns, and at every rounding tie) for the loops that touch every
 * element of a multi-GB latent cache. NaN in gives NaN out (fp8: S.1111.111). */
float ref_fast_bf16_to_f32(uint16_t b);
float ref_fast_fp8e4m3_to_f32(uint8_t b);
uint16_t ref_fast_f32_to_bf16(float f);
uint8_t ref_fast_f32_to_fp8e4m3(float f);

/* DeepSeek V3/R1 MLA geometry (fixed by the model, so not parameters). */
enum {
    REF_MLA_LAT = 512,  /* latent c_kv */
    REF_MLA_ROPE = 64,  /* k_pe / q_pe */
    REF_MLA_ROW = 576,  /* one latent cache row: [c_kv 512 | k_pe 64]; absorbed Dqk */
    REF_MLA_NOPE = 128, /* per-head q_nope / k_nope */
    REF_MLA_QK = 192,   /* non-absorbed Dqk = [nope 128 | rope 64] */
    REF_MLA_V = 128,    /* non-absorbed Dv */
    REF_MLA_WROWS = 256 /* rows of W_kvb per head: W_UK_h (128) then W_UV_h (128) */
};

/* The DeepSeek V3/R1 softmax scale: 192^-0.5 * mscale^2, mscale = 0.1 * ln(40) + 1. */
double ref_mla_default_scale(void);

/* A paged latent cache [num_blocks, block_size, 576]: token t of a sequence with block-table
 * row bt is row bt[t / bs] * bs + t % bs. Value = element * k_scale for fp8e4m3; k_scale is
 * ignored (read as 1) for other dtypes. */
typedef struct ref_mla_cache {
    ref_dtype dtype; /* bf16, fp8e4m3 (f64 and f32 also read, for tests) */
    const void *data;
    int64_t num_blocks;
    int block_size;
    double k_scale;
} ref_mla_cache;

/* ------------------------------------------------------------ SPEC section 8 */
typedef struct ref_mla_decode_args {
    int batch, hq;
    ref_dtype q_dtype;          /* any float dtype (bf16 from the harness; f64 in tests) */
    const void *q;              /* [batch, hq, 576] = [q_lat 512 | q_pe 64] */
    ref_mla_cache cache;
    const int32_t *block_table; /* [batch, max_blocks] */
    int max_blocks;
    const int32_t *seq_lens;    /* [batch], >= 0; 0 gives out = 0, lse = -inf */
    double scale;
    ref_mode mode;
    ref_dtype p_dtype; /* REF_EMULATE: P rounded to this before P.V */
} ref_mla_decode_args;
/* Scores over all 576 dims, value = the first 512 dims of the same rows.
 *   out: [batch, hq, 512] f64   lse: [hq, batch] f64
 * REF_ERANGE for a block id outside the pool, REF_ESHAPE for a length the table cannot hold. */
int ref_mla_decode(const ref_mla_decode_args *a, double *out, double *lse);

/* ------------------------------------------------------------ SPEC section 9 */
typedef struct ref_mla_prefill_args {
    int batch, hq;
    ref_dtype dtype;             /* of q, c_kv, k_pe, w_kvb (bf16 from the harness) */
    const void *q;               /* [Tq, hq, 192] = [q_nope 128 | q_pe 64] */
    const void *c_kv;            /* [Tq, 512] latent of the new tokens */
    const void *k_pe;            /* [Tq, 64] */
    const void *w_kvb;           /* [hq * 256, 512]: W_UK_h = rows [256h, 256h + 128),
                                    W_UV_h = rows [256h + 128, 256h + 256) */
    const int32_t *cu_q;         /* [batch + 1] new tokens per request */
    const int32_t *context_lens; /* [batch] tokens already in the latent cache; NULL = none */
    ref_mla_cache cache;         /* holds the context */
    const int32_t *block_table;  /* [batch, max_blocks] */
    int max_blocks;
    /* The dtype the decompressed k_nope and v -- and k_pe beside k_nope: the whole K row -- are
     * stored in before attention. REF_BF16 is the
     * path's contract: SPEC section 9 hands the decompressed K/V to section 4, whose inputs
     * are bf16, as a kernel's up-projection GEMM writes them. REF_F64 keeps them exact (the
     * absorption identity needs that). */
    ref_dtype kv_round;
    double scale;
    ref_mode mode;
    ref_dtype p_dtype;
} ref_mla_prefill_args;
/* Ground truth: for each request, causal (bottom-right) attention of its new queries over
 * concat(context, new), K and V decompressed per head from the latent rows.
 *   out: [Tq, hq, 128] f64   lse: [hq, Tq] f64 */
int ref_mla_prefill(const ref_mla_prefill_args *a, double *out, double *lse);
/* The algorithm a GPU path runs (SPEC sections 9 and 6): causal attention over the new keys,
 * then the context in chunks of at most chunk_tokens tokens across the batch (the contexts
 * laid end to end in request order and cut every chunk_tokens tokens), each chunk gathered
 * from the latent cache, decompressed, attended without a mask and merged with the section 0
 * merge. partial_dtype: REF_F64 keeps every partial (out, lse) in f64; bf16 rounds each
 * partial out to it and its lse to f32 before and after each merge, as a pipeline of varlen
 * attention and merge_attn_states kernels stores them (ref_extend_chunked does the same).
 * Same shapes as ref_mla_prefill. */
int ref_mla_prefill_chunked(const ref_mla_prefill_args *a, int chunk_tokens,
                            ref_dtype partial_dtype, double *out, double *lse);

/* The absorption of SPEC section 9, for its identity test. Every value in f64.
 *   q: [n, hq, 192] in dtype  w_kvb: [hq * 256, 512] in w_dtype  q_abs: [n, hq, 576]
 * q_abs = [W_UK_h^T q_nope_h | q_pe_h]. */
int ref_mla_absorb_q(int n, int hq, ref_dtype dtype, const void *q, ref_dtype w_dtype,
                     const void *w_kvb, double *q_abs);
/*   o_lat: [n, hq, 512] f64   out: [n, hq, 128] f64;   out_h = W_UV_h o_lat_h */
int ref_mla_unabsorb_out(int n, int hq, const double *o_lat, ref_dtype w_dtype, const void *w_kvb,
                         double *out);

/* ----------------------------------------------------------- SPEC section 10 */
/* The 584-byte blocked FP8 format. One block of bs tokens: bs * 576 data bytes (per token 448
 * fp8e4m3 for dims 0..447, 7 tiles of 64, then 64 bf16 rope dims), bs * 8 scale bytes (per
 * token 7 e8m0 tile scales and a 0 pad byte), then padding to the block stride. */
enum {
    REF_DSV4_D = 512,
    REF_DSV4_NOPE = 448,
    REF_DSV4_TILE = 64,
    REF_DSV4_TILES = 7,
    REF_DSV4_DATA = 576,  /* data bytes per token */
    REF_DSV4_SCALES = 8,  /* scale bytes per token */
    REF_DSV4_TOKEN = 584, /* bytes per token before block padding */
};
/* ceil(bs * 584 / 576) * 576 */
size_t ref_dsv4_block_stride(int block_size);
/* Byte offsets of slot `slot`'s data row and scale bytes from the start of the cache. */
size_t ref_dsv4_data_offset(int block_size, int64_t slot);
size_t ref_dsv4_scale_offset(int block_size, int64_t slot);
/* The writer's e8m0 byte for a tile whose largest |x| is amax: log2(s) + 127 with
 * s = 2^ceil(log2(max(amax, 1e-4) / 448)), computed exactly (no libm log2). */
uint8_t ref_dsv4_scale_byte(double amax);
/* The reference quantizer: write x (dims 0..511; dims 448.. are rounded to bf16, exact for
 * bf16 inputs) into slot `slot`: q = fp8e4m3(x / s_t) per tile (the quotient in f32, exact
 * for a power-of-two s), the scale bytes and the 0 pad byte. No other byte is touched. */
void ref_dsv4_quantize(const float *x, uint8_t *cache, int block_size, int64_t slot);
/* The exact decoder: x[d] = fp8(d) * 2^(byte[d / 64] - 127) for d < 448, else bf16(d).
 *   x: [512] f64 */
void ref_dsv4_dequantize(const uint8_t *cache, int block_size, int64_t slot, double *x);

/* One scope of a sparse decode: a cache in the format above and, per token, an index row of
 * flat slots. Entry k of token t is used iff k < len[t] and idx[t][k] != -1. */
typedef struct ref_dsv4_scope {
    const uint8_t *cache;
    int64_t num_blocks;
    int block_size;
    const int32_t *idx; /* [tokens, width] */
    const int32_t *len; /* [tokens], 0 <= len <= width */
    int width;
} ref_dsv4_scope;

typedef struct ref_dsv4_args {
    int tokens, hq;
    ref_dtype q_dtype;     /* any float dtype (bf16 from the harness) */
    const void *q;         /* [tokens, hq, 512] */
    ref_dsv4_scope swa, extra;
    const float *sink;     /* [hq] extra logit with a zero value (+-inf allowed); NULL = none */
    double scale;
    ref_mode mode;
    ref_dtype p_dtype;
} ref_dsv4_args;
/* One softmax per (token, head) over the dequantized rows of both scopes' used entries (a
 * duplicate counts as often as it appears), V = K (all 512 dims), then the sink once.
 *   out: [tokens, hq, 512] f64   lse: [hq, tokens] f64, without the sink; -inf when no entry
 * REF_ERANGE for a used index outside [0, num_blocks * bs) (or below -1), REF_ESHAPE for a
 * length outside [0, width]. */
int ref_dsv4_sparse_decode(const ref_dsv4_args *a, double *out, double *lse);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_REF_MLA_H */
