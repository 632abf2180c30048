/* ref_attn.c - the attention core of libattn_ref: one sequence, every query head, with the
 * SPEC section 0 conventions (GQA, scale, soft-cap, bottom-right causal and left-window masks,
 * natural-log LSE, empty set -> out = 0 and lse = -inf), plus the section 0 merge and sink.
 *
 * Work item = (query head, tile of REF__QT queries). K and V are decoded to f64 once per call;
 * each item walks the key tiles that meet its visible band (fully masked tiles are never
 * touched, so causal prefill costs about half the square), from the diagonal down to the
 * window edge as FlashAttention-2 does, with an online softmax in f64. S = Q K^T and O += P V
 * are OpenBLAS dgemm calls on the tiles; everything else is a plain loop.
 */
#include "ref.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* P rounded through the emulated kernel's P dtype. p is finite and in [0, 1] here, so the
 * bf16 case is the usual f32 round-to-nearest-even on the top 16 bits (the same value as
 * ref_round_to(REF_BF16, p), which is kept for the other dtypes: it is exact but slow, and
 * the bf16 case runs once per visible score). */
static inline double ref__round_p(ref_dtype t, double p)
{
    if (t == REF_BF16) {
        float f = (float)p;
        uint32_t u;
        memcpy(&u, &f, 4);
        u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
        memcpy(&f, &u, 4);
        return f;
    }
    if (t == REF_F32)
        return (float)p;
    return ref_round_to(t, p);
}

/* The exp of the softmax is a quarter of the run time when scalar: declaring glibc's vector
 * variants (libmvec, <= 4 ulp; what <math.h> itself does under -ffast-math, which we must not
 * use: it would drop the inf/NaN handling) lets the `omp simd` loop below call them. */
#if defined(__GLIBC__) && defined(__x86_64__)
#pragma omp declare simd notinbranch
double exp(double);
#endif // __GLIBC__ && __x86_64__

/* Measured on the 2-core AVX-512 dev machine (causal 8K prefill, d = 128): every shape from
 * 64 to 512 queries by 256 to 512 keys lands within 10%; this one leaves enough work items
 * for short sequences and keeps the per-thread scratch (S, Q, acc: 512 KiB) inside L2. */
enum { REF__QT = 128, REF__KT = 256 };

/* Per-thread scratch for one work item. */
typedef struct ref__scratch {
    double *qt;  /* [QT, dqk] the query tile */
    double *s;   /* [QT, KT] logits, overwritten in place by the probabilities P */
    double *acc; /* [QT, dv] unnormalised output */
    double *m;   /* [QT] running row max */
    double *l;   /* [QT] running row sum of exp(s - m) */
} ref__scratch;

/* Everything the work items share, decoded once per call. */
typedef struct ref__ctx {
    int lq, lk, hq, dqk, dv, group; /* group = hq / hkv */
    const ref_attn_opts *o;
    ref_view q;
    const double *kf; /* [hkv, lk, dqk] */
    const double *vf; /* [hkv, lk, dv] */
    double *out;
    ptrdiff_t out_row_stride;
    double *lse;
    ptrdiff_t lse_head_stride;
} ref__ctx;

/* Visible keys of query i are [ref__lo(i), ref__hi(i)] (possibly empty), clipped to [0, lk).
 * 64-bit because i + (lk - lq) - window_left can leave the int range. */
static long long ref__lo(const ref__ctx *c, int i)
{
    long long lo = 0;
    if (c->o->window_left >= 0)
        lo = (long long)i + (c->lk - c->lq) - c->o->window_left;
    return lo < 0 ? 0 : lo;
}

static long long ref__hi(const ref__ctx *c, int i)
{
    long long hi = c->lk - 1;
    if (c->o->causal && (long long)i + (c->lk - c->lq) < hi)
        hi = (long long)i + (c->lk - c->lq);
    return hi;
}

