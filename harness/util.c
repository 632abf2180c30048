/* util.c - small host utilities: monotonic clock, mkdir -p, glob matching. */
#include "hx.h"

#include <errno.h>
#include <fnmatch.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

double hx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int hx_mkdir_p(const char *dir, hx_err *e)
{
    char buf[1024];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return hx_fail(e, HX_EUSAGE, "directory name '%s' is empty or too long", dir);
    memcpy(buf, dir, n + 1);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return hx_fail(e, HX_EIO, "cannot create directory '%s': %s", buf, strerror(errno));
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return hx_fail(e, HX_EIO, "'%s' exists and is not a directory", dir);
    return HX_OK;
}

int hx_glob_match(const char *pattern, const char *s)
{
    return fnmatch(pattern, s, 0) == 0;
}
