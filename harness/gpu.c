/* gpu.c - the harness's device layer: the device and its facts, device copies of tensor
 * sets (guards and poison included), the kernel watchdog, the timing method of MEASURE.md,
 * and the measured peaks (streaming read, copy, matrix throughput) that "% of peak" is
 * relative to. Compiles to "no GPU" when built without a backend.
 *
 * Resource failures end one row, never the sweep: a failed device allocation is an ERROR
 * row ("out of device memory: N bytes for tensor 'X'"); every wait for the device goes
 * through hx_gpu_wait, which gives up after --kernel-timeout seconds. A kernel cannot be
 * killed from the host, so after a timeout the device is left alone (no further call that
 * could block: no free, no copy) and hx_gpu_hung() tells the run to skip its GPU rows.
 *
 * Test hook: ATTN_TEST_DEVICE_MEM_LIMIT=BYTES makes the device allocations of tensor sets
 * and workspaces fail, as an out-of-memory would, once they would hold more than BYTES. */
#include "run.h"
#include "records.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void *hx_dptr(const hx_dtensors *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return s->t[i].ptr;
    return NULL;
}

#ifdef ATTN_HAVE_GPU
#include "opt.h"

_Static_assert((int)OPT_F32 == (int)REF_F32 && (int)OPT_BF16 == (int)REF_BF16 &&
                   (int)OPT_F16 == (int)REF_F16 && (int)OPT_FP8E4M3 == (int)REF_FP8E4M3,
               "opt.h dtype codes must equal ref_dtype");

const char *hx_gpu_backend(void)
{
    return opt_backend();
}

int hx_gpu_count(void)
{
    int n = 0;
    opt_device_count(&n);
    return n;
}

static int hx__gpu_fail(hx_err *e, const char *what)
{
    return hx_fail(e, HX_ERUNTIME, "%s: %s", what, opt_last_error());
}

/* ---------------------------------------------------------------- watchdog
 * A waiter thread makes the blocking call (device synchronize); the caller waits for its
 * answer on a condition variable with a deadline. After a timeout the waiter stays blocked
 * and the device is marked hung for the rest of the process. */
static double hx__timeout_s = 60;
static int hx__dev_index, hx__hung;

static struct {
    pthread_once_t once;
    int ready;                       /* thread running */
    pthread_mutex_t mu;
    pthread_cond_t go, done;         /* done: on CLOCK_MONOTONIC */
    unsigned long asked, answered;
    int rc;
    char msg[512];
} hx__wd = {.once = PTHREAD_ONCE_INIT};

static void *hx__wd_main(void *arg)
{
    (void)arg;
    int dev_set = -1; /* the device this thread has made current */
    pthread_mutex_lock(&hx__wd.mu);
    for (;;) {
        while (hx__wd.answered == hx__wd.asked)
            pthread_cond_wait(&hx__wd.go, &hx__wd.mu);
        const unsigned long n = hx__wd.asked;
        const int dev = hx__dev_index; /* set by the asking thread before it asked */
        pthread_mutex_unlock(&hx__wd.mu);
        /* The current device is per thread; follow the process if it opened another one. */
        int rc = dev != dev_set && opt_set_device(dev);
        dev_set = rc ? -1 : dev;
        rc = rc || opt_synchronize();
        char msg[sizeof hx__wd.msg];
        snprintf(msg, sizeof msg, "%s", rc ? opt_last_error() : "");
        pthread_mutex_lock(&hx__wd.mu);
        hx__wd.rc = rc;
        memcpy(hx__wd.msg, msg, sizeof msg);
        hx__wd.answered = n;
        pthread_cond_signal(&hx__wd.done);
    }
    return NULL;
}

static void hx__wd_start(void)
{
    pthread_condattr_t ca;
    pthread_t t;
    pthread_attr_t ta;
    if (pthread_mutex_init(&hx__wd.mu, NULL) || pthread_cond_init(&hx__wd.go, NULL) ||
        pthread_condattr_init(&ca))
        return;
    const int ok = !pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) &&
                   !pthread_cond_init(&hx__wd.done, &ca);
    pthread_condattr_destroy(&ca);
    if (!ok || pthread_attr_init(&ta))
        return;
    if (!pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED))
        hx__wd.ready = pthread_create(&t, &ta, hx__wd_main, NULL) == 0;
    pthread_attr_destroy(&ta);
}

void hx_gpu_set_timeout(double seconds)
{
    hx__timeout_s = seconds;
}

int hx_gpu_hung(void)
{
    return hx__hung;
}

