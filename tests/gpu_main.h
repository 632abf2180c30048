/* gpu_main.h - main() for GPU Criterion suites: exit 77 (CTest's skip) without a device,
 * so CI without a GPU reports the suite as skipped, never as passed. */
#ifndef ATTN_GPU_MAIN_H
#define ATTN_GPU_MAIN_H

#include <criterion/criterion.h>
#include <stdio.h>

#include "opt.h"

int main(int argc, char *argv[])
{
    int n = 0;
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
