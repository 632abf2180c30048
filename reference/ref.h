/* ref.h - libattn_ref: the numerical contract of every attention path (docs: SPEC.md).
 *
 * Host-only C11 on OpenBLAS. The reference is written to be obviously correct, not clever:
 * every accumulation is in f64, narrow storage types are decoded exactly, and the only
 * speed tricks are BLAS dgemm on tiles and OpenMP threads over independent (head, tile)
 * work items. It knows nothing of the harness: no printing, no exit(); every function
 * returns REF_OK (0) or a negative REF_E* code (ref_strerror() names it).
 *
 * Sections: error codes; dtypes and conversions; counter-based RNG; the attention core;
 * the paths (one function per SPEC section).
 */
#ifndef ATTN_REF_H
#define ATTN_REF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- error codes */
#define REF_ERRORS(X)                                                        \
    X(REF_OK, 0, "ok")                                                       \
    X(REF_EINVAL, -1, "invalid argument")                                    \
    X(REF_ENOMEM, -2, "out of memory")                                       \
    X(REF_ESHAPE, -3, "inconsistent shapes or lengths")                      \
    X(REF_ERANGE, -4, "index out of range")                                  \
    X(REF_EDTYPE, -5, "dtype not supported here")

enum {
#define REF__ENUM(name, code, text) name = code,
    REF_ERRORS(REF__ENUM)
#undef REF__ENUM
};
const char *ref_strerror(int err);

/* ------------------------------------------------------- dtypes and conversions
 * Storage dtypes of SPEC.md section 0. Every narrow -> float conversion is exact;
 * float -> narrow rounds to nearest even. fp8e4m3 is OCP e4m3fn: saturates to +-448,
 * has no infinities, NaN = S.1111.111. e8m0 is 2^(b-127), 0xFF = NaN. */
typedef enum ref_dtype {
    REF_F32,
    REF_F64,
    REF_BF16,
    REF_F16,
    REF_FP8E4M3,
    REF_E8M0,
    REF_I32,
    REF_I64,
    REF_U8, /* raw bytes (packed formats such as the DSv4 584-byte cache) */
    REF_DTYPE_COUNT
} ref_dtype;

size_t ref_dtype_size(ref_dtype t);
const char *ref_dtype_name(ref_dtype t);         /* "bf16", ...; "?" if unknown */
int ref_dtype_from_name(const char *s, ref_dtype *out); /* REF_EINVAL if unknown */
int ref_dtype_is_float(ref_dtype t);             /* f32 f64 bf16 f16 fp8e4m3 e8m0 */

float ref_bf16_to_f32(uint16_t b);
uint16_t ref_f32_to_bf16(float f);
float ref_f16_to_f32(uint16_t h);
uint16_t ref_f32_to_f16(float f);
float ref_fp8e4m3_to_f32(uint8_t b);
uint8_t ref_f32_to_fp8e4m3(float f);
double ref_e8m0_to_f64(uint8_t b);

/* Element i of a buffer in dtype t, as f64 (exact for every dtype but i64 > 2^53). */
double ref_load(ref_dtype t, const void *base, size_t i);
/* Store v into element i: f64 -> f32 rounding first for the narrow float types, exactly as a
 * kernel that computes in f32 and rounds to storage would; integers round to nearest. */
void ref_store(ref_dtype t, void *base, size_t i, double v);
/* Round v through dtype t and back (what ref_store then ref_load gives). */
double ref_round_to(ref_dtype t, double v);

/* ------------------------------------------------------------ counter-based RNG
 * A pure function of (key, counter): the same numbers on any machine, in any order,
 * from any thread. Built on the SplitMix64 finaliser; uses no libm. */
uint64_t ref_hash_str(const char *s); /* FNV-1a 64 of a string: case-name seeds */
uint64_t ref_rng_u64(uint64_t key, uint64_t counter);
double ref_rng_uniform(uint64_t key, uint64_t counter); /* [0, 1), 53 bits */
/* Approximately standard normal (sum of 4 uniforms, centred and scaled: Irwin-Hall),
 * bounded by +-2*sqrt(3); arithmetic only, so bit-identical everywhere. */
double ref_rng_normal(uint64_t key, uint64_t counter);
/* Uniform integer in [lo, hi] (inclusive). */
int64_t ref_rng_range(uint64_t key, uint64_t counter, int64_t lo, int64_t hi);