int hx_gpu_wait(hx_err *e)
{
    if (hx__hung)
        return hx_fail(e, HX_ERUNTIME, "GPU unusable: an earlier kernel exceeded --kernel-timeout");
    if (hx__timeout_s > 0)
        pthread_once(&hx__wd.once, hx__wd_start);
    if (!(hx__timeout_s > 0) || !hx__wd.ready) /* no limit, or no thread: wait in this one */
        return opt_synchronize() ? hx__gpu_fail(e, "synchronize") : HX_OK;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    const double whole = floor(hx__timeout_s), frac = hx__timeout_s - whole;
    dl.tv_sec += (time_t)(whole < 1e9 ? whole : 1e9);
    dl.tv_nsec += (long)(frac * 1e9);
    if (dl.tv_nsec >= 1000000000L)
        dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&hx__wd.mu);
    const unsigned long n = ++hx__wd.asked;
    pthread_cond_signal(&hx__wd.go);
    int err = 0;
    while (hx__wd.answered != n && err != ETIMEDOUT)
        err = pthread_cond_timedwait(&hx__wd.done, &hx__wd.mu, &dl);
    const int finished = hx__wd.answered == n, rc = hx__wd.rc;
    char msg[sizeof hx__wd.msg];
    memcpy(msg, hx__wd.msg, sizeof msg);
    pthread_mutex_unlock(&hx__wd.mu);
    if (!finished) {
        hx__hung = 1;
        return hx_fail(e, HX_ERUNTIME,
                       "kernel exceeded %g s (--kernel-timeout); device state unknown, remaining "
                       "GPU cases skipped",
                       hx__timeout_s);
    }
    return rc ? hx_fail(e, HX_ERUNTIME, "synchronize: %s", msg) : HX_OK;
}

/* ------------------------------------------------------ device allocations */
static size_t hx__dev_held; /* bytes held by tensor sets and workspaces */

static int hx__dev_alloc(void **p, size_t bytes, const char *tensor, hx_err *e)
{
    const char *lim = getenv("ATTN_TEST_DEVICE_MEM_LIMIT");
    if (hx__hung)
        return hx_fail(e, HX_ERUNTIME, "GPU unusable: an earlier kernel exceeded --kernel-timeout");
    if (lim && *lim && hx__dev_held + bytes > strtoull(lim, NULL, 0))
        return hx_fail(e, HX_ERUNTIME,
                       "out of device memory: %zu bytes for tensor '%s' (test hook "
                       "ATTN_TEST_DEVICE_MEM_LIMIT=%s, %zu bytes held)",
                       bytes, tensor, lim, hx__dev_held);
    if (opt_alloc(p, bytes)) {
        char why[512];
        snprintf(why, sizeof why, "%s", opt_last_error());
        /* The runtime keeps the failure as its last error, which the next launch's check
         * (hipGetLastError) would report as its own (seen with CUDA 13): a launch of the
         * empty kernel reads it off, so the next variant does not fail for this one. */
        (void)opt_empty_kernel(NULL);
        if (strstr(why, "out of memory"))
            return hx_fail(e, HX_ERUNTIME, "out of device memory: %zu bytes for tensor '%s' (%s)",
                           bytes, tensor, why);
        return hx_fail(e, HX_ERUNTIME, "device allocation of %zu bytes for tensor '%s': %s", bytes,
                       tensor, why);
    }
    hx__dev_held += bytes;
    return HX_OK;
}

/* What hx__dev_alloc took for an entry of a set (tensors carry their guards). */
static size_t hx__dev_size(const hx_dtensor *t)
{
    return t->ptr == t->base ? (t->bytes ? t->bytes : 1) : t->bytes + 2 * HX_GUARD;
}

int hx_gpu_open(int index, hx_gpu *g, hx_err *e)
{
    memset(g, 0, sizeof *g);
    int n = hx_gpu_count();
    if (index < 0 || index >= n)
        return hx_fail(e, HX_EUSAGE, "--device %d: this machine has %d GPU(s)", index, n);
    opt_device_info d;
    if (opt_set_device(index) || opt_device_query(index, &d))
        return hx__gpu_fail(e, "opening the GPU");
    g->index = index;
    snprintf(g->name, sizeof g->name, "%s", d.name);
    snprintf(g->arch, sizeof g->arch, "%s", d.arch);
    g->multiprocessors = d.multiprocessors;
    g->warp_size = d.warp_size;
    g->l2_bytes = d.l2_bytes;
    g->cc_major = d.cc_major;
    g->cc_minor = d.cc_minor;
    g->smem_per_block = d.smem_per_block;
    g->runtime_version = d.runtime_version;
    g->driver_version = d.driver_version;
    g->mem_total = d.mem_total;
    g->read_gbps = g->copy_gbps = g->mma_tflops = NAN;
    hx__dev_index = index;
    return HX_OK;
}