/* Online-softmax update of one query row with visible columns [clo, chi] of a key tile of nk
 * columns. srow holds the logits on entry and P on return (0 outside [clo, chi]); returns the
 * factor the row's accumulator must be multiplied by before P V is added. */
static double ref__softmax_row(double *srow, int nk, int clo, int chi, const ref_attn_opts *o,
                               double *m, double *l)
{
    if (clo > chi) {
        memset(srow, 0, (size_t)nk * sizeof *srow);
        return 1.0;
    }
    if (o->softcap > 0) {
        const double cap = o->softcap;
        for (int c = clo; c <= chi; c++)
            srow[c] = cap * tanh(srow[c] / cap);
    }
    /* No `omp simd` here: GCC at -O2 keeps that reduction in memory, 2.5x slower than this. */
    double mx = -INFINITY;
    for (int c = clo; c <= chi; c++)
        mx = srow[c] > mx ? srow[c] : mx;
    const double m_new = mx > *m ? mx : *m;
    memset(srow, 0, (size_t)clo * sizeof *srow);
    memset(srow + chi + 1, 0, (size_t)(nk - 1 - chi) * sizeof *srow);
    if (m_new == -INFINITY) {
        /* Every visible logit so far is -inf or NaN. exp(-inf - (-inf)) would invent a NaN
         * for the -inf ones (they carry zero weight), but a NaN logit must poison the row
         * rather than vanish, as it would in any real kernel. */
        int nan = 0;
        for (int c = clo; c <= chi; c++) {
            nan |= srow[c] != srow[c];
            srow[c] = 0.0;
        }
        if (nan)
            *m = *l = NAN;
        return 1.0;
    }
    /* m_old = -inf gives exp(-inf) = 0 with a finite m_new: the empty accumulator is dropped. */
    const double alpha = exp(*m - m_new);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int c = clo; c <= chi; c++) {
        const double p = exp(srow[c] - m_new);
        sum += p;
        srow[c] = p;
    }
    /* FlashAttention-2's rounding points: P enters the P.V product in the MMA's input dtype,
     * while the row sum keeps the unrounded value. */
    if (o->mode == REF_EMULATE)
        for (int c = clo; c <= chi; c++)
            srow[c] = ref__round_p(o->p_dtype, srow[c]);
    *l = *l * alpha + sum;
    *m = m_new;
    return alpha;
}

/* One work item: query head h, queries [i0, i0 + nq). */
static void ref__tile(const ref__ctx *c, int h, int i0, int nq, ref__scratch *w)
{
    const int dqk = c->dqk, dv = c->dv, kh = h / c->group;
    const double *kf = c->kf + (size_t)kh * c->lk * dqk;
    const double *vf = c->vf + (size_t)kh * c->lk * dv;

    for (int r = 0; r < nq; r++) {
        const ptrdiff_t base = (ptrdiff_t)(i0 + r) * c->q.row_stride + (ptrdiff_t)h * c->q.head_stride;
        for (int d = 0; d < dqk; d++)
            w->qt[(size_t)r * dqk + d] = ref_load(c->q.dtype, c->q.data, (size_t)(base + d));
        w->m[r] = -INFINITY;
        w->l[r] = 0.0;
    }
    memset(w->acc, 0, (size_t)nq * dv * sizeof *w->acc);

    /* lo and hi grow with i, so the tile's band runs from its first row's lo to its last
     * row's hi. */
    const long long jlo = ref__lo(c, i0), jhi = ref__hi(c, i0 + nq - 1);
    for (long long j1 = jhi + 1; j1 > jlo;) {
        const int j0 = (int)(j1 - REF__KT > jlo ? j1 - REF__KT : jlo);
        const int nk = (int)j1 - j0;
        j1 = j0;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, dqk, c->o->scale, w->qt, dqk,
                    kf + (size_t)j0 * dqk, dqk, 0.0, w->s, REF__KT);
        for (int r = 0; r < nq; r++) {
            const long long lo = ref__lo(c, i0 + r) - j0, hi = ref__hi(c, i0 + r) - j0;
            const int clo = lo < 0 ? 0 : (int)(lo < nk ? lo : nk);
            const int chi = hi >= nk ? nk - 1 : (int)(hi < -1 ? -1 : hi);
            const double alpha =
                ref__softmax_row(w->s + (size_t)r * REF__KT, nk, clo, chi, c->o, &w->m[r], &w->l[r]);
            if (alpha != 1.0)
                for (int d = 0; d < dv; d++)
                    w->acc[(size_t)r * dv + d] *= alpha;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, dv, nk, 1.0, w->s, REF__KT,
                    vf + (size_t)j0 * dv, dv, 1.0, w->acc, dv);
    }

    for (int r = 0; r < nq; r++) {
        double *orow = c->out + (ptrdiff_t)(i0 + r) * c->out_row_stride + (ptrdiff_t)h * dv;
        const double l = w->l[r];
        if (l == 0.0) {
            for (int d = 0; d < dv; d++)
                orow[d] = 0.0;
        } else {
            for (int d = 0; d < dv; d++)
                orow[d] = w->acc[(size_t)r * dv + d] / l;
        }
        if (c->lse)
            c->lse[(ptrdiff_t)h * c->lse_head_stride + i0 + r] = l == 0.0 ? -INFINITY : w->m[r] + log(l);
    }
}