/* ------------------------------------------------------------- attention core */
typedef enum ref_mode {
    REF_EXACT = 0,   /* the contract: f64 everywhere */
    REF_EMULATE = 1, /* a flash kernel's rounding points: P rounded to opts.p_dtype before
                        P.V (relative to the running row max, as an online softmax does) */
} ref_mode;

typedef struct ref_attn_opts {
    double scale;    /* logits s = scale * dot(q, k) */
    double softcap;  /* > 0: s = cap * tanh(s / cap); 0 = none */
    int causal;      /* bottom-right aligned: key j visible to query i iff j <= i + (lk - lq) */
    int window_left; /* >= 0: also j >= i + (lk - lq) - window_left; -1 = none */
    ref_mode mode;
    ref_dtype p_dtype; /* REF_EMULATE: dtype P is rounded to before P.V, i.e. the MMA input
                          dtype of the kernel (bf16 for bf16 inputs, f16 for f16; REF_F32,
                          the zero value, for f32 kernels) */
} ref_attn_opts;

/* A strided [rows, heads, cols] view of a tensor in a storage dtype: element (r, h, c) is
 * base[r * row_stride + h * head_stride + c], strides in elements. */
typedef struct ref_view {
    ref_dtype dtype;
    const void *data;
    ptrdiff_t row_stride, head_stride;
} ref_view;

/* Attention of one sequence, every query head (GQA: head h reads KV head h / (hq / hkv)).
 *   q: [lq, hq, dqk]   k: [lk, hkv, dqk]   v: [lk, hkv, dv]     (views, any float dtype)
 *   out: [lq, hq, dv] f64 with row stride out_row_stride (elements between tokens)
 *   lse: element (h, i) at lse[h * lse_head_stride + i], natural log; -inf when no key is
 *        visible (then out = 0).
 * Tiled over queries and keys with an online softmax, so the [lq, lk] score matrix never
 * exists whole; threaded over (head, query tile) unless already inside a parallel region. */
int ref_attn(int lq, int lk, int hq, int hkv, int dqk, int dv, ref_view q, ref_view k, ref_view v,
             const ref_attn_opts *o, double *out, ptrdiff_t out_row_stride, double *lse,
             ptrdiff_t lse_head_stride);

/* SPEC section 0 merge of two partial results (+inf lse read as -inf). Scalars per row:
 * out[0..d) from (oa, la) and (ob, lb). */
void ref_merge_row(int d, const double *oa, double la, const double *ob, double lb, double *out,
                   double *lse);
/* SPEC section 0 sink: out[0..d) *= 1 / (1 + exp(sink - lse)); lse itself is unchanged. */
void ref_apply_sink_row(int d, double *out, double lse, double sink);

/* ------------------------------------------------------------------- the paths */

/* SPEC section 4: varlen prefill (flash_attn_varlen_func).
 *   q [Tq, hq, dqk], k [Tk, hkv, dqk], v [Tk, hkv, dv], contiguous, dtype `dtype`;
 *   cu_q [batch + 1], cu_k [batch + 1] (i32, cu[0] = 0, non-decreasing).
 *   out [Tq, hq, dv] f64; lse [hq, Tq] f64. */
typedef struct ref_varlen_args {
    int batch, hq, hkv, dqk, dv;
    const int32_t *cu_q, *cu_k;
    ref_dtype dtype;
    const void *q, *k, *v;
    ref_attn_opts opts;
} ref_varlen_args;
int ref_mha_varlen(const ref_varlen_args *a, double *out, double *lse);

/* SPEC section 3: merge_attn_states.
 *   oa, ob [t, h, d] in dtype; la, lb [h, t] f32; out [t, h, d] f64; lse [h, t] f64. */
int ref_merge_states(int t, int h, int d, ref_dtype dtype, const void *oa, const void *ob,
                     const float *la, const float *lb, double *out, double *lse);

/* Measured OpenBLAS dgemm throughput in GFLOP/s on square n x n x n products, using the
 * same thread count as the reference (the yardstick MEASURE.md asks the reference to reach
 * half of). */
double ref_dgemm_gflops(int n, double min_seconds);
/* Threads the reference uses (OpenMP), and a name for the BLAS it was built on. */
int ref_threads(void);
const char *ref_blas_name(void);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_REF_H */