/* ------------------------------------------------------------- tensor sets */
int hx_dev_upload(const hx_tensors *h, hx_dtensors *d, hx_err *e)
{
    d->n = 0;
    for (int i = 0; i < h->n; i++) {
        const hx_tensor *t = &h->t[i];
        hx_dtensor *dt = &d->t[d->n];
        size_t whole = t->bytes + 2 * HX_GUARD;
        int rc = hx__dev_alloc(&dt->base, whole, t->name, e);
        if (rc) {
            hx_dev_free(d);
            return rc;
        }
        d->n++;
        snprintf(dt->name, sizeof dt->name, "%s", t->name);
        dt->bytes = t->bytes;
        dt->ptr = (char *)dt->base + HX_GUARD;
        if (opt_upload(dt->base, (const char *)t->data - HX_GUARD, whole)) {
            hx_dev_free(d);
            return hx__gpu_fail(e, "upload");
        }
    }
    return HX_OK;
}

int hx_dev_refill(const hx_tensors *h, hx_dtensors *d, hx_err *e)
{
    for (int i = 0; i < d->n; i++) {
        const hx_tensor *t = hx_tensors_get(h, d->t[i].name);
        if (t && t->bytes == d->t[i].bytes && d->t[i].ptr != d->t[i].base &&
            opt_upload(d->t[i].base, (const char *)t->data - HX_GUARD, t->bytes + 2 * HX_GUARD))
            return hx__gpu_fail(e, "upload");
    }
    return HX_OK;
}

int hx_dev_download(const hx_dtensors *d, hx_tensors *h, hx_err *e)
{
    for (int i = 0; i < d->n; i++) {
        hx_tensor *t = hx_tensors_get(h, d->t[i].name);
        if (t && opt_download((char *)t->data - HX_GUARD, d->t[i].base, t->bytes + 2 * HX_GUARD))
            return hx__gpu_fail(e, "download");
    }
    return HX_OK;
}

int hx_dev_add_workspace(hx_dtensors *d, size_t bytes, hx_err *e)
{
    if (d->n >= HX_MAX_TENSORS)
        return hx_fail(e, HX_ERUNTIME, "too many device tensors");
    hx_dtensor *w = &d->t[d->n];
    int rc = hx__dev_alloc(&w->base, bytes ? bytes : 1, "workspace", e);
    if (rc)
        return rc;
    d->n++;
    snprintf(w->name, sizeof w->name, "workspace");
    w->ptr = w->base;
    w->bytes = bytes;
    return HX_OK;
}

void hx_dev_free(hx_dtensors *d)
{
    for (int i = 0; i < d->n && !hx__hung; i++) { /* hung: freeing would wait for the kernel */
        opt_free(d->t[i].base);
        hx__dev_held -= hx__dev_size(&d->t[i]);
    }
    d->n = 0;
}

/* ------------------------------------------------------------------ timing */
static int hx__cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void hx_timing_from_samples(double *ms, int n, hx_timing *t)
{
    qsort(ms, (size_t)n, sizeof *ms, hx__cmp_double);
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++)
        sum += ms[i];
    double mean = sum / n;
    for (int i = 0; i < n; i++)
        sq += (ms[i] - mean) * (ms[i] - mean);
    t->samples = n;
    t->min_ms = ms[0];
    t->max_ms = ms[n - 1];
    t->median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    t->stddev_ms = n > 1 ? sqrt(sq / (n - 1)) : 0;
}

