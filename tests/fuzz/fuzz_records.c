/* fuzz_records.c - libFuzzer target: JSON Lines bytes -> hx_recs_load (the result-record reader
 * behind `attn-harness plot` and `compare`), then hx_recs_dedup (tests/fuzz/CMakeLists.txt
 * runs it; seeds: the fixtures of tests/data).
 *
 * Any bytes must load or be refused with one printable line, never a crash, a leak or
 * undefined behaviour; loaded records must carry printable names (they become gnuplot data
 * rows and labels). The reader takes a file, so each input is written to one temporary file.
 */
#define _DEFAULT_SOURCE /* mkstemps, pwrite, ftruncate */
#include "records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz__path[64];
static int fuzz__fd = -1;

static int fuzz__printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz__fd < 0) {
        snprintf(fuzz__path, sizeof fuzz__path, "/tmp/fuzz_records_XXXXXX.jsonl");
        fuzz__fd = mkstemps(fuzz__path, 6);
        if (fuzz__fd < 0)
            abort();
    }
    if (ftruncate(fuzz__fd, 0) || (size && pwrite(fuzz__fd, data, size, 0) != (ssize_t)size))
        abort();
    hx_recset s = {0};
    hx_err e = {0};
    if (hx_recs_load(&s, fuzz__path, &e) == 0) {
        for (int i = 0; i < s.n; i++)
            if (!fuzz__printable(s.v[i].case_name) || !fuzz__printable(s.v[i].variant) ||
                !fuzz__printable(s.v[i].slug))
                abort();
        FILE *null = fopen("/dev/null", "w");
        hx_recs_dedup(&s, "fuzz", null);
        if (null)
            fclose(null);
    } else if (!e.msg[0] || strchr(e.msg, '\n')) {
        abort(); /* a refusal is one line that says why */
    }
    hx_recs_free(&s);
    return 0;
}
