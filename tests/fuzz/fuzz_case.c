/* fuzz_case.c - libFuzzer target: case-file text -> hx_cases_load_text, every path's check()
 * included (tests/fuzz/CMakeLists.txt runs it).
 *
 * Any bytes must give either a validated case list or one printable error line that names the
 * file (file:line: [case] key 'k': ...), never a crash, a leak or undefined behaviour. A text that
 * loads is loaded a second time into the same list, where every case name is already taken:
 * that must fail and leave the list as it was (the roll-back path of a multi-file run).
 */
#include "hx.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz.ini"

/* One printable line: the file's own bytes are quoted in messages, escaped. */
static int fuzz__one_line(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

static void fuzz__check_error(int rc, const hx_err *e)
{
    /* Out of memory is the one error that may not name a line of the file. */
    if (rc == HX_ENOMEM)
        return;
    if (rc != HX_ECASE || strncmp(e->msg, FUZZ_NAME ":", strlen(FUZZ_NAME ":")) != 0 ||
        !fuzz__one_line(e->msg)) {
        fprintf(stderr, "fuzz_case: bad error (rc %d): %s\n", rc, e->msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hx_caselist l = {0};
    hx_err e = {0};
    int rc = hx_cases_load_text(FUZZ_NAME, (const char *)data, size, 0, &l, &e);
    if (rc) {
        fuzz__check_error(rc, &e);
        if (l.n != 0)
            abort();
    } else {
        if (l.n < 1)
            abort();
        for (int i = 0; i < l.n; i++)
            if (!l.v[i].path || l.v[i].name[0] == '\0')
                abort();
        int n = l.n;
        memset(&e, 0, sizeof e);
        rc = hx_cases_load_text(FUZZ_NAME, (const char *)data, size, 0, &l, &e);
        if (rc == HX_OK || l.n != n || (rc != HX_ENOMEM && !strstr(e.msg, "defined twice"))) {
            fprintf(stderr, "fuzz_case: a second load of the same text gave rc %d: %s\n", rc,
                    e.msg);
            abort();
        }
    }
    hx_cases_free(&l);
    return 0;
}