static int ref__check(int lq, int lk, int hq, int hkv, int dqk, int dv, ref_view q, ref_view k,
                      ref_view v, const ref_attn_opts *o, const double *out)
{
    if (!o || lq < 0 || lk < 0 || hq <= 0 || hkv <= 0 || dqk <= 0 || dv <= 0)
        return REF_EINVAL;
    if (o->window_left < -1 || !(o->softcap >= 0) || isinf(o->softcap) || !isfinite(o->scale) ||
        (o->mode != REF_EXACT && o->mode != REF_EMULATE))
        return REF_EINVAL;
    if (hq % hkv != 0)
        return REF_ESHAPE;
    if (lq > 0 && (!out || !q.data))
        return REF_EINVAL;
    if (lq > 0 && lk > 0 && (!k.data || !v.data))
        return REF_EINVAL;
    if (!ref_dtype_is_float(q.dtype) || !ref_dtype_is_float(k.dtype) || !ref_dtype_is_float(v.dtype))
        return REF_EDTYPE;
    return REF_OK;
}

/* lse may be NULL when the caller has no use for it. */
int ref_attn(int lq, int lk, int hq, int hkv, int dqk, int dv, ref_view q, ref_view k, ref_view v,
             const ref_attn_opts *o, double *out, ptrdiff_t out_row_stride, double *lse,
             ptrdiff_t lse_head_stride)
{
    const int err = ref__check(lq, lk, hq, hkv, dqk, dv, q, k, v, o, out);
    if (err != REF_OK || lq == 0)
        return err;
    if (lk == 0) {
        for (int i = 0; i < lq; i++)
            for (int h = 0; h < hq; h++) {
                memset(out + (ptrdiff_t)i * out_row_stride + (ptrdiff_t)h * dv, 0, (size_t)dv * sizeof *out);
                if (lse)
                    lse[(ptrdiff_t)h * lse_head_stride + i] = -INFINITY;
            }
        return REF_OK;
    }

    /* dgemm runs inside our OpenMP threads; OpenBLAS's pthread build must not fan out to its
     * own pool from there. The check keeps concurrent callers from all writing the global. */
    if (openblas_get_num_threads() != 1) {
#pragma omp critical(ref__blas_threads)
        openblas_set_num_threads(1);
    }

    const size_t kn = (size_t)hkv * lk;
    double *kf = malloc(kn * dqk * sizeof *kf);
    double *vf = malloc(kn * dv * sizeof *vf);
    if (!kf || !vf) {
        free(kf);
        free(vf);
        return REF_ENOMEM;
    }
    const int par = !omp_in_parallel();
#pragma omp parallel for schedule(static) if (par)
    for (long long r = 0; r < (long long)kn; r++) {
        const int kh = (int)(r / lk), j = (int)(r % lk);
        const ptrdiff_t kb = (ptrdiff_t)j * k.row_stride + (ptrdiff_t)kh * k.head_stride;
        const ptrdiff_t vb = (ptrdiff_t)j * v.row_stride + (ptrdiff_t)kh * v.head_stride;
        for (int d = 0; d < dqk; d++)
            kf[(size_t)r * dqk + d] = ref_load(k.dtype, k.data, (size_t)(kb + d));
        for (int d = 0; d < dv; d++)
            vf[(size_t)r * dv + d] = ref_load(v.dtype, v.data, (size_t)(vb + d));
    }

    const ref__ctx ctx = {lq, lk, hq, dqk, dv, hq / hkv, o, q, kf, vf, out, out_row_stride, lse,
                          lse_head_stride};
    const int ntiles = (lq + REF__QT - 1) / REF__QT;
    const long long nwork = (long long)hq * ntiles;
    int nomem = 0;
#pragma omp parallel if (par)
    {
        const int qt = lq < REF__QT ? lq : REF__QT;
        ref__scratch w = {malloc((size_t)qt * dqk * sizeof(double)),
                          malloc((size_t)qt * REF__KT * sizeof(double)),
                          malloc((size_t)qt * dv * sizeof(double)), malloc((size_t)qt * sizeof(double)),
                          malloc((size_t)qt * sizeof(double))};
        const int ok = w.qt && w.s && w.acc && w.m && w.l;
        if (!ok) {
#pragma omp atomic write
            nomem = 1;
        }
        /* Causal tiles further down hold more keys: hand those out first so the dynamic
         * schedule does not end on one long item. */
#pragma omp for schedule(dynamic)
        for (long long wi = 0; wi < nwork; wi++) {
            if (!ok)
                continue;
            const int h = (int)(wi % hq), t = ntiles - 1 - (int)(wi / hq);
            const int i0 = t * REF__QT;
            ref__tile(&ctx, h, i0, lq - i0 < REF__QT ? lq - i0 : REF__QT, &w);
        }
        free(w.qt);
        free(w.s);
        free(w.acc);
        free(w.m);
        free(w.l);
    }
    free(kf);
    free(vf);
    return nomem ? REF_ENOMEM : REF_OK;
}