int hx_gpu_time(hx_launch_fn fn, void *ctx, const hx_time_opts *o, hx_timing *t, hx_err *e)
{
    enum { MAX_SAMPLES = 4096 };
    const double max_total_ms = 5000;
    void *ev0 = NULL, *ev1 = NULL;
    double *ms = malloc(sizeof(double) * MAX_SAMPLES);
    int rc = HX_OK, n = 0;
    if (!ms)
        return hx_fail(e, HX_ENOMEM, "out of memory for timing samples");
    if (opt_event_create(&ev0) || opt_event_create(&ev1)) {
        rc = hx__gpu_fail(e, "creating events");
        goto out;
    }
    for (int i = 0; i < o->warmup; i++)
        if (fn(ctx)) {
            rc = hx__gpu_fail(e, "warm-up launch");
            goto out;
        }
    if (o->warmup && (rc = hx_gpu_wait(e)))
        goto out;
    double total = 0;
    while (n < MAX_SAMPLES && (n < o->min_samples || total < o->min_ms) &&
           !(n >= o->min_samples && total > max_total_ms)) {
        /* Cold L2: overwrite a buffer twice the L2 outside the timed window. */
        if (!o->hot && opt_flush(o->flush_buf, o->flush_bytes, n & 0xff, NULL)) {
            rc = hx__gpu_fail(e, "L2 flush");
            goto out;
        }
        float dt = 0;
        if (opt_event_record(ev0, NULL) || fn(ctx) || opt_event_record(ev1, NULL)) {
            rc = hx__gpu_fail(e, "timed launch");
            goto out;
        }
        if ((rc = hx_gpu_wait(e))) /* the watchdog: opt_event_elapsed would wait unbounded */
            goto out;
        if (opt_event_elapsed(ev0, ev1, &dt)) {
            rc = hx__gpu_fail(e, "timed launch");
            goto out;
        }
        ms[n++] = dt;
        total += dt;
    }
    hx_timing_from_samples(ms, n, t);
out:
    if (ev0 && !hx__hung)
        opt_event_destroy(ev0);
    if (ev1 && !hx__hung)
        opt_event_destroy(ev1);
    free(ms);
    return rc;
}

/* -------------------------------------------------------------- the peaks */
typedef struct hx__probe_ctx {
    void *a, *b, *sink;
    size_t bytes;
    int blocks, iters;
    double flops;
} hx__probe_ctx;

static int hx__read(void *p)
{
    hx__probe_ctx *c = p;
    return opt_probe_read(c->a, c->bytes, c->sink, c->blocks, NULL);
}

static int hx__copy(void *p)
{
    hx__probe_ctx *c = p;
    return opt_probe_copy(c->b, c->a, c->bytes, c->blocks, NULL);
}

static int hx__mma(void *p)
{
    hx__probe_ctx *c = p;
    return opt_probe_mma(c->blocks, c->iters, c->sink, &c->flops, NULL);
}

static int hx__empty(void *p)
{
    (void)p;
    return opt_empty_kernel(NULL);
}

/* Peaks are the best of several timed launches: a peak is what the device can do. */
int hx_gpu_measure_peaks(hx_gpu *g, hx_err *e)
{
    hx__probe_ctx c = {0};
    hx_time_opts o = {.warmup = 2, .min_samples = 10, .min_ms = 0, .hot = 1};
    hx_timing t;
    int rc = HX_OK;
    c.bytes = (size_t)1 << 30; /* 1 GiB: far beyond any L2 */
    c.blocks = g->multiprocessors * 16;
    if (opt_alloc(&c.a, c.bytes) || opt_alloc(&c.b, c.bytes) ||
        opt_alloc(&c.sink, (size_t)c.blocks * 4 * 256 * 16) || opt_flush(c.a, c.bytes, 1, NULL)) {
        rc = hx__gpu_fail(e, "allocating the roofline buffers");
        goto out;
    }
    if ((rc = hx_gpu_time(hx__read, &c, &o, &t, e)))
        goto out;
    g->read_gbps = c.bytes / (t.min_ms * 1e-3) * 1e-9;
    if ((rc = hx_gpu_time(hx__copy, &c, &o, &t, e)))
        goto out;
    g->copy_gbps = 2.0 * c.bytes / (t.min_ms * 1e-3) * 1e-9;
    c.blocks = g->multiprocessors * 4;
    c.iters = 4096;
    if ((rc = hx_gpu_time(hx__mma, &c, &o, &t, e)))
        goto out;
    g->mma_tflops = c.flops / (t.min_ms * 1e-3) * 1e-12;
out:
    if (!hx__hung) {
        opt_free(c.a);
        opt_free(c.b);
        opt_free(c.sink);
    }
    return rc;
}

