/* test_gpu_paths.c - every GPU variant of every path over the committed smoke and edge cases,
 * through the same engine as `attn-harness run`: one test per path, each row must PASS (or
 * skip as unsupported, with its reason printed). Label gpu; exit 77 without a device. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "gpu_main.h"
#include "run.h"

static void run_path(const char *path)
{
    const hx_path *p = hx_path_find(path);
    cr_assert(p && p->n_variants > 0, "path %s has no GPU variant to test", path);
    char *files[] = {"cases/smoke.ini", "cases/edge.ini"};
    char json[] = "/tmp/attn-gpu-paths-XXXXXX";
    int fd = mkstemp(json);
    cr_assert(fd >= 0);
    close(fd);
    hx_run_opts o = {.path = path, .shard_n = 1, .warmup = 1, .iters = 3, .json = json};
    hx_err e = {0};
    int rc = hx_run(&o, files, 2, "test_gpu_paths", &e);
    cr_expect_eq(rc, 0, "path %s: hx_run returned %d (%s); rows in %s", path, rc, e.msg, json);
    if (rc == 0)
        unlink(json);
}

Test(gpu_paths, merge_states, .timeout = 300) { run_path("merge_states"); }
Test(gpu_paths, cache_write, .timeout = 300) { run_path("cache_write"); }
Test(gpu_paths, gather_cache, .timeout = 300) { run_path("gather_cache"); }
Test(gpu_paths, mha_varlen, .timeout = 300) { run_path("mha_varlen"); }
Test(gpu_paths, paged_decode, .timeout = 300) { run_path("paged_decode"); }
Test(gpu_paths, extend, .timeout = 300) { run_path("extend"); }
Test(gpu_paths, mixed, .timeout = 300) { run_path("mixed"); }
Test(gpu_paths, mla_decode, .timeout = 300) { run_path("mla_decode"); }
Test(gpu_paths, mla_prefill, .timeout = 300) { run_path("mla_prefill"); }
Test(gpu_paths, dsv4_sparse_decode, .timeout = 300) { run_path("dsv4_sparse_decode"); }
