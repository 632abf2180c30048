/* gpu_main.h - main() for GPU Criterion suites: exit 77 (CTest's skip) without a device,
 * so CI without a GPU reports the suite as skipped, never as passed. */
#ifndef ATTN_GPU_MAIN_H
#define ATTN_GPU_MAIN_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opt.h"

/* Under scripts/ctest-gpus.sh, CTest names this suite's GPU in CTEST_RESOURCE_GROUP_0_GPUS
 * ("id:N,slots:1"; N counts the GPUs this process sees). Make it the only one visible, before
 * the runtime starts and in the environment Criterion's workers inherit, so that device 0 of
 * every test is it. Without the variable every GPU stays visible, as before. */
static void gpu_main__ctest_device(void)
{
    const char *g = getenv("CTEST_RESOURCE_GROUP_0_GPUS");
    int id;
    if (!g || sscanf(g, "id:%d", &id) != 1 || id < 0)
        return;
    const char *var = strcmp(opt_backend(), "hip") == 0 ? "HIP_VISIBLE_DEVICES"
                                                         : "CUDA_VISIBLE_DEVICES";
    char pick[64] = "";
    const char *vis = getenv(var);
    if (!vis || !*vis)
        snprintf(pick, sizeof pick, "%d", id);
    for (int k = 0; vis && *vis && !pick[0]; k++) { /* already narrowed: its id-th entry */
        size_t len = strcspn(vis, ",");
        if (k == id)
            snprintf(pick, sizeof pick, "%.*s", (int)len, vis);
        vis += len + (vis[len] == ',');
    }
    if (pick[0])
        setenv(var, pick, 1);
}

int main(int argc, char *argv[])
{
    int n = 0;
    gpu_main__ctest_device();
    opt_device_count(&n);
    if (n == 0) {
        fprintf(stderr, "no GPU device (%s backend): skipping\n", opt_backend());
        return 77;
    }
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    return result;
}

#endif /* ATTN_GPU_MAIN_H */