int hx_gpu_selftest(const hx_gpu *g, void *flush, size_t flush_bytes, double *empty_us,
                    double *copy_ratio, hx_err *e)
{
    hx__probe_ctx c = {0};
    hx_time_opts o = {.warmup = 5, .min_samples = 20, .min_ms = 100, .hot = 0,
                      .flush_buf = flush, .flush_bytes = flush_bytes};
    hx_timing t;
    int rc = hx_gpu_time(hx__empty, &c, &o, &t, e);
    if (rc)
        return rc;
    *empty_us = t.median_ms * 1e3;
    c.bytes = (size_t)256 << 20;
    c.blocks = g->multiprocessors * 8;
    if (opt_alloc(&c.a, c.bytes) || opt_alloc(&c.b, c.bytes) || opt_flush(c.a, c.bytes, 3, NULL)) {
        rc = hx__gpu_fail(e, "allocating the self-test buffers");
        goto out;
    }
    if ((rc = hx_gpu_time(hx__copy, &c, &o, &t, e)))
        goto out;
    *copy_ratio = 2.0 * c.bytes / (t.median_ms * 1e-3) * 1e-9 / g->copy_gbps;
out:
    if (!hx__hung) {
        opt_free(c.a);
        opt_free(c.b);
    }
    return rc;
}

int hx_roofline(int dev)
{
    hx_gpu g;
    hx_err e = {0};
    void *flush = NULL;
    if (hx_gpu_open(dev, &g, &e) || hx_gpu_measure_peaks(&g, &e)) {
        fprintf(stderr, "attn-harness: %s\n", e.msg);
        return 3;
    }
    printf("device            %s (%s), %d SMs/CUs, L2 %.0f MiB\n", g.name, g.arch,
           g.multiprocessors, g.l2_bytes / 1048576.0);
    printf("read bandwidth    %8.1f GB/s   (1 GiB streamed, best of 10)\n", g.read_gbps);
    printf("copy bandwidth    %8.1f GB/s   (read + write, best of 10)\n", g.copy_gbps);
    printf("bf16 mma          %8.1f TFLOP/s (f32 accumulate, best of 10)\n", g.mma_tflops);
    size_t fb = (size_t)g.l2_bytes * 2 > ((size_t)64 << 20) ? (size_t)g.l2_bytes * 2 : (size_t)64 << 20;
    double empty_us = NAN, copy_ratio = NAN;
    if (opt_alloc(&flush, fb) || hx_gpu_selftest(&g, flush, fb, &empty_us, &copy_ratio, &e)) {
        fprintf(stderr, "attn-harness: timing self-test: %s\n", e.msg[0] ? e.msg : opt_last_error());
        if (!hx__hung)
            opt_free(flush);
        return 3;
    }
    opt_free(flush);
    int ok_empty = empty_us < 50, ok_copy = copy_ratio >= 0.70;
    printf("self-test: empty kernel median %.2f us (< 50 us: %s); cold 256 MiB copy timed as a "
           "kernel reaches %.1f%% of the copy peak (>= 70%%: %s)\n",
           empty_us, ok_empty ? "ok" : "FAIL", 100 * copy_ratio, ok_copy ? "ok" : "FAIL");
    return ok_empty && ok_copy ? 0 : 1;
}

void hx_gpu_describe(int dev, FILE *f)
{
    opt_device_info d;
    if (opt_device_query(dev, &d) != OPT_OK) {
        fprintf(f, "  [%d] error: %s\n", dev, opt_last_error());
        return;
    }
    fprintf(f, "  [%d] %s (%s): %d SMs/CUs, warp %d, L2 %.1f MiB, %.0f MHz core, memory %.0f MHz x "
               "%d bit, %.1f GiB (%.1f free), smem/block %d KiB, runtime %d, driver %d\n",
            dev, d.name, d.arch, d.multiprocessors, d.warp_size, d.l2_bytes / 1048576.0,
            d.clock_khz / 1e3, d.mem_clock_khz / 1e3, d.mem_bus_bits, d.mem_total / 1073741824.0,
            d.mem_free / 1073741824.0, d.smem_per_block / 1024, d.runtime_version, d.driver_version);
}

#else

const char *hx_gpu_backend(void)
{
    return "none";
}

void hx_gpu_set_timeout(double seconds)
{
    (void)seconds;
}

int hx_gpu_hung(void)
{
    return 0;
}

int hx_roofline(int dev)
{
    (void)dev;
    return 3;
}

int hx_gpu_count(void)
{
    return 0;
}

void hx_gpu_describe(int dev, FILE *f)
{
    (void)dev;
    (void)f;
}

#endif // ATTN_HAVE_GPU

void hx_device_slug(char *buf, size_t n)
{
    char name[256] = "cpu";
#ifdef ATTN_HAVE_GPU
    opt_device_info d;
    if (hx_gpu_count() > 0 && opt_device_query(0, &d) == OPT_OK)
        snprintf(name, sizeof name, "%s", d.name);
#endif // ATTN_HAVE_GPU
    hx_slugify(name, buf, n);
}