/* ------------------------------------------------------------- merge and sink */

void ref_merge_row(int d, const double *oa, double la, const double *ob, double lb, double *out,
                   double *lse)
{
    if (la == INFINITY)
        la = -INFINITY;
    if (lb == INFINITY)
        lb = -INFINITY;
    /* A NaN lse must reach the output, so no fmax (which would drop it), and emptiness is
     * tested on both sides rather than on m. */
    const double m = la > lb ? la : lb;
    if (la == -INFINITY && lb == -INFINITY) {
        for (int c = 0; c < d; c++)
            out[c] = 0.0;
        *lse = -INFINITY;
        return;
    }
    const double wa = exp(la - m), wb = exp(lb - m), ws = wa + wb;
    for (int c = 0; c < d; c++)
        out[c] = (wa * oa[c] + wb * ob[c]) / ws;
    *lse = m + log(ws);
}

void ref_apply_sink_row(int d, double *out, double lse, double sink)
{
    if (sink == -INFINITY)
        return;
    /* An empty attended set (lse = -inf, +inf read alike) has out = 0 and stays 0; a +inf sink
     * takes all the weight. Both would otherwise meet inf - inf or inf / inf. */
    double f = 0.0;
    if (isnan(sink))
        f = sink;
    else if (sink != INFINITY && lse != INFINITY && lse != -INFINITY)
        f = 1.0 / (1.0 + exp(sink - lse));
    for (int c = 0; c < d; c++)
        out[c] *= f;
}
