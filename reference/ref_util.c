/* ref_util.c - error names, and what the reference runs on: its thread count, its BLAS, and
 * that BLAS's dgemm throughput (MEASURE.md's yardstick for the reference's own speed).
 */
#include "ref.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *ref_strerror(int err)
{
    switch (err) {
#define REF__CASE(name, code, text) \
    case name: return text;
        REF_ERRORS(REF__CASE)
#undef REF__CASE
    default: return "unknown error";
    }
}

int ref_threads(void) { return omp_get_max_threads(); }

/* openblas_get_config() rebuilds its string in a static buffer on every call, so it is
 * copied once, under a lock, into one that never changes afterwards. */
const char *ref_blas_name(void)
{
    static char name[256];
#pragma omp critical(ref__blas_name)
    {
        if (!name[0]) {
            const char *c = openblas_get_config();
            strncpy(name, c ? c : "OpenBLAS", sizeof name - 1);
        }
    }
    return name;
}

static double ref__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best single-call rate after one untimed warm-up call: on a shared machine the fastest call
 * is the one least disturbed by others, and it keeps the "reference >= half of dgemm" ratio
 * honest (the yardstick is never lowered by noise). Returns 0 for n < 1 or out of memory.
 *
 * dgemm runs here with ref_threads() OpenBLAS threads, the same parallelism the reference
 * gets from OpenMP. The attention core instead calls dgemm from inside its own OpenMP
 * threads, where a multithreaded OpenBLAS would oversubscribe the cores (and concurrent
 * calls into the pthreads build's one thread pool serialise), so it relies on OpenBLAS being
 * set to 1 thread: that is the setting left behind on return, whatever it was before. */
double ref_dgemm_gflops(int n, double min_seconds)
{
    if (n < 1)
        return 0.0;
    size_t nn = (size_t)n * (size_t)n;
    double *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return 0.0;
    }
    /* Deterministic, well-scaled values (no denormals or overflow to slow the FPU). */
    for (size_t i = 0; i < nn; i++) {
        a[i] = (double)(i % 17) / 17.0 - 0.5;
        b[i] = (double)(i % 13) / 13.0 - 0.5;
        c[i] = 0.0;
    }

    openblas_set_num_threads(ref_threads());
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
    double best = 0.0, start = ref__now(), t0 = start;
    do {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c,
                    n);
        double t1 = ref__now();
        if (t1 > t0) {
            double gflops = 2.0 * (double)n * (double)n * (double)n / (t1 - t0) * 1e-9;
            if (gflops > best)
                best = gflops;
        }
        t0 = t1;
    } while (t0 - start < min_seconds);
    openblas_set_num_threads(1);

    free(a);
    free(b);
    free(c);
    return best;
}
