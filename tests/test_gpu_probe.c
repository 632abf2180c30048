/* test_gpu_probe.c - the streaming-read probe reads every word exactly once (XOR check over
 * odd sizes and grid shapes), and rejects what it cannot do. Label gpu. */
#include <stdlib.h>
#include <string.h>

#include "gpu_main.h"
#include "ref.h"

static void check_probe(size_t bytes, int blocks)
{
    size_t n = bytes / 4;
    uint32_t *host = malloc(bytes), want[4] = {0, 0, 0, 0};
    cr_assert(host);
    for (size_t i = 0; i < n; i++) {
        host[i] = (uint32_t)ref_rng_u64(0x5eed, i);
        want[i % 4] ^= host[i];
    }
    void *dbuf = NULL, *dpart = NULL;
    cr_assert_eq(opt_alloc(&dbuf, bytes), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_alloc(&dpart, (size_t)blocks * 16), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_upload(dbuf, host, bytes), OPT_OK, "%s", opt_last_error());
    cr_assert_eq(opt_probe_read(dbuf, bytes, dpart, blocks, NULL), OPT_OK, "%s", opt_last_error());
    uint32_t *part = malloc((size_t)blocks * 16), got[4] = {0, 0, 0, 0};
    cr_assert(part);
    cr_assert_eq(opt_download(part, dpart, (size_t)blocks * 16), OPT_OK, "%s", opt_last_error());
    for (int b = 0; b < blocks; b++)
        for (int j = 0; j < 4; j++)
            got[j] ^= part[4 * b + j];
    for (int j = 0; j < 4; j++)
        cr_expect_eq(got[j], want[j], "bytes %zu blocks %d lane %d: %08x != %08x", bytes, blocks,
                     j, got[j], want[j]);
    opt_free(dbuf);
    opt_free(dpart);
    free(host);
    free(part);
}

Test(probe, xor_of_every_word)
{
    check_probe(16, 1);
    check_probe(16 * 1013, 3);
    check_probe(16 * 1013, 17);
    check_probe((size_t)64 << 20, 528);
    check_probe(((size_t)64 << 20) + 16 * 7, 1);
}

Test(probe, rejects_bad_arguments)
{
    void *d = NULL;
    cr_assert_eq(opt_alloc(&d, 64), OPT_OK);
    cr_expect_eq(opt_probe_read(d, 24, d, 1, NULL), OPT_EINVAL);
    cr_expect_eq(opt_probe_read((char *)d + 4, 16, d, 1, NULL), OPT_EINVAL);
    cr_expect_eq(opt_probe_read(d, 16, d, 0, NULL), OPT_EINVAL);
    opt_free(d);
}
